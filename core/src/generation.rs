//! Index generations: immutable, self-contained snapshots of the derived indexes.
//!
//! ```text
//! DATA/CURRENT                       name of the live generation (replaced by atomic rename)
//! DATA/generations/gen-00000007/
//!     manifest.json                  what this generation holds (Manifest)
//!     keyword/                       tantivy index
//!     segments/seg-00000005/{image,text}/   vector indexes (hard links to earlier generations)
//!     segments/seg-00000007/{image,text}/   points changed since the previous generation
//! ```
//!
//! A build starts from the previous generation: it hard-links its files into a temporary folder,
//! applies the store's change log since `applied_seq` (a new small vector segment; delete + add
//! in tantivy, which never rewrites a file in place), renames the folder into place and then
//! swaps `CURRENT`. Readers hold whole generations, so they never see a half-written index. A
//! crash at any point leaves `CURRENT` on a complete generation, and the next build re-applies
//! the change log from that generation's `applied_seq`: the store (sled) is the truth, and a
//! generation is only ever a function of it.
//!
//! Old points of updated or deleted products stay in their segments as tombstones (their version
//! no longer matches the live map); when they pass `tombstone_ratio` of all points, or there are
//! too many segments, the build merges everything into one fresh segment from stored vectors.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::catalog::StoredProduct;
use crate::error::{CoreError, Result};
use crate::keyword::KeywordFields;
use crate::model::ModelId;
use crate::store::Store;
use crate::vectors::{write_index, HnswParams, PointRef, VectorIndex};

pub const CURRENT_FILE: &str = "CURRENT";
pub const GENERATIONS_DIR: &str = "generations";
const KEEP_GENERATIONS: usize = 3;

/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub generation: u64,
    /// Every store change up to this sequence number is in this generation.
    pub applied_seq: u64,
    pub created_at: u64,
    pub model: ModelId,
    /// The store folder (under the data directory) this generation was built from.
    #[serde(default = "default_store")]
    pub store: String,
    pub segments: Vec<String>,
    pub products: u64,
    pub image_points: u64,
    pub text_points: u64,
    /// Points whose product version is still current.
    pub live_points: u64,
}

fn default_store() -> String {
    "store".into()
}

impl Manifest {
    pub fn points(&self) -> u64 {
        self.image_points + self.text_points
    }
    pub fn tombstones(&self) -> u64 {
        self.points().saturating_sub(self.live_points)
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Rebuild every derived index from the store.
    pub full: bool,
    pub hnsw: HnswParams,
    /// Merge when tombstones exceed this share of all points.
    pub tombstone_ratio: f64,
    pub max_segments: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { full: false, hnsw: HnswParams::default(), tombstone_ratio: 0.2, max_segments: 8 }
    }
}

fn io(ctx: &Path, e: std::io::Error) -> CoreError {
    CoreError::io(ctx.display().to_string(), e)
}

fn idx_err(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Index { path: path.to_path_buf(), message: e.to_string() }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The live generation's folder and manifest, if there is one.
pub fn current(data: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let cur = data.join(CURRENT_FILE);
    let name = match std::fs::read_to_string(&cur) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&cur, e)),
    };
    let dir = data.join(GENERATIONS_DIR).join(&name);
    let m = std::fs::read(dir.join("manifest.json")).map_err(|e| io(&dir.join("manifest.json"), e))?;
    let manifest = serde_json::from_slice(&m).map_err(|e| idx_err(&dir, e))?;
    Ok(Some((dir, manifest)))
}

/// Write `bytes` to `path` so that readers see the old or the new content, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Hard-link every file under `src` into `dst` (recursively), skipping tantivy's lock files.
fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| io(src, e))? {
        let entry = entry.map_err(|e| io(src, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        if entry.file_type().map_err(|e| io(&from, e))?.is_dir() {
            link_tree(&from, &to)?;
        } else {
            std::fs::hard_link(&from, &to).or_else(|_| std::fs::copy(&from, &to).map(|_| ())).map_err(|e| io(&to, e))?;
        }
    }
    Ok(())
}

fn open_keyword(dir: &Path, fields: &KeywordFields, create: bool) -> Result<Index> {
    if create {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        Index::create_in_dir(dir, fields.schema.clone()).map_err(|e| idx_err(dir, e))
    } else {
        Index::open_in_dir(dir).map_err(|e| idx_err(dir, e))
    }
}

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

/// What one build did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub generation: u64,
    pub changed: usize,
    pub merged: bool,
}

/// Build the next generation from the store's changes and make it current.
/// Returns `None` when the current generation already has every change.
pub fn build_next(
    data: &Path,
    store: &Store,
    store_name: &str,
    model: &ModelId,
    opts: &BuildOptions,
) -> Result<Option<BuildReport>> {
    let gens = data.join(GENERATIONS_DIR);
    std::fs::create_dir_all(&gens).map_err(|e| io(&gens, e))?;
    // A previous generation that cannot be read is rebuilt from the store.
    let prev = match current(data) {
        Ok(p) => p.filter(|(dir, m)| {
            dir.join("keyword").is_dir() && m.model.content_hash == model.content_hash && m.store == store_name
        }),
        Err(e) => {
            tracing::warn!("current generation unreadable ({e}); rebuilding from the store");
            None
        }
    };
    let from_seq = prev.as_ref().map(|(_, m)| m.applied_seq).unwrap_or(0);
    let (mut changed, last_seq) = store.changes_since(from_seq)?;
    if prev.is_some() && changed.is_empty() && !opts.full {
        return Ok(None);
    }
    let generation = prev.as_ref().map(|(_, m)| m.generation + 1).unwrap_or(1);
    let applied_seq = last_seq.max(from_seq);
    let fields = KeywordFields::new();
    let tmp = gens.join(format!(".tmp-{generation:08}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(tmp.join("segments")).map_err(|e| io(&tmp, e))?;

    // Decide between an incremental step and a full merge.
    let mut full = opts.full || prev.is_none();
    let mut old_live = 0u64;
    let mut old_counts: HashMap<String, u64> = HashMap::new();
    if let Some((pdir, pm)) = &prev {
        if !full {
            let index = open_keyword(&pdir.join("keyword"), &fields, false)?;
            let searcher = index.reader().map_err(|e| idx_err(pdir, e))?.searcher();
            for id in &changed {
                if let Some(sp) = stored_in_keyword(&searcher, &fields, id)? {
                    old_counts.insert(id.clone(), u64::from(sp.image_vectors) + u64::from(sp.has_text_vector));
                }
            }
            old_live = pm.live_points - old_counts.values().sum::<u64>();
            let dead_after = pm.points() - old_live;
            let ratio = dead_after as f64 / (pm.points().max(1)) as f64;
            if ratio > opts.tombstone_ratio || pm.segments.len() + 1 > opts.max_segments {
                tracing::info!(ratio, segments = pm.segments.len(), "merging vector segments");
                full = true;
            }
        }
    }
    if full {
        changed = store.ids().collect::<Result<_>>()?;
        old_live = 0;
    }

    // Keyword index.
    let kw_dir = tmp.join("keyword");
    let index = match (&prev, full) {
        (Some((pdir, _)), false) => {
            link_tree(&pdir.join("keyword"), &kw_dir)?;
            open_keyword(&kw_dir, &fields, false)?
        }
        _ => open_keyword(&kw_dir, &fields, true)?,
    };
    let mut writer: tantivy::IndexWriter<TantivyDocument> =
        index.writer_with_num_threads(1, 64 << 20).map_err(|e| idx_err(&kw_dir, e))?;

    let mut image_points: Vec<(PointRef, Vec<f32>)> = vec![];
    let mut text_points: Vec<(PointRef, Vec<f32>)> = vec![];
    let mut new_live = 0u64;
    for id in &changed {
        writer.delete_term(Term::from_field_text(fields.id, id));
        let Some(sp) = store.get(id)? else { continue };
        writer.add_document(fields.document(&sp)).map_err(|e| idx_err(&kw_dir, e))?;
        let pr = PointRef { ord: sp.ord, version: sp.version };
        for v in store.image_vectors(&sp)? {
            image_points.push((pr, v));
        }
        if let Some(v) = store.text_vector(&sp)? {
            text_points.push((pr, v));
        }
        new_live += u64::from(sp.image_vectors) + u64::from(sp.has_text_vector);
    }
    writer.commit().map_err(|e| idx_err(&kw_dir, e))?;
    writer.wait_merging_threads().map_err(|e| idx_err(&kw_dir, e))?;
    let products = index.reader().map_err(|e| idx_err(&kw_dir, e))?.searcher().num_docs();

    // Vector segments.
    let mut segments = vec![];
    let (mut n_image, mut n_text) = (0u64, 0u64);
    if let (Some((pdir, pm)), false) = (&prev, full) {
        for s in &pm.segments {
            link_tree(&pdir.join("segments").join(s), &tmp.join("segments").join(s))?;
            segments.push(s.clone());
        }
        n_image = pm.image_points;
        n_text = pm.text_points;
    }
    if !image_points.is_empty() || !text_points.is_empty() {
        let name = format!("seg-{generation:08}");
        let sdir = tmp.join("segments").join(&name);
        write_index(&sdir.join("image"), model.dim, &image_points, opts.hnsw)?;
        write_index(&sdir.join("text"), model.dim, &text_points, opts.hnsw)?;
        n_image += image_points.len() as u64;
        n_text += text_points.len() as u64;
        segments.push(name);
    }

    let manifest = Manifest {
        generation,
        applied_seq,
        created_at: now_secs(),
        model: model.clone(),
        store: store_name.to_string(),
        segments,
        products,
        image_points: n_image,
        text_points: n_text,
        live_points: old_live + new_live,
    };
    atomic_write(&tmp.join("manifest.json"), &serde_json::to_vec_pretty(&manifest).map_err(|e| idx_err(&tmp, e))?)?;
    let name = format!("gen-{generation:08}");
    let final_dir = gens.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    sync_dir(&gens)?;
    atomic_write(&data.join(CURRENT_FILE), name.as_bytes())?;
    store.trim_changes(applied_seq)?;
    collect_garbage(&gens, generation);
    tracing::debug!(generation, changed = changed.len(), full, "generation built");
    Ok(Some(BuildReport { generation, changed: changed.len(), merged: full }))
}

/// Remove generations older than the last few, and stale temporary folders.
fn collect_garbage(gens: &Path, current: u64) {
    let Ok(rd) = std::fs::read_dir(gens) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = match name.strip_prefix("gen-").and_then(|n| n.parse::<u64>().ok()) {
            Some(g) => g + (KEEP_GENERATIONS as u64) <= current,
            None => name.starts_with(".tmp-") && name != format!(".tmp-{:08}", current + 1),
        };
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
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

/// Loaded segments by name, shared between generations (segment files never change).
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
        for (seg_ord, sr) in searcher.segment_readers().iter().enumerate() {
            let ords = sr.fast_fields().u64("ord").map_err(|e| idx_err(&kw, e))?;
            let versions = sr.fast_fields().u64("version").map_err(|e| idx_err(&kw, e))?;
            for doc in sr.doc_ids_alive() {
                let (Some(o), Some(v)) = (ords.first(doc), versions.first(doc)) else { continue };
                let o = o as usize;
                if live.len() <= o {
                    live.resize(o + 1, 0);
                    docs.resize(o + 1, None);
                }
                live[o] = v;
                docs[o] = Some(DocAddress::new(seg_ord as u32, doc));
            }
        }
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
