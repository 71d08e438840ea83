#!/usr/bin/env python3
"""Make the int8 `quantized` variant (or, with --fp16, the `fp16` variant) of a local model directory.

Writes `vision_model_quantized.onnx` and `text_model_quantized.onnx` (the Hugging Face hub's names for
the variant) next to the fp32 files, or into --out, with onnxruntime's dynamic quantization: weights
int8 (QInt8), activations scaled per call. With --out, the directory's other files (tokenizer, configs,
vitrine-model.json) are copied too, so --out is a complete model directory; the fp32 ONNX files are
linked (or copied) there as well, since the model-directory contract needs them and the content hash of
the fp32 variant stays the same.

Dynamic quantization scales activations over the whole batch of one call: the same input embedded alone
or in a batch differs slightly (cosine ~0.999). Compare against references made with the same batching.

--fp16 writes `*_fp16.onnx` instead: every float tensor and the graph's inputs and outputs in float16
(onnxruntime.transformers.float16, with DequantizeLinear kept in float32, since its scales must be). It is
meant for a GPU; ONNX Runtime's CPU provider runs it too (Vitrine converts at the edges), which is how
the tests check that path on the tiny model.

Needs onnxruntime (and onnx, which it imports) from PyPI:
    python3 -m pip install onnxruntime onnx
Usage:
    scripts/quantize_model.py models/clip-vit-b32               # adds the variant in place
    scripts/quantize_model.py models/tiny-clip --out DIR        # a new directory holding both variants
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

TOWERS = ("vision_model", "text_model")


def quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer writes next to its output while it works (shape inference, a pre-processed copy):
    # build in a temporary folder beside the target and rename, so an interrupted run leaves no
    # half-written variant that a later `--variant auto` would pick.
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        out = Path(tmp) / dst.name
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
        os.replace(out, dst)


def to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=False,
                                     op_block_list=DEFAULT_OP_BLOCK_LIST + ["DequantizeLinear"])
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        out = Path(tmp) / dst.name
        onnx.save(model, str(out))
        os.replace(out, dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="model directory holding vision_model.onnx and text_model.onnx")
    ap.add_argument("--out", type=Path, help="write a complete model directory here instead of adding to SRC")
    ap.add_argument("--force", action="store_true", help="quantize again even when the variant is present")
    ap.add_argument("--fp16", action="store_true", help="make the fp16 variant instead of the int8 one")
    args = ap.parse_args()

    src: Path = args.src
    for t in TOWERS:
        if not (src / f"{t}.onnx").is_file():
            print(f"{src} has no {t}.onnx: pass a model directory (see docs/MODELS.md)", file=sys.stderr)
            return 1
    out: Path = args.out or src
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != src.resolve():
        for f in sorted(src.iterdir()):
            target = out / f.name
            if not f.is_file() or f.name.endswith(("_quantized.onnx", "_fp16.onnx")):
                continue
            if target.exists():
                target.unlink()
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
    variant, make = ("fp16", to_fp16) if args.fp16 else ("quantized", quantize)
    for t in TOWERS:
        dst = out / f"{t}_{variant}.onnx"
        if dst.is_file() and not args.force:
            print(f"{dst}: already present (--force to redo)", file=sys.stderr)
            continue
        make(src / f"{t}.onnx", dst)
        print(f"{dst}: {dst.stat().st_size} bytes (from {(src / f'{t}.onnx').stat().st_size})", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
