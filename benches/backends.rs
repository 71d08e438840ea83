//! The engine backend against the embedded one on the same synthetic catalog (issue 14): ingest
//! rate, query latency p50/p99 and recall@10 of the image channel against exact search, with and
//! without a filter.
//!
//! Both backends receive the same `N` (100,000) products of `common::SyntheticCatalog` (no model
//! runs: the vectors are clustered random unit vectors of `DIM`, 512), written through each
//! backend's own write path: embedded = `Store::put` per product, then one full
//! `generation::build_next`; engine = `Engine::put` per product (one transaction each) from
//! `WRITERS` (2) threads, the engine indexing as it goes. Then `QUERIES` (200) image-vector
//! queries through `Searcher::search` with the image channel only (`channels: true`, so the
//! channel's own top 10 is compared with the exact top 10 by brute force), once unfiltered and
//! once filtered to one category (~1/len(CATEGORIES) of the catalog). Latency is the wall time of
//! `Searcher::search`.
//!
//! The engine is `VITRINE_BENCH_ENGINE`, else `VITRINE_TEST_ENGINE` (`scripts/seekdb.sh start`
//! prints it); the bench creates the database `bench_backends_N` (kept and reused when it holds
//! all N products; `FRESH=1` rebuilds both). Run: `scripts/bench.sh backends` or
//! `cargo bench --bench backends`.

mod common;

use std::time::Instant;

use rand::Rng;
use serde_json::{json, Value};
use vitrine_core::{Filters, ModelId, Variant};
use vitrine_searcher::{Fusion, SearchQuery, Searcher, Weights};
use vitrine_store::generation::{self, BuildOptions};
use vitrine_store::store::Store;

use common::SyntheticCatalog;

/// A query vector, and the category it is filtered to (if any).
type Query = (Vec<f32>, Option<usize>);

fn model(dim: usize) -> ModelId {
    ModelId { name: "bench-synthetic".into(), content_hash: "0".repeat(64), dim, variant: Variant::Fp32 }
}

/// Exact top-k ids (by ord) of `q` over the image vectors, optionally only products of `only`.
fn exact(vectors: &[(u64, Vec<f32>, usize)], q: &[f32], only: Option<usize>, k: usize) -> Vec<u64> {
    let mut scored: Vec<(f32, u64)> =
        vectors.iter().filter(|(_, _, c)| only.is_none_or(|o| o == *c)).map(|(o, v, _)| (common::fast_dot(v, q), *o)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|(_, o)| o).collect()
}

fn measure(searcher: &Searcher, queries: &[Query], truth: &[Vec<u64>], ord_of: &dyn Fn(&str) -> u64) -> Value {
    let image_only = Fusion { weights: Some(Weights { image: 1.0, text: 0.0, keyword: 0.0 }), ..Default::default() };
    let (mut ms, mut recall) = (vec![], vec![]);
    for ((q, cat), want) in queries.iter().zip(truth) {
        let filters = match cat {
            Some(c) => Filters { category: vec![common::CATEGORIES[*c].to_string()], ..Default::default() },
            None => Filters::default(),
        };
        let sq = SearchQuery {
            image_vector: Some(q.clone()),
            k: 10,
            filters,
            fusion: image_only,
            channels: true,
            ..Default::default()
        };
        let t = Instant::now();
        let r = searcher.search(&sq).expect("search");
        ms.push(common::ms_since(t));
        let got: Vec<u64> = r.channels.expect("channels").image.iter().take(10).map(|h| ord_of(&h.id)).collect();
        let hit = want.iter().filter(|o| got.contains(o)).count();
        recall.push(hit as f64 / want.len().max(1) as f64);
    }
    ms.sort_by(f64::total_cmp);
    json!({"queries": queries.len(), "p50_ms": common::round3(common::percentile(&ms, 50.0)),
           "p99_ms": common::round3(common::percentile(&ms, 99.0)),
           "recall_at_10": common::round3(recall.iter().sum::<f64>() / recall.len().max(1) as f64)})
}

fn main() {
    let machine = common::machine();
    let n = common::env_usize("N", 100_000, 2_000);
    let dim = common::env_usize("DIM", 512, 64);
    let n_queries = common::env_usize("QUERIES", 200, 50);
    let writers = common::env_usize("WRITERS", 2, 2).max(1);
    let fresh = common::env_str("FRESH").is_some_and(|v| v == "1");
    let m = model(dim);

    // The catalog once, in memory: the ground truth needs every image vector and its category.
    let mut catalog = SyntheticCatalog::new(n, dim);
    let writes: Vec<_> = (0..n).map(|i| catalog.product(i, i as u64 + 1, i as u64 + 1)).collect();
    let category = |w: &vitrine_core::catalog::ProductWrite| {
        common::CATEGORIES.iter().position(|c| Some(*c) == w.stored.product.category.as_deref()).expect("a bench category")
    };
    let vectors: Vec<(u64, Vec<f32>, usize)> =
        writes.iter().map(|w| (w.stored.ord, w.image_vectors[0].clone(), category(w))).collect();
    let mut rng = common::rng(99);
    let queries: Vec<Query> = (0..n_queries)
        .map(|i| (catalog.query(&mut rng), (i % 2 == 1).then(|| rng.random_range(0..common::CATEGORIES.len()))))
        .collect();
    let truth: Vec<Vec<u64>> = queries.iter().map(|(q, c)| exact(&vectors, q, *c, 10)).collect();
    let ord_of = |id: &str| id.trim_start_matches('p').parse::<u64>().expect("a bench id") + 1;
    let split = |v: &[Query], filtered: bool| -> (Vec<Query>, Vec<Vec<u64>>) {
        v.iter().zip(&truth).filter(|((_, c), _)| c.is_some() == filtered).map(|(q, t)| (q.clone(), t.clone())).unzip()
    };
    let (plain_q, plain_t) = split(&queries, false);
    let (filt_q, filt_t) = split(&queries, true);

    // Embedded.
    let dir = common::root().join(format!("target/bench-tmp/backends-{n}-{dim}"));
    let mut embedded = json!({});
    if fresh || !dir.join("READY").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        vitrine_migrations::open(&dir).expect("data dir");
        let store = Store::open(&dir.join("store")).expect("store");
        store.set_model(&m).expect("model");
        let t = Instant::now();
        for w in &writes {
            store
                .put(vitrine_core::catalog::ProductWrite {
                    stored: w.stored.clone(),
                    image_vectors: w.image_vectors.clone(),
                    text_vector: w.text_vector.clone(),
                })
                .expect("put");
        }
        store.flush().expect("flush");
        let put_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        generation::build_next(&dir, &store, "store", &m, &BuildOptions { full: true, ..Default::default() }).expect("build");
        let build_s = t.elapsed().as_secs_f64();
        embedded["ingest"] = json!({"put_s": common::round3(put_s), "build_s": common::round3(build_s),
            "products_per_s": common::round3(n as f64 / (put_s + build_s))});
        std::fs::write(dir.join("READY"), embedded["ingest"].to_string()).expect("ready marker");
    } else {
        embedded["ingest"] = serde_json::from_slice(&std::fs::read(dir.join("READY")).expect("ready")).expect("json");
        embedded["ingest"]["cached"] = json!(true);
    }
    let searcher = Searcher::open(&dir, 128).expect("open embedded");
    embedded["unfiltered"] = measure(&searcher, &plain_q, &plain_t, &ord_of);
    embedded["filtered"] = measure(&searcher, &filt_q, &filt_t, &ord_of);
    drop(searcher);
    eprintln!("embedded: {embedded}");

    // Engine.
    let base = common::env_str("VITRINE_BENCH_ENGINE").or_else(|| common::env_str("VITRINE_TEST_ENGINE"));
    let engine_result = match base {
        None => json!({"skipped": "no VITRINE_BENCH_ENGINE or VITRINE_TEST_ENGINE (scripts/seekdb.sh start)"}),
        Some(base) => {
            let url: vitrine_engine::EngineUrl =
                format!("{}/bench_backends_{n}_{dim}", base.trim_end_matches('/')).parse().expect("engine URL");
            let engine = vitrine_engine::Engine::connect(&url).expect("connect");
            let mut out = json!({});
            let have = engine.product_count().expect("count");
            if fresh || have != n as u64 {
                if have > 0 {
                    for id in engine.ids().expect("ids") {
                        engine.delete(&id).expect("delete");
                    }
                }
                engine.set_model(&m).expect("model");
                let t = Instant::now();
                let next = std::sync::atomic::AtomicUsize::new(0);
                std::thread::scope(|s| {
                    for _ in 0..writers {
                        s.spawn(|| loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(w) = writes.get(i) else { return };
                            engine.put(w).expect("engine put");
                            if i > 0 && i.is_multiple_of(10_000) {
                                eprintln!("engine: {i} products in {:.0} s", t.elapsed().as_secs_f64());
                            }
                        });
                    }
                });
                let put_s = t.elapsed().as_secs_f64();
                out["ingest"] = json!({"put_s": common::round3(put_s), "writers": writers,
                    "products_per_s": common::round3(n as f64 / put_s)});
            } else {
                out["ingest"] = json!({"cached": true, "note": "the database already held all N products"});
            }
            let data = common::root().join(format!("target/bench-tmp/backends-engine-node-{n}"));
            let searcher = Searcher::open_engine(&data, engine).expect("open engine");
            out["unfiltered"] = measure(&searcher, &plain_q, &plain_t, &ord_of);
            out["filtered"] = measure(&searcher, &filt_q, &filt_t, &ord_of);
            out
        }
    };
    eprintln!("engine: {engine_result}");
    common::emit(
        "backends",
        machine,
        json!({"n": n, "dim": dim, "categories": common::CATEGORIES.len(),
        "embedded": embedded, "engine": engine_result}),
    );
}
