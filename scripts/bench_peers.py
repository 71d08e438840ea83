#!/usr/bin/env python3
"""Vitrine's vector segment against hnswlib and faiss (HNSW-SQ8 + f32 refine), on the same files.

Reads the segment directory that `cargo bench -p vitrine-store --bench segment` writes and reuses
(vectors.f32: the base vectors, queries.f32, truth.u32: exact top-10, meta.json: N, DIM, M,
ef_construction and Vitrine's build time), builds each peer with the same M and ef_construction on
all cores, then searches with ONE thread over an ef sweep, queries batched into one call (so no
Python overhead per query), and reports per system:

  build_s      wall time of the build (all cores; Vitrine's from meta.json, store/src/hnsw.rs on rayon)
  build_cpu_s  CPU time of the build, user + system over all threads (a machine shared with other
               jobs stretches wall time, much less CPU time)
  rss_mib      growth of the process's RssAnon over the build (the index's memory)
  curve        ef -> recall@10, mean µs per query (median of --repeats runs)
  at_recall    mean µs per query at the first ef reaching each recall target

faiss is IndexHNSWSQ(QT_8bit, inner product) under IndexRefineFlat with k_factor = ef / 10, so
like Vitrine it reranks all ef candidates of the graph walk with the f32 vectors. Vitrine's curve
comes from the segment bench's JSON line (--vitrine), whose latencies are timed one query at a time.

Usage: scripts/bench_peers.py --segment DIR --vitrine SEGMENT_BENCH.log [--systems hnswlib,faiss]
Each system runs in a child process of its own, so its memory is measured alone.
"""
import argparse
import json
import os
import subprocess
import sys
import time

TARGETS = (0.95, 0.98, 0.99)


def rss_anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def cpu_s():
    """CPU seconds (user + system, all threads) of this process: the build's cost on a shared machine."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load(segment):
    import numpy as np

    meta = json.load(open(os.path.join(segment, "meta.json")))
    p = meta["params"]
    n, dim = p["n"], p["dim"]
    base = np.fromfile(os.path.join(segment, "vectors.f32"), dtype="<f4").reshape(n, dim)
    queries = np.fromfile(os.path.join(segment, "queries.f32"), dtype="<f4").reshape(-1, dim)
    truth = np.fromfile(os.path.join(segment, "truth.u32"), dtype="<u4").reshape(len(queries), -1)
    return meta, base, queries, truth


def recall(found, truth):
    k = truth.shape[1]
    return sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth)) / truth.size


def run_system(system, segment, efs, repeats):
    import numpy as np

    meta, base, queries, truth = load(segment)
    p = meta["params"]
    m, efc, dim = p["m"], p["ef_construction"], p["dim"]
    threads = os.cpu_count() or 1
    base = np.ascontiguousarray(base)
    before = rss_anon_kib()
    t, cpu = time.perf_counter(), cpu_s()
    if system == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=len(base), ef_construction=efc, M=m, random_seed=42)
        index.set_num_threads(threads)
        index.add_items(base, np.arange(len(base)))
        index.set_num_threads(1)

        def search(ef):
            index.set_ef(max(ef, 10))
            labels, _ = index.knn_query(queries, k=10)
            return labels
    elif system == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        hnsw = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = efc
        index = faiss.IndexRefineFlat(hnsw)
        index.train(base)
        index.add(base)
        faiss.omp_set_num_threads(1)

        def search(ef):
            params = faiss.IndexRefineSearchParameters(k_factor=max(ef, 10) / 10.0, base_index_params=faiss.SearchParametersHNSW(efSearch=max(ef, 10)))
            _, labels = index.search(queries, 10, params=params)
            return labels
    else:
        raise SystemExit(f"unknown system {system}")
    build_s, build_cpu_s = time.perf_counter() - t, cpu_s() - cpu
    rss_mib = (rss_anon_kib() - before) / 1024
    search(64)  # warm up
    curve = {}
    for ef in efs:
        means, r = [], 0.0
        for _ in range(repeats):
            t = time.perf_counter()
            labels = search(ef)
            means.append((time.perf_counter() - t) * 1e6 / len(queries))
            r = recall(labels, truth)
        means.sort()
        curve[str(ef)] = {"recall_at_10": r, "mean_us": means[len(means) // 2], "mean_us_runs": means}
        print(f"{system} ef {ef}: recall {r:.4f} mean {means[len(means) // 2]:.1f} us", file=sys.stderr)
    return {"system": system, "build_s": build_s, "build_cpu_s": build_cpu_s, "build_threads": threads, "rss_mib": rss_mib, "curve": curve}


def at_recall(curve):
    out = {}
    pts = sorted(((v["recall_at_10"], v["mean_us"], int(ef)) for ef, v in curve.items()), key=lambda x: x[2])
    for target in TARGETS:
        hit = next(((us, ef, r) for r, us, ef in pts if r >= target), None)
        out[str(target)] = None if hit is None else {"mean_us": hit[0], "ef": hit[1], "recall_at_10": hit[2]}
    return out


def vitrine_result(log, config):
    line = None
    for raw in open(log, errors="replace"):
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                v = json.loads(raw)
            except ValueError:
                continue
            if isinstance(v, dict) and v.get("bench") == "segment":
                line = v
    if line is None:
        raise SystemExit(f"no segment bench line in {log}")
    c = line["configs"][config]
    n = line["segment"]["params"]["n"]
    curve = {ef: {"recall_at_10": v["recall_at_10"], "mean_us": v["mean_us"], "p50_us": v["p50_us"]} for ef, v in c["ef"].items()}
    return {
        "system": f"vitrine ({config}, {c['simd']})",
        "build_s": line["segment"]["build_s"],
        "build_cpu_s": line["segment"].get("build_cpu_s"),
        "build_threads": line["segment"].get("build_threads"),
        "rss_mib": c["anon_bytes_per_point"] * n / 2**20,
        "rss_file_mib_after_searches": c["file_bytes_per_point_after_searches"] * n / 2**20,
        "curve": curve,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segment", required=True)
    ap.add_argument("--vitrine", help="log holding the segment bench's JSON line")
    ap.add_argument("--vitrine-config", default="mapped")
    ap.add_argument("--systems", default="hnswlib,faiss")
    ap.add_argument("--efs", default="16,24,32,48,64,96,128,192,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    efs = [int(x) for x in a.efs.split(",")]
    if a.child:
        print(json.dumps(run_system(a.child, a.segment, efs, a.repeats)))
        return
    rows = []
    if a.vitrine:
        rows.append(vitrine_result(a.vitrine, a.vitrine_config))
    for system in [s for s in a.systems.split(",") if s]:
        out = subprocess.run([sys.executable, __file__, "--segment", a.segment, "--efs", a.efs, "--repeats", str(a.repeats), "--child", system],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    for r in rows:
        r["at_recall"] = at_recall(r["curve"])
    meta = json.load(open(os.path.join(a.segment, "meta.json")))
    result = {"bench": "peers", "run_id": os.environ.get("VITRINE_BENCH_RUN_ID"), "params": meta["params"],
              "loadavg": open("/proc/loadavg").read().split()[:3], "systems": rows}
    print(f"{'system':<34} {'build s':>8} {'CPU s':>8} {'RSS MiB':>8}  " + "  ".join(f"µs@{t}" for t in TARGETS), file=sys.stderr)
    for r in rows:
        cells = []
        for t in TARGETS:
            h = r["at_recall"][str(t)]
            cells.append("-" if h is None else f"{h['mean_us']:.0f} (ef {h['ef']})")
        cpu = "-" if r.get("build_cpu_s") is None else f"{r['build_cpu_s']:.1f}"
        print(f"{r['system']:<34} {r['build_s']:>8.1f} {cpu:>8} {r['rss_mib']:>8.1f}  " + "  ".join(f"{c:>14}" for c in cells), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
