"""The toy world: procedurally rendered products with known attributes, and text about them.

A product is (category, colour, pattern) plus a shape seed that fixes its proportions; a *view* of it
(pose, scale, position, background, lighting) is fixed by a separate view seed. So a query photo of
a catalog product is `render(product, other_view_seed)`: the same object, seen anew.

Everything is a pure function of its seeds (numpy `default_rng`, PIL drawing), so renders are
reproducible across runs and processes.

Public API (what the other scripts and the Rust benches' data generators call):
    Product(category, color, pattern, shape_seed)
    product_for_seed(seed) -> Product                    attributes drawn uniformly from the world
    render(product, view_seed, size=SIZE) -> uint8 [size, size, 3]
    render_many(products, view_seeds, procs=2, size=SIZE) -> uint8 [N, size, size, 3]
    title(product) / description(product) / captions(product, rng) / query_text(...)
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # rendered (and model input) size in pixels
_S = 128  # masks are drawn at 2x and box-downsampled, for anti-aliased edges

CATEGORIES = ["mug", "sneaker", "handbag", "lamp", "vase", "t-shirt", "backpack", "chair"]
COLORS = {
    "red": (200, 32, 36),
    "orange": (240, 128, 24),
    "yellow": (240, 208, 40),
    "green": (40, 150, 64),
    "blue": (36, 84, 204),
    "purple": (124, 52, 164),
    "pink": (242, 132, 184),
    "brown": (118, 74, 40),
    "black": (30, 30, 34),
    "white": (240, 240, 236),
    "grey": (128, 128, 130),
}
COLOR_NAMES = list(COLORS)
PATTERNS = ["plain", "striped", "dotted", "checked"]

# Words a caption may use for each attribute value (the first is the canonical one, used in titles).
CATEGORY_WORDS = {
    "mug": ["mug", "coffee mug", "cup", "tea mug"],
    "sneaker": ["sneaker", "sneakers", "running shoe", "trainer", "shoe"],
    "handbag": ["handbag", "purse", "tote"],
    "lamp": ["lamp", "table lamp", "desk lamp", "light"],
    "vase": ["vase", "flower vase", "ceramic vase"],
    "t-shirt": ["t-shirt", "tee", "shirt", "tshirt"],
    "backpack": ["backpack", "rucksack", "daypack"],
    "chair": ["chair", "dining chair", "seat", "wooden chair"],
}
COLOR_WORDS = {c: [c] for c in COLORS}
COLOR_WORDS["grey"] = ["grey", "gray"]
PATTERN_ADJ = {"plain": ["plain", "solid"], "striped": ["striped", "stripy"], "dotted": ["dotted", "polka dot", "spotted"],
               "checked": ["checked", "checkered", "plaid"]}
PATTERN_NOUN = {"plain": ["no pattern"], "striped": ["stripes"], "dotted": ["dots", "polka dots", "spots"],
                "checked": ["a check pattern", "checks"]}


@dataclass(frozen=True)
class Product:
    category: str
    color: str
    pattern: str
    shape_seed: int

    @property
    def attrs(self):
        return (self.category, self.color, self.pattern)


def product_for_seed(seed: int) -> Product:
    rng = np.random.default_rng([seed, 1])
    return Product(CATEGORIES[rng.integers(len(CATEGORIES))], COLOR_NAMES[rng.integers(len(COLOR_NAMES))],
                   PATTERNS[rng.integers(len(PATTERNS))], int(rng.integers(2**31)))


def pattern_ink(color: str) -> tuple[int, int, int]:
    """The second colour of a pattern: white on dark or saturated colours, charcoal on light ones."""
    r, g, b = COLORS[color]
    return (40, 40, 44) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (245, 245, 245)


def ink_name(color: str) -> str:
    return "dark grey" if pattern_ink(color)[0] < 128 else "white"


# --------------------------------------------------------------------------------------------- shapes
# Each draws in a 128x128 canonical frame, object centred, about 100 px tall: `m` is the main
# (coloured, patterned) part, `d` a neutral detail part (soles, stems, legs). `k` holds shape params.
def _mug(m, d, k):
    w, h = 52 * k[0], 62 * k[1]
    x0, y0 = 64 - w / 2 - 8, 64 - h / 2
    m.rounded_rectangle([x0, y0, x0 + w, y0 + h], radius=6 * k[2], fill=255)
    hx, hy = x0 + w - 4, 64 - h * 0.28
    m.ellipse([hx, hy, hx + 26 * k[3], hy + h * 0.56], outline=255, width=int(7 * k[2]) + 1)


def _sneaker(m, d, k):
    L, H = 100 * k[0], 34 * k[1]
    x0, yb = 64 - L / 2, 64 + H / 2 + 4
    pts = [(x0, yb - 8), (x0 + 4, yb - H * 0.75), (x0 + L * 0.38, yb - H * 0.8), (x0 + L * 0.45, yb - H * 1.25),
           (x0 + L * 0.72, yb - H * 1.3 * k[2]), (x0 + L * 0.8, yb - H * 0.55), (x0 + L, yb - 12), (x0 + L, yb - 8)]
    m.polygon(pts, fill=255)
    d.rounded_rectangle([x0 - 2, yb - 10, x0 + L + 2, yb + 2], radius=5, fill=255)


def _handbag(m, d, k):
    w, h = 80 * k[0], 52 * k[1]
    top = 64 - h / 2 + 12
    m.polygon([(64 - w * 0.42, top), (64 + w * 0.42, top), (64 + w / 2, top + h), (64 - w / 2, top + h)], fill=255)
    hw = w * 0.55 * k[2]
    m.arc([64 - hw / 2, top - 34 * k[3], 64 + hw / 2, top + 20], 180, 360, fill=255, width=6)


def _lamp(m, d, k):
    sw, sh = 70 * k[0], 40 * k[1]
    top = 18
    m.polygon([(64 - sw * 0.3, top), (64 + sw * 0.3, top), (64 + sw / 2, top + sh), (64 - sw / 2, top + sh)], fill=255)
    d.rectangle([61, top + sh, 67, 104], fill=255)
    bw = 46 * k[2]
    m.ellipse([64 - bw / 2, 100, 64 + bw / 2, 112], fill=255)


def _vase(m, d, k):
    ys = np.linspace(14, 114, 24)
    t = (ys - 14) / 100
    neck, belly = 8 * k[0], 30 * k[1]
    r = neck + (belly - neck) * np.sin(np.clip((t - 0.12 * k[2]) / (1 - 0.12 * k[2]), 0, 1) * math.pi) ** (0.8 * k[3])
    r[0] = neck * 1.4  # lip
    pts = [(64 + ri, y) for ri, y in zip(r, ys)] + [(64 - ri, y) for ri, y in zip(r[::-1], ys[::-1])]
    m.polygon(pts, fill=255)


def _tshirt(m, d, k):
    bw, bh, sl = 56 * k[0], 66 * k[1], 22 * k[2]
    x0, y0 = 64 - bw / 2, 64 - bh / 2
    pts = [(x0, y0 + 4), (64 - 10, y0), (64 - 6, y0 + 8), (64 + 6, y0 + 8), (64 + 10, y0), (x0 + bw, y0 + 4),
           (x0 + bw + sl, y0 + 22), (x0 + bw + sl * 0.6, y0 + 34), (x0 + bw, y0 + 26), (x0 + bw, y0 + bh),
           (x0, y0 + bh), (x0, y0 + 26), (x0 - sl * 0.6, y0 + 34), (x0 - sl, y0 + 22)]
    m.polygon(pts, fill=255)


def _backpack(m, d, k):
    w, h = 62 * k[0], 84 * k[1]
    x0, y0 = 64 - w / 2, 64 - h / 2 + 4
    m.rounded_rectangle([x0, y0, x0 + w, y0 + h], radius=18 * k[2], fill=255)
    m.arc([64 - 12, y0 - 14, 64 + 12, y0 + 10], 180, 360, fill=255, width=5)
    pw = w * 0.7
    d.rounded_rectangle([64 - pw / 2, y0 + h * 0.55, 64 + pw / 2, y0 + h * 0.56 + 4], radius=2, fill=255)
    d.rounded_rectangle([64 - pw / 2, y0 + h * 0.55, 64 - pw / 2 + 3, y0 + h * 0.92], radius=1, fill=255)
    d.rounded_rectangle([64 + pw / 2 - 3, y0 + h * 0.55, 64 + pw / 2, y0 + h * 0.92], radius=1, fill=255)


def _chair(m, d, k):
    sw, seat_y, back_h = 60 * k[0], 64 + 6 * k[1], 50 * k[2]
    x0 = 64 - sw / 2
    m.rectangle([x0, seat_y, x0 + sw, seat_y + 10], fill=255)
    m.rectangle([x0, seat_y - back_h, x0 + 10 * k[3], seat_y], fill=255)
    m.rectangle([x0, seat_y - back_h, x0 + sw * 0.75, seat_y - back_h + 16], fill=255)
    for lx in (x0 + 2, x0 + sw - 8):
        d.rectangle([lx, seat_y + 10, lx + 6, seat_y + 46], fill=255)


SHAPES = {"mug": _mug, "sneaker": _sneaker, "handbag": _handbag, "lamp": _lamp, "vase": _vase, "t-shirt": _tshirt,
          "backpack": _backpack, "chair": _chair}

_YY, _XX = np.mgrid[0:_S, 0:_S].astype(np.float32)


def _pattern_mask(pattern: str, rng) -> np.ndarray:
    """Pattern ink in [0,1] over the 128 canvas, in the object's own frame (so it turns with it)."""
    if pattern == "plain":
        return np.zeros((_S, _S), np.float32)
    if pattern == "striped":
        period = rng.uniform(11, 16)
        ang = rng.choice([0.0, math.pi / 2, math.pi / 4, -math.pi / 4]) + rng.uniform(-0.15, 0.15)
        u = _XX * math.cos(ang) + _YY * math.sin(ang) + rng.uniform(0, period)
        return (np.mod(u, period) < period * rng.uniform(0.35, 0.5)).astype(np.float32)
    if pattern == "dotted":
        period = rng.uniform(13, 17)
        rad = period * rng.uniform(0.22, 0.3)
        ox, oy = rng.uniform(0, period, 2)
        u = np.mod(_XX + ox, period) - period / 2
        v = np.mod(_YY + oy, period) - period / 2
        return ((u * u + v * v) < rad * rad).astype(np.float32)
    # checked
    period = rng.uniform(14, 20)
    ox, oy = rng.uniform(0, period, 2)
    a = np.mod(_XX + ox, period) < period / 2
    b = np.mod(_YY + oy, period) < period / 2
    return (a ^ b).astype(np.float32)


def _shape_params(product: Product):
    rng = np.random.default_rng([product.shape_seed, 7])
    return rng.uniform(0.8, 1.2, 4), rng


def _lum(rgb):
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0


def render(product: Product, view_seed: int, size: int = SIZE) -> np.ndarray:
    """One view of `product` as uint8 RGB [size, size, 3]."""
    k, srng = _shape_params(product)
    rng = np.random.default_rng([view_seed, 11])
    main, detail = Image.new("L", (_S, _S)), Image.new("L", (_S, _S))
    SHAPES[product.category](ImageDraw.Draw(main), ImageDraw.Draw(detail), k)
    pat = Image.fromarray((_pattern_mask(product.pattern, srng) * 255).astype(np.uint8))
    stack = Image.merge("RGB", (main, detail, pat))
    # pose: rotation, mirror, scale, shift; the affine maps output pixels to canonical ones
    ang = math.radians(rng.uniform(-25, 25))
    scale = rng.uniform(0.6, 0.95)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    tx, ty = rng.uniform(-0.12, 0.12, 2) * _S
    ca, sa = math.cos(ang) / scale, math.sin(ang) / scale
    c = _S / 2
    # canonical = R^-1 (out - c - t) / scale + c, with x mirrored
    a, b_, d_, e = flip * ca, flip * sa, -sa, ca
    cx0 = c - (a * (c + tx) + b_ * (c + ty))
    cy0 = c - (d_ * (c + tx) + e * (c + ty))
    stack = stack.transform((_S, _S), Image.Transform.AFFINE, (a, b_, cx0, d_, e, cy0), resample=Image.Resampling.BILINEAR)
    stack = stack.reduce(_S // size) if _S % size == 0 else stack.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(stack, np.float32) / 255.0
    m, dmask, p = arr[..., 0:1], arr[..., 1:2], arr[..., 2:3]

    base = np.array(COLORS[product.color], np.float32)
    base = np.clip(base + rng.uniform(-14, 14, 3), 0, 255)
    ink = np.array(pattern_ink(product.color), np.float32)
    if product.pattern == "checked":  # gingham: the checks are a tint of the base colour
        ink = base * 0.45 + ink * 0.55
    obj = base * (1 - p) + ink * p
    det_col = np.array(rng.choice([[235, 235, 230], [60, 60, 62], [150, 110, 70]]), np.float32)
    # background: muted colour, far enough in lightness from the object to keep it visible
    obj_l = _lum(base)
    for _ in range(8):
        bl = rng.uniform(0.25, 0.97)
        if abs(bl - obj_l) > 0.22:
            break
    hue, sat = rng.random(), rng.uniform(0.0, 0.18)
    bg = np.array(colorsys.hsv_to_rgb(hue, sat, bl), np.float32) * 255
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ga = rng.uniform(0, 2 * math.pi)
    grad = (xx * math.cos(ga) + yy * math.sin(ga))[..., None]
    bgimg = bg * (1 + rng.uniform(0, 0.3) * grad) + rng.normal(0, rng.uniform(0, 6), (size, size, 1))
    # lighting on the object: global brightness and a directional gradient
    la = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.85, 1.12) * (1 + rng.uniform(0, 0.35) * (xx * math.cos(la) + yy * math.sin(la)))[..., None]
    fg = np.where(dmask > m, det_col, obj) * light
    alpha = np.maximum(m, dmask)
    img = bgimg * (1 - alpha) + fg * alpha + rng.normal(0, 2.0, (size, size, 3))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _render_chunk(args):
    prods, seeds, size = args
    return np.stack([render(p, s, size) for p, s in zip(prods, seeds)]) if prods else np.zeros((0, size, size, 3), np.uint8)


def render_many(products, view_seeds, procs: int = 2, size: int = SIZE) -> np.ndarray:
    """Render many views, split over `procs` processes (fork); same output as calling `render` in order."""
    products, view_seeds = list(products), list(view_seeds)
    assert len(products) == len(view_seeds)
    n = len(products)
    if procs <= 1 or n < 64:
        return _render_chunk((products, view_seeds, size))
    import multiprocessing as mp
    chunk = max(32, min(2048, n // (procs * 4) + 1))
    jobs = [(products[i:i + chunk], view_seeds[i:i + chunk], size) for i in range(0, n, chunk)]
    with mp.get_context("fork").Pool(procs) as pool:
        parts = pool.map(_render_chunk, jobs)
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------- text
def _title_word(w: str) -> str:
    return "T-Shirt" if w == "t-shirt" else w.title()


def title(product: Product) -> str:
    """"Red Striped Mug"; plain products are just "Red Mug"."""
    parts = [product.color]
    if product.pattern != "plain":
        parts.append(PATTERN_ADJ[product.pattern][0])
    parts.append(product.category)
    return " ".join(_title_word(p) for p in parts)


def description(product: Product) -> str:
    c, cat = product.color, product.category
    art = "An" if c[0] in "aeiou" else "A"
    if product.pattern == "plain":
        return f"{art} plain {c} {cat} in a single solid colour."
    ink = ink_name(c)
    if product.pattern == "striped":
        return f"{art} {c} {cat} with {ink} stripes."
    if product.pattern == "dotted":
        return f"{art} {c} {cat} with {ink} polka dots."
    return f"{art} {c} {cat} with a checked pattern."


def product_text(product: Product) -> str:
    """What Vitrine embeds for a product's text channel: title + ". " + description (core/src/catalog.rs)."""
    return f"{title(product)}. {description(product)}"


def query_text(color=None, category=None, pattern=None, rng=None) -> str:
    """A short query naming any subset of the attributes ("red striped mug", "blue chair", "striped")."""
    pick = (lambda xs: xs[int(rng.integers(len(xs)))]) if rng is not None else (lambda xs: xs[0])
    parts = []
    if color:
        parts.append(pick(COLOR_WORDS[color]))
    if pattern:
        parts.append(pick(PATTERN_ADJ[pattern]))
    if category:
        parts.append(pick(CATEGORY_WORDS[category]))
    return " ".join(parts)


def caption(product: Product, rng) -> tuple[str, tuple]:
    """A random caption true of `product`, and the attributes it states: (category|None, color|None, pattern|None)."""
    def pick(xs):
        return xs[int(rng.integers(len(xs)))]
    cat, col, pat = product.attrs
    r = rng.random()
    if r < 0.12:
        return product_text(product), (cat, col, pat)
    if r < 0.18:  # one attribute alone: "red", "mug", "striped"
        which = int(rng.integers(3))
        if which == 0:
            return pick(["", "a ", "something "]) + pick(COLOR_WORDS[col]), (None, col, None)
        if which == 1:
            return pick(["", "a ", "a photo of a "]) + pick(CATEGORY_WORDS[cat]), (cat, None, None)
        return pick(PATTERN_ADJ[pat]) + pick(["", " pattern", " product"]), (None, None, pat)
    say_pat = rng.random() < (0.35 if pat == "plain" else 0.75)
    say_col = rng.random() < 0.92
    cw, kw, pw = pick(COLOR_WORDS[col]), pick(CATEGORY_WORDS[cat]), pick(PATTERN_ADJ[pat])
    if not say_col:
        s = f"{pw} {kw}" if say_pat else kw
        return pick(["", "a "]) + s, (cat, None, pat if say_pat else None)
    if not say_pat:
        s = pick([f"{cw} {kw}", f"a {cw} {kw}", f"{kw} in {cw}", f"a photo of a {cw} {kw}", f"{cw} colored {kw}"])
        return s, (cat, col, None)
    t = int(rng.integers(5))
    if t == 0:
        s = f"a {cw} {pw} {kw}"
    elif t == 1:
        s = f"{pw} {kw} in {cw}"
    elif t == 2:
        s = f"{cw} {kw} with {pick(PATTERN_NOUN[pat])}"
    elif t == 3:
        s = f"{cw} {pw} {kw}"
    else:
        s = f"a photo of a {pw} {cw} {kw}"
    return s, (cat, col, pat)


# Out-of-world text used as negatives in training (the evaluation uses a disjoint list).
NEGATIVE_TRAIN = [
    "a dog", "cat", "a photo of a horse", "pizza", "hamburger", "car", "red car", "blue truck", "bicycle",
    "airplane", "mountain landscape", "sunset over the sea", "smartphone", "television", "headphones",
    "guitar", "piano", "banana", "apple fruit", "broccoli", "tree", "flower garden", "a person smiling",
    "football", "tennis racket", "watch", "necklace", "ring", "sofa", "bed", "refrigerator", "microwave",
    "keyboard", "printer", "camera", "book", "newspaper", "bird", "fish", "elephant", "green frog",
    "yellow taxi", "house", "bridge", "castle", "snow", "rain", "cloud", "hello world", "asdf jkl",
    "lorem ipsum", "qwop", "zzz", "12345", "!!!", "the", "and or not", "free shipping", "discount code",
]
# No word of these occurs in any product text (make_catalog.py checks), so the keyword channel has
# nothing to match either: what a no-match query returns is down to the vector channels and the floor.
NEGATIVE_EVAL = [
    "xyzzy qwerty", "golden retriever", "laptop computer", "sports car", "bowl of ramen", "pineapple",
    "helicopter", "kitten sleeping", "violin", "electric drill", "garden hose", "vacuum cleaner",
    "motorcycle", "sushi platter", "snowboard", "blorf snaggle", "wristwatch leather strap",
]
