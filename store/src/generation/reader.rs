//! Opening generations: everything a query needs, loaded once and never changed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use super::{current, idx_err, live_docs, open_keyword, Manifest};
use crate::keyword::KeywordFields;
use crate::vectors::{PointRef, VectorIndex};
use vitrine_core::catalog::StoredProduct;
use vitrine_core::error::Result;

/// The stored product of `id` in a keyword index, if any.
pub fn stored_in_keyword(searcher: &tantivy::Searcher, fields: &KeywordFields, id: &str) -> Result<Option<StoredProduct>> {
    let q = TermQuery::new(Term::from_field_text(fields.id, id), IndexRecordOption::Basic);
    let hits = searcher.search(&q, &TopDocs::with_limit(1).order_by_score()).map_err(|e| idx_err(Path::new("keyword"), e))?;
    match hits.first() {
        Some((_, addr)) => doc_product(searcher, fields, *addr).map(Some),
        None => Ok(None),
    }
}

pub fn doc_product(searcher: &tantivy::Searcher, fields: &KeywordFields, addr: DocAddress) -> Result<StoredProduct> {
    let doc: TantivyDocument = searcher.doc(addr).map_err(|e| idx_err(Path::new("keyword"), e))?;
    let json = doc.get_first(fields.doc).and_then(|v| v.as_str()).unwrap_or("{}");
    serde_json::from_str(json).map_err(|e| idx_err(Path::new("keyword"), e))
}

/// A loaded generation: everything a query needs, immutable.
pub struct Generation {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub fields: KeywordFields,
    pub index: Index,
    pub reader: IndexReader,
    pub searcher: tantivy::Searcher,
    /// (image index, text index) per segment.
    pub segments: Vec<(Arc<VectorIndex>, Arc<VectorIndex>)>,
    /// ord → current version (0: no such product).
    pub live: Vec<u64>,
    /// ord → keyword document.
    pub docs: Vec<Option<DocAddress>>,
}

/// Loaded segments by name, shared between generations (segment files never change, and a
/// segment name is never reused: it carries the number of the generation that wrote it).
pub type SegmentCache = HashMap<String, (Arc<VectorIndex>, Arc<VectorIndex>)>;

impl Generation {
    pub fn open_current(data: &Path, cache: &mut SegmentCache, ef_search: usize) -> Result<Option<Self>> {
        let Some((dir, manifest)) = current(data)? else { return Ok(None) };
        Self::open(dir, manifest, cache, ef_search).map(Some)
    }

    pub fn open(dir: PathBuf, manifest: Manifest, cache: &mut SegmentCache, ef_search: usize) -> Result<Self> {
        let fields = KeywordFields::new();
        let kw = dir.join("keyword");
        let index = open_keyword(&kw, &fields, false)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| idx_err(&kw, e))?;
        let searcher = reader.searcher();
        let mut segments = vec![];
        let mut keep = HashSet::new();
        for s in &manifest.segments {
            keep.insert(s.clone());
            if let Some(pair) = cache.get(s) {
                segments.push(pair.clone());
                continue;
            }
            let sdir = dir.join("segments").join(s);
            let pair = (
                Arc::new(VectorIndex::open(&sdir.join("image"), manifest.model.dim, ef_search)?),
                Arc::new(VectorIndex::open(&sdir.join("text"), manifest.model.dim, ef_search)?),
            );
            cache.insert(s.clone(), pair.clone());
            segments.push(pair);
        }
        cache.retain(|k, _| keep.contains(k));
        let mut live = vec![];
        let mut docs = vec![];
        live_docs(&searcher, &kw, |o, v, addr| {
            let o = o as usize;
            if live.len() <= o {
                live.resize(o + 1, 0);
                docs.resize(o + 1, None);
            }
            live[o] = v;
            docs[o] = Some(addr);
        })?;
        Ok(Generation { dir, manifest, fields, index, reader, searcher, segments, live, docs })
    }

    /// Is this point the current version of a product?
    #[inline]
    pub fn alive(&self, p: &PointRef) -> bool {
        self.live.get(p.ord as usize).is_some_and(|v| *v == p.version && *v != 0)
    }

    pub fn product_by_ord(&self, ord: u64) -> Result<Option<StoredProduct>> {
        match self.docs.get(ord as usize).copied().flatten() {
            Some(addr) => doc_product(&self.searcher, &self.fields, addr).map(Some),
            None => Ok(None),
        }
    }

    pub fn product(&self, id: &str) -> Result<Option<StoredProduct>> {
        stored_in_keyword(&self.searcher, &self.fields, id)
    }
}
