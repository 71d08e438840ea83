//! One text query through the text tower (tokenize + ONNX + normalize), the full-size model.
//!
//! `QUERIES` (200) varied product-like strings, one at a time after `WARMUP` (20) queries; p50/p99.
//! Tokenization alone is timed separately. Target: p50 ≤ 15 ms on 2 cores.
//!
//! Env: `VITRINE_BENCH_MODEL` (models/clip-vit-b32-random), `QUERIES`, `WARMUP`.
//! Run: `cargo bench --bench text_query`

mod common;

use std::time::Instant;

use serde_json::json;
use vitrine_model::Embedder;

const TARGET_P50_MS: f64 = 15.0;

fn main() {
    let machine = common::machine();
    let n = common::env_usize("QUERIES", 200, 50);
    let warmup = common::env_usize("WARMUP", 20, 5);
    let model_dir = common::model_path("models/clip-vit-b32-random");
    let model = common::load_model(&model_dir);
    let queries = common::product_queries(n, 7);
    for q in common::product_queries(warmup, 99) {
        model.embed_texts(&[q.as_str()]).expect("warm-up");
    }
    let mut tokenize = vec![];
    let mut tokens = vec![];
    for q in &queries {
        let t = Instant::now();
        let ids = model.token_ids(q).expect("tokenize");
        tokenize.push(common::ms_since(t));
        tokens.push(ids.len() as f64);
    }
    let mut total = vec![];
    for q in &queries {
        let t = Instant::now();
        let v = model.embed_texts(&[q.as_str()]).expect("embed");
        total.push(common::ms_since(t));
        std::hint::black_box(v);
    }
    let stats = common::stats_ms(&total);
    let p50 = stats["p50_ms"].as_f64().unwrap_or(f64::NAN);
    common::emit(
        "text_query",
        machine,
        json!({
            "model": model_dir.display().to_string(),
            "model_dim": model.dim(),
            "device": model.device().to_string(),
            "queries": n,
            "warmup": warmup,
            "mean_tokens": tokens.iter().sum::<f64>() / tokens.len().max(1) as f64,
            "example_queries": queries.iter().take(5).collect::<Vec<_>>(),
            "tokenize": common::stats_ms(&tokenize),
            "embed_text": stats,
            "target_p50_ms": TARGET_P50_MS,
            "meets_target": p50 <= TARGET_P50_MS,
        }),
    );
}
