//! Zero-shot auto-tagging end to end: the vocabulary from the config file through `vitrine index`
//! to stored `auto_attributes`, attribute filters, and (on the toy-world model) its accuracy.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use vitrine_core::catalog::StoredProduct;
use vitrine_searcher::{Filters, SearchQuery, Searcher};

use crate::common::*;

fn products(data: &Path) -> Vec<StoredProduct> {
    let s = Searcher::open(data, 64).unwrap();
    let g = s.snapshot().unwrap();
    vitrine_searcher::list_products(&g, None, 0, 100_000).unwrap().0
}

fn filtered_ids(data: &Path, key: &str, value: &str) -> Vec<String> {
    let s = Searcher::open(data, 64).unwrap();
    let filters = Filters { attributes: BTreeMap::from([(key.to_string(), vec![value.to_string()])]), ..Default::default() };
    let q = SearchQuery { text: Some("poster print mug lamp".into()), k: 200, filters, ..Default::default() };
    let mut ids: Vec<String> = s.search(&q).unwrap().hits.into_iter().map(|h| h.id).collect();
    ids.sort();
    ids
}

#[test]
fn a_vocabulary_in_the_config_file_tags_at_ingest_filters_like_an_attribute_and_yields_to_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cat = dir.path().join("c.jsonl");
    let mut rows = demo_products();
    rows[0]["attributes"] = json!({"shade": "catalog"});
    write_jsonl(&cat, &rows);
    // margin 0: on the random-weight tiny model every product with an image gets its best label.
    let config = dir.path().join("vitrine.toml");
    std::fs::write(&config, "[tags.shade]\nlabels = [\"light\", \"dark\"]\nprompt = \"a {label} picture\"\nmargin = 0.0\n")
        .unwrap();
    let s = index_json(&cat, &data, &["--config", config.to_str().unwrap()]);
    assert_eq!(s["ingested"], 34, "{s}");
    let all = products(&data);
    let fingerprint = &all[0].auto.tagged_with;
    assert_eq!(fingerprint.len(), 32);
    let mut by_label: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &all {
        assert_eq!(&p.auto.tagged_with, fingerprint, "one vocabulary, one fingerprint");
        if p.product.id == "sku-001" {
            assert!(p.auto.auto_attributes.is_empty(), "the catalog's shade wins: {:?}", p.auto);
            continue;
        }
        assert!(p.image_vectors > 0, "every demo product has an image");
        let label = p.auto.auto_attributes.get("shade").unwrap_or_else(|| panic!("{} untagged", p.product.id));
        assert!(["light", "dark"].contains(&label.as_str()));
        by_label.entry(label.clone()).or_default().push(p.product.id.clone());
    }
    // Filters match automatic attributes exactly as they match the catalog's.
    // (A filtered text search need not return every allowed product, so this checks that what it
    // returns carries the tag, and that each label's filter finds some of its products.)
    assert_eq!(by_label.len(), 2, "both labels were assigned: {by_label:?}");
    for (label, ids) in &by_label {
        let got = filtered_ids(&data, "shade", label);
        assert!(!got.is_empty() && got.iter().all(|id| ids.contains(id)), "attr.shade={label}: {got:?} not within {ids:?}");
    }
    assert_eq!(filtered_ids(&data, "shade", "catalog"), ["sku-001"]);
    // The same catalog and vocabulary again: nothing to do.
    let again = index_json(&cat, &data, &["--config", config.to_str().unwrap()]);
    assert_eq!((again["unchanged"].as_u64(), again["updated"].as_u64()), (Some(34), Some(0)), "{again}");
    // Without the vocabulary, the next ingest takes the tags away.
    let off = index_json(&cat, &data, &[]);
    assert_eq!(off["updated"], 34, "{off}");
    assert!(products(&data).iter().all(|p| p.auto.auto_attributes.is_empty() && p.auto.tagged_with.is_empty()));
    assert!(filtered_ids(&data, "shade", "light").is_empty() && filtered_ids(&data, "shade", "dark").is_empty());
}

#[test]
fn a_vocabulary_that_cannot_work_stops_the_command_and_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vitrine.toml");
    std::fs::write(&config, "[tags.color]\nlabels = [\"red\"]\n").unwrap();
    let cat = root().join("demo/catalog.jsonl");
    let data = dir.path().join("data");
    let (ok, _, err) =
        vitrine(&["index", cat.to_str().unwrap(), "--data", data.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("tags") && err.contains("color") && err.contains("2 to"), "{err}");
    let (ok, _, err) = vitrine(&["index", cat.to_str().unwrap(), "--data", data.to_str().unwrap(), "--tags", "{\"c\": 1}"]);
    assert!(!ok);
    assert!(err.contains("--tags"), "{err}");
}

/// Colour accuracy of auto-tagging on the toy world: its demo catalog with the `color` attribute
/// removed, tagged by the toy-world model with the eleven colour names, against the rendered
/// colour (`models/toy-world-clip`, `demo/toy-world`).
#[test]
fn toy_world_colours_are_tagged_correctly_at_least_nine_times_in_ten() {
    let model = root().join("models/toy-world-clip");
    let catalog = root().join("demo/toy-world/catalog.jsonl");
    assert!(model.join("vision_model.onnx").exists(), "models/toy-world-clip is committed; this test needs it");
    assert!(catalog.exists(), "models/toy-world-clip is here, so demo/toy-world/catalog.jsonl must be too");
    let dir = tempfile::tempdir().unwrap();
    let mut truth = BTreeMap::new();
    let mut rows = vec![];
    for line in std::fs::read_to_string(&catalog).unwrap().lines().filter(|l| !l.trim().is_empty()) {
        let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
        let colour = row["attributes"].as_object_mut().and_then(|a| a.remove("color")).expect("a colour attribute");
        truth.insert(row["id"].as_str().unwrap().to_string(), colour.as_str().unwrap().to_string());
        if let Some(img) = row["image"].as_str() {
            row["image"] = json!(catalog.parent().unwrap().join(img).display().to_string());
        }
        rows.push(row);
    }
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &rows);
    let labels = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey"];
    let tags = json!({"color": {"labels": labels, "prompt": "a {label} product", "margin": 0.0}});
    let data = dir.path().join("data");
    index_json(&cat, &data, &["--model", model.to_str().unwrap(), "--tags", &tags.to_string()]);
    let all = products(&data);
    let right = all.iter().filter(|p| p.auto.auto_attributes.get("color") == truth.get(&p.product.id)).count();
    let accuracy = right as f64 / truth.len() as f64;
    eprintln!("toy-world colour auto-tagging: {right}/{} = {accuracy:.4}", truth.len());
    assert!(accuracy >= 0.90, "colour accuracy {accuracy:.4} ({right}/{})", truth.len());
}
