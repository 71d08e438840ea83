#!/usr/bin/env python3
"""Render a toy-world catalog in Vitrine's catalog format, optionally with judged queries.

    .venv-fixtures/bin/python scripts/toyworld/make_catalog.py --n 400 --seed 30000000 --out demo/toy-world \\
        --queries --photo-queries 60
    .venv-fixtures/bin/python scripts/toyworld/make_catalog.py --n 100000 --out target/toy-100k --queries

Writes DIR/catalog.jsonl (`id`, `title`, `description`, `brand`, `category`, `price`, `currency`,
`image` relative to DIR, `attributes` {color, pattern}) and DIR/images/ID.png (64x64 renders). Product
i is `world.product_for_seed(seed + i)` seen from view seed `seed + i`; seeds must stay clear of the
training range (train.py renders seeds 0..10,000,000).

--queries writes DIR/queries.jsonl in `vitrine eval`'s format, one judged query a line:
    {"id", "q"?, "image"? (relative to the file), "filters"?, "relevant": {id: grade}, "split", "kind"}
Grades for a text query that states some of colour, pattern and category:
    2 = the product has every stated attribute;
    1 = the query states a pattern, and the product has the stated colour and category but another pattern;
    (anything else is not listed, i.e. 0).
A photo query (DIR/queries/ID-view.png: the same product from a new view seed: pose, scale, place,
background and lighting all change) grades that product 2 and every other product of the same colour
and category 1. No-match queries (out-of-world words) have an empty `relevant`.
Splits alternate within each kind, so train and test get about half of every kind.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toyworld import world  # noqa: E402
from toyworld.common import CATALOG_SEEDS_FROM, TRAIN_SEEDS, VIEW_OFFSET  # noqa: E402

BRANDS = ["Northwind Home", "Kova Studio", "Lumen & Co", "Brightfield", "Atelier Nord", "Pebble Goods", "Urban Loom",
          "Maple & Moss"]
PRICE_RANGE = {"mug": (8, 24), "sneaker": (45, 140), "handbag": (35, 220), "lamp": (25, 160), "vase": (15, 90),
               "t-shirt": (12, 40), "backpack": (30, 120), "chair": (60, 340)}


def catalog_rows(n: int, seed: int, id_prefix: str):
    rows, products = [], []
    for i in range(n):
        s = seed + i
        p = world.product_for_seed(s)
        rng = np.random.default_rng([s, 3])
        lo, hi = PRICE_RANGE[p.category]
        price = float(np.floor(rng.uniform(lo, hi))) + 0.99 if rng.random() < 0.7 else float(int(rng.uniform(lo, hi)))
        pid = f"{id_prefix}{i + 1:0{max(4, len(str(n)))}d}"
        rows.append({"id": pid, "title": world.title(p), "description": world.description(p),
                     "brand": BRANDS[int(rng.integers(len(BRANDS)))], "category": p.category, "price": price,
                     "currency": "USD", "image": f"images/{pid}.png",
                     "attributes": {"color": p.color, "pattern": p.pattern}})
        products.append(p)
    return rows, products


def _render_write(job):
    from PIL import Image
    for p, seed, path in job:
        Image.fromarray(world.render(p, seed)).save(path, compress_level=6)
    return len(job)


def render_to_files(products, seeds, paths, procs=2):
    """Render and PNG-encode in `procs` worker processes (encoding is a third of the per-image time)."""
    jobs = list(zip(products, seeds, paths))
    chunks = [jobs[i:i + 500] for i in range(0, len(jobs), 500)]
    if procs <= 1:
        return sum(map(_render_write, chunks))
    import multiprocessing as mp
    with mp.get_context("fork").Pool(procs) as pool:
        return sum(pool.imap_unordered(_render_write, chunks))


def text_queries(rows, products, rng, max_per_kind):
    """(kind, query dict) for text queries whose grades follow the module docstring."""
    attrs = [(p.category, p.color, p.pattern) for p in products]
    present = {}
    for a in attrs:
        present.setdefault(a, 0)
        present[a] += 1

    def grades(color=None, pattern=None, category=None):
        rel = {}
        for r, (k, c, pt) in zip(rows, attrs):
            if (category and k != category) or (color and c != color):
                continue
            if pattern and pt != pattern:
                if category and color:
                    rel[r["id"]] = 1
                continue
            rel[r["id"]] = 2
        return rel

    def sample(items, n):
        items = sorted(set(items))
        if len(items) <= n:
            return items
        return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]

    out = []
    # the queries a person would try first, kept whenever the catalog has a match
    for c, pt, k in [("red", "striped", "mug"), ("blue", None, "chair"), ("black", None, "sneaker"),
                     ("pink", "dotted", "handbag"), ("green", None, "lamp"), ("white", "checked", "t-shirt")]:
        rel = grades(c, pt, k)
        if any(g == 2 for g in rel.values()):
            out.append(("colour+pattern+category" if pt else "colour+category",
                        {"q": world.query_text(color=c, pattern=pt, category=k), "relevant": rel}))
    ck = sample([(c, k) for k, c, _ in present], max_per_kind)
    for c, k in ck:
        out.append(("colour+category", {"q": world.query_text(color=c, category=k, rng=rng), "relevant": grades(c, None, k)}))
    for k in world.CATEGORIES:
        out.append(("category", {"q": world.query_text(category=k, rng=rng), "relevant": grades(category=k)}))
    for c in world.COLOR_NAMES:
        out.append(("colour", {"q": world.query_text(color=c), "relevant": grades(color=c)}))
    cpk = sample([(c, pt, k) for k, c, pt in present if pt != "plain"], max_per_kind)
    for c, pt, k in cpk:
        out.append(("colour+pattern+category",
                    {"q": world.query_text(color=c, pattern=pt, category=k, rng=rng), "relevant": grades(c, pt, k)}))
    pk = sample([(pt, k) for k, _, pt in present if pt != "plain"], max(4, max_per_kind // 3))
    for pt, k in pk:
        out.append(("pattern+category", {"q": world.query_text(pattern=pt, category=k, rng=rng), "relevant": grades(None, pt, k)}))
    # structured filters next to the text: the filter narrows, the text ranks
    for c, k in sample([(c, k) for k, c, _ in present], max(3, max_per_kind // 6)):
        out.append(("text+filter", {"q": world.query_text(color=c), "filters": {"category": [k]},
                                    "relevant": grades(c, None, k)}))
    for q in world.NEGATIVE_EVAL:
        out.append(("no-match", {"q": q, "relevant": {}}))
    return out


def check_nomatch_words(rows):
    """No word of a no-match query may occur in any product text (else the keyword channel finds it)."""
    words = set()
    for r in rows:
        text = " ".join([r["title"], r["description"], r["brand"], r["category"], *r["attributes"].values()])
        words.update(re.findall(r"[a-z0-9]+", text.lower()))
    for q in world.NEGATIVE_EVAL:
        bad = set(re.findall(r"[a-z0-9]+", q.lower())) & words
        assert not bad, (q, bad)


def make_catalog(n: int, seed: int, out: Path, queries: bool = False, photo_queries: int = 0, max_per_kind: int = 40,
                 id_prefix: str = "tw-", procs: int = 2):
    assert seed >= TRAIN_SEEDS[1] or seed + n <= TRAIN_SEEDS[0], "catalog seeds overlap the training renders"
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    rows, products = catalog_rows(n, seed, id_prefix)
    render_to_files(products, range(seed, seed + n), [out / r["image"] for r in rows], procs)
    with open(out / "catalog.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    stats = {"products": n, "render_and_write_s": round(time.time() - t0, 1)}
    if queries or photo_queries:
        check_nomatch_words(rows)
        rng = np.random.default_rng([seed, 99])
        qs = text_queries(rows, products, rng, max_per_kind) if queries else []
        if photo_queries:
            (out / "queries").mkdir(exist_ok=True)
            picks = sorted(rng.choice(n, min(n, photo_queries), replace=False))
            views = world.render_many([products[i] for i in picks], [VIEW_OFFSET + seed + i for i in picks], procs=procs)
            from PIL import Image
            for i, v in zip(picks, views):
                pid = rows[i]["id"]
                rel_path = f"queries/{pid}-view.png"
                Image.fromarray(v).save(out / rel_path)
                p = products[i]
                rel = {r["id"]: 1 for r, q in zip(rows, products) if q.category == p.category and q.color == p.color}
                rel[pid] = 2
                qs.append(("photo", {"image": rel_path, "relevant": rel}))
            # photos from outside the world should match nothing
            from toyworld.evaluate import nomatch_photos
            for j, a in enumerate(nomatch_photos(6, np.random.default_rng([seed, 5]))):
                rel_path = f"queries/nomatch-{j + 1}.png"
                Image.fromarray(a).save(out / rel_path)
                qs.append(("photo-no-match", {"image": rel_path, "relevant": {}}))
        seen = {}
        with open(out / "queries.jsonl", "w") as f:
            for n_q, (kind, q) in enumerate(qs):
                k = seen[kind] = seen.get(kind, -1) + 1
                line = {"id": f"q{n_q + 1:03d}", **q, "split": "train" if k % 2 == 0 else "test", "kind": kind}
                f.write(json.dumps(line) + "\n")
        stats["queries"] = {kind: c + 1 for kind, c in seen.items()}
    stats["total_s"] = round(time.time() - t0, 1)
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=CATALOG_SEEDS_FROM)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--queries", action="store_true", help="write judged text queries (queries.jsonl)")
    ap.add_argument("--photo-queries", type=int, default=0, help="also this many photo queries (new views)")
    ap.add_argument("--max-per-kind", type=int, default=40)
    ap.add_argument("--id-prefix", default="tw-")
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    stats = make_catalog(args.n, args.seed, args.out, args.queries, args.photo_queries, args.max_per_kind,
                         args.id_prefix, args.procs)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
