//! Search handlers: text, image (multipart or JSON), and more-like-this.

use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use vitrine_core::ImageLimits;
use vitrine_searcher::{Filters, Fusion, SearchQuery, SearchResult};

use crate::auth::require_search;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    pub q: Option<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub fusion: Fusion,
    #[serde(default)]
    pub facets: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageJsonRequest {
    pub image_base64: Option<String>,
    pub image_url: Option<String>,
    pub q: Option<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub fusion: Fusion,
    #[serde(default)]
    pub facets: bool,
}

const DEFAULT_K: usize = 10;
const MAX_QUERY_CHARS: usize = 1_000;

fn response(res: SearchResult, took_ms: f64) -> HttpResponse {
    let hits: Vec<serde_json::Value> = res
        .hits
        .iter()
        .map(|h| {
            let mut v = serde_json::to_value(h).expect("serializes");
            let (img, thumb) = if h.images > 0 {
                (
                    serde_json::json!(format!("/v1/images/{}/0", urlencode(&h.id))),
                    serde_json::json!(format!("/v1/thumbs/{}/0", urlencode(&h.id))),
                )
            } else {
                (serde_json::Value::Null, serde_json::Value::Null)
            };
            v["image_url"] = img;
            v["thumb_url"] = thumb;
            v
        })
        .collect();
    let mut body = serde_json::json!({
        "hits": hits,
        "total": res.total,
        "took_ms": took_ms,
        "offset": res.offset,
        "k": res.k,
        "generation": res.generation,
        "exact": res.exact,
        "timings": res.timings,
    });
    if let Some(f) = res.facets {
        body["facets"] = serde_json::to_value(f).expect("serializes");
    }
    HttpResponse::Ok().json(body)
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn check_text(q: &Option<String>) -> ApiResult<Option<String>> {
    match q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(t) if t.chars().count() > MAX_QUERY_CHARS => {
            Err(ApiError::BadRequest(format!("q is longer than {MAX_QUERY_CHARS} characters")))
        }
        Some(t) => Ok(Some(t.to_string())),
        None => Ok(None),
    }
}

/// Embed what needs embedding, then search, both off the async executor.
async fn run(state: &AppState, image: Option<Vec<u8>>, text: Option<String>, mut q: SearchQuery) -> ApiResult<HttpResponse> {
    let started = std::time::Instant::now();
    if let Some(bytes) = image {
        let limits = ImageLimits { max_bytes: state.config.max_upload as u64, ..Default::default() };
        let v = state
            .infer("vision", move |e| {
                let pixels = e.preprocessor().load(&bytes, "upload", &limits)?;
                Ok(e.embed_pixels(&pixels, 1)?.remove(0))
            })
            .await?;
        q.image_vector = Some(v);
    }
    if let Some(t) = text.clone() {
        // The text tower runs only when a vector channel will use it.
        let w = q.fusion.weights.unwrap_or_else(|| vitrine_searcher::Weights::default_for(q.image_vector.is_some(), true));
        if w.image > 0.0 || w.text > 0.0 {
            let v = state.infer("text", move |e| Ok(e.embed_texts(&[t.as_str()])?.remove(0))).await?;
            q.text_vector = Some(v);
        }
        q.text = text;
    }
    if q.image_vector.is_none() && q.text_vector.is_none() && q.text.is_none() {
        return Err(ApiError::BadRequest("a query needs text (q) or an image".into()));
    }
    let searcher = state.searcher.clone();
    let res = web::block(move || searcher.search(&q)).await??;
    Ok(response(res, started.elapsed().as_secs_f64() * 1000.0))
}

fn query_of(k: Option<usize>, offset: Option<usize>, filters: Filters, fusion: Fusion, facets: bool) -> SearchQuery {
    SearchQuery { k: k.unwrap_or(DEFAULT_K), offset: offset.unwrap_or(0), filters, fusion, facets, ..Default::default() }
}

pub async fn text(req: HttpRequest, state: web::Data<AppState>, body: web::Json<TextRequest>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let b = body.into_inner();
    let text = check_text(&b.q)?.ok_or_else(|| ApiError::BadRequest("q is required".into()))?;
    run(&state, None, Some(text), query_of(b.k, b.offset, b.filters, b.fusion, b.facets)).await
}

#[derive(Debug, Deserialize)]
pub struct GetSearch {
    pub q: Option<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub price_min: Option<f64>,
    pub price_max: Option<f64>,
    pub facets: Option<bool>,
    pub fusion: Option<String>,
}

pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let qs = req.query_string();
    let p: GetSearch =
        serde_urlencoded::from_str(&strip_repeated(qs)).map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(qs).map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let mut filters = Filters::default();
    for (k, v) in &pairs {
        match k.as_str() {
            "category" => filters.category.push(v.clone()),
            "brand" => filters.brand.push(v.clone()),
            other => {
                if let Some(a) = other.strip_prefix("attr.") {
                    filters.attributes.entry(a.to_string()).or_default().push(v.clone());
                }
            }
        }
    }
    if p.price_min.is_some() || p.price_max.is_some() {
        filters.price = Some(vitrine_searcher::PriceRange { min: p.price_min, max: p.price_max });
    }
    let fusion = match p.fusion.as_deref() {
        None | Some("rrf") => Fusion::default(),
        Some("weighted") => Fusion { mode: vitrine_searcher::FusionMode::Weighted, ..Default::default() },
        Some(other) => return Err(ApiError::BadRequest(format!("fusion {other:?}: use rrf or weighted"))),
    };
    let text = check_text(&p.q)?.ok_or_else(|| ApiError::BadRequest("q is required".into()))?;
    run(&state, None, Some(text), query_of(p.k, p.offset, filters, fusion, p.facets.unwrap_or(false))).await
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

pub async fn image(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        let mp = Multipart::new(req.headers(), payload);
        image_multipart(&state, mp).await
    } else if ct.starts_with("application/json") {
        let bytes = read_limited(payload, state.config.max_upload * 4 / 3 + 64 * 1024).await?;
        let b: ImageJsonRequest = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))?;
        let img = match (b.image_base64, b.image_url) {
            (Some(b64), None) => {
                let data = b64.split_once("base64,").map(|(_, d)| d).unwrap_or(&b64);
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| ApiError::BadRequest(format!("image_base64 is not base64: {e}")))?
            }
            (None, Some(url)) => fetch_url(&state, url).await?,
            (Some(_), Some(_)) => return Err(ApiError::BadRequest("send image_base64 or image_url, not both".into())),
            (None, None) => return Err(ApiError::BadRequest("image_base64 or image_url is required".into())),
        };
        if img.len() > state.config.max_upload {
            return Err(too_large(state.config.max_upload));
        }
        let text = check_text(&b.q)?;
        run(&state, Some(img), text, query_of(b.k, b.offset, b.filters, b.fusion, b.facets)).await
    } else {
        Err(ApiError::BadRequest("send multipart/form-data (field image) or application/json (image_base64 or image_url)".into()))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("upload is over the limit of {limit} bytes"))
}

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

async fn image_multipart(state: &AppState, mut mp: Multipart) -> ApiResult<HttpResponse> {
    let mut image = None;
    let mut fields: std::collections::HashMap<String, String> = Default::default();
    while let Some(field) = mp.next().await {
        let mut field = field.map_err(|e| ApiError::BadRequest(format!("multipart: {e}")))?;
        let name = field.name().unwrap_or("").to_string();
        let limit = if name == "image" { state.config.max_upload } else { 64 * 1024 };
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
    let parse_num = |k: &str| -> ApiResult<Option<usize>> {
        fields
            .get(k)
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().map_err(|_| ApiError::BadRequest(format!("{k} must be a number"))))
            .transpose()
    };
    let filters: Filters = match fields.get("filters").filter(|s| !s.trim().is_empty()) {
        Some(s) => serde_json::from_str(s).map_err(|e| ApiError::BadRequest(format!("filters: {e}")))?,
        None => Filters::default(),
    };
    let fusion: Fusion = match fields.get("fusion").filter(|s| !s.trim().is_empty()) {
        Some(s) => serde_json::from_str(s).map_err(|e| ApiError::BadRequest(format!("fusion: {e}")))?,
        None => Fusion::default(),
    };
    let facets = fields.get("facets").is_some_and(|v| v == "true" || v == "1");
    let text = check_text(&fields.get("q").cloned())?;
    run(state, Some(image), text, query_of(parse_num("k")?, parse_num("offset")?, filters, fusion, facets)).await
}

async fn fetch_url(state: &AppState, url: String) -> ApiResult<Vec<u8>> {
    if !state.config.allow_image_urls() {
        return Err(ApiError::BadRequest("image_url is disabled on this server".into()));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::BadRequest("image_url must be http(s)".into()));
    }
    let opts = vitrine_indexer::FetchOptions {
        max_bytes: state.config.max_upload as u64,
        retries: 1,
        public_only: !state.config.allow_private_image_urls,
        ..Default::default()
    };
    web::block(move || {
        let fetcher = vitrine_indexer::Fetcher::new(opts);
        fetcher.load(&url)
    })
    .await?
    .map_err(|e| {
        if e.contains("over the limit") {
            ApiError::PayloadTooLarge(e)
        } else {
            ApiError::BadRequest(format!("image_url: {e}"))
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct SimilarParams {
    pub k: Option<usize>,
    pub offset: Option<usize>,
}

/// More like this: the product's own image and text vectors as the query, and its title for BM25.
pub async fn similar(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    p: web::Query<SimilarParams>,
) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let id = path.into_inner();
    let started = std::time::Instant::now();
    let searcher = state.searcher.clone();
    let (k, offset) = (p.k.unwrap_or(DEFAULT_K), p.offset.unwrap_or(0));
    let res = web::block(move || -> ApiResult<SearchResult> {
        let g = searcher.snapshot().ok_or(vitrine_searcher::SearchError::NoIndex)?;
        let product = g.product(&id)?.ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))?;
        let (images, text) = searcher.product_vectors(&g, &id)?;
        let image_vector = images.first().cloned();
        let q = SearchQuery {
            image_vector,
            text_vector: text,
            text: product.product.title.clone(),
            k,
            offset,
            exclude: Some(id),
            ..Default::default()
        };
        Ok(vitrine_searcher::search_generation(&g, &q)?)
    })
    .await??;
    Ok(response(res, started.elapsed().as_secs_f64() * 1000.0))
}
