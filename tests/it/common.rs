use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vitrine_model::{ClipOnnx, Device, RuntimeOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model_dir() -> PathBuf {
    root().join("models/tiny-clip")
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// The tiny model with its int8 `quantized` variant beside the fp32 files, as the hub lays them
/// out: tests/fixtures/tiny-clip-quantized holds the two towers `scripts/quantize_model.py` makes
/// of models/tiny-clip (deterministic; scripts/test.sh remakes them when missing). Assembled once
/// per test binary under the target's temporary folder.
pub fn quantized_tiny_model_dir() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| tiny_model_dir_with("quantized", "")).clone()
}

/// The tiny model with its `fp16` variant (tests/fixtures/tiny-clip-fp16, made by
/// `scripts/quantize_model.py --fp16`) beside the fp32 files.
pub fn fp16_tiny_model_dir() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| tiny_model_dir_with("fp16", " --fp16")).clone()
}

/// A copy of the tiny model with the towers of `variant` from tests/fixtures/tiny-clip-VARIANT.
fn tiny_model_dir_with(variant: &str, script_flag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tiny-clip-{variant}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    copy_dir(&tiny_model_dir(), &d);
    for t in ["vision_model", "text_model"] {
        let f = format!("{t}_{variant}.onnx");
        std::fs::copy(fixture(&format!("tiny-clip-{variant}/{f}")), d.join(&f)).unwrap_or_else(|e| {
            panic!(
                "{f}: {e}: run scripts/quantize_model.py models/tiny-clip --out tests/fixtures/tiny-clip-{variant}{script_flag}"
            )
        });
    }
    d
}

/// One tiny CLIP per test binary: loading is cheap, but sessions are better shared.
pub fn tiny_model() -> &'static ClipOnnx {
    static M: OnceLock<ClipOnnx> = OnceLock::new();
    M.get_or_init(|| {
        let opts = RuntimeOptions { device: Device::Cpu, intra_threads: 2, ..Default::default() };
        ClipOnnx::open(&tiny_model_dir(), &opts).expect("tiny model loads (did scripts/setup.sh install .ort/?)")
    })
}

/// Copy a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The tiny model with another normalization constant, in `dir/other-model`: the same network
/// with different files, so a different model to the index.
pub fn other_tiny_model(dir: &Path) -> PathBuf {
    let other = dir.join("other-model");
    copy_dir(&tiny_model_dir(), &other);
    let cfg = std::fs::read_to_string(other.join("preprocessor_config.json")).unwrap().replace("0.48145466", "0.5");
    std::fs::write(other.join("preprocessor_config.json"), cfg).unwrap();
    other
}

pub fn vitrine_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitrine"))
}

pub fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[allow(dead_code)]
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Named pipeline inputs, and reference embeddings by name.
pub type ReferenceImages = (Vec<(String, vitrine_model::pipeline::ImageSource)>, std::collections::HashMap<String, Vec<f64>>);

/// The parity images a `reference.json` lists (files under `tests/fixtures/clip/images`) as
/// pipeline inputs, and each one's reference embedding by file name.
pub fn reference_images(reference: &serde_json::Value) -> ReferenceImages {
    let images = reference["images"].as_array().unwrap();
    let file = |r: &serde_json::Value| r["file"].as_str().unwrap().to_string();
    let inputs = images
        .iter()
        .map(|r| (file(r), vitrine_model::pipeline::ImageSource::Path(fixture(&format!("clip/images/{}", file(r))))))
        .collect();
    let wants = images
        .iter()
        .map(|r| (file(r), r["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()))
        .collect();
    (inputs, wants)
}

/// What the local test HTTP server answers for a path.
pub enum Reply {
    Ok(Vec<u8>),
    Status(u16),
    /// Sleep before answering (a slow server).
    Slow(std::time::Duration),
}

/// A minimal HTTP/1.1 server on 127.0.0.1 for tests; `handler` maps a path to a reply.
pub fn http_server(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let handler = std::sync::Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handler = handler.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = handler(&path);
                let (status, body) = match reply {
                    Reply::Ok(b) => (200, b),
                    Reply::Status(s) => (s, vec![]),
                    Reply::Slow(d) => {
                        std::thread::sleep(d);
                        (200, vec![])
                    }
                };
                let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
            });
        }
    });
    addr
}

/// Demo catalog lines as JSON objects, with image paths made absolute.
pub fn demo_products() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(root().join("demo/catalog.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let abs = |p: &serde_json::Value| {
                serde_json::Value::String(root().join("demo").join(p.as_str().unwrap()).display().to_string())
            };
            if let Some(img) = v.get("image").cloned() {
                v["image"] = abs(&img);
            }
            if let Some(imgs) = v.get("images").and_then(|i| i.as_array()).cloned() {
                v["images"] = imgs.iter().map(abs).collect();
            }
            v
        })
        .collect()
}

pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Run `vitrine` with args, returning (success, stdout, stderr).
pub fn vitrine(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(vitrine_bin()).args(args).env("VITRINE_DEVICE", "cpu").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The five counts of an ingest summary (`--json` of `vitrine index`, or a job's `counts`):
/// ingested, unchanged, updated, deleted, failed.
pub fn summary(v: &serde_json::Value) -> [u64; 5] {
    ["ingested", "unchanged", "updated", "deleted", "failed"].map(|k| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
}

/// Index a catalog with the tiny model and return the `--json` summary.
pub fn index_json(catalog: &Path, data: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["index", catalog.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"];
    let model = tiny_model_dir();
    if !extra.contains(&"--model") {
        args.extend(["--model", model.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let (ok, out, err) = vitrine(&args);
    assert!(ok, "vitrine index failed: {err}");
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A free port on 127.0.0.1 (bound and released; the caller binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `vitrine serve` child process on 127.0.0.1, killed (SIGKILL) when dropped.
pub struct Server {
    pub url: String,
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

/// The reply of [`Server::call`]: status 0 when the connection failed (a process that died mid-request).
pub struct Answer {
    pub status: u16,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&self.bytes).into_owned()))
    }
}

impl Server {
    /// Start `vitrine serve` on `data` with the tiny model; `args` and `envs` are added.
    pub fn start(data: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let url = format!("127.0.0.1:{}", free_port());
        let log = data.with_extension(format!("serve-{}.log", url.rsplit(':').next().unwrap()));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new(vitrine_bin());
        cmd.args(["serve", "--device", "cpu", "--bind", &url, "--data"]).arg(data);
        if !args.contains(&"--model") {
            cmd.arg("--model").arg(tiny_model_dir());
        }
        cmd.args(args)
            .env("VITRINE_LOG", "info")
            .env_remove("VITRINE_ADMIN_KEY")
            .env_remove("VITRINE_SEARCH_KEY")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Server { url: format!("http://{url}"), child: cmd.spawn().unwrap(), log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (at most 120 s) until `/readyz` answers 200.
    pub fn wait_ready(&mut self) -> &mut Self {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("vitrine serve exited ({status}) before it was ready:\n{}", self.log_text());
            }
            if self.call("GET", "/readyz", None, None).status == 200 {
                return self;
            }
            assert!(std::time::Instant::now() < deadline, "not ready after 120 s:\n{}", self.log_text());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Wait (at most `secs`) for the process to exit on its own.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "still running after {secs} s:\n{}", self.log_text());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// One HTTP request; `key` goes in `X-Api-Key`, a `body` is sent as JSON.
    pub fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&serde_json::Value>) -> Answer {
        self.call_raw(method, path, key.map(|k| ("x-api-key", k.to_string())), body.map(|b| ("application/json", b.to_string())))
    }

    /// [`Server::call`] with any auth header and any body with its content type.
    pub fn call_raw(&self, method: &str, path: &str, auth: Option<(&str, String)>, body: Option<(&str, String)>) -> Answer {
        let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(120)).build();
        let mut req = agent.request(method, &format!("{}{path}", self.url));
        if let Some((h, v)) = &auth {
            req = req.set(h, v);
        }
        let res = match &body {
            Some((ct, b)) => req.set("content-type", ct).send_string(b),
            None => req.call(),
        };
        let res = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(_)) => return Answer { status: 0, bytes: vec![] },
        };
        let status = res.status();
        let mut bytes = vec![];
        let _ = std::io::Read::read_to_end(&mut res.into_reader(), &mut bytes);
        Answer { status, bytes }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` distinct products over the demo photos (ids `{prefix}0000`...).
pub fn many_products(prefix: &str, n: usize) -> Vec<serde_json::Value> {
    let base = demo_products();
    (0..n)
        .map(|i| {
            let mut p = base[i % base.len()].clone();
            p["id"] = serde_json::json!(format!("{prefix}{i:04}"));
            p["title"] = serde_json::json!(format!("{} #{i}", p["title"].as_str().unwrap()));
            p
        })
        .collect()
}

/// The test-only crash point of the indexer (see `vitrine_indexer`): SIGKILL itself after this many product writes.
pub const FAULT_ABORT_AFTER_WRITES: &str = "VITRINE_FAULT_ABORT_AFTER_WRITES";
/// What the indexer prints to stderr when that crash point fires.
pub const FAULT_MARKER: &str = "fault injected: killing the process after";

/// [`vitrine`], killed (and reported as failed) if it runs past `secs`: for commands that could
/// serve forever when the check under test is missing.
pub fn vitrine_within(args: &[&str], secs: u64) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = std::process::Command::new(vitrine_bin())
        .args(args)
        .env("VITRINE_DEVICE", "cpu")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let ok = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (ok, std::fs::read_to_string(out).unwrap_or_default(), std::fs::read_to_string(err).unwrap_or_default())
}

/// The test engine's base URL (`VITRINE_TEST_ENGINE`, ending in `/`; a test appends its database
/// name), or `None` with a line saying the engine half is skipped. Under CI (`CI=true`) a missing
/// engine is a failure: `scripts/test.sh` starts seekdb.
pub fn engine_base() -> Option<String> {
    match std::env::var("VITRINE_TEST_ENGINE") {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().trim_end_matches('/').to_string() + "/"),
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "VITRINE_TEST_ENGINE is not set under CI (scripts/test.sh starts seekdb)"
            );
            eprintln!(
                "skipped the engine backend: no VITRINE_TEST_ENGINE (export VITRINE_TEST_ENGINE=$(scripts/seekdb.sh start))"
            );
            None
        }
    }
}

/// A plain connection to the test engine (no database selected), for what the service does not
/// do: dropping test databases.
fn engine_connection(base: &str) -> Option<mysql::Conn> {
    let url = format!("mysql://{}", base.strip_prefix("oceanbase://").unwrap_or(base));
    let opts = mysql::Opts::from_url(&url).ok()?;
    mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).prefer_socket(false)).ok()
}

/// A database of its own on the test engine for one test (or one shared fixture), dropped with
/// this value, on failure too. Named `it_{label}_{pid}_{n}`; the service creates it on first use.
/// The first one of a process first drops what finished test processes left behind.
pub struct EngineDb {
    pub base: String,
    pub name: String,
}

impl EngineDb {
    pub fn new(base: &str, label: &str) -> EngineDb {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        static REAPED: std::sync::Once = std::sync::Once::new();
        REAPED.call_once(|| drop_stale_engine_databases(base));
        let label: String = label.chars().take(32).collect();
        let name = format!("it_{label}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        EngineDb { base: base.to_string(), name }
    }

    /// The `--backend` value.
    pub fn url(&self) -> String {
        format!("{}{}", self.base, self.name)
    }
}

impl Drop for EngineDb {
    fn drop(&mut self) {
        if let Some(mut c) = engine_connection(&self.base) {
            use mysql::prelude::Queryable;
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

/// Drop the `it_…_{pid}_{n}` databases of test processes that are gone: the shared fixtures live
/// in statics, which are never dropped, and a killed run drops nothing. Databases of running
/// processes (another `cargo test` on the same engine) are left alone.
fn drop_stale_engine_databases(base: &str) {
    use mysql::prelude::Queryable;
    let Some(mut c) = engine_connection(base) else { return };
    let Ok(names) = c.query::<String, _>("SHOW DATABASES") else { return };
    for name in names {
        let mut parts = name.rsplit('_');
        let (Some(n), Some(pid)) = (parts.next(), parts.next()) else { continue };
        let ours = name.starts_with("it_") && n.parse::<u32>().is_ok() && pid.parse::<u32>().is_ok();
        if ours && !Path::new("/proc").join(pid).exists() {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"));
        }
    }
}
