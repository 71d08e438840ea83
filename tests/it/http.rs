//! HTTP details an integrator meets first: 405 with `Allow`, CORS for configured origins only,
//! and the offline API console at `/docs`.

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use serde_json::Value;

use crate::service::{call, demo_data, state_for};

async fn raw(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    req: TestRequest,
) -> (StatusCode, actix_web::http::header::HeaderMap, Vec<u8>) {
    let res = test::call_service(app, req.to_request()).await;
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, test::read_body(res).await.to_vec())
}

fn header(h: &actix_web::http::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_string())
}

#[actix_web::test]
async fn a_wrong_method_is_405_with_allow_and_an_unknown_path_stays_404() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    let cases = [
        (TestRequest::get().uri("/v1/search/text"), "POST"),
        (TestRequest::get().uri("/v1/search/image"), "POST"),
        (TestRequest::put().uri("/v1/search"), "GET, HEAD"),
        (TestRequest::delete().uri("/v1/products"), "POST, GET, HEAD"),
        (TestRequest::post().uri("/v1/products/sku-001"), "GET, PUT, DELETE, HEAD"),
        (TestRequest::get().uri("/v1/ingest"), "POST"),
        (TestRequest::post().uri("/healthz"), "GET, HEAD"),
        (TestRequest::post().uri("/docs"), "GET, HEAD"),
        (TestRequest::default().method(actix_web::http::Method::OPTIONS).uri("/v1/stats"), "GET, HEAD"),
    ];
    for (req, allow) in cases {
        let (s, h, body) = raw(&app, req).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&body)));
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
        assert_eq!(header(&h, "allow").as_deref(), Some(allow), "{v}");
        assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(allow), "the message names the methods to use: {message}");
    }
    for uri in ["/v1/nothing-here", "/v1/search/text/extra", "/docs/x"] {
        let (s, v) = call(&app, TestRequest::post().uri(uri)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{uri}: {v}");
    }
    // The right method still answers, and a GET route answers HEAD.
    let (s, _) = call(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, _) = raw(&app, TestRequest::default().method(actix_web::http::Method::HEAD).uri("/docs")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("content-security-policy").is_some());
}

const SHOP: &str = "https://shop.example.com";

fn preflight(origin: &str, path: &str) -> TestRequest {
    TestRequest::default()
        .method(actix_web::http::Method::OPTIONS)
        .uri(path)
        .insert_header(("origin", origin))
        .insert_header(("access-control-request-method", "POST"))
        .insert_header(("access-control-request-headers", "content-type, authorization"))
}

#[actix_web::test]
async fn cors_answers_listed_origins_only() {
    let state = state_for(demo_data(), |c| c.cors_origin = vec![SHOP.into(), "http://127.0.0.1:3000".into()]);
    let app = test::init_service(vitrine_web::app(state)).await;

    let (s, h, _) = raw(&app, preflight(SHOP, "/v1/search/text")).await;
    assert!(s.is_success(), "{s}");
    assert_eq!(header(&h, "access-control-allow-origin").as_deref(), Some(SHOP));
    let methods = header(&h, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let headers = header(&h, "access-control-allow-headers").unwrap().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type") && headers.contains("x-api-key"), "{headers}");
    assert_eq!(header(&h, "access-control-allow-credentials"), None, "keys travel in headers, never cookies");

    let req = TestRequest::post()
        .uri("/v1/search/text")
        .insert_header(("origin", SHOP))
        .set_json(serde_json::json!({"q": "poster", "k": 1}));
    let (s, h, _) = raw(&app, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "access-control-allow-origin").as_deref(), Some(SHOP));
    assert!(header(&h, "vary").unwrap_or_default().to_ascii_lowercase().contains("origin"), "caches keep origins apart");

    // An origin that is not listed is never reflected, nor answered with a wildcard.
    for evil in ["https://evil.example", "https://shop.example.com.evil.example", "null"] {
        let (s, h, _) = raw(&app, preflight(evil, "/v1/search/text")).await;
        assert!(!s.is_success(), "{evil}: preflight {s}");
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{evil}");
        let req = TestRequest::get().uri("/v1/search?q=poster&k=1").insert_header(("origin", evil));
        let (s, h, _) = raw(&app, req).await;
        assert_eq!(s, StatusCode::OK, "a non-browser client still gets its answer");
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{evil}");
    }
}

#[actix_web::test]
async fn no_configured_origin_means_no_cors_headers() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    let (s, h, _) = raw(&app, preflight(SHOP, "/v1/search/text")).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "no CORS: OPTIONS is just a method the route lacks");
    assert_eq!(header(&h, "access-control-allow-origin"), None);
    let (_, h, _) = raw(&app, TestRequest::get().uri("/v1/search?q=poster").insert_header(("origin", SHOP))).await;
    assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")), "{h:?}");
}

#[actix_web::test]
async fn the_api_console_is_served_from_the_binary_with_a_strict_policy() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    let (s, h, body) = raw(&app, TestRequest::get().uri("/docs")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(header(&h, "content-type").unwrap().starts_with("text/html"));
    let csp = header(&h, "content-security-policy").expect("a CSP");
    for part in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
    let html = String::from_utf8(body).unwrap();
    // Every script and stylesheet is on this server, and each one is served.
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let url = part.split('"').next().unwrap();
            if !url.starts_with("/v1/") {
                assets.push(url.to_string());
            }
        }
    }
    assert!(assets.len() >= 3, "{assets:?}");
    assert!(!html.contains("<script>") && !html.contains("://"), "no inline script, no other origin:\n{html}");
    for url in &assets {
        assert!(url.starts_with("/ui/"), "{url}");
        let (s, h, body) = raw(&app, TestRequest::get().uri(url)).await;
        assert_eq!(s, StatusCode::OK, "{url}");
        assert!(!body.is_empty(), "{url}");
        let cache = header(&h, "cache-control").unwrap();
        if url.contains("/swagger-ui-") {
            assert!(cache.contains("immutable") && cache.contains("max-age=31536000"), "{url}: {cache}");
        } else {
            assert_eq!(cache, "no-cache", "{url}");
        }
    }
    let js = assets.iter().find(|u| u.ends_with("docs.js")).expect("the console's start script");
    let (_, _, body) = raw(&app, TestRequest::get().uri(js)).await;
    let js = String::from_utf8(body).unwrap();
    assert!(js.contains("\"/v1/openapi.json\"") && js.contains("validatorUrl: null"), "{js}");
    // The licence travels with the vendored code.
    let (s, _, body) = raw(&app, TestRequest::get().uri("/ui/vendor/swagger-ui-5.35.0/LICENSE")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("Apache License"));
}
