//! Shared service state: the searcher, the model, the lazily opened writer, and the queue that
//! bounds inference work.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vitrine_core::Embedder;
use vitrine_indexer::{IndexOptions, Indexer};
use vitrine_searcher::Searcher;

use crate::error::{ApiError, ApiResult};
use crate::jobs::Jobs;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data: PathBuf,
    /// Needed for writes, ingest, jobs, stats and the admin API. `None` disables those endpoints.
    pub admin_key: Option<String>,
    /// When set, search needs this key (or the admin key).
    pub search_key: Option<String>,
    /// Largest accepted image upload, bytes.
    pub max_upload: usize,
    /// Largest accepted catalog upload, bytes.
    pub max_catalog: usize,
    /// Requests allowed to wait for or run inference before answering 503.
    pub queue_capacity: usize,
    pub ef_search: usize,
    /// Whether `image_url` queries may fetch from the network.
    pub allow_image_urls: bool,
    /// Whether `image_url` may point at loopback, private or link-local addresses. Off by default:
    /// the URL comes from whoever can search, and must not reach the server's own network.
    pub allow_private_image_urls: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data: PathBuf::from("data"),
            admin_key: None,
            search_key: None,
            max_upload: 20 << 20,
            max_catalog: 512 << 20,
            queue_capacity: 64,
            ef_search: 128,
            allow_image_urls: true,
            allow_private_image_urls: false,
        }
    }
}

/// A counting gate for inference: at most `capacity` requests inside, the rest get 503.
pub struct InferenceQueue {
    depth: AtomicUsize,
    pub capacity: usize,
}

pub struct QueueSlot<'a>(&'a InferenceQueue, &'a Metrics);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        let d = self.0.depth.fetch_sub(1, Ordering::SeqCst) - 1;
        self.1.queue_depth.set(d as i64);
    }
}

impl InferenceQueue {
    pub fn new(capacity: usize) -> Self {
        InferenceQueue { depth: AtomicUsize::new(0), capacity: capacity.max(1) }
    }
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }
    pub fn enter<'a>(&'a self, metrics: &'a Metrics) -> ApiResult<QueueSlot<'a>> {
        let d = self.depth.fetch_add(1, Ordering::SeqCst) + 1;
        if d > self.capacity {
            self.depth.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Overloaded(self.capacity));
        }
        metrics.queue_depth.set(d as i64);
        Ok(QueueSlot(self, metrics))
    }
}

/// The model, set once it is loaded and warmed (the service answers `/healthz` before that).
pub type ModelSlot = Arc<OnceLock<Arc<dyn Embedder>>>;

fn loaded(model: &ModelSlot) -> ApiResult<Arc<dyn Embedder>> {
    model.get().cloned().ok_or_else(|| ApiError::NotReady("the model is still loading".into()))
}

/// The single writer of the data directory, opened on first use and closed when idle, so that a
/// `vitrine index` run from the command line can take the directory while the service is idle.
pub struct Writer {
    data: PathBuf,
    model: ModelSlot,
    inner: Mutex<Option<(Indexer, Instant)>>,
}

const WRITER_IDLE: Duration = Duration::from_secs(10);

impl Writer {
    pub fn new(data: PathBuf, model: ModelSlot) -> Self {
        Writer { data, model, inner: Mutex::new(None) }
    }

    /// Run `f` with the writer (blocking; call from a blocking thread).
    pub fn with<T>(&self, f: impl FnOnce(&Indexer) -> ApiResult<T>) -> ApiResult<T> {
        let mut guard = self.inner.lock();
        if guard.is_none() {
            let ix = Indexer::open(&self.data, loaded(&self.model)?, IndexOptions::default())?;
            *guard = Some((ix, Instant::now()));
        }
        let (ix, used) = guard.as_mut().expect("just opened");
        *used = Instant::now();
        let r = f(ix);
        guard.as_mut().expect("still open").1 = Instant::now();
        r
    }

    /// Block until the model is set. The job worker starts before `vitrine serve` has loaded its
    /// model, and a job it ran then (one resumed after a restart) would fail as "not ready".
    pub fn wait_for_model(&self) {
        while self.model.get().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Close the store now (waits for a write in progress).
    pub fn close(&self) {
        *self.inner.lock() = None;
    }

    /// Close the store if nothing used it for a while.
    pub fn close_if_idle(&self) {
        if let Some(mut g) = self.inner.try_lock() {
            if g.as_ref().is_some_and(|(_, t)| t.elapsed() > WRITER_IDLE) {
                *g = None;
                tracing::debug!("writer closed (idle)");
            }
        }
    }
}

pub struct AppState {
    pub config: ServeConfig,
    pub searcher: Arc<Searcher>,
    pub model: ModelSlot,
    pub writer: Arc<Writer>,
    pub jobs: Arc<Jobs>,
    pub metrics: Arc<Metrics>,
    pub queue: InferenceQueue,
    pub started: Instant,
}

impl AppState {
    /// The loaded model, or 503 `not_ready` while it loads.
    pub fn embedder(&self) -> ApiResult<Arc<dyn Embedder>> {
        loaded(&self.model)
    }

    pub fn is_ready(&self) -> bool {
        self.model.get().is_some() && self.searcher.snapshot().is_some()
    }

    /// Install the loaded, warmed model; refuses one the index was not built with.
    pub fn set_model(&self, embedder: Arc<dyn Embedder>) -> Result<(), String> {
        vitrine_indexer::check_model(&self.config.data, embedder.model_id()).map_err(|e| e.to_string())?;
        self.model.set(embedder).map_err(|_| "the model is already set".to_string())
    }

    /// Run CPU-bound model work off the async executor, inside the bounded queue.
    pub async fn infer<T: Send + 'static>(
        &self,
        tower: &'static str,
        f: impl FnOnce(&dyn Embedder) -> vitrine_core::Result<T> + Send + 'static,
    ) -> ApiResult<T> {
        let embedder = self.embedder()?;
        let _slot = self.queue.enter(&self.metrics)?;
        let hist = self.metrics.inference.with_label_values(&[tower]);
        let r = actix_web::web::block(move || {
            let t = Instant::now();
            let r = f(embedder.as_ref());
            hist.observe(t.elapsed().as_secs_f64());
            r
        })
        .await?;
        Ok(r?)
    }
}
