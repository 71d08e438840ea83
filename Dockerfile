# Vitrine service image. Build: docker build -t vitrine .
# GPU image (ONNX Runtime's CUDA 13 build and the CUDA/cuDNN libraries from PyPI):
#   docker build --build-arg VITRINE_ORT_GPU=1 -t vitrine:gpu .   (or: docker compose --profile gpu build)
ARG VITRINE_ORT_GPU=0

FROM rust:1.95-bookworm AS build
ARG VITRINE_ORT_GPU
WORKDIR /src
COPY . .
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip unzip cmake nasm && rm -rf /var/lib/apt/lists/*
# The image carries a stripped binary (the release profile keeps line tables for local profiling;
# they are most of its size).
RUN VITRINE_ORT_GPU=$VITRINE_ORT_GPU VITRINE_SKIP_BUILD=1 scripts/setup.sh \
    && cargo build --release --locked --bin vitrine \
    && strip target/release/vitrine
# For the GPU image: the CUDA 13 runtime, cuBLAS, cuFFT, cuRAND and cuDNN 9 libraries that
# `onnxruntime-gpu[cuda,cudnn]` pulls from PyPI, flattened into one folder on LD_LIBRARY_PATH.
RUN mkdir -p /src/.cuda && if [ "$VITRINE_ORT_GPU" = 1 ]; then \
      tmp=$(mktemp -d) \
      && python3 -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
           --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp" "onnxruntime-gpu[cuda,cudnn]==1.31.1" \
      && for w in "$tmp"/nvidia_*.whl; do unzip -q -o "$w" 'nvidia/*/lib/*' -d "$tmp/x"; done \
      && cp -a "$tmp"/x/nvidia/*/lib/. /src/.cuda/ && rm -rf "$tmp"; \
    fi

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/vitrine /app/vitrine
COPY --from=build /src/.ort /app/.ort
COPY --from=build /src/.cuda /app/.cuda
COPY models/tiny-clip /app/models/tiny-clip
COPY demo /app/demo
ENV VITRINE_DATA=/data VITRINE_BIND=0.0.0.0:8080 XDG_CACHE_HOME=/tmp LD_LIBRARY_PATH=/app/.cuda
EXPOSE 8080
ENTRYPOINT ["/app/vitrine"]
CMD ["serve"]
