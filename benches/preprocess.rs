//! Decode + orient + resize + crop + normalize of one ~1000×1000 JPEG, on one thread.
//!
//! Input: `target/bench-data/photo_1000.jpg` (scripts/make_bench_data.py). The preprocessing config
//! is the benchmark model's (`VITRINE_BENCH_MODEL`, default models/clip-vit-b32-random), else the
//! CLIP default. Criterion reports each stage; the JSON line has criterion's medians plus p50/p99
//! of `VITRINE_BENCH_ITERS` (default 300) timed runs of the whole step. Target: ≤ 5 ms per image.
//!
//! Run: `cargo bench --bench preprocess`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use serde_json::json;
use vitrine_model::model::PreprocessorConfig;
use vitrine_model::preprocess::{decode, decode_into};
use vitrine_model::{ImageLimits, Preprocessor};

const TARGET_MS: f64 = 5.0;

fn criterion_median_ms(dir: &std::path::Path, name: &str) -> Option<f64> {
    let p = dir.join("preprocess").join(name).join("new").join("estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? / 1e6)
}

fn main() {
    let machine = common::machine();
    let img_path = common::bench_data().join("photo_1000.jpg");
    common::require(&img_path, "run scripts/make_bench_data.py");
    let bytes = std::fs::read(&img_path).expect("read the bench photo");
    let model = common::env_path("VITRINE_BENCH_MODEL", "models/clip-vit-b32-random");
    let cfg_path = model.join("preprocessor_config.json");
    let cfg = if cfg_path.exists() {
        PreprocessorConfig::load(&cfg_path).expect("preprocessor config")
    } else {
        PreprocessorConfig::load_default()
    };
    let pre = Preprocessor::new(cfg);
    let limits = ImageLimits::default();
    let crit_dir = common::root().join("target").join("criterion");
    let iters = common::env_usize("VITRINE_BENCH_ITERS", 300, 50);
    let (measure, warm) = if common::quick() { (2, 1) } else { (10, 3) };

    // Everything runs on a one-thread rayon pool, so no stage can spread over other cores.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("rayon pool");
    let (samples, dims) = pool.install(|| {
        let img = decode(&bytes, "bench", &limits).expect("decode");
        let dims = img.dimensions();
        let mut out = vec![0f32; pre.tensor_len()];
        let mut c = Criterion::default()
            .output_directory(&crit_dir)
            .measurement_time(Duration::from_secs(measure))
            .warm_up_time(Duration::from_secs(warm))
            .configure_from_args();
        let mut g = c.benchmark_group("preprocess");
        // decode_into with a reused buffer, as Preprocessor::load_into (the pipeline's path) does.
        let mut buf = Vec::new();
        g.bench_function("decode", |b| b.iter(|| decode_into(black_box(&bytes), "bench", &limits, &mut buf).expect("decode")));
        g.bench_function("resize_crop_normalize", |b| b.iter(|| pre.run_into(black_box(&img), &mut out)));
        g.bench_function("total", |b| b.iter(|| pre.load_into(black_box(&bytes), "bench", &limits, &mut out).expect("decode")));
        g.finish();
        c.final_summary();
        let samples: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                pre.load_into(black_box(&bytes), "bench", &limits, &mut out).expect("decode");
                black_box(&out);
                common::ms_since(t)
            })
            .collect();
        (samples, dims)
    });
    let total = common::stats_ms(&samples);
    let p50 = total["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let crit_total = criterion_median_ms(&crit_dir, "total");
    common::emit(
        "preprocess",
        machine,
        json!({
            "input": img_path.display().to_string(),
            "input_bytes": bytes.len(),
            "input_size": [dims.0, dims.1],
            "output_size": pre.output_size(),
            "threads": 1,
            "criterion_median_ms": {
                "decode_orient": criterion_median_ms(&crit_dir, "decode"),
                "resize_crop_normalize": criterion_median_ms(&crit_dir, "resize_crop_normalize"),
                "total": crit_total,
            },
            "total": total,
            "target_ms": TARGET_MS,
            "meets_target": crit_total.unwrap_or(p50) <= TARGET_MS,
        }),
    );
}
