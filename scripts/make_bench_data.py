#!/usr/bin/env python3
"""Generate the benchmark inputs under target/bench-data/ (deterministic, idempotent).

  photo_1000.jpg          skimage astronaut resized to 1000x1000, JPEG q90 (preprocess bench, image queries)
  photos/p00000.jpg ...   --photos photos, longest side 500-800 px (embed pipeline bench)
  ingest/img/i000000.jpg  --ingest small variants, longest side 400-600 px, one distinct file per product
  ingest/catalog.jsonl    --ingest products, each with its own image (relative path)

Every image is a random crop / flip / colour gain of one of the photos bundled with scikit-image, seeded by
its index, so files already present are kept and a larger count only adds files. Uses all cores.

Usage: .venv-fixtures/bin/python scripts/make_bench_data.py [--out target/bench-data] [--photos 256] [--ingest 10000]
"""
import argparse
import json
import os
import random
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

# Photos bundled with scikit-image (no download); grey ones are turned into RGB.
BASES = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
         "colorwheel", "logo", "camera", "coins", "moon", "brick", "grass", "gravel", "clock"]

_bases = None


def bases():
    global _bases
    if _bases is None:
        import warnings
        import skimage.data as d
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for n in BASES:
                try:
                    a = getattr(d, n)()
                except Exception:  # noqa: BLE001 - a photo that needs a download is skipped
                    continue
                if a.dtype == bool:
                    a = a.astype(np.uint8) * 255
                if a.ndim == 2:
                    a = np.stack([a] * 3, axis=-1)
                if a.shape[2] == 4:  # composite onto white
                    alpha = a[..., 3:4].astype(np.float32) / 255.0
                    a = (255.0 - (255.0 - a[..., :3].astype(np.float32)) * alpha).round().astype(np.uint8)
                out.append(Image.fromarray(np.ascontiguousarray(a[..., :3])))
        _bases = out
    return _bases


def variant(seed: int, lo: int, hi: int) -> Image.Image:
    """A random crop (30-100% of the area), flip and colour gain of a base photo, longest side in [lo, hi]."""
    rng = random.Random(seed)
    imgs = bases()
    img = imgs[rng.randrange(len(imgs))]
    w, h = img.size
    area = rng.uniform(0.3, 1.0) * w * h
    aspect = rng.uniform(0.75, 1.333)
    cw = max(16, min(w, int(round((area * aspect) ** 0.5))))
    ch = max(16, min(h, int(round((area / aspect) ** 0.5))))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    side = rng.randint(lo, hi)
    scale = side / max(cw, ch)
    im = im.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BICUBIC)
    gain = np.array([rng.uniform(0.85, 1.15) for _ in range(3)], np.float32)
    a = np.clip(np.asarray(im, np.float32) * gain, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def _write(job):
    path, seed, lo, hi, quality = job
    p = Path(path)
    if p.exists() and p.stat().st_size > 0:
        return 0
    tmp = p.with_suffix(".tmp")
    variant(seed, lo, hi).save(tmp, "JPEG", quality=quality)
    os.replace(tmp, p)
    return 1


WORDS = {
    "category": ["shoes", "bags", "watches", "lamps", "chairs", "mugs", "jackets", "dresses", "rugs", "vases",
                 "headphones", "backpacks", "sunglasses", "tables", "cushions", "plates", "scarves", "hats"],
    "brand": ["Nordlys", "Acme", "Vela", "Kobo", "Marlow", "Sora", "Tessin", "Brio", "Alder", "Quill", "Oakum",
              "Lumen", "Pike", "Rowan", "Ferro", "Juno"],
    "color": ["red", "navy", "black", "white", "olive", "beige", "mustard", "teal", "grey", "pink", "brown"],
    "material": ["leather", "cotton", "linen", "wool", "oak", "walnut", "ceramic", "glass", "steel", "brass",
                 "suede", "canvas"],
    "adj": ["minimal", "vintage", "rustic", "modern", "classic", "chunky", "slim", "oversized", "handmade",
            "striped", "woven", "matte", "glossy"],
}


SINGULAR = {"dresses": "dress", "sunglasses": "sunglasses", "headphones": "headphones", "scarves": "scarf"}


def product(i: int, img_rel: str) -> dict:
    rng = random.Random(1_000_003 * i + 7)
    w = {k: rng.choice(v) for k, v in WORDS.items()}
    noun = SINGULAR.get(w["category"], w["category"][:-1])
    return {
        "id": f"b{i:06d}",
        "title": f"{w['brand']} {w['adj']} {w['color']} {w['material']} {noun}",
        "description": f"A {w['adj']} {noun} in {w['color']} {w['material']}, "
                       f"{rng.choice(['made to last', 'for everyday use', 'a bestseller', 'limited edition'])}.",
        "brand": w["brand"],
        "category": w["category"],
        "price": round(rng.uniform(5, 500), 2),
        "currency": "EUR",
        "images": [img_rel],
        "attributes": {"color": w["color"], "material": w["material"]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "target" / "bench-data"))
    ap.add_argument("--photos", type=int, default=256, help="photos for the embed pipeline bench")
    ap.add_argument("--ingest", type=int, default=10000, help="products (and distinct images) for the ingest bench")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "photos").mkdir(parents=True, exist_ok=True)
    (out / "ingest" / "img").mkdir(parents=True, exist_ok=True)

    one = out / "photo_1000.jpg"
    if not one.exists():
        import skimage.data as d
        Image.fromarray(d.astronaut()).resize((1000, 1000), Image.LANCZOS).save(one, "JPEG", quality=90)

    jobs = [(str(out / "photos" / f"p{i:05d}.jpg"), args.seed * 7919 + i, 500, 800, 90) for i in range(args.photos)]
    jobs += [(str(out / "ingest" / "img" / f"i{i:06d}.jpg"), args.seed * 7919 + 10_000_000 + i, 400, 600, 85)
             for i in range(args.ingest)]
    todo = [j for j in jobs if not (Path(j[0]).exists() and Path(j[0]).stat().st_size > 0)]
    if todo:
        with Pool(max(1, args.jobs), initializer=bases) as pool:
            made = sum(pool.imap_unordered(_write, todo, chunksize=32))
    else:
        made = 0

    catalog = out / "ingest" / "catalog.jsonl"
    lines = [json.dumps(product(i, f"img/i{i:06d}.jpg")) for i in range(args.ingest)]
    tmp = catalog.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, catalog)
    print(f"bench data in {out}: {args.photos} photos, {args.ingest} ingest products ({made} images written)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
