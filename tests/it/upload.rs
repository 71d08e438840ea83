//! Catalogs uploaded with their images over HTTP (`POST /v1/ingest` as a zip or a multipart
//! upload), a product's image upload, and the job report, on the tiny model and the demo photos.

use std::io::Write;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use serde_json::{json, Value};

use crate::common::*;
use crate::service::{call, state_for, writable_data, KEY};

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(vec![]));
    for (name, bytes) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn multipart(parts: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "XvitrineUploadX";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn demo_file(rel: &str) -> Vec<u8> {
    std::fs::read(root().join("demo").join(rel)).unwrap()
}

/// The first three lines of the demo catalog as written (relative image paths).
fn demo_rows() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("demo/catalog.jsonl")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).take(3).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Three demo products (ids `up-0..2`) whose image paths are relative, plus one that names a file
/// not in the upload and one that tries to leave it.
fn catalog() -> String {
    let mut rows = demo_rows();
    for (i, r) in rows.iter_mut().enumerate() {
        r["id"] = json!(format!("up-{i}"));
    }
    rows.push(json!({"id": "up-missing", "title": "No photo here", "image": "images/not-uploaded.jpg"}));
    rows.push(json!({"id": "up-escape", "title": "Escape", "image": "../../../etc/passwd"}));
    rows.iter().map(|r| format!("{r}\n")).collect()
}

async fn wait_job(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    id: &str,
) -> Value {
    let auth = ("authorization", format!("Bearer {KEY}"));
    for _ in 0..600 {
        let (_, j) = call(app, TestRequest::get().uri(&format!("/v1/jobs/{id}")).insert_header(auth.clone())).await;
        if j["state"] == "done" || j["state"] == "failed" {
            return j;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not end");
}

#[actix_web::test]
async fn a_zip_and_a_multipart_upload_keep_their_photos_and_report_what_they_could_not_load() {
    let (_d, data) = writable_data();
    let state = state_for(data.clone(), |_| {});
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let auth = ("authorization", format!("Bearer {KEY}"));
    let cat = catalog();
    let images: Vec<(String, Vec<u8>)> = demo_rows()
        .iter()
        .map(|r| {
            let rel = r["image"].as_str().unwrap().to_string();
            let bytes = demo_file(&rel);
            (rel, bytes)
        })
        .collect();
    // As a zip, with the catalog in a folder (what zipping the demo folder gives).
    let mut entries: Vec<(String, Vec<u8>)> = vec![("demo/catalog.jsonl".into(), cat.clone().into_bytes())];
    entries.extend(images.iter().map(|(rel, b)| (format!("demo/{rel}"), b.clone())));
    let entries_ref: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    let (s, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/ingest")
            .insert_header(auth.clone())
            .insert_header(("content-type", "application/zip"))
            .set_payload(zip_of(&entries_ref)),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&app, v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!((job["counts"]["updated"].as_u64(), job["counts"]["ingested"].as_u64()), (Some(0), Some(5)), "{job}");
    assert_eq!(job["warnings"], 2, "one file not in the upload, one path out of it: {job}");
    for i in 0..3 {
        let (_, p) = call(&app, TestRequest::get().uri(&format!("/v1/products/up-{i}"))).await;
        assert_eq!(p["indexed_images"], 1, "{p}");
        assert_eq!(p["image_urls"].as_array().unwrap().len(), 1, "{p}");
    }
    let (_, p) = call(&app, TestRequest::get().uri("/v1/products/up-missing")).await;
    assert_eq!(p["indexed_images"], 0, "{p}");
    // The report as JSON: line, id, reason.
    let (s, r) = call(
        &app,
        TestRequest::get().uri(&format!("/v1/jobs/{}/report?limit=1", job["id"].as_str().unwrap())).insert_header(auth.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!((r["total"].as_u64(), r["warnings"].as_u64(), r["items"].as_array().unwrap().len()), (Some(2), Some(2), 1), "{r}");
    assert_eq!((r["items"][0]["line"].as_u64(), r["items"][0]["id"].as_str()), (Some(4), Some("up-missing")), "{r}");
    let (s, _) = call(
        &app,
        TestRequest::get()
            .uri(&format!("/v1/jobs/{}/report?severity=bogus", job["id"].as_str().unwrap()))
            .insert_header(auth.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The jobs folder keeps no uploaded files once the job ended (they are removed right after
    // the job record says done).
    let files_left = || -> Vec<String> {
        let names = std::fs::read_dir(data.join("jobs")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned());
        names.filter(|n| n.ends_with(".files") || n.starts_with(".upload-")).collect()
    };
    for _ in 0..50 {
        if files_left().is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(files_left().is_empty(), "{:?}", files_left());

    // As multipart: the catalog in `file`, each image a part named by its relative path.
    let cat2 = cat.replace("\"up-", "\"mp-");
    let mut parts: Vec<(&str, &str, &[u8])> = vec![("file", "catalog.jsonl", cat2.as_bytes())];
    parts.extend(images.iter().map(|(rel, b)| ("images", rel.as_str(), &b[..])));
    let (ct, body) = multipart(&parts);
    let (s, v) = call(
        &app,
        TestRequest::post().uri("/v1/ingest").insert_header(auth.clone()).insert_header(("content-type", ct)).set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&app, v["job_id"].as_str().unwrap()).await;
    assert_eq!((job["counts"]["ingested"].as_u64(), job["warnings"].as_u64()), (Some(5), Some(2)), "{job}");
    let (_, p) = call(&app, TestRequest::get().uri("/v1/products/mp-1")).await;
    assert_eq!(p["indexed_images"], 1, "{p}");

    // A plain catalog with relative paths and no images: every photo is a counted warning.
    let (s, v) = call(
        &app,
        TestRequest::post()
            .uri("/v1/ingest")
            .insert_header(auth.clone())
            .insert_header(("content-type", "application/x-ndjson"))
            .set_payload(cat.replace("\"up-", "\"pl-")),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&app, v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["warnings"], 5, "{job}");
    state.writes.close();
}

#[actix_web::test]
async fn hostile_uploads_are_refused_with_400_or_413_and_leave_nothing() {
    let (_d, data) = writable_data();
    let state = state_for(data.clone(), |c| c.max_catalog = 2 << 20);
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let auth = ("authorization", format!("Bearer {KEY}"));
    let cat = b"{\"id\":\"x\",\"title\":\"x\",\"image\":\"a.jpg\"}\n";
    let zeros = vec![0u8; 8 << 20];
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("dot-dot", zip_of(&[("c.jsonl", cat), ("../a.jpg", b"x")]), StatusCode::BAD_REQUEST),
        ("absolute", zip_of(&[("c.jsonl", cat), ("/tmp/a.jpg", b"x")]), StatusCode::BAD_REQUEST),
        ("duplicate", zip_of(&[("c.jsonl", cat), ("a.jpg", b"x"), ("./a.jpg", b"y")]), StatusCode::BAD_REQUEST),
        ("nested zip", zip_of(&[("c.jsonl", cat), ("in.zip", &zip_of(&[("a.jpg", b"x")]))]), StatusCode::BAD_REQUEST),
        ("no catalog", zip_of(&[("a.jpg", b"x")]), StatusCode::BAD_REQUEST),
        ("bomb", zip_of(&[("c.jsonl", cat), ("a.jpg", &zeros)]), StatusCode::BAD_REQUEST),
        ("garbage", b"PK\x03\x04garbage".to_vec(), StatusCode::BAD_REQUEST),
        ("body over max_catalog", vec![7u8; 3 << 20], StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (what, body, want) in cases {
        let (s, v) = call(
            &app,
            TestRequest::post()
                .uri("/v1/ingest")
                .insert_header(auth.clone())
                .insert_header(("content-type", "application/zip"))
                .set_payload(body),
        )
        .await;
        assert_eq!(s, want, "{what}: {v}");
        let left: Vec<String> = std::fs::read_dir(data.join("jobs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
    }
    // A multipart image part over the image cap, and hostile part names.
    let big = vec![1u8; (state.config.max_upload) + 1];
    let (ct, body) = multipart(&[("file", "c.jsonl", cat), ("images", "a.jpg", &big)]);
    let (s, v) = call(
        &app,
        TestRequest::post().uri("/v1/ingest").insert_header(auth.clone()).insert_header(("content-type", ct)).set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (ct, body) = multipart(&[("file", "c.jsonl", cat), ("images", "../../a.jpg", b"x")]);
    let (s, v) = call(
        &app,
        TestRequest::post().uri("/v1/ingest").insert_header(auth.clone()).insert_header(("content-type", ct)).set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(!data.parent().unwrap().join("a.jpg").exists());
    // Without a key: 401 before anything is read.
    let (s, _) = call(
        &app,
        TestRequest::post()
            .uri("/v1/ingest")
            .insert_header(("content-type", "application/zip"))
            .set_payload(zip_of(&[("c.jsonl", cat)])),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    state.writes.close();
}

#[actix_web::test]
async fn a_product_image_upload_adds_or_replaces_its_images() {
    let (_d, data) = writable_data();
    let state = state_for(data.clone(), |_| {});
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let auth = ("authorization", format!("Bearer {KEY}"));
    let id = demo_products()[0]["id"].as_str().unwrap().to_string();
    let photo = demo_file(demo_products()[1]["image"].as_str().unwrap());
    let (ct, body) = multipart(&[("image", "new.jpg", &photo)]);
    let (s, p) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/v1/products/{id}/images"))
            .insert_header(auth.clone())
            .insert_header(("content-type", ct))
            .set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["indexed_images"], 2, "added after the one it had: {p}");
    // Replace, with one image that is not an image: a warning, and it has the other.
    let (ct, body) = multipart(&[("image", "a.jpg", &photo), ("image", "b.jpg", b"root:x:0:0")]);
    let (s, p) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/v1/products/{id}/images?replace=true"))
            .insert_header(auth.clone())
            .insert_header(("content-type", ct))
            .set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["indexed_images"], 1, "{p}");
    assert_eq!(p["image_errors"].as_array().unwrap().len(), 1, "{p}");
    let warning = p["warnings"][0].as_str().unwrap();
    assert!(!warning.contains(".upload-") && !warning.contains(data.to_str().unwrap()), "no server path: {warning}");
    // Hostile: no image part, too many parts, an unknown product, no key.
    let (ct, body) = multipart(&[]);
    let (s, _) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/v1/products/{id}/images"))
            .insert_header(auth.clone())
            .insert_header(("content-type", ct))
            .set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let many: Vec<(&str, &str, &[u8])> = (0..17).map(|_| ("image", "x.jpg", &b"x"[..])).collect();
    let (ct, body) = multipart(&many);
    let (s, _) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/v1/products/{id}/images"))
            .insert_header(auth.clone())
            .insert_header(("content-type", ct))
            .set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (ct, body) = multipart(&[("image", "new.jpg", &photo)]);
    let (s, _) = call(
        &app,
        TestRequest::post()
            .uri("/v1/products/nope/images")
            .insert_header(auth.clone())
            .insert_header(("content-type", ct.clone()))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &app,
        TestRequest::post().uri(&format!("/v1/products/{id}/images")).insert_header(("content-type", ct)).set_payload(body),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let left: Vec<String> =
        std::fs::read_dir(data.join("jobs")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(left.is_empty(), "{left:?}");
    state.writes.close();
}
