//! Ingest jobs of the service: every `POST /v1/ingest` becomes a job, persisted as
//! `DATA/jobs/ID.json` with its catalog beside it, and run one at a time by the write service's
//! worker ([`crate::service::WriteService`]). Jobs survive restarts: one that was queued or running
//! when the service stopped is queued again and resumes, and since ingest skips unchanged products
//! by hash, what was already written is not redone.
//!
//! Durability order: the catalog is written and fsynced (file and folder) before the job record
//! that names it, so a job record never points at a missing or partial catalog.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use vitrine_store::generation::atomic_write;

use vitrine_core::CoreError;

use crate::catalog::Format;
use crate::upload::StagedUpload;
use crate::{Failure, Progress, Severity, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    pub state: JobState,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub total: u64,
    pub processed: u64,
    pub rate_per_s: f64,
    pub eta_s: Option<f64>,
    pub counts: Summary,
    pub error: Option<String>,
    pub delete_missing: bool,
    /// How many times the job was resumed after a restart.
    pub resumed: u32,
    pub failures_url: String,
    /// The failure report in the data directory, once written.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub report: Option<PathBuf>,
    /// Catalog file name inside the jobs folder (its extension selects the format).
    pub catalog: String,
    /// Records indexed without something (an image that could not be loaded), each a `warning`
    /// line of the report. Counted when the job ends.
    #[serde(default)]
    pub warnings: u64,
    /// For a catalog uploaded with its images: the folder (inside the jobs folder) its relative
    /// image paths resolve in, and nowhere else. Removed when the job ends.
    #[serde(default)]
    pub files: Option<String>,
}

impl Job {
    /// A job just submitted: queued, nothing processed.
    pub fn queued(id: String, catalog: String, delete_missing: bool) -> Job {
        Job {
            failures_url: format!("/v1/jobs/{id}/failures"),
            id,
            state: JobState::Queued,
            created_at: now(),
            started_at: None,
            finished_at: None,
            total: 0,
            processed: 0,
            rate_per_s: 0.0,
            eta_s: None,
            counts: Summary::default(),
            error: None,
            delete_missing,
            resumed: 0,
            report: None,
            catalog,
            warnings: 0,
            files: None,
        }
    }
}

pub struct Jobs {
    dir: PathBuf,
    jobs: Mutex<BTreeMap<String, Job>>,
    tx: std::sync::mpsc::Sender<String>,
    rx: Mutex<Option<std::sync::mpsc::Receiver<String>>>,
    /// On the engine backend, every saved status is also written there, so any node answers for
    /// any job (its catalog, uploaded files and failure report stay with the node that runs it).
    shared: Option<vitrine_engine::Engine>,
}

fn now() -> u64 {
    vitrine_store::generation::now_secs()
}

impl Jobs {
    /// Load persisted jobs; queued or running ones are queued again.
    pub fn open(data: &Path) -> std::io::Result<Arc<Self>> {
        Self::open_shared(data, None)
    }

    /// [`Jobs::open`], publishing each job's status to the engine too (`shared`).
    pub fn open_shared(data: &Path, shared: Option<vitrine_engine::Engine>) -> std::io::Result<Arc<Self>> {
        let dir = data.join("jobs");
        std::fs::create_dir_all(&dir)?;
        // Uploads that a crash interrupted before they became jobs.
        crate::upload::remove_stale(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut jobs = BTreeMap::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(mut job) = serde_json::from_slice::<Job>(&std::fs::read(&p)?) else { continue };
            if matches!(job.state, JobState::Queued | JobState::Running) {
                let files_there = job.files.as_ref().is_none_or(|f| dir.join(f).is_dir());
                if dir.join(&job.catalog).is_file() && files_there {
                    if job.state == JobState::Running {
                        job.resumed += 1;
                    }
                    job.state = JobState::Queued;
                } else {
                    job.state = JobState::Failed;
                    job.error = Some("interrupted by a restart, and its catalog or uploaded files are gone".into());
                }
            }
            jobs.insert(job.id.clone(), job);
        }
        let me = Arc::new(Jobs { dir, jobs: Mutex::new(jobs), tx, rx: Mutex::new(Some(rx)), shared });
        let queued: Vec<(u64, String)> =
            me.jobs.lock().values().filter(|j| j.state == JobState::Queued).map(|j| (j.created_at, j.id.clone())).collect();
        let mut queued = queued;
        queued.sort();
        for (_, id) in queued {
            me.save(&id);
            let _ = me.tx.send(id);
        }
        Ok(me)
    }

    pub(crate) fn save(&self, id: &str) {
        let saved = self.jobs.lock().get(id).map(|job| (job.created_at, serde_json::to_vec_pretty(job).expect("serializes")));
        if let Some((created_at, bytes)) = saved {
            let p = self.dir.join(format!("{id}.json"));
            if let Err(e) = atomic_write(&p, &bytes) {
                tracing::warn!("saving job {id}: {e}");
            }
            if let Some(engine) = &self.shared {
                // The local file is the job's own record; the engine's copy is for other nodes,
                // so a failure to publish is a warning and the next save retries.
                let doc = String::from_utf8_lossy(&bytes);
                if let Err(e) = engine.put_job(id, created_at, &doc) {
                    tracing::warn!("publishing job {id} to the engine: {e}");
                }
            }
        }
    }

    /// A job another node runs, as it last published it.
    fn shared_job(&self, id: &str) -> Option<Job> {
        let doc = self.shared.as_ref()?.job(id).map_err(|e| tracing::warn!("reading job {id} from the engine: {e}")).ok()??;
        serde_json::from_str(&doc).ok()
    }

    /// The queue of job ids, taken once by the worker.
    pub(crate) fn take_queue(&self) -> Option<std::sync::mpsc::Receiver<String>> {
        self.rx.lock().take()
    }

    /// The catalog file of a job.
    pub(crate) fn catalog_path(&self, job: &Job) -> PathBuf {
        self.dir.join(&job.catalog)
    }

    /// Persist a catalog (durably, before the job that names it) and queue a job for it.
    pub fn submit(&self, bytes: &[u8], format: Format, delete_missing: bool) -> vitrine_core::Result<Job> {
        self.submit_inner(bytes, format, delete_missing, None)
    }

    /// The folder uploads are staged in before they become jobs (a job takes its folder by a
    /// rename, so it must be on the same file system).
    pub fn staging_parent(&self) -> &Path {
        &self.dir
    }

    /// Queue a job for a catalog uploaded with its images: the staged folder becomes the job's
    /// (`ID.files`), durably, before the job record that names it.
    pub fn submit_upload(&self, mut upload: StagedUpload, delete_missing: bool) -> vitrine_core::Result<Job> {
        let id = new_id();
        let folder = format!("{id}.files");
        let target = self.dir.join(&folder);
        std::fs::rename(&upload.dir, &target).map_err(|e| CoreError::io(target.display().to_string(), e))?;
        upload.keep();
        let sync = std::fs::File::open(&self.dir).and_then(|d| d.sync_all());
        sync.map_err(|e| CoreError::io(self.dir.display().to_string(), e))?;
        let files = if upload.base.is_empty() { folder } else { format!("{folder}/{}", upload.base) };
        let r = self.submit_inner(&upload.catalog, upload.format, delete_missing, Some((id, files)));
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&target);
        }
        r
    }

    fn submit_inner(
        &self,
        bytes: &[u8],
        format: Format,
        delete_missing: bool,
        upload: Option<(String, String)>,
    ) -> vitrine_core::Result<Job> {
        let (id, files) = match upload {
            Some((id, files)) => (id, Some(files)),
            None => (new_id(), None),
        };
        let catalog = format!("{id}.{}", if format == Format::Csv { "csv" } else { "jsonl" });
        atomic_write(&self.dir.join(&catalog), bytes)?;
        let job = Job { files, ..Job::queued(id.clone(), catalog, delete_missing) };
        self.jobs.lock().insert(id.clone(), job.clone());
        self.save(&id);
        let _ = self.tx.send(id);
        Ok(job)
    }

    /// A job this node runs or ran: the only ones whose report files are here.
    fn local(&self, id: &str) -> Option<Job> {
        self.jobs.lock().get(id).cloned()
    }

    /// A job of this node, else (on the engine backend) one another node published.
    pub fn get(&self, id: &str) -> Option<Job> {
        let local = self.jobs.lock().get(id).cloned();
        local.or_else(|| self.shared_job(id))
    }

    /// This node's jobs and, on the engine backend, the newest ones of every node; newest first.
    pub fn list(&self) -> Vec<Job> {
        let mut v: Vec<Job> = self.jobs.lock().values().cloned().collect();
        if let Some(engine) = &self.shared {
            match engine.jobs(vitrine_engine::MAX_JOBS_LISTED) {
                Ok(docs) => {
                    let mine: std::collections::HashSet<String> = v.iter().map(|j| j.id.clone()).collect();
                    let others = docs.iter().filter_map(|d| serde_json::from_str::<Job>(d).ok());
                    v.extend(others.filter(|j| !mine.contains(&j.id)).collect::<Vec<_>>());
                }
                Err(e) => tracing::warn!("listing jobs from the engine: {e}"),
            }
        }
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        v
    }

    pub fn active(&self) -> usize {
        self.jobs.lock().values().filter(|j| matches!(j.state, JobState::Queued | JobState::Running)).count()
    }

    /// The folder a job's relative image paths resolve in, if it was uploaded with its images.
    pub(crate) fn files_path(&self, job: &Job) -> Option<PathBuf> {
        job.files.as_ref().map(|f| self.dir.join(f))
    }

    /// Remove the uploaded files of a job that ended (their images are in the media store now).
    pub(crate) fn remove_files(&self, job: &Job) {
        if let Some(top) = job.files.as_ref().and_then(|f| f.split('/').next()) {
            if top.ends_with(".files") && !top.starts_with('.') {
                if let Err(e) = std::fs::remove_dir_all(self.dir.join(top)) {
                    tracing::warn!("removing the uploaded files of job {}: {e}", job.id);
                }
            }
        }
    }

    /// One page of a job's failure report: `offset` and `limit` count lines, `severity` keeps
    /// only errors or only warnings. Reads the report line by line, so memory stays bounded by
    /// the page whatever the report's size. `None`: no such job; `Ok(None)`: its report was removed.
    pub fn report_page(
        &self,
        id: &str,
        offset: usize,
        limit: usize,
        severity: Option<Severity>,
    ) -> Option<std::io::Result<Option<ReportPage>>> {
        let job = self.local(id)?;
        let mut page = ReportPage { job_id: job.id.clone(), total: 0, errors: 0, warnings: 0, offset, limit, items: vec![] };
        let Some(path) = job.report else { return Some(Ok(Some(page))) };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Ok(None)),
            Err(e) => return Some(Err(e)),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            // A line is a few hundred bytes; one past 64 kB is not ours and is cut off.
            match std::io::BufRead::read_until(&mut (&mut reader).take(64 << 10), b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            let Ok(f) = serde_json::from_slice::<Failure>(&line) else { continue };
            match f.severity {
                Severity::Error => page.errors += 1,
                Severity::Warning => page.warnings += 1,
            }
            if severity.is_some_and(|s| s != f.severity) {
                continue;
            }
            if page.total >= offset && page.items.len() < limit {
                page.items.push(f);
            }
            page.total += 1;
        }
        Some(Ok(Some(page)))
    }

    pub(crate) fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs.lock().get_mut(id) {
            f(j);
        }
    }

    /// The failure report of a job as JSONL (empty when there were no failures). `Ok(None)` when
    /// the job exists but its report was removed (only the newest reports are kept).
    pub fn failures(&self, id: &str) -> Option<std::io::Result<Option<Vec<u8>>>> {
        let job = self.local(id)?;
        Some(match job.report {
            Some(p) => match std::fs::read(p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(Some(vec![])),
        })
    }
}

/// One page of a job's failure report (`GET /v1/jobs/{id}/report`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportPage {
    pub job_id: String,
    /// Lines that match the `severity` asked for (all lines without it).
    pub total: usize,
    /// Error lines (records skipped) and warning lines (records indexed without something).
    pub errors: usize,
    pub warnings: usize,
    pub offset: usize,
    pub limit: usize,
    /// Lines `offset..offset + limit` of the report, in catalog order.
    pub items: Vec<Failure>,
}

fn new_id() -> String {
    format!(
        "{:x}{:04x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
        rand_u16()
    )
}

pub(crate) struct JobProgress<'a> {
    pub(crate) jobs: &'a Jobs,
    pub(crate) id: String,
    pub(crate) started: Instant,
    pub(crate) last_save: Mutex<Instant>,
}

impl Progress for JobProgress<'_> {
    fn start(&self, total: u64) {
        self.jobs.update(&self.id, |j| {
            j.total = total;
            j.processed = 0;
        });
        self.jobs.save(&self.id);
    }
    fn update(&self, processed: u64, summary: &Summary) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.jobs.update(&self.id, |j| {
            j.processed = processed;
            j.counts = *summary;
            j.rate_per_s = processed as f64 / secs;
            j.eta_s = (j.rate_per_s > 0.0).then(|| j.total.saturating_sub(processed) as f64 / j.rate_per_s);
        });
        let mut last = self.last_save.lock();
        if last.elapsed().as_secs() >= 1 {
            *last = Instant::now();
            self.jobs.save(&self.id);
        }
    }
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now());
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_job(dir: &Path, id: &str, state: JobState, with_catalog: bool) {
        let jobs = dir.join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        let catalog = format!("{id}.jsonl");
        if with_catalog {
            std::fs::write(jobs.join(&catalog), "{\"id\":\"a\",\"title\":\"x\"}\n").unwrap();
        }
        let job = Job { state, created_at: 1, ..Job::queued(id.into(), catalog, false) };
        std::fs::write(jobs.join(format!("{id}.json")), serde_json::to_vec(&job).unwrap()).unwrap();
    }

    #[test]
    fn a_restart_requeues_unfinished_jobs_and_fails_those_without_a_catalog() {
        let dir = tempfile::tempdir().unwrap();
        write_job(dir.path(), "running", JobState::Running, true);
        write_job(dir.path(), "queued", JobState::Queued, true);
        write_job(dir.path(), "done", JobState::Done, true);
        write_job(dir.path(), "orphan", JobState::Running, false);
        let jobs = Jobs::open(dir.path()).unwrap();
        let running = jobs.get("running").unwrap();
        assert_eq!((running.state, running.resumed), (JobState::Queued, 1));
        assert_eq!(jobs.get("queued").unwrap().resumed, 0);
        assert_eq!(jobs.get("done").unwrap().state, JobState::Done);
        let orphan = jobs.get("orphan").unwrap();
        assert_eq!(orphan.state, JobState::Failed);
        assert!(orphan.error.unwrap().contains("catalog"));
        // Requeued jobs are on the queue, oldest first, and the new state is persisted.
        let queue = jobs.take_queue().unwrap();
        let mut queued: Vec<String> = queue.try_iter().collect();
        queued.sort();
        assert_eq!(queued, vec!["queued".to_string(), "running".to_string()]);
        let on_disk: Job = serde_json::from_slice(&std::fs::read(dir.path().join("jobs/running.json")).unwrap()).unwrap();
        assert_eq!(on_disk.state, JobState::Queued);
        assert_eq!(jobs.active(), 2);
    }

    #[test]
    fn a_restart_fails_an_uploaded_job_whose_files_are_gone_and_clears_stale_uploads() {
        let dir = tempfile::tempdir().unwrap();
        for (id, with_files) in [("kept", true), ("lost", false)] {
            write_job(dir.path(), id, JobState::Running, true);
            let p = dir.path().join(format!("jobs/{id}.json"));
            let mut job: Job = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            job.files = Some(format!("{id}.files"));
            std::fs::write(&p, serde_json::to_vec(&job).unwrap()).unwrap();
            if with_files {
                std::fs::create_dir_all(dir.path().join(format!("jobs/{id}.files"))).unwrap();
            }
        }
        let stale = dir.path().join("jobs/.upload-1-2-3");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(dir.path().join("jobs/.upload-1-2-3.zip"), b"PK").unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        assert_eq!(jobs.get("kept").unwrap().state, JobState::Queued);
        assert_eq!(jobs.get("lost").unwrap().state, JobState::Failed);
        assert!(!stale.exists() && !dir.path().join("jobs/.upload-1-2-3.zip").exists());
        let kept = jobs.get("kept").unwrap();
        jobs.remove_files(&kept);
        assert!(!dir.path().join("jobs/kept.files").exists());
    }

    #[test]
    fn submit_persists_the_catalog_with_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        let job = jobs.submit(b"id,title\na,x\n", Format::Csv, true).unwrap();
        assert!(job.catalog.ends_with(".csv"));
        assert_eq!(std::fs::read(jobs.catalog_path(&job)).unwrap(), b"id,title\na,x\n");
        let reopened = Jobs::open(dir.path()).unwrap();
        let again = reopened.get(&job.id).unwrap();
        assert_eq!((again.state, again.delete_missing), (JobState::Queued, true));
    }

    #[test]
    fn a_removed_report_is_told_apart_from_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        let job = jobs.submit(b"{}\n", Format::Jsonl, false).unwrap();
        assert_eq!(jobs.failures(&job.id).unwrap().unwrap(), Some(vec![]));
        jobs.update(&job.id, |j| j.report = Some(dir.path().join("reports/gone.jsonl")));
        assert_eq!(jobs.failures(&job.id).unwrap().unwrap(), None);
        assert!(jobs.failures("nope").is_none());
    }
}
