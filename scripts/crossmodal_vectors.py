#!/usr/bin/env python3
"""Vectors for the cross-modal recall bench (benches/crossmodal.rs), from the toy-world model.

Renders N products of the toy world (scripts/toyworld), embeds them with the model's vision tower
(what the indexer stores as image vectors), and writes the queries the bench searches them with:

  base.f32    N x dim   image vectors of the catalog (product seeds SEED..SEED+N, first view)
  text.f32    T x dim   text-tower queries: every "colour category" and "colour pattern category"
  photo.f32   P x dim   image-tower queries: other views of held-out products (photo search)
  meta.json   {"dim", "n", "text", "photo", "text_queries": [...], "model", "seed"}

Little-endian f32, L2-normalized like Vitrine's embedder. Rendering runs in `--procs` processes,
embedding in chunks, so memory stays at one chunk of renders (100k products: about 15 minutes on
2 cores). Usage:

  .venv-fixtures/bin/python scripts/crossmodal_vectors.py --model models/toy-world-clip --n 100000 \
      --out target/crossmodal
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="toy-world model dir (models/toy-world-clip)")
    ap.add_argument("--toyworld", type=Path, default=None, help="folder holding the toyworld package (default: scripts/)")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--photos", type=int, default=500)
    ap.add_argument("--seed", type=int, default=60_000_000, help="first product seed (apart from training seeds)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=5_000)
    ap.add_argument("--out", type=Path, default=Path("target/crossmodal"))
    a = ap.parse_args()

    scripts = a.toyworld or Path(__file__).resolve().parent
    sys.path.insert(0, str(scripts))
    from toyworld import world  # noqa: E402
    from toyworld.common import VIEW_OFFSET, OnnxClip  # noqa: E402

    clip = OnnxClip(a.model)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    texts = [world.query_text(color=c, category=cat) for c in world.COLOR_NAMES for cat in world.CATEGORIES]
    texts += [world.query_text(color=c, category=cat, pattern=p) for c in world.COLOR_NAMES for cat in world.CATEGORIES
              for p in world.PATTERNS if p != "plain"]
    tv = clip.texts(texts)
    dim = tv.shape[1]
    tv.astype("<f4").tofile(a.out / "text.f32")

    held = [world.product_for_seed(a.seed + a.n + i) for i in range(a.photos)]
    views = [VIEW_OFFSET + a.seed + a.n + i for i in range(a.photos)]
    clip.images(world.render_many(held, views, procs=a.procs)).astype("<f4").tofile(a.out / "photo.f32")

    with open(a.out / "base.f32", "wb") as f:
        for start in range(0, a.n, a.chunk):
            end = min(a.n, start + a.chunk)
            seeds = list(range(a.seed + start, a.seed + end))
            imgs = world.render_many([world.product_for_seed(s) for s in seeds], seeds, procs=a.procs)
            clip.images(imgs).astype("<f4").tofile(f)
            print(f"{end}/{a.n} products, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    meta = {"dim": int(dim), "n": a.n, "text": len(texts), "photo": a.photos, "text_queries": texts,
            "model": str(a.model), "seed": a.seed}
    (a.out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {a.out} in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
