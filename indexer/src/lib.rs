//! The indexer: turns catalogs into the store and into index generations.
//!
//! Pipeline per chunk of records: load image bytes (files, or URLs fetched concurrently) →
//! hash record + bytes → skip unchanged → embed changed images (decode overlapped with inference)
//! and texts → write each product atomically to the store. Every `checkpoint` a new generation is
//! built from the store's change log, and once more at the end, so readers see progress and never
//! a half-written index.
//!
//! Crash safety: a product write is one atomic sled batch that carries the content hash, so a run
//! killed at any point (SIGKILL included) resumes by skipping what was written and re-embedding
//! the rest; generations are rebuilt from the change log (see `vitrine_core::generation`).
//!
//! A product whose images all fail is still indexed by its text (keyword + text vector), with a
//! warning in the report; it fails only when it has neither a usable image nor any text.
//!
//! Threading: one writer per data directory (sled's lock enforces it). Decoding runs on rayon,
//! downloads on a scoped pool of `FetchOptions::concurrency` threads.

pub mod catalog;
pub mod fetch;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vitrine_core::catalog::{Product, StoredProduct};
use vitrine_core::generation::{self, BuildOptions, BuildReport};
use vitrine_core::pipeline::{embed_images, ImageSource};
use vitrine_core::store::{ProductWrite, Store};
use vitrine_core::{CoreError, Embedder, ImageLimits, ModelId};

pub use catalog::{Record, RecordError};
pub use fetch::{FetchOptions, Fetcher};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "{data} was indexed with model {} ({} dims, hash {}), but the model given is {} ({} dims, hash {}). \
         Use the same model, or re-embed everything with `vitrine reindex --model DIR --data {data}`",
        have.name, have.dim, short(&have.content_hash), want.name, want.dim, short(&want.content_hash)
    )]
    ModelMismatch { data: String, have: Box<ModelId>, want: Box<ModelId> },
    #[error(transparent)]
    Migration(#[from] vitrine_migrations::MigrationError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// The five numbers every ingest reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub ingested: u64,
    pub unchanged: u64,
    pub updated: u64,
    pub deleted: u64,
    pub failed: u64,
}

/// One line of the failure report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub line: Option<usize>,
    pub id: Option<String>,
    pub reason: String,
    /// `error`: the record was skipped; `warning`: it was indexed without something (an image).
    pub severity: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestResult {
    pub summary: Summary,
    pub failures: Vec<Failure>,
    pub report: Option<PathBuf>,
    pub generation: Option<u64>,
}

/// Progress callbacks; all optional.
pub trait Progress: Sync {
    fn start(&self, _total: u64) {}
    fn update(&self, _processed: u64, _summary: &Summary) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Images per model call.
    pub batch: usize,
    /// Records per chunk (images of a chunk are loaded together).
    pub chunk: usize,
    /// Build a searchable generation at least this often during a long ingest.
    pub checkpoint: Duration,
    pub limits: ImageLimits,
    pub fetch: FetchOptions,
    pub build: BuildOptions,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            batch: 32,
            chunk: 256,
            checkpoint: Duration::from_secs(30),
            limits: ImageLimits::default(),
            fetch: FetchOptions::default(),
            build: BuildOptions::default(),
        }
    }
}

pub struct Indexer {
    data: PathBuf,
    store_name: String,
    store: Store,
    /// `None` for maintenance (delete, rebuild): those never run the model.
    embedder: Option<Arc<dyn Embedder>>,
    model: ModelId,
    fetcher: Fetcher,
    pub opts: IndexOptions,
}

fn mismatch(data: &Path, have: &ModelId, want: &ModelId) -> IndexError {
    IndexError::ModelMismatch { data: data.display().to_string(), have: Box::new(have.clone()), want: Box::new(want.clone()) }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The model a data directory was indexed with, without opening the store (readers use this).
pub fn indexed_model(data: &Path) -> Result<Option<ModelId>> {
    Ok(generation::current(data)?.map(|(_, m)| m.model))
}

/// The same model: same files (by content hash) and dimension; the name is only a label.
pub fn same_model(a: &ModelId, b: &ModelId) -> bool {
    a.content_hash == b.content_hash && a.dim == b.dim
}

/// Refuse to serve or write `data` with a model other than the one it was indexed with.
pub fn check_model(data: &Path, want: &ModelId) -> Result<()> {
    match indexed_model(data)? {
        Some(have) if !same_model(&have, want) => Err(mismatch(data, &have, want)),
        _ => Ok(()),
    }
}

impl Indexer {
    /// Open (or create) a data directory for writing with this embedder's model.
    pub fn open(data: &Path, embedder: Arc<dyn Embedder>, opts: IndexOptions) -> Result<Self> {
        Self::open_inner(data, Some(embedder), opts)
    }

    /// Open an existing data directory for deletes and rebuilds, without a model.
    pub fn open_without_model(data: &Path, opts: IndexOptions) -> Result<Self> {
        Self::open_inner(data, None, opts)
    }

    fn open_inner(data: &Path, embedder: Option<Arc<dyn Embedder>>, opts: IndexOptions) -> Result<Self> {
        vitrine_migrations::open(data)?;
        let store_name = generation::current(data).ok().flatten().map(|(_, m)| m.store).unwrap_or_else(|| "store".into());
        remove_stale_stores(data, &store_name);
        let store = Store::open(&data.join(&store_name))?;
        let model = match (store.model()?, &embedder) {
            (Some(have), Some(e)) if !same_model(&have, e.model_id()) => return Err(mismatch(data, &have, e.model_id())),
            (Some(have), _) => have,
            (None, Some(e)) => {
                store.set_model(e.model_id())?;
                e.model_id().clone()
            }
            (None, None) => {
                return Err(IndexError::Invalid(format!("{} has no index yet: run `vitrine index` first", data.display())))
            }
        };
        let fetcher = Fetcher::new(opts.fetch.clone());
        let me = Indexer { data: data.to_path_buf(), store_name, store, embedder, model, fetcher, opts };
        me.repair()?;
        Ok(me)
    }

    fn embedder_or_err(&self) -> Result<&dyn Embedder> {
        self.embedder.as_deref().ok_or_else(|| IndexError::Invalid("this operation needs a model (--model)".into()))
    }

    pub fn model(&self) -> &ModelId {
        &self.model
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Bring the derived indexes in line with the store: apply a pending change log (after a
    /// crash), and rebuild from the store when the live generation disagrees with it.
    pub fn repair(&self) -> Result<Option<BuildReport>> {
        let mut report = self.sync()?;
        if let Some((_, m)) = generation::current(&self.data)? {
            let in_store = self.store.product_count() as u64;
            if m.products != in_store {
                tracing::warn!(generation = m.products, store = in_store, "index disagrees with the store; rebuilding it");
                let opts = BuildOptions { full: true, ..self.opts.build.clone() };
                report = generation::build_next(&self.data, &self.store, &self.store_name, &self.model, &opts)?;
            }
        } else if self.store.product_count() == 0 {
            // An empty but valid first generation, so readers can open the directory at once.
            let opts = BuildOptions { full: true, ..self.opts.build.clone() };
            report = generation::build_next(&self.data, &self.store, &self.store_name, &self.model, &opts)?;
        }
        Ok(report)
    }

    /// Make every write so far durable and searchable (a new generation if anything changed).
    pub fn sync(&self) -> Result<Option<BuildReport>> {
        self.store.flush()?;
        Ok(generation::build_next(&self.data, &self.store, &self.store_name, &self.model, &self.opts.build)?)
    }

    /// Rebuild every derived index from the store (no model calls).
    pub fn rebuild(&self) -> Result<Option<BuildReport>> {
        let opts = BuildOptions { full: true, ..self.opts.build.clone() };
        Ok(generation::build_next(&self.data, &self.store, &self.store_name, &self.model, &opts)?)
    }

    /// Ingest parsed records. With `delete_missing`, products not in `records` are removed, unless
    /// some lines failed to parse (their ids are unknown, and deleting them would lose data).
    pub fn ingest(
        &self,
        records: Vec<Record>,
        parse_errors: Vec<RecordError>,
        delete_missing: bool,
        progress: &dyn Progress,
    ) -> Result<IngestResult> {
        let mut res = IngestResult::default();
        for e in &parse_errors {
            res.failures.push(Failure {
                line: Some(e.line),
                id: e.id.clone(),
                reason: e.reason.clone(),
                severity: "error".into(),
            });
        }
        res.summary.failed = parse_errors.len() as u64;
        let total = (records.len() + parse_errors.len()) as u64;
        progress.start(total);
        let seen: HashSet<String> = records.iter().map(|r| r.product.id.clone()).collect();
        let processed = self.run_chunks(&records, &mut res, parse_errors.len() as u64, progress, true)?;
        if delete_missing {
            if parse_errors.is_empty() {
                let stale: Vec<String> = self.store.ids().filter_map(|r| r.ok()).filter(|id| !seen.contains(id)).collect();
                for id in stale {
                    if self.store.delete(&id)? {
                        res.summary.deleted += 1;
                    }
                }
            } else {
                res.failures.push(Failure {
                    line: None,
                    id: None,
                    reason: format!(
                        "--delete-missing skipped: {} lines could not be read, and the products they held would be deleted",
                        parse_errors.len()
                    ),
                    severity: "warning".into(),
                });
            }
        }
        res.generation = self.sync()?.map(|r| r.generation);
        progress.update(processed, &res.summary);
        res.report = self.write_report(&res.failures)?;
        Ok(res)
    }

    /// Upsert products given directly (the HTTP API); becomes searchable when this returns.
    pub fn put(&self, products: Vec<Product>) -> Result<IngestResult> {
        let base = std::env::current_dir().unwrap_or_default();
        let records = products
            .into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                p.images = p.images.iter().map(|r| catalog::resolve_image(r, &base)).collect();
                Record { line: i + 1, product: p }
            })
            .collect();
        self.ingest(records, vec![], false, &NoProgress)
    }

    /// Delete products by id; returns the ids that existed. Searchable when this returns.
    pub fn delete(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut gone = vec![];
        for id in ids {
            if self.store.delete(id)? {
                gone.push(id.clone());
            }
        }
        if !gone.is_empty() {
            self.sync()?;
        }
        Ok(gone)
    }

    /// Process records chunk by chunk; with `checkpoints`, build a generation every `opts.checkpoint`.
    fn run_chunks(
        &self,
        records: &[Record],
        res: &mut IngestResult,
        mut processed: u64,
        progress: &dyn Progress,
        checkpoints: bool,
    ) -> Result<u64> {
        let mut last_checkpoint = Instant::now();
        for chunk in records.chunks(self.opts.chunk.max(1)) {
            self.process_chunk(chunk, res)?;
            processed += chunk.len() as u64;
            progress.update(processed, &res.summary);
            if checkpoints && last_checkpoint.elapsed() >= self.opts.checkpoint {
                self.sync()?;
                last_checkpoint = Instant::now();
            }
        }
        Ok(processed)
    }

    fn process_chunk(&self, chunk: &[Record], res: &mut IngestResult) -> Result<()> {
        // 1. Image bytes for the whole chunk, concurrently.
        let refs: Vec<&str> = chunk.iter().flat_map(|r| r.product.images.iter().map(String::as_str)).collect();
        let mut loaded = self.fetcher.load_all(&refs).into_iter();
        // 2. Hash, and skip what has not changed.
        struct Pending<'a> {
            rec: &'a Record,
            images: Vec<Result<Arc<[u8]>, String>>,
            hash: String,
            /// The ordinal of the version already stored, if any.
            old_ord: Option<u64>,
        }
        let mut pending = vec![];
        for rec in chunk {
            let images: Vec<Result<Arc<[u8]>, String>> =
                rec.product.images.iter().map(|_| loaded.next().expect("one result per image").map(Arc::from)).collect();
            let mut h = blake3::Hasher::new();
            h.update(&serde_json::to_vec(&rec.product).expect("a product serializes"));
            for img in &images {
                match img {
                    Ok(b) => h.update(blake3::hash(b).as_bytes()),
                    Err(e) => h.update(format!("error:{e}").as_bytes()),
                };
            }
            let hash = h.finalize().to_hex().to_string();
            let old = self.store.get(&rec.product.id)?;
            if old.as_ref().is_some_and(|o| o.hash == hash) {
                res.summary.unchanged += 1;
                continue;
            }
            pending.push(Pending { rec, images, hash, old_ord: old.map(|o| o.ord) });
        }
        if pending.is_empty() {
            return Ok(());
        }
        // 3. Image embeddings, decode overlapped with inference.
        let mut inputs = vec![];
        for (pi, p) in pending.iter().enumerate() {
            for (ii, img) in p.images.iter().enumerate() {
                if let Ok(bytes) = img {
                    inputs.push(((pi, ii), ImageSource::Bytes { name: p.rec.product.images[ii].clone(), bytes: bytes.clone() }));
                }
            }
        }
        let mut embedded: HashMap<(usize, usize), vitrine_core::Result<Vec<f32>>> = HashMap::new();
        let embedder = self.embedder_or_err()?;
        embed_images(embedder, inputs, self.opts.batch, &self.opts.limits, |tag, r| {
            embedded.insert(tag, r);
        });
        // 4. Text embeddings of title + description.
        let texts: Vec<String> = pending.iter().map(|p| p.rec.product.embedding_text()).collect();
        let with_text: Vec<usize> = (0..texts.len()).filter(|i| !texts[*i].is_empty()).collect();
        let mut text_vecs: HashMap<usize, Vec<f32>> = HashMap::new();
        for group in with_text.chunks(64) {
            let batch: Vec<&str> = group.iter().map(|i| texts[*i].as_str()).collect();
            let vs = embedder.embed_texts(&batch)?;
            text_vecs.extend(group.iter().copied().zip(vs));
        }
        // 5. Write each product atomically.
        for (pi, p) in pending.into_iter().enumerate() {
            let product = &p.rec.product;
            let mut image_vectors = vec![];
            let mut image_errors = vec![];
            for (ii, img) in p.images.iter().enumerate() {
                let outcome = match img {
                    Err(e) => Err(e.clone()),
                    Ok(_) => match embedded.remove(&(pi, ii)) {
                        Some(Ok(v)) => Ok(v),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("not embedded".to_string()),
                    },
                };
                match outcome {
                    Ok(v) => image_vectors.push(v),
                    Err(e) => image_errors.push(e),
                }
            }
            let text_vector = text_vecs.remove(&pi);
            if image_vectors.is_empty() && text_vector.is_none() {
                let why = if image_errors.is_empty() { "no image and no text".to_string() } else { image_errors.join("; ") };
                res.failures.push(Failure {
                    line: Some(p.rec.line),
                    id: Some(product.id.clone()),
                    reason: format!("nothing to index: {why}"),
                    severity: "error".into(),
                });
                res.summary.failed += 1;
                continue;
            }
            for e in &image_errors {
                res.failures.push(Failure {
                    line: Some(p.rec.line),
                    id: Some(product.id.clone()),
                    reason: format!("image skipped, product indexed without it: {e}"),
                    severity: "warning".into(),
                });
            }
            let stored = StoredProduct {
                product: product.clone(),
                ord: match p.old_ord {
                    Some(o) => o,
                    None => self.store.new_ordinal()?,
                },
                version: self.store.next_seq()?,
                hash: p.hash,
                image_vectors: image_vectors.len() as u16,
                has_text_vector: text_vector.is_some(),
                image_errors,
                updated_at: generation::now_secs(),
            };
            self.store.put(ProductWrite { stored, image_vectors, text_vector })?;
            fault_after_write(&self.store);
            if p.old_ord.is_some() {
                res.summary.updated += 1;
            } else {
                res.summary.ingested += 1;
            }
        }
        Ok(())
    }

    fn write_report(&self, failures: &[Failure]) -> Result<Option<PathBuf>> {
        if failures.is_empty() {
            return Ok(None);
        }
        let dir = self.data.join("reports");
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::io(dir.display().to_string(), e))?;
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let path = dir.join(format!("ingest-{ms}.jsonl"));
        let mut text = String::new();
        for f in failures {
            text.push_str(&serde_json::to_string(f).expect("serializes"));
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|e| CoreError::io(path.display().to_string(), e))?;
        // Keep the 50 newest reports.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut all: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            all.sort();
            for old in all.iter().take(all.len().saturating_sub(50)) {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(Some(path))
    }
}

/// Test-only crash point. With `VITRINE_FAULT_ABORT_AFTER_WRITES=N` in the environment, the process
/// flushes the store and aborts right after its N-th product write: exactly N products are
/// durable and no generation holds them yet, so crash tests (`tests/it/index.rs`) stop a writer
/// at a known point instead of guessing with a timer. Unset, it costs one cached lookup per write.
fn fault_after_write(store: &Store) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| std::env::var("VITRINE_FAULT_ABORT_AFTER_WRITES").ok().and_then(|v| v.parse().ok()));
    if limit.is_some_and(|n| WRITES.fetch_add(1, Ordering::SeqCst) + 1 == n) {
        let _ = store.flush();
        eprintln!("fault injected: aborting after {} product writes", limit.unwrap_or(0));
        std::process::abort();
    }
}

/// Stores left behind by an interrupted reindex are not referenced by any generation.
fn remove_stale_stores(data: &Path, live: &str) {
    let Ok(rd) = std::fs::read_dir(data) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("store-") && name != live && e.path().is_dir() {
            tracing::info!(store = %name, "removing a store left by an interrupted reindex");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Re-embed every product of `data` with a new model into a new store and a new generation, then
/// switch over atomically (the `CURRENT` swap). Until then readers keep the old model's index.
pub fn reindex(data: &Path, embedder: Arc<dyn Embedder>, opts: IndexOptions, progress: &dyn Progress) -> Result<IngestResult> {
    vitrine_migrations::open(data)?;
    let (_, manifest) =
        generation::current(data)?.ok_or_else(|| IndexError::Invalid(format!("{} has no index to reindex", data.display())))?;
    let old_name = manifest.store.clone();
    let old = Store::open(&data.join(&old_name))?;
    let new_name = format!("store-{}", generation::now_secs());
    remove_stale_stores(data, &old_name);
    let store = Store::open(&data.join(&new_name))?;
    store.set_model(embedder.model_id())?;
    let records: Vec<Record> = old
        .products()
        .enumerate()
        .map(|(i, p)| p.map(|p| Record { line: i + 1, product: p.product }))
        .collect::<vitrine_core::Result<_>>()?;
    drop(old);
    let model = embedder.model_id().clone();
    let fetcher = Fetcher::new(opts.fetch.clone());
    let ix = Indexer { data: data.to_path_buf(), store_name: new_name, store, embedder: Some(embedder), model, fetcher, opts };
    // No checkpoints: a generation of the new store must not go live before it is complete.
    let mut res = IngestResult::default();
    progress.start(records.len() as u64);
    ix.run_chunks(&records, &mut res, 0, progress, false)?;
    ix.store.flush()?;
    res.generation = ix.rebuild()?.map(|r| r.generation);
    res.report = ix.write_report(&res.failures)?;
    let old_dir = data.join(&old_name);
    let _ = std::fs::remove_dir_all(old_dir);
    Ok(res)
}
