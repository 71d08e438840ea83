//! What the shopper page relies on, through the HTTP service: highlighted matches, sort, multi-select
//! facets with disjunctive counts, stable paging, crops of image queries, more like this with filters.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use serde_json::{json, Value};

use crate::common::*;
use crate::service::{call, demo_data, ids, multipart, state_for, writable_data, KEY};

const KEYWORD_ONLY: &str = r#"{"weights": {"image": 0, "text": 0, "keyword": 1}}"#;

fn keyword_only() -> Value {
    serde_json::from_str(KEYWORD_ONLY).unwrap()
}

fn hit<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["hits"].as_array().unwrap().iter().find(|h| h["id"] == id).unwrap_or_else(|| panic!("{id} not in {v}"))
}

fn prices(v: &Value) -> Vec<Option<f64>> {
    v["hits"].as_array().unwrap().iter().map(|h| h["price"].as_f64()).collect()
}

fn counts(v: &Value, facet: &str) -> BTreeMap<String, u64> {
    v["facets"][facet]
        .as_array()
        .unwrap_or_else(|| panic!("no {facet} facet in {v}"))
        .iter()
        .map(|f| (f["value"].as_str().unwrap().to_string(), f["count"].as_u64().unwrap()))
        .collect()
}

#[actix_web::test]
async fn hits_carry_highlighted_matches_on_stems_and_typos() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    let search =
        |q: &str| TestRequest::post().uri("/v1/search/text").set_json(json!({"q": q, "k": 50, "fusion": keyword_only()}));
    // Stems: "mugs" and "galaxy" mark "Mug" and "Galaxies".
    let (s, v) = call(&app, search("galaxy mugs")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hit(&v, "sku-014")["highlights"]["title"], "Deep Space <mark>Galaxies</mark> <mark>Mug</mark>");
    assert_eq!(hit(&v, "sku-013")["highlights"]["title"], "Hubble Deep Field <mark>Galaxy</mark> Poster");
    // A typo the keyword channel forgives is marked too, on the word it matched.
    let (_, v) = call(&app, search("vintage cameramen")).await;
    assert_eq!(hit(&v, "sku-020")["highlights"]["title"], "<mark>Vintage</mark> <mark>Cameraman</mark> Photo Print");
    // The description shows a snippet around its first match; operators and field prefixes are not words.
    let (_, v) = call(&app, search("title:astronaut helmet NOT canvas")).await;
    let h = &hit(&v, "sku-001")["highlights"];
    assert_eq!(h["title"], "<mark>Astronaut</mark> Portrait Poster", "{h}");
    let d = h["description"].as_str().unwrap();
    assert!(d.contains("<mark>helmet</mark>") && d.contains("<mark>astronaut</mark>"), "{d}");
    assert!(!d.contains("<mark>NOT</mark>") && !d.contains("<mark>not</mark>"), "{d}");
    // A hit whose description does not match has no description highlight.
    let (_, v) = call(&app, search("canvas")).await;
    assert_eq!(hit(&v, "sku-024")["highlights"]["title"], "Red Brick Wall <mark>Canvas</mark>");
    assert!(hit(&v, "sku-024")["highlights"].get("description").is_none(), "{v}");

    // A photo-only query marks nothing, and still carries the escaped title.
    let photo = std::fs::read(root().join("demo/queries/sku-007.jpg")).unwrap();
    let (ct, body) = multipart(&[("image", "q.jpg", photo)]);
    let (s, v) =
        call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for h in v["hits"].as_array().unwrap() {
        assert_eq!(h["highlights"]["title"], h["title"], "{h}");
        assert!(!h["highlights"].to_string().contains("<mark>"), "{h}");
    }
}

#[actix_web::test]
async fn highlights_escape_html_in_titles_and_descriptions() {
    let (_d, data) = writable_data();
    let app = test::init_service(vitrine_web::app(state_for(data, |_| {}))).await;
    let (s, v) = call(
        &app,
        TestRequest::put().uri("/v1/products/xss-1").insert_header(("x-api-key", KEY)).set_json(json!({
            "title": "<script>alert(1)</script> Red & \"Blue\" <img src=x onerror=alert(2)> Mug",
            "description": "A <b>bold</b> red mug & 'more'."})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = call(
        &app,
        TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "red mug script img", "fusion": keyword_only()})),
    )
    .await;
    let h = &hit(&v, "xss-1")["highlights"];
    assert_eq!(
        h["title"],
        "&lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt; <mark>Red</mark> &amp; &quot;Blue&quot; \
         &lt;<mark>img</mark> src=x onerror=alert(2)&gt; <mark>Mug</mark>"
    );
    assert_eq!(h["description"], "A &lt;b&gt;bold&lt;/b&gt; <mark>red</mark> <mark>mug</mark> &amp; &#39;more&#39;.");
    for field in ["title", "description"] {
        let s = h[field].as_str().unwrap().replace("<mark>", "").replace("</mark>", "");
        assert!(!s.contains('<') && !s.contains('>'), "{field}: {s}");
    }
}

#[actix_web::test]
async fn sort_orders_the_candidates_by_price_with_unpriced_products_last() {
    let (_d, data) = writable_data();
    let app = test::init_service(vitrine_web::app(state_for(data, |_| {}))).await;
    let (s, _) = call(
        &app,
        TestRequest::put()
            .uri("/v1/products/no-price")
            .insert_header(("x-api-key", KEY))
            .set_json(json!({"title": "Unpriced Galaxy Print", "category": "print"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, rel) = call(&app, TestRequest::get().uri("/v1/search?q=print%20galaxy&k=50")).await;
    let mut relevant = ids(&rel);
    relevant.sort();
    for (sort, ascending) in [("price_asc", true), ("price_desc", false)] {
        let (s, v) = call(&app, TestRequest::get().uri(&format!("/v1/search?q=print%20galaxy&k=50&sort={sort}"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let p = prices(&v);
        assert_eq!(p.last(), Some(&None), "{sort}: the product without a price goes last: {v}");
        let priced: Vec<f64> = p.iter().flatten().copied().collect();
        assert_eq!(priced.len(), p.len() - 1, "{v}");
        assert!(priced.windows(2).all(|w| if ascending { w[0] <= w[1] } else { w[0] >= w[1] }), "{sort}: {priced:?}");
        // The same candidates, in another order.
        let mut got = ids(&v);
        got.sort();
        assert_eq!(got, relevant, "{sort}");
        // The JSON request sorts the same way.
        let (_, j) =
            call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "print galaxy", "k": 50, "sort": sort})))
                .await;
        assert_eq!(ids(&j), ids(&v), "{sort}");
    }
    for bad in ["/v1/search?q=print&sort=cheapest", "/v1/search?q=print&sort="] {
        let (s, v) = call(&app, TestRequest::get().uri(bad)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{bad}: {v}");
    }
    let (s, v) = call(&app, TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "print", "sort": "PRICE"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[actix_web::test]
async fn facets_are_multi_select_with_counts_that_leave_out_their_own_selection() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    let get = |qs: &str| TestRequest::get().uri(&format!("/v1/search?q=poster%20print%20mug&k=200&facets=true{qs}"));
    let (_, all) = call(&app, get("")).await;
    let (s, v) = call(&app, get("&category=poster&category=mug")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hits = v["hits"].as_array().unwrap();
    assert!(hits.iter().any(|h| h["category"] == "poster") && hits.iter().any(|h| h["category"] == "mug"), "OR within a facet");
    assert!(hits.iter().all(|h| h["category"] == "poster" || h["category"] == "mug"), "{v}");
    // The category facet ignores its own selection: every category keeps its count.
    assert_eq!(counts(&v, "category"), counts(&all, "category"));
    assert!(counts(&v, "category").len() > 2, "{v}");
    // Other facets follow it: brands and prices count the selected categories' products only.
    let mut brands: BTreeMap<String, u64> = BTreeMap::new();
    for h in hits {
        *brands.entry(h["brand"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(counts(&v, "brand"), brands);
    let price_total: u64 = v["facets"]["price"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(price_total, hits.len() as u64);
    assert_eq!(v["total"].as_u64().unwrap(), hits.len() as u64);

    // AND across facets: a brand as well narrows the hits, and the category counts now follow the brand.
    let (_, b) = call(&app, get("&category=poster&category=mug&brand=Pebble%20Studio")).await;
    let hits = b["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["brand"] == "Pebble Studio" && h["category"] == "mug"), "{b}");
    let cats = counts(&b, "category");
    assert_eq!(cats.get("mug"), Some(&(hits.len() as u64)), "{b}");
    assert!(cats.contains_key("decor") && !cats.contains_key("poster"), "Pebble Studio sells no posters: {cats:?}");
    assert_eq!(counts(&b, "brand"), counts(&v, "brand"), "the brand facet leaves out its own selection");
    // A price range leaves the price buckets whole and narrows the rest.
    let (_, p) = call(&app, get("&price_max=20")).await;
    assert_eq!(p["facets"]["price"], all["facets"]["price"]);
    assert!(p["hits"].as_array().unwrap().iter().all(|h| h["price"].as_f64().unwrap() <= 20.0));
    assert!(counts(&p, "category").values().sum::<u64>() < counts(&all, "category").values().sum::<u64>());
}

#[actix_web::test]
async fn pages_are_stable_and_say_the_total() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    for (route, extra) in
        [("/v1/search?q=print%20poster", ""), ("/v1/search?q=cat", "&sort=price_asc"), ("/v1/search?q=mug", "&facets=true")]
    {
        let (_, whole) = call(&app, TestRequest::get().uri(&format!("{route}{extra}&k=50"))).await;
        let total = whole["total"].as_u64().unwrap();
        assert_eq!(total as usize, ids(&whole).len(), "{route}: {whole}");
        let mut paged = vec![];
        for offset in (0..total).step_by(4) {
            let (_, page) = call(&app, TestRequest::get().uri(&format!("{route}{extra}&k=4&offset={offset}"))).await;
            assert_eq!(page["total"], total, "every page says the same total");
            paged.extend(ids(&page));
        }
        assert_eq!(paged, ids(&whole), "{route}{extra}: pages are one order");
        let (_, again) = call(&app, TestRequest::get().uri(&format!("{route}{extra}&k=50"))).await;
        assert_eq!(ids(&again), ids(&whole));
    }
    // Past the end: no hits, the same total.
    let (s, v) = call(&app, TestRequest::get().uri("/v1/search?q=print&k=10&offset=9000")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["hits"].as_array().unwrap().is_empty() && v["total"].as_u64().unwrap() > 0, "{v}");
}

/// Two catalog photos side by side, each `side` pixels square, as a PNG.
fn side_by_side(left: &str, right: &str, side: u32) -> Vec<u8> {
    let load = |sku: &str| {
        image::load_from_memory(&std::fs::read(root().join(format!("demo/images/{sku}.jpg"))).unwrap())
            .unwrap()
            .resize_exact(side, side, image::imageops::FilterType::Triangle)
            .to_rgb8()
    };
    let mut out = image::RgbImage::new(side * 2, side);
    image::imageops::replace(&mut out, &load(left), 0, 0);
    image::imageops::replace(&mut out, &load(right), i64::from(side), 0);
    let mut png = std::io::Cursor::new(Vec::new());
    out.write_to(&mut png, image::ImageFormat::Png).unwrap();
    png.into_inner()
}

#[actix_web::test]
async fn image_queries_search_the_cropped_region() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    let photo = side_by_side("sku-007", "sku-020", 224);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
    for (crop, want) in
        [(json!({"x": 0, "y": 0, "w": 0.5, "h": 1}), "sku-007"), (json!({"x": 0.5, "y": 0, "w": 0.5, "h": 1}), "sku-020")]
    {
        let (s, v) =
            call(&app, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_base64": b64, "k": 3, "crop": crop})))
                .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(ids(&v)[0], want, "JSON crop {crop}: {v}");
        let (ct, body) = multipart(&[("image", "q.png", photo.clone()), ("crop", "", crop.to_string().into_bytes())]);
        let (s, v) =
            call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(ids(&v)[0], want, "multipart crop {crop}: {v}");
    }

    // Hostile crops: each is a 400 with the house code, before any model work where it can be.
    let huge = "9".repeat(20_000);
    let bad_json = [
        r#"{"x": NaN, "y": 0, "w": 1, "h": 1}"#.to_string(),
        r#"{"x": -0.1, "y": 0, "w": 0.5, "h": 0.5}"#.to_string(),
        r#"{"x": 0, "y": 1, "w": 0.5, "h": 0.5}"#.to_string(),
        r#"{"x": 0, "y": 0, "w": 1.5, "h": 0.5}"#.to_string(),
        r#"{"x": 0.6, "y": 0, "w": 0.5, "h": 0.5}"#.to_string(),
        r#"{"x": 0, "y": 0, "w": 0, "h": 0.5}"#.to_string(),
        r#"{"x": 0, "y": 0, "w": 1e999, "h": 0.5}"#.to_string(),
        format!(r#"{{"x": 0, "y": 0, "w": {huge}, "h": 0.5}}"#),
        format!(r#"{{"x": "{huge}", "y": 0, "w": 0.5, "h": 0.5}}"#),
        r#"{"x": 0, "y": 0, "w": 0.5}"#.to_string(),
        r#"{"x": 0, "y": 0, "w": 0.5, "h": 0.5, "z": 1}"#.to_string(),
        r#""0,0,1,1""#.to_string(),
        // Valid relative numbers, but less than a pixel of a 448-pixel-wide image.
        r#"{"x": 0.5, "y": 0, "w": 0.0001, "h": 1}"#.to_string(),
    ];
    for crop in &bad_json {
        let body = format!(r#"{{"image_base64": "{b64}", "crop": {crop}}}"#);
        let (s, v) = call(
            &app,
            TestRequest::post().uri("/v1/search/image").insert_header(("content-type", "application/json")).set_payload(body),
        )
        .await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "JSON crop {crop}: {v}");
        let (ct, body) = multipart(&[("image", "q.png", photo.clone()), ("crop", "", crop.clone().into_bytes())]);
        let (s, v) =
            call(&app, TestRequest::post().uri("/v1/search/image").insert_header(("content-type", ct)).set_payload(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "multipart crop {crop}: {v}");
    }
    // A crop belongs to an image: the text route refuses it as an unknown field.
    let (s, _) = call(
        &app,
        TestRequest::post().uri("/v1/search/text").set_json(json!({"q": "cat", "crop": {"x": 0, "y": 0, "w": 1, "h": 1}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The service still answers.
    let (s, v) = call(&app, TestRequest::post().uri("/v1/search/image").set_json(json!({"image_base64": b64, "k": 1}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[actix_web::test]
async fn more_like_this_keeps_filters_sort_and_facets() {
    let app = test::init_service(vitrine_web::app(state_for(demo_data(), |_| {}))).await;
    let (s, v) =
        call(&app, TestRequest::get().uri("/v1/products/sku-007/similar?k=20&category=print&category=apparel&facets=true")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hits = v["hits"].as_array().unwrap();
    assert!(!hits.is_empty(), "{v}");
    assert!(hits.iter().all(|h| h["category"] == "print" || h["category"] == "apparel"), "{v}");
    assert!(!ids(&v).contains(&"sku-007".to_string()));
    assert!(counts(&v, "category").contains_key("poster"), "facet counts leave out their own selection: {v}");
    let (_, v) = call(&app, TestRequest::get().uri("/v1/products/sku-007/similar?k=20&price_max=20&sort=price_desc")).await;
    let p: Vec<f64> = prices(&v).into_iter().flatten().collect();
    assert!(!p.is_empty() && p.iter().all(|p| *p <= 20.0) && p.windows(2).all(|w| w[0] >= w[1]), "{v}");
    let (s, _) = call(&app, TestRequest::get().uri("/v1/products/sku-007/similar?sort=nope")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
