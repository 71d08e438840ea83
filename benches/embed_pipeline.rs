//! Image embedding throughput: model-only vs end to end from JPEG files, and vs Python.
//!
//! (a) model-only: `embed_pixels` on pre-decoded tensors, batches of 32;
//! (b) end to end: `vitrine_model::pipeline::embed_images` from the JPEG files, batches of 32;
//! alternated for `VITRINE_BENCH_ROUNDS` rounds (median reported). Then, in the same invocation,
//! `scripts/bench_python_pipeline.py` on the same files and model (transformers CLIPImageProcessor +
//! onnxruntime), and the speedup over it. Targets: e2e ≥ 95% of model-only; ≥ 1.4× Python.
//!
//! The Rust side loads `VITRINE_BENCH_VARIANT` (default fp32; `quantized` for the int8 towers);
//! the Python side always runs the fp32 `vision_model.onnx`, the baseline.
//!
//! Env: `VITRINE_BENCH_MODEL` (models/clip-vit-b32-random), `N` (256 images of
//! target/bench-data/photos), `BATCH` (32), `VITRINE_BENCH_ROUNDS` (2), `VITRINE_BENCH_PYTHON`
//! (.venv-fixtures/bin/python; set it to `none` to skip the Python side).
//!
//! Run: `cargo bench --bench embed_pipeline`

mod common;

use std::time::Instant;

use rayon::prelude::*;
use serde_json::{json, Value};
use vitrine_model::pipeline::{embed_images, ImageSource};
use vitrine_model::preprocess::decode;
use vitrine_model::{Embedder, ImageLimits};

fn python_baseline(model: &std::path::Path, images: &std::path::Path, n: usize, batch: usize, rounds: usize) -> Value {
    let py = common::env_str("VITRINE_BENCH_PYTHON").unwrap_or_else(|| ".venv-fixtures/bin/python".into());
    if py == "none" {
        return json!({"skipped": "VITRINE_BENCH_PYTHON=none"});
    }
    let py = if py.contains('/') { common::env_path("VITRINE_BENCH_PYTHON", &py) } else { py.into() };
    let out = std::process::Command::new(&py)
        .arg(common::root().join("scripts/bench_python_pipeline.py"))
        .args(["--model", &model.display().to_string(), "--images", &images.display().to_string()])
        .args(["--n", &n.to_string(), "--batch", &batch.to_string(), "--rounds", &rounds.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
                .unwrap_or_else(|| json!({"error": "no JSON from the Python bench"}))
        }
        Ok(o) => json!({"error": format!("{} exited with {}", py.display(), o.status)}),
        Err(e) => json!({"error": format!("cannot run {}: {e}", py.display())}),
    }
}

fn main() {
    let machine = common::machine();
    let n = common::env_usize("N", 256, 32);
    let batch = common::env_usize("BATCH", 32, 32);
    let rounds = common::env_usize("VITRINE_BENCH_ROUNDS", 2, 1).max(1);
    let photos = common::bench_data().join("photos");
    let files: Vec<_> = common::jpegs(&photos).into_iter().take(n).collect();
    if files.len() < n {
        eprintln!("{} has {} photos, {n} needed: run scripts/make_bench_data.py --photos {n}", photos.display(), files.len());
        std::process::exit(2);
    }
    let model_dir = common::model_path("models/clip-vit-b32-random");
    let t = Instant::now();
    let model = common::load_model(&model_dir);
    let load_ms = common::ms_since(t);
    let pre = model.preprocessor();
    let len = pre.tensor_len();
    let limits = ImageLimits::default();

    // Pre-decoded tensors for the model-only side (also a measure of decode throughput on all cores).
    let mut pixels = vec![0f32; n * len];
    let t = Instant::now();
    files.par_iter().zip(pixels.par_chunks_mut(len)).for_each(|(f, out)| {
        let bytes = std::fs::read(f).expect("read photo");
        pre.run_into(&decode(&bytes, "bench", &limits).expect("decode"), out);
    });
    let decode_ips = n as f64 / t.elapsed().as_secs_f64();
    model.embed_pixels(&pixels[..batch.min(n) * len], batch.min(n)).expect("warm-up");

    let (mut model_only, mut e2e, mut batch_ms) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        for chunk in pixels.chunks(batch * len) {
            let tb = Instant::now();
            let v = model.embed_pixels(chunk, chunk.len() / len).expect("embed");
            batch_ms.push(common::ms_since(tb));
            std::hint::black_box(v);
        }
        model_only.push(n as f64 / t.elapsed().as_secs_f64());

        let inputs: Vec<(usize, ImageSource)> = files.iter().cloned().map(ImageSource::Path).enumerate().collect();
        let mut ok = 0usize;
        let t = Instant::now();
        embed_images(&model, inputs, batch, &limits, |_, r| {
            r.expect("embed");
            ok += 1;
        });
        e2e.push(n as f64 / t.elapsed().as_secs_f64());
        assert_eq!(ok, n);
    }
    let (mo, ee) = (common::median(&model_only), common::median(&e2e));

    let py = python_baseline(&model_dir, &photos, n, batch, rounds);
    let py_e2e = py["e2e_best_images_per_s"].as_f64();
    let py_mo = py["model_only_images_per_s"].as_f64();
    common::emit(
        "embed_pipeline",
        machine,
        json!({
            "model": model_dir.display().to_string(),
            "model_dim": model.dim(),
            "variant": model.model_id().variant,
            "device": model.device().to_string(),
            "model_load_ms": common::round3(load_ms),
            "images": n,
            "batch": batch,
            "rounds": rounds,
            "decode_preprocess_all_cores_images_per_s": decode_ips,
            "model_only_images_per_s": mo,
            "model_only_rounds": model_only,
            "model_only_batch": common::stats_ms(&batch_ms),
            "e2e_images_per_s": ee,
            "e2e_rounds": e2e,
            "e2e_over_model_only": ee / mo,
            "target_e2e_over_model_only": 0.95,
            "python": py,
            "speedup_e2e_vs_python": py_e2e.map(|p| ee / p),
            "python_model_only_over_rust_model_only": py_mo.map(|p| p / mo),
            "target_speedup_vs_python": 1.4,
            "meets_targets": ee / mo >= 0.95 && py_e2e.is_some_and(|p| ee / p >= 1.4),
        }),
    );
}
