//! Data directories of every released format stay openable. `tests/fixtures/data-v1` was written
//! by format 1 (five demo products, tiny model) and is never regenerated.

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

#[test]
fn a_data_directory_from_a_future_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture("data-v1"), &data);
    std::fs::write(data.join("VERSION"), br#"{"format": 7}"#).unwrap();
    let (ok, _, err) = vitrine(&["index", root().join("demo/catalog.jsonl").to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("format 7 is newer than this vitrine understands"), "{err}");
}
