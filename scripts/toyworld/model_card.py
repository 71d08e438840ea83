#!/usr/bin/env python3
"""Write MODEL_CARD.md for a trained toy-world model dir from its training.json and eval.json.

    .venv-fixtures/bin/python scripts/toyworld/model_card.py models/toy-world-clip
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toyworld import world  # noqa: E402


def pct(x):
    return f"{100 * x:.1f}%"


def main():
    d = Path(sys.argv[1])
    t = json.loads((d / "training.json").read_text())
    e = json.loads((d / "eval.json").read_text())
    size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
    zs = e["zero_shot"]
    j, jc, s1 = zs["joint_prompts_color_pattern_category"], zs["joint_prompts_color_category"], zs["single_attribute_prompts"]
    tti, ph, fl, nm = e["text_to_image"], e["photo_query"], e["relevance_floor"], e["no_match"]
    kept = e["relevance_floor_relevant_kept"]
    card = f"""# toy-world-clip

A small CLIP (a CLIP text transformer and, as in CLIP's ResNet models, a convolutional image tower, exported
to Vitrine's model-dir contract: ONNX towers, the real CLIP BPE tokenizer, 64-dim embeddings) trained from scratch on a procedurally rendered world of
products. It is *semantically real inside that world*: text such as "red striped mug" lands near renders of
red striped mugs. It exists so Vitrine's relevance (fusion, the relevance floor, `vitrine eval`/`tune`,
cross-modal recall, auto-tagging) can be measured and tuned without downloading real CLIP weights.

## What it knows
- **Categories ({len(world.CATEGORIES)}):** {", ".join(world.CATEGORIES)} (and the synonyms in
  `scripts/toyworld/world.py` `CATEGORY_WORDS`: "coffee mug", "trainer", "purse", "rucksack", "tee", ...).
- **Colours ({len(world.COLORS)}):** {", ".join(world.COLORS)} ("gray" too).
- **Patterns ({len(world.PATTERNS)}):** {", ".join(world.PATTERNS)} ("stripy", "polka dot", "checkered", "plaid", "solid").
- Phrasings: "a red striped mug", "striped mug in red", "red coffee mug", "red mug with stripes", single
  words ("red", "mug", "striped"), and product texts "Red Striped Mug. A red mug with white stripes."
- 64×64 renders with varied shape proportions, pose (±25° rotation, mirroring), scale, position, muted
  backgrounds with gradients and noise, and lighting (brightness, directional gradient).

## What it does not know
- Anything outside that world: real photos, other objects, materials, brands, sizes, prices, styles. Text about
  such things ("golden retriever", "laptop computer", gibberish) was trained to land away from every render
  (out-of-world captions and random BPE tokens as negatives) and falls below the text floors.
- **Real photos are not handled**: an out-of-world *image* (a photo, noise, a flat colour) still lands among
  the products, and the photo floors do not remove it (see "no-match" below).
- transformers cannot load it as a `CLIPModel`: its image tower is not a ViT (`config.json`'s
  `vision_config` describes the CNN). Vitrine runs the ONNX graphs only.

## Training recipe (`scripts/toyworld/train.py`, seeded, CPU)
- Vision: a CNN, 64 px input, four stride-2 3×3 conv stages of widths {", ".join(map(str, t.get("conv_widths", [])))}
  (the last two with an extra 3×3 conv), batch norm and ReLU, global average pooling, linear projection.
  A ViT (patch 16, then patch 8, width 64, 4 layers) trained the same way learned colour and pattern
  but not shape: category 42–44%, and a linear probe on its image embeddings 43%.
  Text: CLIP's transformer, width 64, 2 layers, 4 heads, 77 positions, the full 49,408-token CLIP
  vocabulary. Projection 64. {t["parameters"]:,} parameters.
- Data: {t["n_train"]:,} renders (product/view seeds 0..{t["n_train"] - 1}), one random caption per image per
  step, plus {t["negatives"]} out-of-world captions per batch (a word list and random BPE tokens).
- Loss: symmetric CLIP cross-entropy with soft targets (a caption is a positive for every image in the
  batch it is true of), a squared hinge keeping out-of-world captions below cosine 0.1, and
  {"training-only linear attribute probes on the image embedding (weight " + str(t.get("probe_weight", 0)) + ", dropped at export)" if t.get("probe_weight", 0) else "no attribute probes (`--probe-weight 0`)"}.
- AdamW (sparse Adam for the token table), lr {t["lr"]}, warmup + cosine, batch {t["batch"]}, {t["steps"]} steps,
  `torch.set_num_threads({t["threads"]})`, seed {t["seed"]}.
- Wall time on this 2-core machine, shared with other jobs: rendering {t["render_s"]:.0f} s, training
  {t["train_s"]:.0f} s, total {t["total_s"]:.0f} s.
- Export: `make_clip_fixture.py`'s exporter (opset 17, checked ONNX == torch); the token table is stored as
  int8 with one scale per row (the torch weights are set to the dequantized values before export, and
  every metric below is measured on the exported ONNX files). Model dir size {size / 1e6:.1f} MB.
- Preprocessing: `preprocessor_config.json` is 64 px (shortest edge 64, bicubic, center crop 64, OpenAI
  CLIP mean/std), so a 64×64 render passes unchanged; larger images are resized like any CLIP input.

## Metrics (`scripts/toyworld/evaluate.py`, ONNX through onnxruntime, held-out seeds 20,000,000+)
Zero-shot on {zs["n"]:,} held-out renders (prompt ensemble "a X", "X", "a photo of a X"):

| prompts | colour | category | pattern |
|---|---|---|---|
| every colour × pattern × category combination, argmax | {pct(j["color"])} | {pct(j["category"])} | {pct(j["pattern"])} |
| every colour × category combination, argmax | {pct(jc["color"])} | {pct(jc["category"])} | — |
| one attribute alone ("red", "mug", "striped") | {pct(s1["color"])} | {pct(s1["category"])} | {pct(s1["pattern"])} |

Text→image over a {tti["catalog"]:,}-product catalog, {tti["queries"]} "colour category" queries, relevant =
every product of that colour and category (~23 each): recall@10 = |relevant ∩ top 10| / min(10, |relevant|)
= **{tti["recall@10"]:.3f}** (uncapped |relevant ∩ top 10| / |relevant| = {tti["recall@10_uncapped"]:.3f};
the same queries against the products' text embeddings: {tti["text_channel_recall@10"]:.3f}).
Photo queries (a new view of a catalog product, {ph["queries"]}): the same product in the image channel's
top 10: {pct(ph["same_product_recall@10"])}, MRR {ph["same_product_mrr"]:.3f}.

## Default relevance floor (`vitrine-model.json` `relevance_floor`)

| query kind | image channel | text channel |
|---|---|---|
| text | {fl["text"]["image"]} | {fl["text"]["text"]} |
| photo | {fl["photo"]["image"]} | {fl["photo"]["text"]} |

Calibration: for each query kind and vector channel (image = cosine of the query vector to the products'
image vectors; text = cosine to the embedding of the product's "title. description"), take each judged query's
top 50 in that channel over the {tti["catalog"]:,}-product held-out catalog, keep the relevant hits (grade ≥ 1:
same colour and category), and set the floor to the largest 0.001 step that ≥ 95% of them reach (kept:
text/image {pct(kept["text/image"])}, text/text {pct(kept["text/text"])}, photo/image {pct(kept["photo/image"])},
photo/text {pct(kept["photo/text"])}). A text-query floor is then raised, where needed, to the highest
similarity of the training-time out-of-world captions plus 0.05 (so out-of-world text is silenced in
the text channel too; it sits closer to product *texts* than to images). Text queries: every "colour category", "category" and "colour pattern
category" query; photo queries: a new view of every 4th catalog product.

No-match queries against the same catalog ({nm["text/image"]["queries"]} out-of-world texts never used in
training; {nm["photo/image"]["queries"]} out-of-world images: photo crops, noise, flat colours):

| channel | floor | queries with any hit above the floor | top-10 hits above the floor | highest similarity |
|---|---|---|---|---|
""" + "\n".join(
        f"| {k} | {v['floor']} | {pct(v['queries_with_any_hit_above_floor'])} | {pct(v['top10_hits_above_floor'])} | {v['max_similarity']:.3f} |"
        for k, v in nm.items()) + """

So the floor silences out-of-world *text* completely, but not out-of-world *images*: the model never saw
one, and maps them among the products.

## Reproduce
    .venv-fixtures/bin/python scripts/toyworld/train.py --out models/toy-world-clip""" + (
        f" --steps {t['steps']} --n-train {t['n_train']} --batch {t['batch']} --probe-weight {t.get('probe_weight', 0)}") + """
    .venv-fixtures/bin/python scripts/toyworld/evaluate.py --model models/toy-world-clip --write
    .venv-fixtures/bin/python scripts/toyworld/model_card.py models/toy-world-clip
"""
    (d / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
