//! The `vitrine` commands and flags, run as a user would.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::json;
use vitrine_searcher::{SearchQuery, Searcher};

use crate::common::*;

fn lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn embed_text_prints_normalized_json_lines_with_ids() {
    let out = Command::new(vitrine_bin())
        .args(["embed", "text", "a photo of a cat", "red leather handbag", "--ids", "--device", "cpu", "--model"])
        .arg(tiny_model_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["input"], "a photo of a cat");
    let reference = read_json(&fixture("clip/reference.json"));
    let want = reference["texts"].as_array().unwrap().iter().find(|t| t["text"] == "a photo of a cat").unwrap();
    assert_eq!(rows[0]["ids"], want["ids"]);
    let v: Vec<f64> = rows[1]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "L2-normalized, got norm {norm}");
}

#[test]
fn embed_image_reports_bad_files_and_embeds_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let good = fixture("clip/images/coffee.jpg");
    let out = Command::new(vitrine_bin())
        .args(["embed", "image", "--device", "cpu", "--model"])
        .arg(tiny_model_dir())
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed input makes the exit status non-zero");
    let rows = lines(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["input"], good.display().to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.jpg"), "the error names the input: {err}");
}

#[test]
fn missing_model_directory_is_a_clear_error() {
    let out = Command::new(vitrine_bin()).args(["embed", "text", "x", "--model", "/nonexistent/model"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model") && err.contains("vitrine model fetch"), "{err}");
}

fn run_in_root(args: &[&str]) -> (std::process::Output, String, String) {
    let out = Command::new(vitrine_bin()).args(args).current_dir(root()).env("VITRINE_DEVICE", "cpu").output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out, o, e)
}

fn top_ids(data: &Path, q: &str) -> Vec<String> {
    let s = Searcher::open(data, 64).unwrap();
    s.search(&SearchQuery { text: Some(q.into()), k: 10, ..Default::default() }).unwrap().hits.into_iter().map(|h| h.id).collect()
}

#[test]
fn rebuild_restores_lost_indexes_from_the_store_without_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    index_json(&root().join("demo/catalog.jsonl"), &data, &[]);
    let queries = ["espresso cup", "orange astronaut", "tabby cat poster"];
    let before: Vec<Vec<String>> = queries.iter().map(|q| top_ids(&data, q)).collect();
    // Every derived index is gone; only the store is left.
    std::fs::remove_dir_all(data.join("generations")).unwrap();
    std::fs::remove_file(data.join("CURRENT")).unwrap();
    // No --model: rebuild never loads one.
    let (out, stdout, err) = run_in_root(&["rebuild", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{err}");
    let g = Searcher::open(&data, 64).unwrap().snapshot().unwrap();
    assert_eq!(stdout.trim(), format!("rebuilt generation {}", g.manifest.generation));
    assert_eq!(g.manifest.products, 34);
    assert_eq!((g.manifest.segments.len(), g.manifest.tombstones()), (1, 0));
    let after: Vec<Vec<String>> = queries.iter().map(|q| top_ids(&data, q)).collect();
    assert_eq!(after, before);
    // A directory with nothing indexed is refused, with what to do instead.
    let (out, _, err) = run_in_root(&["rebuild", "--data", dir.path().join("empty").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(err.contains("run `vitrine index` first"), "{err}");
}

#[test]
fn demo_no_serve_indexes_the_demo_catalog_with_the_bundled_model_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let (out, stdout, err) = run_in_root(&["demo", "--no-serve", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout.trim(), "ingested 34, unchanged 0, updated 0, deleted 0, failed 0");
    assert!(!err.contains("open http://"), "it does not serve: {err}");
    let s = Searcher::open(&data, 64).unwrap();
    let g = s.snapshot().unwrap();
    assert_eq!(g.manifest.products, 34);
    assert_eq!(g.manifest.model.dim, 64, "the bundled tiny model");
    // A second run changes nothing.
    let (out, stdout, err) = run_in_root(&["demo", "--no-serve", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout.trim(), "ingested 0, unchanged 34, updated 0, deleted 0, failed 0");
}

#[test]
fn model_list_prints_each_known_model_with_its_repository() {
    let (out, stdout, err) = run_in_root(&["model", "list"]);
    assert!(out.status.success(), "{err}");
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    let names: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        names,
        [
            ("clip-vit-b32", "Xenova/clip-vit-base-patch32"),
            ("clip-vit-b16", "Xenova/clip-vit-base-patch16"),
            ("clip-vit-l14", "Xenova/clip-vit-large-patch14"),
            ("siglip-b16-224", "Xenova/siglip-base-patch16-224"),
            ("siglip-b16-256", "Xenova/siglip-base-patch16-256"),
            ("siglip-l16-384", "Xenova/siglip-large-patch16-384"),
            ("siglip2-b16-224", "onnx-community/siglip2-base-patch16-224-ONNX")
        ]
    );
    assert!(stdout.lines().next().unwrap().contains("(default)"), "{stdout}");
}

#[test]
fn model_fetch_takes_a_revision_and_force_downloads_again() {
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    let endpoint = http_server(move |path| {
        seen.lock().unwrap().push(path.to_string());
        match path.strip_prefix("/acme/tiny-clip/resolve/v2/") {
            Some(f) => match std::fs::read(tiny_model_dir().join(f.trim_start_matches("onnx/"))) {
                Ok(bytes) => Reply::Ok(bytes),
                Err(_) => Reply::Status(404),
            },
            None => Reply::Status(404),
        }
    });
    let dest = tempfile::tempdir().unwrap();
    let fetch = |extra: &[&str]| {
        let mut args =
            vec!["model", "fetch", "acme/tiny-clip", "--endpoint", endpoint.as_str(), "--dir", dest.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        Command::new(vitrine_bin()).args(&args).output().unwrap()
    };
    let take = || std::mem::take(&mut *requests.lock().unwrap());
    // The default revision is main, which this hub does not have.
    let out = fetch(&[]);
    assert!(!out.status.success());
    assert_eq!(take(), ["/acme/tiny-clip/resolve/main/onnx/vision_model.onnx"]);
    let out = fetch(&["--revision", "v2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = take();
    // The four model files, then the optional config.json (this hub has it) and
    // tokenizer_config.json (a 404, skipped).
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.iter().all(|p| p.starts_with("/acme/tiny-clip/resolve/v2/")), "{got:?}");
    let model = dest.path().join("tiny-clip");
    assert!(model.join("config.json").is_file() && !model.join("tokenizer_config.json").exists());
    assert!(read_json(&model.join("vitrine-model.json"))["source"].as_str().unwrap().ends_with("acme/tiny-clip@v2"));
    // Present files are not fetched again ...
    std::fs::write(model.join("tokenizer.json"), b"{}").unwrap();
    let out = fetch(&["--revision", "v2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        take(),
        ["/acme/tiny-clip/resolve/v2/tokenizer_config.json"],
        "nothing is downloaded when every file is present; only the optional file the hub lacks is asked for again"
    );
    assert_eq!(std::fs::read(model.join("tokenizer.json")).unwrap(), b"{}", "a present file is kept as it is");
    // ... unless --force says so.
    let out = fetch(&["--revision", "v2", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(take().len(), 6);
    assert_eq!(
        std::fs::read(model.join("tokenizer.json")).unwrap(),
        std::fs::read(tiny_model_dir().join("tokenizer.json")).unwrap()
    );
}

#[test]
fn serve_flags_set_the_search_key_turn_image_urls_off_and_take_ef_search() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    index_json(&root().join("demo/catalog.jsonl"), &data, &[]);
    let url_query = json!({"image_url": "http://127.0.0.1:9/q.jpg"});
    {
        let mut server = Server::start(
            &data,
            &["--search-key", "s3arch", "--admin-key", "adm1n", "--no-image-urls", "--ef-search", "300"],
            &[],
        );
        server.wait_ready();
        let a = server.call("GET", "/v1/search?q=poster", None, None);
        assert_eq!((a.status, a.json()["error"]["code"].as_str()), (401, Some("unauthorized")), "{}", a.json());
        assert_eq!(server.call("GET", "/v1/search?q=poster", Some("wrong"), None).status, 403);
        let a = server.call("GET", "/v1/search?q=poster", Some("s3arch"), None);
        assert_eq!(a.status, 200, "{}", a.json());
        assert!(!a.json()["hits"].as_array().unwrap().is_empty());
        let a = server.call("POST", "/v1/search/image", Some("s3arch"), Some(&url_query));
        assert_eq!((a.status, a.json()["error"]["message"].as_str()), (400, Some("image_url is disabled on this server")));
    }
    {
        // The same from the environment; without the flag, URLs are on (and this one is refused as private).
        let mut server = Server::start(&data, &[], &[("VITRINE_SEARCH_KEY", "from-env")]);
        server.wait_ready();
        assert_eq!(server.call("GET", "/v1/search?q=poster", None, None).status, 401);
        let a = server.call("POST", "/v1/search/image", Some("from-env"), Some(&url_query));
        let message = a.json()["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(a.status == 400 && message.contains("non-public"), "{message}");
    }
    {
        // Without a search key, search is open.
        let mut server = Server::start(&data, &[], &[]);
        server.wait_ready();
        assert_eq!(server.call("GET", "/v1/search?q=poster", None, None).status, 200);
    }
    let out = Command::new(vitrine_bin()).args(["serve", "--ef-search", "many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ef-search"));
}

/// Run `vitrine` from `cwd` with stdout and stderr captured (not a terminal).
fn run_from(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(vitrine_bin());
    cmd.args(args).current_dir(cwd).env("VITRINE_DEVICE", "cpu").env_remove("NO_COLOR").env_remove("VITRINE_MODEL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn index_output_has_no_colour_codes_and_one_progress_line_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let catalog = root().join("demo/catalog.jsonl");
    let model = tiny_model_dir();
    let args = ["index", catalog.to_str().unwrap(), "--data", data.to_str().unwrap(), "--model", model.to_str().unwrap()];
    let (ok, text) = run_from(&root(), &args, &[("VITRINE_LOG", "info")]);
    assert!(ok, "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in redirected output: {text:?}");
    assert!(text.contains(" INFO "), "the log is still there: {text}");
    // The end is said once, by the summary (the progress line once printed "34/34" twice).
    assert_eq!(text.matches("34/34").count(), 0, "{text}");
    assert_eq!(text.matches("ingested 34,").count(), 1, "{text}");
    assert_eq!(text.matches("indexing ").count(), 1, "{text}");
}

#[test]
fn the_random_weight_model_is_named_and_a_clean_start_logs_no_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    index_json(&root().join("demo/catalog.jsonl"), &data, &[]);
    let (ok, text) =
        run_from(&root(), &["index", "demo/catalog.jsonl", "--data", data.to_str().unwrap(), "--model", "models/tiny-clip"], &[]);
    assert!(ok, "{text}");
    assert!(text.contains("warning: the model in models/tiny-clip (tiny-clip-random) has random weights"), "{text}");
    // A serving process that builds a generation at start (a write made while it was down) and
    // lives on: tantivy's meta.json watcher on the build folder used to warn once it was renamed.
    let mut server = Server::start(&data, &["--admin-key", "k"], &[]);
    server.wait_ready();
    let product = json!({"id": "new-1", "title": "A plain mug"});
    assert_eq!(server.call("PUT", "/v1/products/new-1", Some("k"), Some(&product)).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let log = server.log_text();
    assert!(log.contains("has random weights"), "serve warns about the model too: {log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains("WARN ")).collect();
    assert!(warnings.is_empty(), "a clean start logs no warnings: {warnings:#?}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn common_mistakes_say_what_happened_once_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = root().join("demo/catalog.jsonl");
    let cat = catalog.to_str().unwrap();
    let model = tiny_model_dir();
    let model = model.to_str().unwrap();
    // A data dir that is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for args in [
        vec!["index", cat, "--data", file.to_str().unwrap(), "--model", model],
        vec!["rebuild", "--data", file.to_str().unwrap()],
        vec!["delete", "x", "--data", file.to_str().unwrap()],
    ] {
        let (ok, text) = run_from(dir.path(), &args, &[]);
        assert!(!ok, "{args:?}");
        assert!(text.contains("is a file, not a folder") && text.contains("--data"), "{args:?}: {text}");
        assert!(!text.contains("os error 17"), "{text}");
    }
    // A missing model: the path once, and what to pass.
    let (ok, text) = run_from(dir.path(), &["embed", "text", "x", "--model", "/nonexistent/model"], &[]);
    assert!(!ok);
    assert_eq!(text.matches("/nonexistent/model").count(), 1, "{text}");
    assert!(text.contains("--model DIR"), "{text}");
    // The default model outside the repository: where it is, not another model.
    let (ok, text) = run_from(dir.path(), &["embed", "text", "x"], &[]);
    assert!(!ok);
    assert_eq!(text.matches("models/tiny-clip").count(), 3, "{text}");
    assert!(
        text.contains("run from the repository's root") && text.contains("--model /path/to/vitrine/models/tiny-clip"),
        "{text}"
    );
    // The catalog is checked before the model loads: a broken model is never reached.
    let bad_catalog = dir.path().join("c.jsonl");
    std::fs::write(&bad_catalog, "id,title\n1,x\n").unwrap();
    let data = dir.path().join("data");
    for (path, want) in [
        (dir.path().join("missing.jsonl"), "No such file"),
        (bad_catalog.clone(), "the first line is not a JSON object"),
        (dir.path().to_path_buf(), "is not a file"),
    ] {
        let args = ["index", path.to_str().unwrap(), "--data", data.to_str().unwrap(), "--model", "/nonexistent/model"];
        let (ok, text) = run_from(dir.path(), &args, &[]);
        assert!(!ok);
        assert!(text.contains(want) && text.contains("catalog"), "{text}");
        assert!(!text.contains("/nonexistent/model"), "the model was not looked at: {text}");
    }
}

#[test]
fn demo_keeps_products_added_beside_the_demo_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let d = data.to_str().unwrap();
    let (out, _, err) = run_in_root(&["demo", "--no-serve", "--data", d]);
    assert!(out.status.success(), "{err}");
    // Products added later, as the dashboard would (here through the CLI, a catalog of its own).
    let extra = dir.path().join("extra.jsonl");
    write_jsonl(&extra, &[json!({"id": "mine-1", "title": "My own mug"}), json!({"id": "mine-2", "title": "My own cup"})]);
    index_json(&extra, &data, &[]);
    let (out, stdout, err) = run_in_root(&["demo", "--no-serve", "--data", d]);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout.trim(), "ingested 0, unchanged 34, updated 0, deleted 0, failed 0");
    assert!(err.contains("kept 2 product(s) that are not in the demo catalog"), "{err}");
    let g = Searcher::open(&data, 64).unwrap().snapshot().unwrap();
    assert_eq!(g.manifest.products, 36);
}

/// tantivy's meta.json watcher threads alive in this process (Linux names threads by their
/// first 15 bytes: `thread-tantivy-`).
fn tantivy_watchers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("thread-tantivy-"))
                .count()
        })
        .unwrap_or(0)
}

/// The cause of the start-up WARN "Failed to open meta file .tmp-N/keyword/meta.json": a build's
/// keyword index watched its meta.json from a thread that polls every 500 ms, and the folder was
/// renamed under it. A build starts no such thread now (a race in time is not a test; a thread is).
#[test]
fn building_a_generation_starts_no_meta_json_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ix = vitrine_indexer::Indexer::open(
        &data,
        Arc::new(vitrine_model::FakeEmbedder::new(16)),
        vitrine_indexer::IndexOptions::default(),
    )
    .unwrap();
    for round in 0..3 {
        let p: vitrine_core::catalog::Product =
            serde_json::from_value(json!({"id": format!("p{round}"), "title": format!("Product {round}")})).unwrap();
        ix.put(vec![p]).unwrap();
        assert_eq!(tantivy_watchers(), 0, "after build {round}");
    }
    let g = Searcher::open(&data, 64).unwrap();
    assert_eq!(g.snapshot().unwrap().manifest.products, 3);
    assert_eq!(tantivy_watchers(), 0, "the searcher reloads by hand too");
}
