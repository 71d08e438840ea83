//! Relevance mechanics on the tiny random model (issue 12): the floor from the model card, the
//! tuned settings in the index and their precedence, the text-embedding cache, `POST /v1/eval`,
//! and `vitrine eval` / `vitrine tune` on the command line. Semantics (does the floor separate
//! matches from noise) need a model that knows its world: see the toy-world tests.

use std::sync::Arc;

use actix_web::test::{self, TestRequest};
use serde_json::{json, Value};
use vitrine_model::Embedder;
use vitrine_web::ServeConfig;

use crate::common::*;
use crate::service::{call, demo_data, KEY};

/// The tiny model with a model card that sets `floor` on every channel.
fn model_with_floor(dir: &std::path::Path, floor: f32) -> std::path::PathBuf {
    let m = dir.join("model");
    copy_dir(&tiny_model_dir(), &m);
    let card = json!({"name": "tiny-clip-random", "max_text_len": 77,
        "relevance_floor": {"text": {"image": floor, "text": floor}, "photo": {"image": floor, "text": floor}}});
    std::fs::write(m.join("vitrine-model.json"), card.to_string()).unwrap();
    m
}

fn embedder_at(dir: &std::path::Path) -> Arc<dyn Embedder> {
    let opts = vitrine_model::RuntimeOptions { device: vitrine_model::Device::Cpu, intra_threads: 2, ..Default::default() };
    Arc::new(vitrine_model::ClipOnnx::open(dir, &opts).unwrap())
}

fn state(data: std::path::PathBuf, e: Arc<dyn Embedder>) -> Arc<vitrine_web::AppState> {
    vitrine_web::build_state_with_model(ServeConfig { data, admin_key: Some(KEY.into()), ..Default::default() }, e).unwrap()
}

fn search(q: &str, fusion: Option<Value>) -> TestRequest {
    let mut body = json!({"q": q, "k": 50, "facets": true});
    if let Some(f) = fusion {
        body["fusion"] = f;
    }
    TestRequest::post().uri("/v1/search/text").set_json(body)
}

#[actix_web::test]
async fn the_model_cards_floor_drops_vector_noise_and_a_request_can_lift_it() {
    let dir = tempfile::tempdir().unwrap();
    // The card's name does not enter the model's identity: the demo index accepts this copy.
    let app = test::init_service(vitrine_web::app(state(demo_data(), embedder_at(&model_with_floor(dir.path(), 0.999))))).await;
    // Nothing in the catalog says "xyzzy": with the floor, the vector channels' noise is gone.
    let (s, v) = call(&app, search("xyzzy qwerty", None)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["total"], 0);
    let counted: u64 = v["facets"]["category"].as_array().unwrap().iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 0, "facets count only hits above the floor: {v}");
    // Keyword matches are real matches: the floor is for the vector channels only.
    let (_, v) = call(&app, search("astronaut", None)).await;
    let hits = v["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["explain"]["keyword"].is_object()), "{v}");
    assert!(hits.iter().all(|h| h["explain"]["image"].is_null() && h["explain"]["text"].is_null()), "{v}");
    // `"floor": {}` turns it off for this request: the noise is back.
    let (_, v) = call(&app, search("xyzzy qwerty", Some(json!({"floor": {}})))).await;
    assert!(v["hits"].as_array().unwrap().len() >= 30, "{v}");
    // A hostile floor is refused with the field named.
    let (s, v) = call(&app, search("mug", Some(json!({"floor": {"text": {"image": 7}}})))).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("fusion.floor.text.image"), "{v}");
    let (s, _) = call(&app, search("mug", Some(json!({"floor": {"text": {"image": "NaN"}}})))).await;
    assert_eq!(s, 400);
    // The settings in force say where the floor came from.
    let (s, v) = call(&app, TestRequest::get().uri("/v1/relevance").insert_header(("x-api-key", KEY))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["floor_source"], "model_card");
    assert!((v["defaults"]["text"]["floor"]["text"]["image"].as_f64().unwrap() - 0.999).abs() < 1e-6, "{v}");
}

#[actix_web::test]
async fn tuned_settings_are_the_defaults_and_a_request_still_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&demo_data(), &data);
    let e = embedder_at(&tiny_model_dir());
    let st = state(data.clone(), e.clone());
    let app = test::init_service(vitrine_web::app(st.clone())).await;
    let (_, before) = call(&app, search("xyzzy qwerty", None)).await;
    assert!(before["hits"].as_array().unwrap().len() >= 30, "the tiny model has no floor of its own");
    let tuned = json!({"model": e.model_id(), "text": {"mode": "weighted", "normalization": "zscore"}, "photo": null,
        "photo_text": null, "floor": {"text": {"image": 0.999, "text": 0.999}}, "tuned_at": 1});
    std::fs::write(data.join("relevance.json"), tuned.to_string()).unwrap();
    st.searcher().refresh().unwrap();
    let (_, v) = call(&app, TestRequest::get().uri("/v1/relevance").insert_header(("x-api-key", KEY))).await;
    assert_eq!((v["floor_source"].as_str(), v["tuned_applies"].as_bool()), (Some("tuned"), Some(true)), "{v}");
    assert_eq!(v["defaults"]["text"]["mode"], "weighted");
    assert_eq!(v["defaults"]["photo"]["mode"], "rrf", "kinds the tuning left alone keep the built-in defaults");
    let (_, v) = call(&app, search("xyzzy qwerty", None)).await;
    assert_eq!(v["hits"].as_array().unwrap().len(), 0, "the tuned floor applies: {v}");
    // The request's own fusion wins for fusion; its floor, unless named, is still the index's.
    let (_, v) = call(&app, search("xyzzy qwerty", Some(json!({"mode": "rrf"})))).await;
    assert_eq!(v["hits"].as_array().unwrap().len(), 0, "{v}");
    let (_, v) = call(&app, search("xyzzy qwerty", Some(json!({"floor": {}})))).await;
    assert!(!v["hits"].as_array().unwrap().is_empty());
    // Settings tuned with another model are ignored, and the dashboard is told.
    let other = json!({"model": {"name": "x", "content_hash": "other", "dim": 64}, "text": null, "photo": null,
        "photo_text": null, "floor": {"text": {"image": 0.999, "text": 0.999}}, "tuned_at": 2});
    std::fs::write(data.join("relevance.json"), other.to_string()).unwrap();
    st.searcher().refresh().unwrap();
    let (_, v) = call(&app, TestRequest::get().uri("/v1/relevance").insert_header(("x-api-key", KEY))).await;
    assert_eq!(v["tuned_applies"], false, "{v}");
    let (_, v) = call(&app, search("xyzzy qwerty", None)).await;
    assert!(!v["hits"].as_array().unwrap().is_empty());
    // A broken file keeps the last good settings rather than taking the service down.
    std::fs::write(data.join("relevance.json"), "{not json").unwrap();
    st.searcher().refresh().unwrap();
    let (s, _) = call(&app, search("mug", None)).await;
    assert_eq!(s, 200);
}

#[actix_web::test]
async fn the_text_cache_counts_hits_in_metrics() {
    let app = test::init_service(vitrine_web::app(state(demo_data(), embedder_at(&tiny_model_dir())))).await;
    let metric = |text: &str, what: &str| -> i64 {
        let line = format!("vitrine_text_cache{{what=\"{what}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&line)).map(|v| v.trim().parse().unwrap()).unwrap_or(-1)
    };
    for _ in 0..3 {
        let (s, _) = call(&app, search("red coffee mug", None)).await;
        assert_eq!(s, 200);
    }
    let res = test::call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert_eq!(metric(&text, "misses"), 1, "{text}");
    assert_eq!(metric(&text, "hits"), 2, "{text}");
    assert_eq!(metric(&text, "capacity"), vitrine_searcher::service::DEFAULT_TEXT_CACHE_ENTRIES as i64);
    // The one miss went through the text tower's micro-batcher: one call, one query.
    for what in ["calls", "queries"] {
        let line = format!("vitrine_query_batch{{tower=\"text\",what=\"{what}\"}} 1");
        assert!(text.lines().any(|l| l == line), "no `{line}` in {text}");
    }
}

fn judged_demo(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("photos")).unwrap();
    std::fs::copy(root().join("demo/queries/sku-007.jpg"), dir.join("photos/q7.jpg")).unwrap();
    let lines = [
        json!({"id": "astronaut", "q": "astronaut", "relevant": {"sku-001": 2, "sku-002": 1}, "split": "train"}),
        json!({"id": "coffee", "q": "coffee", "relevant": {"sku-007": 2}, "split": "test"}),
        json!({"id": "photo7", "image": "photos/q7.jpg", "relevant": {"sku-007": 2}, "split": "test"}),
        json!({"id": "nothing", "q": "xyzzy qwerty", "relevant": {}, "split": "train"}),
        json!({"id": "nothing2", "q": "zzkq vvmp", "relevant": {}, "split": "test"}),
    ];
    let p = dir.join("judged.jsonl");
    std::fs::write(&p, lines.iter().map(|l| l.to_string() + "\n").collect::<String>()).unwrap();
    p
}

#[test]
fn vitrine_eval_reports_the_pinned_shape_and_compares_settings() {
    let dir = tempfile::tempdir().unwrap();
    let judged = judged_demo(dir.path());
    let data = demo_data();
    let model = tiny_model_dir();
    let base = ["eval", judged.to_str().unwrap(), "--data", data.to_str().unwrap(), "--model", model.to_str().unwrap()];
    let (ok, out, err) = vitrine(&[&base[..], &["--json"]].concat());
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((r["queries"].as_u64(), r["k"].as_u64()), (Some(5), Some(10)));
    for key in ["recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"] {
        assert!(r["fused"][key].is_number(), "{key}: {r}");
        for ch in ["image", "text", "keyword"] {
            assert!(r["channels"][ch][key].is_number(), "{ch} {key}");
        }
    }
    // The tiny model has no floor: both no-match queries return noise.
    assert_eq!(r["false_positive_rate"], 1.0);
    let per: Vec<&str> = r["per_query"].as_array().unwrap().iter().map(|q| q["id"].as_str().unwrap()).collect();
    assert_eq!(per, ["astronaut", "coffee", "photo7", "nothing", "nothing2"]);
    // The keyword channel finds both astronaut products (the vector channels are random noise).
    let first = r["per_query"][0]["rank_of_first_relevant"].as_u64().expect("the astronaut is found");
    assert!(first <= 10, "{r}");
    assert!(r["channels"]["keyword"]["recall@10"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["per_query"][2]["rank_of_first_relevant"], 1, "the cropped photo finds its product: {r}");
    assert!(r["channels"]["keyword"]["mrr"].as_f64().unwrap() > 0.0);
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Two settings side by side; a floor of 0.999 ends the false positives.
    let floor = r#"{"floor": {"text": {"image": 0.999, "text": 0.999}}}"#;
    let (ok, out, err) = vitrine(&[&base[..], &["--json", "--fusion", "{}", "--fusion", floor]].concat());
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    let compare = r["compare"].as_array().unwrap();
    assert_eq!(compare.len(), 2);
    assert_eq!(compare[0]["false_positive_rate"], 1.0);
    assert_eq!(compare[1]["false_positive_rate"], 0.0, "{}", compare[1]);
    // The table form names each setting.
    let (ok, out, _) = vitrine(&base);
    assert!(ok && out.contains("service defaults") && out.contains("keyword channel"), "{out}");
    // A judged file that points outside its folder is refused before any search.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"id\": \"x\", \"image\": \"../../etc/passwd\", \"relevant\": {}}\n").unwrap();
    let bad = dir.path().join("bad.jsonl");
    let (ok, _, err) =
        vitrine(&["eval", bad.to_str().unwrap(), "--data", data.to_str().unwrap(), "--model", model.to_str().unwrap()]);
    assert!(!ok && err.contains("inside the judged file's folder"), "{err}");
}

#[test]
fn vitrine_tune_never_does_worse_on_train_and_saves_what_the_service_uses() {
    let dir = tempfile::tempdir().unwrap();
    let judged = judged_demo(dir.path());
    let data = dir.path().join("data");
    copy_dir(&demo_data(), &data);
    let model = tiny_model_dir();
    let args = ["tune", judged.to_str().unwrap(), "--data", data.to_str().unwrap(), "--model", model.to_str().unwrap(), "--json"];
    let (ok, out, err) = vitrine(&[&args[..], &["--dry-run"]].concat());
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["saved"], false);
    assert!(!data.join("relevance.json").exists(), "--dry-run writes nothing");
    for (kind, pair) in r["report"]["train_objective"].as_object().unwrap() {
        let (before, after) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
        assert!(after >= before, "{kind}: {before} -> {after}");
    }
    // The train split's no-match query pushes a text floor in (the objective pays for false positives).
    assert!(r["settings"]["floor"]["text"].is_object(), "{r}");
    assert_eq!(r["report"]["test_queries"], 3);
    let (ok, out, err) = vitrine(&args);
    assert!(ok, "{err}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(data.join("relevance.json")).unwrap()).unwrap();
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    for ch in ["image", "text"] {
        let (a, b) = (saved["floor"]["text"][ch].as_f64().unwrap(), r["settings"]["floor"]["text"][ch].as_f64().unwrap());
        assert!((a - b).abs() < 1e-6, "{ch}: saved {a}, reported {b}");
    }
    // `vitrine eval` now runs with them: its defaults are the tuned ones.
    let (ok, out, err) = vitrine(&[
        "eval",
        judged.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let e: Value = serde_json::from_str(out.trim()).unwrap();
    let hits = |report: &Value, id: &str| {
        report["per_query"].as_array().unwrap().iter().find(|q| q["id"] == id).map(|q| q["hits"].clone()).unwrap()
    };
    for id in ["coffee", "photo7", "nothing2"] {
        assert_eq!(hits(&e, id), hits(&r["report"]["after"], id), "{id}: eval now runs the tuned defaults");
    }
}

#[actix_web::test]
async fn post_eval_is_admin_only_bounded_and_never_reads_paths() {
    let app = test::init_service(vitrine_web::app(state(demo_data(), embedder_at(&tiny_model_dir())))).await;
    let q = json!({"id": "a", "q": "astronaut", "relevant": {"sku-001": 1}});
    let post = |body: Value, key: Option<&str>| {
        let mut r = TestRequest::post().uri("/v1/eval").set_json(body);
        if let Some(k) = key {
            r = r.insert_header(("x-api-key", k.to_string()));
        }
        r
    };
    let (s, _) = call(&app, post(json!({"queries": [q]}), None)).await;
    assert_eq!(s, 401);
    let (s, v) = call(&app, post(json!({"queries": [q], "fusions": [null, {"mode": "weighted"}]}), Some(KEY))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    // One query, one relevant product, which the keyword channel has in its top 10.
    assert_eq!(v["runs"][0]["channels"]["keyword"]["recall@10"], 1.0, "{v}");
    assert!(v["runs"][0]["per_query"][0]["rank_of_first_relevant"].is_u64(), "{v}");
    assert_eq!(v["runs"][1]["fusion"]["mode"], "weighted", "each run says its setting");
    let photo = json!({"id": "p", "image": "/etc/passwd", "relevant": {}});
    let (s, v) = call(&app, post(json!({"queries": [photo]}), Some(KEY))).await;
    assert_eq!(s, 400, "{v}");
    let many: Vec<Value> = (0..=vitrine_web::relevance::MAX_EVAL_QUERIES).map(|_| q.clone()).collect();
    let (s, _) = call(&app, post(json!({"queries": many}), Some(KEY))).await;
    assert_eq!(s, 400);
    let (s, _) = call(&app, post(json!({"queries": [q], "fusions": [null, null, null, null, null]}), Some(KEY))).await;
    assert_eq!(s, 400);
    let (s, _) = call(&app, post(json!({"queries": [q], "k": 0}), Some(KEY))).await;
    assert_eq!(s, 400);
}
