//! `vitrine model fetch` against a local HTTP server that serves the tiny model as a hub would.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::{tiny_model_dir, vitrine_bin};

/// Serves `/{repo}/resolve/main/{path}` from the tiny model dir; counts requests; 404 otherwise.
fn hub(repo: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() <= 2 {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let prefix = format!("/{repo}/resolve/main/");
            let file = path.strip_prefix(&prefix).map(|p| p.trim_start_matches("onnx/").to_string());
            let body = file.and_then(|f| std::fs::read(tiny_model_dir().join(f)).ok());
            match body {
                Some(b) => {
                    write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len()).unwrap();
                    stream.write_all(&b).unwrap();
                }
                None => write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap(),
            }
        }
    });
    (addr, hits)
}

#[test]
fn fetch_downloads_a_complete_model_directory() {
    let (endpoint, _) = hub("acme/tiny-clip");
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new(vitrine_bin())
        .args(["model", "fetch", "acme/tiny-clip", "--endpoint", &endpoint, "--dir"])
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["vision_model.onnx", "text_model.onnx", "tokenizer.json", "preprocessor_config.json"] {
        let got = std::fs::read(dest.path().join("tiny-clip").join(f)).unwrap();
        let want = std::fs::read(tiny_model_dir().join(f)).unwrap();
        assert!(got == want, "{f} differs");
    }
    assert!(!dest.path().join("tiny-clip/vision_model.part").exists());
    // The fetched model is usable as is.
    let out = Command::new(vitrine_bin())
        .args(["embed", "text", "hello", "--device", "cpu", "--model"])
        .arg(dest.path().join("tiny-clip"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn fetch_of_a_missing_repository_fails_without_retrying_and_names_the_url() {
    let (endpoint, hits) = hub("acme/tiny-clip");
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new(vitrine_bin())
        .args(["model", "fetch", "acme/nope", "--endpoint", &endpoint, "--dir"])
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("acme/nope/resolve/main/onnx/vision_model.onnx") && err.contains("404"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a 404 is not retried");
    assert!(!dest.path().join("nope/vision_model.onnx").exists());
}

#[test]
fn unknown_short_names_list_the_known_ones() {
    let out = Command::new(vitrine_bin()).args(["model", "fetch", "clip-huge"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("clip-vit-b32"));
}
