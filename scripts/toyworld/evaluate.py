#!/usr/bin/env python3
"""Measure the exported toy-world model (ONNX through onnxruntime, as Vitrine runs it) on held-out renders,
and calibrate its default relevance floor.

    .venv-fixtures/bin/python scripts/toyworld/evaluate.py --model models/toy-world-clip [--write]

Held-out = products and views from EVAL_SEEDS, a range train.py never renders.

- zero-shot colour / category / pattern accuracy on --n renders: every image is scored against one
  prompt per attribute combination ("a red striped mug", averaged over a few templates), and the
  best combination's colour, category and pattern are the predictions. Single-attribute prompts
  ("red", "mug", "striped") are reported too.
- text->image retrieval over a --catalog-size product catalog (one render each): for each
  "colour category" query, relevant = every product of that colour and category.
  recall@10 = |relevant in top 10| / min(10, |relevant|) (a category-colour pair has ~23 products
  in 2,000, so the uncapped |relevant in top 10| / |relevant| is at most ~0.43 and is reported
  separately as recall@10_uncapped).
- relevance floor, per query kind (text, photo) and vector channel (image = cosine to product image
  vectors, text = cosine to the product's text embedding of "title. description"): the 5th
  percentile of the similarities of the relevant hits (grade >= 1: same colour and category) among
  each query's top 50 in that channel, so >= 95% of relevant hits pass. Text queries: the
  "colour category", "category" and "colour pattern category" queries; photo queries: a new view of
  every 4th catalog product. A text-query floor is then raised, where needed, above the highest
  similarity of the training-time out-of-world captions plus NEG_FLOOR_MARGIN, so out-of-world text
  is silenced in the text channel too. How many no-match queries it silences is reported next to it.
--write stores the floor in vitrine-model.json and the metrics in eval.json in the model dir.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toyworld import world  # noqa: E402
from toyworld.common import EVAL_SEEDS, VIEW_OFFSET, OnnxClip, mcf, pixel_values  # noqa: E402

TEMPLATES = ["a {} ", "{} ", "a photo of a {} "]


def prompt_matrix(clip, items, phrase):
    """L2-normalized mean over TEMPLATES of each item's prompt embedding."""
    texts = [t.format(phrase(*it)).strip() for it in items for t in TEMPLATES]
    e = clip.texts(texts).reshape(len(items), len(TEMPLATES), -1).mean(1)
    return mcf.l2n(e).astype(np.float32)


def check_preprocessing(model_dir, images):
    """pixel_values() == transformers CLIPImageProcessor with the model's preprocessor_config.json."""
    from PIL import Image
    proc = mcf.image_processor(model_dir)
    ref = np.asarray(proc(images=[Image.fromarray(a) for a in images], return_tensors="np")["pixel_values"], np.float32)
    ours = pixel_values(images)
    assert ref.shape == ours.shape, (ref.shape, ours.shape)
    return float(np.abs(ref - ours).max())


HITS = 50
NEG_FLOOR_MARGIN = 0.05


def relevant_hits(scores, rel):
    """Similarities of the relevant products among a channel's top HITS: the hits a floor would cut."""
    top = np.argsort(-scores)[:HITS]
    return list(scores[top][rel[top]])


def percentile_floor(sims, keep=0.95):
    """The largest 0.001 step that at least `keep` of `sims` reach."""
    if not len(sims):
        return 1.0
    s = np.sort(np.asarray(sims, np.float64))
    return float(np.floor(s[int((1 - keep) * len(s))] * 1000) / 1000)


def nomatch_photos(n, rng):
    """Images from outside the world: real photos (skimage) cropped and shrunk, noise, flat colours."""
    from PIL import Image
    from skimage import data
    photos = [data.astronaut(), data.coffee(), data.chelsea(), np.stack([data.camera()] * 3, -1), data.rocket(),
              np.stack([data.moon()] * 3, -1), data.immunohistochemistry(), np.stack([data.brick()] * 3, -1)]
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a = photos[i // 3 % len(photos)]
            h, w = a.shape[:2]
            s = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            out.append(np.asarray(Image.fromarray(a[y:y + s, x:x + s]).resize((world.SIZE, world.SIZE), Image.BICUBIC)))
        elif kind == 1:
            out.append(rng.integers(0, 256, (world.SIZE, world.SIZE, 3)).astype(np.uint8))
        else:
            out.append(np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (world.SIZE, world.SIZE, 3)).copy())
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000, help="held-out renders for the accuracies")
    ap.add_argument("--catalog-size", type=int, default=2000)
    ap.add_argument("--write", action="store_true", help="store floor + metrics in the model dir")
    args = ap.parse_args()
    t0 = time.time()
    clip = OnnxClip(args.model)
    rng = np.random.default_rng(7)
    res = {}

    # held-out renders: the accuracy set and the retrieval catalog are different products
    acc_seeds = list(range(EVAL_SEEDS[0], EVAL_SEEDS[0] + args.n))
    cat_seeds = list(range(EVAL_SEEDS[0] + 500_000, EVAL_SEEDS[0] + 500_000 + args.catalog_size))
    assert cat_seeds[-1] < EVAL_SEEDS[1]
    acc_products = [world.product_for_seed(s) for s in acc_seeds]
    cat_products = [world.product_for_seed(s) for s in cat_seeds]
    acc_imgs = world.render_many(acc_products, acc_seeds)
    cat_imgs = world.render_many(cat_products, cat_seeds)
    res["preprocessing_max_abs_diff_vs_transformers"] = check_preprocessing(args.model, acc_imgs[:16])
    assert res["preprocessing_max_abs_diff_vs_transformers"] < 1e-5
    ie = clip.images(acc_imgs)

    # zero-shot accuracy, joint prompts
    combos = [(c, p, k) for c in world.COLOR_NAMES for p in world.PATTERNS for k in world.CATEGORIES]
    P = prompt_matrix(clip, combos, lambda c, p, k: f"{c} {p} {k}")
    pred = [combos[i] for i in (ie @ P.T).argmax(1)]
    col = np.mean([pr[0] == p.color for pr, p in zip(pred, acc_products)])
    pat = np.mean([pr[1] == p.pattern for pr, p in zip(pred, acc_products)])
    cat = np.mean([pr[2] == p.category for pr, p in zip(pred, acc_products)])
    ck = [(c, k) for c in world.COLOR_NAMES for k in world.CATEGORIES]
    P2 = prompt_matrix(clip, ck, lambda c, k: f"{c} {k}")
    pred2 = [ck[i] for i in (ie @ P2.T).argmax(1)]
    res["zero_shot"] = {
        "n": len(acc_products),
        "joint_prompts_color_pattern_category": {"color": float(col), "category": float(cat), "pattern": float(pat)},
        "joint_prompts_color_category": {
            "color": float(np.mean([pr[0] == p.color for pr, p in zip(pred2, acc_products)])),
            "category": float(np.mean([pr[1] == p.category for pr, p in zip(pred2, acc_products)]))},
    }
    single = {}
    for attr, labels, get in [("color", world.COLOR_NAMES, lambda p: p.color),
                              ("category", world.CATEGORIES, lambda p: p.category),
                              ("pattern", world.PATTERNS, lambda p: p.pattern)]:
        Pa = prompt_matrix(clip, [(lab,) for lab in labels], lambda lab: lab)
        pa = [labels[i] for i in (ie @ Pa.T).argmax(1)]
        single[attr] = float(np.mean([x == get(p) for x, p in zip(pa, acc_products)]))
    res["zero_shot"]["single_attribute_prompts"] = single

    # text -> image retrieval over the catalog
    ce = clip.images(cat_imgs)
    cte = clip.texts([world.product_text(p) for p in cat_products])
    attrs = np.array([p.attrs for p in cat_products])
    rec, rec_u, rec_text = [], [], []
    qs = [(c, k) for c in world.COLOR_NAMES for k in world.CATEGORIES]
    qe = clip.texts([f"{c} {k}" for c, k in qs])
    for (c, k), q in zip(qs, qe):
        rel = set(np.flatnonzero((attrs[:, 0] == k) & (attrs[:, 1] == c)))
        if not rel:
            continue
        top = np.argsort(-(ce @ q))[:10]
        hit = len(rel & set(top))
        rec.append(hit / min(10, len(rel)))
        rec_u.append(hit / len(rel))
        top_t = np.argsort(-(cte @ q))[:10]
        rec_text.append(len(rel & set(top_t)) / min(10, len(rel)))
    res["text_to_image"] = {"catalog": len(cat_products), "queries": len(rec), "query_form": "'{color} {category}'",
                            "recall@10": float(np.mean(rec)), "recall@10_uncapped": float(np.mean(rec_u)),
                            "text_channel_recall@10": float(np.mean(rec_text))}

    # relevance floor: relevant pairs of the judged query kinds the demo uses
    sims = {"text": {"image": [], "text": []}, "photo": {"image": [], "text": []}}
    q_items = [(c, None, k) for c, k in qs] + [(None, None, k) for k in world.CATEGORIES] + \
              [(c, p, k) for c in world.COLOR_NAMES for p in world.PATTERNS[1:] for k in world.CATEGORIES]
    qtexts = [world.query_text(color=c, pattern=p, category=k) for c, p, k in q_items]
    qte = clip.texts(qtexts)
    for (c, p, k), q in zip(q_items, qte):
        rel = (attrs[:, 0] == k) & ((attrs[:, 1] == c) if c else True)  # grade >= 1: colour + category
        sims["text"]["image"] += relevant_hits(ce @ q, rel)
        sims["text"]["text"] += relevant_hits(cte @ q, rel)
    # photo queries: a new view of a catalog product; relevant = that product and its colour + category
    pq = list(range(0, len(cat_products), 4))
    photo_imgs = world.render_many([cat_products[i] for i in pq], [VIEW_OFFSET + cat_seeds[i] for i in pq])
    pe = clip.images(photo_imgs)
    self_rank = []
    for e, i in zip(pe, pq):
        p = cat_products[i]
        rel = (attrs[:, 0] == p.category) & (attrs[:, 1] == p.color)
        s_img = ce @ e
        sims["photo"]["image"] += relevant_hits(s_img, rel)
        sims["photo"]["text"] += relevant_hits(cte @ e, rel)
        self_rank.append(int((s_img > s_img[i]).sum()) + 1)
    res["photo_query"] = {"queries": len(pq), "same_product_recall@10": float(np.mean(np.array(self_rank) <= 10)),
                          "same_product_mrr": float(np.mean(1 / np.array(self_rank)))}
    floor = {kind: {ch: round(percentile_floor(v), 3) for ch, v in d.items()} for kind, d in sims.items()}
    # A text floor must also silence out-of-world text. The floors above keep 95% of relevant hits,
    # but out-of-world text can sit closer to the products' *text* embeddings than that (the training
    # hinge pushed it away from images only). So a text-query floor is at least the highest
    # similarity of the training-time out-of-world captions (world.NEGATIVE_TRAIN, never the eval
    # list below) in that channel, plus NEG_FLOOR_MARGIN.
    neg_train = clip.texts(world.NEGATIVE_TRAIN)
    neg_floor = {}
    for ch, base in (("image", ce), ("text", cte)):
        neg_floor[ch] = float((neg_train @ base.T).max()) + NEG_FLOOR_MARGIN
        floor["text"][ch] = max(floor["text"][ch], round(math.ceil(neg_floor[ch] * 1000) / 1000, 3))
    res["relevance_floor_out_of_world_train_max_plus_margin"] = neg_floor
    # no-match: out-of-world text and images
    neg_t = clip.texts(world.NEGATIVE_EVAL)
    neg_p = clip.images(nomatch_photos(24, rng))
    nm = {}
    for kind, qv in (("text", neg_t), ("photo", neg_p)):
        for ch, base in (("image", ce), ("text", cte)):
            s = qv @ base.T
            top10 = np.sort(s, 1)[:, -10:]
            f = floor[kind][ch]
            nm[f"{kind}/{ch}"] = {"queries": len(qv), "floor": f,
                                  "queries_with_any_hit_above_floor": float(np.mean(top10.max(1) >= f)),
                                  "top10_hits_above_floor": float(np.mean(top10 >= f)),
                                  "max_similarity": float(s.max())}
    res["relevance_floor"] = floor
    res["relevance_floor_relevant_kept"] = {f"{k}/{ch}": float(np.mean(np.asarray(v) >= floor[k][ch]))
                                            for k, d in sims.items() for ch, v in d.items()}
    res["no_match"] = nm
    res["no_match_texts"] = world.NEGATIVE_EVAL
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))
    if args.write:
        meta_path = args.model / "vitrine-model.json"
        meta = json.loads(meta_path.read_text())
        meta["relevance_floor"] = floor
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        (args.model / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
