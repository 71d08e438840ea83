//! The write service: the one writer of a data directory inside the server.
//!
//! It owns the [`Indexer`] (opened on first use, closed after `idle_close` so that a `vitrine
//! index` run can take the directory while the service is idle), product put/delete/batch, ingest
//! jobs (queue, persistence, resume), and telling readers that a new generation exists (the
//! `on_generation` callback, which the server points at its searcher).
//!
//! Short writes never wait behind a long job: a job runs chunk by chunk
//! ([`Indexer::ingest_step`]) and releases the writer between chunks with a fair unlock, so a
//! PUT waiting for the writer goes next.
//!
//! Threading: one job worker thread, one idle-closer thread; every other method blocks on the
//! writer and is meant for a blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vitrine_core::catalog::Product;
use vitrine_model::{Embedder, ModelSlot};

use crate::catalog::{parse_file, Format};
use crate::jobs::{Job, JobProgress, JobState, Jobs};
use crate::upload::{StagedUpload, UploadError};
use crate::{IndexError, IndexOptions, Indexer, IngestResult, IngestRun, LocalFiles, Severity};

/// A snapshot the service wrote: its folder's name in the snapshot directory, and what it holds.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub name: String,
    #[serde(flatten)]
    pub info: crate::snapshot::SnapshotInfo,
}

/// Called after a write made a new generation live.
pub type GenerationListener = Box<dyn Fn() + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the model is still loading")]
    NotReady,
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("job {id} not found")]
    JobNotFound { id: String },
    #[error("the failure report of job {id} was removed (only the newest reports are kept)")]
    ReportGone { id: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// An upload (a zip, or a catalog with its images) that was refused.
    #[error("upload refused: {0}")]
    Upload(#[from] UploadError),
}

impl From<vitrine_core::CoreError> for WriteError {
    fn from(e: vitrine_core::CoreError) -> Self {
        WriteError::Index(IndexError::Core(e))
    }
}

pub type Result<T, E = WriteError> = std::result::Result<T, E>;

/// Settings of the write service.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    pub data: PathBuf,
    /// Ingest settings for products and jobs sent over HTTP.
    pub index: IndexOptions,
    /// Close the writer (and free the data directory) after this long without a write.
    pub idle_close: Duration,
    /// Where `POST /v1/snapshots` writes snapshots, each in a folder named by the service.
    pub snapshot_dir: PathBuf,
    /// The engine backend, when products live there (`None`: the embedded store in `data`).
    pub engine: Option<vitrine_engine::Engine>,
}

impl WriteConfig {
    /// Settings for the server. `index.lock_wait` is how long a write that finds another process
    /// holding the data directory waits before [`IndexError::Busy`] (409): keep it short, a request
    /// thread waits that long.
    /// Snapshots go to `snapshots/` beside the data directory until [`WriteConfig::snapshot_dir`]
    /// says otherwise.
    pub fn new(data: PathBuf, index: IndexOptions) -> Self {
        let snapshot_dir = data.parent().unwrap_or(Path::new(".")).join("snapshots");
        WriteConfig { data, index, idle_close: Duration::from_secs(10), snapshot_dir, engine: None }
    }
}

pub struct WriteService {
    config: WriteConfig,
    model: ModelSlot,
    writer: Mutex<Option<(Indexer, Instant)>>,
    jobs: Arc<Jobs>,
    on_generation: GenerationListener,
}

impl WriteService {
    /// Open the jobs folder, start the job worker and the idle closer. Queued jobs wait for the
    /// model (the worker starts them once it is set).
    pub fn start(config: WriteConfig, model: ModelSlot, on_generation: GenerationListener) -> Result<Arc<Self>> {
        // Creates the data directory (with its format version) or checks the one there.
        vitrine_migrations::open(&config.data).map_err(IndexError::from)?;
        let jobs = Jobs::open_shared(&config.data, config.engine.clone())
            .map_err(|e| WriteError::Io { context: config.data.join("jobs").display().to_string(), source: e })?;
        let me = Arc::new(WriteService { config, model, writer: Mutex::new(None), jobs, on_generation });
        let queue = me.jobs.take_queue().expect("a new Jobs has its queue");
        let worker = me.clone();
        std::thread::Builder::new()
            .name("ingest-jobs".into())
            .spawn(move || {
                for id in queue {
                    worker.run_job(&id);
                }
            })
            .expect("thread");
        let closer = Arc::downgrade(&me);
        std::thread::Builder::new()
            .name("writer-idle".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                match closer.upgrade() {
                    Some(s) => s.close_if_idle(),
                    None => return,
                }
            })
            .expect("thread");
        Ok(me)
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Bring the derived indexes in line with the store without the model: after a crash, writes
    /// that were acknowledged (durable in the store) become searchable now rather than at the
    /// next write. A directory with no index yet has nothing to repair.
    pub fn repair(&self) -> Result<()> {
        if self.config.engine.is_some() {
            // The engine indexes at commit: an acknowledged write is already searchable.
            return Ok(());
        }
        if crate::recover(&self.config.data, self.config.index.clone())?.is_some() {
            (self.on_generation)();
        }
        Ok(())
    }

    fn embedder(&self) -> Result<Arc<dyn Embedder>> {
        self.model.get().cloned().ok_or(WriteError::NotReady)
    }

    /// Run `f` with the writer, opening it if needed (blocking).
    fn with<T>(&self, f: impl FnOnce(&Indexer) -> Result<T>) -> Result<T> {
        self.with_files(None, f)
    }

    /// [`WriteService::with`], with local image paths read by `files` instead of the service's
    /// policy for as long as `f` runs: an upload's relative paths resolve inside the upload only.
    fn with_files<T>(&self, files: Option<&LocalFiles>, f: impl FnOnce(&Indexer) -> Result<T>) -> Result<T> {
        /// Puts the service's policy back even if `f` panics (the writer outlives this call).
        struct Swapped<'a> {
            ix: &'a mut Indexer,
            saved: Option<LocalFiles>,
        }
        impl Drop for Swapped<'_> {
            fn drop(&mut self) {
                if let Some(saved) = self.saved.take() {
                    self.ix.opts.local_files = saved;
                }
            }
        }
        let mut guard = self.writer.lock();
        if guard.is_none() {
            let (data, opts) = (&self.config.data, self.config.index.clone());
            let ix = match &self.config.engine {
                Some(engine) => Indexer::open_engine(data, engine.clone(), Some(self.embedder()?), opts)?,
                None => Indexer::open(data, self.embedder()?, opts)?,
            };
            *guard = Some((ix, Instant::now()));
        }
        let (ix, used) = guard.as_mut().expect("just opened");
        let saved = files.map(|files| std::mem::replace(&mut ix.opts.local_files, files.clone()));
        let swapped = Swapped { ix, saved };
        let r = f(swapped.ix);
        drop(swapped);
        *used = Instant::now();
        // A fair unlock hands the writer to a waiting write before this thread can retake it.
        parking_lot::MutexGuard::unlock_fair(guard);
        r
    }

    /// Close the writer now (waits for a write in progress).
    pub fn close(&self) {
        *self.writer.lock() = None;
    }

    fn close_if_idle(&self) {
        if let Some(mut g) = self.writer.try_lock() {
            if g.as_ref().is_some_and(|(_, t)| t.elapsed() > self.config.idle_close) {
                *g = None;
                tracing::debug!("writer closed (idle)");
            }
        }
    }

    /// Upsert products; durable and searchable when this returns.
    pub fn put(&self, products: Vec<Product>) -> Result<IngestResult> {
        let res = self.with(|ix| Ok(ix.put(products)?))?;
        (self.on_generation)();
        Ok(res)
    }

    /// Upsert products whose relative image paths name files of `upload` (and only those): a
    /// product's images uploaded by the admin. Durable and searchable when this returns; the
    /// upload's folder is removed when `upload` is dropped.
    pub fn put_with_files(&self, products: Vec<Product>, upload: &StagedUpload) -> Result<IngestResult> {
        let files = LocalFiles::Roots(vec![upload.root()]);
        let res = self.with_files(Some(&files), |ix| Ok(ix.put(products)?))?;
        (self.on_generation)();
        Ok(res)
    }

    /// Delete products by id; returns the ids that existed. Searchable when this returns.
    pub fn delete(&self, ids: &[String]) -> Result<Vec<String>> {
        let gone = self.with(|ix| Ok(ix.delete(ids)?))?;
        (self.on_generation)();
        Ok(gone)
    }

    /// Write a consistent snapshot of the data directory into a new folder of
    /// [`WriteConfig::snapshot_dir`], named `snapshot-<unix seconds>` by the service
    /// (a client never names a path). Holds the writer while it copies: writes wait, reads do not.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let dir = &self.config.snapshot_dir;
        std::fs::create_dir_all(dir).map_err(|e| WriteError::Io { context: dir.display().to_string(), source: e })?;
        self.with(|ix| {
            let base = format!("snapshot-{}", vitrine_store::generation::now_secs());
            let mut name = base.clone();
            for n in 2.. {
                if !dir.join(&name).exists() {
                    break;
                }
                name = format!("{base}-{n}");
            }
            let info = crate::snapshot::create(ix, &dir.join(&name))?;
            Ok(Snapshot { name, info })
        })
    }

    /// The snapshots in [`WriteConfig::snapshot_dir`], newest first. Folders without a readable
    /// `SNAPSHOT.json` (another program's, or a copy in progress) are left out.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let dir = &self.config.snapshot_dir;
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(WriteError::Io { context: dir.display().to_string(), source: e }),
        };
        let mut out: Vec<Snapshot> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let info = crate::snapshot::read_info(&e.path()).ok()?;
                name.starts_with("snapshot-").then_some(Snapshot { name, info })
            })
            .collect();
        out.sort_by(|a, b| (b.info.created_at, &b.name).cmp(&(a.info.created_at, &a.name)));
        Ok(out)
    }

    /// Persist a catalog and queue an ingest job for it.
    pub fn submit(&self, catalog: &[u8], format: Format, delete_missing: bool) -> Result<Job> {
        Ok(self.jobs.submit(catalog, format, delete_missing)?)
    }

    /// Queue an ingest job for a catalog uploaded with its images (see [`crate::upload`]).
    pub fn submit_upload(&self, upload: StagedUpload, delete_missing: bool) -> Result<Job> {
        Ok(self.jobs.submit_upload(upload, delete_missing)?)
    }

    /// The failure report of a job, as JSONL.
    pub fn job_failures(&self, id: &str) -> Result<Vec<u8>> {
        match self.jobs.failures(id) {
            None => Err(WriteError::JobNotFound { id: id.to_string() }),
            Some(Ok(Some(bytes))) => Ok(bytes),
            Some(Ok(None)) => Err(WriteError::ReportGone { id: id.to_string() }),
            Some(Err(e)) => Err(WriteError::Io { context: format!("report of job {id}"), source: e }),
        }
    }

    fn run_job(&self, id: &str) {
        let Some(job) = self.jobs.get(id) else { return };
        if job.state != JobState::Queued {
            return;
        }
        // Jobs queued at start wait for the model.
        while self.model.get().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.jobs.update(id, |j| {
            j.state = JobState::Running;
            j.started_at = Some(vitrine_store::generation::now_secs());
        });
        self.jobs.save(id);
        let outcome = self.run_job_chunks(&job);
        // Readers move to the job's last generation before anyone can see the job done.
        (self.on_generation)();
        self.jobs.update(id, |j| {
            j.finished_at = Some(vitrine_store::generation::now_secs());
            j.eta_s = Some(0.0);
            match outcome {
                Ok(res) => {
                    j.state = JobState::Done;
                    j.counts = res.summary;
                    j.warnings = res.failures.iter().filter(|f| f.severity == Severity::Warning).count() as u64;
                    j.processed = j.total;
                    j.report = res.report;
                }
                Err(e) => {
                    j.state = JobState::Failed;
                    j.error = Some(e.to_string());
                }
            }
        });
        self.jobs.save(id);
        // Its images are in the media store now (or reported); a job that ended is not resumed.
        self.jobs.remove_files(&job);
    }

    fn run_job_chunks(&self, job: &Job) -> Result<IngestResult> {
        let path = self.jobs.catalog_path(job);
        let (records, errors) = parse_file(&path)
            .map_err(|e| WriteError::Io { context: format!("reading the catalog of job {}", job.id), source: e })?;
        let progress =
            JobProgress { jobs: &self.jobs, id: job.id.clone(), started: Instant::now(), last_save: Mutex::new(Instant::now()) };
        let mut run = IngestRun::new(&records, errors, job.delete_missing, &progress);
        // An uploaded catalog's relative image paths resolve inside its upload, and nowhere else.
        let files = self.jobs.files_path(job).map(|root| LocalFiles::Roots(vec![root]));
        let records = self.with_files(files.as_ref(), |ix| Ok(ix.resolve_images(records, &mut run.res)))?;
        let chunk = self.config.index.chunk.max(1);
        for part in records.chunks(chunk) {
            if self.with_files(files.as_ref(), |ix| Ok(ix.ingest_step(&mut run, part, &progress)?))? {
                (self.on_generation)();
            }
        }
        self.with(|ix| Ok(ix.finish_ingest(run, &progress)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use vitrine_model::FakeEmbedder;

    use super::*;

    fn service(dir: &Path) -> (Arc<WriteService>, Arc<AtomicUsize>) {
        let notified = Arc::new(AtomicUsize::new(0));
        let n = notified.clone();
        let model = ModelSlot::default();
        model.set(Arc::new(FakeEmbedder::new(8))).ok();
        let config = WriteConfig::new(dir.to_path_buf(), IndexOptions { chunk: 2, ..IndexOptions::default() });
        let svc = WriteService::start(
            config,
            model,
            Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        (svc, notified)
    }

    fn product(id: &str, title: &str) -> Product {
        Product { id: id.into(), title: Some(title.into()), ..Default::default() }
    }

    #[test]
    fn writes_tell_readers_and_are_visible_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, notified) = service(dir.path());
        let res = svc.put(vec![product("a", "red mug"), product("b", "blue bag")]).unwrap();
        assert_eq!(res.summary.ingested, 2);
        assert_eq!(notified.load(Ordering::SeqCst), 1);
        let (_, m) = vitrine_store::generation::current(dir.path()).unwrap().unwrap();
        assert_eq!(m.products, 2);
        assert_eq!(svc.delete(&["a".into(), "zz".into()]).unwrap(), vec!["a".to_string()]);
        let (_, m) = vitrine_store::generation::current(dir.path()).unwrap().unwrap();
        assert_eq!(m.products, 1);
    }

    #[test]
    fn writes_wait_for_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let config = WriteConfig::new(dir.path().to_path_buf(), IndexOptions::default());
        let svc = WriteService::start(config, ModelSlot::default(), Box::new(|| {})).unwrap();
        assert!(matches!(svc.put(vec![product("a", "mug")]), Err(WriteError::NotReady)));
    }

    #[test]
    fn a_job_runs_to_done_with_exact_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _) = service(dir.path());
        let catalog: String = (0..5).map(|i| format!("{{\"id\":\"p{i}\",\"title\":\"thing {i}\"}}\n")).collect();
        let job = svc.submit(catalog.as_bytes(), Format::Jsonl, false).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let done = loop {
            let j = svc.jobs().get(&job.id).unwrap();
            if matches!(j.state, JobState::Done | JobState::Failed) || Instant::now() > deadline {
                break j;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(done.state, JobState::Done, "{:?}", done.error);
        assert_eq!((done.counts.ingested, done.total, done.processed), (5, 5, 5));
        assert_eq!(svc.job_failures(&job.id).unwrap(), Vec::<u8>::new());
        assert!(matches!(svc.job_failures("nope"), Err(WriteError::JobNotFound { .. })));
    }

    fn wait_done(svc: &WriteService, id: &str) -> Job {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j = svc.jobs().get(id).unwrap();
            if matches!(j.state, JobState::Done | JobState::Failed) || Instant::now() > deadline {
                return j;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn png(seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([seed, (x * 7) as u8, (y * 9) as u8]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn an_uploaded_catalog_loads_its_images_only_from_the_upload_and_warns_about_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _) = service(dir.path());
        // A file beside the data directory that a hostile catalog tries to reach.
        std::fs::write(dir.path().join("secret.png"), png(9)).unwrap();
        let catalog = concat!(
            "{\"id\":\"a\",\"title\":\"red mug\",\"image\":\"images/a.png\"}\n",
            "{\"id\":\"b\",\"title\":\"blue bag\",\"image\":\"images/missing.png\"}\n",
            "{\"id\":\"c\",\"title\":\"green hat\",\"image\":\"../../secret.png\"}\n",
            "{\"id\":\"d\",\"image\":\"images/missing.png\"}\n",
        );
        let mut staging = crate::upload::Staging::new(svc.jobs().staging_parent(), Default::default()).unwrap();
        staging.add_catalog("shop/catalog.jsonl", Format::Jsonl, catalog.as_bytes()).unwrap();
        staging.add_file("shop/images/a.png", &png(1)[..], None).unwrap();
        let job = svc.submit_upload(staging.finish().unwrap(), false).unwrap();
        let files = svc.jobs().files_path(&job).unwrap();
        assert!(files.join("images/a.png").is_file());
        let done = wait_done(&svc, &job.id);
        assert_eq!(done.state, JobState::Done, "{:?}", done.error);
        // d has no text, and its one image is not in the upload: a warning for the image, then an error.
        assert_eq!((done.counts.ingested, done.counts.failed, done.warnings), (3, 1, 3), "{done:?}");
        assert!(!files.exists(), "the uploaded files are removed when the job ends");
        let media = crate::MediaStore::new(dir.path()).usage();
        assert_eq!(media.files, 1, "only the uploaded image is stored, never the file outside the upload");
        let page = svc.jobs().report_page(&job.id, 0, 10, None).unwrap().unwrap().unwrap();
        assert_eq!((page.total, page.errors, page.warnings), (4, 1, 3));
        let lines: Vec<_> = page.items.iter().map(|f| (f.line, f.id.as_deref(), f.severity)).collect();
        let (w, e) = (Severity::Warning, Severity::Error);
        assert_eq!(
            lines,
            vec![(Some(2), Some("b"), w), (Some(3), Some("c"), w), (Some(4), Some("d"), w), (Some(4), Some("d"), e)]
        );
        assert!(page.items[1].reason.contains("`..`"), "{:?}", page.items[1]);
        let warnings = svc.jobs().report_page(&job.id, 1, 1, Some(Severity::Warning)).unwrap().unwrap().unwrap();
        assert_eq!((warnings.total, warnings.items.len(), warnings.items[0].id.as_deref()), (3, 1, Some("c")));
    }

    #[test]
    fn a_product_image_upload_stores_it_and_restores_the_service_policy() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _) = service(dir.path());
        let mut staging = crate::upload::Staging::new(svc.jobs().staging_parent(), Default::default()).unwrap();
        staging.add_file("front.png", &png(3)[..], None).unwrap();
        let upload = staging.finish_files();
        let p = Product { images: vec!["front.png".into()], ..product("a", "mug") };
        let res = svc.put_with_files(vec![p], &upload).unwrap();
        assert_eq!((res.summary.ingested, res.failures.len()), (1, 0), "{:?}", res.failures);
        assert_eq!(crate::MediaStore::new(dir.path()).usage().files, 1);
        // The upload's folder is not readable by later writes.
        let again = Product { images: vec!["front.png".into()], ..product("b", "bag") };
        let res = svc.put(vec![again]).unwrap();
        assert_eq!(res.failures.len(), 1, "{:?}", res.failures);
        let dir_of_upload = upload.dir.clone();
        drop(upload);
        assert!(!dir_of_upload.exists());
    }

    #[test]
    fn a_short_write_is_not_held_behind_a_long_job() {
        // The writer is released between job chunks: a put issued while a job runs completes
        // before the job does.
        let dir = tempfile::tempdir().unwrap();
        let (svc, _) = service(dir.path());
        let catalog: String = (0..2000).map(|i| format!("{{\"id\":\"p{i}\",\"title\":\"thing {i}\"}}\n")).collect();
        let job = svc.submit(catalog.as_bytes(), Format::Jsonl, false).unwrap();
        while svc.jobs().get(&job.id).unwrap().state == JobState::Queued {
            std::thread::sleep(Duration::from_millis(1));
        }
        svc.put(vec![product("quick", "quick write")]).unwrap();
        let j = svc.jobs().get(&job.id).unwrap();
        assert_eq!(j.state, JobState::Running, "the put waited for the whole job ({} of {} done)", j.processed, j.total);
    }
}
