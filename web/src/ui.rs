//! The shopper page, the admin dashboard and the API console (`/docs`, Swagger UI vendored under
//! `ui/vendor/`), embedded in the binary (no CDN, no build step).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

/// Vendored releases live in folders named for their version (`vendor/swagger-ui-5.35.0/`), so a
/// file there never changes under its URL and browsers may keep it; everything else is revalidated.
const VERSIONED: &str = "vendor/swagger-ui-";

/// The API console's policy: its own scripts and the document only. Swagger UI sets inline styles
/// and draws icons as `data:` images; `connect-src 'self'` keeps "Try it out" on this server.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn serve(path: &str) -> HttpResponse {
    match Assets::get(path) {
        Some(f) => HttpResponse::Ok()
            .content_type(f.metadata.mimetype())
            .insert_header((
                "Cache-Control",
                if path.starts_with(VERSIONED) { "public, max-age=31536000, immutable" } else { "no-cache" },
            ))
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

#[utoipa::path(get, path = "/docs", tag = "ui",
    responses((status = 200, description = "The API console: this document in Swagger UI, served from the binary", content_type = "text/html", body = String)))]
pub async fn docs() -> HttpResponse {
    let mut res = serve("vendor/docs.html");
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
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
