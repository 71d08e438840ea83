//! Product, image, ingest, job and operations handlers.
//!
//! Refresh semantics: `PUT`, `DELETE` and `POST /v1/products` return after the change is durable
//! (sled flushed) and searchable (a new generation is live in this service). Ingest jobs become
//! searchable chunk by chunk at checkpoints (every 30 s) and fully when the job is `done`.

use std::path::Path;

use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vitrine_core::catalog::{ImageMedia, MediaRef, Product, StoredProduct};
use vitrine_core::ModelId;
use vitrine_indexer::catalog::{product_from_map, Format};
use vitrine_indexer::jobs::{Job, ReportPage};
use vitrine_indexer::service::{Snapshot, WriteError, WriteService};
use vitrine_indexer::upload::{catalog_format, StagedUpload, Staging, UploadError, UploadLimits};
use vitrine_indexer::Severity;
use vitrine_indexer::{Failure, MediaStore, Summary, MEDIA_REF_PREFIX};

use crate::auth::{require_admin, require_search};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::search::{read_limited, urlencode};
use crate::state::AppState;

/// A product as the API shows it: the stored record plus where its images are served and how
/// many of them were indexed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductBody {
    #[serde(flatten)]
    pub product: Product,
    /// The stored copies of the product's images, `media:HASH` (never the merchant's paths or URLs).
    pub images: Vec<String>,
    /// `/v1/images/{id}/{n}` for each image.
    pub image_urls: Vec<String>,
    /// `/v1/thumbs/{id}/{n}` for each image.
    pub thumb_urls: Vec<String>,
    /// Images with a stored vector.
    pub indexed_images: usize,
    /// Images that could not be used, with the reason.
    pub image_errors: Vec<String>,
    /// Unix seconds of the last write.
    pub updated_at: u64,
    /// Attributes read off the images by zero-shot tagging (the `tags` setting). Filters match them
    /// like `attributes`, which win: a key given there is never tagged.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub auto_attributes: std::collections::BTreeMap<String, String>,
    /// `PUT` only: images skipped by this write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

impl ProductBody {
    /// The merchant's image references are never shown: they may be server paths or private
    /// URLs. `images` names the stored copies instead (`media:HASH`, which a PUT of this body
    /// takes back as they are), `image_urls` and `thumb_urls` serve them, and `image_errors` says
    /// in a few words why an image is missing ("image 2: could not be read", counting the
    /// merchant's images from 1); the detail is in the admin's failure report.
    pub fn new(sp: &StoredProduct) -> Self {
        let p = &sp.product;
        let id = urlencode(&p.id);
        let stored: Vec<&MediaRef> = sp.stored_media().collect();
        let image_errors: Vec<String> = if sp.media_complete() {
            let failed = sp.media.iter().enumerate().filter_map(|(i, m)| match m {
                ImageMedia::Failed(f) => Some((i, f)),
                ImageMedia::Stored(_) => None,
            });
            failed.map(|(i, f)| format!("image {}: {f}", i + 1)).collect()
        } else {
            // Written before the media store: its images were never copied, so none is served.
            (1..=p.images.len()).map(|n| format!("image {n}: not stored yet (ingest the product again)")).collect()
        };
        // The merchant's references stay out of the body: `images` below replaces them.
        let product = Product { images: vec![], ..p.clone() };
        ProductBody {
            product,
            images: stored.iter().map(|m| format!("{MEDIA_REF_PREFIX}{}", m.hash)).collect(),
            image_urls: (0..stored.len()).map(|i| format!("/v1/images/{id}/{i}")).collect(),
            thumb_urls: (0..stored.len()).map(|i| format!("/v1/thumbs/{id}/{i}")).collect(),
            indexed_images: sp.image_vectors as usize,
            image_errors,
            updated_at: sp.updated_at,
            auto_attributes: sp.auto.auto_attributes.clone(),
            warnings: None,
        }
    }
}

/// `GET /v1/products`: one page of products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    pub products: Vec<ProductBody>,
    /// Products matching `q` (all products without it).
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// `DELETE /v1/products/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The id that was deleted.
    pub deleted: String,
}

/// `POST /v1/products`: the ingest summary and the records that failed or lost an image.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchBody {
    #[serde(flatten)]
    pub summary: Summary,
    pub failures: Vec<Failure>,
}

/// `POST /v1/ingest`: the job that was queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestAccepted {
    pub job_id: String,
    /// Poll this for progress.
    pub status_url: String,
    pub job: Job,
}

/// `GET /v1/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// The inference queue: queries holding or waiting for a place, and the places there are.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    pub depth: usize,
    pub capacity: usize,
}

/// `GET /v1/stats`. Index numbers are 0 before the first generation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub products: u64,
    pub images: u64,
    pub vectors: u64,
    pub live_vectors: u64,
    pub tombstones: u64,
    pub segments: usize,
    pub disk_bytes: u64,
    /// Bytes and files of the media store (the stored product images).
    pub media_bytes: u64,
    pub media_files: u64,
    /// `null` while the model loads.
    pub model: Option<ModelId>,
    /// `null` while the model loads.
    pub device: Option<String>,
    pub generation: u64,
    pub uptime_s: u64,
    pub queue: Queue,
    pub jobs_active: usize,
    /// The fusion and relevance floor in force, and what `vitrine tune` saved.
    pub relevance: crate::relevance::RelevanceView,
}

/// `GET /v1/admin/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Latency per route over the last five minutes: search routes first, then the rest of the
    /// API, then images, thumbnails and UI assets as one line.
    pub routes: Vec<crate::metrics::RouteHealth>,
    /// Responses over the last five minutes by route group and status code.
    pub status: Vec<crate::metrics::StatusCount>,
    /// Error responses over the last five minutes by API error code, most frequent first.
    pub errors: Vec<crate::metrics::ErrorCount>,
    /// Search latency per stage (model towers and channels) over the last five minutes.
    pub stages: Vec<crate::metrics::StageLatency>,
    /// Search queries per second over the last minute, oldest first (60 numbers).
    pub qps: Vec<u32>,
    pub queue: Queue,
}

#[utoipa::path(get, path = "/v1/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is loading or there is no index yet", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
pub async fn get(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let sp = state.searcher().product(&path)?;
    Ok(HttpResponse::Ok().json(ProductBody::new(&sp)))
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Keyword filter over titles and ids.
    q: Option<String>,
    offset: Option<usize>,
    /// 1 to 200, default 20.
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/products", tag = "products", params(ListParams),
    responses(
        (status = 200, description = "A page of products", body = ProductList),
        (status = 400, description = "`bad_request`: the request could not be parsed or is out of bounds", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is loading or there is no index yet", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]

pub async fn list(req: HttpRequest, state: web::Data<AppState>, p: web::Query<ListParams>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let (offset, limit) = (p.offset.unwrap_or(0), p.limit.unwrap_or(20).clamp(1, 200));
    let q = p.q.clone();
    let searcher = state.searcher().clone();
    let (products, total) = web::block(move || searcher.list_products(q.as_deref(), offset, limit)).await??;
    let products = products.iter().map(ProductBody::new).collect();
    Ok(HttpResponse::Ok().json(ProductList { products, total, offset, limit }))
}

/// Parse a product body with the catalog's rules (unknown fields become attributes).
fn parse_product(v: serde_json::Value, id: Option<&str>) -> ApiResult<Product> {
    let serde_json::Value::Object(mut map) = v else {
        return Err(ApiError::BadRequest("a product must be a JSON object".into()));
    };
    if let Some(id) = id {
        map.insert("id".into(), id.into());
    }
    // Fields the API adds on output are not part of the record.
    for k in ["image_urls", "thumb_urls", "indexed_images", "image_errors", "updated_at"] {
        map.remove(k);
    }
    product_from_map(map.into_iter().collect()).map_err(|e| ApiError::BadRequest(e.reason))
}

async fn write(state: &web::Data<AppState>, products: Vec<Product>) -> ApiResult<vitrine_indexer::IngestResult> {
    let writes = state.writes.clone();
    Ok(web::block(move || writes.put(products)).await??)
}

#[utoipa::path(put, path = "/v1/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id; it replaces any `id` in the body")),
    request_body(content = Object, description = "A product record; unknown fields become attributes"),
    responses(
        (status = 200, description = "The product as stored, durable and searchable", body = ProductBody),
        (status = 400, description = "`bad_request`: the request could not be parsed or is out of bounds", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 409, description = "`conflict`: the index was built with another model", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_image`: the image could not be decoded", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is loading or there is no index yet", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let product = parse_product(body.into_inner(), Some(&path))?;
    let res = write(&state, vec![product]).await?;
    if res.summary.failed > 0 {
        let reason = res.failures.iter().map(|f| f.reason.clone()).collect::<Vec<_>>().join("; ");
        return Err(ApiError::InvalidImage(reason));
    }
    let sp = state.searcher().product(&path)?;
    let mut body = ProductBody::new(&sp);
    body.warnings = Some(res.failures.iter().map(|f| f.reason.clone()).collect());
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(delete, path = "/v1/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, description = "Deleted, durably and from search", body = Deleted),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is loading or there is no index yet", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn delete(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let id = path.into_inner();
    let writes = state.writes.clone();
    let ids = vec![id.clone()];
    let gone = web::block(move || writes.delete(&ids)).await??;
    if gone.is_empty() {
        return Err(ApiError::NotFound(format!("product {id} not found")));
    }
    Ok(HttpResponse::Ok().json(Deleted { deleted: id }))
}

#[utoipa::path(post, path = "/v1/products", tag = "products",
    request_body(content = Object,
        description = "A JSON array of product records, or `{\"products\": [...]}`; at most 1000"),
    responses(
        (status = 200, description = "What the batch did", body = BatchBody),
        (status = 400, description = "`bad_request`: the request could not be parsed or is out of bounds", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 409, description = "`conflict`: the index was built with another model", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is loading or there is no index yet", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn batch(req: HttpRequest, state: web::Data<AppState>, body: web::Json<serde_json::Value>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let items = match body.into_inner() {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(mut o) => match o.remove("products") {
            Some(serde_json::Value::Array(a)) => a,
            _ => return Err(ApiError::BadRequest("send a JSON array of products or {\"products\": [...]}".into())),
        },
        _ => return Err(ApiError::BadRequest("send a JSON array of products".into())),
    };
    if items.len() > crate::limits::MAX_BATCH {
        return Err(ApiError::PayloadTooLarge(format!(
            "at most {} products per batch; use POST /v1/ingest for more",
            crate::limits::MAX_BATCH
        )));
    }
    let products = items.into_iter().map(|v| parse_product(v, None)).collect::<ApiResult<Vec<_>>>()?;
    let res = write(&state, products).await?;
    Ok(HttpResponse::Ok().json(BatchBody { summary: res.summary, failures: res.failures }))
}

/// The n-th stored image of a product: images that failed at ingest, and products written before
/// the media store, have none. Never a path or a URL: the service serves only what it stored.
fn image_source(state: &AppState, id: &str, n: usize) -> ApiResult<(MediaRef, MediaStore)> {
    let sp = state.searcher().product(id)?;
    let m = sp.stored_media().nth(n).cloned().ok_or_else(|| no_image(id, n))?;
    Ok((m, MediaStore::new(&state.config.data)))
}

fn no_image(id: &str, n: usize) -> ApiError {
    ApiError::NotFound(format!("product {id} has no stored image {n}"))
}

/// The n-th stored image, as stored (the original, or a copy scaled to 2048 px).
#[utoipa::path(get, path = "/v1/images/{id}/{n}", tag = "products",
    params(("id" = String, Path, description = "Product id"), ("n" = usize, Path, description = "Image number, from 0")),
    responses(
        (status = 200, description = "The image file", content_type = "image/*", body = [u8]),
        (status = 400, description = "`bad_request`: the request could not be parsed or is out of bounds", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
pub async fn image(req: HttpRequest, state: web::Data<AppState>, path: web::Path<(String, usize)>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let (id, n) = path.into_inner();
    let (m, store) = image_source(&state, &id, n)?;
    let content_type = guess_type(&m);
    let bytes = web::block(move || store.get(&m)).await??.ok_or_else(|| no_image(&id, n))?;
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=3600"))
        // The type comes from the bytes' own signature; a browser must not second-guess it.
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(bytes))
}

fn guess_type(m: &MediaRef) -> &'static str {
    m.format.content_type()
}

/// A 256 px JPEG thumbnail of the n-th stored image, made on first request and cached under
/// `DATA/cache/thumbs`, keyed by the media hash.
#[utoipa::path(get, path = "/v1/thumbs/{id}/{n}", tag = "products",
    params(("id" = String, Path, description = "Product id"), ("n" = usize, Path, description = "Image number, from 0")),
    responses(
        (status = 200, description = "A JPEG at most 256 px on a side", content_type = "image/jpeg", body = [u8]),
        (status = 400, description = "`bad_request`: the request could not be parsed or is out of bounds", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_image`: the image could not be decoded", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("apiKey" = [])))]
pub async fn thumb(req: HttpRequest, state: web::Data<AppState>, path: web::Path<(String, usize)>) -> ApiResult<HttpResponse> {
    require_search(&req, &state)?;
    let (id, n) = path.into_inner();
    let (m, store) = image_source(&state, &id, n)?;
    let bytes = web::block(move || store.thumbnail(&m, 256)).await??.ok_or_else(|| no_image(&id, n))?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(bytes))
}

#[derive(Deserialize, IntoParams)]
pub struct IngestParams {
    /// Delete products that are not in this catalog.
    delete_missing: Option<bool>,
}

fn format_of(name: &str, content_type: &str) -> Format {
    if name.to_ascii_lowercase().ends_with(".csv") || content_type.contains("csv") {
        Format::Csv
    } else {
        Format::Jsonl
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        ApiError::Write(WriteError::Upload(e))
    }
}

/// The bounds of an upload to this service: the whole upload and its catalog at most
/// `max_catalog`, an image at most `max_upload`.
fn upload_limits(state: &AppState) -> UploadLimits {
    UploadLimits::with_caps(state.config.max_catalog as u64, state.config.max_upload as u64)
}

fn is_zip(content_type: &str) -> bool {
    ["application/zip", "application/x-zip-compressed", "application/x-zip"].iter().any(|z| content_type.starts_with(z))
}

fn multipart_err(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::BadRequest(format!("multipart: {e}"))
}

/// Write a request body or a multipart part to `path`, at most `limit` bytes (413 past it).
async fn stream_to_file<S, E>(mut body: S, path: &Path, limit: usize) -> ApiResult<()>
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|e| UploadError::Io { context: "the upload".into(), source: e })?;
    let mut n = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the upload: {e}")))?;
        n += chunk.len();
        if n > limit {
            return Err(ApiError::PayloadTooLarge(format!("the upload is over the limit of {limit} bytes")));
        }
        file.write_all(&chunk).map_err(|e| UploadError::Io { context: "the upload".into(), source: e })?;
    }
    Ok(())
}

/// Read one multipart part into memory, at most `limit` bytes (413 past it).
async fn read_part(field: &mut actix_multipart::Field, limit: usize, what: &str) -> ApiResult<Vec<u8>> {
    let mut buf = vec![];
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(multipart_err)?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!("{what} is over the limit of {limit} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A staging folder for this service's uploads, and the path a zip body is written to beside it
/// (named with the staging prefix, so a crash's leftovers are cleared at the next start).
fn new_staging(writes: &WriteService, limits: UploadLimits) -> ApiResult<(Staging, std::path::PathBuf)> {
    let staging = Staging::new(writes.jobs().staging_parent(), limits)?;
    let body = staging.body_path();
    Ok((staging, body))
}

/// Unpack a zip body into `staging` (blocking), then remove the body.
fn add_zip_file(staging: &mut Staging, body: &Path) -> Result<(), UploadError> {
    let r = std::fs::File::open(body)
        .map_err(|e| UploadError::Io { context: "the upload".into(), source: e })
        .and_then(|f| staging.add_zip(std::io::BufReader::new(f)));
    let _ = std::fs::remove_file(body);
    r
}

/// What a multipart ingest held: the catalog part, a zip part (written to a file), and the image
/// parts (written into the staging folder as they came).
/// A catalog part: its file name, format and bytes.
type CatalogPart = (String, Format, Vec<u8>);

struct IngestParts {
    catalog: Option<CatalogPart>,
    zip: Option<std::path::PathBuf>,
    staging: Option<(Staging, std::path::PathBuf)>,
}

async fn ingest_multipart(mut mp: Multipart, writes: &WriteService, limits: UploadLimits) -> ApiResult<IngestParts> {
    let mut parts = IngestParts { catalog: None, zip: None, staging: None };
    let mut count = 0usize;
    let max_part = limits.max_file_bytes as usize;
    while let Some(field) = mp.next().await {
        let mut field = field.map_err(multipart_err)?;
        count += 1;
        if count > limits.max_files + 1 {
            return Err(ApiError::PayloadTooLarge(format!("at most {} files in one upload", limits.max_files)));
        }
        let name = field.name().unwrap_or("").to_string();
        let filename = field.content_disposition().and_then(|d| d.get_filename()).map(str::to_string);
        let content_type = field.content_type().map(|m| m.essence_str().to_string()).unwrap_or_default();
        let is_zip_part = filename.as_deref().is_some_and(|f| f.to_ascii_lowercase().ends_with(".zip")) || is_zip(&content_type);
        if name == "file" && is_zip_part {
            if parts.zip.is_some() {
                return Err(ApiError::BadRequest("send one zip".into()));
            }
            if parts.staging.is_none() {
                parts.staging = Some(new_staging(writes, limits)?);
            }
            let body = parts.staging.as_ref().expect("just made").1.clone();
            stream_to_file(&mut field, &body, limits.max_total_bytes as usize).await?;
            parts.zip = Some(body);
        } else if name == "file" {
            if parts.catalog.is_some() {
                return Err(ApiError::BadRequest("send one catalog in the field `file`".into()));
            }
            let filename = filename.unwrap_or_default();
            let format = catalog_format(&filename).unwrap_or(format_of("", &content_type));
            let bytes = read_part(&mut field, limits.max_catalog_bytes as usize, "the catalog").await?;
            parts.catalog = Some((filename, format, bytes));
        } else if let Some(filename) = filename {
            // An image, named by the relative path the catalog uses.
            let bytes = read_part(&mut field, max_part, &format!("file {filename}")).await?;
            let (mut staging, body) = match parts.staging.take() {
                Some(s) => s,
                None => new_staging(writes, limits)?,
            };
            staging = web::block(move || staging.add_file(&filename, &bytes[..], None).map(|_| staging)).await??;
            parts.staging = Some((staging, body));
        } else {
            // A small form field (the dashboard sends none that matter here); read and dropped.
            read_part(&mut field, crate::limits::MULTIPART_FIELD, &format!("field {name}")).await?;
        }
    }
    Ok(parts)
}

#[utoipa::path(post, path = "/v1/ingest", tag = "ingest", params(IngestParams),
    request_body(description = "A catalog: JSON Lines or CSV (by content type); a `.zip` holding one catalog (`.jsonl`, `.ndjson`, \
        `.json` or `.csv`) and the image files it names by relative path (`application/zip`); or multipart: field `file` \
        (a catalog, CSV by a `.csv` name, or a `.zip`) plus one part per image file whose filename is the relative path the \
        catalog uses. Relative image paths of an uploaded catalog resolve only inside the upload.",
        content((String = "application/x-ndjson"), (String = "text/csv"), (String = "application/zip"), (Object = "multipart/form-data"))),
    responses(
        (status = 202, description = "The job is queued", body = IngestAccepted),
        (status = 400, description = "`bad_request`: the request could not be parsed or is out of bounds, or the upload was refused (unsafe names, symlinks, nested zips, no catalog)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_catalog` in all, `max_upload` for one image, or 10,000 files", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is loading or there is no index yet", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn ingest(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
    p: web::Query<IngestParams>,
) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let limit = state.config.max_catalog;
    let limits = upload_limits(&state);
    let writes = state.writes.clone();
    let delete_missing = p.delete_missing.unwrap_or(false);
    let upload: Option<(Staging, Option<std::path::PathBuf>, Option<CatalogPart>)> = if is_zip(&ct) {
        let (staging, body) = new_staging(&writes, limits)?;
        stream_to_file(payload, &body, limit).await?;
        Some((staging, Some(body), None))
    } else if ct.starts_with("multipart/form-data") {
        let parts = ingest_multipart(Multipart::new(req.headers(), payload), &writes, limits).await?;
        match parts.staging {
            Some((staging, _)) => Some((staging, parts.zip, parts.catalog)),
            None => {
                let (_, format, bytes) =
                    parts.catalog.ok_or_else(|| ApiError::BadRequest("multipart field file is required".into()))?;
                return submit_catalog(writes, bytes, format, delete_missing).await;
            }
        }
    } else {
        return submit_catalog(writes, read_limited(payload, limit).await?, format_of("", &ct), delete_missing).await;
    };
    let (mut staging, zip, catalog) = upload.expect("set above");
    let job = web::block(move || {
        if let Some(body) = zip {
            add_zip_file(&mut staging, &body)?;
        }
        if let Some((name, format, bytes)) = catalog {
            staging.add_catalog(&name, format, &bytes[..])?;
        }
        writes.submit_upload(staging.finish()?, delete_missing)
    })
    .await??;
    Ok(HttpResponse::Accepted().json(IngestAccepted { job_id: job.id.clone(), status_url: format!("/v1/jobs/{}", job.id), job }))
}

async fn submit_catalog(
    writes: std::sync::Arc<WriteService>,
    bytes: Vec<u8>,
    format: Format,
    delete_missing: bool,
) -> ApiResult<HttpResponse> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::BadRequest("the catalog is empty".into()));
    }
    let job = web::block(move || writes.submit(&bytes, format, delete_missing)).await??;
    Ok(HttpResponse::Accepted().json(IngestAccepted { job_id: job.id.clone(), status_url: format!("/v1/jobs/{}", job.id), job }))
}

#[utoipa::path(get, path = "/v1/jobs", tag = "ingest",
    responses(
        (status = 200, description = "Every ingest job", body = JobList),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn jobs(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    Ok(HttpResponse::Ok().json(JobList { jobs: state.writes.jobs().list() }))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "ingest",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn job(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let job = state.writes.jobs().get(&path).ok_or_else(|| ApiError::NotFound(format!("job {path} not found")))?;
    Ok(HttpResponse::Ok().json(job))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/failures", tag = "ingest",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The failure report, one `Failure` per line", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 410, description = "`report_gone`: the failure report was removed", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn job_failures(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let writes = state.writes.clone();
    let id = path.clone();
    let body = web::block(move || writes.job_failures(&id)).await??;
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"job-{path}-failures.jsonl\"")))
        .body(body))
}

#[derive(Deserialize, IntoParams)]
pub struct ReportParams {
    /// Lines to skip (default 0).
    offset: Option<usize>,
    /// 1 to 500, default 100.
    limit: Option<usize>,
    /// `error` or `warning`: only those lines.
    severity: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}/report", tag = "ingest",
    params(("id" = String, Path, description = "Job id"), ReportParams),
    responses(
        (status = 200, description = "One page of the job's failures and warnings (line, id, reason, severity)", body = ReportPage),
        (status = 400, description = "`bad_request`: the request could not be parsed or is out of bounds", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 410, description = "`report_gone`: the failure report was removed", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn job_report(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    p: web::Query<ReportParams>,
) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let severity = match p.severity.as_deref() {
        None | Some("") => None,
        Some("error") => Some(Severity::Error),
        Some("warning") => Some(Severity::Warning),
        Some(other) => return Err(ApiError::BadRequest(format!("severity {other:?}: use error or warning"))),
    };
    let (offset, limit) = (p.offset.unwrap_or(0), p.limit.unwrap_or(100).clamp(1, 500));
    let writes = state.writes.clone();
    let id = path.into_inner();
    let page = web::block(move || match writes.jobs().report_page(&id, offset, limit, severity) {
        None => Err(WriteError::JobNotFound { id }),
        Some(Ok(Some(page))) => Ok(page),
        Some(Ok(None)) => Err(WriteError::ReportGone { id }),
        Some(Err(e)) => Err(WriteError::Io { context: format!("report of job {id}"), source: e }),
    })
    .await??;
    Ok(HttpResponse::Ok().json(page))
}

/// Images in one `POST /v1/products/{id}/images`.
pub const MAX_PRODUCT_IMAGES: usize = 16;

#[derive(Deserialize, IntoParams)]
pub struct ImageUploadParams {
    /// Replace the product's images with these (default: add them after the ones it has).
    replace: Option<bool>,
}

#[utoipa::path(post, path = "/v1/products/{id}/images", tag = "products",
    params(("id" = String, Path, description = "Product id"), ImageUploadParams),
    request_body(description = "multipart: one part per image file (any field name, with a filename), at most 16, each at most `max_upload` bytes",
        content((Object = "multipart/form-data"))),
    responses(
        (status = 200, description = "The product as stored, durable and searchable; `warnings` lists images that could not be used", body = ProductBody),
        (status = 400, description = "`bad_request`: no image part, or the request could not be parsed", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_image`: no image could be used and the product has no text", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is loading or there is no index yet", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn upload_images(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    p: web::Query<ImageUploadParams>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let id = path.into_inner();
    let sp = state.searcher().product(&id)?;
    let limits = UploadLimits { max_files: MAX_PRODUCT_IMAGES, ..upload_limits(&state) };
    let writes = state.writes.clone();
    let mut mp = Multipart::new(req.headers(), payload);
    let mut staging = Staging::new(writes.jobs().staging_parent(), limits)?;
    let mut names = vec![];
    let mut fields = 0;
    while let Some(field) = mp.next().await {
        let mut field = field.map_err(multipart_err)?;
        fields += 1;
        if fields > MAX_PRODUCT_IMAGES + crate::limits::MULTIPART_FIELDS {
            return Err(ApiError::PayloadTooLarge(format!("at most {MAX_PRODUCT_IMAGES} images")));
        }
        if field.content_disposition().and_then(|d| d.get_filename()).is_none() {
            read_part(&mut field, crate::limits::MULTIPART_FIELD, "a form field").await?;
            continue;
        }
        // The client's file name is not used: the service names the staged file.
        let name = format!("image-{}", names.len() + 1);
        let bytes = read_part(&mut field, limits.max_file_bytes as usize, &format!("image {}", names.len() + 1)).await?;
        let n = name.clone();
        staging = web::block(move || staging.add_file(&n, &bytes[..], None).map(|_| staging)).await??;
        names.push(name);
    }
    if names.is_empty() {
        return Err(ApiError::BadRequest("send at least one image part (with a filename)".into()));
    }
    let upload: StagedUpload = staging.finish_files();
    let mut images: Vec<String> = if p.replace.unwrap_or(false) {
        vec![]
    } else {
        sp.stored_media().map(|m| format!("{MEDIA_REF_PREFIX}{}", m.hash)).collect()
    };
    images.extend(names);
    let product = Product { images, ..sp.product.clone() };
    let root = upload.root();
    let roots: Vec<String> =
        [Some(root.clone()), std::fs::canonicalize(&root).ok()].into_iter().flatten().map(|p| p.display().to_string()).collect();
    let res = web::block(move || writes.put_with_files(vec![product], &upload)).await??;
    if res.summary.failed > 0 {
        let reason = res.failures.iter().map(|f| image_warning(&f.reason, &roots)).collect::<Vec<_>>().join("; ");
        return Err(ApiError::InvalidImage(reason));
    }
    let sp = state.searcher().product(&id)?;
    let mut body = ProductBody::new(&sp);
    body.warnings = Some(res.failures.iter().map(|f| image_warning(&f.reason, &roots)).collect());
    Ok(HttpResponse::Ok().json(body))
}

/// A product write's warning with the staging folder's path replaced by `upload` (the reasons
/// name the files they read).
fn image_warning(reason: &str, roots: &[String]) -> String {
    roots.iter().fold(reason.to_string(), |r, root| r.replace(root.as_str(), "upload"))
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[utoipa::path(get, path = "/v1/stats", tag = "operations",
    responses(
        (status = 200, description = "Index, model and queue numbers", body = Stats),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn stats(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let data = state.config.data.clone();
    let (disk, media) = web::block(move || (dir_size(&data), MediaStore::new(&data).usage())).await?;
    let g = state.searcher().snapshot();
    let m = g.as_ref().map(|g| g.manifest.clone());
    // On the engine backend there is no manifest: the engine counts its products and vectors
    // (every vector is live: the engine deletes in place, so there are no tombstones or segments).
    let engine = match state.searcher().engine().cloned() {
        Some(e) => Some(web::block(move || e.counts()).await?.map_err(vitrine_searcher::SearchError::from)?),
        None => None,
    };
    let engine_vectors = engine.map(|c| c.image_vectors + c.text_vectors);
    let embedder = state.query.embedder();
    let (depth, capacity) = state.query.queue();
    let model = embedder.as_ref().map(|e| e.model_id().clone());
    Ok(HttpResponse::Ok().json(Stats {
        products: engine.map(|c| c.products).or(m.as_ref().map(|m| m.products)).unwrap_or(0),
        images: engine.map(|c| c.image_vectors).or(m.as_ref().map(|m| m.image_points)).unwrap_or(0),
        vectors: engine_vectors.or(m.as_ref().map(|m| m.points())).unwrap_or(0),
        live_vectors: engine_vectors.or(m.as_ref().map(|m| m.live_points)).unwrap_or(0),
        tombstones: m.as_ref().map(|m| m.tombstones()).unwrap_or(0),
        segments: m.as_ref().map(|m| m.segments.len()).unwrap_or(0),
        disk_bytes: disk,
        media_bytes: media.bytes,
        media_files: media.files,
        model,
        device: embedder.map(|e| e.device().to_string()),
        generation: m.as_ref().map(|m| m.generation).unwrap_or(0),
        uptime_s: state.started.elapsed().as_secs(),
        queue: Queue { depth, capacity },
        jobs_active: state.writes.jobs().active(),
        relevance: crate::relevance::view(&state),
    }))
}

/// `GET /v1/snapshots`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotList {
    /// Newest first.
    pub snapshots: Vec<Snapshot>,
}

#[utoipa::path(post, path = "/v1/snapshots", tag = "operations",
    responses(
        (status = 201, description = "A consistent copy of the data directory, written into a new folder of the snapshot directory (`snapshot_dir`) while the service keeps answering searches; writes wait for it", body = Snapshot),
        (status = 400, description = "`bad_request`: on the engine backend, whose catalog the data directory does not hold (back it up with the engine's own backup)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
        (status = 409, description = "`busy`: another process holds the data directory", body = ErrorBody),
        (status = 503, description = "`not_ready`: the model is still loading", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn create_snapshot(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let writes = state.writes.clone();
    let snapshot = web::block(move || writes.snapshot()).await??;
    Ok(HttpResponse::Created().json(snapshot))
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "operations",
    responses(
        (status = 200, description = "The snapshots in the snapshot directory", body = SnapshotList),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn snapshots(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let writes = state.writes.clone();
    let snapshots = web::block(move || writes.snapshots()).await??;
    Ok(HttpResponse::Ok().json(SnapshotList { snapshots }))
}

#[utoipa::path(get, path = "/v1/admin/health", tag = "operations",
    responses(
        (status = 200, description = "Search first: latency per route, responses by status and error code, search latency per stage, the query rate and the queue", body = Health),
        (status = 401, description = "`unauthorized`: no API key where one is required", body = ErrorBody),
        (status = 403, description = "`forbidden`: this key may not do that", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn health(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_admin(&req, &state)?;
    let (routes, qps) = state.metrics.health();
    let (status, errors) = state.metrics.status_counts();
    let stages = state.metrics.stage_latency();
    let (depth, capacity) = state.query.queue();
    Ok(HttpResponse::Ok().json(Health { routes, status, errors, stages, qps, queue: Queue { depth, capacity } }))
}
