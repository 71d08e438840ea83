//! The HTTP service end to end through actix's test harness, on the tiny model and the demo catalog.
//!
//! Each test that does not depend on where the catalog lives runs on both backends with the same
//! assertions (see [`on_both_backends`]): `NAME::on_embedded` on a data directory, and
//! `NAME::on_engine` on the engine (`VITRINE_TEST_ENGINE`; skipped with a line without it, a
//! failure under CI). Read-only tests share one indexed demo catalog per backend and test process
//! ([`demo`]); tests that write index their own ([`writable`]; an engine database is dropped when
//! the test ends, pass or fail). Where the backends answer differently by design, the test says
//! so at that point: the `generation` of a search (none on the engine: 0), and `/v1/snapshots`
//! (a copy of the data directory, refused on the engine with a documented 400).
//!
//! Embedded only:
//! - `a_running_searcher_picks_up_a_generation_built_by_the_cli`: generations are files of the
//!   data directory that another process writes; the engine has none (its writes are visible at
//!   once, which `backends.rs` checks across two nodes).
//! - The other modules' tests on `demo_data()` (`http`, `shop`, `openapi`, `relevance`, `upload`,
//!   `snapshot`, …) stay on the embedded backend.
//!
//! Engine halves marked `#[ignore = "engine: …"]` are differences found by running the same
//! assertions there, left for the engine to fix rather than weakened here.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use serde_json::{json, Value};
use vitrine_model::Embedder;
use vitrine_web::{AppState, ServeConfig};

use crate::common::*;

pub(crate) const KEY: &str = "test-admin-key";

/// The demo catalog indexed once into a folder shared by the read-only tests.
pub(crate) fn demo_data() -> std::path::PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        index_json(&root().join("demo/catalog.jsonl"), &d.path().join("data"), &[]);
        d
    })
    .path()
    .join("data")
}

fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    E.get_or_init(|| {
        let opts = vitrine_model::RuntimeOptions { device: vitrine_model::Device::Cpu, intra_threads: 2, ..Default::default() };
        Arc::new(vitrine_model::ClipOnnx::open(&tiny_model_dir(), &opts).unwrap())
    })
    .clone()
}

pub(crate) fn state_for(data: std::path::PathBuf, tweak: impl FnOnce(&mut ServeConfig)) -> Arc<AppState> {
    let mut config = ServeConfig { data, admin_key: Some(KEY.into()), ..Default::default() };
    tweak(&mut config);
    vitrine_web::build_state_with_model(config, embedder()).unwrap()
}

/// A private copy of the demo index for tests that write.
pub(crate) fn writable_data() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    index_json(&root().join("demo/catalog.jsonl"), &data, &[]);
    (d, data)
}

/// Which backend a test body runs on (see [`on_both_backends`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    Embedded,
    Engine,
}

/// A catalog the service answers from: the data directory the node serves with, and where the
/// products live. On the engine the data directory is the one `vitrine index --backend` ran with,
/// which holds no products (only what stays with a node: jobs, media); a node with an empty one
/// is `backends::the_service_answers_alike_on_both_backends`.
pub(crate) struct Catalog {
    pub data: std::path::PathBuf,
    pub backend: vitrine_engine::Backend,
    _dir: Option<tempfile::TempDir>,
    _db: Option<EngineDb>,
}

impl Catalog {
    /// The demo catalog indexed on `on` by `vitrine index` with `dir/data`: into that folder
    /// (embedded), or into a new engine database (`--backend`).
    fn demo_in(on: On, dir: tempfile::TempDir, label: &str) -> Catalog {
        let data = dir.path().join("data");
        let catalog = root().join("demo/catalog.jsonl");
        let (backend, db) = match on {
            On::Embedded => {
                index_json(&catalog, &data, &[]);
                (vitrine_engine::Backend::Embedded, None)
            }
            On::Engine => {
                let db = EngineDb::new(&engine_base().expect("an engine (VITRINE_TEST_ENGINE)"), label);
                let url = db.url();
                index_json(&catalog, &data, &["--backend", &url]);
                (url.parse().unwrap(), Some(db))
            }
        };
        Catalog { data, backend, _dir: Some(dir), _db: db }
    }

    /// The serve settings of the tests: this catalog, the admin key.
    pub(crate) fn config(&self) -> ServeConfig {
        let mut config = ServeConfig { data: self.data.clone(), admin_key: Some(KEY.into()), ..Default::default() };
        config.backend.backend = self.backend.clone();
        config
    }

    /// The `--backend` value for `vitrine` commands on this catalog.
    pub(crate) fn flag(&self) -> String {
        self.backend.to_setting()
    }

    /// [`state_for`] on this catalog.
    pub(crate) fn state(&self, tweak: impl FnOnce(&mut ServeConfig)) -> Arc<AppState> {
        let mut config = self.config();
        tweak(&mut config);
        vitrine_web::build_state_with_model(config, embedder()).unwrap()
    }
}

/// The demo catalog on `on`, indexed once per test process and shared by the read-only tests
/// ([`demo_data`] on the embedded backend, one engine database on the engine).
pub(crate) fn demo(on: On) -> &'static Catalog {
    static EMBEDDED: OnceLock<Catalog> = OnceLock::new();
    static ENGINE: OnceLock<Catalog> = OnceLock::new();
    match on {
        On::Embedded => EMBEDDED.get_or_init(|| Catalog {
            data: demo_data(),
            backend: vitrine_engine::Backend::Embedded,
            _dir: None,
            _db: None,
        }),
        On::Engine => ENGINE.get_or_init(|| Catalog::demo_in(On::Engine, tempfile::tempdir().unwrap(), "demo")),
    }
}

/// A private copy of the demo catalog on `on` for a test that writes ([`writable_data`] on the
/// embedded backend, a database of its own on the engine, dropped with it).
pub(crate) fn writable(on: On, label: &str) -> Catalog {
    Catalog::demo_in(on, tempfile::tempdir().unwrap(), label)
}

/// Runs `async fn NAME(on: On)` (or, with `fn NAME`, a plain `fn NAME(on: On)`) as two tests with
/// the same assertions, `NAME::on_embedded` and `NAME::on_engine`, so a failure names its backend.
/// The engine half skips without `VITRINE_TEST_ENGINE` (and fails under CI, see [`engine_base`]);
/// `engine: #[ignore = "engine: why"]` marks the engine half alone.
macro_rules! on_both_backends {
    (fn $name:ident $(, engine: #[$engine:meta])*) => {
        mod $name {
            #[test]
            fn on_embedded() {
                super::$name(super::On::Embedded)
            }

            #[test]
            $(#[$engine])*
            fn on_engine() {
                if crate::common::engine_base().is_some() {
                    super::$name(super::On::Engine)
                }
            }
        }
    };
    ($name:ident $(, engine: #[$engine:meta])*) => {
        mod $name {
            #[actix_web::test]
            async fn on_embedded() {
                super::$name(super::On::Embedded).await
            }

            #[actix_web::test]
            $(#[$engine])*
            async fn on_engine() {
                if crate::common::engine_base().is_some() {
                    super::$name(super::On::Engine).await
                }
            }
        }
    };
}

pub(crate) fn multipart(fields: &[(&str, &str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "XvitrineBoundaryX";
    let mut body = Vec::new();
    for (name, filename, data) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        if filename.is_empty() {
            body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes());
        } else {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub(crate) async fn call(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    req: TestRequest,
) -> (StatusCode, Value) {
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let body = test::read_body(res).await;
    let v = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v)
}

pub(crate) fn ids(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {v}"))
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

on_both_backends!(a_cropped_reencoded_catalog_photo_finds_its_product_first);
async fn a_cropped_reencoded_catalog_photo_finds_its_product_first(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    for sku in ["sku-001", "sku-007", "sku-011", "sku-020"] {
        let photo = std::fs::read(root().join(format!("demo/queries/{sku}.jpg"))).unwrap();
        let (ct, body) = multipart(&[("image", "q.jpg", photo.clone()), ("k", "", b"5".to_vec())]);
        let (s, v) =
            call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(ids(&v)[0], sku, "multipart query {sku}: {v}");
        assert_eq!(v["hits"][0]["explain"]["image"]["rank"], 1);
        assert!(v["hits"][0]["image_url"].as_str().unwrap().starts_with("/v1/images/"));
        // The same photo as base64 JSON.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
        let (s, v) = call(&app, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_base64": b64, "k": 3}))).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ids(&v)[0], sku);
    }
}

on_both_backends!(image_url_queries_fetch_the_photo);
async fn image_url_queries_fetch_the_photo(on: On) {
    let photo = std::fs::read(root().join("demo/queries/sku-011.jpg")).unwrap();
    let server = http_server(move |p| if p == "/q.jpg" { Reply::Ok(photo.clone()) } else { Reply::Status(404) });
    // By default a searcher's URL may not reach the server's own network (the test server is on
    // 127.0.0.1), nor can image URLs be used at all when they are switched off.
    let locked = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    let (s, v) =
        call(&locked, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_url": format!("{server}/q.jpg")})))
            .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("non-public") && !m.contains("disabled"), "{v}");
    // Switched off, a URL is refused even where private addresses are allowed (so the fetch would
    // succeed): the error says the switch, not the address.
    let off = test::init_service(vitrine_web::app(demo(on).state(|c| {
        c.no_image_urls = true;
        c.allow_private_image_urls = true;
    })))
    .await;
    let (s, v) =
        call(&off, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_url": format!("{server}/q.jpg")}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "image_url_disabled", "{v}");
    assert_eq!(v["error"]["message"], "image_url is disabled on this server", "{v}");
    let app = test::init_service(vitrine_web::app(demo(on).state(|c| c.allow_private_image_urls = true))).await;
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_url": format!("{server}/q.jpg")}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(&v)[0], "sku-011");
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_url": format!("{server}/missing.jpg")})))
            .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("404"), "{v}");
}

on_both_backends!(text_search_filters_fusion_facets_and_paging);
async fn text_search_filters_fusion_facets_and_paging(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    // Keyword-only ranking finds the exact title first; all channels find it in the top results.
    let (s, v) = call(
        &app,
        TestRequest::post().uri("/v1/search/text").set_json(json!({
        "q": "Vintage Cameraman Photo Print", "fusion": {"weights": {"image": 0, "text": 0, "keyword": 1}}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(&v)[0], "sku-020");
    assert!(v["hits"][0]["explain"]["image"].is_null() && v["hits"][0]["explain"]["keyword"]["rank"] == 1);
    let (_, v) = call(&app, TestRequest::get().uri("/v1/search?q=vintage%20cameraman%20photo&k=5")).await;
    assert!(ids(&v).contains(&"sku-020".to_string()), "{v}");
    // Typo tolerance: a word no title contains matches titles one edit away (a substitution in
    // "cameramen", a transposition in "cmaeraman"), beside words that match as they are.
    let keyword_only = json!({"weights": {"image": 0, "text": 0, "keyword": 1}});
    let (_, v) =
        call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cameramen", "fusion": keyword_only}))).await;
    assert_eq!(ids(&v).first().map(String::as_str), Some("sku-020"), "{v}");
    let (_, v) = call(
        &app,
        TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "vintage cmaeraman", "fusion": keyword_only})),
    )
    .await;
    assert_eq!(ids(&v).first().map(String::as_str), Some("sku-020"), "{v}");
    // Stemming, on the keyword channel alone: "mugs" matches "Mug", and "galaxy" matches "galaxies"
    // (a word in a title, so no typo clause can stand in for the stemmer).
    for (q, want) in [("mugs", ["sku-005", "sku-014", "sku-033"]), ("galaxy", ["sku-013", "sku-014", "sku-015"])] {
        let (_, v) =
            call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": q, "k": 50, "fusion": keyword_only})))
                .await;
        let mut got = ids(&v);
        got.sort();
        assert_eq!(got, want, "{q}: {v}");
        assert!(v["hits"].as_array().unwrap().iter().all(|h| h["explain"]["image"].is_null() && h["explain"]["text"].is_null()));
    }

    // Filters apply inside every channel: all hits match, and there are k of them when k exist.
    let (_, v) = call(
        &app,
        TestRequest::post().uri("/v1/search/text").set_json(json!({
        "q": "poster", "k": 5, "filters": {"category": ["poster", "mug"], "price": {"max": 25}}})),
    )
    .await;
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 5, "{v}");
    assert!(hits.iter().all(|h| (h["category"] == "poster" || h["category"] == "mug") && h["price"].as_f64().unwrap() <= 25.0));
    // A very selective filter (one product) is scored exactly and still returns it.
    let (_, v) = call(
        &app,
        TestRequest::post().uri("/v1/search/text").set_json(json!({
        "q": "galaxy", "k": 10, "filters": {"brand": ["Orbit Goods"], "attributes": {"color": ["black"]}}})),
    )
    .await;
    assert_eq!(v["exact"], true, "{v}");
    let hits = v["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["brand"] == "Orbit Goods"), "{v}");
    // Facets follow the query and filters; a facet's own selection leaves its counts alone
    // (tests/it/shop.rs checks multi-select counts in depth).
    let (_, v) = call(&app, TestRequest::get().uri("/v1/search?q=poster&category=poster&facets=true&k=200")).await;
    let cats = v["facets"]["category"].as_array().unwrap();
    assert!(cats.len() > 1, "{v}");
    assert!(
        v["facets"]["price"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>()
            == v["hits"].as_array().unwrap().len() as u64
    );
    // Paging: page 2 continues page 1.
    let (_, all) = call(&app, TestRequest::get().uri("/v1/search?q=print&k=10")).await;
    let (_, p2) = call(&app, TestRequest::get().uri("/v1/search?q=print&k=5&offset=5")).await;
    assert_eq!(ids(&all)[5..], ids(&p2)[..]);
}

/// The fused score of every hit, computed from the per-channel ranks and raw scores in `explain`.
/// `hits` must hold every candidate (the request's `k` at least `total`), so each channel's whole
/// list is known: min-max and z-score need all of it.
fn hand_fused(hits: &[Value], fusion: &Value) -> Vec<f64> {
    let weight = |c: &str| fusion["weights"][c].as_f64().unwrap();
    let mut fused = vec![0.0; hits.len()];
    for c in ["image", "text", "keyword"] {
        let w = weight(c);
        // (hit index, rank, raw score), by rank.
        let mut list: Vec<(usize, u64, f64)> = hits
            .iter()
            .enumerate()
            .filter(|(_, h)| !h["explain"][c].is_null())
            .map(|(i, h)| (i, h["explain"][c]["rank"].as_u64().unwrap(), h["explain"][c]["score"].as_f64().unwrap()))
            .collect();
        list.sort_by_key(|x| x.1);
        assert_eq!(list.iter().map(|x| x.1).collect::<Vec<_>>(), (1..=list.len() as u64).collect::<Vec<_>>(), "{c} ranks");
        assert!(list.windows(2).all(|p| p[0].2 >= p[1].2), "{c}: ranks follow scores");
        if w == 0.0 || list.is_empty() {
            continue;
        }
        if fusion["mode"] == "rrf" {
            let k = fusion["k"].as_f64().unwrap();
            for (i, rank, _) in &list {
                fused[*i] += w / (k + *rank as f64);
            }
            continue;
        }
        let raw: Vec<f64> = list.iter().map(|x| x.2).collect();
        let n = raw.len() as f64;
        let (norm, floor): (Vec<f64>, f64) = if fusion["normalization"] == "zscore" {
            let mean = raw.iter().sum::<f64>() / n;
            let std = (raw.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
            let z: Vec<f64> = raw.iter().map(|s| if std > 0.0 { (s - mean) / std } else { 0.0 }).collect();
            let lowest = z.iter().copied().fold(f64::INFINITY, f64::min);
            (z, lowest)
        } else {
            let (lo, hi) =
                (raw.iter().copied().fold(f64::INFINITY, f64::min), raw.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            (raw.iter().map(|s| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 }).collect(), 0.0)
        };
        let present: Vec<usize> = list.iter().map(|x| x.0).collect();
        for (j, f) in fused.iter_mut().enumerate() {
            *f += w * match present.iter().position(|p| *p == j) {
                Some(at) => norm[at],
                None => floor,
            };
        }
    }
    fused
}

on_both_backends!(fused_scores_are_what_each_fusion_formula_gives_for_the_explained_channels);
async fn fused_scores_are_what_each_fusion_formula_gives_for_the_explained_channels(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    let weights = json!({"image": 0.5, "text": 2.0, "keyword": 1.5});
    for fusion in [
        json!({"mode": "rrf", "k": 10, "weights": weights}),
        json!({"mode": "rrf", "k": 60, "weights": {"image": 1, "text": 1, "keyword": 1}}),
        json!({"mode": "weighted", "normalization": "minmax", "weights": weights}),
        json!({"mode": "weighted", "normalization": "zscore", "weights": weights}),
    ] {
        // "cameraman" is in one product only: a keyword channel of one, where min-max and z-score
        // meet their edge cases.
        for q in ["orange poster", "espresso cup", "cameraman"] {
            let (s, v) =
                call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": q, "k": 200, "fusion": fusion})))
                    .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let hits = v["hits"].as_array().unwrap();
            assert_eq!(hits.len() as u64, v["total"].as_u64().unwrap(), "every candidate is returned");
            assert!(hits.iter().any(|h| !h["explain"]["keyword"].is_null()), "{q}: the keyword channel took part");
            let want = hand_fused(hits, &fusion);
            for (h, w) in hits.iter().zip(&want) {
                let got = h["score"].as_f64().unwrap();
                assert!((got - w).abs() <= 1e-4 * w.abs().max(1.0), "{fusion} {q:?} {}: score {got}, by hand {w}", h["id"]);
                assert_eq!(h["explain"]["fused"], h["score"]);
            }
            let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted: {scores:?}");
        }
    }
}

on_both_backends!(bad_input_gets_the_right_status_and_the_service_keeps_serving);
async fn bad_input_gets_the_right_status_and_the_service_keeps_serving(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|c| c.max_upload = 60_000))).await;
    let photo = std::fs::read(root().join("demo/queries/sku-007.jpg")).unwrap();
    let cases: Vec<(TestRequest, StatusCode, &str)> = vec![
        (TestRequest::post().uri("/v1/search/image").set_json(json!({})), StatusCode::BAD_REQUEST, "bad_request"),
        (
            TestRequest::post().uri("/v1/search/image").set_json(json!({"image_base64": "!!!"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        {
            let (ct, body) = multipart(&[("image", "x.jpg", b"this is not an image".to_vec())]);
            (
                TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_image",
            )
        },
        {
            let (ct, body) = multipart(&[("image", "x.jpg", photo[..photo.len() / 2].to_vec())]);
            (
                TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_image",
            )
        },
        {
            let (ct, body) = multipart(&[("image", "x.jpg", vec![0xFF; 70_000])]);
            (
                TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            )
        },
        {
            let (ct, body) = multipart(&[("q", "", b"cat".to_vec())]);
            (
                TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body),
                StatusCode::BAD_REQUEST,
                "bad_request",
            )
        },
        (
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cat", "k": 0})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cat", "k": 5000})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cat", "offset": 99999999})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cat", "colour": "red"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cat", "fusion": {"weights": {"image": -1}}})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cat", "filters": {"price": {"min": 10, "max": 1}}})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            TestRequest::post()
                .uri("/v1/search/text")
                .insert_header(("content-type", "application/json"))
                .set_payload("{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (TestRequest::get().uri("/v1/search"), StatusCode::BAD_REQUEST, "bad_request"),
        (TestRequest::get().uri("/v1/search?q=x&k=abc"), StatusCode::BAD_REQUEST, "bad_request"),
        (TestRequest::get().uri("/v1/products/nope"), StatusCode::NOT_FOUND, "not_found"),
        (TestRequest::get().uri("/v1/products/nope/similar"), StatusCode::NOT_FOUND, "not_found"),
        (TestRequest::get().uri("/v1/nothing-here"), StatusCode::NOT_FOUND, "not_found"),
        (TestRequest::put().uri("/v1/products/x").set_json(json!({"title": "t"})), StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            TestRequest::put().uri("/v1/products/x").insert_header(("x-api-key", "wrong")).set_json(json!({"title": "t"})),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (TestRequest::post().uri("/v1/ingest").set_payload("{}"), StatusCode::UNAUTHORIZED, "unauthorized"),
        (TestRequest::get().uri("/v1/stats").insert_header(("authorization", "Bearer nope")), StatusCode::FORBIDDEN, "forbidden"),
        (TestRequest::delete().uri("/v1/products/nope").insert_header(("x-api-key", KEY)), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (req, want, code) in cases {
        let (s, v) = call(&app, req).await;
        assert_eq!(s, want, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // Query syntax never causes a 500, and the answer is a well-formed result.
    for q in
        ["\"unclosed", "title:", "((a", "AND", "*", "~2", "a AND OR NOT b", "price:[1 TO", "\\", "::::", "-", "\"\"", "brand:\"x"]
    {
        let (s, v) = call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": q, "k": 7}))).await;
        assert_eq!(s, StatusCode::OK, "{q:?}: {v}");
        assert_search_shape(&v, 7, on, q);
    }
    // The words inside odd syntax still count.
    let keyword_only = json!({"weights": {"image": 0, "text": 0, "keyword": 1}});
    for q in ["\"vintage cameraman", "((cameraman", "title:cameraman", "cameraman~"] {
        let (s, v) =
            call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": q, "fusion": keyword_only}))).await;
        assert_eq!(s, StatusCode::OK, "{q:?}: {v}");
        assert_search_shape(&v, 10, on, q);
        assert_eq!(ids(&v).first().map(String::as_str), Some("sku-020"), "{q:?}: {v}");
    }
    // Fields that cannot be searched, and hostile nesting, are refused with a reason, not a 500
    // (`id:*` answered 500; 800 parentheses overflowed the stack and killed the process).
    let deep = format!("{}a", "(".repeat(800));
    let nots = format!("{}a", "NOT ".repeat(300));
    for q in ["id:*", "ord:1", "title:*", "/:*", deep.as_str(), nots.as_str()] {
        for req in [
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": q})),
            TestRequest::get().uri(&format!("/v1/search?q={}", vitrine_web::search::urlencode(q))),
        ] {
            let (s, v) = call(&app, req).await;
            assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{q:?}: {v}");
        }
    }
    let (s, _) = call(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
}

/// A search answer: `k` and `offset` echoed, at most `k` hits, sorted, each with an id, a finite
/// score equal to its explained fused score, and at least one channel that found it.
fn assert_search_shape(v: &Value, k: u64, on: On, ctx: &str) {
    assert_eq!(v["k"], k, "{ctx}: {v}");
    assert_eq!(v["offset"], 0, "{ctx}: {v}");
    // The generation that answered; the engine has none (searcher: "then there are no
    // generations"), and says 0.
    let generation = v["generation"].as_u64();
    match on {
        On::Embedded => assert!(generation.is_some_and(|g| g >= 1), "{ctx}: {v}"),
        On::Engine => assert_eq!(generation, Some(0), "{ctx}: {v}"),
    }
    assert!(v["took_ms"].as_f64().is_some(), "{ctx}: {v}");
    let hits = v["hits"].as_array().unwrap_or_else(|| panic!("{ctx}: no hits array in {v}"));
    assert!(hits.len() as u64 <= k && v["total"].as_u64().unwrap() >= hits.len() as u64, "{ctx}: {v}");
    let mut last = f64::INFINITY;
    for h in hits {
        assert!(h["id"].as_str().is_some_and(|id| !id.is_empty()), "{ctx}: {h}");
        let score = h["score"].as_f64().unwrap_or(f64::NAN);
        assert!(score.is_finite() && score <= last, "{ctx}: {v}");
        last = score;
        assert_eq!(h["explain"]["fused"], h["score"], "{ctx}: {h}");
        assert!(["image", "text", "keyword"].iter().any(|c| h["explain"][c]["rank"].as_u64().is_some()), "{ctx}: {h}");
    }
}

on_both_backends!(a_full_inference_queue_answers_503_instead_of_queueing_forever);
async fn a_full_inference_queue_answers_503_instead_of_queueing_forever(on: On) {
    let state = demo(on).state(|c| c.queue_capacity = 1);
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let slot = state.query.admit().unwrap();
    let (s, v) = call(&app, TestRequest::get().uri("/v1/search?q=cat")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "overloaded");
    drop(slot);
    let (s, _) = call(&app, TestRequest::get().uri("/v1/search?q=cat")).await;
    assert_eq!(s, StatusCode::OK);
}

on_both_backends!(
    writes_are_searchable_when_they_return,
    engine: #[ignore = "engine: more like sku-007 ranks sku-009 over sku-008, the engine's keyword channel putting poster titles above tabby cat"]
);
async fn writes_are_searchable_when_they_return(on: On) {
    let catalog = writable(on, "writes");
    let app = test::init_service(vitrine_web::app(catalog.state(|_| {}))).await;
    let auth = ("x-api-key", KEY);
    let img = root().join("demo/images/sku-027.jpg").display().to_string();
    let (s, v) = call(
        &app,
        TestRequest::put().uri("/v1/products/new-1").insert_header(auth).set_json(json!({
        "title": "Zebra striped umbrella", "price": 31.5, "category": "accessories", "image": img, "colour": "black"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["attributes"]["colour"], "black", "unknown fields become attributes");
    let (_, v) = call(&app, TestRequest::get().uri("/v1/search?q=zebra%20umbrella")).await;
    assert_eq!(ids(&v)[0], "new-1");
    // Edit, then the new title is what search finds.
    let (s, _) = call(
        &app,
        TestRequest::put().uri("/v1/products/new-1").insert_header(auth).set_json(json!({
        "title": "Polka dot umbrella", "price": 31.5, "category": "accessories", "image": img})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products/new-1")).await;
    assert_eq!(v["title"], "Polka dot umbrella");
    let (_, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/search/text")
            .set_json(json!({"q": "zebra", "fusion": {"weights": {"image": 0, "text": 0}}})),
    )
    .await;
    assert!(!ids(&v).contains(&"new-1".to_string()), "{v}");
    // Batch upsert.
    let (s, v) = call(
        &app,
        TestRequest::post().uri("/v1/products").insert_header(auth).set_json(json!([
        {"id": "new-2", "title": "Walnut desk organiser"}, {"id": "new-3", "title": "Brass desk lamp"}, {"title": "no id"}])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a batch with an invalid product is refused whole: {v}");
    let (s, v) = call(
        &app,
        TestRequest::post().uri("/v1/products").insert_header(auth).set_json(json!([
        {"id": "new-2", "title": "Walnut desk organiser"}, {"id": "new-3", "title": "Brass desk lamp"}])),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ingested"], 2);
    // Delete: gone from reads and from search.
    let (s, _) = call(&app, TestRequest::delete().uri("/v1/products/new-1").insert_header(auth)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, TestRequest::get().uri("/v1/products/new-1")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = call(&app, TestRequest::get().uri("/v1/search?q=polka%20dot%20umbrella&k=50")).await;
    assert!(!ids(&v).contains(&"new-1".to_string()));
    // More like this leaves the product itself out.
    let (s, v) = call(&app, TestRequest::get().uri("/v1/products/sku-007/similar?k=3")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!ids(&v).contains(&"sku-007".to_string()));
    assert_eq!(ids(&v)[0], "sku-008", "the cushion with the same cat photo is most like the poster: {v}");
    // Images and thumbnails are served.
    let res = test::call_service(&app, TestRequest::get().uri("/v1/thumbs/sku-007/0").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let thumb = test::read_body(res).await;
    let t = image::load_from_memory(&thumb).unwrap();
    assert!(t.width().max(t.height()) <= 256);
}

on_both_backends!(ingest_jobs_run_report_progress_and_survive_a_restart);
async fn ingest_jobs_run_report_progress_and_survive_a_restart(on: On) {
    let catalog = writable(on, "jobs");
    let data = catalog.data.clone();
    let auth = ("authorization", format!("Bearer {KEY}"));
    {
        let state = catalog.state(|_| {});
        let app = test::init_service(vitrine_web::app(state.clone())).await;
        let mut rows = demo_products()[..3].to_vec();
        for (i, r) in rows.iter_mut().enumerate() {
            r["id"] = json!(format!("job-{i}"));
        }
        let mut body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        body.push_str("{broken\n");
        let (s, v) = call(
            &app,
            TestRequest::post()
                .uri("/v1/ingest")
                .insert_header(auth.clone())
                .insert_header(("content-type", "application/x-ndjson"))
                .set_payload(body),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let id = v["job_id"].as_str().unwrap().to_string();
        let mut job = Value::Null;
        for _ in 0..300 {
            let (_, j) = call(&app, TestRequest::get().uri(&format!("/v1/jobs/{id}")).insert_header(auth.clone())).await;
            job = j;
            if job["state"] == "done" || job["state"] == "failed" {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(job["state"], "done", "{job}");
        assert_eq!(job["counts"]["ingested"], 3);
        assert_eq!(job["counts"]["failed"], 1);
        assert_eq!(job["processed"], job["total"]);
        let res = test::call_service(
            &app,
            TestRequest::get().uri(&format!("/v1/jobs/{id}/failures")).insert_header(auth.clone()).to_request(),
        )
        .await;
        let report = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(report.contains("malformed JSON"), "{report}");
        let (_, v) = call(&app, TestRequest::get().uri("/v1/jobs").insert_header(auth.clone())).await;
        assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
        let (_, v) = call(&app, TestRequest::get().uri("/v1/products/job-2")).await;
        assert_eq!(v["id"], "job-2");
        // What a stopping process does: release the data directory.
        state.writes.close();
    }
    // A job that was running when the service died is resumed by the next start.
    let jobs = data.join("jobs");
    let mut rows = demo_products()[3..6].to_vec();
    for (i, r) in rows.iter_mut().enumerate() {
        r["id"] = json!(format!("resumed-{i}"));
    }
    write_jsonl(&jobs.join("interrupted.jsonl"), &rows);
    let mut job: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(&jobs)
                .unwrap()
                .flatten()
                .find(|e| e.path().extension().is_some_and(|x| x == "json"))
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    job["id"] = json!("interrupted");
    job["state"] = json!("running");
    job["catalog"] = json!("interrupted.jsonl");
    job["report"] = Value::Null;
    std::fs::write(jobs.join("interrupted.json"), job.to_string()).unwrap();
    let app = test::init_service(vitrine_web::app(catalog.state(|_| {}))).await;
    let mut j = Value::Null;
    for _ in 0..300 {
        let (_, v) = call(&app, TestRequest::get().uri("/v1/jobs/interrupted").insert_header(auth.clone())).await;
        j = v;
        if j["state"] == "done" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["resumed"], 1);
    let (s, _) = call(&app, TestRequest::get().uri("/v1/products/resumed-2")).await;
    assert_eq!(s, StatusCode::OK);
}

on_both_backends!(operations_endpoints_report_stats_health_and_metrics);
async fn operations_endpoints_report_stats_health_and_metrics(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    let (s, v) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    let _ = call(&app, TestRequest::get().uri("/v1/search?q=cat")).await;
    let (s, v) = call(&app, TestRequest::get().uri("/v1/stats").insert_header(("x-api-key", KEY))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["products"], 34);
    assert_eq!(v["images"], 37);
    assert_eq!(v["model"]["dim"], 64);
    assert_eq!(v["device"], "cpu");
    let (_, v) = call(&app, TestRequest::get().uri("/v1/admin/health").insert_header(("x-api-key", KEY))).await;
    assert!(
        v["routes"].as_array().unwrap().iter().any(|r| r["route"] == "/v1/search" && r["count"].as_u64().unwrap() >= 1),
        "{v}"
    );
    assert_eq!(v["qps"].as_array().unwrap().len(), 60);
    let (s, text) = call(&app, TestRequest::get().uri("/metrics")).await;
    let text = text.as_str().unwrap().to_string();
    assert_eq!(s, StatusCode::OK);
    for series in [
        "vitrine_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/search\"",
        "vitrine_inference_seconds",
        "vitrine_inference_queue_depth",
    ] {
        assert!(text.contains(series), "metrics lack {series}");
    }
}

/// Status, content type and body bytes of one request.
async fn call_bytes(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    req: TestRequest,
) -> (StatusCode, String, Vec<u8>) {
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, ct, test::read_body(res).await.to_vec())
}

/// The MIME type an image's bytes really have.
fn sniffed(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::WebP) => "image/webp",
        other => panic!("not an image: {other:?}"),
    }
}

on_both_backends!(every_documented_route_answers_its_documented_status_and_body);
async fn every_documented_route_answers_its_documented_status_and_body(on: On) {
    let catalog = writable(on, "routes");
    let app = test::init_service(vitrine_web::app(catalog.state(|c| c.media_root = vec![root().join("demo")]))).await;
    let admin = ("x-api-key", KEY);
    let (_, doc) = call(&app, TestRequest::get().uri("/v1/openapi.json")).await;
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut checked = std::collections::BTreeSet::new();
    let mut seen = |m: &str, p: &str| checked.insert((m.to_string(), p.to_string()));

    let (s, v) = call(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
    seen("GET", "/healthz");
    let (s, v) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ready"})));
    seen("GET", "/readyz");
    assert!(doc["paths"]["/v1/search/text"]["post"].is_object() && doc["openapi"].as_str().is_some(), "{doc}");
    seen("GET", "/v1/openapi.json");

    let (s, v) = call(&app, TestRequest::get().uri("/v1/search?q=astronaut&k=3")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_search_shape(&v, 3, on, "GET /v1/search");
    seen("GET", "/v1/search");
    let (s, v) = call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "astronaut", "k": 4}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_search_shape(&v, 4, on, "POST /v1/search/text");
    seen("POST", "/v1/search/text");
    use base64::Engine;
    let photo = base64::engine::general_purpose::STANDARD.encode(std::fs::read(root().join("demo/queries/sku-001.jpg")).unwrap());
    let (s, v) = call(&app, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_base64": photo, "k": 2}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_search_shape(&v, 2, on, "POST /v1/search/image");
    assert_eq!(ids(&v)[0], "sku-001");
    seen("POST", "/v1/search/image");
    let (s, v) = call(&app, TestRequest::get().uri("/v1/products/sku-001/similar?k=5")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_search_shape(&v, 5, on, "similar");
    assert!(!ids(&v).contains(&"sku-001".to_string()));
    seen("GET", "/v1/products/{id}/similar");

    let (s, v) = call(&app, TestRequest::get().uri("/v1/products?limit=5").insert_header(admin)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["total"].as_u64(), v["products"].as_array().map(Vec::len), v["limit"].as_u64()), (Some(34), Some(5), Some(5)));
    seen("GET", "/v1/products");
    let (s, v) = call(&app, TestRequest::get().uri("/v1/products/sku-001")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["id"].as_str(), v["title"].as_str()), (Some("sku-001"), Some("Astronaut Portrait Poster")));
    // Its one image URL serves the image (whatever shape the URL takes).
    let urls = v["image_urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1, "{v}");
    let (s, ct, bytes) = call_bytes(&app, TestRequest::get().uri(urls[0].as_str().unwrap())).await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, sniffed(&bytes)));
    seen("GET", "/v1/products/{id}");
    let img = root().join("demo/images/sku-027.jpg").display().to_string();
    let (s, v) = call(
        &app,
        TestRequest::put()
            .uri("/v1/products/route-1")
            .insert_header(admin)
            .set_json(json!({"title": "Route lamp", "image": img})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["title"].as_str(), v["indexed_images"].as_u64()),
        (Some("route-1"), Some("Route lamp"), Some(1))
    );
    seen("PUT", "/v1/products/{id}");
    let photo = std::fs::read(root().join("demo/images/sku-002.jpg")).unwrap();
    let (ct, body) = multipart(&[("image", "photo.jpg", photo)]);
    let (s, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/products/route-1/images")
            .insert_header(admin)
            .insert_header(("content-type", ct))
            .set_payload(body),
    )
    .await;
    assert_eq!((s, v["indexed_images"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    seen("POST", "/v1/products/{id}/images");
    let (s, v) = call(
        &app,
        TestRequest::post().uri("/v1/products").insert_header(admin).set_json(json!([{"id": "route-2", "title": "Route desk"}])),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["ingested"].as_u64(), v["failed"].as_u64(), v["failures"].as_array().map(Vec::len)),
        (Some(1), Some(0), Some(0))
    );
    seen("POST", "/v1/products");
    let (s, v) = call(&app, TestRequest::delete().uri("/v1/products/route-2").insert_header(admin)).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"deleted": "route-2"})));
    seen("DELETE", "/v1/products/{id}");

    let (s, ct, bytes) = call_bytes(&app, TestRequest::get().uri("/v1/images/sku-001/0")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, sniffed(&bytes));
    seen("GET", "/v1/images/{id}/{n}");
    let (s, ct, bytes) = call_bytes(&app, TestRequest::get().uri("/v1/thumbs/sku-001/0")).await;
    assert_eq!((s, ct.as_str(), sniffed(&bytes)), (StatusCode::OK, "image/jpeg", "image/jpeg"));
    seen("GET", "/v1/thumbs/{id}/{n}");

    let body = format!("{}\n{{broken\n", json!({"id": "route-3", "title": "Route chair"}));
    let (s, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/ingest")
            .insert_header(admin)
            .insert_header(("content-type", "application/x-ndjson"))
            .set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(v["status_url"], format!("/v1/jobs/{job}"));
    seen("POST", "/v1/ingest");
    let mut v = Value::Null;
    for _ in 0..300 {
        let (s, j) = call(&app, TestRequest::get().uri(&format!("/v1/jobs/{job}")).insert_header(admin)).await;
        assert_eq!(s, StatusCode::OK, "{j}");
        v = j;
        if v["state"] == "done" || v["state"] == "failed" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((v["id"].as_str(), v["state"].as_str()), (Some(job.as_str()), Some("done")), "{v}");
    assert_eq!((v["counts"]["ingested"].as_u64(), v["counts"]["failed"].as_u64()), (Some(1), Some(1)), "{v}");
    seen("GET", "/v1/jobs/{id}");
    let (s, v) = call(&app, TestRequest::get().uri("/v1/jobs").insert_header(admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["jobs"][0]["id"], job.as_str(), "{v}");
    seen("GET", "/v1/jobs");
    let (s, ct, bytes) = call_bytes(&app, TestRequest::get().uri(&format!("/v1/jobs/{job}/failures")).insert_header(admin)).await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/x-ndjson"));
    let lines: Vec<Value> = String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["line"], 2);
    seen("GET", "/v1/jobs/{id}/failures");
    let (s, v) = call(&app, TestRequest::get().uri(&format!("/v1/jobs/{job}/report")).insert_header(admin)).await;
    assert_eq!((s, v["errors"].as_u64(), v["items"][0]["line"].as_u64()), (StatusCode::OK, Some(1), Some(2)), "{v}");
    seen("GET", "/v1/jobs/{id}/report");

    let (s, v) = call(&app, TestRequest::get().uri("/v1/stats").insert_header(admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["products"].as_u64(), v["model"]["dim"].as_u64()), (Some(36), Some(64)), "{v}");
    seen("GET", "/v1/stats");
    let (s, v) = call(&app, TestRequest::get().uri("/v1/admin/health").insert_header(admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["routes"].as_array().unwrap().iter().any(|r| r["route"] == "/v1/jobs/{id}"), "{v}");
    assert_eq!(v["queue"]["capacity"], 64);
    seen("GET", "/v1/admin/health");
    let (s, v) = call(&app, TestRequest::get().uri("/v1/relevance").insert_header(admin)).await;
    assert_eq!((s, v["floor_source"].as_str()), (StatusCode::OK, Some("none")), "the tiny model has no floor: {v}");
    seen("GET", "/v1/relevance");
    let judged = json!({"queries": [{"id": "q", "q": "astronaut", "relevant": {"sku-001": 1}}]});
    let (s, v) = call(&app, TestRequest::post().uri("/v1/eval").insert_header(admin).set_json(judged)).await;
    assert_eq!((s, v["runs"][0]["queries"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    seen("POST", "/v1/eval");
    let (s, ct, bytes) = call_bytes(&app, TestRequest::get().uri("/metrics")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(String::from_utf8(bytes).unwrap().contains("route=\"/v1/ingest\""));
    seen("GET", "/metrics");
    let (s, v) = call(&app, TestRequest::post().uri("/v1/snapshots").insert_header(admin)).await;
    let (list_status, list) = call(&app, TestRequest::get().uri("/v1/snapshots").insert_header(admin)).await;
    match on {
        On::Embedded => {
            assert_eq!((s, v["products"].as_u64()), (StatusCode::CREATED, Some(36)), "{v}");
            assert_eq!((list_status, &list["snapshots"][0]["name"]), (StatusCode::OK, &v["name"]), "{list}");
        }
        // A snapshot copies the data directory, which on the engine does not hold the catalog: it
        // is refused with a documented status that says what to do instead, and none is listed.
        On::Engine => {
            assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("engine's own backup"), "{v}");
            assert!(doc["paths"]["/v1/snapshots"]["post"]["responses"]["400"].is_object(), "the 400 is documented");
            assert_eq!((list_status, list), (StatusCode::OK, json!({"snapshots": []})));
        }
    }
    seen("POST", "/v1/snapshots");
    seen("GET", "/v1/snapshots");
    // The UI is embedded.
    for (page, route, ct) in [
        ("/", "/", "text/html"),
        ("/admin", "/admin", "text/html"),
        ("/docs", "/docs", "text/html"),
        ("/ui/app.css", "/ui/{path}", "text/css"),
    ] {
        let (s, got, bytes) = call_bytes(&app, TestRequest::get().uri(page)).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(got.starts_with(ct) && !bytes.is_empty(), "{page}: {got}");
        seen("GET", route);
    }

    assert_eq!(checked, documented, "each documented route needs its check here, and each check a documented route");
}

on_both_backends!(healthz_answers_while_the_model_loads_and_readyz_waits_for_it);
async fn healthz_answers_while_the_model_loads_and_readyz_waits_for_it(on: On) {
    let state = vitrine_web::build_state(demo(on).config()).unwrap();
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let (s, _) = call(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")));
    let (s, v) = call(&app, TestRequest::get().uri("/v1/search?q=cat")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    state.set_model(embedder()).unwrap();
    let (s, _) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, TestRequest::get().uri("/v1/search?q=cat")).await;
    assert_eq!(s, StatusCode::OK);
}

#[test]
fn a_running_searcher_picks_up_a_generation_built_by_the_cli() {
    let (_d, data) = writable_data();
    let searcher = vitrine_searcher::Searcher::open(&data, 64).unwrap();
    let before = searcher.snapshot().unwrap();
    assert_eq!(before.manifest.products, 34);
    let cat = data.parent().unwrap().join("more.jsonl");
    let mut rows = demo_products()[..2].to_vec();
    rows[0]["id"] = json!("extra-1");
    rows[1]["id"] = json!("extra-2");
    write_jsonl(&cat, &rows);
    index_json(&cat, &data, &[]);
    // The old snapshot is untouched; a refresh swaps in the new generation.
    assert_eq!(before.manifest.products, 34);
    assert!(searcher.refresh().unwrap());
    assert_eq!(searcher.snapshot().unwrap().manifest.products, 36);
    let r = searcher
        .search(&vitrine_searcher::SearchQuery {
            text: Some(rows[0]["title"].as_str().unwrap().into()),
            k: 40,
            ..Default::default()
        })
        .unwrap();
    assert!(r.hits.iter().any(|h| h.id == "extra-1"));
}

on_both_backends!(hostile_requests_get_bounded_answers);
/// Issue 10's table, the rows the service answers itself: each hostile request gets a bounded,
/// specific answer, and the service keeps serving.
async fn hostile_requests_get_bounded_answers(on: On) {
    let state = demo(on).state(|c| c.metrics_key = Some("m-key".into()));
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    // 1,000,000 filter values (10.6 MB) took 5.8 s and 3.2 GB: the text search body is capped first…
    let flood: Vec<String> = (0..1_000_000).map(|i| format!("c{i}")).collect();
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "mug", "filters": {"category": flood}})))
            .await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{v}");
    // …and a filter that fits in the body is still bounded in values.
    let many: Vec<String> = (0..vitrine_searcher::MAX_FILTER_VALUES + 1).map(|i| format!("c{i}")).collect();
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "mug", "filters": {"category": many}}))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{v}");
    // Multipart image search: 3,000 fields of 64 kB were accepted; now at most 16 known fields.
    let photo = std::fs::read(root().join("demo/images/sku-001.jpg")).unwrap();
    let mut fields = vec![("image", "q.jpg", photo.clone())];
    fields.extend((0..20).map(|_| ("q", "", b"x".to_vec())));
    let (ct, body) = multipart(&fields);
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
    assert_eq!(s.as_u16() / 100, 4, "{v}");
    let (ct, body) = multipart(&[("image", "q.jpg", photo.clone()), ("padding", "", vec![b'x'; 1000])]);
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "unknown field: {v}");
    // Each known field is bounded (64 KiB), and sent at most once, so a multipart body holds at
    // most max_upload + 6 × 64 KiB: a field one byte over is refused while it streams.
    let long = vec![b'a'; vitrine_web::limits::MULTIPART_FIELD + 1];
    let (ct, body) = multipart(&[("image", "q.jpg", photo.clone()), ("q", "", long)]);
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
    assert_eq!((s, v["error"]["message"].as_str()), (StatusCode::BAD_REQUEST, Some("field q is too long")), "{v}");
    let (ct, body) = multipart(&[("image", "q.jpg", photo.clone()), ("q", "", b"a".to_vec()), ("q", "", b"b".to_vec())]);
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
    assert_eq!((s, v["error"]["message"].as_str()), (StatusCode::BAD_REQUEST, Some("multipart field q is sent twice")), "{v}");
    // A valid small 1×20000 PNG (163 bytes in the report) was resized to 224×4,480,000 (3.6 GB,
    // 11 s): now it is cropped before it is resized, so it is answered like any photo (the memory
    // bound itself is measured with a counting allocator in model/tests/images.rs).
    let mut tall = Vec::new();
    image::GrayImage::from_pixel(1, 20_000, image::Luma([200]))
        .write_to(&mut std::io::Cursor::new(&mut tall), image::ImageFormat::Png)
        .unwrap();
    assert!(tall.len() < 20_000, "a small file: {} bytes", tall.len());
    let started = std::time::Instant::now();
    let (ct, body) = multipart(&[("image", "tall.png", tall)]);
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["hits"].is_array(), "{v}");
    assert!(started.elapsed() < Duration::from_secs(10), "a hang, not a benchmark: {:?}", started.elapsed());
    // Invented HTTP methods share one metrics label instead of making a series each.
    for m in ["FOO", "BAR", "BAZ"] {
        let req = TestRequest::default().method(actix_web::http::Method::from_bytes(m.as_bytes()).unwrap()).uri("/v1/search");
        let _ = call(&app, req).await;
    }
    // /metrics can require its key; the admin key opens it too.
    let (s, _) = call(&app, TestRequest::get().uri("/metrics")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let res =
        test::call_service(&app, TestRequest::get().uri("/metrics").insert_header(("x-api-key", "m-key")).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(text.contains("method=\"OTHER\""), "{text}");
    for m in ["FOO", "BAR", "BAZ"] {
        assert!(!text.contains(&format!("method=\"{m}\"")), "{m} became a label");
    }
    let (s, _) = call(&app, TestRequest::get().uri("/metrics").insert_header(("x-api-key", KEY))).await;
    assert_eq!(s, StatusCode::OK);
    // Still serving.
    let (s, v) = call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "mug"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

on_both_backends!(the_search_key_guards_every_shopper_read);
/// With a search key, everything a shopper reads needs it: searches, products, images, thumbnails.
async fn the_search_key_guards_every_shopper_read(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|c| c.search_key = Some("s-key".into())))).await;
    let reads = [
        "/v1/search?q=mug",
        "/v1/products/sku-001",
        "/v1/products/sku-001/similar",
        "/v1/images/sku-001/0",
        "/v1/thumbs/sku-001/0",
    ];
    for uri in reads {
        let (s, v) = call(&app, TestRequest::get().uri(uri)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{uri}: {v}");
        let (s, v) = call(&app, TestRequest::get().uri(uri).insert_header(("x-api-key", "wrong"))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}: {v}");
        for key in ["s-key", KEY] {
            let res = test::call_service(&app, TestRequest::get().uri(uri).insert_header(("x-api-key", key)).to_request()).await;
            assert_eq!(res.status(), StatusCode::OK, "{uri} with {key}");
        }
    }
}

on_both_backends!(a_search_key_guards_search_but_not_health_docs_or_pages);
async fn a_search_key_guards_search_but_not_health_docs_or_pages(on: On) {
    const SEARCH: &str = "test-search-key";
    let guarded = test::init_service(vitrine_web::app(demo(on).state(|c| c.search_key = Some(SEARCH.into())))).await;
    let open = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    use base64::Engine;
    let photo = base64::engine::general_purpose::STANDARD.encode(std::fs::read(root().join("demo/queries/sku-007.jpg")).unwrap());
    let searches = || {
        [
            TestRequest::get().uri("/v1/search?q=poster"),
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "poster"})),
            TestRequest::post().uri("/v1/search/image").set_json(json!({"image_base64": photo})),
            TestRequest::get().uri("/v1/products/sku-007/similar"),
        ]
    };
    for req in searches() {
        let (s, v) = call(&guarded, req).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{v}");
    }
    for req in searches() {
        let (s, v) = call(&guarded, req.insert_header(("x-api-key", "not-the-key"))).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{v}");
    }
    // The search key (either header) and the admin key both search.
    for auth in [("x-api-key", SEARCH.to_string()), ("authorization", format!("Bearer {SEARCH}")), ("x-api-key", KEY.into())] {
        for req in searches() {
            let (s, v) = call(&guarded, req.insert_header(auth.clone())).await;
            assert_eq!(s, StatusCode::OK, "{auth:?}: {v}");
            assert!(!ids(&v).is_empty(), "{v}");
        }
    }
    // The search key is not an admin key.
    let (s, v) = call(&guarded, TestRequest::get().uri("/v1/stats").insert_header(("x-api-key", SEARCH))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{v}");
    // Without a search key, search is open; health, the API document and the UI pages never need
    // one (product reads do: `the_search_key_guards_every_shopper_read`).
    for req in searches() {
        let (s, v) = call(&open, req).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    for uri in ["/healthz", "/readyz", "/v1/openapi.json", "/", "/admin"] {
        let res = test::call_service(&guarded, TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
    }
    // Without an admin key configured, admin routes are closed to every key.
    let no_admin = test::init_service(vitrine_web::app(demo(on).state(|c| c.admin_key = None))).await;
    let (s, v) = call(&no_admin, TestRequest::get().uri("/v1/stats").insert_header(("x-api-key", KEY))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{v}");
}

on_both_backends!(the_product_list_pages_counts_and_filters_by_keyword);
async fn the_product_list_pages_counts_and_filters_by_keyword(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    let admin = ("x-api-key", KEY);
    let catalog: Vec<String> = demo_products().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    let list = |v: &Value| -> Vec<String> {
        v["products"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect()
    };
    // Pages of 10 walk the catalog in order, each reporting the same total.
    let mut all = vec![];
    for offset in [0, 10, 20, 30] {
        let (s, v) =
            call(&app, TestRequest::get().uri(&format!("/v1/products?limit=10&offset={offset}")).insert_header(admin)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!((v["total"].as_u64(), v["offset"].as_u64(), v["limit"].as_u64()), (Some(34), Some(offset), Some(10)), "{v}");
        all.extend(list(&v));
    }
    assert_eq!(all, catalog);
    // The default page is 20; the limit is kept within 1..=200; past the end is empty.
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products").insert_header(admin)).await;
    assert_eq!(list(&v), catalog[..20]);
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products?limit=0").insert_header(admin)).await;
    assert_eq!((list(&v).len(), v["limit"].as_u64()), (1, Some(1)));
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products?limit=100000").insert_header(admin)).await;
    assert_eq!((list(&v).len(), v["limit"].as_u64()), (34, Some(200)));
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products?offset=34").insert_header(admin)).await;
    assert_eq!((list(&v).len(), v["total"].as_u64()), (0, Some(34)));
    // q keeps the keyword matches, and total counts them.
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products?q=mug").insert_header(admin)).await;
    let mut got = list(&v);
    got.sort();
    assert_eq!((got, v["total"].as_u64()), (vec!["sku-005".to_string(), "sku-014".into(), "sku-033".into()], Some(3)), "{v}");
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products?q=mug&limit=2&offset=2").insert_header(admin)).await;
    assert_eq!((list(&v).len(), v["total"].as_u64()), (1, Some(3)), "{v}");
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products?q=zzzqqq").insert_header(admin)).await;
    assert_eq!((list(&v).len(), v["total"].as_u64()), (0, Some(0)), "{v}");
    // Bad numbers are a 400, and the list needs the admin key.
    let (s, v) = call(&app, TestRequest::get().uri("/v1/products?offset=-1").insert_header(admin)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{v}");
    let (s, _) = call(&app, TestRequest::get().uri("/v1/products")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

on_both_backends!(images_are_served_by_index_and_an_index_out_of_range_is_404);
async fn images_are_served_by_index_and_an_index_out_of_range_is_404(on: On) {
    let app = test::init_service(vitrine_web::app(demo(on).state(|_| {}))).await;
    // sku-032 has two images.
    for (uri, file) in [("/v1/images/sku-032/0", "sku-032-a.jpg"), ("/v1/images/sku-032/1", "sku-032-b.jpg")] {
        let (s, ct, bytes) = call_bytes(&app, TestRequest::get().uri(uri)).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert_eq!(ct, sniffed(&bytes), "{uri}");
        let (got, want) = (image::load_from_memory(&bytes).unwrap(), image::open(root().join("demo/images").join(file)).unwrap());
        assert_eq!((got.width(), got.height()), (want.width(), want.height()), "{uri} is {file}");
    }
    for uri in ["/v1/images/sku-032/2", "/v1/images/sku-001/1", "/v1/thumbs/sku-032/2", "/v1/images/nope/0"] {
        let (s, v) = call(&app, TestRequest::get().uri(uri)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{uri}: {v}");
    }
    for uri in ["/v1/images/sku-032/-1", "/v1/images/sku-032/x", "/v1/images/sku-032/99999999999999999999999"] {
        let (s, v) = call(&app, TestRequest::get().uri(uri)).await;
        assert!(s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND, "{uri}: {s} {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{uri}: {v}");
    }
}

on_both_backends!(fn an_ingest_job_killed_mid_way_resumes_after_a_restart_with_exact_counts);
fn an_ingest_job_killed_mid_way_resumes_after_a_restart_with_exact_counts(on: On) {
    let catalog = writable(on, "killed");
    let (data, backend) = (&catalog.data, catalog.flag());
    let body: String = many_products("job", 120).iter().map(|r| format!("{r}\n")).collect();
    let job = {
        let mut server = Server::start(data, &["--admin-key", KEY, "--backend", &backend], &[(FAULT_ABORT_AFTER_WRITES, "45")]);
        server.wait_ready();
        let a = server.call_raw(
            "POST",
            "/v1/ingest",
            Some(("authorization", format!("Bearer {KEY}"))),
            Some(("application/x-ndjson", body)),
        );
        assert_eq!(a.status, 202, "{}", a.json());
        let job = a.json()["job_id"].as_str().unwrap().to_string();
        // SIGKILL after the writer's 45th product: no destructor runs, nothing more is written.
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(server.wait_exit(300).signal(), Some(9), "{}", server.log_text());
        assert!(server.log_text().contains(FAULT_MARKER));
        job
    };
    let saved = read_json(&data.join("jobs").join(format!("{job}.json")));
    assert_eq!(saved["state"], "running", "the job died mid-way: {saved}");
    let mut server = Server::start(data, &["--admin-key", KEY, "--backend", &backend], &[]);
    server.wait_ready();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let v = loop {
        let v = server.call("GET", &format!("/v1/jobs/{job}"), Some(KEY), None).json();
        if v["state"] == "done" || v["state"] == "failed" {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["state"], "done", "{v}\n{}", server.log_text());
    assert_eq!(v["resumed"], 1, "{v}");
    assert_eq!(v["counts"], json!({"ingested": 75, "unchanged": 45, "updated": 0, "deleted": 0, "failed": 0}), "{v}");
    assert_eq!((v["total"].as_u64(), v["processed"].as_u64()), (Some(120), Some(120)), "{v}");
    let v = server.call("GET", "/v1/products?limit=1", Some(KEY), None).json();
    assert_eq!(v["total"], 154, "{v}");
    let v = server.call("GET", "/v1/products/job0119", None, None).json();
    assert_eq!(v["id"], "job0119", "{v}");
}
