//! The OpenAPI document, generated from the request and response types and the handlers'
//! `#[utoipa::path]` annotations, so it cannot drift from what the service serializes. docs/API.md
//! stays the prose reference.

use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::{products, search, ui};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vitrine",
        version = "1",
        description = "Visual product search: image-to-product and text-to-image with hybrid ranking. See docs/API.md."
    ),
    paths(
        crate::healthz,
        crate::readyz,
        crate::metrics_text,
        crate::openapi,
        search::get,
        search::text,
        search::image,
        search::similar,
        products::list,
        products::batch,
        products::get,
        products::put,
        products::delete,
        products::image,
        products::thumb,
        products::ingest,
        products::jobs,
        products::job,
        products::job_failures,
        products::job_report,
        products::upload_images,
        products::stats,
        products::health,
        products::create_snapshot,
        products::snapshots,
        crate::relevance::get,
        crate::relevance::run,
        ui::index,
        ui::admin,
        ui::docs,
        ui::asset,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Keys),
    tags(
        (name = "search", description = "Text, image and more-like-this search"),
        (name = "products", description = "Product records and their images"),
        (name = "ingest", description = "Catalog ingest jobs"),
        (name = "operations", description = "Health, readiness, metrics and statistics"),
        (name = "ui", description = "The embedded web pages"),
    )
)]
pub struct ApiDoc;

/// The two ways to send a key: `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
struct Keys;

impl utoipa::Modify for Keys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))));
    }
}

/// The document as served by `GET /v1/openapi.json`, built once.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes"))
}
