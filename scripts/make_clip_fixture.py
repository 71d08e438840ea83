#!/usr/bin/env python3
"""Build a random-weight CLIP (real Hugging Face architecture) and export it the way Vitrine loads models.

    python scripts/make_clip_fixture.py --size tiny --out models/tiny-clip --reference tests/fixtures/clip
    python scripts/make_clip_fixture.py --size base --out models/clip-vit-b32-random

No pretrained weights are needed (none can be downloaded here): the weights are random but seeded, so the
output is reproducible with the pinned versions in scripts/requirements-fixtures.txt.

Files written to --out:
  vision_model.onnx        pixel_values f32 [N,3,224,224]                    -> image_embeds f32 [N,D]
  text_model.onnx          input_ids i64 [N,L], attention_mask i64 [N,L]      -> text_embeds  f32 [N,D]
                           (both embeddings are projected but NOT L2-normalized, like HF get_*_features)
  tokenizer.json           HF `tokenizers` file built from the real CLIP BPE vocabulary (open_clip's
                           bpe_simple_vocab_16e6.txt.gz). Adds BOS 49406 / EOS 49407, truncates to 77
                           (75 content tokens + BOS + EOS, like open_clip). "padding" is null: the caller pads
                           to 77 with the pad id 49407 and attention_mask 0 (that does not change the embedding,
                           because the text model pools at the FIRST 49407 and attention is causal).
  preprocessor_config.json CLIPImageProcessor settings (shortest edge 224, PIL bicubic, center crop 224,
                           rescale 1/255, OpenAI CLIP mean/std).
  config.json              the HF CLIPConfig.
  vitrine-model.json       {"name", "dim", "max_text_len"}.

Tokenizer normalizer: the standard HF CLIP normalizer is NFC + collapse whitespace + lowercase. open_clip (the
reference, and what CLIP was trained with) first runs ftfy.fix_text + html.unescape. To match open_clip ids on
more inputs, the normalizer here is prefixed with the table-driven parts of ftfy, generated from ftfy's own
tables: remove control characters, Latin ligatures (U+FB01 -> "fi"), halfwidth/fullwidth forms (U+FF21 -> "A",
U+3000 -> " "), and curly quotes -> ASCII ' and ". Differences that remain (see KNOWN_DIFFERENT below) are
checked and printed on every run.
The Split pre-tokenizer drops HF's `<|startoftext|>|<|endoftext|>` alternatives: they only matter when special
tokens are encoded as plain text (`encode_special_tokens = true`), and without them such text splits exactly
like open_clip does ("<|", "endoftext", "|>").

Tiny model storage: the 49408x32 token-embedding table would be 6.3 MB as float32, so in the tiny
text_model.onnx it is stored as int8 with one float scale (DequantizeLinear -> Gather). The torch model's
weights are set to exactly those dequantized values, so ONNX and torch agree. The base model is plain float32.

Reference outputs (--reference DIR, tiny only): DIR/images/* are (re)generated from skimage.data and
DIR/reference.json gets the expected preprocessing statistics and L2-normalized embeddings. How each image is
turned into RGB before CLIPImageProcessor (PIL backend) is recorded in reference.json "notes":
  * EXIF orientation applied (PIL ImageOps.exif_transpose).
  * Any alpha (RGBA, LA, P with transparency) is composited onto WHITE:
      out = round(255 - (255 - c) * a / 255)   (float math, round half to even; c, a in 0..255)
  * 16-bit grayscale (I;16): v8 = round(v16 / 257) (same as image-rs's u16 -> u8), then gray -> RGB.
  * CMYK JPEG: PIL's decoder + convert("RGB") (r = 255 - min(255, c + k) on the un-inverted values).
  * Grayscale (L) and palette (P) images: PIL convert("RGB").
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
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

BOS_ID = 49406
EOS_ID = 49407
PAD_ID = 49407
VOCAB_SIZE = 49408
MAX_TEXT_LEN = 77
OPSET = 17
SEED = 20240611
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TOKEN_EMB_INT8_SCALE = 1.0 / 40.0  # token embeddings ~N(0,1), stored as int8 in [-127, 127]

SIZES = {
    "tiny": dict(
        name="tiny-clip-random",
        vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    patch_size=32, image_size=224),
        text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=MAX_TEXT_LEN, vocab_size=VOCAB_SIZE),
        projection_dim=64,
        int8_token_embedding=True,
    ),
    "base": dict(
        name="clip-vit-b32-random",
        vision=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    patch_size=32, image_size=224),
        text=dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048,
                  max_position_embeddings=MAX_TEXT_LEN, vocab_size=VOCAB_SIZE),
        projection_dim=512,
        int8_token_embedding=False,
    ),
}

# Strings whose ids must be identical between tokenizer.json and open_clip's SimpleTokenizer.
TOKENIZER_CHECK_TEXTS = [
    "red leather handbag",
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "Red Leather Handbag, Size M!",
    "",
    "café crème",
    "Crème brûlée mug ☕",
    "nai\u0308ve facade re\u0301sume\u0301 (decomposed accents)",
    "Straße Übergröße ÄÖÜ İstanbul",
    "women's running shoes",
    "don't stop, I'll go; we've seen it, they're here, I'm done, she'd say",
    "The 3 little pigs: 1,234.56 USD",
    "iPhone 15 Pro Max 256GB",
    "emoji 😀🎉👍🏽 party 🇫🇷",
    "  multiple   spaces\tand\nnewlines\r\n  ",
    "hyphen-ated words @home #tag 50% off!!!",
    "C++ / C# developer (100%)",
    "...!!!???",
    "1234567890",
    "a",
    "日本語のテキスト",
    "中文 商品 搜索",
    "Привет мир",
    "مرحبا بالعالم",
    "Ελληνικά γράμματα",
    "https://example.com/p/sku-001?x=1&y=2",
    "e-mail: someone@example.com",
    "vintage 1970's poster",
    "women’s “smart” quotes ‘here’",
    "ﬁne ﬂoral ligatures",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ ｶﾀｶﾅ",
    "zero\u200bwidth and non\u00a0breaking space",
    "control\x00chars\x07here",
    ("A very long product description that goes on and on, describing the handbag's genuine Italian leather, "
     "its brass hardware, adjustable shoulder strap, three interior pockets, magnetic snap closure, "
     "and the fact that it comes in red, blue, green, black, white and tan, all for a very reasonable price "
     "of 199.99 dollars including free shipping worldwide, a two-year warranty, gift wrapping on request "
     "and a matching wallet sold separately."),
]
# Known, documented differences (ftfy / html / Python-only behaviour that a tokenizers normalizer can't express).
KNOWN_DIFFERENT = [
    ("html entities (open_clip runs html.unescape twice)", "Tom &amp; Jerry"),
    ("mojibake repair by ftfy.fix_encoding", "cafÃ© crÃ¨me"),
    ("final sigma: Python str.lower() gives ς, Rust lowercase gives σ", "ΟΔΟΣ"),
    ("open_clip maps the literal text <end_of_text> to its EOT id", "a <end_of_text> b"),
    ("HF extracts special tokens from text unless encode_special_tokens=true (then it matches)",
     "literal <|endoftext|> in text"),
]


# --------------------------------------------------------------------------------------------- tokenizer
def open_clip_bpe_path() -> Path:
    import open_clip.tokenizer as oct
    return Path(oct.default_bpe())


def build_vocab_and_merges(bpe_path: Path):
    """Exactly what open_clip.tokenizer.SimpleTokenizer.__init__ does (special tokens named as in HF)."""
    from open_clip.tokenizer import bytes_to_unicode
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = merges[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    return {tok: i for i, tok in enumerate(vocab)}, merges


def ftfy_parity_normalizers():
    """tokenizers normalizers reproducing ftfy's table-driven fixes (controls, ligatures, width, quotes)."""
    from tokenizers import Regex, normalizers
    from ftfy import chardata

    def char_class(codepoints):
        return "[" + "".join("\\x{%X}" % c for c in sorted(codepoints)) + "]"

    steps = [normalizers.Replace(Regex(char_class(chardata.CONTROL_CHARS.keys())), "")]
    for table in (chardata.LIGATURES, chardata.WIDTH_MAP):
        for cp, repl in sorted(table.items()):
            steps.append(normalizers.Replace(chr(cp), repl))
    steps.append(normalizers.Replace(Regex(chardata.SINGLE_QUOTE_RE.pattern), "'"))
    steps.append(normalizers.Replace(Regex(chardata.DOUBLE_QUOTE_RE.pattern), '"'))
    return steps


def build_tokenizer(out_dir: Path):
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import CLIPTokenizerFast

    vocab, merges = build_vocab_and_merges(open_clip_bpe_path())
    with tempfile.TemporaryDirectory() as td:
        vocab_file = Path(td) / "vocab.json"
        merges_file = Path(td) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
        import transformers
        if int(transformers.__version__.split(".")[0]) < 5:
            hf = CLIPTokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file))
        else:  # transformers 5: CLIPTokenizerFast is an alias of CLIPTokenizer(vocab=, merges=)
            hf = CLIPTokenizerFast(vocab=vocab, merges=[tuple(m) for m in merges])
    tok = hf.backend_tokenizer
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    tok.normalizer = normalizers.Sequence(
        ftfy_parity_normalizers()
        + [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.no_padding()
    tok.enable_truncation(MAX_TEXT_LEN)
    path = out_dir / "tokenizer.json"
    tok.save(str(path), pretty=False)
    # sanity: the saved file is what Vitrine reads
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["padding"] is None and data["truncation"]["max_length"] == MAX_TEXT_LEN
    return path


def open_clip_ids(sot, text: str):
    """open_clip.tokenize() ids without the zero padding (BOS + tokens + EOS, truncated to 77)."""
    ids = [sot.sot_token_id] + sot.encode(text) + [sot.eot_token_id]
    if len(ids) > MAX_TEXT_LEN:
        ids = ids[:MAX_TEXT_LEN]
        ids[-1] = sot.eot_token_id
    # cross-check against open_clip's own batch tokenize()
    t = sot([text], context_length=MAX_TEXT_LEN)[0].tolist()
    assert t[:len(ids)] == ids and all(x == 0 for x in t[len(ids):]), (text, t, ids)
    return ids


def check_tokenizer(path: Path):
    from tokenizers import Tokenizer
    from open_clip.tokenizer import SimpleTokenizer

    tok = Tokenizer.from_file(str(path))
    sot = SimpleTokenizer()
    assert sot.sot_token_id == BOS_ID and sot.eot_token_id == EOS_ID
    results = {"checked": 0, "equal": 0, "mismatches": [], "known_different": []}
    for text in TOKENIZER_CHECK_TEXTS:
        hf_ids = tok.encode(text).ids
        ref = open_clip_ids(sot, text)
        results["checked"] += 1
        if hf_ids == ref:
            results["equal"] += 1
        else:
            results["mismatches"].append({"text": text, "hf": hf_ids, "open_clip": ref})
        assert hf_ids[0] == BOS_ID and hf_ids[-1] == EOS_ID and len(hf_ids) <= MAX_TEXT_LEN
    # special tokens encoded as plain text (the setting Vitrine should use for user text)
    tok.encode_special_tokens = True
    for text in ["literal <|endoftext|> in text", "<|startoftext|>x"]:
        hf_ids = tok.encode(text).ids
        ref = open_clip_ids(sot, text)
        results["checked"] += 1
        if hf_ids == ref:
            results["equal"] += 1
        else:
            results["mismatches"].append({"text": text + " [encode_special_tokens]", "hf": hf_ids, "open_clip": ref})
    tok.encode_special_tokens = False
    for why, text in KNOWN_DIFFERENT:
        hf_ids = tok.encode(text).ids
        ref = open_clip_ids(sot, text)
        results["known_different"].append({"why": why, "text": text, "same": hf_ids == ref})
    return results


# --------------------------------------------------------------------------------------------- model
def make_config(size: str):
    from transformers import CLIPConfig
    s = SIZES[size]
    text = dict(s["text"], eos_token_id=EOS_ID, bos_token_id=BOS_ID, pad_token_id=PAD_ID,
                hidden_act="quick_gelu", projection_dim=s["projection_dim"])
    vision = dict(s["vision"], hidden_act="quick_gelu", projection_dim=s["projection_dim"], num_channels=3)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=s["projection_dim"],
                     logit_scale_init_value=2.6592)
    return cfg


def init_weights(model, size: str):
    """Deterministic init, independent of HF's _init_weights, scaled so embeddings are not degenerate.

    Linear/conv weights ~ N(0, 1/fan_in) (attention out_proj and MLP fc2: N(0, 9/fan_in)), biases ~ N(0, 0.02^2), layer norms weight 1 + N(0, 0.1^2),
    bias N(0, 0.05^2); class embedding N(0,1), position embeddings N(0, 0.5^2); token embeddings N(0,1)
    (int8-representable for tiny). Parameters are filled in sorted name order from one seeded generator.
    """
    import torch
    g = torch.Generator().manual_seed(SEED)
    s = SIZES[size]
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name == "logit_scale":
                p.fill_(math.log(1 / 0.07))
                continue
            if "token_embedding" in name:
                v = torch.randn(p.shape, generator=g)
                if s["int8_token_embedding"]:
                    q = torch.clamp(torch.round(v / TOKEN_EMB_INT8_SCALE), -127, 127)
                    v = q * torch.tensor(TOKEN_EMB_INT8_SCALE, dtype=torch.float32)
                p.copy_(v)
            elif "position_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "class_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight"):
                fan_in = int(np.prod(p.shape[1:]))
                # residual-branch outputs 3x larger: image-specific signal dominates the shared CLS token
                gain = 3.0 if name.endswith(("out_proj.weight", "fc2.weight")) else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * (gain / math.sqrt(fan_in)))
            else:
                raise RuntimeError(f"unhandled parameter {name}")


def build_model(size: str):
    import torch
    from transformers import CLIPModel
    torch.manual_seed(SEED)
    cfg = make_config(size)
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    model = CLIPModel(cfg).eval()
    init_weights(model, size)
    return model, cfg


def make_wrappers(model):
    import torch

    class Vision(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.vision_model = m.vision_model
            self.visual_projection = m.visual_projection

        def forward(self, pixel_values):
            out = self.vision_model(pixel_values=pixel_values)
            return self.visual_projection(out.pooler_output)

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.text_model = m.text_model
            self.text_projection = m.text_projection

        def forward(self, input_ids, attention_mask):
            out = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return self.text_projection(out.pooler_output)

    return Vision(model).eval(), Text(model).eval()


def export_onnx(vision, text, out_dir: Path, int8_token_embedding, image_size: int = 224,
                producer: str = "vitrine make_clip_fixture.py"):
    """int8_token_embedding: False, True (one fixed scale, exact; see init_weights) or "per_row" (trained weights)."""
    import torch
    import onnx

    px = torch.randn(2, 3, image_size, image_size)
    ids = torch.tensor([[BOS_ID, 320, 1125, 539, 320, 2368, EOS_ID, PAD_ID],
                        [BOS_ID, 736, 3051, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]], dtype=torch.long)
    mask = (torch.arange(ids.shape[1])[None, :] <= (ids == EOS_ID).int().argmax(-1)[:, None]).long()
    vpath, tpath = out_dir / "vision_model.onnx", out_dir / "text_model.onnx"
    with torch.no_grad():
        torch.onnx.export(vision, (px,), str(vpath), input_names=["pixel_values"], output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
        torch.onnx.export(text, (ids, mask), str(tpath), input_names=["input_ids", "attention_mask"],
                          output_names=["text_embeds"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"},
                                        "text_embeds": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    for p in (vpath, tpath):
        m = onnx.load(str(p))  # loads external data too, if the exporter wrote any
        if p == tpath and int8_token_embedding:
            quantize_token_embedding(m, per_row=int8_token_embedding == "per_row")
        m.producer_name = producer
        size = m.ByteSize()
        for f in out_dir.glob(p.name + "*.data"):
            f.unlink()
        if size < 1_900_000_000:
            onnx.save_model(m, str(p))
        else:  # > 2 GB protobuf limit: external data file next to the model
            onnx.save_model(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=p.name + ".data")
        onnx.checker.check_model(str(p))
    return vpath, tpath


def int8_per_row(w):
    """Symmetric per-row int8 of a [V, H] table: (q int8 [V, H], scale f32 [V]); q * scale[:, None] dequantizes."""
    w = np.asarray(w, np.float32)
    scale = (np.abs(w).max(axis=1) / 127.0).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def quantize_token_embedding(m, per_row: bool = False):
    """Replace the [49408, H] float initializer by int8 + scale -> DequantizeLinear.

    per_row=False: one fixed scale, and the weights must already be exactly representable (see init_weights).
    per_row=True: one scale per token (DequantizeLinear axis 0); the caller sets the torch weights to
    the dequantized values first (`int8_per_row`), so the check below holds and ONNX == torch.
    """
    from onnx import helper, numpy_helper, TensorProto
    g = m.graph
    cands = [t for t in g.initializer if len(t.dims) == 2 and t.dims[0] == VOCAB_SIZE]
    assert len(cands) == 1, [t.name for t in cands]
    init = cands[0]
    w = numpy_helper.to_array(init).astype(np.float32)
    if per_row:
        q, scale = int8_per_row(w)
        assert np.array_equal(q.astype(np.float32) * scale[:, None], w), "not int8-exact: dequantize the weights first"
        zero = np.zeros(scale.shape, np.int8)
    else:
        q = np.round(w / np.float32(TOKEN_EMB_INT8_SCALE))
        assert np.abs(q).max() <= 127
        q = q.astype(np.int8)
        assert np.array_equal(q.astype(np.float32) * np.float32(TOKEN_EMB_INT8_SCALE), w), "not int8-exact"
        scale, zero = np.array(TOKEN_EMB_INT8_SCALE, dtype=np.float32), np.array(0, dtype=np.int8)
    name = init.name
    g.initializer.remove(init)
    g.initializer.extend([
        numpy_helper.from_array(q, name + "_int8"),
        numpy_helper.from_array(scale, name + "_scale"),
        numpy_helper.from_array(zero, name + "_zero_point"),
    ])
    kw = {"axis": 0} if per_row else {}
    node = helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale", name + "_zero_point"], [name],
                            name="token_embedding_dequantize", **kw)
    g.node.insert(0, node)


def ort_session(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def cos(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def l2n(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def verify_export(vision, text, vpath, tpath, tokenizer_path, image_size: int = 224, distinct: bool = True):
    """ONNX == torch for several batch sizes / lengths; padding invariance; non-degenerate embeddings.

    distinct=False skips the real-photo and real-text distinctness checks, for a model trained on a world without them
    (scripts/toyworld checks distinctness on its own renders instead)."""
    import torch
    from tokenizers import Tokenizer
    vs, ts = ort_session(vpath), ort_session(tpath)
    rng = np.random.default_rng(0)
    report = {}
    for n in (1, 3):
        px = rng.standard_normal((n, 3, image_size, image_size)).astype(np.float32)
        o = vs.run(["image_embeds"], {"pixel_values": px})[0]
        with torch.no_grad():
            t = vision(torch.from_numpy(px)).numpy()
        assert o.shape == t.shape, (o.shape, t.shape)
        worst = min(cos(o[i], t[i]) for i in range(n))
        assert worst > 0.9999, worst
        report[f"vision_n{n}_min_cos_ort_torch"] = worst
    # real photos must give clearly different embeddings (random inits can collapse onto the CLS token)
    from PIL import Image
    from skimage import data
    proc = image_processor(vpath.parent)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), np.stack([data.camera()] * 3, -1)]
    px = np.asarray(proc(images=[Image.fromarray(a) for a in photos], return_tensors="np")["pixel_values"],
                    dtype=np.float32)
    e = l2n(vs.run(["image_embeds"], {"pixel_values": px})[0])
    off = (e @ e.T)[~np.eye(len(photos), dtype=bool)]
    assert off.max() < 0.95 or not distinct, e @ e.T
    report["vision_photos_max_offdiag_cos"] = float(off.max())
    tok = Tokenizer.from_file(str(tokenizer_path))
    texts = ["a photo of a cat", "red leather handbag", "x", TOKENIZER_CHECK_TEXTS[-1]]
    worst, worst_pad = 1.0, 1.0
    embs = []
    for s in texts:
        ids = np.array([tok.encode(s).ids], dtype=np.int64)
        mask = np.ones_like(ids)
        o = ts.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0]
        with torch.no_grad():
            t = text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        worst = min(worst, cos(o, t))
        pad = np.full((1, MAX_TEXT_LEN), PAD_ID, dtype=np.int64)
        pad[0, :ids.shape[1]] = ids[0]
        pmask = np.zeros_like(pad)
        pmask[0, :ids.shape[1]] = 1
        op = ts.run(["text_embeds"], {"input_ids": pad, "attention_mask": pmask})[0]
        worst_pad = min(worst_pad, cos(o, op))
        embs.append(o[0])
    # batched, padded to the longest: must equal the single results
    enc = [tok.encode(s).ids for s in texts]
    L = max(map(len, enc))
    ids = np.full((len(enc), L), PAD_ID, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, :len(e)] = e
        mask[i, :len(e)] = 1
    ob = ts.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0]
    worst_batch = min(cos(ob[i], embs[i]) for i in range(len(texts)))
    assert worst > 0.9999, worst
    assert worst_pad > 0.99999, worst_pad
    assert worst_batch > 0.99999, worst_batch
    e = l2n(np.stack(embs))
    sims = e @ e.T
    off = sims[~np.eye(len(texts), dtype=bool)]
    assert off.max() < 0.99 or not distinct, sims
    report.update(text_min_cos_ort_torch=worst, text_min_cos_pad77=worst_pad, text_min_cos_batched=worst_batch,
                  text_max_offdiag_cos=float(off.max()))
    return report


# --------------------------------------------------------------------------------------------- images
def fit_max_side(img, max_side=400):
    from PIL import Image
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)


def make_test_images(img_dir: Path):
    """Real photos from skimage.data, in the formats Vitrine has to decode. Deterministic."""
    from PIL import Image
    from skimage import data
    img_dir.mkdir(parents=True, exist_ok=True)
    jpg = dict(quality=90, subsampling=0, optimize=True)  # 4:4:4 so decoders agree closely on chroma
    astronaut = Image.fromarray(data.astronaut())
    coffee = fit_max_side(Image.fromarray(data.coffee()))
    chelsea = fit_max_side(Image.fromarray(data.chelsea()))
    camera8 = data.camera()
    made = []

    def save(img, name, **kw):
        img.save(img_dir / name, **kw)
        made.append(name)

    save(fit_max_side(astronaut), "astronaut.jpg", **jpg)
    save(coffee, "coffee.jpg", **jpg)
    save(chelsea, "chelsea.jpg", **jpg)
    save(fit_max_side(Image.fromarray(camera8)), "camera.png", optimize=True)
    # tall narrow crop (90 x 400) from the full-resolution astronaut
    save(astronaut.crop((200, 40, 290, 440)), "tall_narrow.jpg", **jpg)
    # stored rotated 90 degrees counter-clockwise + EXIF Orientation=6 ("rotate 90 CW to display")
    exif = Image.Exif()
    exif[0x0112] = 6
    save(chelsea.transpose(Image.Transpose.ROTATE_90), "rotated_exif.jpg", exif=exif.tobytes(), **jpg)
    save(coffee.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE), "palette.png",
         optimize=True)
    # RGBA: rocket with a horizontal alpha gradient (255 on the left -> 32 on the right)
    rocket = fit_max_side(Image.fromarray(data.rocket()), 320)
    w, h = rocket.size
    alpha = np.tile(np.linspace(255, 32, w).round().astype(np.uint8), (h, 1))
    rgba = np.dstack([np.asarray(rocket), alpha])
    save(Image.fromarray(rgba, "RGBA"), "rgba.png", optimize=True)
    # 16-bit grayscale (256x256): camera smoothly resized in float, full 16-bit precision (low byte is not just a copy)
    from skimage.transform import resize as sk_resize
    cam_f = sk_resize(camera8.astype(np.float64) / 255.0, (256, 256), order=3, anti_aliasing=True)
    cam16 = np.clip(np.round(cam_f * 65535.0), 0, 65535).astype(np.uint16)
    Image.fromarray(cam16).save(img_dir / "gray16.png")  # PIL writes mode I;16 as a 16-bit grayscale PNG
    made.append("gray16.png")
    save(coffee.convert("CMYK"), "cmyk.jpg", **jpg)
    # sanity checks on what was written
    with Image.open(img_dir / "gray16.png") as im:
        assert im.mode in ("I;16", "I;16B", "I"), im.mode
        assert np.asarray(im).dtype.itemsize == 2 or np.asarray(im).max() > 255
    with Image.open(img_dir / "palette.png") as im:
        assert im.mode == "P", im.mode
    with Image.open(img_dir / "cmyk.jpg") as im:
        assert im.mode == "CMYK", im.mode
    with Image.open(img_dir / "rotated_exif.jpg") as im:
        from PIL import ImageOps
        assert im.getexif().get(0x0112) == 6 and im.size == (chelsea.size[1], chelsea.size[0])
        up = ImageOps.exif_transpose(im)
        assert up.size == chelsea.size
        d = np.abs(np.asarray(up, np.int16) - np.asarray(chelsea, np.int16)).mean()
        assert d < 3.0, d
    for name in made:
        assert (img_dir / name).stat().st_size < 160_000, (name, (img_dir / name).stat().st_size)
    return sorted(made)


def load_rgb(path: Path):
    """Vitrine's documented decode -> RGB policy (see module docstring)."""
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im).astype(np.float64)
            return Image.fromarray(np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
        has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)
        if has_alpha:
            rgba = np.asarray(im.convert("RGBA")).astype(np.float64)
            a = rgba[..., 3:4] / 255.0
            rgb = np.round(255.0 - (255.0 - rgba[..., :3]) * a)
            return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
        return im.convert("RGB")


def write_preprocessor_config(out_dir: Path, image_size: int = 224):
    cfg = {
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
        "image_processor_type": "CLIPImageProcessor",
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def image_processor(out_dir: Path):
    """The PIL-backend CLIP processor (transformers 5 calls it CLIPImageProcessorPil; older: CLIPImageProcessor)."""
    cfg = json.loads((out_dir / "preprocessor_config.json").read_text())
    cfg.pop("image_processor_type")
    try:
        from transformers import CLIPImageProcessorPil as Proc
    except ImportError:
        from transformers import CLIPImageProcessor as Proc
    return Proc(**cfg)


def write_reference(ref_dir: Path, out_dir: Path, vision, text, tokenizer_path: Path):
    import torch
    from tokenizers import Tokenizer
    img_dir = ref_dir / "images"
    files = make_test_images(img_dir)
    proc = image_processor(out_dir)
    vs, ts = ort_session(out_dir / "vision_model.onnx"), ort_session(out_dir / "text_model.onnx")
    images = []
    embs = {}
    sens = []
    for f in files:
        rgb = load_rgb(img_dir / f)
        px = np.asarray(proc(images=[rgb], return_tensors="np")["pixel_values"], dtype=np.float32)
        assert px.shape == (1, 3, 224, 224), px.shape
        e = vs.run(["image_embeds"], {"pixel_values": px})[0][0]
        with torch.no_grad():
            te = vision(torch.from_numpy(px)).numpy()[0]
        assert cos(e, te) > 0.9999, (f, cos(e, te))
        # stability: +-1 grey level of noise must barely move the embedding
        noise = np.random.default_rng(1).integers(-1, 2, px.shape).astype(np.float32) / 255.0
        noise /= np.array(OPENAI_CLIP_STD, np.float32)[None, :, None, None]
        e2 = vs.run(["image_embeds"], {"pixel_values": px + noise})[0][0]
        sens.append(cos(e, e2))
        embs[f] = l2n(e)
        images.append({
            "file": f,
            "embedding": [float(x) for x in l2n(e)],
            "pixel_stats": {"mean": [float(px[0, c].mean()) for c in range(3)],
                            "std": [float(px[0, c].std()) for c in range(3)]},
            "pixel_corner": [float(x) for x in px[0, 0, 0, :16]],
        })
    tok = Tokenizer.from_file(str(tokenizer_path))
    assert len(tok.encode(TOKENIZER_CHECK_TEXTS[-1]).ids) == MAX_TEXT_LEN, "long text must be truncated"
    texts = []
    for s in TOKENIZER_CHECK_TEXTS:
        ids = tok.encode(s).ids
        a = np.array([ids], dtype=np.int64)
        e = ts.run(["text_embeds"], {"input_ids": a, "attention_mask": np.ones_like(a)})[0][0]
        pad = np.full((1, MAX_TEXT_LEN), PAD_ID, dtype=np.int64)
        pad[0, :len(ids)] = ids
        pm = (np.arange(MAX_TEXT_LEN) < len(ids)).astype(np.int64)[None]
        ep = ts.run(["text_embeds"], {"input_ids": pad, "attention_mask": pm})[0][0]
        assert cos(e, ep) > 0.99999, (s, cos(e, ep))
        with torch.no_grad():
            te = text(torch.from_numpy(a), torch.ones_like(torch.from_numpy(a))).numpy()[0]
        assert cos(e, te) > 0.9999, (s, cos(e, te))
        texts.append({"text": s, "ids": ids, "embedding": [float(x) for x in l2n(e)]})

    # non-degeneracy: distinct photos must be clearly different; same photo in another container must be close
    distinct = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "camera.png"]
    dsims = [float(embs[a] @ embs[b]) for i, a in enumerate(distinct) for b in distinct[i + 1:]]
    same_pairs = [("chelsea.jpg", "rotated_exif.jpg"), ("coffee.jpg", "cmyk.jpg"), ("coffee.jpg", "palette.png"),
                  ("camera.png", "gray16.png")]
    ssims = {f"{a}~{b}": float(embs[a] @ embs[b]) for a, b in same_pairs}
    assert max(dsims) < 0.9, dsims
    assert min(ssims.values()) > max(dsims), (ssims, dsims)
    assert min(sens) > 0.999, sens

    ref = {
        "model": "tiny-clip-random",
        "notes": [
            "Images: PIL decode, ImageOps.exif_transpose, then to RGB: alpha composited onto white as "
            "round(255 - (255 - c) * a / 255); 16-bit gray as round(v / 257); CMYK and palette via PIL convert('RGB').",
            "Then transformers CLIPImageProcessor (PIL backend): resize shortest edge to 224 with PIL BICUBIC on uint8 "
            "(long edge = int(224 * long / short)), center crop 224 (top = (h - 224) // 2, left = (w - 224) // 2), "
            "x / 255, (x - mean) / std. pixel_stats are over the 224x224 normalized tensor (std is population std).",
            "pixel_corner = pixel_values[0, 0, 0, :16] (channel R, row 0).",
            "Embeddings are L2-normalized ONNX outputs. Text embeddings: unpadded ids, attention_mask all ones, "
            "batch 1; padding to 77 with 49407 and mask 0 gives the same embedding.",
            "JPEGs are saved with 4:4:4 chroma (no subsampling) so different decoders agree to about +-1 level.",
        ],
        "images": images,
        "texts": texts,
    }
    (ref_dir / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"distinct_image_cos": dsims, "same_image_cos": ssims, "noise_min_cos": min(sens),
            "files": files}


# --------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reference", type=Path, help="write test images + reference.json here (tiny only)")
    args = ap.parse_args()
    if args.reference and args.size != "tiny":
        ap.error("--reference is only meaningful with --size tiny")

    import torch
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    s = SIZES[args.size]

    tok_path = build_tokenizer(out)
    tres = check_tokenizer(tok_path)
    print(f"tokenizer: {tres['equal']}/{tres['checked']} strings give identical ids to open_clip SimpleTokenizer")
    for m in tres["mismatches"]:
        print("  MISMATCH:", json.dumps(m, ensure_ascii=False))
    for k in tres["known_different"]:
        print(f"  known difference ({k['why']}): {k['text']!r} same={k['same']}")
    assert not tres["mismatches"], "tokenizer.json differs from open_clip on the check list"

    model, cfg = build_model(args.size)
    vision, text = make_wrappers(model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {s['name']}: {n_params:,} parameters, projection dim {cfg.projection_dim}")
    vpath, tpath = export_onnx(vision, text, out, s["int8_token_embedding"])
    write_preprocessor_config(out)
    rep = verify_export(vision, text, vpath, tpath, tok_path)
    print("export check:", json.dumps(rep))

    cfg_dict = cfg.to_dict()
    cfg_dict["architectures"] = ["CLIPModel"]
    for sub in ("text_config", "vision_config"):
        cfg_dict.get(sub, {}).pop("_attn_implementation_autoset", None)
    (out / "config.json").write_text(json.dumps(cfg_dict, indent=2, sort_keys=True, default=str) + "\n")
    (out / "vitrine-model.json").write_text(json.dumps(
        {"name": s["name"], "dim": cfg.projection_dim, "max_text_len": MAX_TEXT_LEN}, indent=2) + "\n")

    if args.reference:
        r = write_reference(args.reference, out, vision, text, tok_path)
        print("reference:", json.dumps(r))

    for f in sorted(out.iterdir()):
        print(f"  {f}: {f.stat().st_size:,} bytes  sha256={hashlib.sha256(f.read_bytes()).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
