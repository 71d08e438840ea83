//! The real service over HTTP: text and image query latency, search work, and 32 concurrent clients.
//!
//! Builds (once; cached under target/bench-data/http-v2-{N}-{model hash}/; `common::build_data`,
//! shared with the soak bench) a data directory of `N` (100,000) synthetic products written
//! straight into a `Store` (random titles, brands, categories, prices, attributes; image and text
//! vectors clustered around ~N/100 unit centres of the model's dimension), then
//! `generation::build_next(full)`. No model runs for the catalog. Then starts the
//! service in-process (`vitrine_web::build_state` + `serve` on a free 127.0.0.1 port) with the
//! benchmark model and measures with blocking ureq clients:
//! - text: GET /v1/search?q=… p50/p99 over `TEXT_REQUESTS` (300) sequential requests;
//! - image: multipart POST /v1/search/image of target/bench-data/photo_1000.jpg (1 MP), p50 over 50;
//! - search work without the model: the response's `timings.search_ms` (wall time of the search;
//!   the channels run concurrently), with the median of each part (filter/vector/keyword/fuse/hydrate);
//! - `CLIENTS` (32) concurrent clients doing text queries for `DURATION_S` (20) s.
//!
//! Targets: text p50 ≤ 25 ms, p99 ≤ 60 ms; image p50 ≤ 120 ms; search work p50 ≤ 3 ms; no errors.
//! Env: `VITRINE_BENCH_MODEL` (models/clip-vit-b32-random), `N`, `TEXT_REQUESTS`, `IMAGE_REQUESTS`,
//! `CLIENTS`, `DURATION_S`. Run: `cargo bench --bench http_load`

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vitrine_model::Embedder;

const TIMING_FIELDS: [&str; 5] = ["filter_ms", "vector_ms", "keyword_ms", "fuse_ms", "hydrate_ms"];

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
}

struct Reply {
    ms: f64,
    body: Value,
}

fn finish(r: Result<ureq::Response, ureq::Error>, t: Instant) -> Result<Reply, String> {
    match r {
        Ok(resp) => {
            let text = resp.into_string().map_err(|e| format!("body: {e}"))?;
            let ms = common::ms_since(t);
            let body = serde_json::from_str(&text).map_err(|e| format!("JSON: {e}"))?;
            Ok(Reply { ms, body })
        }
        Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code}")),
        Err(e) => Err(format!("transport: {}", e.kind())),
    }
}

fn text_query(a: &ureq::Agent, base: &str, q: &str) -> Result<Reply, String> {
    let t = Instant::now();
    finish(a.get(&format!("{base}/v1/search")).query("q", q).call(), t)
}

/// A text query restricted to one category (1/20 of the catalog: the searcher's exact-scan path).
fn filtered_query(a: &ureq::Agent, base: &str, q: &str, category: &str) -> Result<Reply, String> {
    let t = Instant::now();
    finish(a.get(&format!("{base}/v1/search")).query("q", q).query("category", category).call(), t)
}

fn image_query(a: &ureq::Agent, base: &str, body: &[u8], boundary: &str) -> Result<Reply, String> {
    let t = Instant::now();
    let ct = format!("multipart/form-data; boundary={boundary}");
    finish(a.post(&format!("{base}/v1/search/image")).set("Content-Type", &ct).send_bytes(body), t)
}

/// The search work of a response (`timings.search_ms`: wall time of the search, model excluded;
/// the channels run concurrently, so it is less than the sum of the parts), and each part.
fn work_ms(body: &Value) -> (f64, Vec<f64>) {
    let parts: Vec<f64> = TIMING_FIELDS.iter().map(|f| body["timings"][f].as_f64().unwrap_or(0.0)).collect();
    (body["timings"]["search_ms"].as_f64().unwrap_or(f64::NAN), parts)
}

fn work_stats(works: &[(f64, Vec<f64>)]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("search_ms".into(), common::stats_ms(&works.iter().map(|w| w.0).collect::<Vec<_>>()));
    for (i, f) in TIMING_FIELDS.iter().enumerate() {
        let v: Vec<f64> = works.iter().map(|w| w.1[i]).collect();
        m.insert(f.to_string(), json!(common::round3(common::median(&v))));
    }
    Value::Object(m)
}

fn main() {
    let machine = common::machine();
    let n = common::env_usize("N", 100_000, 2_000);
    let text_n = common::env_usize("TEXT_REQUESTS", 300, 100);
    let image_n = common::env_usize("IMAGE_REQUESTS", 50, 10);
    let clients = common::env_usize("CLIENTS", 32, 32);
    let duration = Duration::from_secs(common::env_usize("DURATION_S", 20, 5) as u64);
    let photo = common::bench_data().join("photo_1000.jpg");
    common::require(&photo, "run scripts/make_bench_data.py");

    let model_dir = common::model_path("models/clip-vit-b32-random");
    let embedder: Arc<dyn Embedder> = Arc::new(common::load_model(&model_dir));
    let id = embedder.model_id().clone();
    let dir = common::synthetic_data_dir(n, &id);
    let data_info = common::build_data(&dir, n, &id);

    let config = vitrine_web::ServeConfig { data: dir.clone(), ..Default::default() };
    let ef_search = config.ef_search;
    let workers_hint = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let state = vitrine_web::build_state_with_model(config, embedder.clone()).expect("build service state");
    let base = common::serve_until_ready(state);
    let a = agent();

    let queries = common::product_queries(500, 11);
    for q in common::product_queries(20, 12) {
        text_query(&a, &base, &q).expect("warm-up query");
    }

    // Sequential text queries.
    let (mut text_ms, mut text_took, mut text_work, mut text_errors) = (vec![], vec![], vec![], 0usize);
    let mut hits_total = vec![];
    for q in queries.iter().cycle().take(text_n) {
        match text_query(&a, &base, q) {
            Ok(r) => {
                text_ms.push(r.ms);
                text_took.push(r.body["took_ms"].as_f64().unwrap_or(f64::NAN));
                text_work.push(work_ms(&r.body));
                hits_total.push(r.body["total"].as_f64().unwrap_or(0.0));
            }
            Err(e) => {
                eprintln!("text query {q:?}: {e}");
                text_errors += 1;
            }
        }
    }

    // Sequential text queries with a category filter (not part of the targets; shows the filtered path).
    let (mut filt_ms, mut filt_work, mut filt_errors) = (vec![], vec![], 0usize);
    for (i, q) in queries.iter().cycle().take(text_n / 3).enumerate() {
        match filtered_query(&a, &base, q, common::CATEGORIES[i % common::CATEGORIES.len()]) {
            Ok(r) => {
                filt_ms.push(r.ms);
                filt_work.push(work_ms(&r.body));
            }
            Err(e) => {
                eprintln!("filtered query {q:?}: {e}");
                filt_errors += 1;
            }
        }
    }

    // Sequential image queries.
    let jpeg = std::fs::read(&photo).expect("read photo");
    let boundary = "vitrinebenchboundary7f3a";
    let body = common::multipart(&jpeg, boundary);
    for _ in 0..3 {
        image_query(&a, &base, &body, boundary).expect("warm-up image query");
    }
    let (mut image_ms, mut image_took, mut image_work, mut image_errors) = (vec![], vec![], vec![], 0usize);
    for _ in 0..image_n {
        match image_query(&a, &base, &body, boundary) {
            Ok(r) => {
                image_ms.push(r.ms);
                image_took.push(r.body["took_ms"].as_f64().unwrap_or(f64::NAN));
                image_work.push(work_ms(&r.body));
            }
            Err(e) => {
                eprintln!("image query: {e}");
                image_errors += 1;
            }
        }
    }

    // Concurrent text queries.
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let works = Arc::new(Mutex::new(Vec::<(f64, Vec<f64>)>::new()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let started = Instant::now();
    let deadline = started + duration;
    std::thread::scope(|s| {
        for c in 0..clients {
            let (lat, works, errors, base, queries) = (lat.clone(), works.clone(), errors.clone(), &base, &queries);
            s.spawn(move || {
                let a = agent();
                let (mut l, mut w, mut e) = (vec![], vec![], BTreeMap::<String, usize>::new());
                let mut i = c * 7;
                while Instant::now() < deadline {
                    let q = &queries[i % queries.len()];
                    i += 1;
                    match text_query(&a, base, q) {
                        Ok(r) => {
                            l.push(r.ms);
                            w.push(work_ms(&r.body));
                        }
                        Err(err) => *e.entry(err).or_default() += 1,
                    }
                }
                lat.lock().expect("lock").extend(l);
                works.lock().expect("lock").extend(w);
                let mut all = errors.lock().expect("lock");
                for (k, v) in e {
                    *all.entry(k).or_default() += v;
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let lat = lat.lock().expect("lock").clone();
    let works = works.lock().expect("lock").clone();
    let errors = errors.lock().expect("lock").clone();
    let error_count: usize = errors.values().sum();

    let text_stats = common::stats_ms(&text_ms);
    let image_stats = common::stats_ms(&image_ms);
    let work = work_stats(&text_work);
    let conc = common::stats_ms(&lat);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let meets = f(&text_stats, "p50_ms") <= 25.0
        && f(&text_stats, "p99_ms") <= 60.0
        && f(&image_stats, "p50_ms") <= 120.0
        && f(&work["search_ms"], "p50_ms") <= 3.0
        && error_count == 0
        && text_errors + image_errors == 0;
    common::emit(
        "http_load",
        machine,
        json!({
            "model": model_dir.display().to_string(),
            "model_dim": id.dim,
            "device": embedder.device().to_string(),
            "products": n,
            "data_dir": dir.display().to_string(),
            "data": data_info,
            "data_disk_bytes": common::du(&dir).0,
            "ef_search": ef_search,
            "cores": workers_hint,
            "text": {
                "requests": text_n,
                "errors": text_errors,
                "client": text_stats,
                "server_took_p50_ms": common::round3(common::median(&text_took)),
                "search_work": work,
                "mean_total_candidates": hits_total.iter().sum::<f64>() / hits_total.len().max(1) as f64,
            },
            "text_category_filter": {
                "requests": text_n / 3,
                "errors": filt_errors,
                "client": common::stats_ms(&filt_ms),
                "search_work": work_stats(&filt_work),
            },
            "image": {
                "requests": image_n,
                "errors": image_errors,
                "query_bytes": jpeg.len(),
                "client": image_stats,
                "server_took_p50_ms": common::round3(common::median(&image_took)),
                "search_work": work_stats(&image_work),
            },
            "concurrent": {
                "clients": clients,
                "seconds": elapsed,
                "requests_ok": lat.len(),
                "throughput_per_s": lat.len() as f64 / elapsed,
                "errors": error_count,
                "errors_by_kind": errors,
                "client": conc,
                "search_work": work_stats(&works),
            },
            "targets": {"text_p50_ms": 25, "text_p99_ms": 60, "image_p50_ms": 120, "search_work_p50_ms": 3, "errors": 0},
            "meets_targets": meets,
        }),
    );
}
