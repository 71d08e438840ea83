#!/usr/bin/env python3
"""The straightforward Python image-embedding pipeline, as a baseline for benches/embed_pipeline.rs.

transformers' CLIPImageProcessor + onnxruntime on the same model and the same JPEG files, batches of
--batch, intra-op threads = nproc. Measures model-only images/s (pre-processed tensors) and end-to-end
images/s (open JPEG -> RGB -> processor -> session.run -> L2-normalize), for each processor class asked for:
  auto  CLIPImageProcessor (in transformers 5 the torchvision backend when torchvision is installed)
  pil   CLIPImageProcessorPil (the PIL/numpy backend; plain CLIPImageProcessor on older transformers)
Prints ONE JSON object on stdout.

Usage: .venv-fixtures/bin/python scripts/bench_python_pipeline.py --model models/clip-vit-b32-random \
           --images target/bench-data/photos --n 256 [--batch 32] [--rounds 2] [--processors auto,pil]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "loadavg_1m": os.getloadavg()[0], "python": platform.python_version()}


def processor(kind: str, model_dir: Path):
    cfg = json.loads((model_dir / "preprocessor_config.json").read_text())
    cfg.pop("image_processor_type", None)
    if kind == "pil":
        try:
            from transformers import CLIPImageProcessorPil as Proc
        except ImportError:
            from transformers import CLIPImageProcessor as Proc
    else:
        from transformers import CLIPImageProcessor as Proc
    return Proc(**cfg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--processors", default="auto,pil")
    args = ap.parse_args()

    import onnxruntime as ort
    from PIL import Image
    import transformers

    model_dir = Path(args.model)
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.n]
    if len(files) < args.n:
        print(f"only {len(files)} images in {args.images}, need {args.n}", file=sys.stderr)
        return 2
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(model_dir / "vision_model.onnx"), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    out_name = "image_embeds" if "image_embeds" in out_names else out_names[0]

    def embed(px: np.ndarray) -> np.ndarray:
        y = sess.run([out_name], {"pixel_values": px})[0]
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def load(paths):
        return [Image.open(p).convert("RGB") for p in paths]

    batches = [files[i: i + args.batch] for i in range(0, len(files), args.batch)]
    procs = {k: processor(k, model_dir) for k in args.processors.split(",") if k}
    first = next(iter(procs.values()))
    tensors = [np.ascontiguousarray(first(images=load(b), return_tensors="np")["pixel_values"], dtype=np.float32)
               for b in batches]
    embed(tensors[0])  # warm-up

    model_only, e2e = [], {k: [] for k in procs}
    for _ in range(args.rounds):
        t = time.perf_counter()
        for px in tensors:
            embed(px)
        model_only.append(len(files) / (time.perf_counter() - t))
        for k, proc in procs.items():
            t = time.perf_counter()
            for b in batches:
                px = proc(images=load(b), return_tensors="np")["pixel_values"]
                embed(np.ascontiguousarray(px, dtype=np.float32))
            e2e[k].append(len(files) / (time.perf_counter() - t))

    e2e_out = {f"{k}:{type(p).__name__}": {"images_per_s_median": statistics.median(e2e[k]), "images_per_s_rounds": e2e[k]}
               for k, p in procs.items()}
    best = max(v["images_per_s_median"] for v in e2e_out.values())
    mo = statistics.median(model_only)
    print(json.dumps({
        "bench": "python_pipeline",
        "machine": machine(),
        "model": str(model_dir),
        "images": len(files),
        "batch": args.batch,
        "intra_op_threads": args.threads,
        "onnxruntime": ort.__version__,
        "transformers": transformers.__version__,
        "model_only_images_per_s": mo,
        "model_only_rounds": model_only,
        "e2e": e2e_out,
        "e2e_best_images_per_s": best,
        "e2e_over_model_only": best / mo,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
