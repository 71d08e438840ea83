//! Helpers shared by the benchmarks (each bench includes this with `mod common;`).
//!
//! Every bench prints ONE JSON line on stdout that starts with `{"bench":` (criterion's own report
//! is extra text around it); `scripts/bench.sh` collects those lines. Environment:
//! - `VITRINE_BENCH_MODEL`   model directory (relative paths are taken from the repository root)
//! - `VITRINE_BENCH_DATA`    generated inputs (default `target/bench-data`, see `scripts/make_bench_data.py`)
//! - `VITRINE_BENCH_DEVICE`  cpu (default), cuda or auto
//! - `VITRINE_BENCH_VARIANT` fp32 (default, so numbers stay comparable when a model folder gains
//!   variants), fp16, quantized or auto
//! - `VITRINE_BENCH_THREADS` ONNX Runtime intra-op threads (0 = one per core, the default)
//! - `VITRINE_BENCH_QUICK=1` smaller defaults (smoke test); `VITRINE_BENCH_RUN_ID` tags the output line
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use vitrine_core::catalog::{Product, StoredProduct};
use vitrine_core::ModelId;
use vitrine_model::{ClipOnnx, Device, RuntimeOptions};
use vitrine_store::generation::{self, BuildOptions};
use vitrine_store::store::{ProductWrite, Store};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn quick() -> bool {
    std::env::var("VITRINE_BENCH_QUICK").is_ok_and(|v| v == "1")
}

pub fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `name` as a number, else `quick_default` in quick mode, else `default`.
pub fn env_usize(name: &str, default: usize, quick_default: usize) -> usize {
    match env_str(name) {
        Some(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        None if quick() => quick_default,
        None => default,
    }
}

pub fn env_f64(name: &str, default: f64) -> f64 {
    env_str(name).map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v} is not a number"))).unwrap_or(default)
}

/// A path from the environment or the default, relative paths taken from the repository root.
pub fn env_path(name: &str, default: &str) -> PathBuf {
    let p = PathBuf::from(env_str(name).unwrap_or_else(|| default.to_string()));
    if p.is_absolute() {
        p
    } else {
        root().join(p)
    }
}

pub fn bench_data() -> PathBuf {
    env_path("VITRINE_BENCH_DATA", "target/bench-data")
}

/// Exit with a hint when generated inputs are missing.
pub fn require(path: &Path, hint: &str) {
    if !path.exists() {
        eprintln!("{} is missing: {hint}", path.display());
        std::process::exit(2);
    }
}

/// The benchmark model directory (`VITRINE_BENCH_MODEL`, else `default`).
pub fn model_path(default: &str) -> PathBuf {
    let p = env_path("VITRINE_BENCH_MODEL", default);
    require(
        &p.join("vision_model.onnx"),
        "scripts/make_clip_fixture.py --size base --out models/clip-vit-b32-random regenerates the full-size model",
    );
    p
}

pub fn runtime_options() -> RuntimeOptions {
    let device: Device = env_str("VITRINE_BENCH_DEVICE")
        .unwrap_or_else(|| "cpu".into())
        .parse()
        .unwrap_or_else(|e: vitrine_model::runtime::UnknownDevice| panic!("{e}"));
    RuntimeOptions {
        device,
        intra_threads: env_usize("VITRINE_BENCH_THREADS", 0, 0),
        variant: variant_choice("VITRINE_BENCH_VARIANT"),
        ..Default::default()
    }
}

/// `--variant` from the environment variable `name` (default fp32).
pub fn variant_choice(name: &str) -> vitrine_model::model::VariantChoice {
    use vitrine_model::model::{Variant, VariantChoice};
    env_str(name).map_or(VariantChoice::Exact(Variant::Fp32), |v| v.parse().unwrap_or_else(|e| panic!("{name}: {e}")))
}

pub fn load_model(path: &Path) -> ClipOnnx {
    ClipOnnx::open(path, &runtime_options()).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().into())
        })
        .unwrap_or_default()
}

fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn mem_total_kib() -> Option<u64> {
    proc_status_kib("/proc/meminfo", "MemTotal:")
}

fn proc_status_kib(file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of this process, KiB.
pub fn vm_rss_kib() -> Option<u64> {
    proc_status_kib("/proc/self/status", "VmRSS:")
}

/// Peak resident memory of this process (or since the last reset through /proc/self/clear_refs), KiB.
pub fn vm_hwm_kib() -> Option<u64> {
    proc_status_kib("/proc/self/status", "VmHWM:")
}

/// Machine facts, taken when the bench starts (the load average shows a busy machine).
pub fn machine() -> Value {
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": cpu_model(),
        "mem_total_kib": mem_total_kib(),
        "loadavg_1m_at_start": loadavg_1m(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// Print the result line: `{"bench": name, "run_id", "quick", "machine", ...fields}`.
pub fn emit(bench: &str, machine: Value, fields: Value) {
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!(bench));
    out.insert("run_id".into(), json!(env_str("VITRINE_BENCH_RUN_ID")));
    out.insert("quick".into(), json!(quick()));
    out.insert("machine".into(), machine);
    if let Value::Object(m) = fields {
        out.extend(m);
    }
    println!("{}", Value::Object(out));
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summary of latency samples in milliseconds.
pub fn stats_ms(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let mean = if s.is_empty() { f64::NAN } else { s.iter().sum::<f64>() / s.len() as f64 };
    json!({
        "n": s.len(),
        "p50_ms": round3(percentile(&s, 50.0)),
        "p90_ms": round3(percentile(&s, 90.0)),
        "p99_ms": round3(percentile(&s, 99.0)),
        "mean_ms": round3(mean),
        "min_ms": round3(s.first().copied().unwrap_or(f64::NAN)),
        "max_ms": round3(s.last().copied().unwrap_or(f64::NAN)),
    })
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// (apparent bytes, allocated bytes) of every file under `path`.
pub fn du(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let Ok(rd) = std::fs::read_dir(path) else { return total };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (a, b) = du(&e.path());
            total.0 += a;
            total.1 += b;
        } else {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    total
}

/// JPEG files of a directory, sorted by name.
pub fn jpegs(dir: &Path) -> Vec<PathBuf> {
    let all: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    let mut v: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")))
        .collect();
    v.sort();
    v
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// A standard normal sample (Box-Muller).
pub fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

pub fn normalize(v: &mut [f32]) {
    vitrine_core::vector::l2_normalize(v);
}

/// `clusters` random unit centres in `dim` dimensions.
pub fn centers(clusters: usize, dim: usize, rng: &mut impl Rng) -> Vec<Vec<f32>> {
    (0..clusters)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| gaussian(rng)).collect();
            normalize(&mut c);
            c
        })
        .collect()
}

/// A unit vector near `center`: centre + isotropic noise of expected norm `noise`, normalized.
pub fn near(center: &[f32], noise: f32, rng: &mut impl Rng) -> Vec<f32> {
    let s = noise / (center.len() as f32).sqrt();
    let mut v: Vec<f32> = center.iter().map(|c| c + s * gaussian(rng)).collect();
    normalize(&mut v);
    v
}

/// Dot product with independent accumulators (vectorizes; for ground truth over many points).
pub fn fast_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

// The synthetic catalog of http_load and soak.

const SYNTHETIC_READY: &str = "BENCH_READY";
/// Bump when the synthetic catalog or the index layout changes, so cached directories are rebuilt
/// (2: graph segments save graph.bin instead of the hnsw_rs dump).
const SYNTHETIC_VERSION: u32 = 2;

/// Where the synthetic catalog of `n` products for `model` is cached (shared by http_load and soak).
pub fn synthetic_data_dir(n: usize, model: &ModelId) -> PathBuf {
    bench_data().join(format!("http-v{SYNTHETIC_VERSION}-{n}-{}", model.content_hash.chars().take(12).collect::<String>()))
}

/// The synthetic catalog of the benches: random titles, brands, categories, prices and
/// attributes, image and text vectors clustered around ~n/100 unit centres. Product `i` is the same
/// for every backend (one seeded sequence, drawn in order); ordinals and versions are the
/// backend's to give.
pub struct SyntheticCatalog {
    rng: rand::rngs::StdRng,
    centers: Vec<Vec<f32>>,
    clusters: usize,
}

impl SyntheticCatalog {
    pub fn new(n: usize, dim: usize) -> Self {
        let mut rng = rng(1234);
        let clusters = (n / 100).clamp(10, 1000);
        let centers = centers(clusters, dim, &mut rng);
        SyntheticCatalog { rng, centers, clusters }
    }

    pub fn id(i: usize) -> String {
        format!("p{i:07}")
    }

    /// Product `i`; call with i = 0, 1, 2, … in order.
    pub fn product(&mut self, i: usize, ord: u64, version: u64) -> ProductWrite {
        let rng = &mut self.rng;
        let c = rng.random_range(0..self.clusters);
        let (cat, noun) = (CATEGORIES[c % CATEGORIES.len()], NOUNS[c % NOUNS.len()]);
        let brand = pick(rng, BRANDS);
        let (color, material, adj) = (pick(rng, COLORS), pick(rng, MATERIALS), pick(rng, ADJECTIVES));
        let id = Self::id(i);
        let mut attributes = BTreeMap::new();
        attributes.insert("color".to_string(), color.to_string());
        attributes.insert("material".to_string(), material.to_string());
        attributes.insert("size".to_string(), ["S", "M", "L", "XL"][rng.random_range(0..4)].to_string());
        let product = Product {
            id: id.clone(),
            title: Some(format!("{brand} {adj} {color} {material} {noun}")),
            description: Some(format!(
                "A {adj} {noun} in {color} {material}. {}",
                ["Made to last.", "For everyday use.", "Our bestseller.", "Limited edition.", "Easy to clean."]
                    [rng.random_range(0..5)]
            )),
            brand: Some(brand.to_string()),
            category: Some(cat.to_string()),
            price: Some((rng.random_range(500..50_000) as f64) / 100.0),
            currency: Some("EUR".into()),
            images: vec![],
            url: Some(format!("https://shop.example/{id}")),
            attributes,
        };
        let stored = StoredProduct {
            product,
            ord,
            version,
            hash: format!("bench-{i}"),
            image_vectors: 1,
            has_text_vector: true,
            image_errors: vec![],
            media: vec![],
            updated_at: generation::now_secs(),
            auto: Default::default(),
        };
        let image = near(&self.centers[c], 0.5, rng);
        let text = near(&self.centers[c], 0.7, rng);
        ProductWrite { stored, image_vectors: vec![image], text_vector: Some(text) }
    }

    /// A query vector near one of the catalog's centres (its own random sequence).
    pub fn query(&self, rng: &mut impl Rng) -> Vec<f32> {
        near(&self.centers[rng.random_range(0..self.clusters)], 0.5, rng)
    }
}

/// Write `n` synthetic products into a fresh data directory and build its generation.
pub fn build_data(dir: &Path, n: usize, model: &ModelId) -> Value {
    if dir.join(SYNTHETIC_READY).exists() {
        let info: Value =
            serde_json::from_slice(&std::fs::read(dir.join(SYNTHETIC_READY)).unwrap_or_default()).unwrap_or(json!({}));
        return json!({"cached": true, "built": info});
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove a half-built data dir");
    }
    eprintln!("building {n} synthetic products in {} (cached for later runs)", dir.display());
    let t = Instant::now();
    vitrine_migrations::open(dir).expect("data dir");
    let store = Store::open(&dir.join("store")).expect("store");
    store.set_model(model).expect("set model");
    let mut catalog = SyntheticCatalog::new(n, model.dim);
    for i in 0..n {
        let id = SyntheticCatalog::id(i);
        let w = catalog.product(i, store.ordinal_for(&id).expect("ord"), store.next_seq().expect("seq"));
        store.put(w).expect("put");
    }
    store.flush().expect("flush");
    let store_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let opts = BuildOptions { full: true, ..Default::default() };
    generation::build_next(dir, &store, "store", model, &opts).expect("build generation");
    let build_s = t.elapsed().as_secs_f64();
    drop(store);
    let info = json!({"products": n, "store_write_s": store_s, "generation_build_s": build_s});
    std::fs::write(dir.join(SYNTHETIC_READY), info.to_string()).expect("ready marker");
    json!({"cached": false, "built": info})
}

/// Copy a folder tree (folders, files and symlinks) to `to`, which must not exist yet.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            copy_dir(&src, &dst)?;
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// A multipart/form-data body with one `image` field holding `jpeg`.
/// Serve `state` on a free 127.0.0.1 port in a background thread and wait (up to 60 s) until
/// `/readyz` answers 200. Returns the base URL.
pub fn serve_until_ready(state: std::sync::Arc<vitrine_web::AppState>) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let bind = format!("127.0.0.1:{port}");
    let base = format!("http://{bind}");
    std::thread::spawn(move || actix_web::rt::System::new().block_on(vitrine_web::serve(state, &bind)));
    let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(5)).build();
    let t = Instant::now();
    while !agent.get(&format!("{base}/readyz")).call().is_ok_and(|r| r.status() == 200) {
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "the service did not become ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    base
}

pub fn multipart(jpeg: &[u8], boundary: &str) -> Vec<u8> {
    let mut b = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"query.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(jpeg);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

pub const CATEGORIES: &[&str] = &[
    "shoes",
    "bags",
    "watches",
    "lamps",
    "chairs",
    "mugs",
    "jackets",
    "dresses",
    "rugs",
    "vases",
    "headphones",
    "backpacks",
    "sunglasses",
    "tables",
    "cushions",
    "plates",
    "scarves",
    "hats",
    "sofas",
    "bottles",
];
pub const BRANDS: &[&str] = &[
    "Nordlys", "Acme", "Vela", "Kobo", "Marlow", "Sora", "Tessin", "Brio", "Alder", "Quill", "Oakum", "Lumen", "Pike", "Rowan",
    "Ferro", "Juno", "Halden", "Ostra", "Bexley", "Calder",
];
pub const COLORS: &[&str] =
    &["red", "navy", "black", "white", "olive", "beige", "mustard", "teal", "grey", "pink", "brown", "green", "orange"];
pub const MATERIALS: &[&str] =
    &["leather", "cotton", "linen", "wool", "oak", "walnut", "ceramic", "glass", "steel", "brass", "suede", "canvas"];
pub const ADJECTIVES: &[&str] = &[
    "minimal",
    "vintage",
    "rustic",
    "modern",
    "classic",
    "chunky",
    "slim",
    "oversized",
    "handmade",
    "striped",
    "woven",
    "matte",
    "glossy",
    "cozy",
    "sleek",
];
pub const NOUNS: &[&str] = &[
    "sneakers",
    "tote bag",
    "wristwatch",
    "desk lamp",
    "armchair",
    "coffee mug",
    "rain jacket",
    "summer dress",
    "area rug",
    "flower vase",
    "headphones",
    "backpack",
    "sunglasses",
    "side table",
    "throw pillow",
    "dinner plate",
    "scarf",
    "bucket hat",
    "sofa",
    "water bottle",
];

pub fn pick<'a>(rng: &mut impl Rng, words: &[&'a str]) -> &'a str {
    words[rng.random_range(0..words.len())]
}

/// Varied product-like search strings ("red leather tote bag", "modern oak side table under 200"...).
pub fn product_queries(n: usize, seed: u64) -> Vec<String> {
    let mut r = rng(seed);
    (0..n)
        .map(|i| match i % 5 {
            0 => format!("{} {} {}", pick(&mut r, COLORS), pick(&mut r, MATERIALS), pick(&mut r, NOUNS)),
            1 => format!("{} {}", pick(&mut r, ADJECTIVES), pick(&mut r, NOUNS)),
            2 => {
                format!("{} {} {} {}", pick(&mut r, BRANDS), pick(&mut r, ADJECTIVES), pick(&mut r, COLORS), pick(&mut r, NOUNS))
            }
            3 => format!(
                "{} {} for {} with {} details",
                pick(&mut r, ADJECTIVES),
                pick(&mut r, NOUNS),
                ["the living room", "summer", "the office", "travel", "a wedding"][r.random_range(0..5)],
                pick(&mut r, MATERIALS)
            ),
            _ => pick(&mut r, NOUNS).to_string(),
        })
        .collect()
}
