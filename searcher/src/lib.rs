//! The searcher: runs queries over the live index generation.
//!
//! Three channels retrieve candidates, each already restricted by the filters:
//! - **image**: the query vector (the photo's, else the text's) against every product image;
//!   a product ranks by its best image;
//! - **text**: the query vector (the text's, else the photo's) against each product's
//!   title + description embedding, so a photo can also match products through their words;
//! - **keyword**: BM25 over title, brand, category, description and attributes.
//!
//! Then [`fusion`] combines them (RRF by default). Filters are evaluated once per query by
//! tantivy into a set of allowed products, which every channel applies *during* retrieval (the
//! HNSW search takes it as a filter); when the set is small, the vector channels score it
//! exactly instead, so selective filters never return fewer than `k` hits nor lose recall.
//!
//! Facets count the fused candidate set (every channel's matches after filters), so they follow
//! the query in hybrid search too.
//!
//! Threading: a [`Searcher`] is shared by all request threads; each query takes an `Arc` of the
//! current [`Generation`] and runs on it alone. [`Searcher::refresh`] swaps in a new generation
//! (arc-swap) when `CURRENT` changes; queries in flight keep the one they started with.

mod corpus;
mod engine;
pub mod eval;
pub mod fusion;
pub mod highlight;
pub mod relevance;
pub mod service;
pub mod tune;

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, Term};
use vitrine_core::catalog::StoredProduct;
use vitrine_core::CoreError;
use vitrine_store::generation::{self, Generation, SegmentCache};
use vitrine_store::keyword::attr_term;
use vitrine_store::vectors::{top_k, VectorIndex};

use corpus::{ChannelRequest, Channels, Corpus};
pub use fusion::{Fusion, FusionMode, Normalization, Weights};
pub use highlight::Highlights;
use rayon::prelude::*;
pub use vitrine_core::filters::{Filters, PriceRange, MAX_FILTER_ATTRIBUTES, MAX_FILTER_VALUES, MAX_FILTER_VALUE_BYTES};
use vitrine_core::relevance::{Modality, VectorChannel};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A parameter is out of range (k, offset, fusion, filters).
    #[error("{0}")]
    BadRequest(String),
    /// The keyword query is too long, too deeply nested, or names a field that cannot be queried.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("no index yet: run `vitrine index` or POST /v1/ingest first")]
    NoIndex,
    #[error("product {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("keyword index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The index's relevance settings file cannot be used (see [`relevance`]).
    #[error("{path}: {message}; remove it or run `vitrine tune` again")]
    InvalidSettings { path: PathBuf, message: String },
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

/// Characters in a keyword query.
pub const MAX_QUERY_CHARS: usize = 1_000;
/// Parentheses open at once in a keyword query. tantivy's query grammar recurses once per level,
/// so an unbounded depth overflows the stack of the thread that parses it.
pub const MAX_QUERY_NESTING: usize = 8;

/// The keyword query limits, checked before tantivy parses anything: at most
/// [`MAX_QUERY_CHARS`] characters, [`MAX_QUERY_NESTING`] levels of parentheses, and `field:`
/// prefixes only for fields a shopper may search (`title:`, `description:`, …; others, such as
/// `id:` or `price:`, are refused rather than left to fail inside the index).
pub fn validate_keyword_query(text: &str) -> Result<()> {
    let invalid = |m: String| Err(SearchError::InvalidQuery(m));
    if text.chars().count() > MAX_QUERY_CHARS {
        return invalid(format!("q is longer than {MAX_QUERY_CHARS} characters"));
    }
    let (mut depth, mut max_depth, mut quoted) = (0usize, 0usize, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            ')' | ']' | '}' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max_depth > MAX_QUERY_NESTING {
        return invalid(format!("q nests parentheses {max_depth} deep; at most {MAX_QUERY_NESTING}"));
    }
    // `NOT NOT NOT …` nests too: the grammar recurses once per operator.
    let (mut run, mut longest) = (0usize, 0usize);
    for word in text.split_whitespace() {
        run = if word == "NOT" { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    if longest > MAX_QUERY_NESTING {
        return invalid(format!("q repeats NOT {longest} times in a row; at most {MAX_QUERY_NESTING}"));
    }
    static FIELDS: std::sync::OnceLock<vitrine_store::keyword::KeywordFields> = std::sync::OnceLock::new();
    let fields = FIELDS.get_or_init(vitrine_store::keyword::KeywordFields::new);
    // The searched text fields, and the exact fields a query may also name (`brand:acme`,
    // `price:[10 TO 20]`). Internal fields (`id`, `ord`, `version`, `doc`, `title_raw`) are not a
    // shopper's to query: `id:*` failed inside the index.
    let searchable: Vec<&str> = fields
        .search_fields()
        .iter()
        .map(|(f, _)| fields.schema.get_field_name(*f))
        .chain(["brand", "category", "attr", "price"])
        .collect();
    for word in text.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '+' | '-' | '"')) {
        let Some((field, _)) = word.split_once(':') else { continue };
        if fields.schema.get_field(field).is_ok() && !searchable.contains(&field) {
            return invalid(format!("the field {field:?} cannot be searched; searchable: {}", searchable.join(", ")));
        }
        // `field:*` asks whether a field is set, which only a fast field can answer (`title:*`,
        // `/:*` failed inside tantivy). Refused here, so that both backends refuse it alike: the
        // engine's full-text search would take it as words.
        let fast = fields.schema.get_field(field).is_ok_and(|f| fields.schema.get_field_entry(f).is_fast());
        if word[field.len() + 1..] == *"*" && !fast {
            return invalid(format!("{field}:* cannot be answered: only brand, category, attr and price can be asked for"));
        }
    }
    Ok(())
}

/// `k` and `offset` within their bounds.
pub fn validate_paging(k: usize, offset: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(SearchError::BadRequest(format!("k must be between 1 and {MAX_K}")));
    }
    if offset > MAX_OFFSET {
        return Err(SearchError::BadRequest(format!("offset must be at most {MAX_OFFSET}")));
    }
    Ok(())
}

/// How hits are ordered. Price orders sort the query's candidates (the fused matches of its
/// candidate window, see [`PAGE_WINDOW`]), not the whole catalog; products without a price go
/// last, and equal prices keep their relevance order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
}

impl std::str::FromStr for Sort {
    type Err = SearchError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "relevance" => Ok(Sort::Relevance),
            "price_asc" => Ok(Sort::PriceAsc),
            "price_desc" => Ok(Sort::PriceDesc),
            other => Err(SearchError::BadRequest(format!("sort {other:?}: use relevance, price_asc or price_desc"))),
        }
    }
}

/// A query. At least one of `image_vector`, `text_vector`, `text` must be set.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub image_vector: Option<Vec<f32>>,
    pub text_vector: Option<Vec<f32>>,
    pub text: Option<String>,
    pub k: usize,
    pub offset: usize,
    pub filters: Filters,
    pub fusion: Fusion,
    pub facets: bool,
    /// Leave this product out (more-like-this).
    pub exclude: Option<String>,
    pub sort: Sort,
    /// Also return each channel's own ranked list (`SearchResult::channels`), for evaluation.
    pub channels: bool,
}

/// One entry of a channel's own ranked list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelHit {
    pub id: String,
    pub score: f32,
}

/// Each channel's ranked list before fusion (after the relevance floor), best first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelLists {
    pub image: Vec<ChannelHit>,
    pub text: Vec<ChannelHit>,
    pub keyword: Vec<ChannelHit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelExplain {
    pub rank: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Explain {
    pub image: Option<ChannelExplain>,
    pub text: Option<ChannelExplain>,
    pub keyword: Option<ChannelExplain>,
    pub fused: f32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub title: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub brand: Option<String>,
    pub category: Option<String>,
    /// Number of stored images (0: text-only product).
    pub images: u16,
    /// Title and description with the query's words in `<mark>`, HTML-escaped otherwise.
    pub highlights: Highlights,
    pub explain: Explain,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PriceBucket {
    pub min: f64,
    pub max: Option<f64>,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Facets {
    pub category: Vec<FacetValue>,
    pub brand: Vec<FacetValue>,
    pub price: Vec<PriceBucket>,
}

/// Where query time went, for the explain/metrics surface. The three channels run concurrently,
/// so `search_ms` (the wall time of the whole search, model excluded) is less than the sum.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Timings {
    pub search_ms: f64,
    pub filter_ms: f64,
    /// Both vector channels (image and text), which run side by side.
    pub vector_ms: f64,
    pub keyword_ms: f64,
    pub fuse_ms: f64,
    pub hydrate_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    /// Candidates after fusion (all channels, after filters) in the candidate windows this page
    /// reached; pages are cut from one stitched order, so `total` only grows when a page reaches
    /// past the first window (see [`PAGE_WINDOW`]).
    pub total: usize,
    pub offset: usize,
    pub k: usize,
    pub facets: Option<Facets>,
    pub generation: u64,
    /// The vector channels scored the filtered set exactly.
    pub exact: bool,
    pub timings: Timings,
    /// Each channel's list, when the query asked for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<ChannelLists>,
}

pub const MAX_K: usize = 200;
pub const MAX_OFFSET: usize = 10_000;
/// Below this share of all products (or this many), filtered vector search is exact: scoring the
/// allowed set from memory beats a graph search that must skip most of what it visits.
const EXACT_SHARE: f64 = 0.25;
const EXACT_MIN: usize = 5_000;

/// Whether a filter allowing `allowed` of `products` is selective enough to score exactly: the one
/// rule for every backend.
pub(crate) fn is_selective(allowed: usize, products: u64) -> bool {
    allowed <= EXACT_MIN.max((products.max(1) as f64 * EXACT_SHARE) as usize)
}
/// Keyword matches considered for facets (fusion takes the channel depth).
const FACET_KEYWORD_DEPTH: usize = 1_000;
/// Products each channel contributes to a query's first candidate window. Every page that ends
/// inside it is cut from the same fused list, so paging is stable and a price sort sorts one set.
/// A page past it doubles the window until it is covered; each deeper window only appends the
/// candidates the earlier ones did not have, so earlier pages never change.
pub const PAGE_WINDOW: usize = 100;

pub struct Searcher {
    data: PathBuf,
    current: ArcSwapOption<Generation>,
    cache: Mutex<SegmentCache>,
    ef_search: usize,
    relevance: ArcSwapOption<relevance::RelevanceSettings>,
    /// The settings file's (modified time, length) when last read, to read it again only on change.
    relevance_stamp: Mutex<Option<(std::time::SystemTime, u64)>>,
    /// The engine backend, when the catalog lives there (then there are no generations).
    engine: Option<vitrine_engine::Engine>,
}

impl Searcher {
    pub fn open(data: &Path, ef_search: usize) -> Result<Self> {
        Self::open_inner(data, ef_search, None)
    }

    /// A searcher on the engine backend. `data` holds only node-local files (`relevance.json`,
    /// the media store when it is not mounted shared).
    pub fn open_engine(data: &Path, engine: vitrine_engine::Engine) -> Result<Self> {
        Self::open_inner(data, 0, Some(engine))
    }

    fn open_inner(data: &Path, ef_search: usize, engine: Option<vitrine_engine::Engine>) -> Result<Self> {
        let s = Searcher {
            data: data.to_path_buf(),
            current: ArcSwapOption::empty(),
            cache: Mutex::new(HashMap::new()),
            ef_search,
            relevance: ArcSwapOption::empty(),
            relevance_stamp: Mutex::new(None),
            engine,
        };
        s.refresh()?;
        Ok(s)
    }

    /// The engine this searcher reads, if the catalog lives in one.
    pub fn engine(&self) -> Option<&vitrine_engine::Engine> {
        self.engine.as_ref()
    }

    /// Whether there is an index to answer from: a live generation, or the engine.
    pub fn has_index(&self) -> bool {
        self.engine.is_some() || self.snapshot().is_some()
    }

    /// The model the index was built with.
    pub fn indexed_model(&self) -> Result<Option<vitrine_core::ModelId>> {
        match &self.engine {
            Some(e) => Ok(e.model()?),
            None => Ok(self.snapshot().map(|g| g.manifest.model.clone())),
        }
    }

    /// The tuned relevance settings of this index ([`relevance`]), whatever model they were
    /// tuned with; [`Searcher::relevance_for`] checks the model.
    pub fn relevance(&self) -> Option<Arc<relevance::RelevanceSettings>> {
        self.relevance.load_full()
    }

    /// The tuned settings, if they were tuned with `model`.
    pub fn relevance_for(&self, model: &vitrine_core::ModelId) -> Option<Arc<relevance::RelevanceSettings>> {
        self.relevance().filter(|r| r.model.same_model(model))
    }

    /// Read `relevance.json` again if it changed. A file that cannot be used is logged and the
    /// previous settings are kept: a bad edit must not take a serving index down.
    fn refresh_relevance(&self) {
        let path = self.data.join(relevance::RELEVANCE_FILE);
        let stamp = std::fs::metadata(&path).ok().map(|m| (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len()));
        let mut last = self.relevance_stamp.lock();
        if *last == stamp {
            return;
        }
        *last = stamp;
        match relevance::RelevanceSettings::load(&self.data) {
            Ok(r) => self.relevance.store(r.map(Arc::new)),
            Err(e) => tracing::warn!("relevance settings not applied: {e}"),
        }
    }

    /// Load the generation `CURRENT` names if it is newer than the one in use. Returns true on a
    /// swap. Never goes back: generation numbers only grow, so an older number is a stale read of
    /// `CURRENT` (another refresh overtook this one) and is ignored.
    pub fn refresh(&self) -> Result<bool> {
        self.refresh_relevance();
        if self.engine.is_some() {
            return Ok(false);
        }
        // Held from the read of `CURRENT` to the swap: two refreshes cannot cross.
        let mut cache = self.cache.lock();
        let Some((dir, manifest)) = generation::current(&self.data)? else { return Ok(false) };
        if let Some(live) = self.current.load().as_ref() {
            if manifest.generation <= live.manifest.generation {
                // Once per refused number: this runs every half second.
                static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let older = manifest.generation < live.manifest.generation;
                if older && REFUSED.swap(manifest.generation, std::sync::atomic::Ordering::Relaxed) != manifest.generation {
                    tracing::warn!(
                        current = manifest.generation,
                        serving = live.manifest.generation,
                        "CURRENT names an older generation than the one served; keeping it"
                    );
                }
                return Ok(false);
            }
        }
        let g = Generation::open(dir, manifest, &mut cache, self.ef_search)?;
        tracing::info!(generation = g.manifest.generation, products = g.manifest.products, "index generation loaded");
        self.current.store(Some(Arc::new(g)));
        Ok(true)
    }

    pub fn snapshot(&self) -> Option<Arc<Generation>> {
        self.current.load_full()
    }

    /// Refresh every `every` on a background thread, for generations written by another process
    /// (`vitrine index`); writes of this process refresh at once. The thread ends with the last
    /// other reference to the searcher.
    pub fn spawn_refresher(self: &Arc<Self>, every: std::time::Duration) {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("refresh".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(s) = weak.upgrade() else { return };
                if let Err(e) = s.refresh() {
                    tracing::warn!("refresh: {e}");
                }
            })
            .expect("thread");
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn product(&self, id: &str) -> Result<StoredProduct> {
        let found = match &self.engine {
            Some(e) => e.get(id)?,
            None => self.snapshot().ok_or(SearchError::NoIndex)?.product(id)?,
        };
        found.ok_or_else(|| SearchError::NotFound(id.to_string()))
    }

    /// A product with its stored vectors (more-like-this), from one consistent view.
    pub fn product_with_vectors(&self, id: &str) -> Result<(StoredProduct, ProductVectors)> {
        match &self.engine {
            Some(e) => {
                let p = e.get(id)?.ok_or_else(|| SearchError::NotFound(id.to_string()))?;
                Ok((p, (e.image_vectors(id)?, e.text_vector(id)?)))
            }
            None => {
                let g = self.snapshot().ok_or(SearchError::NoIndex)?;
                let p = g.product(id)?.ok_or_else(|| SearchError::NotFound(id.to_string()))?;
                let vectors = self.product_vectors(&g, id)?;
                Ok((p, vectors))
            }
        }
    }

    /// Products for paging through the catalog (admin): those matching `text` best first, else
    /// all by ordinal. Returns the page and the total.
    pub fn list_products(&self, text: Option<&str>, offset: usize, limit: usize) -> Result<(Vec<StoredProduct>, usize)> {
        match &self.engine {
            Some(e) => {
                let text = text.map(str::trim).filter(|t| !t.is_empty());
                if let Some(t) = text {
                    validate_keyword_query(t)?;
                }
                let (page, total) = e.list_products(text, offset, limit)?;
                Ok((page, total as usize))
            }
            None => list_products(&*self.snapshot().ok_or(SearchError::NoIndex)?, text, offset, limit),
        }
    }

    /// The stored vectors of a product.
    pub fn product_vectors(&self, g: &Generation, id: &str) -> Result<ProductVectors> {
        let p = g.product(id)?.ok_or_else(|| SearchError::NotFound(id.to_string()))?;
        let mut images = vec![];
        let mut text = None;
        for (img, txt) in &g.segments {
            for (i, pt) in img.points.iter().enumerate() {
                if pt.ord == p.ord && pt.version == p.version {
                    images.push(img.vector(i).to_vec());
                }
            }
            if text.is_none() {
                if let Some(i) = txt.points.iter().position(|pt| pt.ord == p.ord && pt.version == p.version) {
                    text = Some(txt.vector(i).to_vec());
                }
            }
        }
        Ok((images, text))
    }

    pub fn search(&self, q: &SearchQuery) -> Result<SearchResult> {
        if let Some(e) = &self.engine {
            return search_corpus(&engine::EngineCorpus(e), q);
        }
        let g = self.snapshot().ok_or(SearchError::NoIndex)?;
        search_generation(&g, q)
    }
}

/// A product's image vectors and its text vector.
pub type ProductVectors = (Vec<Vec<f32>>, Option<Vec<f32>>);

/// Collects the `ord` fast field of every matching document.
struct OrdCollector;

struct OrdSegment {
    ords: tantivy::columnar::Column<u64>,
    out: Vec<u64>,
}

impl Collector for OrdCollector {
    type Fruit = Vec<u64>;
    type Child = OrdSegment;
    fn for_segment(&self, _: SegmentOrdinal, seg: &SegmentReader) -> tantivy::Result<OrdSegment> {
        Ok(OrdSegment { ords: seg.fast_fields().u64("ord")?, out: vec![] })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        Ok(fruits.concat())
    }
}

impl SegmentCollector for OrdSegment {
    type Fruit = Vec<u64>;
    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(o) = self.ords.first(doc) {
            self.out.push(o);
        }
    }
    fn harvest(self) -> Vec<u64> {
        self.out
    }
}

fn filter_query(g: &Generation, f: &Filters) -> Result<Option<Box<dyn Query>>> {
    if f.is_empty() {
        return Ok(None);
    }
    let fl = &g.fields;
    let mut must: Vec<(Occur, Box<dyn Query>)> = vec![];
    let any_of = |field, values: &[String]| -> Box<dyn Query> {
        let should = values
            .iter()
            .map(|v| {
                (
                    Occur::Should,
                    Box::new(TermQuery::new(Term::from_field_text(field, v), IndexRecordOption::Basic)) as Box<dyn Query>,
                )
            })
            .collect();
        Box::new(BooleanQuery::new(should))
    };
    if !f.category.is_empty() {
        must.push((Occur::Must, any_of(fl.category, &f.category)));
    }
    if !f.brand.is_empty() {
        must.push((Occur::Must, any_of(fl.brand, &f.brand)));
    }
    if let Some(p) = f.price {
        let lo = p.min.map(|v| Bound::Included(Term::from_field_f64(fl.price, v))).unwrap_or(Bound::Unbounded);
        let hi = p.max.map(|v| Bound::Included(Term::from_field_f64(fl.price, v))).unwrap_or(Bound::Unbounded);
        must.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
    }
    for (k, values) in &f.attributes {
        let terms: Vec<String> = values.iter().map(|v| attr_term(k, v)).collect();
        if !terms.is_empty() {
            must.push((Occur::Must, any_of(fl.attr, &terms)));
        }
    }
    Ok(Some(Box::new(BooleanQuery::new(must))))
}

/// A candidate list of one channel: (ord, raw score), best first.
use corpus::Ranked;

/// Best score per product over points, in descending order, at most `depth` products.
fn vector_channel(
    g: &Generation,
    pick: impl Fn(&(Arc<VectorIndex>, Arc<VectorIndex>)) -> &Arc<VectorIndex>,
    q: &[f32],
    depth: usize,
    allowed: Option<&[bool]>,
    exact: bool,
) -> Result<Ranked> {
    let mut best: HashMap<u64, f32> = HashMap::new();
    // Some products have several images; fetch extra points so `depth` distinct products survive.
    let fetch = depth + depth / 2;
    for seg in &g.segments {
        let idx = pick(seg);
        if idx.is_empty() {
            continue;
        }
        let accept = |i: usize| {
            let p = &idx.points[i];
            g.alive(p) && allowed.is_none_or(|a| a.get(p.ord as usize).copied().unwrap_or(false))
        };
        let hits = if exact { idx.exact(q, fetch, &accept) } else { idx.search(q, fetch, &accept) };
        for (i, s) in hits {
            let ord = idx.points[i].ord;
            let e = best.entry(ord).or_insert(f32::NEG_INFINITY);
            *e = e.max(s);
        }
    }
    let mut v: Vec<(usize, f32)> = best.into_iter().map(|(o, s)| (o as usize, s)).collect();
    top_k(&mut v, depth);
    Ok(v.into_iter().map(|(o, s)| (o as u64, s)).collect())
}

fn keyword_channel(g: &Generation, text: &str, filter: Option<&dyn Query>, depth: usize) -> Result<Ranked> {
    validate_keyword_query(text)?;
    let fl = &g.fields;
    let mut parser = QueryParser::for_index(&g.index, fl.search_fields().iter().map(|(f, _)| *f).collect());
    for (f, boost) in fl.search_fields() {
        parser.set_field_boost(f, boost);
    }
    // Lenient parsing: quotes, colons, parentheses, AND, *, ~ never fail a query.
    let (parsed, _errors) = parser.parse_query_lenient(text);
    let typos = typo_clauses(g, text)?;
    let user: Box<dyn Query> = if typos.is_empty() {
        parsed
    } else {
        Box::new(BooleanQuery::new(
            std::iter::once((Occur::Should, parsed)).chain(typos.into_iter().map(|q| (Occur::Should, q))).collect(),
        ))
    };
    let query: Box<dyn Query> = match filter {
        Some(f) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, user),
            (Occur::Must, Box::new(ConstScoreQuery::new(f.box_clone(), 0.0))),
        ])),
        None => user,
    };
    // A query the schema cannot answer is the query's fault, not the server's: `title:*` asks for
    // an exists query on a field that is not a fast field, `/:*` on a field that does not exist
    // (both found by tests/it/fuzz.rs; the lenient parser lets them through).
    let top = g.searcher.search(&*query, &TopDocs::with_limit(depth).order_by_score()).map_err(|e| match e {
        tantivy::TantivyError::SchemaError(m) | tantivy::TantivyError::FieldNotFound(m) => {
            SearchError::InvalidQuery(format!("the index cannot answer this query: {m}"))
        }
        other => other.into(),
    })?;
    let mut out = Vec::with_capacity(top.len());
    let mut cols: HashMap<u32, tantivy::columnar::Column<u64>> = HashMap::new();
    for (score, addr) in top {
        let col = match cols.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(g.searcher.segment_reader(addr.segment_ord).fast_fields().u64("ord")?)
            }
        };
        if let Some(o) = col.first(addr.doc_id) {
            out.push((o, score));
        }
    }
    Ok(out)
}

/// Typo tolerance: each query word that no product title contains matches titles within one edit
/// (a transposition counts as one) on the raw, unstemmed title, with a constant score of 0.5. Words
/// the catalog knows get no fuzzy clause: it would only add near-misses of a word that already
/// matches, and a fuzzy clause walks the term dictionary and keeps tantivy from pruning the whole
/// query with block-max WAND, which made it the most expensive part of a keyword search.
fn typo_clauses(g: &Generation, text: &str) -> Result<Vec<Box<dyn Query>>> {
    let mut clauses: Vec<Box<dyn Query>> = Vec::new();
    for word in typo_words(g, text)? {
        let fuzzy = FuzzyTermQuery::new(Term::from_field_text(g.fields.title_raw, &word), 1, true);
        clauses.push(Box::new(BoostQuery::new(Box::new(ConstScoreQuery::new(Box::new(fuzzy), 1.0)), 0.5)));
    }
    Ok(clauses)
}

/// The query words that get typo tolerance (see [`typo_clauses`]): the store's
/// [`vitrine_store::keyword::typo_candidates`] that no title contains. Highlighting marks their
/// matches too.
pub(crate) fn typo_words(g: &Generation, text: &str) -> Result<Vec<String>> {
    let mut out = vec![];
    for word in vitrine_store::keyword::typo_candidates(text) {
        if g.searcher.doc_freq(&Term::from_field_text(g.fields.title_raw, &word))? == 0 {
            out.push(word);
        }
    }
    Ok(out)
}

/// Run a query on one generation.
///
/// Pages are cut from one stitched order: the fused candidates of the first [`PAGE_WINDOW`], then
/// those a doubled window adds, and so on until the page is covered. A price sort sorts each
/// window's candidates. Facets count the first window's candidates; each facet with a selection
/// is counted with its own selection removed (disjunctive faceting), so its other values stay
/// visible with the counts they would have if chosen as well.
pub fn search_generation(g: &Generation, q: &SearchQuery) -> Result<SearchResult> {
    search_corpus(g, q)
}

/// Run a query on a [`Corpus`]: the paging, sorting, explain, facets and hydration every backend
/// shares (see [`search_generation`]).
pub(crate) fn search_corpus<C: Corpus + ?Sized>(g: &C, q: &SearchQuery) -> Result<SearchResult> {
    validate_paging(q.k, q.offset)?;
    q.fusion.validate().map_err(|e| SearchError::BadRequest(e.to_string()))?;
    q.filters.validate().map_err(SearchError::BadRequest)?;
    let text = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
    if q.image_vector.is_none() && q.text_vector.is_none() && text.is_none() {
        return Err(SearchError::BadRequest("a query needs text (q) or an image".into()));
    }
    let mut timings = Timings::default();
    let t0 = Instant::now();
    let needed = q.offset + q.k;
    let mut order: Vec<(u64, Explain)> = vec![];
    let mut seen: HashSet<u64> = HashSet::new();
    let mut first: Option<Retrieval> = None;
    let mut depth = PAGE_WINDOW;
    loop {
        let mut r = retrieve(g, q, &q.filters, depth, text)?;
        timings.filter_ms += r.filter_ms;
        timings.vector_ms += r.vector_ms;
        timings.keyword_ms += r.keyword_ms;
        let t = Instant::now();
        sort_candidates(g, &mut r.fused, q.sort)?;
        let rank_of = |list: &Ranked| -> HashMap<u64, ChannelExplain> {
            list.iter().enumerate().map(|(i, (o, s))| (*o, ChannelExplain { rank: i + 1, score: *s })).collect()
        };
        let (ri, rt, rk) = (rank_of(&r.image), rank_of(&r.text), rank_of(&r.keyword));
        for (ord, score) in &r.fused {
            if seen.insert(*ord) {
                let explain = Explain {
                    image: ri.get(ord).copied(),
                    text: rt.get(ord).copied(),
                    keyword: rk.get(ord).copied(),
                    fused: *score,
                };
                order.push((*ord, explain));
            }
        }
        timings.fuse_ms += r.fuse_ms + ms(t);
        let more = r.more;
        first.get_or_insert(r);
        if order.len() >= needed || !more || depth > MAX_OFFSET {
            break;
        }
        depth *= 2;
    }
    let first = first.expect("the loop runs once");

    let t3 = Instant::now();
    let facets = if q.facets { Some(disjunctive_facets(g, q, text, &first)?) } else { None };
    timings.fuse_ms += ms(t3);

    let t4 = Instant::now();
    let mut highlighter = g.highlighter(text)?;
    let page: Vec<&(u64, Explain)> = order.iter().skip(q.offset).take(q.k).collect();
    let mut products = g.products(&page.iter().map(|(o, _)| *o).collect::<Vec<_>>())?;
    let mut hits = vec![];
    for (ord, explain) in page {
        let Some(sp) = products.remove(ord) else { continue };
        let p = sp.product;
        let highlights = highlighter.highlight(p.title.as_deref(), p.description.as_deref());
        hits.push(Hit {
            id: p.id,
            score: explain.fused,
            title: p.title,
            price: p.price,
            currency: p.currency,
            brand: p.brand,
            category: p.category,
            images: sp.image_vectors,
            highlights,
            explain: explain.clone(),
        });
    }
    let channels = if q.channels {
        let ids = |list: &Ranked| -> Result<Vec<ChannelHit>> {
            let products = g.products(&list.iter().map(|(o, _)| *o).collect::<Vec<_>>())?;
            Ok(list
                .iter()
                .filter_map(|(ord, score)| products.get(ord).map(|p| ChannelHit { id: p.product.id.clone(), score: *score }))
                .collect())
        };
        Some(ChannelLists { image: ids(&first.image)?, text: ids(&first.text)?, keyword: ids(&first.keyword)? })
    } else {
        None
    };
    timings.hydrate_ms = ms(t4);
    timings.search_ms = ms(t0);
    Ok(SearchResult {
        hits,
        total: order.len(),
        offset: q.offset,
        k: q.k,
        facets,
        generation: g.generation(),
        exact: first.exact,
        timings,
        channels,
    })
}

/// One retrieval: every channel at one depth under one filter, fused.
struct Retrieval {
    fused: Ranked,
    image: Ranked,
    text: Ranked,
    keyword: Ranked,
    exact: bool,
    /// Some channel filled its depth: a deeper window may find more.
    more: bool,
    filter_ms: f64,
    vector_ms: f64,
    keyword_ms: f64,
    fuse_ms: f64,
}

/// Run the channels of `q` under `filters`, each to `depth` products, and fuse them. Which
/// channels run, their floors and the fusion are decided here, once for every [`Corpus`].
fn retrieve<C: Corpus + ?Sized>(
    c: &C,
    q: &SearchQuery,
    filters: &Filters,
    depth: usize,
    text: Option<&str>,
) -> Result<Retrieval> {
    let w = q.fusion.weights_for(q.image_vector.is_some(), text.is_some());
    let image_q = q.image_vector.as_ref().or(q.text_vector.as_ref()).filter(|_| w.image > 0.0);
    let text_q = q.text_vector.as_ref().or(q.image_vector.as_ref()).filter(|_| w.text > 0.0);
    let kdepth = if q.facets { FACET_KEYWORD_DEPTH.max(depth) } else { depth };
    let request = ChannelRequest {
        image: image_q.map(|v| &v[..]),
        text: text_q.map(|v| &v[..]),
        keyword: text.filter(|_| w.keyword > 0.0),
        filters,
        exclude: q.exclude.as_deref(),
        depth,
        keyword_depth: kdepth,
    };
    let Channels { mut image, text: mut text_ch, keyword, exact, excluded, filter_ms, vector_ms, keyword_ms } =
        c.channels(&request)?;
    // The relevance floor, by the modality of the vector each channel was queried with.
    let floor = q.fusion.floor.unwrap_or_default();
    let image_by = if q.image_vector.is_some() { Modality::Photo } else { Modality::Text };
    let text_by = if q.text_vector.is_some() { Modality::Text } else { Modality::Photo };
    apply_floor(&mut image, floor.get(image_by, VectorChannel::Image));
    apply_floor(&mut text_ch, floor.get(text_by, VectorChannel::Text));

    let t3 = Instant::now();
    let channels: [(&[(u64, f32)], f32); 3] = [(&image, w.image), (&text_ch, w.text), (&keyword, w.keyword)];
    let fused = match q.fusion.mode {
        FusionMode::Rrf => fusion::rrf(&channels, q.fusion.k),
        FusionMode::Weighted => fusion::weighted(&channels, q.fusion.normalization),
    };
    // The excluded product takes a place in the keyword list's depth.
    let more = image.len() >= depth || text_ch.len() >= depth || keyword.len() + usize::from(excluded) >= kdepth;
    Ok(Retrieval { fused, image, text: text_ch, keyword, exact, more, filter_ms, vector_ms, keyword_ms, fuse_ms: ms(t3) })
}

impl Corpus for Generation {
    /// Filters are evaluated once by tantivy into a bitset over ordinals that every channel
    /// applies during retrieval; a small allowed set is scored exactly.
    fn channels(&self, r: &ChannelRequest) -> Result<Channels> {
        let g = self;
        let t0 = Instant::now();
        let fq = filter_query(g, r.filters)?;
        // The allowed products as a bitset over ordinals.
        let mut allowed: Option<Vec<bool>> = None;
        let mut allowed_count = 0;
        if let Some(f) = &fq {
            let mut bits = vec![false; g.live.len()];
            for o in g.searcher.search(&**f, &OrdCollector)? {
                if let Some(b) = bits.get_mut(o as usize) {
                    allowed_count += usize::from(!*b);
                    *b = true;
                }
            }
            allowed = Some(bits);
        }
        let exclude_ord = match r.exclude {
            Some(id) => g.product(id)?.map(|p| p.ord),
            None => None,
        };
        if let Some(o) = exclude_ord {
            // Excluding one product is a filter over everything else.
            let bits = allowed.get_or_insert_with(|| g.live.iter().map(|v| *v != 0).collect());
            if let Some(b) = bits.get_mut(o as usize) {
                *b = false;
            }
        }
        let exact = fq.is_some() && is_selective(allowed_count, g.manifest.products);
        let filter_ms = ms(t0);

        let vectors = || {
            let t = Instant::now();
            // The two vector channels are independent of each other and of the keyword channel.
            let (image_ch, text_ch) = rayon::join(
                || match r.image {
                    Some(v) => vector_channel(g, |s| &s.0, v, r.depth, allowed.as_deref(), exact),
                    None => Ok(vec![]),
                },
                || match r.text {
                    Some(v) => vector_channel(g, |s| &s.1, v, r.depth, allowed.as_deref(), exact),
                    None => Ok(vec![]),
                },
            );
            Ok::<_, SearchError>((image_ch?, text_ch?, ms(t)))
        };
        let keywords = || {
            let t = Instant::now();
            let ch = match r.keyword {
                Some(text) => {
                    let mut ranked = keyword_channel(g, text, fq.as_deref(), r.keyword_depth)?;
                    if let Some(o) = exclude_ord {
                        ranked.retain(|(x, _)| *x != o);
                    }
                    ranked
                }
                None => vec![],
            };
            Ok::<_, SearchError>((ch, ms(t)))
        };
        let (v, k) = rayon::join(vectors, keywords);
        let ((image, text, vector_ms), (keyword, keyword_ms)) = (v?, k?);
        Ok(Channels { image, text, keyword, exact, excluded: exclude_ord.is_some(), filter_ms, vector_ms, keyword_ms })
    }

    fn prices(&self, ords: &[u64]) -> Result<Vec<Option<f64>>> {
        prices(self, ords.iter().copied())
    }

    fn count_facets(&self, ords: &[u64]) -> Result<Facets> {
        count_facets(self, ords.iter().copied())
    }

    fn products(&self, ords: &[u64]) -> Result<HashMap<u64, StoredProduct>> {
        let mut out = HashMap::with_capacity(ords.len());
        for &ord in ords {
            if let Some(p) = self.product_by_ord(ord)? {
                out.insert(ord, p);
            }
        }
        Ok(out)
    }

    fn highlighter(&self, text: Option<&str>) -> Result<highlight::Highlighter> {
        highlight::Highlighter::new(self, text)
    }

    fn generation(&self) -> u64 {
        self.manifest.generation
    }
}

/// Order candidates by `sort`: relevance keeps the fused order; a price order is a stable sort
/// (equal prices keep their fused order), with products that have no price last.
fn sort_candidates<C: Corpus + ?Sized>(c: &C, fused: &mut Ranked, sort: Sort) -> Result<()> {
    if sort == Sort::Relevance {
        return Ok(());
    }
    let ords: Vec<u64> = fused.iter().map(|(o, _)| *o).collect();
    let prices = c.prices(&ords)?;
    let mut keyed: Vec<(Option<f64>, (u64, f32))> = prices.into_iter().zip(fused.drain(..)).collect();
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(a), Some(b)) if sort == Sort::PriceAsc => a.total_cmp(b),
        (Some(a), Some(b)) => b.total_cmp(a),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    fused.extend(keyed.into_iter().map(|(_, c)| c));
    Ok(())
}

/// The price of each product (by ord), from the keyword index's fast field.
fn prices(g: &Generation, ords: impl Iterator<Item = u64>) -> Result<Vec<Option<f64>>> {
    let mut cols: HashMap<u32, tantivy::columnar::Column<f64>> = HashMap::new();
    let mut out = vec![];
    for ord in ords {
        let Some(addr): Option<DocAddress> = g.docs.get(ord as usize).copied().flatten() else {
            out.push(None);
            continue;
        };
        let col = match cols.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(g.searcher.segment_reader(addr.segment_ord).fast_fields().f64("price")?)
            }
        };
        out.push(col.first(addr.doc_id).filter(|p| p.is_finite()));
    }
    Ok(out)
}

/// Facets of the first candidate window, with each selected facet recounted without its own
/// selection (the recounts run side by side, one retrieval each).
fn disjunctive_facets<C: Corpus + ?Sized>(c: &C, q: &SearchQuery, text: Option<&str>, first: &Retrieval) -> Result<Facets> {
    let ords = |r: &Retrieval| r.fused.iter().map(|(o, _)| *o).collect::<Vec<u64>>();
    let mut facets = c.count_facets(&ords(first))?;
    #[derive(Clone, Copy)]
    enum Kind {
        Category,
        Brand,
        Price,
    }
    let f = &q.filters;
    let relaxed: Vec<(Kind, Filters)> = [
        (!f.category.is_empty()).then(|| (Kind::Category, Filters { category: vec![], ..f.clone() })),
        (!f.brand.is_empty()).then(|| (Kind::Brand, Filters { brand: vec![], ..f.clone() })),
        f.price.is_some().then(|| (Kind::Price, Filters { price: None, ..f.clone() })),
    ]
    .into_iter()
    .flatten()
    .collect();
    let recounts: Vec<Result<(Kind, Facets)>> = relaxed
        .into_par_iter()
        .map(|(kind, filters)| {
            let r = retrieve(c, q, &filters, PAGE_WINDOW, text)?;
            Ok((kind, c.count_facets(&ords(&r))?))
        })
        .collect();
    for r in recounts {
        let (kind, counted) = r?;
        match kind {
            Kind::Category => facets.category = counted.category,
            Kind::Brand => facets.brand = counted.brand,
            Kind::Price => facets.price = counted.price,
        }
    }
    Ok(facets)
}

/// Drop a channel's hits below its floor (the list is best first, so this cuts its tail).
fn apply_floor(list: &mut Ranked, floor: Option<f32>) {
    if let Some(f) = floor {
        let keep = list.iter().position(|(_, s)| *s < f).unwrap_or(list.len());
        list.truncate(keep);
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Upper edges of the price buckets; the last bucket is open.
pub const PRICE_EDGES: [f64; 6] = [10.0, 25.0, 50.0, 100.0, 250.0, 500.0];

/// Count categories, brands and price buckets over products (by ord), from the keyword index's
/// fast fields.
pub fn count_facets(g: &Generation, ords: impl Iterator<Item = u64>) -> Result<Facets> {
    let mut tally = FacetTally::default();
    struct Cols {
        cat: Option<tantivy::columnar::StrColumn>,
        brand: Option<tantivy::columnar::StrColumn>,
        price: tantivy::columnar::Column<f64>,
    }
    let mut cols: HashMap<u32, Cols> = HashMap::new();
    let mut s = String::new();
    for ord in ords {
        let Some(addr): Option<DocAddress> = g.docs.get(ord as usize).copied().flatten() else { continue };
        if let std::collections::hash_map::Entry::Vacant(e) = cols.entry(addr.segment_ord) {
            let ff = g.searcher.segment_reader(addr.segment_ord).fast_fields();
            e.insert(Cols { cat: ff.str("category")?, brand: ff.str("brand")?, price: ff.f64("price")? });
        }
        let c = &cols[&addr.segment_ord];
        for (col, brand) in [(&c.cat, false), (&c.brand, true)] {
            if let Some(col) = col {
                for t in col.term_ords(addr.doc_id) {
                    s.clear();
                    if col.ord_to_str(t, &mut s).unwrap_or(false) {
                        if brand {
                            tally.brand(&s);
                        } else {
                            tally.category(&s);
                        }
                    }
                }
            }
        }
        tally.price(c.price.first(addr.doc_id));
    }
    Ok(tally.facets())
}

/// Facet counts as they accumulate: the one bucketing and ordering rule for every backend.
#[derive(Default)]
pub(crate) struct FacetTally {
    categories: HashMap<String, u64>,
    brands: HashMap<String, u64>,
    buckets: [u64; PRICE_EDGES.len() + 1],
}

impl FacetTally {
    pub(crate) fn category(&mut self, v: &str) {
        *self.categories.entry(v.to_string()).or_default() += 1;
    }

    pub(crate) fn brand(&mut self, v: &str) {
        *self.brands.entry(v.to_string()).or_default() += 1;
    }

    pub(crate) fn price(&mut self, p: Option<f64>) {
        if let Some(p) = p.filter(|p| p.is_finite()) {
            let b = PRICE_EDGES.iter().position(|edge| p < *edge).unwrap_or(PRICE_EDGES.len());
            self.buckets[b] += 1;
        }
    }

    /// Values by count (then by value), and the non-empty price buckets.
    pub(crate) fn facets(self) -> Facets {
        let sorted = |m: HashMap<String, u64>| {
            let mut v: Vec<FacetValue> = m.into_iter().map(|(value, count)| FacetValue { value, count }).collect();
            v.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
            v
        };
        let price = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| PriceBucket {
                min: if i == 0 { 0.0 } else { PRICE_EDGES[i - 1] },
                max: PRICE_EDGES.get(i).copied(),
                count: *c,
            })
            .collect();
        Facets { category: sorted(self.categories), brand: sorted(self.brands), price }
    }
}

/// All products matching the filters, for paging through the catalog (admin).
pub fn list_products(g: &Generation, text: Option<&str>, offset: usize, limit: usize) -> Result<(Vec<StoredProduct>, usize)> {
    let (ords, total): (Vec<u64>, usize) = match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => {
            let r = keyword_channel(g, t, None, FACET_KEYWORD_DEPTH)?;
            let total = r.len();
            (r.into_iter().map(|(o, _)| o).collect(), total)
        }
        None => {
            let mut ords = g.searcher.search(&AllQuery, &OrdCollector)?;
            ords.sort_unstable();
            let total = ords.len();
            (ords, total)
        }
    };
    let mut out = vec![];
    for o in ords.into_iter().skip(offset).take(limit) {
        if let Some(p) = g.product_by_ord(o)? {
            out.push(p);
        }
    }
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_limits() {
        assert!(validate_keyword_query("red (leather OR suede) bag").is_ok());
        assert!(validate_keyword_query(&format!("{}a{}", "(".repeat(MAX_QUERY_NESTING), ")".repeat(MAX_QUERY_NESTING))).is_ok());
        let deep = format!("{}a", "(".repeat(MAX_QUERY_NESTING + 1));
        assert!(matches!(validate_keyword_query(&deep), Err(SearchError::InvalidQuery(_))));
        // Parentheses inside a phrase are words, not nesting.
        assert!(validate_keyword_query(&format!("\"{}\"", "(".repeat(50))).is_ok());
        assert!(matches!(validate_keyword_query(&"a".repeat(MAX_QUERY_CHARS + 1)), Err(SearchError::InvalidQuery(_))));
        let nots = format!("{}a", "NOT ".repeat(MAX_QUERY_NESTING + 1));
        assert!(matches!(validate_keyword_query(&nots), Err(SearchError::InvalidQuery(_))));
        assert!(validate_keyword_query(&"a NOT b ".repeat(100)).is_ok(), "NOT between words does not nest");
        for bad in ["id:*", "title_raw:x", "doc:x", "ord:1", "red version:2", "title:* mug", "/:*", "nosuchfield:*"] {
            assert!(matches!(validate_keyword_query(bad), Err(SearchError::InvalidQuery(_))), "{bad}");
        }
        for ok in ["title:mug", "brand:acme", "price:[1 TO 5]", "ratio 16:9", "unknown:field", "brand:*", "price:*"] {
            assert!(validate_keyword_query(ok).is_ok(), "{ok}");
        }
    }

    /// Every query that passes the limits parses on a thread with a small stack: the limits, not
    /// luck, keep tantivy's recursive grammar in bounds.
    #[test]
    fn accepted_queries_parse_within_a_small_stack() {
        let index = tantivy::Index::create_in_ram(vitrine_store::keyword::KeywordFields::new().schema);
        let fields = vitrine_store::keyword::KeywordFields::new();
        let worst: Vec<String> = ["(", "[", "{", "-", "+", "NOT ", "\"", "a AND ", "a OR ", "~", "^", ":", "*", "\\"]
            .iter()
            .flat_map(|op| {
                let n = MAX_QUERY_CHARS / op.len();
                vec![op.repeat(n), format!("{}a", op.repeat(n - 1)), format!("{}a", op.repeat(MAX_QUERY_NESTING))]
            })
            .collect();
        let accepted: Vec<String> = worst.into_iter().filter(|q| validate_keyword_query(q).is_ok()).collect();
        assert!(accepted.len() > 20, "the limits should accept most of these");
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let parser = QueryParser::for_index(&index, fields.search_fields().iter().map(|(f, _)| *f).collect());
                for q in &accepted {
                    let _ = parser.parse_query_lenient(q);
                }
            })
            .unwrap()
            .join()
            .expect("parsing overflowed a 256 KiB stack");
    }
}

#[cfg(test)]
mod refresh_tests {
    use vitrine_core::catalog::Product;
    use vitrine_model::{Embedder, FakeEmbedder};
    use vitrine_store::generation::{atomic_write, build_next, BuildOptions, CURRENT_FILE};
    use vitrine_store::store::{ProductWrite, Store};

    use super::*;

    fn put(store: &Store, e: &FakeEmbedder, id: &str) {
        let v = e.embed_texts(&[id]).unwrap().remove(0);
        let stored = StoredProduct {
            product: Product { id: id.into(), title: Some(id.into()), ..Default::default() },
            ord: store.ordinal_for(id).unwrap(),
            version: store.next_seq().unwrap(),
            hash: id.into(),
            image_vectors: 0,
            has_text_vector: true,
            image_errors: vec![],
            media: vec![],
            updated_at: 0,
            auto: Default::default(),
        };
        store.put(ProductWrite { stored, image_vectors: vec![], text_vector: Some(v) }).unwrap();
    }

    /// Pages past the first candidate window append to the order instead of re-ranking it: no
    /// product is repeated or skipped across pages, and the first window's pages never change.
    #[test]
    fn pages_past_the_first_window_extend_one_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let e = FakeEmbedder::new(16);
        let store = Store::open(&data.join("store")).unwrap();
        let n = PAGE_WINDOW * 3 + 17;
        for i in 0..n {
            put(&store, &e, &format!("p{i:04} {}", if i % 3 == 0 { "red" } else { "blue" }));
        }
        build_next(data, &store, "store", e.model_id(), &BuildOptions::default()).unwrap().unwrap();
        let s = Searcher::open(data, 16).unwrap();
        let v = e.embed_texts(&["red"]).unwrap().remove(0);
        let q = |k, offset, sort| SearchQuery {
            text: Some("red".into()),
            text_vector: Some(v.clone()),
            k,
            offset,
            sort,
            ..Default::default()
        };
        for sort in [Sort::Relevance, Sort::PriceAsc] {
            let first = s.search(&q(MAX_K, 0, sort)).unwrap();
            let first_ids: Vec<String> = first.hits.iter().map(|h| h.id.clone()).collect();
            let mut paged: Vec<String> = vec![];
            for offset in (0..n).step_by(40) {
                paged.extend(s.search(&q(40, offset, sort)).unwrap().hits.into_iter().map(|h| h.id));
            }
            let mut unique = paged.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), paged.len(), "{sort:?}: a product came back on two pages");
            assert_eq!(paged.len(), n, "{sort:?}: every product is reached by paging");
            assert_eq!(paged[..PAGE_WINDOW], first_ids[..PAGE_WINDOW], "{sort:?}: the first window's pages never change");
        }
    }

    #[test]
    fn refresh_never_goes_back_to_an_older_generation() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let e = FakeEmbedder::new(16);
        let store = Store::open(&data.join("store")).unwrap();
        let build = || build_next(data, &store, "store", e.model_id(), &BuildOptions::default()).unwrap().unwrap().generation;
        put(&store, &e, "a");
        assert_eq!(build(), 1);
        put(&store, &e, "b");
        assert_eq!(build(), 2);
        let s = Searcher::open(data, 16).unwrap();
        assert_eq!(s.snapshot().unwrap().manifest.generation, 2);
        // A stale `CURRENT` (as a refresh that read it before the last swap would see it).
        atomic_write(&data.join(CURRENT_FILE), b"gen-00000001").unwrap();
        assert!(!s.refresh().unwrap());
        assert_eq!(s.snapshot().unwrap().manifest.generation, 2, "kept the newer generation");
        assert_eq!(s.snapshot().unwrap().manifest.products, 2);
        atomic_write(&data.join(CURRENT_FILE), b"gen-00000002").unwrap();
        put(&store, &e, "c");
        assert_eq!(build(), 3);
        assert!(s.refresh().unwrap());
        assert_eq!(s.snapshot().unwrap().manifest.products, 3);
        assert!(!s.refresh().unwrap(), "nothing new");
    }
}
