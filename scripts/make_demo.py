#!/usr/bin/env python3
"""Generate Vitrine's demo catalog (demo/) from the photos bundled with scikit-image.

    python scripts/make_demo.py [--out demo]

Writes, deterministically:
  demo/catalog.jsonl   one product per line (34 products in 7 categories, 3 of them with two images)
  demo/catalog.csv     5 of the same products in the CSV import format
  demo/images/*.jpg    product photos (JPEG quality 85, long side <= 800 px)
  demo/queries/*.jpg   3 query photos: a catalog photo cropped ~5% per side and re-encoded at quality 70,
                       named after the SKU it should match
  demo/README.md       where the photos come from and their licences

Only skimage.data images whose docstrings state their terms (public domain / CC0 / no known copyright
restrictions) are used. Needs: scikit-image, pillow, numpy (see scripts/requirements-fixtures.txt).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MAX_SIDE = 800
QUALITY = 85

# source name -> (skimage.data function, credit / licence as stated in its docstring)
SOURCES = {
    "astronaut": ("astronaut", "Eileen Collins, NASA Great Images database. No known copyright restrictions, "
                  "released into the public domain."),
    "camera": ("camera", "Lav Varshney. No copyright restrictions, CC0 by the photographer."),
    "chelsea": ("chelsea", "Chelsea the cat, Stefan van der Walt. No copyright restrictions, CC0 by the photographer."),
    "coffee": ("coffee", "Rachel Michetti, courtesy of Pikolo Espresso Bar. No copyright restrictions, CC0 by the "
               "photographer."),
    "coins": ("coins", "Greek coins from Pompeii, Brooklyn Museum Collection. No known copyright restrictions."),
    "brick": ("brick", "CC0Textures (Bricks25). Creative Commons CC0."),
    "grass": ("grass", "DeviantArt user linolafett (Grass-01). Creative Commons CC0."),
    "gravel": ("gravel", "CC0Textures (Gravel04). Creative Commons CC0."),
    "horse": ("horse", "openclipart, Andreas Preuss (marauder). No copyright restrictions, CC0 given by owner."),
    "hubble": ("hubble_deep_field", "Hubble eXtreme Deep Field, NASA (HubbleSite). Public domain."),
    "ihc": ("immunohistochemistry", "Center for Microscopy And Molecular Imaging (CMMI). No known copyright "
            "restrictions."),
    "retina": ("retina", "Mikael Häggström, Wikimedia Commons. CC0 1.0 Universal Public Domain Dedication."),
    "rocket": ("rocket", "DSCOVR launch on Falcon 9, SpaceX Photos. Released into the public domain."),
    "text": ("text", "Wikipedia File:Corner.png. No known copyright restrictions, released into the public domain."),
    "clock": ("clock", "Motion-blurred wall clock, Stefan van der Walt. Released into the public domain by the "
              "photographer."),
}

BRANDS = ["Northwind Prints", "Lumen & Co", "Atelier Kova", "Pebble Studio", "Orbit Goods"]

# Each image spec: (source, ops) with ops applied in order:
#   ("crop", l, t, r, b)  fractions of width/height     ("mirror",)   ("gray",)
#   ("tone", dark_hex, light_hex)  grayscale duotone     ("rot90",)
P = [
    # id, title, description, brand, category, price, attributes, [image specs]
    ("Astronaut Portrait Poster", "Portrait of an astronaut in an orange flight suit holding a helmet, "
     "with the American flag behind her.", 0, "poster", 24.0,
     {"color": "orange", "material": "paper", "size": "50x70 cm"}, [("astronaut", [])]),
    ("Astronaut Helmet Close-up Canvas", "Close-up of a space helmet and an orange suit sleeve against a "
     "dark background.", 2, "canvas", 79.0, {"color": "orange", "material": "canvas"},
     [("astronaut", [("crop", 0.45, 0.45, 1.0, 1.0)])]),
    ("Mirrored Astronaut Print", "Mirrored portrait of a smiling astronaut in an orange suit with a flag.",
     1, "print", 19.5, {"color": "orange", "material": "paper", "finish": "matte"},
     [("astronaut", [("mirror",)])]),
    ("Espresso Cup Poster", "Red espresso cup on a red saucer with a spoon, on a wooden table.", 0,
     "poster", 22.0, {"color": "red", "material": "paper"}, [("coffee", [])]),
    ("Espresso Close-up Mug", "Mug printed with a close-up of an espresso in a red cup on a saucer.", 3, "mug",
     14.99, {"color": "red", "material": "ceramic", "capacity": "330 ml"},
     [("coffee", [("crop", 0.2, 0.05, 0.8, 0.95)])]),
    ("Sepia Coffee Break Print", "Sepia-toned photo of a coffee cup and saucer on a table.", 1, "print", 17.0,
     {"color": "sepia", "material": "paper", "finish": "matte"},
     [("coffee", [("gray",), ("tone", "#2b1a0e", "#f3e2c7")])]),
    ("Tabby Cat Chelsea Poster", "Close-up of a ginger tabby cat's face with green eyes and white whiskers.", 0,
     "poster", 24.0, {"color": "orange", "material": "paper", "size": "50x70 cm"}, [("chelsea", [])]),
    ("Cat Face Cushion", "Cushion printed with the face of a ginger tabby cat with green eyes.", 3, "decor", 34.0,
     {"color": "orange", "material": "cotton"}, [("chelsea", [("crop", 0.25, 0.0, 0.85, 0.9)])]),
    ("Curious Tabby T-Shirt", "T-shirt print of a ginger tabby cat's face, mirrored.", 4, "apparel", 27.0,
     {"color": "orange", "material": "cotton", "size": "M"}, [("chelsea", [("mirror",)])]),
    ("Black and White Cat Print", "Black and white photograph of a tabby cat's face.", 1, "print", 18.0,
     {"color": "black and white", "material": "paper"}, [("chelsea", [("gray",)])]),
    ("Falcon 9 Launch Pad Poster", "White rocket standing on the launch pad at dusk, lit by floodlights "
     "under a deep blue sky.", 0, "poster", 26.0, {"color": "blue", "material": "paper", "size": "50x70 cm"}, [("rocket", [])]),
    ("Rocket Liftoff Notebook", "Notebook cover with a white rocket on its launch pad against a dark blue sky.", 4,
     "stationery", 12.5, {"color": "blue", "material": "paper", "pages": "120"},
     [("rocket", [("crop", 0.3, 0.0, 0.75, 1.0)])]),
    ("Hubble Deep Field Galaxy Poster", "Thousands of colourful distant galaxies scattered across a black sky.",
     0, "poster", 29.0, {"color": "black", "material": "paper", "size": "61x91 cm"}, [("hubble", [])]),
    ("Deep Space Galaxies Mug", "Mug printed with bright galaxies on a deep black background.", 3, "mug", 15.99,
     {"color": "black", "material": "ceramic", "capacity": "330 ml"},
     [("hubble", [("crop", 0.1, 0.1, 0.55, 0.55)])]),
    ("Starfield Hoodie", "Hoodie print of a field of stars and spiral galaxies.", 4, "apparel", 54.0,
     {"color": "black", "material": "cotton", "size": "L"},
     [("hubble", [("crop", 0.45, 0.4, 1.0, 1.0), ("mirror",)])]),
    ("Retina Fundus Art Print", "Orange circular photograph of a human retina with red blood vessels.", 2,
     "print", 21.0, {"color": "orange", "material": "paper"}, [("retina", [])]),
    ("Amber Vessel Macro Canvas", "Macro of branching red vessels on an amber background.", 2, "canvas", 69.0,
     {"color": "amber", "material": "canvas"}, [("retina", [("crop", 0.2, 0.2, 0.6, 0.6)])]),
    ("Microscopy Tissue Stain Print", "Microscope image of stained tissue in brown and pale blue tones.", 2,
     "print", 21.0, {"color": "brown", "material": "paper"}, [("ihc", [])]),
    ("Cell Pattern Tote Bag", "Tote bag with a brown and pale blue cell pattern.", 4, "apparel", 19.0,
     {"color": "brown", "material": "canvas"}, [("ihc", [("crop", 0.0, 0.5, 0.5, 1.0)])]),
    ("Vintage Cameraman Photo Print", "Black and white photo of a man with a camera on a tripod in a park.", 1,
     "print", 18.0, {"color": "black and white", "material": "paper"}, [("camera", [])]),
    ("Blue Duotone Photographer Poster", "Blue duotone poster of a photographer behind a tripod camera.", 0,
     "poster", 24.0, {"color": "blue", "material": "paper", "size": "50x70 cm"},
     [("camera", [("tone", "#0b1d3a", "#cfe3ff")])]),
    ("Ancient Greek Coins Print", "Rows of ancient bronze coins on a grey background.", 1, "print", 18.0,
     {"color": "grey", "material": "paper"}, [("coins", [])]),
    ("Bronze Coin Coaster Set", "Round coasters printed with close-ups of old coins in bronze tones.", 3,
     "decor", 16.0, {"color": "bronze", "material": "cork"},
     [("coins", [("crop", 0.0, 0.0, 0.5, 0.6), ("tone", "#2a1a05", "#e9c27a")])]),
    ("Red Brick Wall Canvas", "Red brick wall with light mortar lines.", 2, "canvas", 59.0,
     {"color": "red", "material": "canvas"}, [("brick", [("tone", "#3a0d06", "#e8a27c")])]),
    ("Grey Brick Wallpaper Sample", "Grey brick wall texture.", 3, "decor", 9.0,
     {"color": "grey", "material": "paper"}, [("brick", [("crop", 0.0, 0.0, 0.7, 0.7), ("rot90",)])]),
    ("Green Grass Rug", "Rug printed with a close-up of green grass blades.", 3, "decor", 89.0,
     {"color": "green", "material": "polyester"}, [("grass", [("tone", "#0d2a08", "#b8e986")])]),
    ("Gravel Stone Notebook", "Notebook cover with a grey gravel and pebble texture.", 4, "stationery", 11.0,
     {"color": "grey", "material": "paper", "pages": "96"}, [("gravel", [])]),
    ("Black Horse Silhouette Decal", "Black silhouette of a horse on a white background.", 3, "decor", 8.5,
     {"color": "black", "material": "vinyl"}, [("horse", [])]),
    ("Running Horse T-Shirt", "T-shirt print of a black horse silhouette facing right.", 4, "apparel", 25.0,
     {"color": "white", "material": "cotton", "size": "S"}, [("horse", [("mirror",)])]),
    ("Typography Study Print", "Light grey print of faint hand-drawn letters and lines seen in perspective.", 1, "print",
     15.0, {"color": "grey", "material": "paper"}, [("text", [])]),
    ("Motion Blur Wall Clock Print", "Grey photo of a round wall clock blurred by camera motion.", 2, "print", 19.0,
     {"color": "grey", "material": "paper"}, [("clock", [])]),
    ("Space Poster Set of 2", "Two posters: an astronaut in an orange suit and a rocket on its launch pad at dusk.", 0,
     "poster", 42.0, {"color": "multicolor", "material": "paper", "size": "30x40 cm"},
     [("astronaut", [("crop", 0.0, 0.0, 0.55, 0.55), ("mirror",)]), ("rocket", [("crop", 0.15, 0.0, 0.85, 1.0), ("mirror",)])]),
    ("Cozy Morning Mug Set", "Set of two mugs: a red espresso cup on a saucer and a ginger tabby cat.", 3, "mug",
     26.0, {"color": "multicolor", "material": "ceramic", "capacity": "2 x 300 ml"},
     [("coffee", [("crop", 0.0, 0.3, 0.6, 1.0), ("mirror",)]), ("chelsea", [("crop", 0.45, 0.0, 1.0, 0.6), ("mirror",)])]),
    ("Texture Sampler Pack", "Sampler of brick and gravel textures in grey.", 2, "decor", 14.0,
     {"color": "grey", "material": "paper"},
     [("brick", [("crop", 0.3, 0.3, 1.0, 1.0)]), ("gravel", [("crop", 0.0, 0.0, 0.6, 0.6), ("mirror",)])]),
]

QUERY_SKUS = ["sku-001", "sku-007", "sku-011", "sku-020"]
CSV_SKUS = ["sku-001", "sku-004", "sku-013", "sku-024", "sku-032"]


def load_source(name: str) -> Image.Image:
    from skimage import data
    a = getattr(data, SOURCES[name][0])()
    if a.dtype == bool:
        a = (a.astype(np.uint8) * 255)
    img = Image.fromarray(a)
    return img.convert("RGB") if img.mode not in ("RGB", "L") else img


def apply_ops(img: Image.Image, ops) -> Image.Image:
    for op in ops:
        if op[0] == "crop":
            w, h = img.size
            l, t, r, b = op[1:]
            img = img.crop((round(l * w), round(t * h), round(r * w), round(b * h)))
        elif op[0] == "mirror":
            img = ImageOps.mirror(img)
        elif op[0] == "gray":
            img = img.convert("L")
        elif op[0] == "tone":
            img = ImageOps.colorize(img.convert("L"), black=op[1], white=op[2])
        elif op[0] == "rot90":
            img = img.transpose(Image.Transpose.ROTATE_90)
        else:
            raise ValueError(op)
    return img


def fit(img: Image.Image, max_side=MAX_SIDE) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((round(w * s), round(h * s)), Image.LANCZOS)


def save_jpeg(img: Image.Image, path: Path, quality: int):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True)  # deterministic: no timestamps in JPEG
    path.write_bytes(buf.getvalue())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "demo")
    args = ap.parse_args()
    out = args.out
    for sub in ("images", "queries"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)

    cache = {}
    products = []
    used_sources = set()
    for i, (title, desc, brand, cat, price, attrs, specs) in enumerate(P, start=1):
        sku = f"sku-{i:03d}"
        files = []
        for j, (src, ops) in enumerate(specs):
            if src not in cache:
                cache[src] = load_source(src)
            used_sources.add(src)
            img = fit(apply_ops(cache[src], ops))
            name = f"{sku}.jpg" if len(specs) == 1 else f"{sku}-{'ab'[j]}.jpg"
            save_jpeg(img, out / "images" / name, QUALITY)
            files.append(f"images/{name}")
        p = {"id": sku, "title": title, "description": desc, "brand": BRANDS[brand], "category": cat,
             "price": price, "currency": "USD"}
        if len(files) == 1:
            p["image"] = files[0]
        else:
            p["images"] = files
        p["url"] = f"https://example.com/p/{sku}"
        p["attributes"] = attrs
        products.append(p)

    with open(out / "catalog.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for p in products:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")

    rows = [p for p in products if p["id"] in CSV_SKUS]
    attr_keys = sorted({k for p in rows for k in p["attributes"]})
    with open(out / "catalog.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "title", "description", "brand", "category", "price", "currency", "images", "url"]
                   + [f"attr.{k}" for k in attr_keys])
        for p in rows:
            imgs = p.get("images") or [p["image"]]
            w.writerow([p["id"], p["title"], p["description"], p["brand"], p["category"], p["price"],
                        p["currency"], "|".join(imgs), p["url"]] + [p["attributes"].get(k, "") for k in attr_keys])

    # queries: ~5% cropped off each side, re-encoded at quality 70
    for sku in QUERY_SKUS:
        with Image.open(out / "images" / f"{sku}.jpg") as im:
            im = im.convert("RGB")
            w, h = im.size
            dx, dy = round(w * 0.05), round(h * 0.05)
            save_jpeg(im.crop((dx, dy, w - dx, h - dy)), out / "queries" / f"{sku}.jpg", 70)

    by_src = {}
    for p, spec in zip(products, P):
        for src, _ in spec[6]:
            by_src.setdefault(src, []).append(p["id"])
    lines = [
        "# Vitrine demo catalog",
        "",
        f"A small, made-up shop ({len(products)} products, {len(BRANDS)} invented brands, "
        f"{len({p['category'] for p in products})} categories) for trying Vitrine locally.",
        "Everything here is generated by `scripts/make_demo.py` (deterministic; re-run it to rebuild this folder).",
        "",
        "- `catalog.jsonl`: one product per line (`id`, `title`, `description`, `brand`, `category`, `price`,",
        "  `currency`, `image` or `images` (a list of two), `url`, `attributes`). Image paths are relative to this folder.",
        "- `catalog.csv`: 5 of the same products in the CSV format (`images` is `|`-separated, attributes are",
        "  `attr.<name>` columns).",
        "- `images/`: product photos, JPEG quality 85, at most 800 px on the long side.",
        "- `queries/`: 3 query photos. Each is a catalog photo with about 5% cropped off every side, re-encoded at",
        "  JPEG quality 70, and named after the product it should find first: "
        + ", ".join(f"`queries/{s}.jpg` -> `{s}`" for s in QUERY_SKUS) + ".",
        "",
        "## Where the photos come from",
        "",
        "All photos are sample images bundled with [scikit-image](https://scikit-image.org) (`skimage.data`),",
        "cropped, mirrored or tinted here. The credits and terms below are those stated in each `skimage.data`",
        "function's docstring (the package's `skimage/data/README.txt` carries no per-image licences; the package",
        "itself is BSD-3-Clause). Only images whose docstrings state public-domain, CC0 or no-known-copyright terms",
        "are used.",
        "",
        "| skimage.data | used by | credit and terms |",
        "| --- | --- | --- |",
    ]
    for src in sorted(used_sources):
        fn, credit = SOURCES[src]
        lines.append(f"| `{fn}` | {', '.join(by_src[src])} | {credit} |")
    lines += ["", "Product names, brands, prices and descriptions are invented.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")

    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    n_img = len(list((out / "images").iterdir()))
    print(f"{len(products)} products, {n_img} images, {len(QUERY_SKUS)} queries, {total / 1e6:.2f} MB in {out}")
    assert total < 3_000_000, total


if __name__ == "__main__":
    main()
