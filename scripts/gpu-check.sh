#!/usr/bin/env bash
# One prepared check of Vitrine on a machine with an NVIDIA GPU. Prints ONE JSON object on stdout:
#   parity        GPU vs CPU image embeddings, fp32 on both (min cosine; target >= 0.999), and the
#                 GPU's auto variant (fp16 where the model folder has it) vs CPU fp32
#   gpu           `vitrine model bench` on the GPU, variant auto, batch --batch: model-only and
#                 end-to-end (JPEG files) images/s, text and photo query latency
#   gpu_fp32      the same with --variant fp32 (what the variant is worth)
#   cpu_reference the same on the CPU, small (--cpu-n images), for scale
#   targets       the issue's: model-only >= 15000 img/s at batch 256, e2e >= 3000 img/s, text p50 <= 3 ms
#
#   scripts/gpu-check.sh [--device cuda|cpu] [--model DIR] [--images DIR] [--n N] [--batch B]
#                        [--bin PATH] [--ort-lib PATH] [--cpu-ort-lib PATH] [--cpu-n N]
#
# --device cpu is the dry run: every step runs, on the CPU, so the script is tested where no GPU is
# (scripts/test.sh runs it on the tiny model). Defaults: the full-size random ViT-B/32
# (models/clip-vit-b32-random; made with scripts/make_clip_fixture.py --size base when missing and
# python3 has torch and transformers), target/bench-data/photos (made by scripts/make_bench_data.py),
# target/release/vitrine. The GPU build of ONNX Runtime comes from --ort-lib or ORT_DYLIB_PATH (see
# docs/MODELS.md: VITRINE_ORT_GPU=1 scripts/setup.sh, or ../shared/gpu/pack-onnxruntime-gpu.sh);
# the CPU runs use --cpu-ort-lib, else the same library (a GPU build runs the CPU as well).
# The CUDA 13 and cuDNN 9 libraries must be on LD_LIBRARY_PATH (pip's nvidia/*/lib folders are
# added when python3 has them). Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda model=models/clip-vit-b32-random images=target/bench-data/photos n=2048 batch=256
bin=target/release/vitrine ort_lib=${ORT_DYLIB_PATH:-} cpu_ort_lib="" cpu_n=64
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --ort-lib) ort_lib=$2; shift 2 ;;
    --cpu-ort-lib) cpu_ort_lib=$2; shift 2 ;;
    --cpu-n) cpu_n=$2; shift 2 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$device" in cuda | cpu) ;; *) echo "gpu-check: --device is cuda or cpu" >&2; exit 2 ;; esac
say() { echo "gpu-check: $*" >&2; }

[ -x "$bin" ] || { echo "gpu-check: $bin not found: cargo build --release --bin vitrine, or pass --bin" >&2; exit 1; }
if [ ! -f "$model/vision_model.onnx" ]; then
  [ "$model" = models/clip-vit-b32-random ] || { echo "gpu-check: $model has no vision_model.onnx" >&2; exit 1; }
  say "making $model (scripts/make_clip_fixture.py --size base)"
  python3 scripts/make_clip_fixture.py --size base --out "$model" >&2
fi
ls "$images" 2>/dev/null | grep -qiE '\.(jpe?g|png|webp)$' || { echo "gpu-check: no images in $images (scripts/make_bench_data.py)" >&2; exit 1; }

# CUDA 13 / cuDNN libraries from pip wheels, where python3 has them.
if [ "$device" = cuda ]; then
  nv=$(python3 -c 'import nvidia, os; print(":".join(sorted(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "lib")))))' 2>/dev/null || true)
  [ -n "$nv" ] && export LD_LIBRARY_PATH="$nv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
fi
# The GPU build runs the CPU too, so the CPU side uses the same library unless told otherwise.
dev_lib=()
[ -n "$ort_lib" ] && dev_lib=(--ort-lib "$ort_lib")
cpu_lib=("${dev_lib[@]}")
[ -n "$cpu_ort_lib" ] && cpu_lib=(--ort-lib "$cpu_ort_lib")

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Parity images: the first 32 of the folder.
mapfile -t parity < <(ls "$images" | grep -iE '\.(jpe?g|png|webp)$' | sort | head -n 32 | sed "s|^|$images/|")
run() { # out-file, then vitrine arguments
  local out=$1; shift
  say "vitrine $*"
  if ! "$bin" "$@" >"$out" 2>"$out.err"; then
    echo "gpu-check: vitrine $* failed:" >&2; cat "$out.err" >&2; return 1
  fi
}
run "$tmp/parity_cpu.jsonl" embed image "${parity[@]}" --model "$model" --device cpu --variant fp32 --batch 16 "${cpu_lib[@]}"
run "$tmp/parity_dev.jsonl" embed image "${parity[@]}" --model "$model" --device "$device" --variant fp32 --batch 16 "${dev_lib[@]}"
run "$tmp/parity_dev_auto.jsonl" embed image "${parity[@]}" --model "$model" --device "$device" --variant auto --batch 16 "${dev_lib[@]}"
bench=(model bench --model "$model" --images "$images")
run "$tmp/gpu.json" "${bench[@]}" --device "$device" --variant auto --n "$n" --batch "$batch" --rounds 3 --queries 100 "${dev_lib[@]}"
run "$tmp/gpu_fp32.json" "${bench[@]}" --device "$device" --variant fp32 --n "$n" --batch "$batch" --rounds 2 --queries 100 "${dev_lib[@]}"
run "$tmp/cpu.json" "${bench[@]}" --device cpu --variant auto --n "$cpu_n" --batch 32 --rounds 1 --queries 20 "${cpu_lib[@]}"

python3 - "$tmp" "$device" "$n" "$batch" <<'EOF'
import json, math, sys, platform, os
tmp, device, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def lines(name):
    return {r["input"]: r["embedding"] for r in map(json.loads, open(f"{tmp}/{name}")) if r}
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
cpu, dev, auto = lines("parity_cpu.jsonl"), lines("parity_dev.jsonl"), lines("parity_dev_auto.jsonl")
assert cpu and cpu.keys() == dev.keys() == auto.keys(), "parity runs embedded different images"
fp32 = [cos(cpu[k], dev[k]) for k in cpu]
var = [cos(cpu[k], auto[k]) for k in cpu]
load = lambda name: json.load(open(f"{tmp}/{name}"))
gpu, gpu32, cpu_ref = load("gpu.json"), load("gpu_fp32.json"), load("cpu.json")
targets = {"parity_min_cosine": 0.999, "model_only_images_per_s": 15000, "e2e_images_per_s": 3000, "text_p50_ms": 3.0}
met = {
    "parity": min(fp32) >= targets["parity_min_cosine"],
    "model_only": gpu["model_only_images_per_s"] >= targets["model_only_images_per_s"],
    "e2e": gpu["e2e_images_per_s"] >= targets["e2e_images_per_s"],
    "text_p50": gpu["text_query"]["p50_ms"] <= targets["text_p50_ms"],
}
out = {
    "check": "gpu-check",
    "dry_run": device == "cpu",
    "device_requested": device,
    "device": gpu["device"],
    "machine": {"host": platform.node(), "cpus": os.cpu_count(), "gpu": os.environ.get("GPU_NAME")},
    "parity": {
        "images": len(fp32),
        "fp32_min_cosine": min(fp32),
        "fp32_mean_cosine": sum(fp32) / len(fp32),
        "auto_variant": gpu["variant"],
        "auto_variant_min_cosine_vs_cpu_fp32": min(var),
    },
    "gpu": gpu,
    "gpu_fp32": gpu32,
    "cpu_reference": cpu_ref,
    "targets": targets,
    "met": met,
}
print(json.dumps(out))
EOF
