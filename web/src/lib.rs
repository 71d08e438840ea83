//! The HTTP service: search, products, ingest jobs, operations, and the embedded UI.
//!
//! Handlers are thin: they authenticate, parse, call the searcher or the indexer off the async
//! executor (`web::block`), and map errors through [`error::ApiError`]. Model inference passes
//! through a bounded queue ([`state::InferenceQueue`]) and answers 503 when it is full, so latency
//! cannot grow without bound under overload.
//!
//! Threads besides actix's: the ingest job worker, a refresher that picks up new generations
//! written by other processes (`vitrine index`), and a closer for the idle writer.

pub mod auth;
pub mod config;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod products;
pub mod search;
pub mod state;
pub mod ui;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use vitrine_core::Embedder;
use vitrine_searcher::Searcher;

use crate::error::{ApiError, ApiResult};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
pub use crate::config::ServeConfig;
pub use crate::state::AppState;
use crate::state::{InferenceQueue, Writer};

/// Build the shared state (without a model: see [`AppState::set_model`]) and start the
/// background threads. The service can listen at once: `/healthz` answers, `/readyz` says 503
/// until the model is set and an index generation is open.
pub fn build_state(config: ServeConfig) -> Result<Arc<AppState>, String> {
    vitrine_migrations::open(&config.data).map_err(|e| e.to_string())?;
    let searcher = Arc::new(Searcher::open(&config.data, config.ef_search).map_err(|e| e.to_string())?);
    let model: state::ModelSlot = Arc::new(OnceLock::new());
    let writer = Arc::new(Writer::new(config.data.clone(), model.clone()));
    let jobs = Jobs::open(&config.data).map_err(|e| format!("jobs: {e}"))?;
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState {
        queue: InferenceQueue::new(config.queue_capacity),
        config,
        searcher: searcher.clone(),
        model,
        writer: writer.clone(),
        jobs: jobs.clone(),
        metrics,
        started: Instant::now(),
    });
    {
        let (jobs, writer, searcher) = (jobs, writer.clone(), searcher.clone());
        std::thread::Builder::new().name("ingest-jobs".into()).spawn(move || jobs.run_worker(writer, searcher)).expect("thread");
    }
    {
        let st = state.clone();
        std::thread::Builder::new()
            .name("refresh".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                if let Err(e) = st.searcher.refresh() {
                    tracing::warn!("refresh: {e}");
                }
                st.writer.close_if_idle();
                if let Some(g) = st.searcher.snapshot() {
                    let m = &g.manifest;
                    for (k, v) in [
                        ("products", m.products),
                        ("vectors", m.points()),
                        ("tombstones", m.tombstones()),
                        ("generation", m.generation),
                    ] {
                        st.metrics.index.with_label_values(&[k]).set(v as i64);
                    }
                }
            })
            .expect("thread");
    }
    Ok(state)
}

/// [`build_state`] with a model that is already loaded (tests, embedding in other programs).
pub fn build_state_with_model(config: ServeConfig, embedder: Arc<dyn Embedder>) -> Result<Arc<AppState>, String> {
    let state = build_state(config)?;
    state.set_model(embedder)?;
    Ok(state)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if state.model.get().is_none() {
        return Err(ApiError::NotReady("the model is loading".into()));
    }
    if state.searcher.snapshot().is_none() {
        return Err(ApiError::NotReady("no index generation yet".into()));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

/// The OpenAPI document, kept by hand beside docs/API.md; a test checks every path is routed.
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
    let method = req.method().to_string();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
        m.observe(&route, &method, res.status().as_u16(), started.elapsed());
    }
    Ok(res)
}

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

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| ApiError::BadRequest(format!("query string: {err}")).into())
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _| ApiError::BadRequest(format!("path: {err}")).into())
}

async fn not_found() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("no such route; see /v1/openapi.json".into()))
}

/// Register every route on an actix `App`.
pub fn configure(cfg: &mut web::ServiceConfig, state: Arc<AppState>) {
    let json_limit = state.config.max_upload * 4 / 3 + (1 << 20);
    cfg.app_data(web::Data::from(state))
        .app_data(json_config(json_limit))
        .app_data(query_config())
        .app_data(path_config())
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics_text))
        .route("/v1/openapi.json", web::get().to(openapi))
        .route("/v1/search", web::get().to(search::get))
        .route("/v1/search/text", web::post().to(search::text))
        .route("/v1/search/image", web::post().to(search::image))
        .route("/v1/products", web::get().to(products::list))
        .route("/v1/products", web::post().to(products::batch))
        .route("/v1/products/{id}/similar", web::get().to(search::similar))
        .route("/v1/products/{id}", web::get().to(products::get))
        .route("/v1/products/{id}", web::put().to(products::put))
        .route("/v1/products/{id}", web::delete().to(products::delete))
        .route("/v1/images/{id}/{n}", web::get().to(products::image))
        .route("/v1/thumbs/{id}/{n}", web::get().to(products::thumb))
        .route("/v1/ingest", web::post().to(products::ingest))
        .route("/v1/jobs", web::get().to(products::jobs))
        .route("/v1/jobs/{id}", web::get().to(products::job))
        .route("/v1/jobs/{id}/failures", web::get().to(products::job_failures))
        .route("/v1/stats", web::get().to(products::stats))
        .route("/v1/admin/health", web::get().to(products::health))
        .route("/", web::get().to(ui::index))
        .route("/admin", web::get().to(ui::admin))
        .route("/ui/{path:.*}", web::get().to(ui::asset));
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
    App::new().wrap(from_fn(observe)).configure(move |cfg| configure(cfg, state)).default_service(web::to(not_found))
}

/// Run the server until it is stopped.
pub async fn serve(state: Arc<AppState>, bind: &str) -> std::io::Result<()> {
    let s = state.clone();
    tracing::info!(%bind, "listening");
    HttpServer::new(move || app(s.clone())).bind(bind)?.run().await
}
