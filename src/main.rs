//! `vitrine`: the one binary. Each subcommand parses its flags, calls a library crate and maps
//! errors to an exit code (1 for failures, 2 for usage errors via clap).

mod fetch;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use vitrine_core::pipeline::{embed_images, ImageSource};
use vitrine_core::{ClipOnnx, Device, Embedder, ImageLimits, RuntimeOptions};
use vitrine_indexer::{IndexOptions, Indexer};
use vitrine_web::ServeConfig;

#[derive(Parser)]
#[command(name = "vitrine", version, about = "Visual product search: find products by photo or by describing how they look")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed images or texts and print one JSON object per line.
    Embed {
        #[command(subcommand)]
        what: EmbedCommand,
    },
    /// Manage models.
    Model {
        #[command(subcommand)]
        what: ModelCommand,
    },
    /// Ingest a catalog (JSONL or CSV) into a data directory; only changed products are re-embedded.
    Index {
        /// Catalog file: .jsonl (one JSON object per line) or .csv.
        catalog: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Remove products that are not in this catalog.
        #[arg(long)]
        delete_missing: bool,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Images per model call.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Seconds between searchable checkpoints during a long run.
        #[arg(long, default_value_t = 30)]
        checkpoint_secs: u64,
        /// Timeout per image download attempt, seconds.
        #[arg(long, default_value_t = 10)]
        fetch_timeout_secs: u64,
        /// Attempts after a failed download (timeouts, 5xx).
        #[arg(long, default_value_t = 2)]
        fetch_retries: u32,
    },
    /// Delete products by id.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Re-embed every product with another model into a new generation, then switch over atomically.
    Reindex {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the derived indexes (vectors and keywords) from the store, without the model.
    Rebuild {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Copy a data directory consistently while it is served, or restore such a copy.
    Snapshot {
        #[command(subcommand)]
        what: SnapshotCommand,
    },
    /// Serve the search API, the shopper page and the admin dashboard.
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Index the bundled demo catalog with the bundled tiny model, then serve it.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Index only, do not serve.
        #[arg(long)]
        no_serve: bool,
    },
}

#[derive(Args, Clone)]
struct DataArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "VITRINE_DATA", default_value = "data")]
    data: PathBuf,
}

#[derive(Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, env = "VITRINE_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Key for writes, ingest and the admin dashboard (unset: those are disabled).
    #[arg(long, env = "VITRINE_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Key for search (unset: search is open).
    #[arg(long, env = "VITRINE_SEARCH_KEY")]
    search_key: Option<String>,
    /// Largest image upload in bytes.
    #[arg(long, env = "VITRINE_MAX_UPLOAD", default_value_t = 20 << 20)]
    max_upload: usize,
    /// Requests that may wait for the model before the service answers 503.
    #[arg(long, env = "VITRINE_QUEUE", default_value_t = 64)]
    queue: usize,
    /// HNSW search breadth (higher: better recall, slower).
    #[arg(long, default_value_t = 128)]
    ef_search: usize,
    /// Refuse `image_url` in image searches (the server never fetches a URL a searcher sends).
    #[arg(long, env = "VITRINE_NO_IMAGE_URLS")]
    no_image_urls: bool,
    /// Let `image_url` reach loopback, private and link-local addresses (refused by default, so
    /// searchers cannot make the server fetch from its own network).
    #[arg(long, env = "VITRINE_ALLOW_PRIVATE_IMAGE_URLS")]
    allow_private_image_urls: bool,
    /// A folder whose files products and catalogs sent over HTTP may name as images (repeat for
    /// several). None by default: over HTTP, images are http(s) URLs only.
    #[arg(long = "media-root", env = "VITRINE_MEDIA_ROOT", value_delimiter = ',')]
    media_root: Vec<PathBuf>,
    /// Key for `GET /metrics` (unset: open).
    #[arg(long, env = "VITRINE_METRICS_KEY")]
    metrics_key: Option<String>,
}

#[derive(Subcommand)]
enum EmbedCommand {
    /// Embed image files: {"input": PATH, "embedding": [...]} per line (L2-normalized).
    Image {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Images per model call.
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Embed texts: {"input": TEXT, "embedding": [...]} per line (L2-normalized).
    Text {
        #[arg(required = true)]
        texts: Vec<String>,
        #[command(flatten)]
        model: ModelArgs,
        /// Also print the token ids.
        #[arg(long)]
        ids: bool,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Write a consistent copy of the data directory into OUT, a new folder (waits for a writer).
    Create {
        #[command(flatten)]
        data: DataArgs,
        out: PathBuf,
    },
    /// Restore SNAPSHOT into the data directory, which must be empty unless --force.
    Restore {
        snapshot: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Replace the contents of a non-empty data directory.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download a CLIP ONNX model into models/NAME (default: clip-vit-b32).
    Fetch {
        #[arg(default_value = "clip-vit-b32")]
        name: String,
        /// Hub endpoint (Hugging Face compatible).
        #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
        endpoint: String,
        #[arg(long, default_value = "main")]
        revision: String,
        /// Folder that receives models/NAME.
        #[arg(long, default_value = "models")]
        dir: PathBuf,
        /// Download again even if files are present.
        #[arg(long)]
        force: bool,
    },
    /// List the known model names.
    List,
}

/// Where and how a model runs; shared by every subcommand that loads one.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Model directory (vision_model.onnx, text_model.onnx, tokenizer.json, preprocessor_config.json).
    #[arg(long, env = "VITRINE_MODEL", default_value = "models/tiny-clip")]
    model: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args, Clone)]
struct RuntimeArgs {
    /// cpu, cuda, or auto (CUDA when it loads, else CPU).
    #[arg(long, env = "VITRINE_DEVICE", default_value = "auto")]
    device: Device,
    /// Threads per model call (0 = one per core).
    #[arg(long, env = "VITRINE_THREADS", default_value_t = 0)]
    threads: usize,
    /// Path to libonnxruntime.so (default: .ort/ from scripts/setup.sh).
    #[arg(long, env = "VITRINE_ORT_LIB")]
    ort_lib: Option<PathBuf>,
}

impl RuntimeArgs {
    fn options(&self) -> RuntimeOptions {
        RuntimeOptions { device: self.device, intra_threads: self.threads, ort_lib: self.ort_lib.clone(), cuda_device_id: 0 }
    }
}

impl ModelArgs {
    fn load(&self) -> Result<ClipOnnx> {
        ClipOnnx::open(&self.model, &self.runtime.options()).with_context(|| format!("loading model {}", self.model.display()))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VITRINE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Embed { what: EmbedCommand::Image { paths, model, batch } } => {
            let embedder = model.load()?;
            let inputs: Vec<_> = paths.iter().map(|p| (p.display().to_string(), ImageSource::Path(p.clone()))).collect();
            let mut failed = 0;
            let mut out = std::io::stdout().lock();
            embed_images(&embedder, inputs, batch, &ImageLimits::default(), |input, r| match r {
                Ok(v) => print_line(&mut out, serde_json::json!({ "input": input, "embedding": v })),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                }
            });
            Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Embed { what: EmbedCommand::Text { texts, model, ids } } => {
            let embedder = model.load()?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = embedder.embed_texts(&refs)?;
            let mut out = std::io::stdout().lock();
            for (t, v) in texts.iter().zip(vectors) {
                let mut line = serde_json::json!({ "input": t, "embedding": v });
                if ids {
                    line["ids"] = serde_json::json!(embedder.token_ids(t)?);
                }
                print_line(&mut out, line);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Model { what: ModelCommand::Fetch { name, endpoint, revision, dir, force } } => {
            let dest = fetch::fetch(&fetch::FetchOptions { name, endpoint, revision, dest_root: dir, force })?;
            println!("{}", dest.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Index {
            catalog,
            data,
            model,
            delete_missing,
            json,
            batch,
            checkpoint_secs,
            fetch_timeout_secs,
            fetch_retries,
        } => {
            let embedder: Arc<dyn Embedder> = Arc::new(model.load()?);
            let operator = IndexOptions::for_catalog(&catalog);
            let fetch = vitrine_indexer::FetchOptions {
                timeout: std::time::Duration::from_secs(fetch_timeout_secs),
                retries: fetch_retries,
                ..operator.fetch.clone()
            };
            let opts = IndexOptions { batch, checkpoint: std::time::Duration::from_secs(checkpoint_secs), fetch, ..operator };
            let ix = Indexer::open(&data.data, embedder, opts)?;
            let (records, errors) =
                vitrine_indexer::catalog::parse_file(&catalog).with_context(|| format!("reading {}", catalog.display()))?;
            let bar = progress::Bar::new(&format!("indexing {}", catalog.display()));
            let res = ix.ingest(records, errors, delete_missing, &bar)?;
            bar.finish();
            report(&res, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { ids, data } => {
            let ix = Indexer::open_without_model(&data.data, IndexOptions::default())?;
            let gone = ix.delete(&ids)?;
            for id in &ids {
                if gone.contains(id) {
                    println!("deleted {id}");
                } else {
                    eprintln!("not found: {id}");
                }
            }
            Ok(if gone.len() == ids.len() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Reindex { data, model, json } => {
            let embedder: Arc<dyn Embedder> = Arc::new(model.load()?);
            let bar = progress::Bar::new("re-embedding");
            let res = vitrine_indexer::reindex(&data.data, embedder, IndexOptions::for_operator(), &bar)?;
            bar.finish();
            report(&res, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild { data } => {
            let ix = Indexer::open_without_model(&data.data, IndexOptions::default())?;
            let r = ix.rebuild()?;
            println!("rebuilt generation {}", r.map(|r| r.generation).unwrap_or(0));
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { what: SnapshotCommand::Create { data, out } } => {
            let info = vitrine_indexer::snapshot::create_locked(&data.data, &out, IndexOptions::default())?;
            println!("{}", serde_json::to_string(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { what: SnapshotCommand::Restore { snapshot, data, force } } => {
            let wait = IndexOptions::default().lock_wait;
            let info = vitrine_indexer::snapshot::restore(&snapshot, &data.data, force, wait)?;
            println!("{}", serde_json::to_string(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { serve } => serve_forever(serve),
        Command::Demo { mut serve, no_serve } => {
            let root = demo_root()?;
            if serve.model.model == Path::new("models/tiny-clip") {
                serve.model.model = root.join("models/tiny-clip");
            }
            if serve.data.data == Path::new("data") {
                serve.data.data = root.join("data/demo");
            }
            let embedder: Arc<dyn Embedder> = Arc::new(serve.model.load()?);
            let catalog = root.join("demo/catalog.jsonl");
            {
                let ix = Indexer::open(&serve.data.data, embedder.clone(), IndexOptions::for_catalog(&catalog))?;
                let (records, errors) = vitrine_indexer::catalog::parse_file(&catalog)?;
                let bar = progress::Bar::new("indexing the demo catalog");
                let res = ix.ingest(records, errors, true, &bar)?;
                bar.finish();
                report(&res, false);
            }
            if no_serve {
                return Ok(ExitCode::SUCCESS);
            }
            if serve.media_root.is_empty() {
                // So the dashboard can import demo/catalog.jsonl, whose images are paths under demo/.
                serve.media_root = vec![root.join("demo")];
            }
            if serve.admin_key.is_none() {
                serve.admin_key = Some("demo-admin-key".into());
                eprintln!("admin key for this demo: demo-admin-key");
            }
            eprintln!("open http://{}/ (shopper) and http://{}/admin (dashboard)", serve.bind, serve.bind);
            run_server(serve, Some(embedder))
        }
        Command::Model { what: ModelCommand::List } => {
            for k in fetch::KNOWN {
                println!("{:<14} {:<32} {}", k.name, k.repo, k.about);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report(res: &vitrine_indexer::IngestResult, json: bool) {
    let s = res.summary;
    if json {
        println!("{}", serde_json::to_string(&s).expect("serializes"));
    } else {
        println!(
            "ingested {}, unchanged {}, updated {}, deleted {}, failed {}",
            s.ingested, s.unchanged, s.updated, s.deleted, s.failed
        );
    }
    let warnings = res.failures.iter().filter(|f| f.severity == vitrine_indexer::Severity::Warning).count();
    if let Some(p) = &res.report {
        eprintln!("{} failures and {warnings} warnings, one per line in {}", s.failed, p.display());
    }
}

/// The folder holding `demo/` and `models/`: the working directory, or the repository the binary was built in.
fn demo_root() -> Result<PathBuf> {
    let mut candidates = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    candidates
        .into_iter()
        .find(|c| c.join("demo/catalog.jsonl").is_file() && c.join("models/tiny-clip").is_dir())
        .ok_or_else(|| anyhow::anyhow!("demo/catalog.jsonl not found: run this from the Vitrine repository"))
}

/// Listen at once (`/healthz` answers), load and warm the model in the background, then `/readyz`.
fn serve_forever(args: ServeArgs) -> Result<ExitCode> {
    run_server(args, None)
}

fn run_server(args: ServeArgs, embedder: Option<Arc<dyn Embedder>>) -> Result<ExitCode> {
    let config = ServeConfig {
        data: args.data.data.clone(),
        admin_key: args.admin_key.clone(),
        search_key: args.search_key.clone(),
        max_upload: args.max_upload,
        queue_capacity: args.queue,
        ef_search: args.ef_search,
        allow_image_urls: !args.no_image_urls,
        allow_private_image_urls: args.allow_private_image_urls,
        media_root: args.media_root.clone(),
        metrics_key: args.metrics_key.clone(),
        ..Default::default()
    };
    if config.admin_key.is_none() {
        tracing::warn!("no --admin-key: writes, ingest and the admin dashboard are disabled");
    }
    let state = vitrine_web::build_state(config)?;
    match embedder {
        Some(e) => state.set_model(e)?,
        None => {
            let (st, model) = (state.clone(), args.model.clone());
            std::thread::spawn(move || {
                let loaded =
                    model.load().map_err(|e| format!("{e:#}")).and_then(|m| st.set_model(Arc::new(m)).map_err(|e| e.to_string()));
                if let Err(e) = loaded {
                    // The service cannot answer queries without its model: stop rather than stay unready.
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
                tracing::info!("ready");
            });
        }
    }
    actix_web::rt::System::new().block_on(vitrine_web::serve(state, &args.bind))?;
    Ok(ExitCode::SUCCESS)
}

fn print_line(out: &mut impl std::io::Write, v: serde_json::Value) {
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(out, "{v}");
}
