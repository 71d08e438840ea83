//! Data directories of every released format stay openable. `tests/fixtures/data-v1` was written
//! by format 1 (five demo products, tiny model) and is never regenerated.

use std::path::Path;

use vitrine_searcher::{SearchQuery, Searcher};

use crate::common::*;

#[test]
fn a_format_1_data_directory_opens_searches_and_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture("data-v1"), &data);
    assert_eq!(vitrine_migrations::read_version(&data).unwrap(), Some(1));
    let s = Searcher::open(&data, 64).unwrap();
    let r = s.search(&SearchQuery { text: Some("espresso cup".into()), k: 3, ..Default::default() }).unwrap();
    assert_eq!(r.hits[0].id, "sku-004", "{:?}", r.hits);
    assert_eq!(s.snapshot().unwrap().manifest.products, 5);
    drop(s);
    // The indexer opens it (running any migrations) and adds to it.
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &demo_products()[5..8]);
    let v = index_json(&cat, &data, &[]);
    assert_eq!(v["ingested"], 3, "{v}");
    assert_eq!(vitrine_migrations::read_version(&data).unwrap(), Some(vitrine_migrations::CURRENT_FORMAT));
    assert_eq!(Searcher::open(&data, 64).unwrap().snapshot().unwrap().manifest.products, 8);
}

/// Every file under `dir` with its size, to see that nothing was written.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(dir).unwrap().display().to_string(), e.metadata().unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_data_directory_from_a_future_version_is_refused_clearly_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture("data-v1"), &data);
    std::fs::write(data.join("VERSION"), br#"{"format": 7}"#).unwrap();
    let before = listing(&data);
    let (d, m, cat) = (data.to_str().unwrap(), tiny_model_dir(), root().join("demo/catalog.jsonl"));
    let (m, cat) = (m.to_str().unwrap(), cat.to_str().unwrap());
    let want = format!(
        "{}: data format 7 is newer than this vitrine understands (up to {}); upgrade vitrine",
        data.display(),
        vitrine_migrations::CURRENT_FORMAT
    );
    for args in [
        vec!["index", cat, "--data", d, "--model", m],
        vec!["rebuild", "--data", d],
        vec!["delete", "sku-001", "--data", d],
        vec!["reindex", "--data", d, "--model", m],
        vec!["serve", "--data", d, "--model", m, "--bind", "127.0.0.1:0"],
    ] {
        let (ok, _, err) = vitrine_within(&args, 60);
        assert!(!ok, "{args:?} accepted a future format");
        assert!(err.contains(&want), "{args:?}: {err}");
        assert_eq!(listing(&data), before, "{args:?} wrote to a directory it refused");
    }
}
