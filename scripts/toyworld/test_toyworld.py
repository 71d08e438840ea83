#!/usr/bin/env python3
"""Checks of the toy world and the catalog/query generator (no model needed; a few seconds).

    .venv-fixtures/bin/python scripts/toyworld/test_toyworld.py      (or: python -m pytest scripts/toyworld)
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toyworld import world  # noqa: E402
from toyworld.make_catalog import make_catalog  # noqa: E402


def test_render_is_a_pure_function_of_the_seeds():
    p = world.product_for_seed(123)
    a, b = world.render(p, 5), world.render(p, 5)
    assert a.shape == (world.SIZE, world.SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, world.render(p, 6)), "another view seed must give another view"
    prods = [world.product_for_seed(s) for s in range(100)]
    many = world.render_many(prods, range(100), procs=2)
    assert np.array_equal(many[37], world.render(prods[37], 37)), "parallel rendering must equal the serial one"


def test_attributes_cover_the_world_and_colours_show():
    prods = [world.product_for_seed(s) for s in range(3000)]
    assert {p.category for p in prods} == set(world.CATEGORIES)
    assert {p.color for p in prods} == set(world.COLOR_NAMES)
    assert {p.pattern for p in prods} == set(world.PATTERNS)
    # the object's own colour dominates its pixels: the median object pixel is near the named colour
    for s in range(40):
        p = world.Product(world.CATEGORIES[s % 8], world.COLOR_NAMES[s % 11], "plain", s)
        img = world.render(p, s).astype(np.float32)
        d = np.abs(img - np.array(world.COLORS[p.color], np.float32)).sum(-1)
        assert (d < 150).mean() > 0.04, (p, (d < 150).mean())


def test_captions_are_true_of_their_product():
    rng = np.random.default_rng(0)
    for s in range(500):
        p = world.product_for_seed(s)
        text, (cat, col, pat) = world.caption(p, rng)
        assert text.strip()
        assert cat in (None, p.category) and col in (None, p.color) and pat in (None, p.pattern)
        if col:
            assert any(w in text.lower() for w in world.COLOR_WORDS[col]), (text, col)


def test_catalog_and_grades():
    with tempfile.TemporaryDirectory() as td:
        out = Path(td)
        stats = make_catalog(120, 30_000_000, out, queries=True, photo_queries=4)
        rows = [json.loads(x) for x in (out / "catalog.jsonl").read_text().splitlines()]
        assert len(rows) == 120 and all((out / r["image"]).is_file() for r in rows)
        by_id = {r["id"]: r for r in rows}
        qs = [json.loads(x) for x in (out / "queries.jsonl").read_text().splitlines()]
        assert stats["queries"]["no-match"] >= 10 and stats["queries"]["photo"] == 4
        assert {q["split"] for q in qs} == {"train", "test"}
        for q in qs:
            if q["kind"] == "colour+pattern+category":
                c, k = q["q"].split()[0], q["q"].split()[-1]
                for pid, g in q["relevant"].items():
                    a = by_id[pid]["attributes"]
                    assert a["color"] in world.COLOR_WORDS and by_id[pid]["category"] is not None
                    assert g in (1, 2)
                    if g == 1:
                        assert a["pattern"] not in q["q"] or a["pattern"] == "plain", (q, a)
            if q["kind"] == "photo":
                assert (out / q["image"]).is_file()
                assert sorted(q["relevant"].values())[-1] == 2
                assert list(q["relevant"].values()).count(2) == 1
            if q["kind"].endswith("no-match"):
                assert q["relevant"] == {}
        assert any(q.get("q") == "red striped mug" for q in qs) or not any(
            r["title"] == "Red Striped Mug" for r in rows)


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print("ok", name)
