//! The HTTP service: routes, authentication, request parsing and the error map, over two
//! services that own the data flow:
//! - [`vitrine_searcher::service::QueryService`] (the read side): which model towers run, the
//!   bounded admission queue, `image_url` fetching, decoding, embedding and the search;
//! - [`vitrine_indexer::service::WriteService`] (the write side): the data directory's single
//!   writer, product writes, ingest jobs, and telling the searcher about new generations.
//!
//! Handlers authenticate, parse, call one of them (blocking work on `web::block`) and map the
//! result or the error ([`error::ApiError`], one exhaustive map to status and code). Body sizes
//! are bounded per route ([`limits`]).
//!
//! Threads besides actix's: the write service's job worker and idle closer, and the searcher's
//! refresher, which picks up generations written by other processes (`vitrine index`).

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod products;
pub mod relevance;
pub mod search;
pub mod state;
pub mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Condition, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use vitrine_indexer::service::{WriteConfig, WriteService};
use vitrine_indexer::{IndexOptions, LocalFiles};
use vitrine_model::batch::BatchPolicy;
use vitrine_model::{Embedder, ModelSlot};
use vitrine_searcher::service::{ImageUrls, QueryConfig, QueryService};
use vitrine_searcher::Searcher;

pub use crate::config::ServeConfig;
use crate::error::{ApiError, ApiResult, ErrorBody, StartError};
use crate::metrics::Metrics;
pub use crate::state::AppState;

/// How often the service looks for a generation written by another process.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// Build the shared state (without a model: see [`AppState::set_model`]) and start the
/// background threads. The service can listen at once: `/healthz` answers, `/readyz` says 503
/// until the model is set and an index generation is open.
pub fn build_state(config: ServeConfig) -> Result<Arc<AppState>, StartError> {
    let model = ModelSlot::default();
    let query = query_service(&config, model.clone())?;
    let notify = query.generation_listener();
    let mut write_config = WriteConfig::new(config.data.clone(), http_ingest_options(&config));
    if let Some(dir) = &config.snapshot_dir {
        write_config.snapshot_dir = dir.clone();
    }
    write_config.engine = query.searcher().engine().cloned();
    let writes = WriteService::start(write_config, model, notify)?;
    // Acknowledged writes of a process that died before building their generation.
    if let Err(e) = writes.repair() {
        tracing::warn!("repair at start: {e}");
    }
    Ok(Arc::new(AppState { config, query, writes, metrics: Arc::new(Metrics::new()), started: Instant::now() }))
}

/// The read side as `serve` builds it: the same defaults, floor and limits (also what `vitrine
/// eval` and `vitrine tune` query through, so they measure what the service answers).
pub fn query_service(config: &ServeConfig, model: ModelSlot) -> Result<Arc<QueryService>, StartError> {
    vitrine_migrations::open(&config.data)?;
    let searcher = Arc::new(match config.backend.connect()? {
        Some(engine) => {
            tracing::info!(backend = %config.backend.backend, "products live in the engine");
            Searcher::open_engine(&config.data, engine)?
        }
        None => Searcher::open(&config.data, config.ef_search)?,
    });
    let urls = match (config.allow_image_urls(), config.allow_private_image_urls) {
        (false, _) => ImageUrls::Disabled,
        (true, false) => ImageUrls::PublicOnly,
        (true, true) => ImageUrls::Any,
    };
    let mut query_config = QueryConfig::new(config.max_upload, config.queue_capacity, urls);
    query_config.batch = BatchPolicy::new(config.query_batch, Duration::from_millis(config.query_batch_wait_ms));
    Ok(QueryService::start(searcher, model, query_config, REFRESH_EVERY))
}

/// How products and catalogs sent over HTTP are ingested: images are http(s) URLs on public
/// addresses (unless `allow_private_image_urls`) or files under the media roots, nothing else.
fn http_ingest_options(config: &ServeConfig) -> IndexOptions {
    let mut opts = config.ingest.index_options();
    opts.local_files = LocalFiles::Roots(config.media_root.clone());
    opts.fetch.public_only = !config.allow_private_image_urls;
    opts.lock_wait = Duration::from_secs(config.lock_timeout_secs);
    opts
}

/// [`build_state`] with a model that is already loaded (tests, embedding in other programs).
pub fn build_state_with_model(config: ServeConfig, embedder: Arc<dyn Embedder>) -> Result<Arc<AppState>, StartError> {
    let state = build_state(config)?;
    state.query.set_model(embedder)?;
    Ok(state)
}

/// `/healthz` and `/readyz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up (the model may still be loading)", body = Status)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The model is loaded and an index generation is open", body = Status),
        (status = 503, description = "`not_ready`", body = ErrorBody),
    ))]
async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if state.query.embedder().is_none() {
        return Err(ApiError::NotReady("the model is loading"));
    }
    if !state.searcher().has_index() {
        return Err(ApiError::NotReady("no index generation yet"));
    }
    Ok(HttpResponse::Ok().json(Status { status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "`unauthorized`: no key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not read metrics", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
async fn metrics_text(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    auth::require_metrics(&req, &state)?;
    state.metrics.set_queue_depth(state.query.queue().0);
    if let Some(g) = state.searcher().snapshot() {
        state.metrics.set_index(&g.manifest);
    }
    state.metrics.set_text_cache(state.query.text_cache_stats());
    state.metrics.set_query_batches(state.query.batch_stats());
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render()))
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(api::openapi_json())
}

async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
    let method = metrics::method_label(req.method());
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
        m.observe(&route, method, res.status().as_u16(), started.elapsed());
        if let Some(e) = res.response().error().and_then(|e| e.as_error::<ApiError>()) {
            m.observe_error(e.status_and_code().1);
        }
    }
    Ok(res)
}

/// A JSON body extractor limited to `limit` bytes; over it answers 413, malformed 400.
fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default().limit(limit).error_handler(|err, _| {
        let e = match &err {
            actix_web::error::JsonPayloadError::Overflow { .. }
            | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge(err.to_string()),
            _ => ApiError::BadRequest(format!("JSON body: {err}")),
        };
        e.into()
    })
}

/// Body limits per route (bytes). A search body holds a query and filters, never data, so it is
/// small; product bodies hold records, not images (images are URLs or media-root paths).
pub mod limits {
    /// `POST /v1/search/text`.
    pub const SEARCH_JSON: usize = 64 << 10;
    /// `PUT /v1/products/{id}`.
    pub const PRODUCT_JSON: usize = 1 << 20;
    /// `POST /v1/products` (at most [`MAX_BATCH`] products).
    pub const BATCH_JSON: usize = 16 << 20;
    /// Products in one `POST /v1/products`.
    pub const MAX_BATCH: usize = 1000;
    /// Non-image fields of a multipart image search, each.
    pub const MULTIPART_FIELD: usize = 64 << 10;
    /// Fields of a multipart image search (image, q, k, offset, filters, fusion, facets).
    pub const MULTIPART_FIELDS: usize = 16;
    /// A query string (`GET /v1/search`).
    pub const QUERY_STRING: usize = 16 << 10;
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| ApiError::BadRequest(format!("query string: {err}")).into())
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _| ApiError::BadRequest(format!("path: {err}")).into())
}

async fn not_found() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("no such route; see /v1/openapi.json".into()))
}

/// A route for one method of [`routes!`]; a GET route also answers HEAD (headers, no body).
fn method_route(method: &str) -> actix_web::Route {
    match method {
        "get" => web::route().guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head())),
        "post" => web::post(),
        "put" => web::put(),
        "delete" => web::delete(),
        other => unreachable!("no route uses {other}"),
    }
}

/// The answer to a method a route does not have: 405, with `Allow` listing the ones it has.
fn method_not_allowed(methods: &'static [&'static str]) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        let mut allow: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        if methods.contains(&"get") {
            allow.push("HEAD".into());
        }
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.match_pattern().unwrap_or_default(),
            allow: allow.join(", "),
        })
    })
}

/// The route table, written once: it registers the routes and lists them as [`ROUTES`], which a
/// test compares with the generated OpenAPI document. Each path is one resource holding all its
/// methods, so another method answers 405 (not the 404 of an unknown path).
macro_rules! routes {
    ($($path:literal $(limit $limit:expr)? => { $($method:ident $handler:path),+ $(,)? })*) => {
        /// Every `(method, path)` [`configure`] registers, in actix syntax (`/ui/{path:.*}`).
        pub const ROUTES: &[(&str, &str)] = &[$($((stringify!($method), $path),)+)*];

        fn register_routes(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    web::resource($path)
                        $(.app_data(json_config($limit)))?
                        $(.route(method_route(stringify!($method)).to($handler)))+
                        .default_service(method_not_allowed(&[$(stringify!($method)),+])),
                );
            )*
        }
    };
}

routes! {
    "/healthz" => { get healthz }
    "/readyz" => { get readyz }
    "/metrics" => { get metrics_text }
    "/v1/openapi.json" => { get openapi }
    "/v1/search" => { get search::get }
    "/v1/search/text" limit limits::SEARCH_JSON => { post search::text }
    "/v1/search/image" => { post search::image }
    "/v1/products" limit limits::BATCH_JSON => { post products::batch, get products::list }
    "/v1/products/{id}/similar" => { get search::similar }
    "/v1/products/{id}/images" => { post products::upload_images }
    "/v1/products/{id}" => { get products::get, put products::put, delete products::delete }
    "/v1/images/{id}/{n}" => { get products::image }
    "/v1/thumbs/{id}/{n}" => { get products::thumb }
    "/v1/ingest" => { post products::ingest }
    "/v1/jobs" => { get products::jobs }
    "/v1/jobs/{id}" => { get products::job }
    "/v1/jobs/{id}/failures" => { get products::job_failures }
    "/v1/jobs/{id}/report" => { get products::job_report }
    "/v1/stats" => { get products::stats }
    "/v1/snapshots" => { post products::create_snapshot, get products::snapshots }
    "/v1/admin/health" => { get products::health }
    "/v1/relevance" => { get relevance::get }
    "/v1/eval" limit relevance::EVAL_JSON => { post relevance::run }
    "/" => { get ui::index }
    "/admin" => { get ui::admin }
    "/docs" => { get ui::docs }
    "/ui/{path:.*}" => { get ui::asset }
}

/// Register every route on an actix `App`.
pub fn configure(cfg: &mut web::ServiceConfig, state: Arc<AppState>) {
    cfg.app_data(web::Data::from(state))
        .app_data(json_config(limits::PRODUCT_JSON))
        .app_data(query_config())
        .app_data(path_config());
    register_routes(cfg);
}

/// Build the full app (routes, metrics middleware, 404 fallback) for a state.
pub fn app(
    state: Arc<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let cors = cors(&state.config.cors_origin);
    App::new()
        .wrap(Condition::new(cors.is_some(), cors.unwrap_or_default()))
        .wrap(from_fn(observe))
        .configure(move |cfg| configure(cfg, state))
        .default_service(web::to(not_found))
}

/// CORS for the configured origins only (`--cors-origin`); none configured, no CORS headers.
/// Keys travel in headers, never in cookies, so credentials are not allowed, and an origin that
/// is not listed gets no `Access-Control-Allow-Origin` (its own page cannot read the answer).
fn cors(origins: &[String]) -> Option<Cors> {
    if origins.is_empty() {
        return None;
    }
    let cors = origins.iter().fold(Cors::default(), |c, o| c.allowed_origin(o));
    Some(
        cors.allowed_methods(["GET", "POST", "PUT", "DELETE"])
            .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static("x-api-key")])
            .expose_headers([header::RETRY_AFTER, header::CONTENT_DISPOSITION])
            .max_age(600),
    )
}

/// Run the server until it is stopped.
pub async fn serve(state: Arc<AppState>, bind: &str) -> std::io::Result<()> {
    let s = state.clone();
    tracing::info!(%bind, "listening");
    HttpServer::new(move || app(s.clone())).bind(bind)?.run().await
}
