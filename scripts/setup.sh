#!/usr/bin/env bash
# One-command set-up for Vitrine on a fresh machine.
#   - installs ONNX Runtime's shared library from the PyPI wheel into .ort/ (no build-time downloads:
#     ort is built with `load-dynamic`, and `vitrine` finds .ort/ by itself)
#   - installs the build tools libjpeg-turbo needs (cmake, nasm) with apt-get when they are missing;
#     the `turbojpeg` crate builds libjpeg-turbo from source and links it statically
#   - builds the `vitrine` binary in release mode
# Options (environment):
#   VITRINE_ORT_VERSION   onnxruntime wheel version (default 1.32.0)
#   VITRINE_ORT_GPU=1     install the CUDA 13 build (onnxruntime-gpu[cuda,cudnn]) instead of the CPU build
#   VITRINE_SKIP_BUILD=1  only install ONNX Runtime
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ver=${VITRINE_ORT_VERSION:-1.32.0}
pkg=onnxruntime
if [ "${VITRINE_ORT_GPU:-0}" = 1 ]; then pkg=onnxruntime-gpu; ver=${VITRINE_ORT_VERSION:-1.31.1}; fi

if ls .ort/libonnxruntime.so.* >/dev/null 2>&1 && [ -f .ort/VERSION ] && [ "$(cat .ort/VERSION)" = "$pkg==$ver" ]; then
  echo "setup: ONNX Runtime $pkg==$ver already in .ort/"
else
  command -v python3 >/dev/null || { echo "setup: python3 (with pip) is needed to fetch the ONNX Runtime wheel" >&2; exit 1; }
  command -v unzip >/dev/null || { apt-get update -qq && apt-get install -y -qq unzip; }
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  echo "setup: downloading $pkg==$ver wheel from PyPI"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$tmp" "$pkg==$ver"
  (cd "$tmp" && unzip -q -o ./*.whl 'onnxruntime/capi/libonnxruntime*')
  rm -rf .ort && mkdir -p .ort
  cp "$tmp"/onnxruntime/capi/libonnxruntime* .ort/
  rm -f .ort/libonnxruntime_providers_tensorrt.so
  echo "$pkg==$ver" > .ort/VERSION
  echo "setup: installed $(ls .ort | tr '\n' ' ')into .ort/"
fi

missing=()
for tool in cmake nasm; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} with apt-get (to build libjpeg-turbo)"
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: ${missing[*]} needed to build libjpeg-turbo; install them with your package manager" >&2
    exit 1
  fi
fi

if [ "${VITRINE_SKIP_BUILD:-0}" != 1 ]; then
  command -v cargo >/dev/null || { echo "setup: a Rust toolchain (cargo) is needed: https://rustup.rs" >&2; exit 1; }
  echo "setup: building vitrine (release)"
  cargo build --release --locked --bin vitrine
  echo "setup: done. Try: ./target/release/vitrine demo"
fi
