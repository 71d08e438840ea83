//! The media store end to end: the service serves only images it stored at ingest, never a server
//! path or a URL, keeps serving them when the sources are gone, and frees them with their products.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use serde_json::{json, Value};
use vitrine_indexer::{MediaStore, MediaUsage};
use vitrine_web::ServeConfig;

use crate::common::*;

const KEY: &str = "media-test-key";

fn app_state(data: &Path) -> Arc<vitrine_web::AppState> {
    // Products sent over HTTP may name files under the demo photos and the test's own folder.
    let roots = vec![root().join("demo"), data.parent().unwrap().to_path_buf()];
    let config = ServeConfig { data: data.to_path_buf(), admin_key: Some(KEY.into()), media_root: roots, ..Default::default() };
    let opts = vitrine_model::RuntimeOptions { device: vitrine_model::Device::Cpu, intra_threads: 2, ..Default::default() };
    let embedder = Arc::new(vitrine_model::ClipOnnx::open(&tiny_model_dir(), &opts).unwrap());
    vitrine_web::build_state_with_model(config, embedder).unwrap()
}

/// Status and body bytes.
async fn get(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    req: TestRequest,
) -> (StatusCode, Vec<u8>) {
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    (status, test::read_body(res).await.to_vec())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn demo_image(name: &str) -> Vec<u8> {
    std::fs::read(root().join("demo/images").join(name)).unwrap()
}

fn usage(data: &Path) -> MediaUsage {
    MediaStore::new(data).usage()
}

#[actix_web::test]
async fn server_files_given_as_images_are_never_served_or_shown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, demo_image("sku-003.jpg")).unwrap();
    let cat = dir.path().join("c.jsonl");
    // Through a catalog (the CLI, and ingest jobs, take the same path)...
    write_jsonl(
        &cat,
        &[
            json!({"id": "cat-1", "title": "Catalog lamp", "images": ["/etc/passwd", "../../../../../../etc/shadow", photo.display().to_string()]}),
        ],
    );
    let s = index_json(&cat, &data, &[]);
    assert_eq!(s["ingested"], 1, "{s}");
    let app = test::init_service(vitrine_web::app(app_state(&data))).await;
    // ...and through the product API.
    let (s, body) = get(
        &app,
        TestRequest::put().uri("/v1/products/api-1").insert_header(("x-api-key", KEY)).set_json(json!({
            "title": "API lamp", "images": ["/proc/self/environ", "/etc/passwd", "/nonexistent/x.jpg"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    for (id, stored) in [("cat-1", 1), ("api-1", 0)] {
        let (s, body) = get(&app, TestRequest::get().uri(&format!("/v1/products/{id}"))).await;
        assert_eq!(s, StatusCode::OK);
        let text = String::from_utf8_lossy(&body).into_owned();
        for leak in [
            "/etc",
            "/proc",
            "passwd",
            "environ",
            "shadow",
            "nonexistent",
            "photo.jpg",
            "root:",
            "PATH=",
            dir.path().to_str().unwrap(),
        ] {
            assert!(!text.contains(leak), "{id} shows {leak:?}: {text}");
        }
        let v = json_of(&body);
        assert_eq!(v["image_urls"].as_array().unwrap().len(), stored, "{v}");
        assert_eq!(v["images"].as_array().unwrap().len(), stored, "{v}");
        for n in 0..4 {
            let (s, body) = get(&app, TestRequest::get().uri(&format!("/v1/images/{id}/{n}"))).await;
            let (ts, _) = get(&app, TestRequest::get().uri(&format!("/v1/thumbs/{id}/{n}"))).await;
            if n < stored {
                assert_eq!((s, ts), (StatusCode::OK, StatusCode::OK));
                assert_eq!(body, demo_image("sku-003.jpg"), "the stored photo, byte for byte");
            } else {
                assert_eq!((s, ts), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND), "{id}/{n}");
                assert_eq!(json_of(&body)["error"]["code"], "not_found");
            }
        }
    }
    let (_, body) = get(&app, TestRequest::get().uri("/v1/products/cat-1")).await;
    let errors = json_of(&body)["image_errors"].clone();
    assert_eq!(errors[0], "image 1: not a supported image format", "short typed reasons, no paths: {errors}");
    // /etc/shadow is readable (and not an image) only when the tests run as root.
    let shadow = ["image 2: not a supported image format", "image 2: could not be read"];
    assert!(errors.as_array().unwrap().len() == 2 && shadow.contains(&errors[1].as_str().unwrap()), "{errors}");
    // Over HTTP the paths are outside every media root: refused before anything is read, so the
    // product holds no image and no error about one.
    let (_, body) = get(&app, TestRequest::get().uri("/v1/products/api-1")).await;
    assert_eq!(json_of(&body)["image_errors"], json!([]));
    // Only the photo was stored.
    assert_eq!(usage(&data).files, 1);
}

#[actix_web::test]
async fn a_product_is_served_after_its_source_file_is_deleted_and_written_back_as_shown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let photo = dir.path().join("gone.png");
    let png = std::fs::read(root().join("tests/fixtures/clip/images/camera.png")).unwrap();
    std::fs::write(&photo, &png).unwrap();
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &[json!({"id": "p1", "title": "Camera", "image": photo.display().to_string()})]);
    index_json(&cat, &data, &[]);
    std::fs::remove_file(&photo).unwrap();
    let app = test::init_service(vitrine_web::app(app_state(&data))).await;
    let res = test::call_service(&app, TestRequest::get().uri("/v1/images/p1/0").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("content-type").unwrap(), "image/png");
    assert_eq!(test::read_body(res).await.to_vec(), png);
    let (s, thumb) = get(&app, TestRequest::get().uri("/v1/thumbs/p1/0")).await;
    assert_eq!(s, StatusCode::OK);
    let t = image::load_from_memory(&thumb).unwrap();
    assert!(t.width().max(t.height()) <= 256);
    // The JSON a client read (the admin editor) goes back with a changed title and keeps its
    // image, though the source file is gone: `images` names the stored copy.
    let (_, body) = get(&app, TestRequest::get().uri("/v1/products/p1")).await;
    let mut v = json_of(&body);
    v["title"] = json!("Camera, boxed");
    let (s, body) = get(&app, TestRequest::put().uri("/v1/products/p1").insert_header(("x-api-key", KEY)).set_json(v)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v = json_of(&body);
    assert_eq!((v["title"].as_str(), v["indexed_images"].as_u64()), (Some("Camera, boxed"), Some(1)), "{v}");
    assert_eq!(v["image_errors"], json!([]));
    let (s, body) = get(&app, TestRequest::get().uri("/v1/images/p1/0")).await;
    assert_eq!((s, body), (StatusCode::OK, png));
    // A `media:` reference is a hash, never a path.
    let (_, body) = get(
        &app,
        TestRequest::put().uri("/v1/products/p2").insert_header(("x-api-key", KEY)).set_json(json!({
            "title": "Probe", "images": ["media:../../../../etc/passwd", format!("media:{}", "0".repeat(64))]})),
    )
    .await;
    assert_eq!(json_of(&body)["image_errors"], json!(["image 1: could not be read", "image 2: could not be read"]));
}

#[actix_web::test]
async fn thumbnails_work_when_the_source_url_server_is_gone_and_nothing_is_fetched_at_read_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let (up2, hits2) = (up.clone(), hits.clone());
    let server = http_server(move |path| {
        hits2.fetch_add(1, Ordering::SeqCst);
        match (up2.load(Ordering::SeqCst), path) {
            (true, "/a.jpg") => Reply::Ok(demo_image("sku-010.jpg")),
            _ => Reply::Status(404),
        }
    });
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &[json!({"id": "u1", "title": "Notebook", "image": format!("{server}/a.jpg")})]);
    let s = index_json(&cat, &data, &[]);
    assert_eq!(s["ingested"], 1, "{s}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "each image is read once at ingest");
    up.store(false, Ordering::SeqCst);
    let app = test::init_service(vitrine_web::app(app_state(&data))).await;
    let (s, body) = get(&app, TestRequest::get().uri("/v1/products/u1")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!String::from_utf8_lossy(&body).contains(&server), "the source URL is not shown");
    let (s, thumb) = get(&app, TestRequest::get().uri("/v1/thumbs/u1/0")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(image::load_from_memory(&thumb).unwrap().width() <= 256);
    let (s, img) = get(&app, TestRequest::get().uri("/v1/images/u1/0")).await;
    assert_eq!((s, img), (StatusCode::OK, demo_image("sku-010.jpg")), "served, not redirected to the source");
    // A cached thumbnail is served again, and nothing went to the source server at read time.
    let (s, again) = get(&app, TestRequest::get().uri("/v1/thumbs/u1/0")).await;
    assert_eq!((s, again), (StatusCode::OK, thumb));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn deleting_or_changing_products_frees_media_no_product_references() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let img = |n: &str| root().join("demo/images").join(n).display().to_string();
    let cat = dir.path().join("c.jsonl");
    write_jsonl(
        &cat,
        &[
            json!({"id": "a", "title": "A", "image": img("sku-001.jpg")}),
            json!({"id": "b", "title": "B", "image": img("sku-002.jpg")}),
            // The same photo as `a`: stored once, and kept while either product holds it.
            json!({"id": "c", "title": "C", "image": img("sku-001.jpg")}),
        ],
    );
    index_json(&cat, &data, &[]);
    let bytes = |n: &str| demo_image(n).len() as u64;
    assert_eq!(usage(&data), MediaUsage { files: 2, bytes: bytes("sku-001.jpg") + bytes("sku-002.jpg") });
    let app = test::init_service(vitrine_web::app(app_state(&data))).await;
    let auth = ("x-api-key", KEY);
    let (_, body) = get(&app, TestRequest::get().uri("/v1/stats").insert_header(auth)).await;
    let v = json_of(&body);
    assert_eq!((v["media_files"].as_u64(), v["media_bytes"].as_u64()), (Some(2), Some(usage(&data).bytes)), "{v}");
    // Deleting b frees its photo.
    let (s, _) = get(&app, TestRequest::delete().uri("/v1/products/b").insert_header(auth)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(usage(&data), MediaUsage { files: 1, bytes: bytes("sku-001.jpg") });
    // Deleting a keeps the photo c still shows.
    let (s, _) = get(&app, TestRequest::delete().uri("/v1/products/a").insert_header(auth)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(usage(&data).files, 1);
    let (s, body) = get(&app, TestRequest::get().uri("/v1/images/c/0")).await;
    assert_eq!((s, body), (StatusCode::OK, demo_image("sku-001.jpg")));
    // Changing c's photo frees the old one.
    let (s, _) = get(
        &app,
        TestRequest::put().uri("/v1/products/c").insert_header(auth).set_json(json!({"title": "C", "image": img("sku-005.jpg")})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(usage(&data), MediaUsage { files: 1, bytes: bytes("sku-005.jpg") });
    let (_, body) = get(&app, TestRequest::get().uri("/v1/stats").insert_header(auth)).await;
    assert_eq!(json_of(&body)["media_files"], 1);
}

#[test]
fn reindex_re_embeds_from_the_media_store_after_the_sources_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let rows: Vec<Value> = demo_products()[..6]
        .iter()
        .map(|p| {
            let mut p = p.clone();
            let from = std::path::PathBuf::from(p["image"].as_str().unwrap());
            let to = src.join(from.file_name().unwrap());
            std::fs::copy(&from, &to).unwrap();
            p["image"] = json!(to.display().to_string());
            p
        })
        .collect();
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &rows);
    index_json(&cat, &data, &[]);
    let before = usage(&data);
    std::fs::remove_dir_all(&src).unwrap();
    // Another model (other normalization constants) forces a full re-embed.
    let other = other_tiny_model(dir.path());
    let (ok, out, err) = vitrine(&["reindex", "--data", data.to_str().unwrap(), "--json", "--model", other.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("\"ingested\":6") && out.contains("\"failed\":0"), "{out}");
    let s = vitrine_searcher::Searcher::open(&data, 64).unwrap();
    let g = s.snapshot().unwrap();
    let (products, _) = vitrine_searcher::list_products(&g, None, 0, 100).unwrap();
    assert_eq!(products.len(), 6);
    for p in &products {
        assert_eq!(p.image_vectors, 1, "{} kept its image vector", p.product.id);
        let (images, _) = s.product_vectors(&g, &p.product.id).unwrap();
        assert_eq!(images.len(), 1);
    }
    assert_eq!(usage(&data), before, "the same media, nothing lost or added");
}

#[actix_web::test]
async fn products_from_before_the_media_store_answer_404_until_ingested_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture("data-v1"), &data);
    {
        let app = test::init_service(vitrine_web::app(app_state(&data))).await;
        let (s, body) = get(&app, TestRequest::get().uri("/v1/products/sku-001")).await;
        assert_eq!(s, StatusCode::OK);
        let v = json_of(&body);
        assert_eq!(v["images"], json!([]), "{v}");
        assert_eq!(v["image_errors"], json!(["image 1: not stored yet (ingest the product again)"]));
        assert!(!String::from_utf8_lossy(&body).contains(".jpg"), "no server path: {v}");
        for uri in ["/v1/images/sku-001/0", "/v1/thumbs/sku-001/0"] {
            let (s, body) = get(&app, TestRequest::get().uri(uri)).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(json_of(&body)["error"]["code"], "not_found");
        }
    }
    // The same catalog lines again: the products are done again, and their images stored.
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &demo_products()[..5]);
    let s = index_json(&cat, &data, &[]);
    assert_eq!(s["unchanged"], 0, "{s}");
    assert_eq!(usage(&data).files, 5);
    let app = test::init_service(vitrine_web::app(app_state(&data))).await;
    let (s, _) = get(&app, TestRequest::get().uri("/v1/images/sku-001/0")).await;
    assert_eq!(s, StatusCode::OK);
}
