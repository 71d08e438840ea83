//! Catalog ingest through `vitrine_indexer::Indexer::ingest` into a fresh data directory.
//!
//! Catalog: the first `N` products of target/bench-data/ingest/catalog.jsonl (scripts/make_bench_data.py
//! --ingest N), each with its own JPEG. Reports products/s of a first run, of a second run on the same
//! catalog (everything unchanged), bytes on disk per product, resident memory per product of a
//! `Searcher` opened on the directory (measured in a fresh child process, so the ingest's freed heap
//! does not hide it), and the model-only throughput for the same products measured in this process
//! (image tower on the same batches + text tower on the same texts). Targets: ≥ 300 products/s with
//! the tiny model; with the full-size model ingest ≥ 90% of model-only.
//!
//! Env: `VITRINE_BENCH_MODEL` (models/tiny-clip), `N` (10000), `VITRINE_BENCH_TMP` (target/bench-tmp).
//! Run: `cargo bench --bench ingest`;
//!      `VITRINE_BENCH_MODEL=models/clip-vit-b32-random N=256 cargo bench --bench ingest`

mod common;

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;
use vitrine_indexer::{IndexOptions, Indexer, NoProgress};
use vitrine_model::preprocess::decode;
use vitrine_model::{Embedder, ImageLimits};

const RSS_CHILD: &str = "VITRINE_BENCH_RSS_CHILD";

/// Child mode: print VmRSS before and after opening a Searcher on the directory.
fn rss_child(dir: &str) {
    let before = common::vm_rss_kib();
    let s = vitrine_searcher::Searcher::open(std::path::Path::new(dir), 128).expect("open searcher");
    let after = common::vm_rss_kib();
    let products = s.snapshot().map(|g| g.manifest.products);
    println!("{}", json!({"rss_before_kib": before, "rss_after_kib": after, "products": products}));
}

fn searcher_rss(dir: &std::path::Path) -> serde_json::Value {
    let exe = std::env::current_exe().expect("current exe");
    match std::process::Command::new(exe).env(RSS_CHILD, dir).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| json!({"error": "no output"})),
        Ok(o) => json!({"error": format!("child exited with {}: {}", o.status, String::from_utf8_lossy(&o.stderr))}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Seconds the towers alone need for `records`: images in batches of `batch` (tensors decoded
/// beforehand, a pool of at most 256 reused cyclically) and texts in groups of 64, as ingest calls them.
fn model_only(model: &dyn Embedder, records: &[vitrine_indexer::Record], batch: usize) -> (f64, f64) {
    let pre = model.preprocessor();
    let len = pre.tensor_len();
    let limits = ImageLimits::default();
    let pool_n = records.len().min(256);
    let mut pool = vec![0f32; pool_n * len];
    records[..pool_n].par_iter().zip(pool.par_chunks_mut(len)).for_each(|(r, out)| {
        let bytes = std::fs::read(&r.product.images[0]).expect("read image");
        pre.run_into(&decode(&bytes, "bench", &limits).expect("decode"), out);
    });
    let batch = batch.min(pool_n).max(1);
    let mut buf = Vec::with_capacity(batch * len);
    let t = Instant::now();
    let mut done = 0;
    while done < records.len() {
        let b = batch.min(records.len() - done);
        buf.clear();
        for i in done..done + b {
            let j = i % pool_n;
            buf.extend_from_slice(&pool[j * len..(j + 1) * len]);
        }
        std::hint::black_box(model.embed_pixels(&buf, b).expect("embed"));
        done += b;
    }
    let images_s = t.elapsed().as_secs_f64();
    let texts: Vec<String> = records.iter().map(|r| r.product.embedding_text()).collect();
    let t = Instant::now();
    for g in texts.chunks(64) {
        let refs: Vec<&str> = g.iter().map(String::as_str).collect();
        std::hint::black_box(model.embed_texts(&refs).expect("embed texts"));
    }
    (images_s, t.elapsed().as_secs_f64())
}

fn main() {
    if let Ok(dir) = std::env::var(RSS_CHILD) {
        rss_child(&dir);
        return;
    }
    let machine = common::machine();
    let n = common::env_usize("N", 10_000, 500);
    let catalog = common::bench_data().join("ingest").join("catalog.jsonl");
    common::require(&catalog, "run scripts/make_bench_data.py --ingest N");
    let t = Instant::now();
    let (mut records, errors) = vitrine_indexer::catalog::parse_file(&catalog).expect("read catalog");
    let parse_ms = common::ms_since(t);
    assert!(errors.is_empty(), "catalog errors: {errors:?}");
    if records.len() < n {
        eprintln!(
            "{} has {} products, {n} needed: run scripts/make_bench_data.py --ingest {n}",
            catalog.display(),
            records.len()
        );
        std::process::exit(2);
    }
    records.truncate(n);
    // Catalog references are relative to the catalog; the model-only pass reads them directly.
    let opts = IndexOptions::for_catalog(&catalog);
    for r in &mut records {
        r.product.images =
            r.product.images.iter().map(|i| opts.local_files.resolve(i).expect("image path").to_string()).collect();
    }
    let model_dir = common::model_path("models/tiny-clip");
    let model: Arc<dyn Embedder> = Arc::new(common::load_model(&model_dir));
    let image_bytes: u64 = records.iter().map(|r| std::fs::metadata(&r.product.images[0]).map(|m| m.len()).unwrap_or(0)).sum();

    let (img_s, txt_s) = model_only(model.as_ref(), &records, opts.batch);
    let model_only_pps = n as f64 / (img_s + txt_s);

    let tmp_root = common::env_path("VITRINE_BENCH_TMP", "target/bench-tmp");
    std::fs::create_dir_all(&tmp_root).expect("tmp root");
    let tmp = tempfile::tempdir_in(&tmp_root).expect("temp dir");
    let data = tmp.path().join("data");

    let t = Instant::now();
    let ix = Indexer::open(&data, model.clone(), opts.clone()).expect("open indexer");
    let open1_ms = common::ms_since(t);
    let t = Instant::now();
    let r1 = ix.ingest(records.clone(), vec![], false, &NoProgress).expect("ingest");
    let run1_s = t.elapsed().as_secs_f64();
    drop(ix);
    assert_eq!(r1.summary.ingested, n as u64, "first run: {:?} {:?}", r1.summary, r1.failures.first());
    let du1 = common::du(&data);

    let t = Instant::now();
    let ix = Indexer::open(&data, model.clone(), opts.clone()).expect("reopen indexer");
    let open2_ms = common::ms_since(t);
    let t = Instant::now();
    let r2 = ix.ingest(records.clone(), vec![], false, &NoProgress).expect("second ingest");
    let run2_s = t.elapsed().as_secs_f64();
    drop(ix);
    assert_eq!(r2.summary.unchanged, n as u64, "second run: {:?}", r2.summary);
    let du2 = common::du(&data);
    let store = common::du(&data.join("store"));
    let gens = common::du(&data.join("generations"));
    let rss = searcher_rss(&data);
    let rss_delta = match (rss["rss_after_kib"].as_u64(), rss["rss_before_kib"].as_u64()) {
        (Some(a), Some(b)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let pps1 = n as f64 / run1_s;
    let full_size = model.dim() >= 256;
    common::emit(
        "ingest",
        machine,
        json!({
            "model": model_dir.display().to_string(),
            "model_dim": model.dim(),
            "device": model.device().to_string(),
            "products": n,
            "image_bytes_per_product": image_bytes / n as u64,
            "catalog_parse_ms": common::round3(parse_ms),
            "index_options": {"batch": opts.batch, "chunk": opts.chunk, "checkpoint_s": opts.checkpoint.as_secs()},
            "first_run": {
                "open_ms": common::round3(open1_ms),
                "seconds": run1_s,
                "products_per_s": pps1,
                "generation": r1.generation,
            },
            "second_run_unchanged": {
                "open_ms": common::round3(open2_ms),
                "seconds": run2_s,
                "products_per_s": n as f64 / run2_s,
            },
            "model_only": {
                "image_seconds": img_s,
                "text_seconds": txt_s,
                "products_per_s": model_only_pps,
                "images_per_s": n as f64 / img_s,
            },
            "ingest_over_model_only": pps1 / model_only_pps,
            "disk": {
                "after_first_run_bytes": du1.0,
                "after_second_run_bytes": du2.0,
                "allocated_bytes": du2.1,
                "store_bytes": store.0,
                "generations_bytes": gens.0,
                "bytes_per_product": du2.0 as f64 / n as f64,
            },
            "searcher_rss": rss,
            "searcher_rss_bytes_per_product": rss_delta.map(|d| d as f64 * 1024.0 / n as f64),
            "targets": {"products_per_s": 300, "ingest_over_model_only": 0.9},
            "meets_target": if full_size { pps1 / model_only_pps >= 0.9 } else { pps1 >= 300.0 },
        }),
    );
}
