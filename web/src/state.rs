//! Shared service state: the query service, the write service, settings and metrics.

use std::sync::Arc;
use std::time::Instant;

use vitrine_indexer::service::WriteService;
use vitrine_model::Embedder;
use vitrine_searcher::service::QueryService;
use vitrine_searcher::Searcher;

use crate::config::ServeConfig;
use crate::error::ApiResult;
use crate::metrics::Metrics;

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
