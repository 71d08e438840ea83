//! Search on the engine backend: a [`Corpus`] over `vitrine-engine`'s SQL.
//!
//! Each channel is one SQL query with the filters in its `WHERE` (inside retrieval, as on the
//! embedded index); the three run side by side on pooled connections. Whether the vector channels
//! score exactly follows the same rule as the embedded index ([`crate::is_selective`]), from a
//! count of the filtered set. Fusion, floors, paging, facets and explain are the searcher's own
//! (`search_corpus`), so both backends rank identically given the same channel lists.

use std::collections::HashMap;
use std::time::Instant;

use vitrine_core::catalog::StoredProduct;
use vitrine_engine::{Engine, VectorChannel};

use crate::corpus::{ChannelRequest, Channels, Corpus};
use crate::highlight::Highlighter;
use crate::{is_selective, ms, validate_keyword_query, FacetTally, Facets, Result, SearchError};

impl From<vitrine_engine::EngineError> for SearchError {
    fn from(e: vitrine_engine::EngineError) -> Self {
        if e.is_user_error() {
            SearchError::BadRequest(e.to_string())
        } else {
            SearchError::Core(e.into())
        }
    }
}

/// One query's view of the engine. The engine has no generations: a query sees each channel's
/// committed state when that channel's statement runs.
pub(crate) struct EngineCorpus<'a>(pub &'a Engine);

impl Corpus for EngineCorpus<'_> {
    fn channels(&self, r: &ChannelRequest) -> Result<Channels> {
        let e = self.0;
        let t0 = Instant::now();
        let exact = if r.filters.is_empty() {
            false
        } else {
            let allowed = e.count_matching(r.filters, r.exclude)?;
            is_selective(allowed as usize, e.product_count()?)
        };
        let filter_ms = ms(t0);
        let vector = |ch: VectorChannel, v: Option<&[f32]>| -> Result<Vec<(u64, f32)>> {
            match v {
                Some(v) => Ok(e.vector_channel(ch, v, r.filters, r.exclude, r.depth, exact)?),
                None => Ok(vec![]),
            }
        };
        let vectors = || {
            let t = Instant::now();
            let (image, text) = rayon::join(|| vector(VectorChannel::Image, r.image), || vector(VectorChannel::Text, r.text));
            Ok::<_, SearchError>((image?, text?, ms(t)))
        };
        let keywords = || {
            let t = Instant::now();
            let ch = match r.keyword {
                Some(text) => {
                    // The same bounds as the embedded keyword channel, before any SQL runs.
                    validate_keyword_query(text)?;
                    e.keyword_channel(text, r.filters, r.exclude, r.keyword_depth)?
                }
                None => vec![],
            };
            Ok::<_, SearchError>((ch, ms(t)))
        };
        let (v, k) = rayon::join(vectors, keywords);
        let ((image, text, vector_ms), (keyword, keyword_ms)) = (v?, k?);
        Ok(Channels { image, text, keyword, exact, excluded: r.exclude.is_some(), filter_ms, vector_ms, keyword_ms })
    }

    fn prices(&self, ords: &[u64]) -> Result<Vec<Option<f64>>> {
        let products = self.products(ords)?;
        Ok(ords.iter().map(|o| products.get(o).and_then(|p| p.product.price).filter(|p| p.is_finite())).collect())
    }

    fn count_facets(&self, ords: &[u64]) -> Result<Facets> {
        let mut tally = FacetTally::default();
        for p in self.0.products_by_ord(ords)? {
            if let Some(c) = &p.product.category {
                tally.category(c);
            }
            if let Some(b) = &p.product.brand {
                tally.brand(b);
            }
            tally.price(p.product.price);
        }
        Ok(tally.facets())
    }

    fn products(&self, ords: &[u64]) -> Result<HashMap<u64, StoredProduct>> {
        Ok(self.0.products_by_ord(ords)?.into_iter().map(|p| (p.ord, p)).collect())
    }

    fn highlighter(&self, text: Option<&str>) -> Result<Highlighter> {
        Ok(Highlighter::without_index(text))
    }

    fn generation(&self) -> u64 {
        0
    }
}
