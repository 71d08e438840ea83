use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vitrine_core::{ClipOnnx, Device, RuntimeOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model_dir() -> PathBuf {
    root().join("models/tiny-clip")
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
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
    std::fs::create_dir_all(&other).unwrap();
    for f in std::fs::read_dir(tiny_model_dir()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), other.join(f.file_name())).unwrap();
    }
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
