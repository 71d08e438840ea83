//! The indexer: turns catalogs into the store and into index generations.
//!
//! Pipeline per chunk of records: load image bytes once (files, or URLs fetched concurrently) →
//! hash record + bytes → skip unchanged → prepare each changed image for the media store (see
//! [`media`]) → embed the prepared bytes (decode overlapped with inference) and texts → store the
//! media that embedded → write each product atomically to the store. Every `checkpoint` a new
//! generation is built from the store's change log, and once more at the end, so readers see
//! progress and never a half-written index. After a build, media no product references any more
//! (deleted products, changed images) is collected.
//!
//! Images are served only from the media store, and a reindex re-embeds from it, so neither needs
//! the merchant's files or URLs after ingest. An image reference `media:HASH` names an image
//! already in the store (what product JSON shows), so a product read from the API can be written
//! back without its sources.
//!
//! Crash safety: a product write is one atomic sled batch that carries the content hash, so a run
//! killed at any point (SIGKILL included) resumes by skipping what was written and re-embedding
//! the rest; generations are rebuilt from the change log (see `vitrine_store::generation`).
//!
//! A product whose images all fail is still indexed by its text (keyword + text vector), with a
//! warning in the report; it fails only when it has neither a usable image nor any text.
//!
//! Threading: one writer per data directory, across processes: an [`Indexer`] holds the
//! directory's [`WriteLock`] for as long as it lives, and another writer waits up to
//! `IndexOptions::lock_wait` and then gets [`IndexError::Busy`]. Decoding runs on rayon, downloads
//! on a scoped pool of `FetchOptions::concurrency` threads.

pub mod catalog;
pub mod fetch;
pub mod jobs;
pub mod media;
pub mod products;
pub mod service;
pub mod snapshot;
pub mod tagging;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vitrine_core::catalog::{ImageFailure, ImageMedia, Product, StoredProduct};
use vitrine_core::{CoreError, ModelId};
use vitrine_engine::Engine;
use vitrine_model::pipeline::{embed_images, ImageSource};
use vitrine_model::{Embedder, ImageLimits};
use vitrine_store::generation::{self, BuildOptions, BuildReport};
use vitrine_store::lock::{self, WriteLock};
use vitrine_store::store::{ProductWrite, Store};

pub use catalog::{Record, RecordError};
pub use fetch::{FetchError, FetchOptions, Fetcher, LocalFiles, Source};
pub use media::{GcReport, MediaStore, MediaUsage};
pub use products::ProductStore;
pub use tagging::{TagAttribute, TagVocabulary, Tagger};

/// The prefix of an image reference to an image already in the media store: `media:HASH`.
pub const MEDIA_REF_PREFIX: &str = "media:";

/// How long an unreferenced image in a shared media directory (engine backend) is kept: far
/// longer than one product write takes from storing its images to committing its row.
pub const SHARED_MEDIA_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "{data} was indexed with model {} ({}, {} dims, hash {}), but the model given is {} ({}, {} dims, hash {}): {}",
        have.name, have.variant, have.dim, short(&have.content_hash), want.name, want.variant, want.dim,
        short(&want.content_hash), have.mismatch_fix(want, data)
    )]
    ModelMismatch { data: String, have: Box<ModelId>, want: Box<ModelId> },
    /// Another writer holds the data directory (the service maps this to 409).
    #[error(
        "{data} is being written by {holder}; gave up after waiting {waited:?}. Wait for it to finish or stop it \
         (a running `vitrine serve` takes catalogs with POST /v1/ingest)"
    )]
    Busy { data: String, holder: String, waited: Duration },
    /// A write refused because of a reindex of the engine database: one is running, or one
    /// switched to another model than this writer's (the service maps this to 409, like `Busy`).
    #[error("{0}")]
    Reindex(String),
    #[error(transparent)]
    Migration(#[from] vitrine_migrations::MigrationError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{0}")]
    Invalid(String),
    /// A tag vocabulary that cannot work (`attribute` is empty when the problem is the whole).
    #[error("tag vocabulary{}: {problem}", if attribute.is_empty() { String::new() } else { format!(" attribute `{attribute}`") })]
    TagVocabulary { attribute: String, problem: String },
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

impl From<vitrine_engine::EngineError> for IndexError {
    fn from(e: vitrine_engine::EngineError) -> Self {
        if e.is_reindex() {
            IndexError::Reindex(e.to_string())
        } else {
            IndexError::Core(e.into())
        }
    }
}

/// The five numbers every ingest reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub ingested: u64,
    pub unchanged: u64,
    pub updated: u64,
    pub deleted: u64,
    pub failed: u64,
}

/// One line of the failure report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub line: Option<usize>,
    pub id: Option<String>,
    pub reason: String,
    pub severity: Severity,
}

/// How bad a [`Failure`] is.
///
/// # Persisted (in failure reports): changing this needs a migration
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The record was skipped.
    Error,
    /// The record was indexed without something (an image).
    Warning,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestResult {
    pub summary: Summary,
    pub failures: Vec<Failure>,
    pub report: Option<PathBuf>,
    pub generation: Option<u64>,
}

/// An ingest in progress: see [`Indexer::ingest`], or drive it chunk by chunk with
/// [`Indexer::ingest_step`] and [`Indexer::finish_ingest`].
pub struct IngestRun {
    pub res: IngestResult,
    seen: HashSet<String>,
    processed: u64,
    parse_errors: u64,
    delete_missing: bool,
    last_checkpoint: Instant,
}

impl IngestRun {
    pub fn new(records: &[Record], parse_errors: Vec<RecordError>, delete_missing: bool, progress: &dyn Progress) -> Self {
        let mut res = IngestResult::default();
        for e in &parse_errors {
            res.failures.push(Failure {
                line: Some(e.line),
                id: e.id.clone(),
                reason: e.reason.clone(),
                severity: Severity::Error,
            });
        }
        res.summary.failed = parse_errors.len() as u64;
        progress.start((records.len() + parse_errors.len()) as u64);
        IngestRun {
            res,
            seen: records.iter().map(|r| r.product.id.clone()).collect(),
            processed: parse_errors.len() as u64,
            parse_errors: parse_errors.len() as u64,
            delete_missing,
            last_checkpoint: Instant::now(),
        }
    }
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
    /// Which local files image references may name. The default refuses them all (what suits
    /// products and catalogs sent over HTTP); the CLI uses [`IndexOptions::for_catalog`].
    pub local_files: LocalFiles,
    pub build: BuildOptions,
    /// How long to wait for another writer of the data directory before [`IndexError::Busy`].
    pub lock_wait: Duration,
    /// Zero-shot tagging at ingest (see [`tagging`]); empty: none.
    pub tags: TagVocabulary,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            batch: 32,
            chunk: 256,
            checkpoint: Duration::from_secs(30),
            limits: ImageLimits::default(),
            fetch: FetchOptions::default(),
            local_files: LocalFiles::none(),
            build: BuildOptions::default(),
            lock_wait: Duration::from_secs(30),
            tags: TagVocabulary::default(),
        }
    }
}

impl IndexOptions {
    /// For the operator's own catalog file (`vitrine index`, the demo): relative image paths
    /// resolve against the catalog's folder; any local file and any URL, private networks
    /// included, may be read (still only regular files, and at most `fetch.max_bytes`).
    pub fn for_catalog(catalog: &Path) -> Self {
        IndexOptions { local_files: LocalFiles::beside(catalog), ..IndexOptions::for_operator() }
    }

    /// For the operator's commands without a catalog (`vitrine reindex`): as
    /// [`IndexOptions::for_catalog`], relative paths against the current directory.
    pub fn for_operator() -> Self {
        let fetch = FetchOptions { public_only: false, ..FetchOptions::default() };
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        IndexOptions { fetch, local_files: LocalFiles::Any { base }, ..IndexOptions::default() }
    }
}

pub struct Indexer {
    data: PathBuf,
    products: ProductStore,
    /// `None` for maintenance (delete, rebuild): those never run the model.
    embedder: Option<Arc<dyn Embedder>>,
    model: ModelId,
    fetcher: Fetcher,
    media: MediaStore,
    /// Set when media may have lost its last reference (a delete, a changed image), so that the
    /// next `sync` collects it; a catalog that only adds products never pays for the scan.
    media_gc_pending: AtomicBool,
    /// `opts.tags` with its prompts embedded by this writer's model, made on first use.
    tagger: parking_lot::Mutex<Option<Arc<Tagger>>>,
    pub opts: IndexOptions,
    /// Last, so that it is released after the store closes.
    _lock: WriteLock,
}

/// Why one image of a product is not used: the short reason products show, and the detail
/// (paths, URLs, decoder messages) for the log and the admin's failure report only.
#[derive(Debug, Clone)]
struct Unusable {
    failure: ImageFailure,
    detail: String,
}

impl Unusable {
    fn from_core(e: &CoreError) -> Self {
        Unusable { failure: media::failure_of(e), detail: e.to_string() }
    }

    /// A source that could not be loaded.
    /// A source that could not be loaded. The detail names the reference as the catalog gave it
    /// (it goes to the operator's failure report, never to product JSON).
    fn from_fetch(source: &str, e: FetchError) -> Self {
        let failure = match e {
            FetchError::TooLarge { .. } => ImageFailure::TooLarge,
            _ => ImageFailure::Unreadable,
        };
        Unusable { failure, detail: format!("{source}: {e}") }
    }
}

/// An image's bytes as loaded, once, for this ingest.
type Loaded = Result<Arc<[u8]>, Unusable>;

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
    a.same_model(b)
}

/// Refuse to serve or write `data` with a model other than the one it was indexed with.
pub fn check_model(data: &Path, want: &ModelId) -> Result<()> {
    match indexed_model(data)? {
        Some(have) if !same_model(&have, want) => Err(mismatch(data, &have, want)),
        _ => Ok(()),
    }
}

/// Marks a data directory whose restore has not finished (see [`snapshot::restore`]).
pub const RESTORING_FILE: &str = "RESTORING";

fn busy(data: &Path, waited: Duration) -> IndexError {
    let holder = WriteLock::holder(data).map(|h| h.to_string()).unwrap_or_else(|| "another vitrine process".into());
    IndexError::Busy { data: data.display().to_string(), holder, waited }
}

/// Take the data directory's write lock (creating the directory), then bring its format up to
/// date under it.
pub(crate) fn lock_dir(data: &Path, wait: Duration) -> Result<WriteLock> {
    // A new directory gets its VERSION first: a LOCK alone would make it look like a foreign folder.
    // A future format is refused here, before the LOCK is written: nothing touches what we refuse.
    if vitrine_migrations::read_version(data)?.is_none_or(|v| v > vitrine_migrations::CURRENT_FORMAT) {
        vitrine_migrations::open(data)?;
    }
    let lock = WriteLock::acquire(data, &lock::process_role(), wait)?.ok_or_else(|| busy(data, wait))?;
    vitrine_migrations::open(data)?;
    Ok(lock)
}

/// [`lock_dir`] for a writer, which refuses a directory whose restore did not finish.
fn take_lock(data: &Path, wait: Duration) -> Result<WriteLock> {
    let lock = lock_dir(data, wait)?;
    if data.join(RESTORING_FILE).exists() {
        return Err(IndexError::Invalid(format!(
            "{} holds an interrupted restore: run `vitrine snapshot restore SNAPSHOT --data {} --force` again",
            data.display(),
            data.display()
        )));
    }
    Ok(lock)
}

/// Apply what the store acknowledged but no generation holds yet (a writer killed between its
/// store writes and its next generation), so it is searchable without another write. Takes the
/// lock for the time of the build; needs no model. The service calls this once at startup.
/// `Ok(None)`: nothing to do (no store, or the live generation is up to date).
pub fn recover(data: &Path, opts: IndexOptions) -> Result<Option<BuildReport>> {
    if !data.is_dir() || vitrine_migrations::read_version(data)?.is_none() {
        return Ok(None);
    }
    let lock = take_lock(data, opts.lock_wait)?;
    let store_name = generation::live_store(data)?;
    if !data.join(&store_name).is_dir() {
        return Ok(None);
    }
    let store = Store::open(&data.join(&store_name))?;
    let Some(model) = store.model()? else { return Ok(None) };
    remove_stale_stores(data, &store_name)?;
    Indexer::new(data, ProductStore::Embedded { store, name: store_name }, None, model, opts, lock).repair()
}

impl Indexer {
    /// Open (or create) a data directory for writing with this embedder's model. Waits up to
    /// `opts.lock_wait` for another writer, then fails with [`IndexError::Busy`].
    pub fn open(data: &Path, embedder: Arc<dyn Embedder>, opts: IndexOptions) -> Result<Self> {
        Self::open_inner(data, Some(embedder), opts)
    }

    /// Open an existing data directory for deletes and rebuilds, without a model.
    pub fn open_without_model(data: &Path, opts: IndexOptions) -> Result<Self> {
        Self::open_inner(data, None, opts)
    }

    fn open_inner(data: &Path, embedder: Option<Arc<dyn Embedder>>, opts: IndexOptions) -> Result<Self> {
        let lock = take_lock(data, opts.lock_wait)?;
        let store_name = generation::live_store(data)?;
        remove_stale_stores(data, &store_name)?;
        let store = Store::open(&data.join(&store_name))?;
        let products = ProductStore::Embedded { store, name: store_name };
        let model = Self::agree_on_model(&products, embedder.as_deref(), &data.display().to_string())?;
        let me = Indexer::new(data, products, embedder, model, opts, lock);
        me.repair()?;
        Ok(me)
    }

    /// Open a writer on the engine backend. `data` holds only what stays local to a node (the
    /// media store unless it is mounted shared, failure reports); the lock only orders this node's
    /// writers, since the engine's transactions, ordinals and versions are safe across nodes.
    pub fn open_engine(data: &Path, engine: Engine, embedder: Option<Arc<dyn Embedder>>, opts: IndexOptions) -> Result<Self> {
        let lock = take_lock(data, opts.lock_wait)?;
        let place = engine.url().to_string();
        let products = ProductStore::Engine(engine);
        let model = Self::agree_on_model(&products, embedder.as_deref(), &place)?;
        Ok(Indexer::new(data, products, embedder, model, opts, lock))
    }

    /// The model of the index: the stored one, which the embedder (if any) must match; or, for a
    /// new index, the embedder's, recorded now.
    fn agree_on_model(products: &ProductStore, embedder: Option<&dyn Embedder>, place: &str) -> Result<ModelId> {
        Ok(match (products.model()?, embedder) {
            (Some(have), Some(e)) if !same_model(&have, e.model_id()) => {
                return Err(IndexError::ModelMismatch {
                    data: place.to_string(),
                    have: Box::new(have),
                    want: Box::new(e.model_id().clone()),
                })
            }
            (Some(have), _) => have,
            (None, Some(e)) => {
                products.set_model(e.model_id())?;
                e.model_id().clone()
            }
            (None, None) => return Err(IndexError::Invalid(format!("{place} has no index yet: run `vitrine index` first"))),
        })
    }

    fn new(
        data: &Path,
        products: ProductStore,
        embedder: Option<Arc<dyn Embedder>>,
        model: ModelId,
        opts: IndexOptions,
        lock: WriteLock,
    ) -> Self {
        let fetcher = Fetcher::new(opts.fetch.clone());
        let media = MediaStore::new(data);
        Indexer {
            data: data.to_path_buf(),
            products,
            embedder,
            model,
            fetcher,
            media,
            media_gc_pending: AtomicBool::new(false),
            tagger: parking_lot::Mutex::new(None),
            opts,
            _lock: lock,
        }
    }

    fn embedder_or_err(&self) -> Result<&dyn Embedder> {
        self.embedder.as_deref().ok_or_else(|| IndexError::Invalid("this operation needs a model (--model)".into()))
    }

    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The tagger for `opts.tags` (`None` when the vocabulary is empty): its prompts are embedded
    /// once per writer, on the first chunk that needs them.
    pub fn tagger(&self) -> Result<Option<Arc<Tagger>>> {
        if self.opts.tags.is_empty() {
            return Ok(None);
        }
        let mut slot = self.tagger.lock();
        if slot.is_none() {
            *slot = Some(Arc::new(Tagger::new(&self.opts.tags, self.embedder_or_err()?)?));
        }
        Ok(slot.clone())
    }

    /// The fingerprint products tagged now carry (empty without a vocabulary).
    fn tag_fingerprint(&self) -> String {
        self.opts.tags.fingerprint(&self.model)
    }

    /// Re-tag an unchanged product whose tags came from another vocabulary or model, from its
    /// stored image vectors, and write it as a new version. Returns whether it was written.
    fn retag(&self, old: StoredProduct) -> Result<bool> {
        let image_vectors = self.products.image_vectors(&old)?;
        let auto = match self.tagger()? {
            Some(t) => t.tag(&old.product.attributes, &image_vectors),
            None => Default::default(),
        };
        if auto == old.auto {
            return Ok(false);
        }
        let text_vector = self.products.text_vector(&old)?;
        let stored = StoredProduct { version: self.products.next_seq()?, updated_at: generation::now_secs(), auto, ..old };
        self.products.put(ProductWrite { stored, image_vectors, text_vector })?;
        Ok(true)
    }

    /// Where this writer keeps products.
    pub fn products(&self) -> &ProductStore {
        &self.products
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn media(&self) -> &MediaStore {
        &self.media
    }

    /// Bring the derived indexes in line with the store: apply a pending change log (after a
    /// crash: what the store acknowledged becomes searchable), and rebuild from the store when the
    /// live generation disagrees with it. [`Indexer::open`] runs it; see also [`recover`].
    pub fn repair(&self) -> Result<Option<BuildReport>> {
        let Some((store, store_name)) = self.products.embedded() else { return Ok(None) };
        let mut report = self.sync()?;
        if let Some((_, m)) = generation::current(&self.data)? {
            let in_store = store.product_count() as u64;
            if m.products != in_store {
                tracing::warn!(generation = m.products, store = in_store, "index disagrees with the store; rebuilding it");
                let opts = BuildOptions { full: true, ..self.opts.build.clone() };
                report = generation::build_next(&self.data, store, store_name, &self.model, &opts)?;
            }
        } else if store.product_count() == 0 {
            // An empty but valid first generation, so readers can open the directory at once.
            let opts = BuildOptions { full: true, ..self.opts.build.clone() };
            report = generation::build_next(&self.data, store, store_name, &self.model, &opts)?;
        }
        Ok(report)
    }

    /// Make every write so far durable and searchable (a new generation if anything changed),
    /// then collect media no product references any more, if a write may have left some.
    pub fn sync(&self) -> Result<Option<BuildReport>> {
        // `build_next` flushes the store before it reads the change log. The engine's writes are
        // searchable at commit: there is nothing to build.
        let report = match self.products.embedded() {
            Some((store, name)) => generation::build_next(&self.data, store, name, &self.model, &self.opts.build)?,
            None => None,
        };
        if self.media_gc_pending.swap(false, Ordering::AcqRel) {
            // The write is done and searchable; a failed collection only postpones it.
            if let Err(e) = self.collect_media() {
                tracing::warn!("media collection failed, retrying after the next write: {e}");
                self.media_gc_pending.store(true, Ordering::Release);
            }
        }
        Ok(report)
    }

    /// Remove every stored image that no product of the store references. Only the single writer
    /// calls this (it holds the store), so no write can race it; `sync` runs it after deletes and
    /// image changes, and it also clears what a crash between a media write and its product write
    /// left behind.
    pub fn collect_media(&self) -> Result<GcReport> {
        let mut referenced = HashSet::new();
        self.products.for_each_product(|p| referenced.extend(p.stored_media().map(|m| m.hash.clone())))?;
        if self.products.builds_generations() {
            self.media.gc(&referenced)
        } else {
            // Other nodes write to the same media directory: keep what may await its product row.
            self.media.gc_older_than(&referenced, SHARED_MEDIA_GRACE)
        }
    }

    /// Rebuild every derived index from the store (no model calls).
    pub fn rebuild(&self) -> Result<Option<BuildReport>> {
        let Some((store, name)) = self.products.embedded() else {
            return Err(IndexError::Invalid("the engine backend indexes every write itself: there is nothing to rebuild".into()));
        };
        let opts = BuildOptions { full: true, ..self.opts.build.clone() };
        Ok(generation::build_next(&self.data, store, name, &self.model, &opts)?)
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
        let mut run = IngestRun::new(&records, parse_errors, delete_missing, progress);
        let records = self.resolve_images(records, &mut run.res);
        for chunk in records.chunks(self.opts.chunk.max(1)) {
            self.ingest_step(&mut run, chunk, progress)?;
        }
        self.finish_ingest(run, progress)
    }

    /// One chunk of an [`IngestRun`]: embed and store it, and build a searchable generation when
    /// the checkpoint interval has passed. A caller that shares this writer (the service) can let
    /// other writes in between steps. Returns whether a new generation went live.
    pub fn ingest_step(&self, run: &mut IngestRun, chunk: &[Record], progress: &dyn Progress) -> Result<bool> {
        self.process_chunk(chunk, None, &mut run.res)?;
        run.processed += chunk.len() as u64;
        progress.update(run.processed, &run.res.summary);
        if run.last_checkpoint.elapsed() < self.opts.checkpoint {
            return Ok(false);
        }
        run.last_checkpoint = Instant::now();
        Ok(self.sync()?.is_some())
    }

    /// End an [`IngestRun`]: delete what the catalog no longer holds (when asked and safe), make
    /// everything durable and searchable, and write the failure report.
    pub fn finish_ingest(&self, mut run: IngestRun, progress: &dyn Progress) -> Result<IngestResult> {
        let res = &mut run.res;
        if run.delete_missing {
            if run.parse_errors == 0 {
                let stale: Vec<String> = self.products.ids()?.into_iter().filter(|id| !run.seen.contains(id)).collect();
                for id in stale {
                    if self.products.delete(&id)? {
                        res.summary.deleted += 1;
                        self.media_gc_pending.store(true, Ordering::Release);
                    }
                }
            } else {
                res.failures.push(Failure {
                    line: None,
                    id: None,
                    reason: format!(
                        "--delete-missing skipped: {} lines could not be read, and the products they held would be deleted",
                        run.parse_errors
                    ),
                    severity: Severity::Warning,
                });
            }
        }
        res.generation = self.sync()?.map(|r| r.generation);
        progress.update(run.processed, &res.summary);
        res.report = self.write_report(&res.failures)?;
        Ok(run.res)
    }

    /// Upsert products given directly (the HTTP API); becomes searchable when this returns.
    pub fn put(&self, products: Vec<Product>) -> Result<IngestResult> {
        let records = products.into_iter().enumerate().map(|(i, product)| Record { line: i + 1, product }).collect();
        self.ingest(records, vec![], false, &NoProgress)
    }

    /// Image references in the form stored: URLs checked, local paths resolved by
    /// `opts.local_files` (absolute, canonical under media roots). A reference the policy refuses
    /// is dropped with a warning, so it is never stored (nor served) and the product is indexed
    /// without it. Loading checks each reference again.
    pub fn resolve_images(&self, mut records: Vec<Record>, res: &mut IngestResult) -> Vec<Record> {
        for rec in &mut records {
            let mut kept = Vec::with_capacity(rec.product.images.len());
            for r in &rec.product.images {
                if r.starts_with(MEDIA_REF_PREFIX) {
                    // An image already in the media store (a product read back and written again).
                    kept.push(r.clone());
                    continue;
                }
                match self.opts.local_files.resolve(r) {
                    Ok(source) => kept.push(source.to_string()),
                    Err(e) => res.failures.push(Failure {
                        line: Some(rec.line),
                        id: Some(rec.product.id.clone()),
                        reason: format!("image skipped, product indexed without it: {r}: {e}"),
                        severity: Severity::Warning,
                    }),
                }
            }
            kept.dedup();
            rec.product.images = kept;
        }
        records
    }

    /// Delete products by id; returns the ids that existed. Searchable when this returns.
    pub fn delete(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut gone = vec![];
        for id in ids {
            if self.products.delete(id)? {
                gone.push(id.clone());
                self.media_gc_pending.store(true, Ordering::Release);
            }
        }
        if !gone.is_empty() {
            self.sync()?;
        }
        Ok(gone)
    }

    /// Process records chunk by chunk; with `checkpoints`, build a generation every `opts.checkpoint`.
    /// `prior`, when given, holds the stored version of each record (a reindex): its media and
    /// hash are reused instead of loading the sources again.
    fn run_chunks(
        &self,
        records: &[Record],
        prior: Option<&[StoredProduct]>,
        res: &mut IngestResult,
        mut processed: u64,
        progress: &dyn Progress,
        checkpoints: bool,
    ) -> Result<u64> {
        let mut last_checkpoint = Instant::now();
        let size = self.opts.chunk.max(1);
        for (i, chunk) in records.chunks(size).enumerate() {
            let prior = prior.map(|p| &p[i * size..(i * size + chunk.len())]);
            self.process_chunk(chunk, prior, res)?;
            processed += chunk.len() as u64;
            progress.update(processed, &res.summary);
            if checkpoints && last_checkpoint.elapsed() >= self.opts.checkpoint {
                self.sync()?;
                last_checkpoint = Instant::now();
            }
        }
        Ok(processed)
    }

    /// Every image of the chunk, read once: a reindex's stored media, `media:` references from the
    /// media store, and the merchant's files and URLs through the fetcher (concurrently).
    fn load_images(&self, chunk: &[Record], prior: Option<&[StoredProduct]>) -> Result<Vec<Vec<Loaded>>> {
        let mut out: Vec<Vec<Option<Loaded>>> = chunk.iter().map(|r| r.product.images.iter().map(|_| None).collect()).collect();
        let mut to_fetch = vec![];
        for (ri, rec) in chunk.iter().enumerate() {
            let reuse = prior.map(|p| &p[ri]).filter(|sp| sp.media_complete());
            for (ii, r) in rec.product.images.iter().enumerate() {
                out[ri][ii] = match (reuse, r.strip_prefix(MEDIA_REF_PREFIX)) {
                    (Some(sp), _) => Some(match &sp.media[ii] {
                        ImageMedia::Stored(m) => self.media.get(m)?.map(Arc::from).ok_or_else(|| Unusable {
                            failure: ImageFailure::Unreadable,
                            detail: format!("{r}: its stored copy {} is missing from the media store", m.hash),
                        }),
                        ImageMedia::Failed(f) => {
                            Err(Unusable { failure: *f, detail: format!("{r}: failed when it was ingested") })
                        }
                    }),
                    (None, Some(hash)) => Some(self.media.find(hash)?.map(|(_, b)| Arc::from(b)).ok_or_else(|| Unusable {
                        failure: ImageFailure::Unreadable,
                        detail: format!("{r}: no such image in the media store"),
                    })),
                    (None, None) => {
                        to_fetch.push((ri, ii));
                        None
                    }
                };
            }
        }
        let refs: Vec<&str> = to_fetch.iter().map(|&(ri, ii)| chunk[ri].product.images[ii].as_str()).collect();
        for ((&(ri, ii), r), source) in to_fetch.iter().zip(self.fetcher.load_all(&refs, &self.opts.local_files)).zip(&refs) {
            out[ri][ii] = Some(r.map(Arc::from).map_err(|e| Unusable::from_fetch(source, e)));
        }
        Ok(out.into_iter().map(|v| v.into_iter().map(|l| l.expect("every image loaded")).collect()).collect())
    }

    fn process_chunk(&self, chunk: &[Record], prior: Option<&[StoredProduct]>, res: &mut IngestResult) -> Result<()> {
        // 1. Image bytes for the whole chunk, each read once.
        let loaded = self.load_images(chunk, prior)?;
        // 2. Hash, and skip what has not changed.
        struct Pending<'a> {
            rec: &'a Record,
            hash: String,
            /// The ordinal of the version already stored, if any.
            old_ord: Option<u64>,
            /// The media the stored version references.
            old_media: HashSet<String>,
        }
        let mut pending = vec![];
        let mut pending_images = vec![];
        let fingerprint = self.tag_fingerprint();
        for (ri, (rec, images)) in chunk.iter().zip(loaded).enumerate() {
            let hash = match prior.map(|p| &p[ri]).filter(|sp| sp.media_complete()) {
                // A reindex keeps the hash of the original bytes, so the next catalog run still
                // finds the product unchanged even where the store holds a re-encoded copy.
                Some(sp) => sp.hash.clone(),
                None => {
                    let mut h = blake3::Hasher::new();
                    h.update(&serde_json::to_vec(&rec.product).expect("a product serializes"));
                    for img in &images {
                        match img {
                            Ok(b) => h.update(blake3::hash(b).as_bytes()),
                            Err(u) => h.update(format!("error:{:?}", u.failure).as_bytes()),
                        };
                    }
                    h.finalize().to_hex().to_string()
                }
            };
            let old = self.products.get(&rec.product.id)?;
            // A record from before the media store is done again, so its images get stored.
            if let Some(o) = old.as_ref().filter(|o| o.hash == hash && o.media_complete()) {
                // Tags are not in the hash: a product tagged with another vocabulary or model is
                // re-tagged from its stored vectors, without loading or embedding anything.
                let fresh = o.auto.tagged_with == fingerprint;
                if !fresh && self.retag(o.clone())? {
                    res.summary.updated += 1;
                } else {
                    res.summary.unchanged += 1;
                }
                continue;
            }
            let old_media = old.as_ref().map(|o| o.stored_media().map(|m| m.hash.clone()).collect()).unwrap_or_default();
            pending.push(Pending { rec, hash, old_ord: old.map(|o| o.ord), old_media });
            pending_images.push(images);
        }
        if pending.is_empty() {
            return Ok(());
        }
        // 3. The bytes each image will be stored as (originals, or large ones scaled down), on
        //    rayon; the loaded bytes are dropped as they are done with.
        let limits = self.opts.limits;
        let prepared: Vec<Vec<Result<media::Prepared, Unusable>>> = pending_images
            .into_par_iter()
            .zip(pending.par_iter())
            .map(|(images, p)| {
                images
                    .into_iter()
                    .zip(&p.rec.product.images)
                    .map(|(img, name)| media::prepare(&img?, name, &limits).map_err(|e| Unusable::from_core(&e)))
                    .collect()
            })
            .collect();
        // 4. Image embeddings of the prepared bytes (what the store keeps, so a reindex from the
        //    store gives the same vectors), decode overlapped with inference.
        let mut inputs = vec![];
        for (pi, (p, images)) in pending.iter().zip(&prepared).enumerate() {
            for (ii, img) in images.iter().enumerate() {
                if let Ok(prep) = img {
                    inputs.push((
                        (pi, ii),
                        ImageSource::Bytes { name: p.rec.product.images[ii].clone(), bytes: prep.bytes.clone() },
                    ));
                }
            }
        }
        let mut embedded: HashMap<(usize, usize), vitrine_core::Result<Vec<f32>>> = HashMap::new();
        let embedder = self.embedder_or_err()?;
        embed_images(embedder, inputs, self.opts.batch, &self.opts.limits, |tag, r| {
            embedded.insert(tag, r);
        });
        // 5. Text embeddings of title + description.
        let texts: Vec<String> = pending.iter().map(|p| p.rec.product.embedding_text()).collect();
        let with_text: Vec<usize> = (0..texts.len()).filter(|i| !texts[*i].is_empty()).collect();
        let mut text_vecs: HashMap<usize, Vec<f32>> = HashMap::new();
        for group in with_text.chunks(64) {
            let batch: Vec<&str> = group.iter().map(|i| texts[*i].as_str()).collect();
            let vs = embedder.embed_texts(&batch)?;
            text_vecs.extend(group.iter().copied().zip(vs));
        }
        // 6. Each image that has a vector goes to the media store, durably, before any product
        //    that references it is written: an index into `to_store` per image, or why not.
        let mut to_store: Vec<Arc<[u8]>> = vec![];
        let mut outcomes = vec![];
        for (pi, images) in prepared.into_iter().enumerate() {
            let mut vectors = vec![];
            let mut slots: Vec<Result<usize, Unusable>> = vec![];
            for (ii, img) in images.into_iter().enumerate() {
                let outcome = img.and_then(|prep| match embedded.remove(&(pi, ii)) {
                    Some(Ok(v)) => Ok((v, prep)),
                    Some(Err(e)) => Err(Unusable::from_core(&e)),
                    None => Err(Unusable { failure: ImageFailure::NotEmbedded, detail: "not embedded".into() }),
                });
                slots.push(outcome.map(|(v, prep)| {
                    vectors.push(v);
                    to_store.push(prep.bytes);
                    to_store.len() - 1
                }));
            }
            outcomes.push((vectors, slots));
        }
        let refs = self.media.put_all(&to_store.iter().map(|b| &b[..]).collect::<Vec<_>>())?;
        drop(to_store);
        let tagger = self.tagger()?;
        // 7. Write each product atomically.
        for (pi, (p, (image_vectors, slots))) in pending.into_iter().zip(outcomes).enumerate() {
            let product = &p.rec.product;
            let failed: Vec<(usize, &Unusable)> =
                slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().err().map(|u| (i, u))).collect();
            for (i, u) in &failed {
                tracing::debug!(id = %product.id, image = i + 1, reason = %u.failure, "image not used: {}", u.detail);
            }
            let text_vector = text_vecs.remove(&pi);
            if image_vectors.is_empty() && text_vector.is_none() {
                let why = if failed.is_empty() {
                    "no image and no text".to_string()
                } else {
                    failed
                        .iter()
                        .map(|(i, u)| format!("image {} ({}): {}", i + 1, u.failure, u.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                res.failures.push(Failure {
                    line: Some(p.rec.line),
                    id: Some(product.id.clone()),
                    reason: format!("nothing to index: {why}"),
                    severity: Severity::Error,
                });
                res.summary.failed += 1;
                continue;
            }
            for (i, u) in &failed {
                res.failures.push(Failure {
                    line: Some(p.rec.line),
                    id: Some(product.id.clone()),
                    reason: format!("image skipped, product indexed without it: image {} ({}): {}", i + 1, u.failure, u.detail),
                    severity: Severity::Warning,
                });
            }
            let media: Vec<ImageMedia> = slots
                .into_iter()
                .map(|s| match s {
                    Ok(k) => ImageMedia::Stored(refs[k].clone()),
                    Err(u) => ImageMedia::Failed(u.failure),
                })
                .collect();
            let stored = StoredProduct {
                product: product.clone(),
                ord: match p.old_ord {
                    Some(o) => o,
                    None => self.products.ordinal(&product.id, None)?,
                },
                version: self.products.next_seq()?,
                hash: p.hash,
                image_vectors: image_vectors.len() as u16,
                has_text_vector: text_vector.is_some(),
                image_errors: vec![],
                updated_at: generation::now_secs(),
                media,
                auto: tagger.as_ref().map(|t| t.tag(&product.attributes, &image_vectors)).unwrap_or_default(),
            };
            if !p.old_media.iter().all(|h| stored.stored_media().any(|m| &m.hash == h)) {
                self.media_gc_pending.store(true, Ordering::Release);
            }
            self.products.put(ProductWrite { stored, image_vectors, text_vector })?;
            fault_after_write(&self.products);
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
/// flushes the store and SIGKILLs itself right after its N-th product write: exactly N products
/// are durable and no generation holds them yet, no destructor or exit handler runs, so crash
/// tests (`tests/it/index.rs`, `tests/it/service.rs`) stop a writer at a known point instead of
/// guessing with a timer. Unset, it costs one cached lookup per write.
fn fault_after_write(store: &ProductStore) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| std::env::var("VITRINE_FAULT_ABORT_AFTER_WRITES").ok().and_then(|v| v.parse().ok()));
    if limit.is_some_and(|n| WRITES.fetch_add(1, Ordering::SeqCst) + 1 == n) {
        let _ = store.flush();
        eprintln!("fault injected: killing the process after {} product writes", limit.unwrap_or(0));
        // kill(1) rather than libc: the workspace has no unsafe code. abort() if it is missing.
        let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
        std::process::abort();
    }
}

/// Remove stores that neither the live generation nor any other generation references: those a
/// reindex left behind when it was interrupted. Only the lock holder calls this, so a reindex in
/// progress (which holds the lock) never loses its new store; and when some manifest cannot be
/// read (or there is none), nothing is removed.
fn remove_stale_stores(data: &Path, live: &str) -> Result<()> {
    let referenced = match generation::referenced_stores(data)? {
        Some(r) if !r.is_empty() => r,
        // Without a readable generation, nobody can tell a stale store from the live one.
        _ => return Ok(()),
    };
    let Ok(rd) = std::fs::read_dir(data) else { return Ok(()) };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_store = name == generation::DEFAULT_STORE || name.starts_with("store-");
        if is_store && name != live && !referenced.contains(&name) && e.path().is_dir() {
            tracing::info!(store = %name, "removing a store left by an interrupted reindex");
            std::fs::remove_dir_all(e.path()).map_err(|err| CoreError::io(e.path().display().to_string(), err))?;
        }
    }
    Ok(())
}

/// A store folder name not used in `data`.
fn fresh_store_name(data: &Path) -> String {
    let base = format!("store-{}", generation::now_secs());
    let mut name = base.clone();
    let mut n = 1;
    while data.join(&name).exists() {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// Re-embed every product of `data` with a new model into a new store and a new generation, then
/// switch over atomically (the `CURRENT` swap). Until then readers keep the old model's index.
/// Holds the write lock from start to switch, so no other writer touches either store meanwhile.
pub fn reindex(data: &Path, embedder: Arc<dyn Embedder>, opts: IndexOptions, progress: &dyn Progress) -> Result<IngestResult> {
    let lock = take_lock(data, opts.lock_wait)?;
    let (_, manifest) =
        generation::current(data)?.ok_or_else(|| IndexError::Invalid(format!("{} has no index to reindex", data.display())))?;
    let old_name = manifest.store.clone();
    remove_stale_stores(data, &old_name)?;
    let old = Store::open(&data.join(&old_name))?;
    // Images come from the media store, not from their sources; only records written before the
    // media store load their sources (and get their images stored on the way).
    let prior: Vec<StoredProduct> = old.products().collect::<vitrine_core::Result<_>>()?;
    let records: Vec<Record> =
        prior.iter().enumerate().map(|(i, p)| Record { line: i + 1, product: p.product.clone() }).collect();
    drop(old);
    let new_name = fresh_store_name(data);
    let store = Store::open(&data.join(&new_name))?;
    store.set_model(embedder.model_id())?;
    let model = embedder.model_id().clone();
    let ix = Indexer::new(data, ProductStore::Embedded { store, name: new_name }, Some(embedder), model, opts, lock);
    // No checkpoints: a generation of the new store must not go live before it is complete.
    let mut res = IngestResult::default();
    progress.start(records.len() as u64);
    ix.run_chunks(&records, Some(&prior), &mut res, 0, progress, false)?;
    res.generation = ix.rebuild()?.map(|r| r.generation);
    res.report = ix.write_report(&res.failures)?;
    // The live generation now reads the new store; older generations that still name the old one
    // are only kept for readers, which never open a store.
    let old_dir = data.join(&old_name);
    std::fs::remove_dir_all(&old_dir).map_err(|e| CoreError::io(old_dir.display().to_string(), e))?;
    Ok(res)
}

/// Re-embed every product of an engine database with a new model, then switch over in one
/// transaction (see `vitrine_engine::reindex` for the protocol). While it runs, writes from every
/// node are refused and searches go on with the old model's vectors; nodes opened afterwards use
/// the new ones. Images come from the (shared) media store under `data`.
pub fn reindex_engine(
    data: &Path,
    engine: Engine,
    embedder: Arc<dyn Embedder>,
    opts: IndexOptions,
    progress: &dyn Progress,
) -> Result<IngestResult> {
    /// Products read and re-embedded per page (the catalog is never held whole).
    const PAGE: usize = 1_000;
    let lock = take_lock(data, opts.lock_wait)?;
    if engine.model()?.is_none() {
        return Err(IndexError::Invalid(format!("{} has no index to reindex", engine.url())));
    }
    let total = engine.product_count()?;
    let reindex = engine.begin_reindex(embedder.model_id())?;
    let model = embedder.model_id().clone();
    let ix = Indexer::new(data, ProductStore::Engine(reindex.writer().clone()), Some(embedder), model, opts, lock);
    let mut res = IngestResult::default();
    progress.start(total);
    let mut processed = 0;
    loop {
        // By ord: the reindex is the only writer now, and it keeps every product's ord.
        let (prior, _) = engine.list_products(None, processed as usize, PAGE)?;
        let records: Vec<Record> = prior
            .iter()
            .enumerate()
            .map(|(i, p)| Record { line: processed as usize + i + 1, product: p.product.clone() })
            .collect();
        processed = ix.run_chunks(&records, Some(&prior), &mut res, processed, progress, false)?;
        if prior.len() < PAGE {
            break;
        }
    }
    reindex.commit()?;
    res.report = ix.write_report(&res.failures)?;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use vitrine_model::FakeEmbedder;

    use super::*;

    fn product(id: &str, title: &str) -> Product {
        Product { id: id.into(), title: Some(title.into()), ..Default::default() }
    }

    fn fake(dim: usize) -> Arc<dyn Embedder> {
        Arc::new(FakeEmbedder::new(dim))
    }

    fn records(products: &[Product]) -> Vec<Record> {
        products.iter().enumerate().map(|(i, p)| Record { line: i + 1, product: p.clone() }).collect()
    }

    #[test]
    fn a_rerun_skips_what_did_not_change_and_counts_each_kind_of_change() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Indexer::open(dir.path(), fake(16), IndexOptions::default()).unwrap();
        let first = [product("a", "red mug"), product("b", "blue lamp"), product("c", "oak chair")];
        let s = ix.ingest(records(&first), vec![], false, &NoProgress).unwrap().summary;
        assert_eq!((s.ingested, s.unchanged, s.updated, s.deleted, s.failed), (3, 0, 0, 0, 0));
        let s = ix.ingest(records(&first), vec![], false, &NoProgress).unwrap().summary;
        assert_eq!((s.ingested, s.unchanged, s.updated), (0, 3, 0), "same content, same hash: nothing re-embedded");
        let second = [product("a", "red mug"), product("b", "green lamp")];
        let s = ix.ingest(records(&second), vec![], true, &NoProgress).unwrap().summary;
        assert_eq!((s.ingested, s.unchanged, s.updated, s.deleted), (0, 1, 1, 1), "c left the catalog");
        let (_, m) = generation::current(dir.path()).unwrap().unwrap();
        assert_eq!(m.products, 2);
        assert_eq!(ix.products().get("b").unwrap().unwrap().product.title.as_deref(), Some("green lamp"));
        assert!(ix.products().get("c").unwrap().is_none());
    }

    #[test]
    fn parse_errors_become_failures_and_generations_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Indexer::open(dir.path(), fake(16), IndexOptions::default()).unwrap();
        let bad = catalog::RecordError { line: 2, id: None, reason: "malformed JSON".into() };
        let r = ix.ingest(records(&[product("a", "mug")]), vec![bad], false, &NoProgress).unwrap();
        assert_eq!((r.summary.ingested, r.summary.failed), (1, 1));
        assert_eq!(r.failures[0].line, Some(2));
        assert_eq!(r.failures[0].severity, Severity::Error);
        let g1 = generation::current(dir.path()).unwrap().unwrap().1.generation;
        ix.put(vec![product("b", "lamp")]).unwrap();
        let g2 = generation::current(dir.path()).unwrap().unwrap().1.generation;
        assert!(g2 > g1, "{g2} after {g1}");
        assert_eq!(ix.delete(&["b".into(), "nope".into()]).unwrap(), ["b"], "only ids that existed come back");
        let (_, m) = generation::current(dir.path()).unwrap().unwrap();
        assert!(m.generation > g2 && m.products == 1, "{m:?}");
    }

    #[test]
    fn another_model_is_refused_with_both_models_named() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Indexer::open(dir.path(), fake(16), IndexOptions::default()).unwrap();
        ix.put(vec![product("a", "mug")]).unwrap();
        drop(ix);
        match Indexer::open(dir.path(), fake(32), IndexOptions::default()) {
            Err(IndexError::ModelMismatch { have, want, .. }) => assert_eq!((have.dim, want.dim), (16, 32)),
            Err(e) => panic!("expected ModelMismatch, got {e}"),
            Ok(_) => panic!("expected ModelMismatch, got a writer"),
        }
        // The same model opens again, and without a model the store's own is used.
        assert!(Indexer::open(dir.path(), fake(16), IndexOptions::default()).is_ok());
    }

    /// FakeEmbedder, except that each prompt named in `prompts` embeds as the given vector (an
    /// image's), so a test decides which label an image is closest to.
    struct PromptEmbedder {
        inner: FakeEmbedder,
        prompts: HashMap<String, Vec<f32>>,
    }

    impl Embedder for PromptEmbedder {
        fn model_id(&self) -> &ModelId {
            self.inner.model_id()
        }
        fn device(&self) -> vitrine_model::Device {
            self.inner.device()
        }
        fn preprocessor(&self) -> &vitrine_model::Preprocessor {
            self.inner.preprocessor()
        }
        fn embed_pixels(&self, pixels: &[f32], n: usize) -> vitrine_core::Result<Vec<Vec<f32>>> {
            self.inner.embed_pixels(pixels, n)
        }
        fn embed_texts(&self, texts: &[&str]) -> vitrine_core::Result<Vec<Vec<f32>>> {
            let mut out = self.inner.embed_texts(texts)?;
            for (v, t) in out.iter_mut().zip(texts) {
                if let Some(p) = self.prompts.get(*t) {
                    v.clone_from(p);
                }
            }
            Ok(out)
        }
        fn token_ids(&self, text: &str) -> vitrine_core::Result<Vec<u32>> {
            self.inner.token_ids(text)
        }
    }

    fn colours(margin: f32) -> TagVocabulary {
        TagVocabulary::parse_json(&format!(r#"{{"colour": {{"labels": ["red", "blue", "green"], "margin": {margin}}}}}"#))
            .unwrap()
    }

    fn auto(ix: &Indexer, id: &str) -> (Option<String>, String) {
        let p = ix.products().get(id).unwrap().unwrap();
        (p.auto.auto_attributes.get("colour").cloned(), p.auto.tagged_with)
    }

    #[test]
    fn tags_are_assigned_past_the_margin_never_over_the_catalog_and_redone_when_the_vocabulary_changes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let solid = |name: &str, rgb: [u8; 3]| {
            let path = dir.path().join(name);
            image::RgbImage::from_pixel(40, 40, image::Rgb(rgb)).save(&path).unwrap();
            path.display().to_string()
        };
        let (red, blue) = (solid("red.png", [220, 20, 20]), solid("blue.png", [20, 20, 220]));
        let with = |id: &str, img: &str, attrs: &[(&str, &str)]| Product {
            images: vec![img.to_string()],
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..product(id, "thing")
        };
        let catalog = records(&[
            with("a", &red, &[]),
            with("b", &blue, &[]),
            with("c", &red, &[("colour", "crimson")]),
            product("d", "no image at all"),
        ]);
        let opts = |tags: TagVocabulary| IndexOptions { tags, ..IndexOptions::for_catalog(&dir.path().join("c.jsonl")) };
        // Without a vocabulary nothing is tagged, and the fingerprint stays empty.
        let ix = Indexer::open(&data, fake(32), opts(TagVocabulary::default())).unwrap();
        ix.ingest(catalog.clone(), vec![], false, &NoProgress).unwrap();
        assert_eq!(auto(&ix, "a"), (None, String::new()));
        let image = |id: &str| ix.products().image_vectors(&ix.products().get(id).unwrap().unwrap()).unwrap().remove(0);
        let (red_v, blue_v) = (image("a"), image("b"));
        drop(ix);
        let prompt = |l: &str| format!("a photo of a {l} product");
        let embedder = || -> Arc<dyn Embedder> {
            let prompts = HashMap::from([(prompt("red"), red_v.clone()), (prompt("blue"), blue_v.clone())]);
            Arc::new(PromptEmbedder { inner: FakeEmbedder::new(32), prompts })
        };
        // A vocabulary appears: the unchanged catalog is re-tagged from the stored vectors.
        let ix = Indexer::open(&data, embedder(), opts(colours(0.05))).unwrap();
        let fp = colours(0.05).fingerprint(ix.model());
        let s = ix.ingest(catalog.clone(), vec![], false, &NoProgress).unwrap().summary;
        assert_eq!((s.ingested, s.updated, s.unchanged), (0, 4, 0), "every product now carries the new fingerprint");
        assert_eq!(auto(&ix, "a"), (Some("red".into()), fp.clone()));
        assert_eq!(auto(&ix, "b"), (Some("blue".into()), fp.clone()));
        assert_eq!(auto(&ix, "c"), (None, fp.clone()), "the catalog's colour wins");
        assert_eq!(ix.products().get("c").unwrap().unwrap().all_attributes().count(), 1);
        assert_eq!(auto(&ix, "d"), (None, fp.clone()), "no image, no tag");
        let s = ix.ingest(catalog.clone(), vec![], false, &NoProgress).unwrap().summary;
        assert_eq!((s.updated, s.unchanged), (0, 4), "same vocabulary: nothing to redo");
        // A new product is tagged on the way in.
        ix.put(vec![with("e", &blue, &[])]).unwrap();
        assert_eq!(auto(&ix, "e"), (Some("blue".into()), fp));
        drop(ix);
        // A margin no label can beat: the next ingest takes every tag away.
        let ix = Indexer::open(&data, embedder(), opts(colours(2.0))).unwrap();
        ix.ingest(catalog, vec![], false, &NoProgress).unwrap();
        assert_eq!(auto(&ix, "a").0, None);
        assert_eq!(auto(&ix, "e").0, Some("blue".into()), "not in this catalog run: left as it was");
    }

    #[test]
    fn a_second_writer_waits_then_gets_busy() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Indexer::open(dir.path(), fake(16), IndexOptions::default()).unwrap();
        let quick = IndexOptions { lock_wait: Duration::from_millis(100), ..IndexOptions::default() };
        let started = std::time::Instant::now();
        match Indexer::open_without_model(dir.path(), quick) {
            Err(IndexError::Busy { waited, .. }) => assert_eq!(waited, Duration::from_millis(100)),
            Err(e) => panic!("expected Busy, got {e}"),
            Ok(_) => panic!("two writers held one directory"),
        }
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
