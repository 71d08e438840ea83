//! `vitrine model bench`: how fast this model runs on this machine, as one JSON object. What
//! `scripts/gpu-check.sh` measures a GPU with, and what an operator runs to check a set-up.
//!
//! - model-only images/s: `embed_pixels` on tensors decoded beforehand, in batches of `--batch`;
//! - end-to-end images/s: `embed_images` from the files (read, decode, preprocess on the rayon
//!   pool, overlapped with the model);
//! - text query latency: one text per call, as a search embeds it (p50, p95);
//! - photo query latency: one photo's bytes decoded, preprocessed and embedded per call.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::{json, Value};
use vitrine_model::pipeline::{embed_images, ImageSource};
use vitrine_model::{Embedder, ImageLimits};

pub struct BenchOptions {
    pub images: PathBuf,
    pub n: usize,
    pub batch: usize,
    pub rounds: usize,
    pub queries: usize,
}

/// The image files (jpg, jpeg, png, webp) of `dir`, sorted, at most `n`, repeated to reach `n`.
fn image_files(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["jpg", "jpeg", "png", "webp"].contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .jpg, .png or .webp images", dir.display());
    }
    Ok(files.iter().cycle().take(n).cloned().collect())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn latency(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    json!({"n": samples.len(), "p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0)})
}

pub fn run(model: &dyn Embedder, o: &BenchOptions) -> Result<Value> {
    if o.n == 0 || o.batch == 0 || o.rounds == 0 || o.queries == 0 {
        bail!("--n, --batch, --rounds and --queries must be at least 1");
    }
    let files = image_files(&o.images, o.n)?;
    let limits = ImageLimits::default();
    let pre = model.preprocessor();
    let len = pre.tensor_len();
    let mut pixels = vec![0f32; o.n * len];
    let t = Instant::now();
    files.par_iter().zip(pixels.par_chunks_mut(len)).try_for_each(|(f, out)| {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        pre.load_into(&bytes, &f.display().to_string(), &limits, out).map_err(anyhow::Error::new)
    })?;
    let decode_ips = o.n as f64 / t.elapsed().as_secs_f64();
    // Warm-up at the measured batch size (CUDA picks its kernels per shape on the first call).
    let warm = o.batch.min(o.n);
    model.embed_pixels(&pixels[..warm * len], warm)?;

    let (mut model_only, mut e2e) = (vec![], vec![]);
    for _ in 0..o.rounds {
        let t = Instant::now();
        for chunk in pixels.chunks(o.batch * len) {
            std::hint::black_box(model.embed_pixels(chunk, chunk.len() / len)?);
        }
        model_only.push(o.n as f64 / t.elapsed().as_secs_f64());
        let inputs: Vec<(usize, ImageSource)> = files.iter().cloned().map(ImageSource::Path).enumerate().collect();
        let mut failed = None;
        let t = Instant::now();
        embed_images(model, inputs, o.batch, &limits, |i, r| {
            if let Err(e) = r {
                failed.get_or_insert(format!("{}: {e}", files[i].display()));
            }
        });
        e2e.push(o.n as f64 / t.elapsed().as_secs_f64());
        if let Some(e) = failed {
            bail!(e);
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(0f64, f64::max);

    let texts = ["red leather handbag", "a blue denim jacket", "minimal white sneakers", "wooden coffee table"];
    model.embed_texts(&texts[..1])?;
    let text: Vec<f64> = (0..o.queries)
        .map(|i| {
            let t = Instant::now();
            model.embed_texts(&[texts[i % texts.len()]]).map(|_| ms(t))
        })
        .collect::<vitrine_core::Result<_>>()?;
    let photo_bytes: Vec<Vec<u8>> = files.iter().take(8).map(std::fs::read).collect::<std::io::Result<_>>()?;
    let photo: Vec<f64> = (0..o.queries)
        .map(|i| {
            let bytes = &photo_bytes[i % photo_bytes.len()];
            let t = Instant::now();
            let px = pre.load(bytes, "query", &limits)?;
            model.embed_pixels(&px, 1).map(|_| ms(t))
        })
        .collect::<vitrine_core::Result<_>>()?;

    let id = model.model_id();
    Ok(json!({
        "model": id.name,
        "variant": id.variant,
        "dim": id.dim,
        "device": model.device().to_string(),
        "images": o.n,
        "batch": o.batch,
        "rounds": o.rounds,
        "decode_preprocess_images_per_s": decode_ips,
        "model_only_images_per_s": best(&model_only),
        "e2e_images_per_s": best(&e2e),
        "model_only_rounds": model_only,
        "e2e_rounds": e2e,
        "text_query": latency(text),
        "photo_query": latency(photo),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }))
}
