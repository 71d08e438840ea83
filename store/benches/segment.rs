//! One vector segment: memory, recall and latency per way of opening it, on the synthetic
//! clustered vectors of `benches/hnsw_recall.rs` (same generator and seed), and the input files
//! of the peer comparison (`scripts/bench_peers.py`).
//!
//! `N` (100,000) unit vectors of `DIM` (512): `CLUSTERS` (1000) Gaussian centres, each point =
//! centre + isotropic noise of norm `NOISE` (0.5), normalized, seed 42; `QUERIES` (1000) held-out
//! points of the same distribution. The segment is written by `write_index` (`HnswBuilder`,
//! `HnswParams::default()`, M 24, ef_construction 200, on all cores) into `SEGMENT_DIR` (default
//! `target/bench-tmp/segment-N-DIM-CLUSTERS`) and **reused** when it is already there with the
//! same parameters, since the build is the slow part (its wall and CPU time are kept in
//! `meta.json`). Beside it:
//! `queries.f32` and `truth.u32` (exact top-10 per query), which the peer script reads along with
//! the segment's own `vectors.f32`, so every system searches the same files.
//!
//! `GRAPH=random` writes links drawn at random instead of building the graph (the 1M+ memory
//! curve on 2 cores: the structure's size does not depend on which neighbours the links name;
//! recall is then meaningless and not reported). `DEGREE` (default 36) links per point on layer 0.
//!
//! For each of `CONFIGS` (comma separated, default `mapped,resident-global`):
//! - `mapped`: what the searcher runs (vectors mapped, codes calibrated per dimension);
//! - `resident-global`: the layout before (vectors read into memory, one global code range);
//! - `mapped-global`, `resident`: the other two combinations.
//!
//! it opens the segment and reports the process's `RssAnon` and `RssFile` (from
//! `/proc/self/status`) before, after opening, and after the searches (the mapped pages they
//! touched), then per ef in `EFS` recall@10 and the median over `REPEATS` (3) runs of the p50
//! latency of one query at a time, k = 10. `VITRINE_SIMD=scalar|avx2` caps the kernels.
//!
//! Run: `cargo bench -p vitrine-store --bench segment` (N=6000 for a smoke test).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::json;
use vitrine_store::graph::Adjacency;
use vitrine_store::sq8::Calibration;
use vitrine_store::vectors::{top_k, write_index, HnswParams, OpenOptions, PointRef, VectorIndex};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map_or(default, |v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.into())
}

fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    vitrine_core::vector::l2_normalize(&mut v);
    v
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn rss() -> serde_json::Value {
    json!({"anon_kib": status_kib("RssAnon:"), "file_kib": status_kib("RssFile:"), "total_kib": status_kib("VmRSS:")})
}

fn f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path).expect("read").chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn write_f32s(path: &Path, v: &[f32]) {
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).expect("write");
}

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`
/// (clock ticks of 1/100 s): on a machine shared with other jobs, the build's cost that wall time
/// alone does not show.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Ok(dirs) = std::env::var("PRODUCT_SEGMENTS") {
        return product_memory(&dirs.split(',').map(PathBuf::from).collect::<Vec<_>>(), env_usize("DIM", 512));
    }
    let n = env_usize("N", 100_000);
    let dim = env_usize("DIM", 512);
    let clusters = env_usize("CLUSTERS", 1000);
    let nq = env_usize("QUERIES", 1000);
    let noise = std::env::var("NOISE").ok().map_or(0.5, |v| v.parse::<f32>().expect("NOISE"));
    let repeats = env_usize("REPEATS", 3);
    let graph_kind = env_str("GRAPH", "hnsw");
    let efs: Vec<usize> =
        env_str("EFS", "16,24,32,48,64,96,128,192,256").split(',').map(|x| x.trim().parse().expect("EFS")).collect();
    let configs = env_str("CONFIGS", "mapped,resident-global");
    let k = 10;
    let params = HnswParams::default();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var("SEGMENT_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        root.join(format!("target/bench-tmp/segment-{n}-{dim}-{clusters}{}", if graph_kind == "hnsw" { "" } else { "-random" }))
    });
    let meta_want = json!({"n": n, "dim": dim, "clusters": clusters, "noise": noise, "queries": nq, "seed": 42,
        "graph": graph_kind, "builder": "vitrine-hnsw", "m": params.m, "ef_construction": params.ef_construction});

    let meta_path = dir.join("meta.json");
    let meta: serde_json::Value =
        match std::fs::read(&meta_path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) {
            Some(m) if m["params"] == meta_want => {
                eprintln!("reusing the segment in {}", dir.display());
                m
            }
            _ => {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("segment dir");
                let t = Instant::now();
                let mut rng = rand::rngs::StdRng::seed_from_u64(42);
                let centers: Vec<Vec<f32>> =
                    (0..clusters).map(|_| unit((0..dim).map(|_| gaussian(&mut rng)).collect())).collect();
                let s = noise / (dim as f32).sqrt();
                let sample = |rng: &mut rand::rngs::StdRng| {
                    let c = &centers[rng.random_range(0..clusters)];
                    unit(c.iter().map(|c| c + s * gaussian(rng)).collect())
                };
                let points: Vec<(PointRef, Vec<f32>)> =
                    (0..n).map(|i| (PointRef { ord: i as u64, version: 1 }, sample(&mut rng))).collect();
                let queries: Vec<f32> = (0..nq).flat_map(|_| sample(&mut rng)).collect();
                eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());
                let t = Instant::now();
                // Random links answer nothing worth checking: no ground truth for them.
                let truth_queries = if graph_kind == "hnsw" { queries.as_slice() } else { &[] };
                let truth: Vec<u32> = truth_queries
                    .par_chunks(dim)
                    .flat_map_iter(|q| {
                        let mut s: Vec<(usize, f32)> =
                            points.iter().enumerate().map(|(i, (_, v))| (i, vitrine_core::vector::dot(q, v))).collect();
                        top_k(&mut s, k);
                        s.into_iter().map(|(i, _)| i as u32)
                    })
                    .collect();
                let truth_s = t.elapsed().as_secs_f64();
                eprintln!("ground truth in {truth_s:.1} s");
                let (t, cpu) = (Instant::now(), cpu_s());
                if graph_kind == "hnsw" {
                    write_index(&dir, dim, &points, params).expect("write index");
                } else {
                    write_random(&dir, &points, env_usize("DEGREE", 36));
                }
                let (build_s, build_cpu_s) = (t.elapsed().as_secs_f64(), cpu_s() - cpu);
                eprintln!("segment written in {build_s:.1} s ({build_cpu_s:.1} s of CPU)");
                write_f32s(&dir.join("queries.f32"), &queries);
                std::fs::write(dir.join("truth.u32"), truth.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
                    .expect("truth");
                let m = json!({"params": meta_want, "build_s": build_s, "build_cpu_s": build_cpu_s,
                "build_threads": rayon::current_num_threads(),
                "loadavg_during_build": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()});
                std::fs::write(&meta_path, serde_json::to_vec_pretty(&m).expect("json")).expect("meta");
                m
            }
        };
    let queries: Vec<Vec<f32>> = f32s(&dir.join("queries.f32")).chunks_exact(dim).map(<[f32]>::to_vec).collect();
    let truth: Vec<Vec<usize>> = std::fs::read(dir.join("truth.u32"))
        .expect("truth")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect::<Vec<_>>()
        .chunks_exact(k)
        .map(<[usize]>::to_vec)
        .collect();

    let mut results = serde_json::Map::new();
    for config in configs.split(',').map(str::trim) {
        let opts = match config {
            "mapped" => OpenOptions::default(),
            "resident" => OpenOptions { resident_vectors: true, ..OpenOptions::default() },
            "mapped-global" => OpenOptions { calibration: Calibration::Global, ..OpenOptions::default() },
            "resident-global" => {
                OpenOptions { resident_vectors: true, calibration: Calibration::Global, ..OpenOptions::default() }
            }
            other => panic!("unknown config {other}"),
        };
        let before = rss();
        let t = Instant::now();
        let idx = VectorIndex::open_with(&dir, dim, opts).expect("open");
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let opened = rss();
        let mut per_ef = serde_json::Map::new();
        if graph_kind == "hnsw" {
            for q in queries.iter().take(50) {
                std::hint::black_box(idx.search_with(q, k, 64, 0, &|_| true));
            }
            for &ef in &efs {
                let (mut p50s, mut means) = (vec![], vec![]);
                let mut recall = 0.0;
                for _ in 0..repeats {
                    let (mut lat, mut hits) = (Vec::with_capacity(queries.len()), 0usize);
                    for (q, tr) in queries.iter().zip(&truth) {
                        let t = Instant::now();
                        let r = idx.search_with(q, k, ef, 0, &|_| true);
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                        hits += r.iter().filter(|(i, _)| tr.contains(i)).count();
                    }
                    recall = hits as f64 / (queries.len() * k) as f64;
                    means.push(lat.iter().sum::<f64>() / lat.len() as f64);
                    p50s.push(median(lat));
                }
                eprintln!(
                    "{config} ef {ef}: recall@10 {recall:.4}, p50 {:.1} µs, mean {:.1} µs (p50 of each run {p50s:.1?})",
                    median(p50s.clone()),
                    median(means.clone())
                );
                per_ef.insert(
                    ef.to_string(),
                    json!({"recall_at_10": recall, "p50_us": median(p50s.clone()), "mean_us": median(means), "p50_us_runs": p50s}),
                );
            }
        } else {
            // Touch what the searches would: the codes and links of every point, and rescore reads.
            for q in queries.iter().take(200) {
                std::hint::black_box(idx.search_with(q, k, 128, 0, &|_| true));
            }
        }
        let searched = rss();
        let kib = |v: &serde_json::Value, a: &serde_json::Value, key: &str| {
            v[key].as_u64().unwrap_or(0) as i64 - a[key].as_u64().unwrap_or(0) as i64
        };
        let anon_per_point = kib(&opened, &before, "anon_kib") as f64 * 1024.0 / n as f64;
        let file_per_point = kib(&searched, &before, "file_kib") as f64 * 1024.0 / n as f64;
        eprintln!(
            "{config}: load {load_ms:.0} ms; RssAnon +{anon_per_point:.0} B/point, RssFile after searches +{file_per_point:.0} B/point; \
             accounted {} B/point ({})",
            idx.resident_bytes() / n,
            idx.simd_level().name()
        );
        results.insert(
            config.into(),
            json!({
                "load_ms": load_ms,
                "simd": idx.simd_level().name(),
                "rss_before": before, "rss_opened": opened, "rss_after_searches": searched,
                "anon_bytes_per_point": anon_per_point,
                "file_bytes_per_point_after_searches": file_per_point,
                "accounted_bytes_per_point": idx.resident_bytes() as f64 / n as f64,
                "ef": per_ef,
            }),
        );
        drop(idx);
    }
    let line = json!({
        "bench": "segment",
        "run_id": std::env::var("VITRINE_BENCH_RUN_ID").ok(),
        "machine": {
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())),
        },
        "segment_dir": dir,
        "segment": meta,
        "configs": results,
    });
    println!("{line}");
}

/// `PRODUCT_SEGMENTS=image_dir,text_dir`: the memory per product of a real generation's segments
/// (both channels of the same products), opened mapped, then resident (the layout before), each
/// after 300 searches on each channel (queries: stored vectors of points spread over the segment).
fn product_memory(dirs: &[PathBuf], dim: usize) {
    let mut out = serde_json::Map::new();
    for (name, resident_vectors) in [("mapped", false), ("resident-global", true)] {
        let calibration = if resident_vectors { Calibration::Global } else { Calibration::PerDimension };
        let before = rss();
        let idx: Vec<VectorIndex> = dirs
            .iter()
            .map(|d| {
                VectorIndex::open_with(d, dim, OpenOptions { calibration, resident_vectors, ..OpenOptions::default() })
                    .expect("open")
            })
            .collect();
        let opened = rss();
        let products = idx[0].len();
        let t = Instant::now();
        let mut searches = 0;
        for i in &idx {
            for j in 0..300 {
                let q = i.vector(j * i.len() / 300).to_vec();
                std::hint::black_box(i.search(&q, 100, &|_| true));
                searches += 1;
            }
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / searches as f64;
        let searched = rss();
        let per = |a: &serde_json::Value, b: &serde_json::Value, k: &str| {
            (a[k].as_u64().unwrap_or(0) as f64 - b[k].as_u64().unwrap_or(0) as f64) * 1024.0 / products as f64
        };
        eprintln!(
            "{name}: {products} products, {} segments: RssAnon +{:.0} B/product after opening, RssFile +{:.0} B/product after {searches} searches (k 100, mean {us:.0} µs)",
            idx.len(),
            per(&opened, &before, "anon_kib"),
            per(&searched, &before, "file_kib")
        );
        out.insert(name.into(), json!({"products": products, "rss_before": before, "rss_opened": opened, "rss_after_searches": searched,
            "anon_bytes_per_product": per(&opened, &before, "anon_kib"), "file_bytes_per_product_after_searches": per(&searched, &before, "file_kib"),
            "accounted_bytes_per_product": idx.iter().map(VectorIndex::resident_bytes).sum::<usize>() as f64 / products as f64,
            "mean_us_k100": us}));
    }
    println!(
        "{}",
        json!({"bench": "segment_products", "segments": dirs, "results": out,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()})
    );
}

/// A segment with random links (see the module doc): points, vectors and a two-layer graph.
fn write_random(dir: &Path, points: &[(PointRef, Vec<f32>)], degree: usize) {
    use std::io::Write;
    let n = points.len();
    let mut pf = std::io::BufWriter::new(std::fs::File::create(dir.join("points.bin")).expect("points"));
    let mut vf = std::io::BufWriter::new(std::fs::File::create(dir.join("vectors.f32")).expect("vectors"));
    for (p, v) in points {
        pf.write_all(&p.ord.to_le_bytes()).and_then(|_| pf.write_all(&p.version.to_le_bytes())).expect("write");
        vf.write_all(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).expect("write");
    }
    pf.flush().expect("flush");
    vf.flush().expect("flush");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let layer0: Vec<Vec<u32>> = (0..n).map(|_| (0..degree).map(|_| rng.random_range(0..n as u32)).collect()).collect();
    // Layer 1 holds every M-th point (1/24 of them), as HNSW's level draw gives on average.
    let layer1: Vec<Vec<u32>> = (0..n)
        .map(|i| if i % 24 == 0 { (0..24).map(|_| (rng.random_range(0..n / 24) * 24) as u32).collect() } else { vec![] })
        .collect();
    Adjacency::from_layers(n, vec![layer0, layer1], 0).expect("graph").write(&dir.join("graph.bin")).expect("graph.bin");
}
