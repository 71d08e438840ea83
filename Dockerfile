# Vitrine service image. Build: docker build -t vitrine .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip unzip cmake nasm && rm -rf /var/lib/apt/lists/*
RUN VITRINE_SKIP_BUILD=1 scripts/setup.sh && cargo build --release --locked --bin vitrine

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/vitrine /app/vitrine
COPY --from=build /src/.ort /app/.ort
COPY models/tiny-clip /app/models/tiny-clip
COPY demo /app/demo
ENV VITRINE_DATA=/data VITRINE_BIND=0.0.0.0:8080 XDG_CACHE_HOME=/tmp
EXPOSE 8080
ENTRYPOINT ["/app/vitrine"]
CMD ["serve"]
