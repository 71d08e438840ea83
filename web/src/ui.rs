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
        None => HttpResponse::NotFound().json(crate::error::ErrorBody::new("not_found", format!("no asset {path}"))),
    }
}

#[utoipa::path(get, path = "/", tag = "ui", responses((status = 200, description = "The search page", content_type = "text/html", body = String)))]
pub async fn index() -> HttpResponse {
    serve("index.html")
}

#[utoipa::path(get, path = "/admin", tag = "ui", responses((status = 200, description = "The admin page", content_type = "text/html", body = String)))]
pub async fn admin() -> HttpResponse {
    serve("admin.html")
}

#[utoipa::path(get, path = "/ui/{path}", tag = "ui",
    params(("path" = String, Path, description = "An embedded asset, e.g. `app.css`")),
    responses(
        (status = 200, description = "The asset", content_type = "*/*", body = [u8]),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
    ))]
pub async fn asset(path: web::Path<String>) -> HttpResponse {
    serve(&path)
}
