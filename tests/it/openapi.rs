//! The generated OpenAPI document against the service: every route is documented, live bodies
//! match their documented schema, and snapshots pin the JSON the API returns.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;
use crate::service::{call, demo_data, state_for, writable_data, KEY};

fn document() -> Value {
    serde_json::from_str(vitrine_web::api::openapi_json()).unwrap()
}

/// `(method, path)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                ops.insert((method.clone(), path.clone()));
            }
        }
    }
    ops
}

/// An actix pattern as OpenAPI writes it: `{path:.*}` is `{path}`.
fn openapi_path(actix: &str) -> String {
    let mut out = String::new();
    let mut rest = actix;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').map(|j| i + j).expect("balanced braces");
        let name = rest[i + 1..end].split(':').next().unwrap();
        out.push_str(&format!("{{{name}}}"));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_registered_route_is_documented_and_nothing_else() {
    let routed: BTreeSet<(String, String)> = vitrine_web::ROUTES.iter().map(|(m, p)| (m.to_string(), openapi_path(p))).collect();
    assert_eq!(routed.len(), vitrine_web::ROUTES.len(), "a route is registered twice");
    let doc = document();
    let docs = documented(&doc);
    let undocumented: Vec<_> = routed.difference(&docs).collect();
    let unrouted: Vec<_> = docs.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routes without an OpenAPI operation: {undocumented:?}");
    assert!(unrouted.is_empty(), "documented operations that are not routed: {unrouted:?}");
    // Every operation that can fail documents the error body.
    for (method, path) in &docs {
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        assert!(["200", "201", "202"].iter().any(|s| responses.contains_key(*s)), "{method} {path} has no success response");
        for (status, r) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status} is not the error body"
                );
            }
        }
    }
    assert_eq!(openapi_path("/ui/{path:.*}"), "/ui/{path}");
    assert_eq!(openapi_path("/v1/images/{id}/{n}"), "/v1/images/{id}/{n}");
}

/// Validate `body` against the schema the document gives for `method path` answering `status`.
fn check(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let response = &doc["paths"][path][method]["responses"][status.as_str()];
    assert!(response.is_object(), "{method} {path} does not document status {status}");
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} {status} documents no JSON body");
    // The `$ref`s point into the document: give the schema the document's components, made
    // strict, so a field the body has and the document does not name fails too.
    let mut root = schema.clone();
    root["components"] = strict_components(doc);
    let validator = jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{method} {path}: schema: {e}"));
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{method} {path} {status}: the body does not match its schema: {errors:#?}\n{body:#}");
}

/// The document's component schemas with `unevaluatedProperties: false` on every object schema
/// that is not itself a part of another's `allOf` (where the whole decides what is evaluated).
fn strict_components(doc: &Value) -> Value {
    fn all_of_refs(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::Array(parts)) = o.get("allOf") {
                    for p in parts {
                        if let Some(r) = p["$ref"].as_str() {
                            out.insert(r.trim_start_matches("#/components/schemas/").to_string());
                        }
                    }
                }
                o.values().for_each(|x| all_of_refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| all_of_refs(x, out)),
            _ => {}
        }
    }
    let mut components = doc["components"].clone();
    let mut parts = BTreeSet::new();
    all_of_refs(&components, &mut parts);
    for (name, schema) in components["schemas"].as_object_mut().unwrap() {
        let object = schema.get("properties").is_some() || schema.get("allOf").is_some();
        if object && !parts.contains(name) && schema.get("additionalProperties").is_none() {
            schema["unevaluatedProperties"] = Value::Bool(false);
        }
    }
    components
}

#[test]
fn the_check_catches_a_field_the_document_does_not_name_and_a_null_it_does_not_allow() {
    let doc = document();
    let hit = |extra: Value| {
        let mut h = json!({"id": "a", "score": 1.0, "images": 0, "image_url": null, "thumb_url": null,
            "explain": {"fused": 1.0}, "highlights": {}});
        h.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"hits": [h], "total": 1, "took_ms": 1.0, "offset": 0, "k": 1, "generation": 1, "exact": true,
            "timings": {"search_ms": 1.0, "filter_ms": 0.0, "vector_ms": 0.0, "keyword_ms": 0.0, "fuse_ms": 0.0, "hydrate_ms": 0.0}})
    };
    let run = |body: Value| std::panic::catch_unwind(|| check(&doc, "get", "/v1/search", StatusCode::OK, &body));
    run(hit(json!({}))).expect("a text-only hit (image_url null) is what the document says");
    assert!(run(hit(json!({"surprise": 1}))).is_err(), "an undocumented field must fail");
    assert!(run(hit(json!({"images": null}))).is_err(), "a null where the document wants a count must fail");
}

fn admin() -> (&'static str, String) {
    ("authorization", format!("Bearer {KEY}"))
}

fn demo_image_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(root().join("demo/images/sku-001.jpg")).unwrap())
}

#[actix_web::test]
async fn read_routes_answer_what_the_document_says() {
    let state = state_for(demo_data(), |_| {});
    let app = test::init_service(vitrine_web::app(state)).await;
    let doc = document();
    // The served document is the generated one.
    let (s, served) = call(&app, TestRequest::get().uri("/v1/openapi.json")).await;
    assert_eq!((s, &served), (StatusCode::OK, &doc));

    let cases: Vec<(&str, &str, TestRequest)> = vec![
        ("get", "/healthz", TestRequest::get().uri("/healthz")),
        ("get", "/readyz", TestRequest::get().uri("/readyz")),
        ("get", "/v1/search", TestRequest::get().uri("/v1/search?q=orange%20astronaut&facets=true&category=poster&k=3")),
        (
            "post",
            "/v1/search/text",
            TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "astronaut", "k": 3, "facets": true,
                "fusion": {"mode": "weighted", "weights": {"image": 1.0, "text": 1.0, "keyword": 1.0}}})),
        ),
        (
            "post",
            "/v1/search/image",
            TestRequest::post().uri("/v1/search/image").set_json(json!({"image_base64": demo_image_base64(), "k": 3})),
        ),
        ("get", "/v1/products/{id}/similar", TestRequest::get().uri("/v1/products/sku-001/similar?k=3")),
        ("get", "/v1/products/{id}", TestRequest::get().uri("/v1/products/sku-001")),
        ("get", "/v1/products", TestRequest::get().uri("/v1/products?limit=2").insert_header(admin())),
        ("get", "/v1/jobs", TestRequest::get().uri("/v1/jobs").insert_header(admin())),
        ("get", "/v1/stats", TestRequest::get().uri("/v1/stats").insert_header(admin())),
        ("get", "/v1/admin/health", TestRequest::get().uri("/v1/admin/health").insert_header(admin())),
        // Errors.
        ("get", "/v1/products/{id}", TestRequest::get().uri("/v1/products/no-such-product")),
        ("get", "/v1/stats", TestRequest::get().uri("/v1/stats")),
        ("post", "/v1/search/text", TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "x", "k": "many"}))),
        ("get", "/v1/jobs/{id}", TestRequest::get().uri("/v1/jobs/nope").insert_header(admin())),
    ];
    for (method, path, req) in cases {
        let (s, body) = call(&app, req).await;
        check(&doc, method, path, s, &body);
    }
}

#[actix_web::test]
async fn write_routes_answer_what_the_document_says() {
    let (_d, data) = writable_data();
    let state = state_for(data, |_| {});
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let doc = document();
    let mut row = demo_products()[0].clone();
    row["id"] = json!("doc-1");
    row["images"] = json!([]);
    let (s, v) = call(&app, TestRequest::put().uri("/v1/products/doc-1").insert_header(admin()).set_json(&row)).await;
    check(&doc, "put", "/v1/products/{id}", s, &v);
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(&app, TestRequest::post().uri("/v1/products").insert_header(admin()).set_json(json!([row]))).await;
    check(&doc, "post", "/v1/products", s, &v);
    assert_eq!(s, StatusCode::OK, "{v}");
    // A product without images is a hit with `image_url: null`: the document must allow it.
    let title = row["title"].as_str().unwrap().to_string();
    let (s, v) = call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": title, "k": 50}))).await;
    check(&doc, "post", "/v1/search/text", s, &v);
    let hit = v["hits"].as_array().unwrap().iter().find(|h| h["id"] == "doc-1").unwrap_or_else(|| panic!("doc-1 not found: {v}"));
    assert_eq!((&hit["image_url"], &hit["images"]), (&Value::Null, &json!(0)), "{hit}");
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/products").insert_header(admin()).set_json(json!([{"title": "no id"}]))).await;
    check(&doc, "post", "/v1/products", s, &v);
    let (s, v) = call(&app, TestRequest::delete().uri("/v1/products/doc-1").insert_header(admin())).await;
    check(&doc, "delete", "/v1/products/{id}", s, &v);
    let (s, v) = call(&app, TestRequest::delete().uri("/v1/products/doc-1").insert_header(admin())).await;
    check(&doc, "delete", "/v1/products/{id}", s, &v);
    let (s, v) = call(&app, TestRequest::put().uri("/v1/products/x").insert_header(admin()).set_json(json!([1]))).await;
    check(&doc, "put", "/v1/products/{id}", s, &v);

    let (s, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/ingest")
            .insert_header(admin())
            .insert_header(("content-type", "application/x-ndjson"))
            .set_payload(format!("{}\n{{broken\n", json!({"id": "doc-2", "title": "A plain mug"}))),
    )
    .await;
    check(&doc, "post", "/v1/ingest", s, &v);
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let job = wait_for_job(&app, &id).await;
    check(&doc, "get", "/v1/jobs/{id}", StatusCode::OK, &job);
    let (s, v) = call(&app, TestRequest::get().uri("/v1/jobs").insert_header(admin())).await;
    check(&doc, "get", "/v1/jobs", s, &v);
    state.writes.close();
}

async fn wait_for_job(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    id: &str,
) -> Value {
    for _ in 0..300 {
        let (_, job) = call(app, TestRequest::get().uri(&format!("/v1/jobs/{id}")).insert_header(admin())).await;
        if job["state"] == "done" || job["state"] == "failed" {
            return job;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not finish in 30 s");
}

/// Scores come from float model math: rounded, so a snapshot survives another CPU's last bits.
macro_rules! search_snapshot {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, $value, {
            ".took_ms" => "[ms]",
            ".timings.search_ms" => "[ms]",
            ".timings.filter_ms" => "[ms]",
            ".timings.vector_ms" => "[ms]",
            ".timings.keyword_ms" => "[ms]",
            ".timings.fuse_ms" => "[ms]",
            ".timings.hydrate_ms" => "[ms]",
            ".hits[].score" => insta::rounded_redaction(3),
            ".hits[].explain.fused" => insta::rounded_redaction(3),
            ".hits[].explain.image.score" => insta::rounded_redaction(3),
            ".hits[].explain.text.score" => insta::rounded_redaction(3),
            ".hits[].explain.keyword.score" => insta::rounded_redaction(3),
        })
    };
}

#[actix_web::test]
async fn api_json_snapshots() {
    let state = state_for(demo_data(), |_| {});
    let app = test::init_service(vitrine_web::app(state)).await;

    let (s, v) = call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "astronaut poster", "k": 3}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    search_snapshot!("search_text", v);

    let (s, v) = call(&app, TestRequest::get().uri("/v1/search?q=poster&facets=true&k=2")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    search_snapshot!("search_facets", v);

    // Weighted fusion over all three channels: the explain block shows each one.
    let (s, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/search/image")
            .set_json(json!({"image_base64": demo_image_base64(), "q": "astronaut", "k": 2,
            "fusion": {"mode": "weighted", "weights": {"image": 1.0, "text": 0.5, "keyword": 1.0}}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    search_snapshot!("search_explain", v);

    let (s, v) = call(&app, TestRequest::get().uri("/v1/products/sku-001")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Image references are absolute paths of this checkout.
    insta::assert_json_snapshot!("product", v, { ".images[]" => "[path]", ".updated_at" => "[timestamp]" });

    let (s, v) = call(&app, TestRequest::get().uri("/v1/stats").insert_header(admin())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    insta::assert_json_snapshot!("stats", v, {
        ".uptime_s" => "[uptime]",
        ".disk_bytes" => "[bytes]",
        ".model.content_hash" => "[hash]",
    });

    let (s, v) = call(&app, TestRequest::get().uri("/v1/products/no-such-product")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("error_not_found", v);
}

#[actix_web::test]
async fn job_json_snapshot() {
    let (_d, data) = writable_data();
    let state = state_for(data, |_| {});
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let (s, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/ingest")
            .insert_header(admin())
            .insert_header(("content-type", "application/x-ndjson"))
            .set_payload(format!("{}\n{{broken\n", json!({"id": "snap-1", "title": "A plain mug"}))),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = wait_for_job(&app, v["job_id"].as_str().unwrap()).await;
    insta::assert_json_snapshot!("job", job, {
        ".id" => "[id]",
        ".created_at" => "[timestamp]",
        ".started_at" => "[timestamp]",
        ".finished_at" => "[timestamp]",
        ".rate_per_s" => "[rate]",
        ".eta_s" => "[eta]",
        ".failures_url" => "[url]",
        ".report" => "[path]",
        ".catalog" => "[file]",
    });
    state.writes.close();
}
