//! The query service: everything between a parsed request and its typed result.
//!
//! A [`Query`] holds what a shopper sent (text, image bytes, an image URL, or a product for
//! more-like-this) plus filters, fusion, paging and facets. [`QueryService::search`] decides which
//! model towers run, fetches `image_url` under the fetch policy, decodes and preprocesses the
//! image, embeds, and searches the live generation. The HTTP layer only parses, calls this and
//! maps the result or the [`QueryError`].
//!
//! Bounded by design:
//! - **Admission.** Every query holds an [`Admission`] from a gate of `queue_capacity` slots
//!   *before* its upload is buffered (the HTTP layer takes it first), through fetch, decode,
//!   inference and search. A full gate answers [`QueryError::Overloaded`] at once, so neither
//!   memory nor latency grows with load.
//! - **Decoding.** At most `decode_concurrency` images are decoded at once (the others wait inside
//!   their admission), so decoded pixels take at most `decode_concurrency × max_pixels × 3` bytes
//!   whatever the queue holds; the uploads themselves take at most `queue_capacity × max_upload`.
//! - **Keyword syntax** is checked before parsing (see [`crate::validate_keyword_query`]).
//!
//! Threading: [`QueryService::search`] blocks (model and search work); call it off the async
//! executor. The service is shared by every request thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use vitrine_core::{CoreError, ModelId};
use vitrine_fetch::{FetchError, FetchOptions, Fetcher};
use vitrine_model::batch::{BatchPolicy, BatchStats, MicroBatcher};
use vitrine_model::{Embedder, ImageLimits, ModelSlot};

use crate::relevance::QueryKind;
use crate::{Filters, Fusion, SearchError, SearchQuery, SearchResult, Searcher, Sort};

/// Results per page when a query names none.
pub const DEFAULT_K: usize = 10;

/// Whether `image_url` queries may fetch, and from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageUrls {
    /// The server never fetches a URL a searcher sends.
    Disabled,
    /// Only hosts that resolve to public addresses (the default: a searcher must not reach the
    /// server's own network).
    PublicOnly,
    /// Any address, private ones included (an operator's explicit choice).
    Any,
}

/// What the query service needs to know; built from the serve settings.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Largest image accepted, uploaded or fetched, in bytes.
    pub max_upload: usize,
    /// Queries admitted at once (buffering, decoding, waiting for or running inference).
    pub queue_capacity: usize,
    /// Images decoded at once.
    pub decode_concurrency: usize,
    pub image_urls: ImageUrls,
    pub image_limits: ImageLimits,
    pub fetch_timeout: std::time::Duration,
    /// Text-query embeddings kept (LRU).
    pub text_cache_entries: usize,
    /// How concurrent queries are batched into model calls.
    pub batch: BatchPolicy,
}

/// Text-query embeddings the service keeps by default: 4,096 × (≤ 1,000 bytes of text + one
/// vector) stays under 12 MB for a 512-dimension model.
pub const DEFAULT_TEXT_CACHE_ENTRIES: usize = 4096;

impl QueryConfig {
    pub fn new(max_upload: usize, queue_capacity: usize, image_urls: ImageUrls) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        QueryConfig {
            max_upload,
            queue_capacity: queue_capacity.max(1),
            decode_concurrency: cores,
            image_urls,
            image_limits: ImageLimits { max_bytes: max_upload as u64, ..ImageLimits::default() },
            fetch_timeout: std::time::Duration::from_secs(10),
            text_cache_entries: DEFAULT_TEXT_CACHE_ENTRIES,
            batch: BatchPolicy::new(32, std::time::Duration::ZERO),
        }
    }
}

/// The image of a query.
#[derive(Debug, Clone)]
pub enum ImageInput {
    Bytes(Vec<u8>),
    Url(String),
}

/// A region of the query image in relative coordinates: `x`, `y` of the top left corner in
/// `[0, 1)`, width `w` and height `h` in `(0, 1]`, inside the image (`x + w ≤ 1`, `y + h ≤ 1`).
/// It is applied after decoding (so after EXIF orientation) and before preprocessing.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Crop {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Slack for `x + w ≤ 1` when a client computed both from pixels.
const CROP_EPSILON: f64 = 1e-9;

impl Crop {
    /// The crop's numbers are finite and describe a region inside the image.
    pub fn validate(&self) -> Result<(), SearchError> {
        let bad = |m: String| Err(SearchError::BadRequest(format!("crop: {m}")));
        for (name, v) in [("x", self.x), ("y", self.y), ("w", self.w), ("h", self.h)] {
            if !v.is_finite() {
                return bad(format!("{name} must be a finite number"));
            }
        }
        if !(0.0..1.0).contains(&self.x) || !(0.0..1.0).contains(&self.y) {
            return bad(format!("x and y must be in [0, 1), got x {} y {}", self.x, self.y));
        }
        if self.w <= 0.0 || self.h <= 0.0 {
            return bad(format!("w and h must be above 0, got w {} h {}", self.w, self.h));
        }
        if self.x + self.w > 1.0 + CROP_EPSILON || self.y + self.h > 1.0 + CROP_EPSILON {
            return bad("the region must lie inside the image: x + w and y + h at most 1".into());
        }
        Ok(())
    }

    /// The region in pixels of a `width` × `height` image as `(x, y, w, h)`; an error when it
    /// rounds to no pixels.
    pub fn pixels(&self, width: u32, height: u32) -> Result<(u32, u32, u32, u32), SearchError> {
        let span = |start: f64, len: f64, size: u32| {
            let size_f = f64::from(size);
            let a = (start * size_f).floor().clamp(0.0, size_f);
            let b = ((start + len) * size_f).round().clamp(a, size_f);
            (a as u32, (b - a) as u32)
        };
        let (x, w) = span(self.x, self.w, width);
        let (y, h) = span(self.y, self.h, height);
        if w == 0 || h == 0 {
            return Err(SearchError::BadRequest(format!(
                "crop: the region is {w}×{h} pixels of this {width}×{height} image; make it larger"
            )));
        }
        Ok((x, y, w, h))
    }
}

/// A shopper's query, as parsed from any of the search routes.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub text: Option<String>,
    pub image: Option<ImageInput>,
    /// More like this product (its own vectors and title are the query; it is left out).
    pub similar_to: Option<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub filters: Filters,
    /// The request's fusion; `None` takes the index's defaults for the query's kind.
    pub fusion: Option<Fusion>,
    pub facets: bool,
    pub sort: Sort,
    /// A region of the query image (image queries only).
    pub crop: Option<Crop>,
    /// Return each channel's own ranked list too (evaluation).
    pub channels: bool,
}

/// A query with its vectors computed, ready to run with any fusion ([`QueryService::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kind: QueryKind,
    /// The search without its fusion: vectors, text, paging, filters, facets.
    search: SearchQuery,
    /// The request's fusion, if it named one.
    fusion: Option<Fusion>,
    pub vision_ms: Option<f64>,
    pub text_ms: Option<f64>,
}

/// Which towers [`QueryService::prepare`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Towers {
    /// Only those a vector channel of the query's fusion will use (serving).
    AsNeeded,
    /// Every tower the input allows, so any fusion can run on the result (tuning).
    All,
}

/// A search result and where the model time went.
#[derive(Debug, Clone)]
pub struct QueryOutcome {
    pub result: SearchResult,
    /// Whole query, admission to result, in milliseconds.
    pub took_ms: f64,
    /// Image tower time (decode and preprocess included), when it ran.
    pub vision_ms: Option<f64>,
    /// Text tower time, when it ran.
    pub text_ms: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("a query needs text (q), an image, or a product to find similar ones")]
    MissingInput,
    #[error("{0}")]
    Conflicting(&'static str),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("the image is over the limit of {limit} bytes")]
    ImageTooLarge { limit: usize },
    #[error("image_url is disabled on this server")]
    ImageUrlsDisabled,
    #[error("image_url: {0}")]
    Fetch(#[from] FetchError),
    /// The image could not be decoded, or the model failed on it.
    #[error(transparent)]
    Model(#[from] CoreError),
    #[error("the model queue is full ({capacity} requests in flight); retry shortly")]
    Overloaded { capacity: usize },
    #[error("the model is still loading")]
    NotReady,
    #[error(
        "the index was built with model {} ({}, {} dims) but the service loaded {} ({}, {} dims): {}",
        have.name, have.variant, have.dim, want.name, want.variant, want.dim, have.mismatch_fix(want, place)
    )]
    ModelMismatch { have: Box<ModelId>, want: Box<ModelId>, place: String },
    #[error("the model is already set")]
    ModelAlreadySet,
}

/// A counting gate: at most `capacity` holders; the rest are refused at once.
#[derive(Debug)]
struct Gate {
    depth: AtomicUsize,
    capacity: usize,
}

/// A query's place in the service. Dropping it frees the place.
#[derive(Debug)]
pub struct Admission(Arc<Gate>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.depth.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A waiting semaphore for decodes.
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock();
            while *free == 0 {
                self.freed.wait(&mut free);
            }
            *free -= 1;
        }
        struct Release<'a>(&'a Permits);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                *self.0.free.lock() += 1;
                self.0.freed.notify_one();
            }
        }
        let _release = Release(self);
        f()
    }
}

pub struct QueryService {
    searcher: Arc<Searcher>,
    model: ModelSlot,
    gate: Arc<Gate>,
    decodes: Permits,
    fetcher: Option<Fetcher>,
    config: QueryConfig,
    text_cache: TextCache,
    /// The query towers' micro-batchers, started with the model (see [`Batchers`]).
    batchers: std::sync::OnceLock<Batchers>,
}

/// One micro-batcher per tower: concurrent queries share model calls (see
/// [`vitrine_model::batch`]). They hold the embedder, which never changes once set.
struct Batchers {
    text: MicroBatcher<String, Vec<f32>>,
    /// Inputs are preprocessed pixel tensors of one image each.
    vision: MicroBatcher<Arc<Vec<f32>>, Vec<f32>>,
}

impl Batchers {
    fn new(embedder: Arc<dyn Embedder>, policy: BatchPolicy) -> Self {
        let e = embedder.clone();
        let text = MicroBatcher::spawn("text", policy, move |texts: Vec<String>| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            e.embed_texts(&refs)
        });
        let vision = MicroBatcher::spawn("vision", policy, move |images: Vec<Arc<Vec<f32>>>| {
            if let [one] = &images[..] {
                return embedder.embed_pixels(one, 1);
            }
            let pixels: Vec<f32> = images.iter().flat_map(|p| p.iter().copied()).collect();
            embedder.embed_pixels(&pixels, images.len())
        });
        Batchers { text, vision }
    }
}

/// Text-query embeddings, most recently used first, keyed by model and text. Bounded by entry
/// count; an entry is at most `MAX_QUERY_CHARS` of key and one vector, so the bound is in bytes too.
struct TextCache {
    entries: Mutex<lru::LruCache<(String, String), Vec<f32>>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// The text cache's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub capacity: usize,
}

impl TextCache {
    fn new(capacity: usize) -> Self {
        TextCache {
            entries: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(capacity.max(1)).expect("at least 1"))),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn get_or_embed(
        &self,
        e: &dyn Embedder,
        text: &str,
        embed: impl FnOnce(&str) -> Result<Vec<f32>, CoreError>,
    ) -> Result<Vec<f32>, CoreError> {
        let key = (e.model_id().content_hash.clone(), text.to_string());
        if let Some(v) = self.entries.lock().get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Embedded outside the lock: two misses on one text both run the tower, which is cheaper
        // than holding every other query behind one inference.
        let v = embed(text)?;
        self.entries.lock().put(key, v.clone());
        Ok(v)
    }

    fn stats(&self) -> CacheStats {
        let entries = self.entries.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: entries.len(),
            capacity: entries.cap().get(),
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl QueryService {
    pub fn new(searcher: Arc<Searcher>, model: ModelSlot, config: QueryConfig) -> Self {
        let fetcher = match config.image_urls {
            ImageUrls::Disabled => None,
            urls => Some(Fetcher::new(FetchOptions {
                timeout: config.fetch_timeout,
                retries: 1,
                max_bytes: config.max_upload as u64,
                public_only: urls == ImageUrls::PublicOnly,
                ..FetchOptions::default()
            })),
        };
        QueryService {
            searcher,
            model,
            gate: Arc::new(Gate { depth: AtomicUsize::new(0), capacity: config.queue_capacity.max(1) }),
            decodes: Permits { free: Mutex::new(config.decode_concurrency.max(1)), freed: Condvar::new() },
            fetcher,
            text_cache: TextCache::new(config.text_cache_entries),
            batchers: std::sync::OnceLock::new(),
            config,
        }
    }

    /// Hits and misses of the text-embedding cache.
    pub fn text_cache_stats(&self) -> CacheStats {
        self.text_cache.stats()
    }

    /// The fusion a query of `kind` runs with: the request's, else the index's tuned default for
    /// the kind, else the built-in one; and its floor: the fusion's own, else the tuned floor,
    /// else the model card's (see [`crate::relevance`]).
    pub fn resolve_fusion(&self, kind: QueryKind, request: Option<Fusion>) -> Fusion {
        let model = self.embedder();
        let tuned = model.as_ref().and_then(|m| self.searcher.relevance_for(m.model_id()));
        let mut f = request.or_else(|| tuned.as_ref().and_then(|t| t.for_kind(kind))).unwrap_or_default();
        if f.floor.is_none() {
            f.floor = tuned.as_ref().and_then(|t| t.floor).or_else(|| model.and_then(|m| m.relevance_floor()));
        }
        f
    }

    /// [`QueryService::new`], plus the read side's background work: a thread that picks up
    /// generations written by other processes (`vitrine index`) every `refresh_every`.
    pub fn start(
        searcher: Arc<Searcher>,
        model: ModelSlot,
        config: QueryConfig,
        refresh_every: std::time::Duration,
    ) -> Arc<Self> {
        searcher.spawn_refresher(refresh_every);
        Arc::new(Self::new(searcher, model, config))
    }

    /// What the write side calls after one of its writes made a new generation live: readers
    /// move to it before the write is acknowledged.
    pub fn generation_listener(&self) -> Box<dyn Fn() + Send + Sync> {
        let searcher = self.searcher.clone();
        Box::new(move || {
            if let Err(e) = searcher.refresh() {
                tracing::warn!("refresh after a write: {e}");
            }
        })
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    pub fn searcher(&self) -> &Arc<Searcher> {
        &self.searcher
    }

    /// Take a place for one query, or [`QueryError::Overloaded`] when every place is taken.
    /// Take it before buffering an upload: the upload's bytes count against the same bound.
    pub fn admit(&self) -> Result<Admission, QueryError> {
        let d = self.gate.depth.fetch_add(1, Ordering::SeqCst) + 1;
        if d > self.gate.capacity {
            self.gate.depth.fetch_sub(1, Ordering::SeqCst);
            return Err(QueryError::Overloaded { capacity: self.gate.capacity });
        }
        Ok(Admission(self.gate.clone()))
    }

    /// Queries admitted now, and the capacity.
    pub fn queue(&self) -> (usize, usize) {
        (self.gate.depth.load(Ordering::SeqCst), self.gate.capacity)
    }

    /// The loaded model, if it is loaded.
    pub fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.model.get().cloned()
    }

    /// The towers' batchers, started on first use once the model is loaded.
    fn batchers(&self) -> Option<&Batchers> {
        if let Some(b) = self.batchers.get() {
            return Some(b);
        }
        let embedder = self.embedder()?;
        Some(self.batchers.get_or_init(|| Batchers::new(embedder, self.config.batch)))
    }

    /// Model calls and queries answered by the text and the vision batcher (the mean batch size
    /// is inputs / calls), for `/metrics`.
    pub fn batch_stats(&self) -> (BatchStats, BatchStats) {
        self.batchers.get().map(|b| (b.text.stats(), b.vision.stats())).unwrap_or_default()
    }

    /// Install the loaded, warmed model; refuses one the live index was not built with.
    pub fn set_model(&self, embedder: Arc<dyn Embedder>) -> Result<(), QueryError> {
        // What the backend was built with: the live generation's manifest, or the engine's record.
        let (indexed, place) = match self.searcher.engine() {
            Some(e) => (self.searcher.indexed_model()?, e.url().to_string()),
            None => {
                let data = self.searcher.data_dir();
                let live = vitrine_store::generation::current(data).map_err(SearchError::from)?;
                (live.map(|(_, m)| m.model), data.display().to_string())
            }
        };
        if let Some(have) = indexed {
            if !have.same_model(embedder.model_id()) {
                let want = Box::new(embedder.model_id().clone());
                return Err(QueryError::ModelMismatch { have: Box::new(have), want, place });
            }
        }
        self.model.set(embedder).map_err(|_| QueryError::ModelAlreadySet)
    }

    /// The model is loaded and there is an index (a generation, or the engine).
    pub fn is_ready(&self) -> bool {
        self.model.get().is_some() && self.searcher.has_index()
    }

    /// Run a query (blocking). `_admission` is held until the result is ready.
    pub fn search(&self, _admission: Admission, q: Query) -> Result<QueryOutcome, QueryError> {
        let started = Instant::now();
        let p = self.prepare(q, Towers::AsNeeded)?;
        let result = self.run(&p, None)?;
        Ok(QueryOutcome { result, took_ms: ms(started), vision_ms: p.vision_ms, text_ms: p.text_ms })
    }

    /// Check a query and compute its vectors: everything but the search itself, so that
    /// [`QueryService::run`] can try many fusions on one embedding (`vitrine tune`).
    pub fn prepare(&self, q: Query, towers: Towers) -> Result<Prepared, QueryError> {
        let text = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
        if let Some(t) = &text {
            crate::validate_keyword_query(t)?;
        }
        let k = q.k.unwrap_or(DEFAULT_K);
        let offset = q.offset.unwrap_or(0);
        crate::validate_paging(k, offset)?;
        if let Some(f) = &q.fusion {
            f.validate().map_err(|e| SearchError::BadRequest(e.to_string()))?;
        }
        q.filters.validate().map_err(SearchError::BadRequest)?;
        if let Some(c) = &q.crop {
            c.validate()?;
            if q.image.is_none() {
                return Err(SearchError::BadRequest("crop applies to an image query; send an image with it".into()).into());
            }
        }

        // Paging, filters, facets and sort, whatever the query's input.
        let base = SearchQuery {
            k,
            offset,
            filters: q.filters,
            facets: q.facets,
            sort: q.sort,
            channels: q.channels,
            ..SearchQuery::default()
        };
        if let Some(id) = q.similar_to {
            if text.is_some() || q.image.is_some() {
                return Err(QueryError::Conflicting("more like this takes no text or image"));
            }
            return self.similar(&id, base, q.fusion);
        }
        if text.is_none() && q.image.is_none() {
            return Err(QueryError::MissingInput);
        }
        let kind = QueryKind::of(q.image.is_some(), text.is_some());

        let mut vision_ms = None;
        let image_vector = match q.image {
            Some(input) => {
                let embedder = self.embedder().ok_or(QueryError::NotReady)?;
                let t = Instant::now();
                let bytes = self.image_bytes(input)?;
                let pre = embedder.preprocessor();
                let limits = &self.config.image_limits;
                let pixels = self.decodes.run(|| -> Result<Vec<f32>, QueryError> {
                    let Some(crop) = q.crop else { return Ok(pre.load(&bytes, "query image", limits)?) };
                    let img = vitrine_model::preprocess::decode(&bytes, "query image", limits)?;
                    let (x, y, w, h) = crop.pixels(img.width(), img.height())?;
                    Ok(pre.run(&image::imageops::crop_imm(&img, x, y, w, h).to_image()))
                })?;
                drop(bytes);
                let v = self.batchers().ok_or(QueryError::NotReady)?.vision.call(Arc::new(pixels))?;
                vision_ms = Some(ms(t));
                Some(v)
            }
            None => None,
        };
        let w = self.resolve_fusion(kind, q.fusion).weights_for(image_vector.is_some(), text.is_some());
        let mut text_ms = None;
        // The text tower runs only when a vector channel will use its output.
        let text_vector = match &text {
            Some(t) if towers == Towers::All || w.image > 0.0 || w.text > 0.0 => {
                let embedder = self.embedder().ok_or(QueryError::NotReady)?;
                let start = Instant::now();
                let batchers = self.batchers().ok_or(QueryError::NotReady)?;
                let v = self.text_cache.get_or_embed(&*embedder, t, |t| batchers.text.call(t.to_string()))?;
                text_ms = Some(ms(start));
                Some(v)
            }
            _ => None,
        };
        let search = SearchQuery { image_vector, text_vector, text, ..base };
        Ok(Prepared { kind, search, fusion: q.fusion, vision_ms, text_ms })
    }

    /// Search with a prepared query, under `fusion` if given, else the query's own resolution.
    pub fn run(&self, p: &Prepared, fusion: Option<Fusion>) -> Result<SearchResult, QueryError> {
        let fusion = match fusion {
            Some(f) => {
                f.validate().map_err(|e| SearchError::BadRequest(e.to_string()))?;
                f
            }
            None => self.resolve_fusion(p.kind, p.fusion),
        };
        Ok(self.searcher.search(&SearchQuery { fusion, ..p.search.clone() })?)
    }

    /// More like this: the product's own first image vector, text vector and title, the product
    /// itself left out.
    fn similar(&self, id: &str, base: SearchQuery, fusion: Option<Fusion>) -> Result<Prepared, QueryError> {
        let (product, (images, text_vector)) = self.searcher.product_with_vectors(id)?;
        let image_vector = images.into_iter().next();
        let kind = QueryKind::of(image_vector.is_some(), true);
        let search =
            SearchQuery { image_vector, text_vector, text: product.product.title, exclude: Some(id.to_string()), ..base };
        Ok(Prepared { kind, search, fusion, vision_ms: None, text_ms: None })
    }

    /// The bytes of a query image: as sent, or fetched under the fetch policy, never over the limit.
    fn image_bytes(&self, input: ImageInput) -> Result<Vec<u8>, QueryError> {
        let limit = self.config.max_upload;
        let bytes = match input {
            ImageInput::Bytes(b) => b,
            ImageInput::Url(url) => match &self.fetcher {
                None => return Err(QueryError::ImageUrlsDisabled),
                Some(f) => f.load_url(&url)?,
            },
        };
        if bytes.len() > limit {
            return Err(QueryError::ImageTooLarge { limit });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(capacity: usize, urls: ImageUrls) -> (tempfile::TempDir, QueryService) {
        let dir = tempfile::tempdir().unwrap();
        let searcher = Arc::new(Searcher::open(dir.path(), 64).unwrap());
        let svc = QueryService::new(searcher, ModelSlot::default(), QueryConfig::new(1000, capacity, urls));
        (dir, svc)
    }

    #[test]
    fn admission_is_bounded_and_freed_on_drop() {
        let (_d, svc) = service(2, ImageUrls::Disabled);
        let a = svc.admit().unwrap();
        let _b = svc.admit().unwrap();
        assert!(matches!(svc.admit(), Err(QueryError::Overloaded { capacity: 2 })));
        assert_eq!(svc.queue(), (2, 2));
        drop(a);
        assert!(svc.admit().is_ok());
    }

    #[test]
    fn a_query_needs_an_input() {
        let (_d, svc) = service(4, ImageUrls::Disabled);
        let err = svc.search(svc.admit().unwrap(), Query { text: Some("   ".into()), ..Default::default() }).unwrap_err();
        assert!(matches!(err, QueryError::MissingInput), "{err}");
    }

    #[test]
    fn paging_and_fusion_are_checked_before_any_model_work() {
        let (_d, svc) = service(4, ImageUrls::Disabled);
        let q = Query { text: Some("mug".into()), k: Some(0), ..Default::default() };
        assert!(matches!(svc.search(svc.admit().unwrap(), q), Err(QueryError::Search(SearchError::BadRequest(_)))));
        let q = Query { text: Some("mug".into()), offset: Some(crate::MAX_OFFSET + 1), ..Default::default() };
        assert!(matches!(svc.search(svc.admit().unwrap(), q), Err(QueryError::Search(SearchError::BadRequest(_)))));
        let fusion = Fusion { k: -1.0, ..Fusion::default() };
        let q = Query { text: Some("mug".into()), fusion: Some(fusion), ..Default::default() };
        assert!(matches!(svc.search(svc.admit().unwrap(), q), Err(QueryError::Search(SearchError::BadRequest(_)))));
    }

    #[test]
    fn image_urls_can_be_switched_off() {
        let (_d, svc) = service(4, ImageUrls::Disabled);
        let q = Query { image: Some(ImageInput::Url("http://example.com/a.jpg".into())), ..Default::default() };
        assert!(matches!(svc.image_bytes(q.image.unwrap()), Err(QueryError::ImageUrlsDisabled)));
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let (_d, svc) = service(4, ImageUrls::Disabled);
        let err = svc.image_bytes(ImageInput::Bytes(vec![0; 1001])).unwrap_err();
        assert!(matches!(err, QueryError::ImageTooLarge { limit: 1000 }), "{err}");
    }

    #[test]
    fn image_queries_wait_for_the_model() {
        let (_d, svc) = service(4, ImageUrls::Disabled);
        let q = Query { image: Some(ImageInput::Bytes(vec![1, 2, 3])), ..Default::default() };
        assert!(matches!(svc.search(svc.admit().unwrap(), q), Err(QueryError::NotReady)));
    }

    #[test]
    fn similar_takes_nothing_else() {
        let (_d, svc) = service(4, ImageUrls::Disabled);
        let q = Query { similar_to: Some("a".into()), text: Some("mug".into()), ..Default::default() };
        assert!(matches!(svc.search(svc.admit().unwrap(), q), Err(QueryError::Conflicting(_))));
    }

    #[test]
    fn crops_are_validated_and_rounded_to_pixels() {
        let c = |x, y, w, h| Crop { x, y, w, h };
        assert!(c(0.0, 0.0, 1.0, 1.0).validate().is_ok());
        assert!(c(0.7, 0.6, 0.3, 0.4).validate().is_ok(), "x + w that sums to 1 in floating point");
        for bad in [
            c(f64::NAN, 0.0, 0.5, 0.5),
            c(0.0, f64::INFINITY, 0.5, 0.5),
            c(-0.1, 0.0, 0.5, 0.5),
            c(1.0, 0.0, 0.5, 0.5),
            c(0.0, 0.0, 0.0, 0.5),
            c(0.0, 0.0, 0.5, -1.0),
            c(0.5, 0.0, 0.6, 0.5),
            c(0.0, 0.5, 0.5, 1e300),
        ] {
            assert!(matches!(bad.validate(), Err(SearchError::BadRequest(_))), "{bad:?}");
        }
        assert_eq!(c(0.25, 0.5, 0.5, 0.5).pixels(100, 10).unwrap(), (25, 5, 50, 5));
        assert_eq!(c(0.0, 0.0, 1.0, 1.0).pixels(7, 3).unwrap(), (0, 0, 7, 3));
        // Valid in relative terms, but less than half a pixel of a small image.
        assert!(matches!(c(0.5, 0.5, 0.001, 0.5).pixels(100, 100), Err(SearchError::BadRequest(_))));
    }

    #[test]
    fn a_crop_needs_an_image() {
        let (_d, svc) = service(4, ImageUrls::Disabled);
        let q = Query { text: Some("mug".into()), crop: Some(Crop { x: 0.0, y: 0.0, w: 1.0, h: 1.0 }), ..Default::default() };
        assert!(matches!(svc.search(svc.admit().unwrap(), q), Err(QueryError::Search(SearchError::BadRequest(_)))));
    }

    #[test]
    fn decode_permits_bound_concurrency() {
        let permits = Arc::new(Permits { free: Mutex::new(2), freed: Condvar::new() });
        let inside = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, inside, peak) = (permits.clone(), inside.clone(), peak.clone());
                std::thread::spawn(move || {
                    p.run(|| {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(*permits.free.lock(), 2);
    }
}
