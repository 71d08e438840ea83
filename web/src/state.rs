//! Shared service state: the query service, the write service, settings and metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use vitrine_core::Embedder;
use vitrine_indexer::service::WriteService;
use vitrine_searcher::service::QueryService;
use vitrine_searcher::Searcher;

use crate::error::ApiResult;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data: PathBuf,
    /// Needed for writes, ingest, jobs, stats and the admin API. `None` disables those endpoints.
    pub admin_key: Option<String>,
    /// When set, search needs this key (or the admin key).
    pub search_key: Option<String>,
    /// When set, `/metrics` needs this key (or the admin key).
    pub metrics_key: Option<String>,
    /// Folders whose files products and catalogs sent over HTTP may name as images (none: only
    /// http(s) URLs).
    pub media_root: Vec<PathBuf>,
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
            metrics_key: None,
            media_root: vec![],
            max_upload: 20 << 20,
            max_catalog: 512 << 20,
            queue_capacity: 64,
            ef_search: 128,
            allow_image_urls: true,
            allow_private_image_urls: false,
        }
    }
}

pub struct AppState {
    pub config: ServeConfig,
    /// The read side: every search goes through it.
    pub query: Arc<QueryService>,
    /// The write side: products, ingest jobs, the data directory's writer.
    pub writes: Arc<WriteService>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
}

impl AppState {
    /// The live generation's searcher (product reads).
    pub fn searcher(&self) -> &Arc<Searcher> {
        self.query.searcher()
    }

    /// Install the loaded, warmed model (see [`QueryService::set_model`]).
    pub fn set_model(&self, embedder: Arc<dyn Embedder>) -> ApiResult<()> {
        Ok(self.query.set_model(embedder)?)
    }

    pub fn is_ready(&self) -> bool {
        self.query.is_ready()
    }
}
