//! The service's settings, and the setting groups it shares with the command-line tools.
//!
//! Each struct derives both clap (flags, `VITRINE_*` variables, the defaults `--help` shows) and
//! serde (the config file, `vitrine config --json`). A setting's flag, its environment variable and
//! its config-file key share one name: `--max-upload`, `VITRINE_MAX_UPLOAD`, `max_upload`.
//! Each default is written once, in its `#[arg]` attribute or in the library that owns the value
//! (`IndexOptions`, `FetchOptions`, `HnswParams`), and [`defaults`] builds the `Default` impls
//! from the same attributes, so tests, `--help` and the service agree. The binary layers
//! defaults < config file < environment < flags on top of these (`src/settings.rs`).

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use vitrine_engine::{Backend, Engine};
use vitrine_indexer::{FetchOptions, IndexOptions, TagVocabulary};
use vitrine_model::batch::BatchPolicy;
use vitrine_model::model::VariantChoice;
use vitrine_model::{Device, RuntimeOptions};
use vitrine_store::vectors::HnswParams;

/// The data directory when none is given; shared by every command.
pub const DEFAULT_DATA: &str = "data";

/// Where the catalog lives; shared by `serve`, `index`, `reindex`, `delete` and the maintenance
/// commands (docs/SCALING.md).
#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackendSettings {
    /// `embedded` (sled, vector segments and tantivy in the data directory) or
    /// `oceanbase://USER[:PASS]@HOST:PORT/DB` (an OceanBase cluster or seekdb; the database and its
    /// tables are created when absent).
    #[arg(long, env = "VITRINE_BACKEND", value_name = "URL", default_value = "embedded")]
    pub backend: Backend,
}

impl BackendSettings {
    /// Connect to the engine, if the backend is one.
    pub fn connect(&self) -> Result<Option<Engine>, vitrine_engine::EngineError> {
        self.backend.engine_url().map(Engine::connect).transpose()
    }
}

/// A setting whose value cannot work, with what is wrong; the binary adds where the value came from.
#[derive(Debug, thiserror::Error)]
#[error("`{key}` {problem}")]
pub struct InvalidSetting {
    /// The setting's key (its flag without `--`, with `_` for `-`).
    pub key: &'static str,
    /// What is wrong and what would work, e.g. "must be at least 1".
    pub problem: String,
}

fn at_least_one(key: &'static str, value: u64) -> Result<(), InvalidSetting> {
    if value == 0 {
        return Err(InvalidSetting { key, problem: "is 0; it must be at least 1".into() });
    }
    Ok(())
}

/// A settings struct as its flags' defaults, ignoring the environment (so a test's `Default`
/// does not change with the shell it runs in).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(clap::builder::Resettable::Reset));
    let matches = cmd.try_get_matches_from(["defaults"]).expect("settings have no required arguments");
    T::from_arg_matches(&matches).expect("defaults parse into their own struct")
}

/// Where and how a model runs; every command that loads a model flattens this.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct ModelSettings {
    /// Model directory (vision_model.onnx, text_model.onnx, tokenizer.json, preprocessor_config.json).
    #[arg(long, env = "VITRINE_MODEL", value_name = "DIR", default_value = "models/tiny-clip")]
    pub model: PathBuf,
    /// cpu, cuda, or auto (CUDA when it loads, else CPU).
    #[arg(long, env = "VITRINE_DEVICE", default_value_t = RuntimeOptions::default().device)]
    pub device: Device,
    /// Threads per model call (0 = one per core).
    #[arg(long, env = "VITRINE_THREADS", default_value_t = RuntimeOptions::default().intra_threads)]
    pub threads: usize,
    /// Path to libonnxruntime.so (default: .ort/ from scripts/setup.sh).
    #[arg(long, env = "VITRINE_ORT_LIB", value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Model weights: fp32, fp16, quantized, or auto (an existing index's variant; else quantized on
    /// the CPU and fp16 on CUDA where the model folder has them, fp32 otherwise).
    #[arg(long, env = "VITRINE_VARIANT", default_value_t = VariantChoice::Auto)]
    #[serde(default)]
    pub variant: VariantChoice,
}

impl Default for ModelSettings {
    fn default() -> Self {
        defaults()
    }
}

impl ModelSettings {
    pub fn runtime(&self) -> RuntimeOptions {
        RuntimeOptions {
            device: self.device,
            intra_threads: self.threads,
            ort_lib: self.ort_lib.clone(),
            variant: self.variant,
            ..Default::default()
        }
    }
}

/// How a catalog is ingested: by `vitrine index`, and by the service's `POST /v1/ingest` jobs.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct IngestSettings {
    /// Images per model call.
    #[arg(long, env = "VITRINE_BATCH", default_value_t = IndexOptions::default().batch)]
    pub batch: usize,
    /// Seconds between searchable checkpoints during a long ingest.
    #[arg(long, env = "VITRINE_CHECKPOINT_SECS", value_name = "SECS", default_value_t = IndexOptions::default().checkpoint.as_secs())]
    pub checkpoint_secs: u64,
    /// Timeout per image download attempt, seconds.
    #[arg(long, env = "VITRINE_FETCH_TIMEOUT_SECS", value_name = "SECS", default_value_t = FetchOptions::default().timeout.as_secs())]
    pub fetch_timeout_secs: u64,
    /// Attempts after a failed download (timeouts, 5xx).
    #[arg(long, env = "VITRINE_FETCH_RETRIES", default_value_t = FetchOptions::default().retries)]
    pub fetch_retries: u32,
    /// Image downloads in flight at once.
    #[arg(long, env = "VITRINE_FETCH_CONCURRENCY", default_value_t = FetchOptions::default().concurrency)]
    pub fetch_concurrency: usize,
    /// Zero-shot tag vocabulary, as JSON: {"colour": {"labels": ["red", "blue"], "prompt": "a photo of a {label} product",
    /// "margin": 0.01}}. Best written as `[tags.ATTRIBUTE]` tables in the config file. Unset: no auto-tagging.
    #[arg(long, env = "VITRINE_TAGS", value_name = "JSON", value_parser = parse_tags)]
    #[serde(default)]
    pub tags: Option<TagVocabulary>,
}

fn parse_tags(s: &str) -> Result<TagVocabulary, vitrine_indexer::IndexError> {
    TagVocabulary::parse_json(s)
}

impl Default for IngestSettings {
    fn default() -> Self {
        defaults()
    }
}

impl IngestSettings {
    /// The indexer's options with these settings applied (the rest stay the indexer's defaults).
    pub fn index_options(&self) -> IndexOptions {
        let mut opts =
            IndexOptions { batch: self.batch, checkpoint: Duration::from_secs(self.checkpoint_secs), ..Default::default() };
        opts.fetch.timeout = Duration::from_secs(self.fetch_timeout_secs);
        opts.fetch.retries = self.fetch_retries;
        opts.fetch.concurrency = self.fetch_concurrency;
        opts.tags = self.tags.clone().unwrap_or_default();
        opts
    }

    /// [`IngestSettings::index_options`] for the operator's own commands (`vitrine index`,
    /// `reindex`, `demo`): their catalogs may fetch from any address, private ones included.
    pub fn operator_options(&self) -> IndexOptions {
        let mut opts = self.index_options();
        opts.fetch.public_only = false;
        opts
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        at_least_one("batch", self.batch as u64)?;
        at_least_one("fetch_concurrency", self.fetch_concurrency as u64)?;
        at_least_one("fetch_timeout_secs", self.fetch_timeout_secs)?;
        if let Some(t) = &self.tags {
            // The file's tables bypass `parse_tags`; check them here as well.
            t.validate().map_err(|e| InvalidSetting { key: "tags", problem: e.to_string() })?;
        }
        Ok(())
    }
}

/// Everything `vitrine serve` (and `vitrine demo`) runs with: the one serve settings struct.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct ServeConfig {
    /// Data directory (created if missing).
    #[arg(long, env = "VITRINE_DATA", value_name = "DIR", default_value = DEFAULT_DATA)]
    pub data: PathBuf,
    #[command(flatten)]
    #[serde(flatten)]
    pub backend: BackendSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelSettings,
    /// Address to listen on, HOST:PORT.
    #[arg(long, env = "VITRINE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Key for writes, ingest, jobs, stats and the admin dashboard (unset: those are disabled).
    #[arg(long, env = "VITRINE_ADMIN_KEY", value_name = "KEY")]
    pub admin_key: Option<String>,
    /// Key for search (unset: search is open). The admin key also works.
    #[arg(long, env = "VITRINE_SEARCH_KEY", value_name = "KEY")]
    pub search_key: Option<String>,
    /// Key for `/metrics` (unset: metrics are open).
    #[arg(long, env = "VITRINE_METRICS_KEY", value_name = "KEY")]
    pub metrics_key: Option<String>,
    /// Largest image upload in bytes.
    #[arg(long, env = "VITRINE_MAX_UPLOAD", value_name = "BYTES", default_value_t = 20 << 20)]
    pub max_upload: usize,
    /// Largest catalog upload (`POST /v1/ingest`) in bytes.
    #[arg(long, env = "VITRINE_MAX_CATALOG", value_name = "BYTES", default_value_t = 512 << 20)]
    pub max_catalog: usize,
    /// Requests that may wait for the model before the service answers 503.
    #[arg(id = "queue", long = "queue", env = "VITRINE_QUEUE", value_name = "N", default_value_t = 64)]
    #[serde(rename = "queue")]
    pub queue_capacity: usize,
    /// Most concurrent queries embedded in one model call (micro-batching; 1 turns it off).
    #[arg(long, env = "VITRINE_QUERY_BATCH", value_name = "N", default_value_t = 32)]
    pub query_batch: usize,
    /// Milliseconds a query may wait for batch-mates (0: only queries that queued while the
    /// previous call ran are batched, so a lone query never waits; a GPU wants 1–2).
    #[arg(long, env = "VITRINE_QUERY_BATCH_WAIT_MS", value_name = "MS", default_value_t = 0)]
    pub query_batch_wait_ms: u64,
    /// HNSW search breadth (higher: better recall, slower).
    #[arg(long, env = "VITRINE_EF_SEARCH", default_value_t = HnswParams::default().ef_search)]
    pub ef_search: usize,
    /// Refuse `image_url` in image searches (the server never fetches a URL a searcher sends).
    #[arg(long, env = "VITRINE_NO_IMAGE_URLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_image_urls: bool,
    /// Let `image_url` reach loopback, private and link-local addresses (refused by default, so
    /// searchers cannot make the server fetch from its own network).
    #[arg(long, env = "VITRINE_ALLOW_PRIVATE_IMAGE_URLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_image_urls: bool,
    /// A folder catalogs sent to the service may name local image files in (repeatable; in the
    /// environment, comma-separated). None by default: only URLs and uploaded images.
    #[arg(long = "media-root", env = "VITRINE_MEDIA_ROOT", value_name = "DIR", value_delimiter = ',')]
    #[serde(default)]
    pub media_root: Vec<PathBuf>,
    /// Seconds a write to the service waits for the data directory's lock (held by `vitrine index`,
    /// say) before it answers 409; a request thread is never held longer.
    #[arg(long, env = "VITRINE_LOCK_TIMEOUT_SECS", value_name = "SECS", default_value_t = 2)]
    pub lock_timeout_secs: u64,
    /// Folder that `POST /v1/snapshots` writes snapshots into (default: `snapshots` beside the
    /// data directory).
    #[arg(long, env = "VITRINE_SNAPSHOT_DIR", value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// A web origin (`https://shop.example.com`) whose pages may call the API from the browser
    /// (repeatable; in the environment, comma-separated). None by default: no CORS headers at all.
    #[arg(long = "cors-origin", env = "VITRINE_CORS_ORIGIN", value_name = "ORIGIN", value_delimiter = ',')]
    #[serde(default)]
    pub cors_origin: Vec<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub ingest: IngestSettings,
}

impl Default for ServeConfig {
    fn default() -> Self {
        defaults()
    }
}

impl ServeConfig {
    /// Whether `image_url` queries may fetch from the network.
    pub fn allow_image_urls(&self) -> bool {
        !self.no_image_urls
    }

    /// Refuse settings the service cannot run with, before it opens anything.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        at_least_one("queue", self.queue_capacity as u64)?;
        at_least_one("max_upload", self.max_upload as u64)?;
        at_least_one("max_catalog", self.max_catalog as u64)?;
        at_least_one("ef_search", self.ef_search as u64)?;
        at_least_one("query_batch", self.query_batch as u64)?;
        if self.query_batch > BatchPolicy::MAX_BATCH {
            return Err(InvalidSetting { key: "query_batch", problem: format!("at most {}", BatchPolicy::MAX_BATCH) });
        }
        if self.query_batch_wait_ms > BatchPolicy::MAX_WAIT.as_millis() as u64 {
            return Err(InvalidSetting {
                key: "query_batch_wait_ms",
                problem: format!("at most {} ms", BatchPolicy::MAX_WAIT.as_millis()),
            });
        }
        match self.bind.to_socket_addrs().map(|mut a| a.next().is_some()) {
            Ok(true) => {}
            Ok(false) => return Err(InvalidSetting { key: "bind", problem: format!("{:?} resolves to no address", self.bind) }),
            Err(e) => {
                return Err(InvalidSetting {
                    key: "bind",
                    problem: format!("{:?} is not an address to listen on ({e}); use HOST:PORT, e.g. 127.0.0.1:8080", self.bind),
                })
            }
        }
        for root in &self.media_root {
            if !root.is_dir() {
                return Err(InvalidSetting {
                    key: "media_root",
                    problem: format!("{} is not a folder; create it or remove it from media_root", root.display()),
                });
            }
        }
        for origin in &self.cors_origin {
            check_origin(origin).map_err(|problem| InvalidSetting { key: "cors_origin", problem })?;
        }
        self.ingest.validate()
    }
}

/// A CORS origin is `scheme://host[:port]`, exactly as a browser sends it in `Origin`: anything
/// else (a path, a trailing slash, `*`) would never match, or would match every site.
fn check_origin(origin: &str) -> Result<(), String> {
    let explain = |why: &str| format!("{origin:?} {why}; write an origin as a browser sends it, e.g. https://shop.example.com");
    if origin == "*" || origin == "null" {
        return Err(explain("would let any site call the API with the visitor's access"));
    }
    let url = url::Url::parse(origin).map_err(|e| explain(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(explain("is not an http(s) origin"));
    }
    if url.origin().ascii_serialization() != origin {
        return Err(explain("has a path, user, query or trailing slash, or is not in lowercase"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_values_and_the_libraries_defaults() {
        let c = ServeConfig::default();
        assert_eq!(c.data, PathBuf::from("data"));
        assert_eq!(c.bind, "127.0.0.1:8080");
        assert_eq!(c.max_upload, 20 << 20);
        assert_eq!(c.queue_capacity, 64);
        assert_eq!(c.ef_search, HnswParams::default().ef_search);
        assert_eq!(c.ingest.batch, IndexOptions::default().batch);
        assert_eq!(c.ingest.fetch_concurrency, FetchOptions::default().concurrency);
        assert!(c.allow_image_urls() && !c.allow_private_image_urls);
        assert!(c.admin_key.is_none() && c.media_root.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn ingest_settings_reach_the_index_options() {
        let tags = TagVocabulary::parse_json(r#"{"colour": {"labels": ["red", "blue"], "margin": 0.02}}"#).unwrap();
        let s = IngestSettings {
            batch: 3,
            checkpoint_secs: 7,
            fetch_timeout_secs: 5,
            fetch_retries: 9,
            fetch_concurrency: 2,
            tags: Some(tags.clone()),
        };
        let o = s.index_options();
        assert_eq!(
            (o.batch, o.checkpoint, o.fetch.timeout, o.fetch.retries, o.fetch.concurrency),
            (3, Duration::from_secs(7), Duration::from_secs(5), 9, 2)
        );
        assert_eq!(o.chunk, IndexOptions::default().chunk);
        assert_eq!(o.tags, tags);
        assert!(IngestSettings::default().index_options().tags.is_empty(), "no vocabulary by default");
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let bad = |f: fn(&mut ServeConfig)| {
            let mut c = ServeConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.queue_capacity = 0).key, "queue");
        assert_eq!(bad(|c| c.max_upload = 0).key, "max_upload");
        assert_eq!(bad(|c| c.ingest.batch = 0).key, "batch");
        assert_eq!(bad(|c| c.query_batch = 0).key, "query_batch");
        assert_eq!(bad(|c| c.query_batch = usize::MAX).key, "query_batch");
        assert_eq!(bad(|c| c.query_batch_wait_ms = u64::MAX).key, "query_batch_wait_ms");
        let e = bad(|c| {
            let mut v = TagVocabulary::default();
            v.0.insert("colour".into(), serde_json::from_str(r#"{"labels": ["red"]}"#).unwrap());
            c.ingest.tags = Some(v);
        });
        assert!(e.key == "tags" && e.to_string().contains("colour"), "{e}");
        let e = bad(|c| c.bind = "not an address".into());
        assert_eq!(e.key, "bind");
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
        for origin in
            ["*", "null", "https://shop.example.com/", "shop.example.com", "ftp://x.example", "https://Shop.example.com"]
        {
            let c = ServeConfig { cors_origin: vec![origin.into()], ..Default::default() };
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, "cors_origin", "{origin}");
        }
        let c = ServeConfig {
            cors_origin: vec!["https://shop.example.com".into(), "http://127.0.0.1:3000".into()],
            ..Default::default()
        };
        c.validate().unwrap();
        let e = bad(|c| c.media_root = vec![PathBuf::from("/nonexistent/vitrine-media")]);
        assert!(e.to_string().contains("/nonexistent/vitrine-media"), "{e}");
    }

    #[test]
    fn a_settings_round_trip_through_serde_keeps_every_value() {
        let mut c = ServeConfig { admin_key: Some("k".into()), media_root: vec!["/a".into(), "/b".into()], ..Default::default() };
        c.ingest.fetch_retries = 5;
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["queue"], 64, "the key is the flag's name, not the field's");
        assert_eq!(v["fetch_retries"], 5, "flattened groups are flat keys");
        let back: ServeConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back.media_root, c.media_root);
        assert_eq!(back.ingest.fetch_retries, 5);
    }
}
