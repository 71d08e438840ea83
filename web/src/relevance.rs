//! Relevance routes: the defaults a query runs with (`GET /v1/relevance`) and judged-set
//! evaluation for the dashboard's Relevance tab (`POST /v1/eval`). The metrics and the tuning live
//! in the searcher (`vitrine_searcher::eval`, `tune`); this only parses, bounds and calls them.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vitrine_searcher::eval::{self, EvalReport, ImageSource, JudgedQuery};
use vitrine_searcher::relevance::{QueryKind, RelevanceSettings};
use vitrine_searcher::Fusion;

use crate::auth::require_admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

/// Judged queries in one `POST /v1/eval`; a larger set is for `vitrine eval`.
pub const MAX_EVAL_QUERIES: usize = 500;
/// Fusion settings compared side by side in one request.
pub const MAX_EVAL_SETTINGS: usize = 4;
/// Body limit of `POST /v1/eval` (queries may carry photos as base64).
pub const EVAL_JSON: usize = 8 << 20;

/// Where the floor a query runs with comes from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FloorSource {
    /// `vitrine tune` saved it in the index.
    Tuned,
    /// The model card (`vitrine-model.json`).
    ModelCard,
    None,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KindDefaults {
    pub text: Fusion,
    pub photo: Fusion,
    pub photo_text: Fusion,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TextCacheView {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub capacity: usize,
    /// hits / (hits + misses); 0 before any text query.
    pub hit_rate: f64,
}

/// `GET /v1/relevance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelevanceView {
    /// The fusion (floor included) a query without its own `fusion` runs with, by kind.
    pub defaults: KindDefaults,
    pub floor_source: FloorSource,
    /// What `vitrine tune` saved in the index, if anything.
    pub tuned: Option<RelevanceSettings>,
    /// The tuned settings were made with the loaded model (else they are ignored).
    pub tuned_applies: bool,
    pub text_cache: TextCacheView,
}

/// The relevance settings in force; shared with `/v1/stats`.
pub fn view(state: &AppState) -> RelevanceView {
    let q = &state.query;
    let tuned = q.searcher().relevance();
    let model = q.embedder();
    let tuned_applies = matches!((&tuned, &model), (Some(t), Some(m)) if t.model.same_model(m.model_id()));
    let floor_source = if tuned_applies && tuned.as_ref().is_some_and(|t| t.floor.is_some()) {
        FloorSource::Tuned
    } else if model.as_ref().is_some_and(|m| m.relevance_floor().is_some()) {
        FloorSource::ModelCard
    } else {
        FloorSource::None
    };
    let c = q.text_cache_stats();
    let lookups = c.hits + c.misses;
    RelevanceView {
        defaults: KindDefaults {
            text: q.resolve_fusion(QueryKind::Text, None),
            photo: q.resolve_fusion(QueryKind::Photo, None),
            photo_text: q.resolve_fusion(QueryKind::PhotoText, None),
        },
        floor_source,
        tuned: tuned.map(|t| (*t).clone()),
        tuned_applies,
        text_cache: TextCacheView {
            hits: c.hits,
            misses: c.misses,
            entries: c.entries,
            capacity: c.capacity,
            hit_rate: if lookups == 0 { 0.0 } else { c.hits as f64 / lookups as f64 },
        },
    }
}

#[utoipa::path(get, path = "/v1/relevance", tag = "operations",
    responses(
        (status = 200, description = "The fusion and relevance floor queries run with by default, where the floor comes from, the tuned settings and the text-embedding cache", body = RelevanceView),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    Ok(HttpResponse::Ok().json(view(&state)))
}

/// `POST /v1/eval`: judged queries (photos only as `image_base64`), and up to four fusion
/// settings to compare. A `null` setting means the service's defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    pub queries: Vec<JudgedQuery>,
    pub k: Option<usize>,
    #[serde(default)]
    pub fusions: Vec<Option<Fusion>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvalResponse {
    /// One report per setting, in the order sent.
    pub runs: Vec<EvalReport>,
}

#[utoipa::path(post, path = "/v1/eval", tag = "operations", request_body = EvalRequest,
    responses(
        (status = 200, description = "Metrics per setting (the `vitrine eval --json` report each)", body = EvalResponse),
        (status = 400, description = "`bad_request`: too many queries or settings, a query without q or image, an image path (only the CLI reads files)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 503, description = "`overloaded` or `not_ready`", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn run(req: HttpRequest, state: web::Data<AppState>, body: web::Json<EvalRequest>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let body = body.into_inner();
    if body.queries.is_empty() || body.queries.len() > MAX_EVAL_QUERIES {
        return Err(ApiError::BadRequest(format!(
            "send 1 to {MAX_EVAL_QUERIES} judged queries; run larger sets with `vitrine eval`"
        )));
    }
    if body.fusions.len() > MAX_EVAL_SETTINGS {
        return Err(ApiError::BadRequest(format!("compare at most {MAX_EVAL_SETTINGS} settings at once")));
    }
    // The same checks as a judged file's lines.
    for q in &body.queries {
        q.check().map_err(|m| ApiError::BadRequest(format!("query {}: {m}", q.id)))?;
    }
    let k = body.k.unwrap_or(10);
    vitrine_searcher::validate_paging(k, 0)?;
    let settings = if body.fusions.is_empty() { vec![None] } else { body.fusions };
    let query = state.query.clone();
    let runs = web::block(move || -> Result<Vec<EvalReport>, ApiError> {
        settings
            .into_iter()
            .map(|f| {
                eval::run(&query, &|| query.admit(), &body.queries, &ImageSource::InlineOnly, k, f).map_err(|e| match e {
                    eval::EvalError::Input { .. } => ApiError::BadRequest(e.to_string()),
                    eval::EvalError::Query { source, .. } => source.into(),
                })
            })
            .collect()
    })
    .await??;
    Ok(HttpResponse::Ok().json(EvalResponse { runs }))
}
