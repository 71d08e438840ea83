//! The shopper page and admin dashboard, embedded in the binary (no CDN, no build step).

use actix_web::{web, HttpResponse};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

fn serve(path: &str) -> HttpResponse {
    match Assets::get(path) {
        Some(f) => HttpResponse::Ok()
            .content_type(f.metadata.mimetype())
            .insert_header(("Cache-Control", "no-cache"))
            .body(f.data.into_owned()),
        None => HttpResponse::NotFound()
            .json(serde_json::json!({"error": {"code": "not_found", "message": format!("no asset {path}")}})),
    }
}

pub async fn index() -> HttpResponse {
    serve("index.html")
}

pub async fn admin() -> HttpResponse {
    serve("admin.html")
}

pub async fn asset(path: web::Path<String>) -> HttpResponse {
    serve(&path)
}
