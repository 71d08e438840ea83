//! Search handlers: text, image (multipart or JSON), and more-like-this.

use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vitrine_searcher::service::{Admission, Crop, ImageInput, Query, QueryOutcome};
use vitrine_searcher::{Facets, Filters, Fusion, Hit, Sort, Timings};

use crate::auth::require_search;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    /// The query text (at most 1,000 bytes).
    pub q: Option<String>,
    /// Hits per page, 1 to 200 (default 20).
    pub k: Option<usize>,
    pub offset: Option<usize>,
    #[serde(default)]
    pub filters: Filters,
    /// How channels are combined; absent: the index's defaults for the query's kind.
    pub fusion: Option<Fusion>,
    #[serde(default)]
    pub facets: bool,
    /// `relevance` (default), `price_asc` or `price_desc`; products without a price go last.
    #[serde(default)]
    pub sort: Sort,
}

/// An image search as JSON: exactly one of `image_base64` and `image_url`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageJsonRequest {
    /// The image bytes, base64 (a `data:` URL prefix is allowed).
    pub image_base64: Option<String>,
    /// An http(s) URL the service fetches (when the service allows it).
    pub image_url: Option<String>,
    pub q: Option<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    #[serde(default)]
    pub filters: Filters,
    /// How channels are combined; absent: the index's defaults for the query's kind.
    pub fusion: Option<Fusion>,
    #[serde(default)]
    pub facets: bool,
    #[serde(default)]
    pub sort: Sort,
    /// Search with this region of the image only (relative coordinates).
    pub crop: Option<Crop>,
}

/// A search hit as the API shows it: the searcher's hit plus the URLs of its first image.
#[derive(Debug, Serialize, ToSchema)]
pub struct HitBody {
    #[serde(flatten)]
    pub hit: Hit,
    pub image_url: Option<String>,
    pub thumb_url: Option<String>,
}

/// The body of every search route.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchBody {
    pub hits: Vec<HitBody>,
    pub total: usize,
    pub took_ms: f64,
    pub offset: usize,
    pub k: usize,
    pub generation: u64,
    pub exact: bool,
    pub timings: Timings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facets: Option<Facets>,
}

impl From<QueryOutcome> for SearchBody {
    fn from(o: QueryOutcome) -> Self {
        let r = o.result;
        let hits = r
            .hits
            .into_iter()
            .map(|hit| {
                let id = urlencode(&hit.id);
                let (image_url, thumb_url) = if hit.images > 0 {
                    (Some(format!("/v1/images/{id}/0")), Some(format!("/v1/thumbs/{id}/0")))
                } else {
                    (None, None)
                };
                HitBody { hit, image_url, thumb_url }
            })
            .collect();
        SearchBody {
            hits,
            total: r.total,
            took_ms: o.took_ms,
            offset: r.offset,
            k: r.k,
            generation: r.generation,
            exact: r.exact,
            timings: r.timings,
            facets: r.facets,
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Run a parsed query on a blocking thread, holding `admission` throughout, and record where the
/// model time went.
async fn run(state: &web::Data<AppState>, admission: Admission, q: Query) -> ApiResult<HttpResponse> {
    let query = state.query.clone();
    let outcome = web::block(move || query.search(admission, q)).await??;
    for (tower, t) in [("vision", outcome.vision_ms), ("text", outcome.text_ms)] {
        if let Some(ms) = t {
            state.metrics.inference.with_label_values(&[tower]).observe(ms / 1000.0);
        }
    }
    state.metrics.observe_search(outcome.vision_ms, outcome.text_ms, &outcome.result.timings);
    Ok(HttpResponse::Ok().json(SearchBody::from(outcome)))
}

fn text_query(
    q: Option<String>,
    k: Option<usize>,
    offset: Option<usize>,
    filters: Filters,
    fusion: Option<Fusion>,
    facets: bool,
) -> Query {
    Query { text: q, k, offset, filters, fusion, facets, ..Default::default() }
}

#[utoipa::path(post, path = "/v1/search/text", tag = "search", request_body = TextRequest,
    responses(
        (status = 200, description = "Hits, best first", body = SearchBody),
        (status = 400, description = "`bad_request`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`not_ready` (the model is loading, no index yet) or `overloaded` (with `Retry-After`)", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
pub async fn text(req: HttpRequest, state: web::Data<AppState>, body: web::Json<TextRequest>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let admission = state.query.admit()?;
    let b = body.into_inner();
    run(&state, admission, Query { sort: b.sort, ..text_query(b.q, b.k, b.offset, b.filters, b.fusion, b.facets) }).await
}

/// The typed part of `GET /v1/search`'s query string; `category`, `brand` and `attr.KEY` may
/// repeat and are read separately.
#[derive(Debug, Deserialize, IntoParams)]
pub struct GetSearch {
    pub q: Option<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub price_min: Option<f64>,
    pub price_max: Option<f64>,
    pub facets: Option<bool>,
    /// `rrf` (default) or `weighted`.
    pub fusion: Option<String>,
    /// `relevance` (default), `price_asc` or `price_desc`.
    pub sort: Option<String>,
}

/// The filters of a query string: repeated `category`, `brand` and `attr.KEY`, and
/// `price_min`/`price_max` (from the typed part).
fn query_string_filters(qs: &str, price_min: Option<f64>, price_max: Option<f64>) -> ApiResult<Filters> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(qs).map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let mut filters = Filters::default();
    for (k, v) in pairs {
        match k.as_str() {
            "category" => filters.category.push(v),
            "brand" => filters.brand.push(v),
            other => {
                if let Some(a) = other.strip_prefix("attr.") {
                    filters.attributes.entry(a.to_string()).or_default().push(v);
                }
            }
        }
    }
    if price_min.is_some() || price_max.is_some() {
        filters.price = Some(vitrine_searcher::PriceRange { min: price_min, max: price_max });
    }
    Ok(filters)
}

fn parse_sort(s: Option<&str>) -> ApiResult<Sort> {
    Ok(s.map(str::parse).transpose()?.unwrap_or_default())
}

#[utoipa::path(get, path = "/v1/search", tag = "search",
    params(GetSearch,
        ("category" = Option<Vec<String>>, Query, description = "Repeatable; values are ORed"),
        ("brand" = Option<Vec<String>>, Query, description = "Repeatable; values are ORed"),
        ("attr.{key}" = Option<Vec<String>>, Query, description = "Attribute filter, e.g. `attr.color=red`; repeatable")),
    responses(
        (status = 200, description = "Hits, best first (or in `sort` order)", body = SearchBody),
        (status = 400, description = "`bad_request`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`not_ready` (the model is loading, no index yet) or `overloaded` (with `Retry-After`)", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let qs = req.query_string();
    if qs.len() > crate::limits::QUERY_STRING {
        return Err(ApiError::PayloadTooLarge(format!("the query string is over {} bytes", crate::limits::QUERY_STRING)));
    }
    let admission = state.query.admit()?;
    let p: GetSearch =
        serde_urlencoded::from_str(&strip_repeated(qs)).map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let filters = query_string_filters(qs, p.price_min, p.price_max)?;
    let sort = parse_sort(p.sort.as_deref())?;
    let fusion = match p.fusion.as_deref() {
        None => None,
        Some("rrf") => Some(Fusion::default()),
        Some("weighted") => Some(Fusion { mode: vitrine_searcher::FusionMode::Weighted, ..Default::default() }),
        Some(other) => return Err(ApiError::BadRequest(format!("fusion {other:?}: use rrf or weighted"))),
    };
    run(&state, admission, Query { sort, ..text_query(p.q, p.k, p.offset, filters, fusion, p.facets.unwrap_or(false)) }).await
}

/// Keep only the first value of each key, for the typed part of the query string.
fn strip_repeated(qs: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    qs.split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or("");
            !matches!(k, "category" | "brand") && !k.starts_with("attr.") && seen.insert(k.to_string())
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[utoipa::path(post, path = "/v1/search/image", tag = "search",
    request_body(description = "multipart/form-data (field `image`, and optionally `q`, `k`, `offset`, `filters`, `fusion` and `crop` as JSON, `facets`, `sort`) or JSON",
        content((ImageJsonRequest = "application/json"), (Object = "multipart/form-data"))),
    responses(
        (status = 200, description = "Hits, best first", body = SearchBody),
        (status = 400, description = "`bad_request`, `invalid_query`, `image_url_disabled`, `image_url_failed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_image`: the image could not be decoded", body = ErrorBody),
        (status = 503, description = "`not_ready` (the model is loading, no index yet) or `overloaded` (with `Retry-After`)", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
pub async fn image(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    // The place in the queue comes first: the upload is buffered inside it.
    let admission = state.query.admit()?;
    let max_upload = state.query.config().max_upload;
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let q = if ct.starts_with("multipart/form-data") {
        image_multipart(Multipart::new(req.headers(), payload), max_upload).await?
    } else if ct.starts_with("application/json") {
        // base64 takes 4/3 of the image's bytes; the other fields are small.
        let bytes = read_limited(payload, max_upload * 4 / 3 + crate::limits::SEARCH_JSON).await?;
        let b: ImageJsonRequest = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))?;
        drop(bytes);
        let image = match (b.image_base64, b.image_url) {
            (Some(b64), None) => {
                let data = b64.split_once("base64,").map(|(_, d)| d).unwrap_or(&b64);
                ImageInput::Bytes(
                    base64::engine::general_purpose::STANDARD
                        .decode(data.trim())
                        .map_err(|e| ApiError::BadRequest(format!("image_base64 is not base64: {e}")))?,
                )
            }
            (None, Some(url)) => ImageInput::Url(url),
            (Some(_), Some(_)) => return Err(ApiError::BadRequest("send image_base64 or image_url, not both".into())),
            (None, None) => return Err(ApiError::BadRequest("image_base64 or image_url is required".into())),
        };
        Query { image: Some(image), sort: b.sort, crop: b.crop, ..text_query(b.q, b.k, b.offset, b.filters, b.fusion, b.facets) }
    } else {
        return Err(ApiError::BadRequest(
            "send multipart/form-data (field image) or application/json (image_base64 or image_url)".into(),
        ));
    };
    run(&state, admission, q).await
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("upload is over the limit of {limit} bytes"))
}

/// Read a whole body, refusing it (413) as soon as it passes `limit` bytes.
pub async fn read_limited(mut payload: web::Payload, limit: usize) -> ApiResult<Vec<u8>> {
    let mut buf = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A multipart image search: field `image` (at most `max_upload` bytes) and the small fields
/// `q`, `k`, `offset`, `filters` (JSON), `fusion` (JSON), `facets`, `sort` and `crop` (JSON). At most
/// [`crate::limits::MULTIPART_FIELDS`] fields, each named once; anything else is refused.
async fn image_multipart(mut mp: Multipart, max_upload: usize) -> ApiResult<Query> {
    use crate::limits::{MULTIPART_FIELD, MULTIPART_FIELDS};
    const KNOWN: [&str; 9] = ["image", "q", "k", "offset", "filters", "fusion", "facets", "sort", "crop"];
    let mut image = None;
    let mut fields: std::collections::HashMap<String, String> = Default::default();
    let mut count = 0;
    while let Some(field) = mp.next().await {
        let mut field = field.map_err(|e| ApiError::BadRequest(format!("multipart: {e}")))?;
        count += 1;
        if count > MULTIPART_FIELDS {
            return Err(ApiError::PayloadTooLarge(format!("at most {MULTIPART_FIELDS} multipart fields")));
        }
        let name = field.name().unwrap_or("").to_string();
        if !KNOWN.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!("unknown multipart field {name:?}; fields: {}", KNOWN.join(", "))));
        }
        if name == "image" && image.is_some() || fields.contains_key(&name) {
            return Err(ApiError::BadRequest(format!("multipart field {name} is sent twice")));
        }
        let limit = if name == "image" { max_upload } else { MULTIPART_FIELD };
        let mut buf = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("multipart: {e}")))?;
            if buf.len() + chunk.len() > limit {
                return Err(if name == "image" {
                    too_large(limit)
                } else {
                    ApiError::BadRequest(format!("field {name} is too long"))
                });
            }
            buf.extend_from_slice(&chunk);
        }
        if name == "image" {
            image = Some(buf);
        } else {
            fields.insert(name, String::from_utf8_lossy(&buf).into_owned());
        }
    }
    let image = image.ok_or_else(|| ApiError::BadRequest("multipart field image is required".into()))?;
    let field = |k: &str| fields.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let number = |k: &str| -> ApiResult<Option<usize>> {
        field(k).map(|s| s.parse().map_err(|_| ApiError::BadRequest(format!("{k} must be a number")))).transpose()
    };
    let filters: Filters = match field("filters") {
        Some(s) => serde_json::from_str(s).map_err(|e| ApiError::BadRequest(format!("filters: {e}")))?,
        None => Filters::default(),
    };
    let fusion: Option<Fusion> = match field("fusion") {
        Some(s) => Some(serde_json::from_str(s).map_err(|e| ApiError::BadRequest(format!("fusion: {e}")))?),
        None => None,
    };
    let crop: Option<Crop> = match field("crop") {
        Some(s) => Some(serde_json::from_str(s).map_err(|e| ApiError::BadRequest(format!("crop: {e}")))?),
        None => None,
    };
    let sort = parse_sort(field("sort"))?;
    let facets = field("facets").is_some_and(|v| v == "true" || v == "1");
    let q = field("q").map(str::to_string);
    Ok(Query {
        image: Some(ImageInput::Bytes(image)),
        sort,
        crop,
        ..text_query(q, number("k")?, number("offset")?, filters, fusion, facets)
    })
}

/// The typed part of the more-like-this query string; filters repeat as in `GET /v1/search`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SimilarParams {
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub price_min: Option<f64>,
    pub price_max: Option<f64>,
    pub facets: Option<bool>,
    /// `relevance` (default), `price_asc` or `price_desc`.
    pub sort: Option<String>,
}

/// More like this: the product's own image and text vectors as the query, and its title for BM25,
/// under the same filters, sort and facets as `GET /v1/search`.
#[utoipa::path(get, path = "/v1/products/{id}/similar", tag = "search",
    params(("id" = String, Path, description = "Product id"), SimilarParams,
        ("category" = Option<Vec<String>>, Query, description = "Repeatable; values are ORed"),
        ("brand" = Option<Vec<String>>, Query, description = "Repeatable; values are ORed"),
        ("attr.{key}" = Option<Vec<String>>, Query, description = "Attribute filter, e.g. `attr.color=red`; repeatable")),
    responses(
        (status = 200, description = "Hits, best first, without the product itself", body = SearchBody),
        (status = 400, description = "`bad_request`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`not_ready` (the model is loading, no index yet) or `overloaded` (with `Retry-After`)", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
pub async fn similar(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let qs = req.query_string();
    if qs.len() > crate::limits::QUERY_STRING {
        return Err(ApiError::PayloadTooLarge(format!("the query string is over {} bytes", crate::limits::QUERY_STRING)));
    }
    let admission = state.query.admit()?;
    let p: SimilarParams =
        serde_urlencoded::from_str(&strip_repeated(qs)).map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let filters = query_string_filters(qs, p.price_min, p.price_max)?;
    let q = Query {
        similar_to: Some(path.into_inner()),
        k: p.k,
        offset: p.offset,
        filters,
        facets: p.facets.unwrap_or(false),
        sort: parse_sort(p.sort.as_deref())?,
        ..Default::default()
    };
    run(&state, admission, q).await
}
