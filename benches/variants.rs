//! A model variant against fp32 on the bench catalog: embedding cosine, top-10 agreement of
//! exact searches, and end-to-end embedding throughput of each.
//!
//! Loads `VITRINE_BENCH_MODEL` twice, as fp32 and as `VITRINE_BENCH_VARIANT` (default
//! `quantized`; make it with `scripts/quantize_model.py DIR`), embeds the first `N` images of the
//! bench catalog (target/bench-data/ingest, made by scripts/make_bench_data.py) with each, and
//! compares:
//! - image cosine, variant vs fp32, per image (min, mean);
//! - top-10 agreement: for each photo query (a catalog image, itself left out) and each text query
//!   (the first `QUERIES` catalog titles), |top10(fp32) ∩ top10(variant)| / 10 by exact search
//!   over the N images, averaged (target ≥ 0.9);
//! - end-to-end images/s from the JPEG files (`embed_images`, batches of `BATCH`), one run each.
//!
//! Images are embedded in the same batches by both, and text queries one per call, so dynamic
//! quantization (activations scaled over each call's batch) sees what ingest and search give it.
//!
//! Env: `VITRINE_BENCH_MODEL` (models/clip-vit-b32-random), `VITRINE_BENCH_VARIANT` (quantized),
//! `N` (1000 images; quick 64), `QUERIES` (100 texts; quick 16), `BATCH` (32).
//! Run: `cargo bench --bench variants`

mod common;

use std::collections::HashSet;
use std::time::Instant;

use serde_json::json;
use vitrine_model::model::{Variant, VariantChoice};
use vitrine_model::pipeline::{embed_images, ImageSource};
use vitrine_model::{ClipOnnx, Embedder, ImageLimits, RuntimeOptions};

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Indices of the `k` images nearest `q` (exact), leaving out `skip`.
fn top_k(images: &[Vec<f32>], q: &[f32], k: usize, skip: Option<usize>) -> HashSet<usize> {
    let mut scored: Vec<(f32, usize)> =
        images.iter().enumerate().filter(|(i, _)| Some(*i) != skip).map(|(i, v)| (dot(v, q), i)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

fn agreement(a: &HashSet<usize>, b: &HashSet<usize>, k: usize) -> f64 {
    a.intersection(b).count() as f64 / k as f64
}

fn embed_all(model: &ClipOnnx, files: &[std::path::PathBuf], batch: usize) -> (Vec<Vec<f32>>, f64) {
    let inputs: Vec<(usize, ImageSource)> = files.iter().cloned().map(ImageSource::Path).enumerate().collect();
    let mut out = vec![vec![]; files.len()];
    let t = Instant::now();
    embed_images(model, inputs, batch, &ImageLimits::default(), |i, r| out[i] = r.expect("embed"));
    (out, files.len() as f64 / t.elapsed().as_secs_f64())
}

fn main() {
    let machine = common::machine();
    let n = common::env_usize("N", 1000, 64);
    let queries = common::env_usize("QUERIES", 100, 16);
    let batch = common::env_usize("BATCH", 32, 32);
    let k = 10;
    let model_dir = common::model_path("models/clip-vit-b32-random");
    let variant = match common::env_str("VITRINE_BENCH_VARIANT").map(|_| common::variant_choice("VITRINE_BENCH_VARIANT")) {
        None | Some(VariantChoice::Auto) => Variant::Quantized,
        Some(VariantChoice::Exact(v)) => v,
    };
    let catalog_dir = common::bench_data().join("ingest");
    common::require(&catalog_dir.join("catalog.jsonl"), "scripts/make_bench_data.py --ingest N makes the bench catalog");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(catalog_dir.join("catalog.jsonl"))
        .expect("catalog")
        .lines()
        .take(n.max(queries))
        .map(|l| serde_json::from_str(l).expect("catalog line"))
        .collect();
    let files: Vec<_> = rows.iter().take(n).map(|r| catalog_dir.join(r["images"][0].as_str().expect("an image"))).collect();
    let titles: Vec<String> = rows.iter().take(queries).map(|r| r["title"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(files.len(), n, "the bench catalog has fewer than N products");

    let load = |v: Variant| {
        let opts = RuntimeOptions { variant: VariantChoice::Exact(v), ..common::runtime_options() };
        ClipOnnx::open(&model_dir, &opts).unwrap_or_else(|e| panic!("{e}"))
    };
    let (base, other) = (load(Variant::Fp32), load(variant));
    let (base_images, base_ips) = embed_all(&base, &files, batch);
    let (other_images, other_ips) = embed_all(&other, &files, batch);

    let cosines: Vec<f64> = base_images.iter().zip(&other_images).map(|(a, b)| f64::from(dot(a, b))).collect();
    let photo: Vec<f64> = (0..n)
        .map(|i| {
            agreement(&top_k(&base_images, &base_images[i], k, Some(i)), &top_k(&other_images, &other_images[i], k, Some(i)), k)
        })
        .collect();
    let text: Vec<f64> = titles
        .iter()
        .map(|t| {
            let qa = base.embed_texts(&[t.as_str()]).expect("text").remove(0);
            let qb = other.embed_texts(&[t.as_str()]).expect("text").remove(0);
            agreement(&top_k(&base_images, &qa, k, None), &top_k(&other_images, &qb, k, None), k)
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (photo_agree, text_agree) = (mean(&photo), mean(&text));
    common::emit(
        "variants",
        machine,
        json!({
            "model": model_dir.display().to_string(),
            "variant": variant,
            "device": other.device().to_string(),
            "images": n,
            "text_queries": titles.len(),
            "batch": batch,
            "image_cosine_min": min(&cosines),
            "image_cosine_mean": mean(&cosines),
            "top10_agreement_photo": photo_agree,
            "top10_agreement_text": text_agree,
            "e2e_images_per_s_fp32": base_ips,
            "e2e_images_per_s_variant": other_ips,
            "speedup_variant_vs_fp32": other_ips / base_ips,
            "targets": {"image_cosine_min": 0.99, "top10_agreement": 0.9},
            "meets_targets": min(&cosines) >= 0.99 && photo_agree.min(text_agree) >= 0.9,
        }),
    );
}
