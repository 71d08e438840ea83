//! `vitrine index` end to end: incremental ingest, bad input, deletes, crash safety, model checks.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use vitrine_searcher::{SearchQuery, Searcher};

use crate::common::*;

fn searchable_ids(data: &Path) -> Vec<String> {
    let s = Searcher::open(data, 64).unwrap();
    let g = s.snapshot().unwrap();
    let (products, total) = vitrine_searcher::list_products(&g, None, 0, 100_000).unwrap();
    assert_eq!(products.len(), total);
    let mut ids: Vec<String> = products.into_iter().map(|p| p.product.id).collect();
    ids.sort();
    ids
}

#[test]
fn the_summary_json_has_exactly_the_five_keys_and_reruns_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cat = root().join("demo/catalog.jsonl");
    let first = index_json(&cat, &dir.path().join("data"), &[]);
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["deleted", "failed", "ingested", "unchanged", "updated"]);
    assert_eq!(summary(&first), [34, 0, 0, 0, 0]);
    let again = index_json(&cat, &dir.path().join("data"), &[]);
    assert_eq!(summary(&again), [0, 34, 0, 0, 0]);
}

#[test]
fn changes_are_incremental_and_delete_missing_removes_only_what_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cat = dir.path().join("c.jsonl");
    let mut rows = demo_products();
    write_jsonl(&cat, &rows);
    assert_eq!(summary(&index_json(&cat, &data, &[])), [34, 0, 0, 0, 0]);
    // One changed text, one changed image bytes, one removed.
    rows[0]["title"] = json!("Astronaut Portrait Poster, framed");
    let img = dir.path().join("swapped.jpg");
    std::fs::copy(root().join("demo/images/sku-020.jpg"), &img).unwrap();
    rows[1]["image"] = json!(img.display().to_string());
    let removed = rows.pop().unwrap()["id"].as_str().unwrap().to_string();
    write_jsonl(&cat, &rows);
    assert_eq!(summary(&index_json(&cat, &data, &["--delete-missing"])), [0, 31, 2, 1, 0]);
    let ids = searchable_ids(&data);
    assert_eq!(ids.len(), 33);
    assert!(!ids.contains(&removed));
    // Editing the image file in place (same path, new bytes) is a change too.
    std::fs::copy(root().join("demo/images/sku-021.jpg"), &img).unwrap();
    assert_eq!(summary(&index_json(&cat, &data, &[])), [0, 32, 1, 0, 0]);
    // `vitrine delete` removes named products.
    let (ok, out, _) = vitrine(&["delete", "sku-001", "nope", "--data", data.to_str().unwrap()]);
    assert!(!ok, "an unknown id makes the exit status non-zero");
    assert!(out.contains("deleted sku-001"));
    assert_eq!(searchable_ids(&data).len(), 32);
}

#[test]
fn bad_records_are_reported_and_skipped_and_nothing_indexed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = demo_products();
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &good[..5]);
    assert_eq!(summary(&index_json(&cat, &data, &[])), [5, 0, 0, 0, 0]);

    let server = http_server(|path| match path {
        "/ok.jpg" => Reply::Ok(std::fs::read(root().join("demo/images/sku-011.jpg")).unwrap()),
        "/slow.jpg" => Reply::Slow(Duration::from_secs(5)),
        _ => Reply::Status(404),
    });
    let corrupt = dir.path().join("corrupt.jpg");
    let mut bytes = std::fs::read(root().join("demo/images/sku-002.jpg")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).unwrap();
    // A PNG that claims to be 100000 x 100000 pixels.
    let bomb = dir.path().join("bomb.png");
    let mut png = std::fs::read(root().join("tests/fixtures/clip/images/camera.png")).unwrap();
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    std::fs::write(&bomb, &png).unwrap();
    let mut text = String::new();
    for p in &good[..5] {
        text.push_str(&format!("{p}\n"));
    }
    let lines = [
        "{\"id\": \"broken\", \"title\": ".to_string(),
        json!({"title": "no id here"}).to_string(),
        json!({"id": "sku-001", "title": "duplicate"}).to_string(),
        json!({"id": "missing-image", "image": "/nonexistent/x.jpg"}).to_string(),
        json!({"id": "corrupt-image", "image": corrupt.display().to_string()}).to_string(),
        json!({"id": "url-404", "image": format!("{server}/gone.jpg")}).to_string(),
        json!({"id": "url-timeout", "image": format!("{server}/slow.jpg")}).to_string(),
        json!({"id": "bomb", "image": bomb.display().to_string()}).to_string(),
        json!({"id": "url-ok", "title": "Rocket notebook from a URL", "image": format!("{server}/ok.jpg")}).to_string(),
        json!({"id": "text-only-after-image-failure", "title": "Red ceramic mug", "image": format!("{server}/gone.jpg")})
            .to_string(),
    ];
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&cat, text).unwrap();
    let s = index_json(&cat, &data, &["--fetch-timeout-secs", "1", "--fetch-retries", "1"]);
    // url-ok and the text-only product are new; 5 unchanged; 8 failures.
    assert_eq!(summary(&s), [2, 5, 0, 0, 8], "{s}");
    let report = std::fs::read_dir(data.join("reports")).unwrap().next().unwrap().unwrap().path();
    let report = std::fs::read_to_string(report).unwrap();
    for needle in [
        "malformed JSON",
        "missing id",
        "duplicate id",
        "/nonexistent/x.jpg",
        "corrupt.jpg",
        "HTTP 404",
        "slow.jpg",
        "bomb.png",
        "image skipped, product indexed without it",
    ] {
        assert!(report.contains(needle), "report lacks {needle:?}:\n{report}");
    }
    let ids = searchable_ids(&data);
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert!(ids.contains(&"url-ok".to_string()) && ids.contains(&"text-only-after-image-failure".to_string()));
    // The text-only product is found by its words.
    let s = Searcher::open(&data, 64).unwrap();
    let r = s.search(&SearchQuery { text: Some("ceramic mug".into()), k: 3, ..Default::default() }).unwrap();
    assert_eq!(r.hits[0].id, "text-only-after-image-failure");
    // --delete-missing with unreadable lines deletes nothing (their ids are unknown).
    let s = index_json(&cat, &data, &["--delete-missing", "--fetch-timeout-secs", "1", "--fetch-retries", "0"]);
    assert_eq!(summary(&s)[3], 0);
    assert_eq!(searchable_ids(&data).len(), 7);
}

/// Every product once, with exactly its stored vectors, in a generation that agrees with the store.
fn assert_consistent(data: &Path, n: usize, ctx: &str) {
    let ids = searchable_ids(data);
    assert_eq!(ids.len(), n, "{ctx}: every product once");
    let mut dedup = ids.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), n, "{ctx}: no duplicates");
    let s = Searcher::open(data, 64).unwrap();
    let g = s.snapshot().unwrap();
    assert_eq!(g.manifest.products, n as u64, "{ctx}");
    let (products, _) = vitrine_searcher::list_products(&g, None, 0, 100_000).unwrap();
    let mut live = 0;
    for p in &products {
        let (images, text) = s.product_vectors(&g, &p.product.id).unwrap();
        assert_eq!(images.len(), p.image_vectors as usize, "{ctx}: {}", p.product.id);
        assert_eq!(text.is_some(), p.has_text_vector, "{ctx}: {}", p.product.id);
        live += images.len() as u64 + u64::from(text.is_some());
    }
    assert_eq!(g.manifest.live_points, live, "{ctx}");
}

fn index_command(cat: &Path, data: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(vitrine_bin());
    cmd.args(["index", cat.to_str().unwrap(), "--data", data.to_str().unwrap(), "--device", "cpu", "--model"])
        .arg(tiny_model_dir())
        .args(extra);
    cmd
}

/// The process died of SIGKILL at the indexer's crash point, not of anything else.
fn assert_aborted_at_the_fault(out: &std::process::Output, ctx: &str) {
    use std::os::unix::process::ExitStatusExt;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(9), "{ctx}: expected SIGKILL, got {}: {err}", out.status);
    assert!(err.contains(FAULT_MARKER), "{ctx}: {err}");
}

#[test]
fn a_crash_after_any_number_of_writes_resumes_with_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &many_products("p", 160));
    // The first write, one in the middle of a model batch, and the last but one.
    for n in [1u64, 61, 159] {
        let data = dir.path().join(format!("data{n}"));
        let out = index_command(&cat, &data, &["--batch", "8"]).env(FAULT_ABORT_AFTER_WRITES, n.to_string()).output().unwrap();
        assert_aborted_at_the_fault(&out, &format!("n={n}"));
        // Exactly the products written before the crash are kept; the rest are embedded now.
        let s = index_json(&cat, &data, &[]);
        assert_eq!(summary(&s), [160 - n, n, 0, 0, 0], "n={n}: {s}");
        assert_consistent(&data, 160, &format!("n={n}"));
        assert_eq!(summary(&index_json(&cat, &data, &[])), [0, 160, 0, 0, 0], "n={n}");
    }
}

/// Send a signal with the system's `kill` (the test binary has no libc of its own).
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

fn tmp_generation(data: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(data.join("generations"))
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
}

fn current_name(data: &Path) -> String {
    std::fs::read_to_string(data.join("CURRENT")).unwrap()
}

fn top_ids_and_scores(data: &Path, q: &SearchQuery) -> Vec<(String, f32)> {
    let s = Searcher::open(data, 64).unwrap();
    s.search(q).unwrap().hits.into_iter().map(|h| (h.id, h.score)).collect()
}

#[test]
fn sigkill_while_a_merge_is_written_keeps_the_old_generation_and_the_rerun_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cat = dir.path().join("c.jsonl");
    let mut rows = many_products("m", 160);
    write_jsonl(&cat, &rows);
    index_json(&cat, &data, &[]);
    let mut landed = false;
    for attempt in 0..4 {
        // 60 of 160 products change: 37% of the points become tombstones, past the 20% that merges.
        for r in rows.iter_mut().take(60) {
            r["title"] = json!(format!("{} (edition {attempt})", r["title"].as_str().unwrap()));
        }
        write_jsonl(&cat, &rows);
        let before = current_name(&data);
        let mut child = index_command(&cat, &data, &["--checkpoint-secs", "3600"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Stop the process the moment the build's temporary folder appears, look, then SIGKILL it.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut tmp = None;
        while tmp.is_none() && child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            tmp = tmp_generation(&data);
            std::thread::sleep(Duration::from_micros(500));
        }
        if tmp.is_some() {
            signal(child.id(), "-STOP");
        }
        // The kill landed mid-build when, frozen, it has a temporary folder and CURRENT is unchanged.
        landed = tmp_generation(&data).is_some() && current_name(&data) == before && child.try_wait().unwrap().is_none();
        let _ = child.kill();
        child.wait().unwrap();
        if landed {
            // Readers still get the old, complete generation.
            assert_eq!(current_name(&data), before);
            assert_consistent(&data, 160, "after the kill");
            break;
        }
        // The build finished before the stop; every write was durable, so the next attempt starts clean.
        assert_eq!(summary(&index_json(&cat, &data, &[])), [0, 160, 0, 0, 0], "attempt {attempt}");
    }
    assert!(landed, "no attempt stopped the merge mid-build");
    // The writes were flushed before the build began: the rerun re-embeds nothing and merges.
    assert_eq!(summary(&index_json(&cat, &data, &[])), [0, 160, 0, 0, 0]);
    assert!(tmp_generation(&data).is_none(), "the stale temporary folder is collected");
    assert_consistent(&data, 160, "after the rerun");
    let g = Searcher::open(&data, 64).unwrap().snapshot().unwrap();
    assert_eq!(g.manifest.segments.len(), 1, "merged into one segment: {:?}", g.manifest.segments);
    assert_eq!(g.manifest.tombstones(), 0);
    // The merged index answers as one built from scratch over the same catalog.
    let fresh = dir.path().join("fresh");
    index_json(&cat, &fresh, &[]);
    let s = Searcher::open(&fresh, 64).unwrap();
    let (images, text) = s.product_vectors(&s.snapshot().unwrap(), "m0007").unwrap();
    let queries = [
        SearchQuery { text: Some("orange astronaut poster".into()), k: 20, ..Default::default() },
        SearchQuery { text: Some("edition mug".into()), k: 20, ..Default::default() },
        SearchQuery { image_vector: Some(images[0].clone()), k: 20, ..Default::default() },
        SearchQuery { text_vector: text, text: Some("tabby cat".into()), k: 20, ..Default::default() },
    ];
    for q in &queries {
        let (a, b) = (top_ids_and_scores(&data, q), top_ids_and_scores(&fresh, q));
        assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>(), "{q:?}");
        for ((id, x), (_, y)) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{id} {x} vs {y}");
        }
    }
}

fn stores(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_reindex_that_crashes_keeps_the_old_index_live_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cat = root().join("demo/catalog.jsonl");
    index_json(&cat, &data, &[]);
    let old_hash = Searcher::open(&data, 64).unwrap().snapshot().unwrap().manifest.model.content_hash.clone();
    let other = other_tiny_model(dir.path());
    let out = std::process::Command::new(vitrine_bin())
        .args(["reindex", "--data", data.to_str().unwrap(), "--device", "cpu", "--model", other.to_str().unwrap()])
        .env(FAULT_ABORT_AFTER_WRITES, "10")
        .output()
        .unwrap();
    assert_aborted_at_the_fault(&out, "reindex");
    // Mid-write: the new store holds 10 products, beside the old one that is still live.
    assert_eq!(stores(&data).len(), 2, "{:?}", stores(&data));
    assert_consistent(&data, 34, "after the crash");
    assert_eq!(Searcher::open(&data, 64).unwrap().snapshot().unwrap().manifest.model.content_hash, old_hash);
    // The old model still writes, and opening the directory drops the half-built store.
    assert_eq!(summary(&index_json(&cat, &data, &[])), [0, 34, 0, 0, 0]);
    assert_eq!(stores(&data), ["store"]);
    // A second reindex re-embeds everything and switches over.
    let (ok, out, err) = vitrine(&["reindex", "--data", data.to_str().unwrap(), "--json", "--model", other.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary(&v), [34, 0, 0, 0, 0], "{v}");
    assert_consistent(&data, 34, "after the second reindex");
    assert_ne!(Searcher::open(&data, 64).unwrap().snapshot().unwrap().manifest.model.content_hash, old_hash);
    assert_eq!(summary(&index_json(&cat, &data, &["--model", other.to_str().unwrap()])), [0, 34, 0, 0, 0]);
}

#[test]
fn a_service_killed_during_a_batch_post_keeps_what_it_wrote_and_the_retry_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    index_json(&root().join("demo/catalog.jsonl"), &data, &[]);
    let batch = json!(many_products("b", 50));
    let key = "crash-key";
    {
        let mut server = Server::start(&data, &["--admin-key", key], &[(FAULT_ABORT_AFTER_WRITES, "20")]);
        server.wait_ready();
        let a = server.call("POST", "/v1/products", Some(key), Some(&batch));
        assert_eq!(a.status, 0, "the process died before answering: {}", a.json());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(server.wait_exit(60).signal(), Some(9));
        assert!(server.log_text().contains(FAULT_MARKER), "{}", server.log_text());
    }
    let mut server = Server::start(&data, &["--admin-key", key], &[]);
    server.wait_ready();
    // The 20 products written before the kill are searchable at once, before any other write
    // (they stayed invisible until the next write: issue 10's table).
    let v = server.call("GET", "/v1/products?limit=200", Some(key), None).json();
    assert_eq!(v["total"], 54, "{v}");
    let written: Vec<String> = v["products"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .filter(|id| id.starts_with('b'))
        .map(String::from)
        .collect();
    assert_eq!(written.len(), 20, "{written:?}");
    let one = server.call("GET", &format!("/v1/products/{}", written[0]), None, None).json();
    assert_eq!(one["id"], written[0].as_str(), "{one}");
    // The client retries the batch it got no answer for: the 20 written products are not redone.
    let a = server.call("POST", "/v1/products", Some(key), Some(&batch));
    assert_eq!(a.status, 200, "{}", a.json());
    let v = a.json();
    assert_eq!(summary(&v), [30, 20, 0, 0, 0], "{v}");
    let v = server.call("GET", "/v1/products?limit=1", Some(key), None).json();
    assert_eq!(v["total"], 84, "{v}");
    drop(server);
    assert_consistent(&data, 84, "after the retry");
}

#[test]
fn another_model_is_refused_until_reindex_switches_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cat = root().join("demo/catalog.jsonl");
    index_json(&cat, &data, &[]);
    // The same network with another normalization: different files, so a different model.
    let other = other_tiny_model(dir.path());
    let (ok, _, err) =
        vitrine(&["index", cat.to_str().unwrap(), "--data", data.to_str().unwrap(), "--model", other.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("vitrine reindex --model"), "{err}");
    let (ok, out, err) = vitrine(&["reindex", "--data", data.to_str().unwrap(), "--json", "--model", other.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("\"ingested\":34"), "{out}");
    // Now the new model is the one accepted, and the old one is refused.
    let s = index_json(&cat, &data, &["--model", other.to_str().unwrap()]);
    assert_eq!(summary(&s), [0, 34, 0, 0, 0]);
    let (ok, _, err) = vitrine(&[
        "index",
        cat.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--model",
        tiny_model_dir().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("reindex"), "{err}");
    assert_eq!(searchable_ids(&data).len(), 34);
    let stores: Vec<_> =
        std::fs::read_dir(&data).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("store")).collect();
    assert_eq!(stores.len(), 1, "the old store is removed after the switch");
}
