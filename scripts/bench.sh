#!/usr/bin/env bash
# Runs Vitrine's benchmarks in sequence on a quiet machine and collects one JSON line per bench in
# artifacts/bench/results.jsonl (appended, tagged with a run id), then prints a short table.
#
#   scripts/bench.sh                 full size (the full-size random ViT-B/32; tens of minutes on 2 cores)
#   scripts/bench.sh --quick         smoke test: small N, the tiny model unless VITRINE_BENCH_MODEL is set
#   scripts/bench.sh [--quick] NAME  only some: preprocess embed_pipeline text_query ingest ingest_full
#                                    hnsw_recall http_load soak
#   scripts/bench.sh soak            the soak (64 clients for 5 minutes of mixed search, writes and
#                                    ingest; zero 5xx): only when named, never in the default run
#   scripts/bench.sh variants        int8 vs fp32 on the full-size model: cosine, top-10 agreement,
#                                    images/s (only when named; makes the int8 towers with
#                                    scripts/quantize_model.py when the model folder lacks them)
#   scripts/bench.sh segment peers   one vector segment's memory (RssAnon/RssFile), recall and
#                                    latency per layout (store/benches/segment.rs), then the same
#                                    files searched by hnswlib and faiss HNSW-SQ8+refine from PyPI
#                                    (scripts/bench_peers.py; venv .venv-peers, made when missing).
#                                    Only when named: the 100k build takes minutes per system
#   scripts/bench.sh crossmodal      text->image recall on the toy-world model's vectors (only when
#                                    named; makes target/crossmodal with scripts/crossmodal_vectors.py
#                                    when models/toy-world-clip exists, else a synthetic stand-in)
#
# Builds in release (cargo bench), generates missing inputs (scripts/make_bench_data.py into
# target/bench-data/, and models/clip-vit-b32-random with scripts/make_clip_fixture.py). Needs the
# fixtures venv (.venv-fixtures: python -m venv .venv-fixtures && .venv-fixtures/bin/pip install -r
# scripts/requirements-fixtures.txt). Env: VITRINE_BENCH_MODEL (full-size model dir), PY (python),
# VITRINE_BENCH_DEVICE (cpu), and each bench's own knobs (see the header of benches/*.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

QUICK=0
ONLY=()
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) ONLY+=("$a") ;;
  esac
done
ALL=(preprocess embed_pipeline text_query ingest ingest_full hnsw_recall http_load)
# Benches that run only when named (long).
EXTRA=(soak crossmodal variants segment peers)
[ ${#ONLY[@]} -eq 0 ] && ONLY=("${ALL[@]}")
for b in "${ONLY[@]}"; do
  [[ " ${ALL[*]} ${EXTRA[*]} " == *" $b "* ]] || { echo "unknown bench $b (one of: ${ALL[*]} ${EXTRA[*]})" >&2; exit 2; }
done

PY=${PY:-.venv-fixtures/bin/python}
[ -x "$PY" ] || { echo "$PY not found: create the fixtures venv (see scripts/requirements-fixtures.txt)" >&2; exit 1; }
TINY=models/tiny-clip
if [ "$QUICK" = 1 ]; then
  export VITRINE_BENCH_QUICK=1
  FULL=${VITRINE_BENCH_MODEL:-$TINY}
  PHOTOS=32 INGEST_N=500 INGEST_FULL_N=64 HNSW_N=6000 HTTP_N=2000 SOAK_N=2000
else
  unset VITRINE_BENCH_QUICK
  FULL=${VITRINE_BENCH_MODEL:-models/clip-vit-b32-random}
  PHOTOS=256 INGEST_N=10000 INGEST_FULL_N=256 HNSW_N=100000 HTTP_N=100000 SOAK_N=20000
fi
MAX_INGEST=$((INGEST_N > INGEST_FULL_N ? INGEST_N : INGEST_FULL_N))

OUT=artifacts/bench
mkdir -p "$OUT"
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
git diff --quiet HEAD 2>/dev/null || RUN_ID="$RUN_ID-dirty"
[ "$QUICK" = 1 ] && RUN_ID="$RUN_ID-quick"
export VITRINE_BENCH_RUN_ID=$RUN_ID

echo "== bench run $RUN_ID (full-size model: $FULL; load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
if [ "$QUICK" = 0 ] && awk '{exit !($1 > 0.5)}' /proc/loadavg; then
  echo "warning: the machine is not quiet (load average above 0.5); numbers will be noisy" >&2
fi

echo "== inputs" >&2
if [ ! -f "$FULL/vision_model.onnx" ]; then
  if [ "$FULL" = models/clip-vit-b32-random ]; then
    "$PY" scripts/make_clip_fixture.py --size base --out models/clip-vit-b32-random
  else
    echo "$FULL has no vision_model.onnx" >&2
    exit 1
  fi
fi
"$PY" scripts/make_bench_data.py --photos "$PHOTOS" --ingest "$MAX_INGEST"

echo "== build (release)" >&2
cargo bench -p vitrine --no-run $(printf -- '--bench %s ' preprocess embed_pipeline text_query ingest hnsw_recall http_load soak crossmodal variants) >&2

FAILED=()
run() { # label bench [VAR=value...]
  local label=$1 bench=$2
  shift 2
  local log="$OUT/$label.log"
  echo "== $label ($*)" >&2
  local rc=0
  env "$@" cargo bench -p vitrine --bench "$bench" 2>"$OUT/$label.stderr" | tee "$log" >&2 || rc=$?
  "$PY" - "$label" "$RUN_ID" "$rc" "$log" >>"$OUT/results.jsonl" <<'EOF' || true
import json, sys
label, run_id, rc, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
found = None
for line in open(log, errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict) and "bench" in v:
            found = v
if found is None or rc != 0:
    found = {"bench": label, "run_id": run_id, "error": f"exit status {rc}, see {log} and its .stderr", **(found or {})}
found["label"] = label
print(json.dumps(found))
EOF
  [ "$rc" = 0 ] || FAILED+=("$label")
}

for b in "${ONLY[@]}"; do
  case "$b" in
    preprocess) run preprocess preprocess VITRINE_BENCH_MODEL="$FULL" ;;
    embed_pipeline) run embed_pipeline embed_pipeline VITRINE_BENCH_MODEL="$FULL" N="$PHOTOS" VITRINE_BENCH_PYTHON="$PY" ;;
    text_query) run text_query text_query VITRINE_BENCH_MODEL="$FULL" ;;
    ingest) run ingest ingest VITRINE_BENCH_MODEL="$TINY" N="$INGEST_N" ;;
    ingest_full) run ingest_full ingest VITRINE_BENCH_MODEL="$FULL" N="$INGEST_FULL_N" ;;
    hnsw_recall) run hnsw_recall hnsw_recall N="$HNSW_N" ;;
    crossmodal)
      TOY=${VITRINE_TOY_MODEL:-models/toy-world-clip}
      if [ ! -f target/crossmodal/meta.json ] && [ -f "$TOY/vision_model.onnx" ]; then
        "$PY" scripts/crossmodal_vectors.py --model "$TOY" --n "$HNSW_N" --out target/crossmodal >&2
      fi
      run crossmodal crossmodal N="$HNSW_N" ;;
    http_load) run http_load http_load VITRINE_BENCH_MODEL="$FULL" N="$HTTP_N" ;;
    soak) run soak soak VITRINE_BENCH_MODEL="$FULL" N="$SOAK_N" ;;
    variants)
      [ -f "$FULL/vision_model_quantized.onnx" ] || "$PY" scripts/quantize_model.py "$FULL" >&2
      run variants variants VITRINE_BENCH_MODEL="$FULL" N="$((INGEST_N < 1000 ? INGEST_N : 1000))" ;;
    segment | peers)
      # The segment bench writes (or reuses) target/bench-tmp/segment-N-512-C with the queries and
      # their exact top-10; the peers read the same files.
      SEG_CLUSTERS=$([ "$QUICK" = 1 ] && echo 60 || echo 1000)
      SEG_DIR=target/bench-tmp/segment-$HNSW_N-512-$SEG_CLUSTERS
      if [ "$b" = segment ] || [ ! -f "$OUT/segment.log" ] || ! grep -q "\"segment_dir\":\"[^\"]*$SEG_DIR\"" "$OUT/segment.log"; then
        echo "== segment (N=$HNSW_N)" >&2
        cargo bench -p vitrine-store --bench segment >&2 --no-run
        env N="$HNSW_N" CLUSTERS="$SEG_CLUSTERS" QUERIES=$([ "$QUICK" = 1 ] && echo 200 || echo 1000) \
          cargo bench -p vitrine-store --bench segment 2>"$OUT/segment.stderr" | tee "$OUT/segment.log" >&2 || FAILED+=(segment)
        grep '^{"bench"' "$OUT/segment.log" >>"$OUT/results.jsonl" || true
      fi
      if [ "$b" = peers ]; then
        PEERS_PY=${PEERS_PY:-.venv-peers/bin/python}
        if ! "$PEERS_PY" -c "import hnswlib, faiss" 2>/dev/null; then
          "$PY" -m venv --system-site-packages .venv-peers && .venv-peers/bin/pip install -q hnswlib faiss-cpu >&2
          PEERS_PY=.venv-peers/bin/python
        fi
        echo "== peers (hnswlib, faiss HNSW-SQ8 + refine; one search thread)" >&2
        "$PEERS_PY" scripts/bench_peers.py --segment "$SEG_DIR" --vitrine "$OUT/segment.log" \
          | tee "$OUT/peers.log" >>"$OUT/results.jsonl" || FAILED+=(peers)
      fi ;;
  esac
done

echo "== results ($OUT/results.jsonl, run $RUN_ID)"
"$PY" - "$OUT/results.jsonl" "$RUN_ID" <<'EOF'
import json, sys
path, run_id = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r.get("run_id") == run_id]

def g(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d

def f(x, nd=1):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

def line(label, text, ok):
    mark = "" if ok is None else ("ok  " if ok else "MISS")
    print(f"{label:<15} {mark:<5} {text}")

for r in rows:
    b, lab = r.get("bench"), r.get("label", r.get("bench"))
    if "error" in r:
        line(lab, "ERROR: " + r["error"], False)
        continue
    if b == "preprocess":
        line(lab, f"total median {f(g(r,'criterion_median_ms','total'),2)} ms (decode {f(g(r,'criterion_median_ms','decode_orient'),2)}, "
             f"resize+crop+norm {f(g(r,'criterion_median_ms','resize_crop_normalize'),2)}); p99 {f(g(r,'total','p99_ms'),2)} ms; target <= 5 ms",
             r.get("meets_target"))
    elif b == "embed_pipeline":
        line(lab, f"e2e {f(r.get('e2e_images_per_s'))} img/s, model-only {f(r.get('model_only_images_per_s'))} img/s "
             f"(ratio {f(r.get('e2e_over_model_only'),3)}, target 0.95); Python e2e {f(g(r,'python','e2e_best_images_per_s'))} img/s "
             f"(speedup {f(r.get('speedup_e2e_vs_python'),2)}x, target 1.4x)", r.get("meets_targets"))
    elif b == "text_query":
        line(lab, f"p50 {f(g(r,'embed_text','p50_ms'),2)} ms, p99 {f(g(r,'embed_text','p99_ms'),2)} ms "
             f"(tokenize p50 {f(g(r,'tokenize','p50_ms'),3)} ms); target p50 <= 15 ms", r.get("meets_target"))
    elif b == "ingest":
        line(lab, f"{r.get('products')} products, {f(g(r,'first_run','products_per_s'))}/s (unchanged rerun "
             f"{f(g(r,'second_run_unchanged','products_per_s'))}/s), ingest/model-only {f(r.get('ingest_over_model_only'),3)}, "
             f"{f(g(r,'disk','bytes_per_product'),0)} B disk and {f(r.get('searcher_rss_bytes_per_product'),0)} B RSS per product "
             f"[{r.get('model_dim')}-d model]", r.get("meets_target"))
    elif b == "hnsw_recall":
        efs = g(r, "ef_search") or {}
        parts = [f"ef {ef}: recall {f(g(v,'recall_at_10'),4)} p50 {f(g(v,'k10','p50_ms'),3)} ms p99 {f(g(v,'k10','p99_ms'),3)} ms"
                 f" (off-distribution: recall {f(g(v,'ood_recall_at_10'),4)} p50 {f(g(v,'ood_k10','p50_ms'),3)} ms)"
                 for ef, v in sorted(efs.items(), key=lambda kv: int(kv[0]))]
        line(lab, f"{r.get('points')} pts, build {f(r.get('build_s'))} s, load {f((r.get('load_ms') or [None])[0])} ms; " + "; ".join(parts),
             r.get("meets_target"))
    elif b == "segment":
        c = g(r, "configs", "mapped") or {}
        e = g(c, "ef", "128") or {}
        line(lab, f"{g(r,'segment','params','n')} pts: RssAnon {f(c.get('anon_bytes_per_point'),0)} B/point (mapped vectors), "
             f"ef 128 recall {f(e.get('recall_at_10'),4)} p50 {f(e.get('p50_us'),1)} µs [{c.get('simd')}]", None)
    elif b == "peers":
        parts = []
        for s in r.get("systems") or []:
            h = g(s, "at_recall", "0.99") or {}
            parts.append(f"{s.get('system')}: build {f(s.get('build_s'))} s, {f(s.get('rss_mib'))} MiB, {f(h.get('mean_us'),0)} µs at recall 0.99")
        line(lab, "; ".join(parts), None)
    elif b == "crossmodal":
        sets = g(r, "sets") or {}
        parts = [f"{k}: recall {f(g(v,'default','recall_at_10'),4)} p50 {f(g(v,'default','k10','p50_ms'),3)} ms" for k, v in sets.items()]
        line(lab, f"{r.get('points')} pts x {r.get('dim')}, defaults per modality; " + "; ".join(parts), r.get("meets_target"))
    elif b == "http_load":
        line(lab, f"{r.get('products')} products: text p50/p99 {f(g(r,'text','client','p50_ms'),1)}/{f(g(r,'text','client','p99_ms'),1)} ms, "
             f"image p50 {f(g(r,'image','client','p50_ms'),1)} ms, search work p50 {f(g(r,'text','search_work','search_ms','p50_ms'),2)} ms "
             f"(with a category filter {f(g(r,'text_category_filter','search_work','search_ms','p50_ms'),2)} ms); "
             f"{g(r,'concurrent','clients')} clients: {f(g(r,'concurrent','throughput_per_s'))} req/s, p50/p99 "
             f"{f(g(r,'concurrent','client','p50_ms'),1)}/{f(g(r,'concurrent','client','p99_ms'),1)} ms, errors {g(r,'concurrent','errors')}",
             r.get("meets_targets"))
    elif b == "soak":
        ops = r.get("ops") or {}
        def op(k):
            return f"{k} {f(g(ops,k,'p50_ms'),1)}/{f(g(ops,k,'p99_ms'),1)}"
        mib = lambda k: f((g(r, 'memory', k, 'rss_kib') or 0) / 1024, 0)
        jobs = r.get("ingest_jobs") or {}
        line(lab, f"{r.get('clients')} clients x {r.get('duration_s')} s on {r.get('products')} products: {r.get('requests')} requests "
             f"({f(r.get('throughput_per_s'))}/s), 5xx {r.get('errors_5xx')}, transport errors {r.get('transport_errors')}; p50/p99 ms: "
             + ", ".join(op(k) for k in ("text_get", "text_post", "image", "write", "ingest_submit"))
             + f"; jobs {jobs.get('done')}/{jobs.get('submitted')} done ({jobs.get('failed')} failed); products "
             f"{r.get('products_before')} -> {r.get('products_after')}; RSS MiB before {mib('before_load')}, after {mib('after_load')}, "
             f"after {g(r,'memory','idle_s')} s idle {mib('after_idle')} (peak {f((g(r,'memory','after_load','hwm_kib') or 0) / 1024, 0)})",
             r.get("meets_targets"))
    else:
        line(lab, json.dumps(r)[:200], None)
EOF

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "failed: ${FAILED[*]}" >&2
  exit 1
fi
