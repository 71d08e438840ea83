//! The seam between a search and what it reads.
//!
//! A search (paging windows, sorting, explain, facets, highlighting, fusion and floors) is the
//! same whatever holds the catalog; only retrieval and hydration differ. [`Corpus`] is that
//! difference: the embedded index's live [`Generation`](vitrine_store::generation::Generation)
//! implements it over tantivy and the vector segments, and the engine backend
//! ([`crate::engine`]) over SQL. Everything above it (`search_corpus`, `retrieve`) is written
//! once.

use std::collections::HashMap;

use vitrine_core::catalog::StoredProduct;
use vitrine_core::Filters;

use crate::highlight::Highlighter;
use crate::{Facets, Result};

/// Products by ordinal with a score, best first.
pub(crate) type Ranked = Vec<(u64, f32)>;

/// What one retrieval asks of a corpus. A channel that is `None` does not run (no query for it,
/// or its fusion weight is zero).
pub(crate) struct ChannelRequest<'a> {
    /// The vector for the image channel (the photo's, else the text's).
    pub image: Option<&'a [f32]>,
    /// The vector for the text channel (the text's, else the photo's).
    pub text: Option<&'a [f32]>,
    /// The keyword query, already trimmed and non-empty.
    pub keyword: Option<&'a str>,
    /// Applied inside every channel's retrieval, never after it.
    pub filters: &'a Filters,
    /// A product id to leave out (more-like-this).
    pub exclude: Option<&'a str>,
    /// Products per vector channel.
    pub depth: usize,
    /// Products for the keyword channel (deeper when facets are counted).
    pub keyword_depth: usize,
}

/// Each channel's ranked list, before floors and fusion.
pub(crate) struct Channels {
    pub image: Ranked,
    pub text: Ranked,
    pub keyword: Ranked,
    /// The vector channels scored the filtered set exactly.
    pub exact: bool,
    /// `exclude` named a product that exists (it took a place in the keyword list's depth).
    pub excluded: bool,
    pub filter_ms: f64,
    pub vector_ms: f64,
    pub keyword_ms: f64,
}

/// What a search reads: one consistent view of the catalog for the whole query.
pub(crate) trait Corpus: Sync {
    /// Run the requested channels under the filters. Selective filters (see
    /// [`crate::is_selective`]) are scored exactly, so they never lose recall.
    fn channels(&self, r: &ChannelRequest) -> Result<Channels>;
    /// The price of each product, `None` when it has none.
    fn prices(&self, ords: &[u64]) -> Result<Vec<Option<f64>>>;
    /// Category, brand and price-bucket counts over these products.
    fn count_facets(&self, ords: &[u64]) -> Result<Facets>;
    /// The products with these ordinals that exist, by ordinal (one round trip where it matters).
    fn products(&self, ords: &[u64]) -> Result<HashMap<u64, StoredProduct>>;
    /// Marks the query's words in titles and descriptions.
    fn highlighter(&self, text: Option<&str>) -> Result<Highlighter>;
    /// The generation number results report (0 where there are no generations).
    fn generation(&self) -> u64;
}
