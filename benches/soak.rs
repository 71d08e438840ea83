//! Soak: `CLIENTS` (64) concurrent clients for `DURATION_S` (300) s of mixed search, ingest jobs and
//! product writes against the real service over HTTP. Zero 5xx; RSS before and after; p50 and p99.
//!
//! Uses the synthetic catalog of `N` (20,000) products that http_load builds (cached under
//! target/bench-data/http-v{V}-{N}-{model hash}/, see `common::build_data`), copied into a scratch
//! folder under `VITRINE_BENCH_TMP` (target/bench-tmp; removed at the end) because the soak writes
//! into it. A media root beside it holds a few generated JPEGs that writes and ingest jobs name.
//! The service runs in-process (`vitrine_web::build_state_with_model` + `serve` on a free
//! 127.0.0.1 port) with an admin key, that media root and a queue of at least `CLIENTS`, so a 503
//! (`overloaded`) is a failure like any other 5xx. After a warm-up and `IDLE_S` quiet seconds:
//! - client 0 ingests: POST /v1/ingest of a 20-product JSON Lines catalog (200 ids, reused so
//!   later jobs update), polls GET /v1/jobs/{id} until the job ends, pauses 0.5 s, repeats;
//! - every other client loops over, by weight (`MIX`): GET /v1/search?q=… (text_get=70; some with
//!   a category, price or fusion parameter), POST /v1/search/text with filters and fusion
//!   (text_post=22), a multipart POST /v1/search/image of a small JPEG (image=5; the vision model
//!   is the slow part on CPU), and PUT /v1/products/{id} with a media-root image (write=3; half
//!   update synthetic products, half create or update 2,000 soak ids; at most `WRITERS` (4) in
//!   flight, a client that draws one more runs a text search instead, see `MIX`).
//!
//! Reports, per operation: count, statuses, p50/p90/p99/max of the 2xx answers; 5xx and transport
//! errors; the ingest jobs (done, failed, seconds each); VmRSS and VmHWM of the process when the
//! service is ready, before the load (VmHWM reset there through /proc/self/clear_refs when the
//! kernel allows, so after the load it is the peak of the load), right after it and after `IDLE_S`
//! (12: past the writer's 10 s idle close) seconds idle, with a sample every 5 s in between; and
//! /v1/stats (products, generation, segments, ...) before and after. Exits 1 on any 5xx, transport
//! error (a timeout counts) or failed ingest job. The service's own warnings go to stderr
//! (`VITRINE_LOG`, default warn).
//!
//! Env: `VITRINE_BENCH_MODEL` (models/clip-vit-b32-random; --quick: models/tiny-clip), `N` (20000;
//! quick 2000), `CLIENTS` (64; quick 16), `DURATION_S` (300; quick 20), `IDLE_S` (12), `MIX`
//! (text_get=70,text_post=22,image=5,write=3), `WRITERS` (4), `VITRINE_BENCH_TMP`. Not part of
//! the default `scripts/bench.sh` run: `scripts/bench.sh soak`, or `cargo bench --bench soak`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use vitrine_model::Embedder;

const ADMIN_KEY: &str = "soak-bench-admin-key";
/// JPEGs in the media root (soak_0.jpg ...).
const MEDIA_IMAGES: usize = 8;
/// Products per ingest job, and the ids the jobs cycle through.
const JOB_PRODUCTS: usize = 20;
const JOB_IDS: usize = 200;
/// Ids the writers create besides updating the synthetic products.
const WRITE_IDS: usize = 2000;
/// How long the ingester waits for its last job after the load ends.
const JOB_GRACE: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
const BOUNDARY: &str = "vitrinesoakboundary5d1c";
/// Non-2xx answers kept verbatim (the first ones) for the report.
const ERROR_SAMPLES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    TextGet,
    TextPost,
    Image,
    Write,
    IngestSubmit,
    JobPoll,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::TextGet => "text_get",
            Op::TextPost => "text_post",
            Op::Image => "image",
            Op::Write => "write",
            Op::IngestSubmit => "ingest_submit",
            Op::JobPoll => "job_poll",
        }
    }
}

/// What the mixed clients do, by weight (`MIX` overrides). Writes are few, and at most `WRITERS`
/// are in flight: each one is durable and searchable when it returns (a new generation) and they
/// take the data directory's one writer in turn, so without the cap a closed loop leaves most
/// clients queued for the writer rather than mixing.
const MIX: &str = "text_get=70,text_post=22,image=5,write=3";
const MIXED_OPS: [Op; 4] = [Op::TextGet, Op::TextPost, Op::Image, Op::Write];

/// `name=weight,...` over the mixed clients' operations.
fn parse_mix(s: &str) -> Vec<(Op, u32)> {
    let mix: Vec<(Op, u32)> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (name, w) = p.split_once('=').unwrap_or_else(|| panic!("MIX: {p:?} is not name=weight"));
            let op = MIXED_OPS
                .into_iter()
                .find(|o| o.name() == name.trim())
                .unwrap_or_else(|| panic!("MIX: unknown operation {name:?} (text_get, text_post, image, write)"));
            (op, w.trim().parse().unwrap_or_else(|_| panic!("MIX: weight {w:?} is not a number")))
        })
        .collect();
    assert!(mix.iter().map(|m| m.1).sum::<u32>() > 0, "MIX: the weights add up to 0");
    mix
}

fn pick_op(mix: &[(Op, u32)], rng: &mut impl Rng) -> Op {
    let total: u32 = mix.iter().map(|m| m.1).sum();
    let mut r = rng.random_range(0..total);
    for &(op, w) in mix {
        if r < w {
            return op;
        }
        r -= w;
    }
    unreachable!("weights cover the range")
}

/// One HTTP exchange: the status (None: no answer) and the body, or what went wrong on the way.
struct Answer {
    status: Option<u16>,
    body: String,
    transport: Option<String>,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
    match r {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
            let status = resp.status();
            match resp.into_string() {
                Ok(body) => Answer { status: Some(status), body, transport: None },
                Err(e) => Answer { status: Some(status), body: String::new(), transport: Some(format!("body: {e}")) },
            }
        }
        Err(e) => Answer { status: None, body: String::new(), transport: Some(format!("transport: {}", e.kind())) },
    }
}

/// Counts shared with the progress monitor while the load runs.
#[derive(Default)]
struct Live {
    requests: AtomicUsize,
    server_errors: AtomicUsize,
    transport_errors: AtomicUsize,
    writes_in_flight: AtomicUsize,
    /// Writes drawn while `WRITERS` were in flight (a text search ran instead).
    writes_deferred: AtomicUsize,
}

/// One ingest job, submit to end.
struct JobOutcome {
    state: String,
    seconds: f64,
    counts: Value,
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    /// Latency of the 2xx answers, per operation.
    ok_ms: BTreeMap<Op, Vec<f64>>,
    /// Answers per operation by status code ("200", "503") or transport error.
    statuses: BTreeMap<Op, BTreeMap<String, usize>>,
    samples: Vec<String>,
    jobs: Vec<JobOutcome>,
}

impl Tally {
    fn record(&mut self, op: Op, a: &Answer, ms: f64, live: &Live) {
        live.requests.fetch_add(1, Ordering::Relaxed);
        let key = match (&a.transport, a.status) {
            (Some(t), _) => t.clone(),
            (None, Some(s)) => s.to_string(),
            (None, None) => "no status".into(),
        };
        *self.statuses.entry(op).or_default().entry(key).or_default() += 1;
        if a.transport.is_some() {
            live.transport_errors.fetch_add(1, Ordering::Relaxed);
        } else if a.status.is_some_and(|s| s >= 500) {
            live.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        if a.ok() && a.transport.is_none() {
            self.ok_ms.entry(op).or_default().push(ms);
        } else if self.samples.len() < ERROR_SAMPLES {
            let body: String = a.body.chars().take(300).collect();
            self.samples.push(format!("{} {:?} {:?}: {body}", op.name(), a.status, a.transport));
        }
    }

    fn merge(&mut self, other: Tally) {
        for (op, v) in other.ok_ms {
            self.ok_ms.entry(op).or_default().extend(v);
        }
        for (op, m) in other.statuses {
            let mine = self.statuses.entry(op).or_default();
            for (k, v) in m {
                *mine.entry(k).or_default() += v;
            }
        }
        let room = ERROR_SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
        self.jobs.extend(other.jobs);
    }
}

/// Everything the clients share.
struct Ctx {
    base: String,
    /// Products of the synthetic catalog (ids p0000000 ...).
    n: usize,
    queries: Vec<String>,
    media: Vec<String>,
    image_body: Vec<u8>,
    mix: Vec<(Op, u32)>,
    /// Most PUTs in flight at once.
    writers: usize,
    live: Live,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build()
}

fn bearer() -> String {
    format!("Bearer {ADMIN_KEY}")
}

/// A synthetic product photo: a coloured disc on a coloured, slightly noisy background.
fn make_jpeg(seed: u64, w: u32, h: u32) -> Vec<u8> {
    let mut rng = common::rng(seed);
    let mut color = || [rng.random_range(0..=255u8), rng.random_range(0..=255u8), rng.random_range(0..=255u8)];
    let (bg, fg) = (color(), color());
    let (cx, cy) = (rng.random_range(w / 4..w * 3 / 4) as i64, rng.random_range(h / 4..h * 3 / 4) as i64);
    let r = rng.random_range(w.min(h) / 6..w.min(h) / 3) as i64;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as i64 - cx, y as i64 - cy);
        let c = if dx * dx + dy * dy < r * r { fg } else { bg };
        let noise: i16 = rng.random_range(-10..=10);
        image::Rgb(c.map(|v| (v as i16 + noise).clamp(0, 255) as u8))
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img).expect("encode a JPEG");
    out
}

fn text_get(a: &ureq::Agent, ctx: &Ctx, rng: &mut impl Rng) -> Answer {
    let q = &ctx.queries[rng.random_range(0..ctx.queries.len())];
    let mut req = a.get(&format!("{}/v1/search", ctx.base)).query("q", q);
    match rng.random_range(0..20) {
        0..=2 => req = req.query("category", common::pick(rng, common::CATEGORIES)),
        3..=4 => {
            let min = rng.random_range(5..200);
            req = req.query("price_min", &min.to_string()).query("price_max", &(min + 150).to_string());
        }
        5 => req = req.query("fusion", "weighted").query("facets", "true"),
        _ => {}
    }
    answer(req.call())
}

fn text_post(a: &ureq::Agent, ctx: &Ctx, rng: &mut impl Rng) -> Answer {
    let q = &ctx.queries[rng.random_range(0..ctx.queries.len())];
    let filters = match rng.random_range(0..4) {
        0 => json!({"category": [common::pick(rng, common::CATEGORIES), common::pick(rng, common::CATEGORIES)]}),
        1 => json!({"attributes": {"color": [common::pick(rng, common::COLORS)]}, "price": {"max": 300.0}}),
        2 => json!({"brand": [common::pick(rng, common::BRANDS)], "price": {"min": 20.0}}),
        _ => json!({}),
    };
    let fusion = if rng.random_bool(0.5) {
        json!({"mode": "rrf", "k": 60})
    } else {
        json!({"mode": "weighted", "weights": {"image": 1.0, "text": 1.0, "keyword": 0.5}, "normalization": "zscore"})
    };
    let offset = if rng.random_bool(0.2) { 20 } else { 0 };
    let body = json!({"q": q, "k": 20, "offset": offset, "filters": filters, "fusion": fusion, "facets": rng.random_bool(0.3)});
    answer(a.post(&format!("{}/v1/search/text", ctx.base)).set("Content-Type", "application/json").send_string(&body.to_string()))
}

fn image_search(a: &ureq::Agent, ctx: &Ctx) -> Answer {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    answer(a.post(&format!("{}/v1/search/image", ctx.base)).set("Content-Type", &ct).send_bytes(&ctx.image_body))
}

/// A product record as a merchant sends it, with one media-root image.
fn product_json(rng: &mut impl Rng, ctx: &Ctx, note: &str) -> serde_json::Map<String, Value> {
    let (color, material, adj) =
        (common::pick(rng, common::COLORS), common::pick(rng, common::MATERIALS), common::pick(rng, common::ADJECTIVES));
    let c = rng.random_range(0..common::CATEGORIES.len());
    let (cat, noun) = (common::CATEGORIES[c], common::NOUNS[c % common::NOUNS.len()]);
    let brand = common::pick(rng, common::BRANDS);
    let image = &ctx.media[rng.random_range(0..ctx.media.len())];
    let size = ["S", "M", "L", "XL"][rng.random_range(0..4)];
    let price = (rng.random_range(500..50_000) as f64) / 100.0;
    let v = json!({
        "title": format!("{brand} {adj} {color} {material} {noun}"),
        "description": format!("A {adj} {noun} in {color} {material} ({note})."),
        "brand": brand,
        "category": cat,
        "price": price,
        "currency": "EUR",
        "images": [image],
        "attributes": {"color": color, "material": material, "size": size},
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn write(a: &ureq::Agent, ctx: &Ctx, rng: &mut impl Rng, client: usize, seq: u64) -> Answer {
    let id = if rng.random_bool(0.5) {
        format!("p{:07}", rng.random_range(0..ctx.n))
    } else {
        format!("soak-w{:04}", rng.random_range(0..WRITE_IDS))
    };
    let body = Value::Object(product_json(rng, ctx, &format!("write {client}-{seq}")));
    answer(
        a.put(&format!("{}/v1/products/{id}", ctx.base))
            .set("Authorization", &bearer())
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
    )
}

fn mixed_client(c: usize, ctx: &Ctx, deadline: Instant) -> Tally {
    let a = agent();
    let mut rng = common::rng(1000 + c as u64);
    let mut t = Tally::default();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let mut op = pick_op(&ctx.mix, &mut rng);
        // At most `writers` PUTs in flight; a client that draws one more searches instead.
        let writing = op == Op::Write
            && ctx
                .live
                .writes_in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| (w < ctx.writers).then_some(w + 1))
                .is_ok();
        if op == Op::Write && !writing {
            ctx.live.writes_deferred.fetch_add(1, Ordering::Relaxed);
            op = Op::TextGet;
        }
        let started = Instant::now();
        let ans = match op {
            Op::TextGet => text_get(&a, ctx, &mut rng),
            Op::TextPost => text_post(&a, ctx, &mut rng),
            Op::Image => image_search(&a, ctx),
            Op::Write => {
                seq += 1;
                write(&a, ctx, &mut rng, c, seq)
            }
            Op::IngestSubmit | Op::JobPoll => unreachable!("the ingester's"),
        };
        t.record(op, &ans, common::ms_since(started), &ctx.live);
        if writing {
            ctx.live.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    t
}

/// A JSON Lines catalog of `JOB_PRODUCTS` products for job `job`.
fn job_catalog(job: usize, ctx: &Ctx, rng: &mut impl Rng) -> String {
    let mut out = String::new();
    for i in 0..JOB_PRODUCTS {
        let mut m = product_json(rng, ctx, &format!("job {job}"));
        m.insert("id".into(), json!(format!("soak-i{:03}", (job * JOB_PRODUCTS + i) % JOB_IDS)));
        out.push_str(&Value::Object(m).to_string());
        out.push('\n');
    }
    out
}

fn ingest_client(ctx: &Ctx, deadline: Instant) -> Tally {
    let a = agent();
    let mut rng = common::rng(999);
    let mut t = Tally::default();
    let mut job = 0usize;
    while Instant::now() < deadline {
        let catalog = job_catalog(job, ctx, &mut rng);
        job += 1;
        let submitted = Instant::now();
        let ans = answer(
            a.post(&format!("{}/v1/ingest", ctx.base))
                .set("Authorization", &bearer())
                .set("Content-Type", "application/x-ndjson")
                .send_bytes(catalog.as_bytes()),
        );
        t.record(Op::IngestSubmit, &ans, common::ms_since(submitted), &ctx.live);
        let id = ans.json()["job_id"].as_str().map(str::to_string);
        let Some(id) = id.filter(|_| ans.ok()) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let give_up = deadline.max(Instant::now()) + JOB_GRACE;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let started = Instant::now();
            let ans = answer(a.get(&format!("{}/v1/jobs/{id}", ctx.base)).set("Authorization", &bearer()).call());
            t.record(Op::JobPoll, &ans, common::ms_since(started), &ctx.live);
            let body = ans.json();
            let state = body["state"].as_str().unwrap_or("");
            if ans.ok() && matches!(state, "done" | "failed") {
                let counts = json!({"counts": body["counts"], "error": body["error"]});
                t.jobs.push(JobOutcome { state: state.into(), seconds: submitted.elapsed().as_secs_f64(), counts });
                break;
            }
            if Instant::now() > give_up {
                t.jobs.push(JobOutcome {
                    state: "timed_out".into(),
                    seconds: submitted.elapsed().as_secs_f64(),
                    counts: json!({}),
                });
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    t
}

/// VmRSS, VmHWM and the thread count (glibc keeps a malloc arena per busy thread, up to 8 per core,
/// and returns little of them to the system: RSS after a load is mostly those arenas).
fn mem() -> Value {
    let threads: Option<u64> = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse().ok())));
    json!({"rss_kib": common::vm_rss_kib(), "hwm_kib": common::vm_hwm_kib(), "threads": threads})
}

/// Reset VmHWM to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux 4.0+).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn stats(a: &ureq::Agent, base: &str) -> Value {
    let ans = answer(a.get(&format!("{base}/v1/stats")).set("Authorization", &bearer()).call());
    let v = ans.json();
    let keys = [
        "products",
        "images",
        "vectors",
        "live_vectors",
        "tombstones",
        "segments",
        "generation",
        "disk_bytes",
        "media_files",
        "jobs_active",
    ];
    Value::Object(keys.iter().map(|k| (k.to_string(), v[k].clone())).collect())
}

fn kib(v: &Value, k: &str) -> Option<i64> {
    v[k].as_i64()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VITRINE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let machine = common::machine();
    let n = common::env_usize("N", 20_000, 2_000);
    // One ingester and at least one mixed client.
    let clients = common::env_usize("CLIENTS", 64, 16).max(2);
    let duration = Duration::from_secs(common::env_usize("DURATION_S", 300, 20) as u64);
    let idle = Duration::from_secs(common::env_usize("IDLE_S", 12, 12) as u64);

    let model_dir = common::model_path(if common::quick() { "models/tiny-clip" } else { "models/clip-vit-b32-random" });
    let embedder: Arc<dyn Embedder> = Arc::new(common::load_model(&model_dir));
    let id = embedder.model_id().clone();
    let cached = common::synthetic_data_dir(n, &id);
    let data_info = common::build_data(&cached, n, &id);

    // The soak writes into its data directory: work on a copy, in a folder removed at the end.
    let tmp_root = common::env_path("VITRINE_BENCH_TMP", "target/bench-tmp");
    std::fs::create_dir_all(&tmp_root).expect("tmp root");
    let scratch = tempfile::Builder::new().prefix("soak-").tempdir_in(&tmp_root).expect("scratch dir");
    let data = scratch.path().join("data");
    let t = Instant::now();
    common::copy_dir(&cached, &data).expect("copy the data directory");
    let copy_s = t.elapsed().as_secs_f64();
    let media_dir = scratch.path().join("media");
    std::fs::create_dir_all(&media_dir).expect("media root");
    let mut media = vec![];
    for i in 0..MEDIA_IMAGES {
        let name = format!("soak_{i}.jpg");
        let (w, h) = [(640, 480), (480, 640), (512, 512), (800, 600)][i % 4];
        std::fs::write(media_dir.join(&name), make_jpeg(500 + i as u64, w, h)).expect("write a media JPEG");
        media.push(name);
    }
    let query_jpeg = make_jpeg(500, 320, 240);

    let queue = clients.max(vitrine_web::ServeConfig::default().queue_capacity);
    let config = vitrine_web::ServeConfig {
        data: data.clone(),
        admin_key: Some(ADMIN_KEY.into()),
        media_root: vec![media_dir.clone()],
        queue_capacity: queue,
        ..Default::default()
    };
    let state = vitrine_web::build_state_with_model(config, embedder.clone()).expect("build service state");
    let service = state.clone();
    let base = common::serve_until_ready(state);
    let a = agent();
    let rss_ready = mem();

    let ctx = Ctx {
        base: base.clone(),
        n,
        queries: common::product_queries(500, 21),
        media,
        image_body: common::multipart(&query_jpeg, BOUNDARY),
        mix: parse_mix(&common::env_str("MIX").unwrap_or_else(|| MIX.into())),
        writers: common::env_usize("WRITERS", 4, 4).max(1),
        live: Live::default(),
    };

    // Warm-up: every kind of request once or more, then quiet, so "before" and "after idle" compare
    // the same state (writer closed, caches warm).
    let mut warm = Tally::default();
    let mut rng = common::rng(7);
    for _ in 0..20 {
        let t = Instant::now();
        let ans = text_get(&a, &ctx, &mut rng);
        warm.record(Op::TextGet, &ans, common::ms_since(t), &ctx.live);
        let ans = text_post(&a, &ctx, &mut rng);
        warm.record(Op::TextPost, &ans, common::ms_since(t), &ctx.live);
    }
    for seq in 0..3 {
        let t = Instant::now();
        let ans = image_search(&a, &ctx);
        warm.record(Op::Image, &ans, common::ms_since(t), &ctx.live);
        let ans = write(&a, &ctx, &mut rng, usize::MAX, seq);
        warm.record(Op::Write, &ans, common::ms_since(t), &ctx.live);
    }
    let warm_errors: Vec<String> = warm.samples.clone();
    assert!(warm_errors.is_empty(), "warm-up requests failed: {warm_errors:#?}");
    std::thread::sleep(idle);
    let stats_before = stats(&a, &base);
    let hwm_reset = reset_hwm();
    let rss_before = mem();
    let live_before = ctx.live.requests.load(Ordering::Relaxed);

    eprintln!(
        "soak: {clients} clients for {} s on {n} products ({}), queue {queue}, {base}",
        duration.as_secs(),
        model_dir.display()
    );
    let started = Instant::now();
    let deadline = started + duration;
    let stop = AtomicBool::new(false);
    let mut rss_samples: Vec<Value> = vec![];
    let mut total = Tally::default();
    std::thread::scope(|s| {
        let ctx = &ctx;
        let handles: Vec<_> = (0..clients)
            .map(|c| s.spawn(move || if c == 0 { ingest_client(ctx, deadline) } else { mixed_client(c, ctx, deadline) }))
            .collect();
        let (stop, samples) = (&stop, &mut rss_samples);
        let monitor = s.spawn(move || {
            let (mut next_sample, mut next_print) = (started + SAMPLE_EVERY, started + PROGRESS_EVERY);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let now = Instant::now();
                if now >= next_sample {
                    next_sample += SAMPLE_EVERY;
                    samples.push(json!([common::round3(started.elapsed().as_secs_f64()), common::vm_rss_kib()]));
                }
                if now >= next_print {
                    next_print += PROGRESS_EVERY;
                    eprintln!(
                        "soak: {:.0}/{} s, {} requests, 5xx {}, transport errors {}, RSS {} MiB",
                        started.elapsed().as_secs_f64(),
                        duration.as_secs(),
                        ctx.live.requests.load(Ordering::Relaxed) - live_before,
                        ctx.live.server_errors.load(Ordering::Relaxed),
                        ctx.live.transport_errors.load(Ordering::Relaxed),
                        common::vm_rss_kib().unwrap_or(0) / 1024
                    );
                }
            }
        });
        for h in handles {
            total.merge(h.join().expect("client thread"));
        }
        stop.store(true, Ordering::Relaxed);
        monitor.join().expect("monitor thread");
    });
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = mem();
    let stats_after_load = stats(&a, &base);
    std::thread::sleep(idle);
    let rss_idle = mem();
    let stats_after = stats(&a, &base);

    // Per operation, and the status classes over everything.
    let mut ops = serde_json::Map::new();
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut requests = 0usize;
    for op in [Op::TextGet, Op::TextPost, Op::Image, Op::Write, Op::IngestSubmit, Op::JobPoll] {
        let statuses = total.statuses.get(&op).cloned().unwrap_or_default();
        let count: usize = statuses.values().sum();
        requests += count;
        for (k, v) in &statuses {
            let class = match k.parse::<u16>() {
                Ok(s) => {
                    ["1xx", "2xx", "3xx", "4xx", "5xx"].get((s / 100).saturating_sub(1) as usize).copied().unwrap_or("other")
                }
                Err(_) => "transport",
            };
            *classes.entry(class).or_default() += v;
        }
        let ok = total.ok_ms.get(&op).cloned().unwrap_or_default();
        let mut m = match common::stats_ms(&ok) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        m.insert("requests".into(), json!(count));
        m.insert("per_s".into(), json!(common::round3(count as f64 / elapsed)));
        m.insert("statuses".into(), json!(statuses));
        ops.insert(op.name().into(), Value::Object(m));
    }
    let server_errors = classes.get("5xx").copied().unwrap_or(0);
    let transport_errors = classes.get("transport").copied().unwrap_or(0);

    let job_state = |s: &str| total.jobs.iter().filter(|j| j.state == s).count();
    let (jobs_done, jobs_failed, jobs_timed_out) = (job_state("done"), job_state("failed"), job_state("timed_out"));
    let job_ms: Vec<f64> = total.jobs.iter().filter(|j| j.state == "done").map(|j| j.seconds * 1000.0).collect();
    let mut job_counts: BTreeMap<String, u64> = BTreeMap::new();
    for j in &total.jobs {
        if let Some(c) = j.counts["counts"].as_object() {
            for (k, v) in c {
                *job_counts.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    let job_errors: Vec<Value> =
        total.jobs.iter().filter(|j| j.state != "done").take(5).map(|j| json!({"state": j.state, "detail": j.counts})).collect();

    let growth = |a: &Value, b: &Value| kib(b, "rss_kib").zip(kib(a, "rss_kib")).map(|(b, a)| b - a);
    let meets = server_errors == 0 && transport_errors == 0 && jobs_failed == 0 && jobs_timed_out == 0;
    let result = json!({
        "model": model_dir.display().to_string(),
        "model_dim": id.dim,
        "device": embedder.device().to_string(),
        "products": n,
        "data_dir": cached.display().to_string(),
        "data": data_info,
        "copy_s": common::round3(copy_s),
        "clients": clients,
        "duration_s": duration.as_secs(),
        "elapsed_s": common::round3(elapsed),
        "queue_capacity": queue,
        "writers": ctx.writers,
        "writes_deferred": ctx.live.writes_deferred.load(Ordering::Relaxed),
        "mix": ctx.mix.iter().map(|(op, w)| (op.name().to_string(), json!(w))).collect::<serde_json::Map<_, _>>(),
        "requests": requests,
        "throughput_per_s": common::round3(requests as f64 / elapsed),
        "status_classes": classes,
        "errors_5xx": server_errors,
        "transport_errors": transport_errors,
        "error_samples": total.samples,
        "ops": ops,
        "ingest_jobs": {
            "submitted": total.jobs.len(),
            "done": jobs_done,
            "failed": jobs_failed,
            "timed_out": jobs_timed_out,
            "products_per_job": JOB_PRODUCTS,
            "counts": job_counts,
            "job_ms": common::stats_ms(&job_ms),
            "not_done": job_errors,
        },
        "memory": {
            "ready": rss_ready,
            "before_load": rss_before,
            "after_load": rss_after,
            "after_idle": rss_idle,
            "idle_s": idle.as_secs(),
            "hwm_reset_before_load": hwm_reset,
            "rss_growth_kib": growth(&rss_before, &rss_idle),
            "rss_load_kib": growth(&rss_before, &rss_after),
            "samples_s_kib": rss_samples,
        },
        "stats_before": stats_before,
        "stats_after_load": stats_after_load,
        "stats_after": stats_after,
        "products_before": stats_before["products"],
        "products_after": stats_after["products"],
        "targets": {"errors_5xx": 0, "transport_errors": 0, "failed_jobs": 0},
        "meets_targets": meets,
    });

    // Stop writing before the scratch folder goes.
    service.writes.close();
    drop(service);
    if let Err(e) = scratch.close() {
        eprintln!("soak: could not remove the scratch folder: {e}");
    }
    common::emit("soak", machine, result);
    if !meets {
        eprintln!(
            "soak: FAILED: {server_errors} 5xx, {transport_errors} transport errors, {jobs_failed} failed and {jobs_timed_out} timed-out jobs"
        );
        std::process::exit(1);
    }
}
