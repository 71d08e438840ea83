//! `vitrine index` end to end: incremental ingest, bad input, deletes, crash safety, model checks.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use vitrine_searcher::{SearchQuery, Searcher};

use crate::common::*;

fn summary(v: &serde_json::Value) -> [u64; 5] {
    ["ingested", "unchanged", "updated", "deleted", "failed"].map(|k| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
}

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

#[test]
fn sigkill_at_any_point_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = demo_products();
    // 160 distinct products over the demo photos.
    let rows: Vec<serde_json::Value> = (0..160)
        .map(|i| {
            let mut p = base[i % base.len()].clone();
            p["id"] = json!(format!("p{i:04}"));
            p["title"] = json!(format!("{} #{i}", p["title"].as_str().unwrap()));
            p
        })
        .collect();
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &rows);
    let model = tiny_model_dir();
    for (round, delay_ms) in [150u64, 500, 1000].into_iter().enumerate() {
        let data = dir.path().join(format!("data{round}"));
        let mut child = std::process::Command::new(vitrine_bin())
            .args([
                "index",
                cat.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--device",
                "cpu",
                "--checkpoint-secs",
                "0",
                "--batch",
                "8",
                "--model",
            ])
            .arg(&model)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no destructor, no flush.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let s = index_json(&cat, &data, &[]);
        let [ingested, unchanged, updated, deleted, failed] = summary(&s);
        assert_eq!((updated, deleted, failed), (0, 0, 0), "round {round}: {s} (killed: {status})");
        assert_eq!(ingested + unchanged, 160, "round {round}: {s}");
        let ids = searchable_ids(&data);
        assert_eq!(ids.len(), 160, "round {round}: every product once");
        let mut dedup = ids.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), 160);
        // And the vector indexes agree with the store: each product has exactly its vectors.
        let s = Searcher::open(&data, 64).unwrap();
        let g = s.snapshot().unwrap();
        assert_eq!(g.manifest.products, 160);
        let (products, _) = vitrine_searcher::list_products(&g, None, 0, 1000).unwrap();
        let mut live = 0;
        for p in &products {
            let (images, text) = s.product_vectors(&g, &p.product.id).unwrap();
            assert_eq!(images.len(), p.image_vectors as usize, "{}", p.product.id);
            assert_eq!(text.is_some(), p.has_text_vector);
            live += images.len() as u64 + u64::from(text.is_some());
        }
        assert_eq!(g.manifest.live_points, live);
    }
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
