//! The service on both backends, with the same assertions: the embedded data directory and the
//! engine (`--backend oceanbase://…`, seekdb in the tests: `scripts/test.sh` starts it and sets
//! `VITRINE_TEST_ENGINE`). Everything goes through the binary, as an operator would run it:
//! `vitrine index`, `vitrine delete`, `vitrine serve` over HTTP.
//!
//! Without `VITRINE_TEST_ENGINE` the engine half is skipped with a line saying so, except under
//! CI (`CI=true`), where a missing engine is a failure.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;
use crate::service::ids;

const KEY: &str = "test-admin-key";

/// A backend for one test: its `--backend` value, and the engine database (dropped at the end).
struct Backend {
    name: &'static str,
    flag: String,
    engine: Option<EngineDb>,
}

/// The embedded backend, and the engine one when an engine is there, each fresh.
fn backends(test: &str) -> Vec<Backend> {
    let mut out = vec![Backend { name: "embedded", flag: "embedded".into(), engine: None }];
    if let Some(base) = engine_base() {
        let db = EngineDb::new(&base, test);
        out.push(Backend { name: "engine", flag: db.url(), engine: Some(db) });
    }
    out
}

fn demo_catalog(dir: &Path) -> std::path::PathBuf {
    let cat = dir.join("catalog.jsonl");
    write_jsonl(&cat, &demo_products());
    cat
}

#[test]
fn the_service_answers_alike_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let cat = demo_catalog(dir.path());
    let n = demo_products().len() as u64;
    let photo = base64::engine::general_purpose::STANDARD.encode(std::fs::read(root().join("demo/images/sku-014.jpg")).unwrap());
    let mut photo_rankings = vec![];
    for b in backends("service") {
        let ctx = b.name;
        let data = dir.path().join(format!("data-{ctx}"));
        let backend = ["--backend", b.flag.as_str()];
        // Incremental ingest: a second run writes nothing.
        assert_eq!(summary(&index_json(&cat, &data, &backend)), [n, 0, 0, 0, 0], "{ctx}");
        assert_eq!(summary(&index_json(&cat, &data, &backend)), [0, n, 0, 0, 0], "{ctx}");

        // A node with an empty local data directory answers like the one that indexed.
        let node = dir.path().join(format!("node-{ctx}"));
        let serve_data = if b.engine.is_some() { &node } else { &data };
        let mut server = Server::start(serve_data, &["--admin-key", KEY, "--backend", &b.flag], &[]);
        server.wait_ready();
        let get = |path: &str| {
            let a = server.call("GET", path, None, None);
            assert_eq!(a.status, 200, "{ctx} GET {path}: {}", String::from_utf8_lossy(&a.bytes));
            a.json()
        };

        // Keyword + vectors, with explain.
        let r = get("/v1/search?q=galaxies&k=5");
        assert_eq!(ids(&r)[0], "sku-014", "{ctx}: {r}");
        assert!(r["hits"][0]["explain"]["keyword"]["rank"].as_u64() == Some(1), "{ctx}: {r}");
        assert!(r["hits"][0]["highlights"]["title"].as_str().unwrap().contains("<mark>Galaxies</mark>"), "{ctx}: {r}");

        // Filters inside retrieval: every hit passes, and the filtered set is not cut short.
        let r = get("/v1/search?q=poster&k=50&category=poster&price_max=30");
        let hits = r["hits"].as_array().unwrap();
        let want: BTreeSet<String> = demo_products()
            .iter()
            .filter(|p| p["category"] == "poster" && p["price"].as_f64().unwrap() <= 30.0)
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect();
        assert!(!want.is_empty());
        assert_eq!(ids(&r).into_iter().collect::<BTreeSet<_>>(), want, "{ctx}: {r}");
        assert!(hits.iter().all(|h| h["category"] == "poster" && h["price"].as_f64().unwrap() <= 30.0), "{ctx}");

        // Facets count the candidates, with the selected facet counted without its own selection.
        let r = get("/v1/search?q=mug&k=10&facets=true&category=mug");
        let cats = r["facets"]["category"].as_array().unwrap();
        assert!(cats.iter().any(|c| c["value"] == "mug"), "{ctx}: {r}");
        assert!(cats.len() > 1, "disjunctive: other categories stay visible ({ctx}): {r}");

        // Paging: two pages are the first twenty of one ranking.
        let all = ids(&get("/v1/search?q=print&k=20"));
        let (p1, p2) = (ids(&get("/v1/search?q=print&k=10")), ids(&get("/v1/search?q=print&k=10&offset=10")));
        assert_eq!([p1, p2].concat(), all, "{ctx}");

        // A photo of a product finds it first (its own image: cosine 1).
        let a = server.call("POST", "/v1/search/image", None, Some(&json!({"image_base64": photo, "k": 5})));
        assert_eq!(a.status, 200, "{ctx}: {}", String::from_utf8_lossy(&a.bytes));
        let ranking = ids(&a.json());
        assert_eq!(ranking[0], "sku-014", "{ctx}");
        photo_rankings.push(ranking);

        // More like this leaves the product out; a product with several images is one hit.
        let r = get("/v1/products/sku-033/similar?k=10");
        assert!(!ids(&r).contains(&"sku-033".to_string()), "{ctx}: {r}");
        let r = get("/v1/search?q=cozy%20morning%20mug%20set&k=34");
        assert_eq!(ids(&r).iter().filter(|id| *id == "sku-033").count(), 1, "{ctx}: {r}");
        assert_eq!(get("/v1/products/sku-033")["images"].as_array().unwrap().len(), 2, "{ctx}");

        // Writes over HTTP are searchable when acknowledged; deletes too.
        let put = json!({"id": "sku-new", "title": "Quokkaflux lampshade", "category": "decor", "price": 12.0});
        let a = server.call("PUT", "/v1/products/sku-new", Some(KEY), Some(&put));
        assert!(a.status == 200 || a.status == 201, "{ctx}: {}", String::from_utf8_lossy(&a.bytes));
        assert_eq!(ids(&get("/v1/search?q=quokkaflux&k=3"))[0], "sku-new", "{ctx}");
        assert_eq!(server.call("DELETE", "/v1/products/sku-new", Some(KEY), None).status, 200, "{ctx}");
        assert!(!ids(&get("/v1/search?q=quokkaflux&k=3")).contains(&"sku-new".to_string()), "{ctx}");
        assert_eq!(server.call("GET", "/v1/products/sku-new", None, None).status, 404, "{ctx}");

        // Hostile input is refused the same way.
        assert_eq!(server.call("GET", &format!("/v1/search?q={}", "a".repeat(1_001)), None, None).status, 400, "{ctx}");
        drop(server);

        // The CLI deletes too; the next index run puts the product back.
        let (ok, out, err) = vitrine(&["delete", "sku-001", "--data", data.to_str().unwrap(), "--backend", &b.flag]);
        assert!(ok, "{ctx}: {out}{err}");
        assert_eq!(summary(&index_json(&cat, &data, &backend)), [1, n - 1, 0, 0, 0], "{ctx}");
    }
    // The vector channel ranks alike on both backends (exact cosine on either at this size).
    if let [a, b] = &photo_rankings[..] {
        assert_eq!(a, b, "the same photo ranks the same on both backends");
    }
}

#[test]
fn a_killed_index_run_against_the_engine_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &many_products("p", 60));
    for b in backends("kill") {
        let ctx = b.name;
        let data = dir.path().join(format!("data-{ctx}"));
        let out = std::process::Command::new(vitrine_bin())
            .args(["index", cat.to_str().unwrap(), "--data", data.to_str().unwrap(), "--device", "cpu", "--batch", "8"])
            .args(["--backend", &b.flag, "--model"])
            .arg(tiny_model_dir())
            .env(FAULT_ABORT_AFTER_WRITES, "23")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{ctx}: {}", String::from_utf8_lossy(&out.stderr));
        // Exactly the 23 acknowledged products are kept; the rest are embedded now, once.
        assert_eq!(summary(&index_json(&cat, &data, &["--backend", &b.flag])), [60 - 23, 23, 0, 0, 0], "{ctx}");
        let mut server = Server::start(&data, &["--admin-key", KEY, "--backend", &b.flag], &[]);
        server.wait_ready();
        assert_eq!(server.call("GET", "/v1/stats", Some(KEY), None).json()["products"], 60, "{ctx}: none lost, none twice");
        let found = ids(&server.call("GET", "/v1/search?q=poster&k=200", None, None).json());
        let unique: HashSet<&String> = found.iter().collect();
        assert!(!found.is_empty() && unique.len() == found.len(), "{ctx}: no product twice in {found:?}");
        drop(server);
        assert_eq!(summary(&index_json(&cat, &data, &["--backend", &b.flag])), [0, 60, 0, 0, 0], "{ctx}");
    }
}

#[test]
fn the_backend_setting_is_checked_masked_and_refused_where_it_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // A malformed backend never reaches a network; the message says what the forms are.
    for bad in ["sled", "mysql://root@127.0.0.1:3306/x", "oceanbase://root@127.0.0.1/x", "oceanbase://root@127.0.0.1:2881/a;b"] {
        let (ok, _, err) = vitrine(&["delete", "x", "--data", data, "--backend", bad]);
        assert!(!ok && (err.contains("backend") || err.contains("oceanbase://")), "{bad}: {err}");
    }
    // Commands that only the embedded backend has refuse the engine before connecting to it
    // (nothing listens on port 9: a connection attempt would fail differently).
    let engine = "oceanbase://app:hunter2@127.0.0.1:9/shop";
    for cmd in [vec!["rebuild"], vec!["demo", "--no-serve"]] {
        let mut args = cmd.clone();
        args.extend(["--data", data, "--backend", engine]);
        let (ok, _, err) = vitrine(&args);
        assert!(!ok && err.contains("embedded backend only"), "{cmd:?}: {err}");
        assert!(!err.contains("hunter2"), "the password is never printed: {err}");
    }
    // `vitrine config` shows where the backend is, never its password.
    let (ok, out, err) = std::process::Command::new(vitrine_bin())
        .args(["config", "--json", "serve"])
        .env("VITRINE_BACKEND", engine)
        .output()
        .map(|o| {
            (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
        })
        .unwrap();
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["settings"]["backend"]["value"], "oceanbase://app:***@127.0.0.1:9/shop", "{out}");
    assert!(!out.contains("hunter2"));
}

#[test]
fn on_the_engine_any_node_answers_for_any_job_and_search() {
    let Some(b) = backends("nodes").into_iter().find(|b| b.engine.is_some()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a_data, b_data) = (dir.path().join("node-a"), dir.path().join("node-b"));
    let mut a = Server::start(&a_data, &["--admin-key", KEY, "--backend", &b.flag], &[]);
    let mut b_node = Server::start(&b_data, &["--admin-key", KEY, "--backend", &b.flag], &[]);
    a.wait_ready();
    b_node.wait_ready();
    // A catalog job on node A (one good line, one broken) ...
    let body = format!("{}\n{{broken\n", json!({"id": "job-1", "title": "Quokkaflux chair", "category": "chair"}));
    let sent = a.call_raw("POST", "/v1/ingest", Some(("x-api-key", KEY.to_string())), Some(("application/x-ndjson", body)));
    assert_eq!(sent.status, 202, "{}", String::from_utf8_lossy(&sent.bytes));
    let job = sent.json()["job_id"].as_str().unwrap().to_string();
    // ... is answered by node B, which never saw it, until it is done.
    let mut seen = Value::Null;
    for _ in 0..300 {
        let r = b_node.call("GET", &format!("/v1/jobs/{job}"), Some(KEY), None);
        if r.status == 200 {
            seen = r.json();
            if seen["state"] == "done" || seen["state"] == "failed" {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!((seen["id"].as_str(), seen["state"].as_str()), (Some(job.as_str()), Some("done")), "{seen}");
    assert_eq!((seen["counts"]["ingested"].as_u64(), seen["counts"]["failed"].as_u64()), (Some(1), Some(1)), "{seen}");
    let listed = b_node.call("GET", "/v1/jobs", Some(KEY), None).json();
    assert!(listed.to_string().contains(&job), "node B lists node A's job: {listed}");
    // The product node A wrote is searchable on node B at once.
    assert_eq!(ids(&b_node.call("GET", "/v1/search?q=quokkaflux&k=3", None, None).json())[0], "job-1");
    // Another node has no such job: still a 404.
    assert_eq!(b_node.call("GET", "/v1/jobs/no-such-job", Some(KEY), None).status, 404);
}

/// `vitrine reindex --backend`: while it runs, every node goes on searching with the old model
/// and refuses writes (409); afterwards a node on the old model still answers but cannot write,
/// a new writer with the old model is refused, and a node on the new model serves and writes.
#[test]
fn a_reindex_on_the_engine_fences_writes_and_switches_every_new_node_over() {
    let Some(b) = backends("reindex").into_iter().find(|b| b.engine.is_some()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cat = demo_catalog(dir.path());
    let n = demo_products().len() as u64;
    let data = dir.path().join("data");
    assert_eq!(summary(&index_json(&cat, &data, &["--backend", &b.flag])), [n, 0, 0, 0, 0]);
    let mut old_node = Server::start(&dir.path().join("node-old"), &["--admin-key", KEY, "--backend", &b.flag], &[]);
    old_node.wait_ready();
    // Each write differs (an unchanged product is not written again).
    let writes = AtomicU32::new(0);
    let put = |s: &Server, id: &str| {
        let title = format!("Zorblax lamp {}", writes.fetch_add(1, Ordering::Relaxed));
        s.call("PUT", &format!("/v1/products/{id}"), Some(KEY), Some(&json!({ "title": title })))
    };
    assert_eq!(put(&old_node, "before").status, 200);

    let other = other_tiny_model(dir.path());
    let reindex = std::process::Command::new(vitrine_bin())
        .args(["reindex", "--data", data.to_str().unwrap(), "--device", "cpu", "--json", "--backend", &b.flag, "--model"])
        .arg(&other)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Fenced: writes on the running node are refused with the reason, searches still answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut during_got_in = false;
    let refused = loop {
        let a = put(&old_node, "during");
        if a.status == 409 {
            break a.json();
        }
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
        during_got_in = true;
        assert!(std::time::Instant::now() < deadline, "the reindex never fenced writes");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(refused.to_string().contains("reindex"), "{refused}");
    assert_eq!(ids(&old_node.call("GET", "/v1/search?q=galaxies&k=3", None, None).json())[0], "sku-014");
    let out = reindex.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let res: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let products = n + 1 + u64::from(during_got_in); // the catalog, "before", and "during" if it got in first
    assert_eq!(summary(&res)[0], products, "every product re-embedded once: {res}");

    // The old node answers from the old model's vectors, and refuses writes: restart it.
    assert_eq!(ids(&old_node.call("GET", "/v1/search?q=galaxies&k=3", None, None).json())[0], "sku-014");
    let a = put(&old_node, "after");
    assert_eq!(a.status, 409, "{}", String::from_utf8_lossy(&a.bytes));
    // (the writer finds the engine's model is not its own before it gets to the fence check)
    let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("indexed with model") && msg.contains(&format!("--backend {}", b.flag)), "{msg}");
    // A writer with the old model is refused up front; one with the new model writes.
    let (ok, _, err) = vitrine(&["index", cat.to_str().unwrap(), "--data", data.to_str().unwrap(), "--backend", &b.flag]);
    assert!(!ok && err.contains("model"), "{err}");
    let on_new = ["--backend", b.flag.as_str(), "--model", other.to_str().unwrap()];
    assert_eq!(summary(&index_json(&cat, &data, &on_new)), [0, n, 0, 0, 0], "nothing left to re-embed");
    let mut new_node = Server::start(&dir.path().join("node-new"), &[&["--admin-key", KEY][..], &on_new[..]].concat(), &[]);
    new_node.wait_ready();
    assert_eq!(put(&new_node, "after").status, 200);
    let r = new_node.call("GET", "/v1/search?q=zorblax&k=5", None, None).json();
    let found: HashSet<String> = ids(&r).into_iter().collect();
    assert!(found.contains("before") && found.contains("after"), "{r}");
    assert_eq!(new_node.call("GET", "/v1/stats", Some(KEY), None).json()["products"], products + 1);
}
