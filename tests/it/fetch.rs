//! `vitrine model fetch` against a local HTTP server that serves the tiny model as a hub would.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::{quantized_tiny_model_dir, tiny_model_dir, vitrine_bin};

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
            // The tiny model with its quantized towers, as a hub export lays them out under onnx/.
            let body = file.and_then(|f| std::fs::read(quantized_tiny_model_dir().join(f)).ok());
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
fn fetch_with_a_variant_downloads_its_towers_and_auto_loads_them() {
    let (endpoint, _) = hub("acme/tiny-clip");
    let dest = tempfile::tempdir().unwrap();
    let fetch = |extra: &[&str]| {
        Command::new(vitrine_bin())
            .args(["model", "fetch", "acme/tiny-clip", "--endpoint", &endpoint, "--dir"])
            .arg(dest.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = fetch(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model = dest.path().join("tiny-clip");
    assert!(!model.join("vision_model_quantized.onnx").exists(), "no variant unless asked");
    // Asked later: only the variant's files are new, the rest are kept.
    let out = fetch(&["--variant", "quantized"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("vision_model.onnx: already present"), "{err}");
    for f in ["vision_model_quantized.onnx", "text_model_quantized.onnx"] {
        assert!(std::fs::read(model.join(f)).unwrap() == std::fs::read(quantized_tiny_model_dir().join(f)).unwrap(), "{f}");
    }
    // A variant the hub does not have fails and names the URL.
    let out = fetch(&["--variant", "fp16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("onnx/vision_model_fp16.onnx"), "{err}");
    let opts = vitrine_model::RuntimeOptions { device: vitrine_model::Device::Cpu, intra_threads: 1, ..Default::default() };
    let m = vitrine_model::ClipOnnx::open(&model, &opts).unwrap();
    use vitrine_model::Embedder;
    assert_eq!(m.model_id().variant, vitrine_model::model::Variant::Quantized);
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

// Image sources under their policy, end to end: the operator's CLI and a client over HTTP.

mod sources {
    use std::sync::Arc;

    use actix_web::http::StatusCode;
    use actix_web::test::{self, TestRequest};
    use serde_json::{json, Value};

    use crate::common::*;

    fn report_of(data: &std::path::Path) -> String {
        let report = std::fs::read_dir(data.join("reports")).unwrap().next().unwrap().unwrap().path();
        std::fs::read_to_string(report).unwrap()
    }

    #[test]
    fn the_cli_reads_paths_beside_the_catalog_and_never_devices_fifos_or_bad_urls() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        std::fs::copy(root().join("demo/images/sku-020.jpg"), dir.path().join("img/a.jpg")).unwrap();
        let fifo = dir.path().join("pipe.jpg");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.jpg")).unwrap();
        let cat = dir.path().join("c.jsonl");
        write_jsonl(
            &cat,
            &[
                json!({"id": "relative", "title": "Relative path", "image": "img/a.jpg"}),
                json!({"id": "fifo", "title": "A pipe", "image": "pipe.jpg"}),
                json!({"id": "zero", "title": "Endless zeros", "image": "/dev/zero"}),
                json!({"id": "zero-link", "title": "Zeros by a link", "image": "zero.jpg"}),
                json!({"id": "crlf", "title": "Header injection", "image": "http://127.0.0.1:9/a.jpg\r\nX-Evil: 1"}),
            ],
        );
        let data = dir.path().join("data");
        let s = index_json(&cat, &data, &["--fetch-retries", "0"]);
        assert_eq!(s["ingested"], 5, "every product has a title: {s}");
        assert_eq!(s["failed"], 0, "{s}");
        let report = report_of(&data);
        assert!(!report.contains("img/a.jpg"), "the relative image loaded:\n{report}");
        for (id, why) in [
            ("fifo", "not a regular file"),
            ("zero", "refused by policy"),
            ("zero-link", "refused by policy"),
            ("crlf", "bad URL"),
        ] {
            let line =
                report.lines().find(|l| l.contains(&format!("\"id\":\"{id}\""))).unwrap_or_else(|| panic!("{id}:\n{report}"));
            assert!(line.contains(why), "{id}: {line}");
        }
        let store = vitrine_store::store::Store::open(&data.join("store")).unwrap();
        let rel = store.get("relative").unwrap().unwrap();
        assert_eq!(rel.image_vectors, 1);
        assert_eq!(rel.product.images, vec![dir.path().canonicalize().unwrap().join("img/a.jpg").display().to_string()]);
    }

    fn embedder() -> Arc<dyn vitrine_model::Embedder> {
        let opts = vitrine_model::RuntimeOptions { device: vitrine_model::Device::Cpu, intra_threads: 2, ..Default::default() };
        Arc::new(vitrine_model::ClipOnnx::open(&tiny_model_dir(), &opts).unwrap())
    }

    #[actix_web::test]
    async fn a_client_can_neither_store_nor_read_server_files_nor_reach_private_urls() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cat = dir.path().join("c.jsonl");
        write_jsonl(&cat, &demo_products()[..2]);
        index_json(&cat, &data, &[]);
        let config = vitrine_web::ServeConfig { data, admin_key: Some("k".into()), ..Default::default() };
        let app = test::init_service(vitrine_web::app(vitrine_web::build_state_with_model(config, embedder()).unwrap())).await;
        let call = |req: TestRequest| {
            let app = &app;
            async move {
                let res = test::call_service(app, req.to_request()).await;
                let status = res.status();
                let body = test::read_body(res).await;
                (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
            }
        };
        let demo_image = root().join("demo/images/sku-027.jpg").display().to_string();
        let hostile = [
            "/etc/passwd",
            "../../../etc/shadow",
            "/proc/self/environ",
            "/dev/zero",
            "file:///etc/hostname",
            demo_image.as_str(),
        ];
        let mut images: Vec<&str> = hostile.to_vec();
        images.push("http://169.254.169.254/latest/meta-data/");
        images.push("http://127.0.0.1:9/a.jpg\r\nX-Evil: 1");
        let (s, v) = call(
            TestRequest::put()
                .uri("/v1/products/hostile")
                .insert_header(("x-api-key", "k"))
                .set_json(json!({"title": "Hostile sources", "images": images})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let warnings = v["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 8, "{v}");
        for w in warnings {
            let reason = w.as_str().unwrap();
            assert!(
                reason.contains("refused by policy") || reason.contains("bad URL") || reason.contains("non-public"),
                "{reason}"
            );
        }
        // Nothing local was stored, so nothing local can be served.
        let (_, p) = call(TestRequest::get().uri("/v1/products/hostile")).await;
        // The one reference the policy let through (a URL) was refused when fetched: no image is
        // stored, and the product says so without the address.
        assert_eq!(p["images"], json!([]), "{p}");
        assert_eq!(p["image_errors"], json!(["image 1: could not be read"]), "{p}");
        for n in 1..hostile.len() {
            let (s, _) = call(TestRequest::get().uri(&format!("/v1/images/hostile/{n}"))).await;
            assert_eq!(s, StatusCode::NOT_FOUND);
        }
        // A refusal says what was refused and why, once, in plain words (it once read "Dns
        // Failed: resolve dns name '127.0.0.1:18080'" with the URL twice).
        for (url, host) in [("http://127.0.0.1:18080/x.jpg", "127.0.0.1"), ("http://localhost:18080/x.jpg", "localhost")] {
            let (s, v) = call(TestRequest::post().uri("/v1/search/image").set_json(json!({"image_url": url}))).await;
            assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("image_url_failed")), "{v}");
            let m = v["error"]["message"].as_str().unwrap();
            assert_eq!(m.matches(host).count(), 1, "{m}");
            assert!(m.contains("refused") && m.contains("non-public"), "{m}");
            assert!(!m.contains("18080") && !m.to_lowercase().contains("dns"), "{m}");
        }
        // A searcher's image_url: typed errors, each a 4xx (a CR/LF once answered 500).
        for url in [
            "http://127.0.0.1:9/a.jpg\r\nX-Evil: 1",
            "/etc/passwd",
            "file:///etc/passwd",
            "http://[::ffff:127.0.0.1]:9/",
            "http://[::127.0.0.1]:9/",
            "http://[64:ff9b::7f00:1]:9/",
            "http://2130706433:9/",
        ] {
            let (s, v) = call(TestRequest::post().uri("/v1/search/image").set_json(json!({"image_url": url}))).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{url:?}: {v}");
        }
    }
}
