#!/usr/bin/env python3
"""Build tiny random-weight SigLIP models (real Hugging Face architecture) with offline tokenizers, export them the
way the hub's SigLIP ONNX exports look, and write reference outputs for Vitrine's parity tests.

    python scripts/make_siglip_fixture.py --kind siglip  --out models/tiny-siglip  --reference tests/fixtures/siglip
    python scripts/make_siglip_fixture.py --kind siglip2 --out models/tiny-siglip2 --reference tests/fixtures/siglip2

No pretrained weights or tokenizer files are downloaded: the weights are random but seeded, and the tokenizers are
trained here on a fixed corpus, so the output is reproducible with scripts/requirements-fixtures.txt.

--kind siglip   SigLIP (google/siglip-*): SiglipModel, a SentencePiece Unigram tokenizer (trained with
                `sentencepiece`, T5 layout: <pad> 0, </s> 1, <unk> 2) used through transformers' SiglipTokenizer (the
                reference: lower-case, strip ASCII punctuation, collapse whitespace, then SentencePiece, then </s>),
                and a tokenizer.json converted from it the way the hub's exports are (a T5-style Unigram file with
                NO lower-casing or punctuation rule: Vitrine applies SiglipTokenizer's canonicalization itself).
                model_type "siglip". Outputs named as Xenova's exports: last_hidden_state, pooler_output.
--kind siglip2  SigLIP 2 at a fixed resolution (google/siglip2-*-224 and friends): the same SiglipModel architecture
                with a Gemma-style byte-fallback BPE tokenizer (<pad> 0, <eos> 1, <bos> 2, <unk> 3), referenced through
                transformers' Siglip2Tokenizer (which lower-cases) and the Siglip2Processor text defaults (padding
                "max_length", 64). tokenizer.json is the Gemma file WITHOUT the Lowercase step, as on the hub.
                config.json says model_type "siglip2" (the NaFlex repositories do; the fixed-resolution ones say
                "siglip"), and the image processor is the fixed-size SiglipImageProcessor. Outputs: last_hidden_state,
                then image_embeds / text_embeds (the other naming Vitrine accepts).

Both: text input `input_ids` only (no attention_mask), dynamic sequence length in the graph (the text length comes
from the tokenizer files), texts padded to 64 with the pad token; images resized straight to size.height x
size.width (no crop) with the configured resample, x/255, (x - 0.5)/0.5. The test images are the CLIP fixture's
(tests/fixtures/clip/images), decoded with the same documented policy (make_clip_fixture.load_rgb).

Reference (--reference DIR): DIR/reference.json with, per image, L2-normalized embeddings (transformers'
SiglipImageProcessor PIL backend + onnxruntime, checked against torch) and, per text, the reference ids padded to
the text length and the L2-normalized embedding.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_clip_fixture as clipfx  # noqa: E402  (shared: load_rgb, ort_session, cos, l2n, check texts)

SEED = 20261130
OPSET = 17
TEXT_LEN = 64
VOCAB = 1000

KINDS = {
    "siglip": dict(name="tiny-siglip-random", image_size=192, patch_size=16, resample=2, seed_offset=0,
                   out_names=("pooler_output",)),
    "siglip2": dict(name="tiny-siglip2-random", image_size=224, patch_size=16, resample=3, seed_offset=1,
                    out_names=("image_embeds", "text_embeds")),
}

CORPUS = [
    "a photo of a cat", "a photo of a dog", "red leather handbag", "blue cotton shirt", "women's running shoes",
    "vintage poster from the seventies", "coffee mug with a handle", "the astronaut in a white suit",
    "stainless steel kitchen knife", "wooden chair and table", "green summer dress", "black leather boots",
    "a cup of coffee on a saucer", "camera on a tripod", "rocket launch at night", "gold necklace with pendant",
    "straße über größe", "café crème brûlée", "iphone pro max 256gb", "hello world", "price 199 dollars",
]

CHECK_TEXTS = clipfx.TOKENIZER_CHECK_TEXTS + [
    "Hello, World!", "UPPER case Words", "tabs\tand   spaces", "quote's \"inside\" (parens) [brackets]",
    "a photo of 2 cats", "x",
]


# --------------------------------------------------------------------------------------------- tokenizers
def corpus_lines():
    lines = []
    for s in CORPUS + CHECK_TEXTS:
        lines.append(s)
        lines.append(s.lower())
    return lines * 3


def build_siglip_tokenizer(out: Path):
    """SentencePiece Unigram -> (transformers SiglipTokenizer reference, tokenizer.json as exported to the hub)."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer
    from transformers.convert_slow_tokenizer import T5Converter

    td = Path(tempfile.mkdtemp())
    (td / "corpus.txt").write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(td / "corpus.txt"), model_prefix=str(td / "spiece"), vocab_size=VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        character_coverage=1.0, byte_fallback=False, num_threads=1, seed_sentencepiece_size=100000,
        minloglevel=2, hard_vocab_limit=False)
    ref = SiglipTokenizer(vocab_file=str(td / "spiece.model"), model_max_length=TEXT_LEN)
    # The hub's SigLIP tokenizer.json files are T5-style Unigram conversions of the same spiece.model.
    ref._extra_ids = 0  # T5Converter appends <extra_id_N> pieces; SigLIP has none
    fast = T5Converter(ref).converted()
    fast.no_padding()
    fast.no_truncation()
    fast.save(str(out / "tokenizer.json"), pretty=False)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "SiglipTokenizer", "model_max_length": TEXT_LEN, "do_lower_case": True,
        "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}, indent=2) + "\n")
    pad_id = ref.pad_token_id

    def reference_ids(text):
        return ref(text, padding="max_length", truncation=True, max_length=TEXT_LEN)["input_ids"]
    return reference_ids, pad_id


def build_siglip2_tokenizer(out: Path):
    """Gemma-style byte-fallback BPE -> (transformers Siglip2Tokenizer reference, tokenizer.json without Lowercase)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials + bytes_, show_progress=False)
    tok.train_from_iterator([s.replace(" ", "▁") for s in corpus_lines()], trainer=trainer)
    vocab = tok.get_vocab()
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(tok.to_str())["model"]["merges"]]
    ref = Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=TEXT_LEN)
    backend = ref.backend_tokenizer
    # What the hub ships: Gemma's tokenizer.json, without the Lowercase step transformers 5 adds for SigLIP 2.
    hub = Tokenizer.from_str(backend.to_str())
    hub.normalizer = normalizers.Replace(" ", "▁")
    hub.no_padding()
    hub.no_truncation()
    hub.save(str(out / "tokenizer.json"), pretty=False)
    data = json.loads((out / "tokenizer.json").read_text())
    assert data["model"]["type"] == "BPE" and "Lowercase" not in json.dumps(data["normalizer"])
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "model_max_length": TEXT_LEN, "padding_side": ref.padding_side,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}, indent=2) + "\n")
    pad_id = ref.pad_token_id

    def reference_ids(text):
        # Siglip2Processor's text defaults: padding "max_length", truncation, max_length 64.
        return ref(text, padding="max_length", truncation=True, max_length=TEXT_LEN)["input_ids"]
    return reference_ids, pad_id


# --------------------------------------------------------------------------------------------- model
def build_model(kind: str, vocab_size: int, pad_id: int, eos_id: int):
    import torch
    from transformers import SiglipConfig, SiglipModel
    k = KINDS[kind]
    cfg = SiglipConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=TEXT_LEN, pad_token_id=pad_id,
                         eos_token_id=eos_id, bos_token_id=None, projection_size=48),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                           image_size=k["image_size"], patch_size=k["patch_size"]),
    )
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    seed = SEED + k["seed_offset"]
    torch.manual_seed(seed)
    model = SiglipModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name in ("logit_scale", "logit_bias"):
                continue
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                gain = 3.0 if name.endswith(("out_proj.weight", "fc2.weight")) else 1.0
                if "position_embedding" in name:
                    scale = 0.1  # shared by every image: kept small so that images stay distinct
                elif "token_embedding" in name:
                    scale = 1.0
                else:
                    scale = gain / math.sqrt(fan_in)
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            else:
                p.copy_(torch.randn(p.shape, generator=g))
    return model, cfg


def export(model, kind: str, out: Path):
    import onnx
    import torch
    k = KINDS[kind]
    img_name, txt_name = (("pooler_output", "pooler_output") if k["out_names"] == ("pooler_output",)
                          else k["out_names"])

    class Vision(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m.vision_model

        def forward(self, pixel_values):
            o = self.m(pixel_values=pixel_values)
            return o.last_hidden_state, o.pooler_output

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m.text_model

        def forward(self, input_ids):
            o = self.m(input_ids=input_ids)
            return o.last_hidden_state, o.pooler_output

    vision, text = Vision(model).eval(), Text(model).eval()
    size = k["image_size"]
    px = torch.randn(2, 3, size, size)
    ids = torch.randint(5, 200, (2, TEXT_LEN))
    vpath, tpath = out / "vision_model.onnx", out / "text_model.onnx"
    with torch.no_grad():
        torch.onnx.export(vision, (px,), str(vpath), input_names=["pixel_values"],
                          output_names=["last_hidden_state", img_name],
                          dynamic_axes={"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"},
                                        img_name: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
        torch.onnx.export(text, (ids,), str(tpath), input_names=["input_ids"],
                          output_names=["last_hidden_state", txt_name],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "last_hidden_state": {0: "batch", 1: "sequence"}, txt_name: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    for p in (vpath, tpath):
        m = onnx.load(str(p))
        m.producer_name = "vitrine make_siglip_fixture.py"
        onnx.save_model(m, str(p))
        onnx.checker.check_model(str(p))
    return vision, text, img_name, txt_name


def write_preprocessor_config(out: Path, kind: str):
    k = KINDS[kind]
    cfg = {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": k["resample"],
        "rescale_factor": 1 / 255,
        "size": {"height": k["image_size"], "width": k["image_size"]},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def image_processor(cfg: dict):
    cfg = {k: v for k, v in cfg.items() if k not in ("image_processor_type", "processor_class")}
    try:
        from transformers import SiglipImageProcessorPil as Proc
    except ImportError:
        from transformers import SiglipImageProcessor as Proc
    return Proc(**cfg)


# --------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=sorted(KINDS), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reference", type=Path)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    k = KINDS[args.kind]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    if args.kind == "siglip":
        reference_ids, pad_id = build_siglip_tokenizer(out)
        eos_id = 1
    else:
        reference_ids, pad_id = build_siglip2_tokenizer(out)
        eos_id = 1
    from tokenizers import Tokenizer
    vocab_size = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size()
    model, cfg = build_model(args.kind, vocab_size, pad_id, eos_id)
    vision, text, img_name, txt_name = export(model, args.kind, out)
    pcfg = write_preprocessor_config(out, args.kind)
    cfg_dict = cfg.to_dict()
    cfg_dict["architectures"] = ["SiglipModel"]
    cfg_dict["model_type"] = args.kind
    (out / "config.json").write_text(json.dumps(cfg_dict, indent=2, sort_keys=True, default=str) + "\n")
    (out / "vitrine-model.json").write_text(json.dumps({"name": k["name"]}, indent=2) + "\n")

    vs, ts = clipfx.ort_session(out / "vision_model.onnx"), clipfx.ort_session(out / "text_model.onnx")
    proc = image_processor(pcfg)
    img_dir = Path(__file__).resolve().parent.parent / "tests/fixtures/clip/images"
    images, embs = [], {}
    for f in sorted(os.listdir(img_dir)):
        rgb = clipfx.load_rgb(img_dir / f)
        px = np.asarray(proc(images=[rgb], return_tensors="np")["pixel_values"], dtype=np.float32)
        assert px.shape == (1, 3, k["image_size"], k["image_size"]), px.shape
        e = vs.run([img_name], {"pixel_values": px})[0][0]
        with torch.no_grad():
            te = vision(torch.from_numpy(px))[1].numpy()[0]
        assert clipfx.cos(e, te) > 0.9999, (f, clipfx.cos(e, te))
        embs[f] = clipfx.l2n(e)
        images.append({"file": f, "embedding": [float(x) for x in clipfx.l2n(e)],
                       "pixel_corner": [float(x) for x in px[0, 0, 0, :16]],
                       "pixel_stats": {"mean": [float(px[0, c].mean()) for c in range(3)],
                                       "std": [float(px[0, c].std()) for c in range(3)]}})
    distinct = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "camera.png"]
    dsims = [float(embs[a] @ embs[b]) for i, a in enumerate(distinct) for b in distinct[i + 1:]]
    # Random towers put photos closer than CLIP's fixture does (coffee vs the grey camera: 0.96 for siglip2);
    # the parity tests ask for 0.9999, far above any pair here, so a geometric mistake still shows.
    assert max(dsims) < 0.97, dsims

    texts, temb = [], []
    for s in CHECK_TEXTS:
        ids = reference_ids(s)
        assert len(ids) == TEXT_LEN, (s, len(ids))
        a = np.array([ids], dtype=np.int64)
        e = ts.run([txt_name], {"input_ids": a})[0][0]
        with torch.no_grad():
            te = text(torch.from_numpy(a))[1].numpy()[0]
        assert clipfx.cos(e, te) > 0.9999, (s, clipfx.cos(e, te))
        # transformers' own SiglipModel text features (the reference end to end)
        with torch.no_grad():
            fe = model.get_text_features(input_ids=torch.from_numpy(a))
            fe = getattr(fe, "pooler_output", fe).numpy()[0]
        assert clipfx.cos(e, fe) > 0.9999, (s, clipfx.cos(e, fe))
        temb.append(clipfx.l2n(e))
        texts.append({"text": s, "ids": [int(i) for i in ids], "embedding": [float(x) for x in clipfx.l2n(e)]})
    t = np.stack(temb)
    off = (t @ t.T)[~np.eye(len(temb), dtype=bool)]
    print(f"text max off-diagonal cosine {off.max():.4f}; image max {max(dsims):.4f}")

    if args.reference:
        args.reference.mkdir(parents=True, exist_ok=True)
        ref = {
            "model": k["name"],
            "notes": [
                "Images: tests/fixtures/clip/images decoded as make_clip_fixture.load_rgb does, then transformers "
                f"SiglipImageProcessor (PIL backend): resize to {k['image_size']}x{k['image_size']} with PIL resample "
                f"{k['resample']}, no crop, x/255, (x - 0.5)/0.5. Embedding: ONNX {img_name}, L2-normalized.",
                "Texts: ids from transformers' " + ("SiglipTokenizer" if args.kind == "siglip" else "Siglip2Tokenizer")
                + f" with padding='max_length', truncation, max_length={TEXT_LEN}; embedding: ONNX {txt_name} on "
                "those ids (input_ids only), L2-normalized.",
            ],
            "text_len": TEXT_LEN,
            "images": images,
            "texts": texts,
        }
        (args.reference / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n",
                                                       encoding="utf-8")
    for f in sorted(out.iterdir()):
        print(f"  {f}: {f.stat().st_size:,} bytes  sha256={hashlib.sha256(f.read_bytes()).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
