"""What train.py, evaluate.py and make_catalog.py share: the model's input contract and seed ranges."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parents[1]
REPO = SCRIPTS.parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import make_clip_fixture as mcf  # noqa: E402  (the export, tokenizer and verification code)

# Seed ranges (product seed = view seed for the first view). Disjoint, so no evaluation or demo
# product is a training render. Query photos use view seeds VIEW_OFFSET + product seed.
TRAIN_SEEDS = (0, 10_000_000)
EVAL_SEEDS = (20_000_000, 21_000_000)
DEMO_SEED = 30_000_000
CATALOG_SEEDS_FROM = 40_000_000  # make_catalog.py's default --seed
VIEW_OFFSET = 500_000_000


def pixel_values(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, 64, 64, 3] renders -> the model's pixel_values [N, 3, 64, 64].

    Renders are already SIZE x SIZE, so CLIP preprocessing (shortest edge to SIZE, center crop SIZE)
    leaves the pixels unchanged and only rescales and normalizes; evaluate.py checks this equals the
    transformers CLIPImageProcessor output for the written preprocessor_config.json.
    """
    x = images_u8.astype(np.float32) / np.float32(255.0)
    x = (x - np.array(mcf.OPENAI_CLIP_MEAN, np.float32)) / np.array(mcf.OPENAI_CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def pad_ids(id_lists, length=None):
    """Token id lists -> (input_ids, attention_mask) int64, padded with the pad id like Vitrine does."""
    L = length or max(len(x) for x in id_lists)
    ids = np.full((len(id_lists), L), mcf.PAD_ID, dtype=np.int64)
    mask = np.zeros((len(id_lists), L), dtype=np.int64)
    for i, x in enumerate(id_lists):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = 1
    return ids, mask


class OnnxClip:
    """The exported model through onnxruntime: L2-normalized embeddings, as Vitrine computes them."""

    def __init__(self, model_dir: Path):
        from tokenizers import Tokenizer
        self.vs = mcf.ort_session(model_dir / "vision_model.onnx")
        self.ts = mcf.ort_session(model_dir / "text_model.onnx")
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.encode_special_tokens = True

    def images(self, images_u8: np.ndarray, batch: int = 256) -> np.ndarray:
        out = [self.vs.run(["image_embeds"], {"pixel_values": pixel_values(images_u8[i:i + batch])})[0]
               for i in range(0, len(images_u8), batch)]
        return mcf.l2n(np.concatenate(out)).astype(np.float32)

    def texts(self, texts, batch: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch):
            ids, mask = pad_ids([self.tok.encode(t).ids for t in texts[i:i + batch]], mcf.MAX_TEXT_LEN)
            out.append(self.ts.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0])
        return mcf.l2n(np.concatenate(out)).astype(np.float32)
