//! Ingest jobs: every `POST /v1/ingest` becomes a job, persisted as `DATA/jobs/ID.json` with its
//! catalog beside it, and run one at a time by a worker thread. Jobs survive restarts: one that
//! was queued or running when the service stopped is queued again and resumes, and since ingest
//! skips unchanged products by hash, what was already written is not redone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use vitrine_indexer::catalog::{parse_file, Format};
use vitrine_indexer::{Progress, Summary};
use vitrine_searcher::Searcher;

use crate::state::Writer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub report: Option<PathBuf>,
    /// Catalog file name inside the jobs folder (its extension selects the format).
    pub catalog: String,
}

pub struct Jobs {
    dir: PathBuf,
    jobs: Mutex<BTreeMap<String, Job>>,
    tx: crossbeam_channel::Sender<String>,
    rx: crossbeam_channel::Receiver<String>,
}

fn now() -> u64 {
    vitrine_core::generation::now_secs()
}

impl Jobs {
    /// Load persisted jobs; queued or running ones are queued again.
    pub fn open(data: &Path) -> std::io::Result<Arc<Self>> {
        let dir = data.join("jobs");
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut jobs = BTreeMap::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(mut job) = serde_json::from_slice::<Job>(&std::fs::read(&p)?) else { continue };
            if matches!(job.state, JobState::Queued | JobState::Running) {
                if dir.join(&job.catalog).is_file() {
                    if job.state == JobState::Running {
                        job.resumed += 1;
                    }
                    job.state = JobState::Queued;
                } else {
                    job.state = JobState::Failed;
                    job.error = Some("interrupted by a restart, and its catalog file is gone".into());
                }
            }
            jobs.insert(job.id.clone(), job);
        }
        let me = Arc::new(Jobs { dir, jobs: Mutex::new(jobs), tx, rx });
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

    fn save(&self, id: &str) {
        if let Some(job) = self.jobs.lock().get(id) {
            let p = self.dir.join(format!("{id}.json"));
            let _ = vitrine_core::generation::atomic_write(&p, &serde_json::to_vec_pretty(job).expect("serializes"));
        }
    }

    /// Persist a catalog and queue a job for it.
    pub fn submit(&self, bytes: &[u8], format: Format, delete_missing: bool) -> std::io::Result<Job> {
        let id = format!(
            "{:x}{:04x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
            rand_u16()
        );
        let catalog = format!("{id}.{}", if format == Format::Csv { "csv" } else { "jsonl" });
        std::fs::write(self.dir.join(&catalog), bytes)?;
        let job = Job {
            id: id.clone(),
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
            failures_url: format!("/v1/jobs/{id}/failures"),
            report: None,
            catalog,
        };
        self.jobs.lock().insert(id.clone(), job.clone());
        self.save(&id);
        let _ = self.tx.send(id);
        Ok(job)
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.jobs.lock().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Job> {
        let mut v: Vec<Job> = self.jobs.lock().values().cloned().collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        v
    }

    pub fn active(&self) -> usize {
        self.jobs.lock().values().filter(|j| matches!(j.state, JobState::Queued | JobState::Running)).count()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs.lock().get_mut(id) {
            f(j);
        }
    }

    /// The worker loop: run jobs one at a time, forever.
    pub fn run_worker(self: Arc<Self>, writer: Arc<Writer>, searcher: Arc<Searcher>) {
        for id in self.rx.clone() {
            let Some(job) = self.get(&id) else { continue };
            if job.state != JobState::Queued {
                continue;
            }
            writer.wait_for_model();
            self.update(&id, |j| {
                j.state = JobState::Running;
                j.started_at = Some(now());
            });
            self.save(&id);
            let outcome = self.run_one(&job, &writer);
            self.update(&id, |j| {
                j.finished_at = Some(now());
                j.eta_s = Some(0.0);
                match outcome {
                    Ok((counts, report)) => {
                        j.state = JobState::Done;
                        j.counts = counts;
                        j.processed = j.total;
                        j.report = report;
                    }
                    Err(e) => {
                        j.state = JobState::Failed;
                        j.error = Some(e);
                    }
                }
            });
            self.save(&id);
            if let Err(e) = searcher.refresh() {
                tracing::warn!("refresh after job {id}: {e}");
            }
        }
    }

    fn run_one(&self, job: &Job, writer: &Writer) -> Result<(Summary, Option<PathBuf>), String> {
        let path = self.dir.join(&job.catalog);
        let (records, errors) = parse_file(&path).map_err(|e| format!("reading the catalog: {e}"))?;
        let progress =
            JobProgress { jobs: self, id: job.id.clone(), started: Instant::now(), last_save: Mutex::new(Instant::now()) };
        let res = writer.with(|ix| Ok(ix.ingest(records, errors, job.delete_missing, &progress)?)).map_err(|e| e.to_string())?;
        Ok((res.summary, res.report))
    }

    /// The failure report of a job as JSONL (empty when there were no failures).
    pub fn failures(&self, id: &str) -> Option<std::io::Result<Vec<u8>>> {
        let job = self.get(id)?;
        Some(match job.report {
            Some(p) => std::fs::read(p),
            None => Ok(vec![]),
        })
    }
}

struct JobProgress<'a> {
    jobs: &'a Jobs,
    id: String,
    started: Instant,
    last_save: Mutex<Instant>,
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
