//! HNSW recall and latency of a vector segment, through `vitrine_store::vectors`.
//!
//! `N` (100,000) synthetic unit vectors of `DIM` (512): `CLUSTERS` (1000) Gaussian centres, each point
//! = centre + isotropic noise of norm `NOISE` (0.5), normalized; seeded. Written with `write_index`
//! (HnswParams::default()), opened with `VectorIndex::open` once per ef_search (64, 128, 256), and
//! `QUERIES` (1000) held-out points of the same distribution searched one at a time: recall@10
//! against exact top-10, p50/p99 latency (k = 10, and k = 100, the depth the searcher asks for),
//! build and load times. Also `ood_*`: up to 300 random unit vectors near no cluster (the hard
//! case; recall is reported, the target applies to the in-distribution queries). The exact top-10
//! is a brute-force scan on all cores (`exact()` is one thread, ~22 ms a query at 100k × 512); a
//! sample of queries is cross-checked against `exact()` and its latency reported.
//! Target: recall@10 ≥ 0.98.
//! Below `FLAT_MAX_POINTS` (4096) the segment is flat (exact), so smoke tests need N > 4096.
//!
//! Run: `cargo bench --bench hnsw_recall` (N=6000 for a smoke test).

mod common;

use std::time::Instant;

use rand::Rng;
use rayon::prelude::*;
use serde_json::json;
use vitrine_store::vectors::{top_k, write_index, HnswParams, PointRef, VectorIndex};

const TARGET_RECALL: f64 = 0.98;

fn main() {
    let machine = common::machine();
    let n = common::env_usize("N", 100_000, 6_000);
    let dim = common::env_usize("DIM", 512, 512);
    let clusters = common::env_usize("CLUSTERS", 1000, 60);
    let nq = common::env_usize("QUERIES", 1000, 200);
    let noise = common::env_f64("NOISE", 0.5) as f32;
    let k = 10;

    let t = Instant::now();
    let mut rng = common::rng(42);
    let centers = common::centers(clusters, dim, &mut rng);
    let sample = |rng: &mut rand::rngs::StdRng| {
        let c = &centers[rng.random_range(0..clusters)];
        common::near(c, noise, rng)
    };
    let points: Vec<(PointRef, Vec<f32>)> = (0..n).map(|i| (PointRef { ord: i as u64, version: 1 }, sample(&mut rng))).collect();
    let queries: Vec<Vec<f32>> = (0..nq).map(|_| sample(&mut rng)).collect();
    // Out-of-distribution queries: random directions near no cluster, the hard case for a graph
    // (like a random-weight model's text vectors against the http bench's synthetic catalog).
    let ood: Vec<Vec<f32>> = common::centers(nq.min(300), dim, &mut rng);
    let gen_ms = common::ms_since(t);

    // Ground truth: brute force in memory, same ordering rule as `exact()` (vectors::top_k).
    let t = Instant::now();
    let truth_of = |qs: &[Vec<f32>]| -> Vec<Vec<usize>> {
        qs.par_iter()
            .map(|q| {
                let mut s: Vec<(usize, f32)> = points.iter().enumerate().map(|(i, (_, v))| (i, common::fast_dot(q, v))).collect();
                top_k(&mut s, k);
                s.into_iter().map(|(i, _)| i).collect()
            })
            .collect()
    };
    let truth = truth_of(&queries);
    let ood_truth = truth_of(&ood);
    let truth_ms = common::ms_since(t);

    let tmp_root = common::env_path("VITRINE_BENCH_TMP", "target/bench-tmp");
    std::fs::create_dir_all(&tmp_root).expect("tmp root");
    let tmp = tempfile::tempdir_in(&tmp_root).expect("temp dir");
    let dir = tmp.path().join("image");
    let params = HnswParams::default();
    let t = Instant::now();
    write_index(&dir, dim, &points, params).expect("write index");
    let build_s = t.elapsed().as_secs_f64();
    let disk = common::du(&dir);
    drop(points);

    let mut per_ef = serde_json::Map::new();
    let mut load_ms = vec![];
    let mut is_graph = false;
    let mut exact_check = json!(null);
    let mut recall_128 = f64::NAN;
    for ef in [64usize, 128, 256] {
        let rss0 = common::vm_rss_kib();
        let t = Instant::now();
        let idx = VectorIndex::open(&dir, dim, ef).expect("open index");
        load_ms.push(common::ms_since(t));
        let rss1 = common::vm_rss_kib();
        is_graph = idx.is_graph();
        for q in queries.iter().take(20) {
            std::hint::black_box(idx.search(q, k, &|_| true));
        }
        let mut lat = vec![];
        let mut hits = 0usize;
        for (q, tr) in queries.iter().zip(&truth) {
            let t = Instant::now();
            let r = idx.search(q, k, &|_| true);
            lat.push(common::ms_since(t));
            hits += r.iter().filter(|(i, _)| tr.contains(i)).count();
        }
        let mut lat100 = vec![];
        for q in queries.iter().take(nq.min(300)) {
            let t = Instant::now();
            std::hint::black_box(idx.search(q, 100, &|_| true));
            lat100.push(common::ms_since(t));
        }
        let recall = hits as f64 / (nq * k) as f64;
        let (mut ood_hits, mut ood_lat) = (0usize, vec![]);
        for (q, tr) in ood.iter().zip(&ood_truth) {
            let t = Instant::now();
            let r = idx.search(q, k, &|_| true);
            ood_lat.push(common::ms_since(t));
            ood_hits += r.iter().filter(|(i, _)| tr.contains(i)).count();
        }
        if ef == 128 {
            recall_128 = recall;
            // Cross-check the in-memory ground truth against the index's own exact search.
            let sample = nq.min(if n > 20_000 { 10 } else { 50 });
            let (mut agree, mut lat_exact) = (0usize, vec![]);
            for (q, tr) in queries.iter().zip(&truth).take(sample) {
                let t = Instant::now();
                let e = idx.exact(q, k, &|_| true);
                lat_exact.push(common::ms_since(t));
                agree += e.iter().filter(|(i, _)| tr.contains(i)).count();
            }
            exact_check = json!({
                "queries": sample,
                "agreement": agree as f64 / (sample * k) as f64,
                "exact_latency": common::stats_ms(&lat_exact),
            });
        }
        per_ef.insert(
            ef.to_string(),
            json!({
                "recall_at_10": recall,
                "k10": common::stats_ms(&lat),
                "ood_recall_at_10": ood_hits as f64 / (ood.len() * k) as f64,
                "ood_k10": common::stats_ms(&ood_lat),
                "k100": common::stats_ms(&lat100),
                "rss_delta_kib": match (rss0, rss1) { (Some(a), Some(b)) => Some(b.saturating_sub(a)), _ => None },
            }),
        );
        drop(idx);
    }
    common::emit(
        "hnsw_recall",
        machine,
        json!({
            "points": n,
            "dim": dim,
            "clusters": clusters,
            "noise": noise,
            "queries": nq,
            "hnsw": {"m": params.m, "ef_construction": params.ef_construction},
            "is_graph": is_graph,
            "generate_ms": common::round3(gen_ms),
            "ground_truth_ms": common::round3(truth_ms),
            "build_s": build_s,
            "disk_bytes": disk.0,
            "load_ms": load_ms.iter().map(|x| common::round3(*x)).collect::<Vec<_>>(),
            "ef_search": per_ef,
            "exact_check": exact_check,
            "target_recall_at_10": TARGET_RECALL,
            "meets_target": recall_128 >= TARGET_RECALL,
        }),
    );
}
