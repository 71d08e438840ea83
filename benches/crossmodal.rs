//! Cross-modal recall: text queries against image vectors, through `vitrine_store::vectors`.
//!
//! Data: with `CROSSMODAL_DIR` (default `target/crossmodal`) holding `meta.json`, the toy-world
//! model's vectors from `scripts/crossmodal_vectors.py`: N rendered products embedded by the vision
//! tower (the catalog), its "colour category" / "colour pattern category" text queries (text
//! tower) and photo queries (other views of held-out products, vision tower). Without it, a
//! synthetic stand-in (clustered unit vectors, `N` × `DIM`, as in `hnsw_recall`; held-out points
//! as photo queries; no text queries). Both add `RANDOM` (300) random unit directions: the
//! pathological case, reported, not the target.
//!
//! The index is built exactly as the indexer builds an image segment (`write_index` with
//! `HnswParams::default()`), then for each (ef, seeds) setting each query set is searched one
//! query at a time on one thread: recall@10 against the exact top-10 (brute force) with k = 10,
//! recall@10 within the searcher's own fetch (`FETCH`, 75 = depth 50 × 1.5), and p50/p99 latency.
//! `seeds` is the number of pivot entry points (`FlatGraph::search_with`). The `default` entry
//! is what `VectorIndex::search_as` does per modality at the default `ef_search`.
//! Target: text→image recall@10 ≥ 0.95 at the channel's default settings, at most 2× the latency
//! of a photo query on the same index (at its default settings).
//!
//! Run: `scripts/bench.sh crossmodal` or `cargo bench --bench crossmodal`.

mod common;

use std::path::Path;
use std::time::Instant;

use rand::Rng;
use rayon::prelude::*;
use serde_json::{json, Value};
use vitrine_store::vectors::{top_k, write_index, HnswParams, Modality, PointRef, VectorIndex};

const K: usize = 10;

/// One search setting: (query, k) → (point, score), best first.
type Search<'a> = dyn Fn(&[f32], usize) -> Vec<(usize, f32)> + 'a;

fn read_f32(path: &Path, dim: usize) -> Vec<Vec<f32>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: Vec<f32> = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    all.chunks_exact(dim).map(<[f32]>::to_vec).collect()
}

struct Data {
    source: String,
    base: Vec<Vec<f32>>,
    sets: Vec<(&'static str, Vec<Vec<f32>>)>,
}

fn load(dim_default: usize) -> Data {
    let dir = common::env_path("CROSSMODAL_DIR", "target/crossmodal");
    let mut rng = common::rng(7);
    if let Ok(text) = std::fs::read_to_string(dir.join("meta.json")) {
        let meta: Value = serde_json::from_str(&text).expect("meta.json");
        let dim = meta["dim"].as_u64().expect("dim") as usize;
        let mut base = read_f32(&dir.join("base.f32"), dim);
        base.truncate(common::env_usize("N", base.len(), base.len()));
        let random = common::centers(common::env_usize("RANDOM", 300, 100), dim, &mut rng);
        return Data {
            source: format!("toy-world vectors from {} ({})", dir.display(), meta["model"]),
            base,
            sets: vec![
                ("text", read_f32(&dir.join("text.f32"), dim)),
                ("photo", read_f32(&dir.join("photo.f32"), dim)),
                ("random", random),
            ],
        };
    }
    let n = common::env_usize("N", 100_000, 6_000);
    let dim = common::env_usize("DIM", dim_default, dim_default);
    let clusters = common::env_usize("CLUSTERS", 1000, 60);
    let centers = common::centers(clusters, dim, &mut rng);
    let sample = |rng: &mut rand::rngs::StdRng| common::near(&centers[rng.random_range(0..clusters)], 0.5, rng);
    let base = (0..n).map(|_| sample(&mut rng)).collect();
    let photo = (0..500).map(|_| sample(&mut rng)).collect();
    let random = common::centers(common::env_usize("RANDOM", 300, 100), dim, &mut rng);
    Data {
        source: format!("synthetic: {clusters} clusters, noise 0.5 (no {}/meta.json)", dir.display()),
        base,
        sets: vec![("photo", photo), ("random", random)],
    }
}

fn main() {
    let machine = common::machine();
    let t = Instant::now();
    let data = load(512);
    let (n, dim) = (data.base.len(), data.base[0].len());
    let fetch = common::env_usize("FETCH", 75, 75);
    let gen_ms = common::ms_since(t);

    let t = Instant::now();
    let truth: Vec<Vec<Vec<usize>>> = data
        .sets
        .iter()
        .map(|(_, qs)| {
            qs.par_iter()
                .map(|q| {
                    let mut s: Vec<(usize, f32)> =
                        data.base.iter().enumerate().map(|(i, v)| (i, common::fast_dot(q, v))).collect();
                    top_k(&mut s, K);
                    s.into_iter().map(|(i, _)| i).collect()
                })
                .collect()
        })
        .collect();
    let truth_ms = common::ms_since(t);

    let tmp_root = common::env_path("VITRINE_BENCH_TMP", "target/bench-tmp");
    std::fs::create_dir_all(&tmp_root).expect("tmp root");
    let tmp = tempfile::tempdir_in(&tmp_root).expect("temp dir");
    let dir = tmp.path().join("image");
    let params = HnswParams::default();
    let points: Vec<(PointRef, Vec<f32>)> =
        data.base.into_iter().enumerate().map(|(i, v)| (PointRef { ord: i as u64, version: 1 }, v)).collect();
    let t = Instant::now();
    write_index(&dir, dim, &points, params).expect("write index");
    let build_s = t.elapsed().as_secs_f64();
    drop(points);
    let idx = VectorIndex::open(&dir, dim, params.ef_search).expect("open index");
    assert!(idx.is_graph(), "N must exceed FLAT_MAX_POINTS for a graph");

    // One setting over one query set: recall@10 at k = 10, recall@10 within the searcher's fetch,
    // and the k = 10 latency.
    let run = |qs: &[Vec<f32>], tr: &[Vec<usize>], search: &Search| -> Value {
        for q in qs.iter().take(10) {
            std::hint::black_box(search(q, K));
        }
        let (mut hits, mut hits_fetch, mut lat) = (0usize, 0usize, vec![]);
        for (q, tr) in qs.iter().zip(tr) {
            let t = Instant::now();
            let r = search(q, K);
            lat.push(common::ms_since(t));
            hits += r.iter().filter(|(i, _)| tr.contains(i)).count();
            let r = search(q, fetch);
            hits_fetch += r.iter().take(K).filter(|(i, _)| tr.contains(i)).count();
        }
        let denom = (qs.len() * K) as f64;
        json!({"recall_at_10": hits as f64 / denom, "recall_at_10_in_fetch": hits_fetch as f64 / denom, "k10": common::stats_ms(&lat)})
    };

    let efs = [64usize, 128, 256, 512];
    let seeds = [0usize, 16, 64];
    let mut sets = serde_json::Map::new();
    for ((name, qs), tr) in data.sets.iter().zip(&truth) {
        let mut rows = vec![];
        for &ef in &efs {
            for &s in &seeds {
                let mut r = run(qs, tr, &|q, k| idx.search_with(q, k, ef, s, &|_| true));
                r["ef"] = json!(ef);
                r["seeds"] = json!(s);
                rows.push(r);
            }
        }
        let modality = if *name == "photo" { Modality::Same } else { Modality::Cross };
        let default = run(qs, tr, &|q, k| idx.search_as(q, k, modality, &|_| true));
        eprintln!("{name}: default ({modality:?}) {default}");
        sets.insert(
            name.to_string(),
            json!({"queries": qs.len(), "modality": format!("{modality:?}"), "default": default, "settings": rows}),
        );
    }
    let p50 = |s: &str| sets.get(s).and_then(|v| v["default"]["k10"]["p50_ms"].as_f64());
    let text_recall = sets.get("text").and_then(|v| v["default"]["recall_at_10"].as_f64());
    let meets = match (text_recall, p50("text"), p50("photo")) {
        (Some(r), Some(t), Some(p)) => json!(r >= 0.95 && t <= 2.0 * p),
        _ => Value::Null,
    };
    common::emit(
        "crossmodal",
        machine,
        json!({
            "source": data.source,
            "points": n,
            "dim": dim,
            "hnsw": {"m": params.m, "ef_construction": params.ef_construction, "ef_search": params.ef_search},
            "fetch": fetch,
            "generate_ms": common::round3(gen_ms),
            "ground_truth_ms": common::round3(truth_ms),
            "build_s": build_s,
            "sets": sets,
            "meets_target": meets,
        }),
    );
}
