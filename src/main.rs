//! `vitrine`: the one binary. Each subcommand parses its flags, calls a library crate and maps
//! errors to an exit code (1 for failures, 2 for usage errors via clap).

mod fetch;
mod model_bench;
mod progress;
mod relevance;
mod settings;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use vitrine_engine::Engine;
use vitrine_indexer::{IndexOptions, Indexer, LocalFiles};
use vitrine_model::pipeline::{embed_images, ImageSource};
use vitrine_model::{ClipOnnx, Embedder, ImageLimits};
use vitrine_web::config::{BackendSettings, IngestSettings, InvalidSetting, ModelSettings, DEFAULT_DATA};
use vitrine_web::ServeConfig;

use crate::settings::{resolve, ConfigFile, Resolved, Row, Settings, Source};

#[derive(Parser)]
#[command(name = "vitrine", version, about = "Visual product search: find products by photo or by describing how they look")]
struct Cli {
    /// Config file: TOML with flat keys named like the long flags (`max_upload = 1048576`); see
    /// vitrine.example.toml. Its values sit between the defaults and the VITRINE_* environment.
    #[arg(long, global = true, env = "VITRINE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
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
        settings: IndexSettings,
        /// Remove products that are not in this catalog.
        #[arg(long)]
        delete_missing: bool,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Delete products by id.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        settings: DataSettings,
    },
    /// Re-embed every product with another model into a new generation, then switch over atomically.
    Reindex {
        #[command(flatten)]
        settings: IndexSettings,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the derived indexes (vectors and keywords) from the store, without the model.
    Rebuild {
        #[command(flatten)]
        settings: DataSettings,
    },
    /// Copy a data directory consistently while it is served, or restore such a copy.
    Snapshot {
        #[command(subcommand)]
        what: SnapshotCommand,
    },
    /// Serve the search API, the shopper page and the admin dashboard.
    Serve {
        #[command(flatten)]
        settings: ServeConfig,
    },
    /// Index the bundled demo catalog with the bundled tiny model, then serve it.
    Demo {
        #[command(flatten)]
        settings: ServeConfig,
        /// Index only, do not serve.
        #[arg(long)]
        no_serve: bool,
        /// Which demo: `photos` (the photo catalog, the tiny random-weight model) or `toy` (the
        /// rendered toy world and the model trained on it, where text search has real semantics).
        #[arg(long, value_enum, default_value_t = DemoWorld::Photos)]
        world: DemoWorld,
    },
    /// Measure relevance on judged queries (JSONL) through the service's own query path.
    ///
    /// Prints recall@1/5/10, MRR and nDCG@10 fused and per channel, the false-positive rate of
    /// queries that should match nothing, and latency. Repeat --fusion to compare settings.
    Eval {
        /// Judged queries: {"id", "q"?, "image"? (relative to this file), "filters"?, "fusion"?, "relevant": {ID: GRADE}} per line.
        queries: PathBuf,
        #[command(flatten)]
        settings: ServeConfig,
        /// Hits per query scored.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// A fusion setting as JSON (e.g. '{"mode": "weighted"}'), forced on queries without their own; repeat to compare.
        #[arg(long)]
        fusion: Vec<String>,
        /// Print one JSON object (with "compare": [...] when several --fusion are given).
        #[arg(long)]
        json: bool,
    },
    /// Choose fusion settings and the relevance floor on the train split of judged queries, report
    /// held-out metrics against the current defaults, and save the choice in the index.
    Tune {
        /// Judged queries, as for `vitrine eval`; "split": "train" | "test" per line (else by a hash of the id).
        queries: PathBuf,
        #[command(flatten)]
        settings: ServeConfig,
        /// Hits per query scored.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Report, but do not save.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a command's effective settings and where each came from (default, file, env, flag).
    ///
    /// Without a command, print every command's. Flags after the command are applied as that
    /// command would apply them. Keys (secrets) are masked.
    Config {
        #[command(subcommand)]
        command: Option<ConfigCommand>,
        /// One JSON object per command: {"command", "file", "settings": {KEY: {"value", "source", "from"}}}.
        #[arg(long, global = true)]
        json: bool,
    },
}

/// The commands that have settings, each with its settings struct: `vitrine config` and the
/// config file's list of known keys are both read from here.
#[derive(Subcommand)]
enum ConfigCommand {
    /// The settings of `vitrine serve`.
    Serve(ServeConfig),
    /// The settings of `vitrine demo`.
    Demo(ServeConfig),
    /// The settings of `vitrine index`.
    Index(IndexSettings),
    /// The settings of `vitrine delete`.
    Delete(DataSettings),
    /// The settings of `vitrine reindex`.
    Reindex(IndexSettings),
    /// The settings of `vitrine rebuild`.
    Rebuild(DataSettings),
    /// The settings of `vitrine snapshot create` and `vitrine snapshot restore`.
    Snapshot(DataSettings),
    /// The settings of `vitrine embed`.
    Embed {
        #[command(subcommand)]
        what: EmbedConfigCommand,
    },
}

#[derive(Subcommand)]
enum EmbedConfigCommand {
    /// The settings of `vitrine embed image`.
    Image(EmbedImageSettings),
    /// The settings of `vitrine embed text`.
    Text(ModelSettings),
}

/// Settings of the commands that only open the data directory.
#[derive(Args, Clone, Serialize, Deserialize)]
struct DataSettings {
    /// Data directory (created if missing).
    #[arg(long, env = "VITRINE_DATA", value_name = "DIR", default_value = DEFAULT_DATA)]
    data: PathBuf,
    #[command(flatten)]
    #[serde(flatten)]
    backend: BackendSettings,
}

/// Settings of `vitrine index` and `vitrine reindex`.
#[derive(Args, Clone, Serialize, Deserialize)]
struct IndexSettings {
    #[command(flatten)]
    #[serde(flatten)]
    data: DataSettings,
    #[command(flatten)]
    #[serde(flatten)]
    model: ModelSettings,
    #[command(flatten)]
    #[serde(flatten)]
    ingest: IngestSettings,
}

/// Settings of `vitrine embed image`.
#[derive(Args, Clone, Serialize, Deserialize)]
struct EmbedImageSettings {
    #[command(flatten)]
    #[serde(flatten)]
    model: ModelSettings,
    /// Images per model call.
    #[arg(long, env = "VITRINE_BATCH", default_value_t = IndexOptions::default().batch)]
    batch: usize,
}

impl Settings for ServeConfig {
    const SECRETS: &'static [&'static str] = &["admin_key", "search_key", "metrics_key"];
    fn validate(&self) -> Result<(), InvalidSetting> {
        ServeConfig::validate(self)
    }
}

impl Settings for IndexSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.ingest.validate()
    }
}

impl Settings for DataSettings {}

impl Settings for ModelSettings {}

impl Settings for EmbedImageSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.batch == 0 {
            return Err(InvalidSetting { key: "batch", problem: "is 0; it must be at least 1".into() });
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum EmbedCommand {
    /// Embed image files: {"input": PATH, "embedding": [...]} per line (L2-normalized).
    Image {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        settings: EmbedImageSettings,
    },
    /// Embed texts: {"input": TEXT, "embedding": [...]} per line (L2-normalized).
    Text {
        #[arg(required = true)]
        texts: Vec<String>,
        #[command(flatten)]
        settings: ModelSettings,
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
        settings: DataSettings,
        out: PathBuf,
    },
    /// Restore SNAPSHOT into the data directory, which must be empty unless --force.
    Restore {
        snapshot: PathBuf,
        #[command(flatten)]
        settings: DataSettings,
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
        /// Also download this variant's towers (`fp16`, `quantized`) beside the fp32 files; repeatable.
        #[arg(long)]
        variant: Vec<vitrine_model::model::Variant>,
    },
    /// List the known model names.
    List,
    /// Measure the model on this machine: model-only and end-to-end images/s, text and photo query
    /// latency. Prints one JSON object (scripts/gpu-check.sh runs this on a GPU).
    Bench {
        /// A folder of images (.jpg, .png, .webp); cycled to reach --n.
        #[arg(long)]
        images: PathBuf,
        /// Images per measurement.
        #[arg(long, default_value_t = 256)]
        n: usize,
        /// Images per model call.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Rounds of each throughput measurement (the best is reported, each is listed).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Text and photo queries timed.
        #[arg(long, default_value_t = 50)]
        queries: usize,
        #[command(flatten)]
        settings: ModelSettings,
    },
}

/// Load the model to read or extend the index in `data`: `--variant auto` takes the variant the
/// index was built with, and any other variant is refused before the model loads (vectors of two
/// variants never mix). A directory without an index resolves `auto` by device.
fn load_model_for(s: &ModelSettings, data: &Path, engine: Option<&Engine>) -> Result<ClipOnnx> {
    let (indexed, place) = match engine {
        Some(e) => (e.model()?, e.url().to_string()),
        None => (vitrine_indexer::indexed_model(data)?, data.display().to_string()),
    };
    let variant = s.variant.pinned_by(indexed.map(|m| m.variant)).map_err(|e| anyhow::anyhow!("{place}: {e}"))?;
    load_model(&ModelSettings { variant, ..s.clone() })
}

/// Load the model, saying once what is wrong and what to do, and warn where its weights are random.
fn load_model(s: &ModelSettings) -> Result<ClipOnnx> {
    check_model_dir(&s.model)?;
    let model = ClipOnnx::open(&s.model, &s.runtime()).map_err(|e| match e {
        // Names the folder itself.
        e @ vitrine_core::CoreError::ModelLoad { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("loading the model in {}", s.model.display())),
    })?;
    warn_if_random(&model.model_id().name, &s.model);
    Ok(model)
}

/// A model folder that is not there, with the way to get one.
fn check_model_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    let what = if dir.exists() { "is not a folder" } else { "does not exist" };
    let mut msg = format!("model folder {} {what}", dir.display());
    if dir.is_relative() {
        msg.push_str(&format!(" (relative to the working directory {cwd})"));
    }
    if dir == Path::new(DEFAULT_MODEL) {
        msg.push_str(&format!(
            ".\nThe default model, {DEFAULT_MODEL}, ships in the Vitrine repository: run from the repository's root, or \
             pass --model /path/to/vitrine/{DEFAULT_MODEL} (or set VITRINE_MODEL)"
        ));
    } else {
        msg.push_str(
            ".\nPass --model DIR (or set VITRINE_MODEL) with a folder holding vision_model.onnx, text_model.onnx, \
             tokenizer.json and preprocessor_config.json",
        );
    }
    msg.push_str("; `vitrine model fetch` downloads a trained CLIP into models/clip-vit-b32");
    anyhow::bail!(msg)
}

/// The default `--model`, as `ModelSettings` writes it.
const DEFAULT_MODEL: &str = "models/tiny-clip";

/// Random weights index and answer, but their rankings mean nothing: say so where people look.
fn warn_if_random(name: &str, dir: &Path) {
    if vitrine_model::model::has_random_weights(name) {
        eprintln!(
            "warning: the model in {} ({name}) has random weights: search results will not match what the images show. \
             For real results pass --model with a trained model (`vitrine model fetch` gets clip-vit-b32).",
            dir.display()
        );
    }
}

/// Colour codes only for a person at a terminal, and never when NO_COLOR is set (no-color.org).
fn colour(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A catalog checked before the model loads: it exists, is a readable file, and its first line
/// or header parses. The full parse comes later; this is for the mistakes that would otherwise
/// show only after seconds of loading.
fn check_catalog(catalog: &Path) -> Result<()> {
    use std::io::{BufRead, Read};
    let fix = "pass the path of a .jsonl (one JSON object per line) or .csv catalog";
    let meta = std::fs::metadata(catalog).map_err(|e| anyhow::anyhow!("catalog {}: {e}; {fix}", catalog.display()))?;
    if !meta.is_file() {
        anyhow::bail!("catalog {} is not a file; {fix}", catalog.display());
    }
    let file =
        std::fs::File::open(catalog).map_err(|e| anyhow::anyhow!("catalog {}: {e}; check its permissions", catalog.display()))?;
    let mut first = String::new();
    let mut reader = std::io::BufReader::new(file).take(1 << 20);
    while first.trim().is_empty() {
        first.clear();
        match reader.read_line(&mut first) {
            Ok(0) => anyhow::bail!("catalog {} is empty; {fix}", catalog.display()),
            Ok(_) => {}
            Err(e) => anyhow::bail!("catalog {} cannot be read as text ({e}); {fix}", catalog.display()),
        }
    }
    let csv = catalog.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if csv {
        if !first.split(',').any(|h| h.trim().trim_matches('"') == "id") {
            anyhow::bail!(
                "catalog {}: the CSV header has no `id` column; the first line names the columns (id,title,...)",
                catalog.display()
            );
        }
    } else if let Err(e) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(first.trim()) {
        anyhow::bail!(
            "catalog {}: the first line is not a JSON object ({e}); a .jsonl catalog holds one product object per line \
             (name a CSV file *.csv)",
            catalog.display()
        );
    }
    Ok(())
}

/// A data directory that cannot be one, said once with the fix (the OS error alone read
/// "File exists (os error 17): File exists (os error 17)").
/// Refuse a command that only the embedded backend has, saying why.
fn embedded_only(backend: &BackendSettings, command: &str) -> Result<()> {
    match &backend.backend {
        vitrine_engine::Backend::Embedded => Ok(()),
        other => anyhow::bail!(
            "`vitrine {command}` works on the embedded backend only; {other} indexes every write itself (docs/SCALING.md)"
        ),
    }
}

fn check_data_dir(data: &Path) -> Result<()> {
    if data.exists() && !data.is_dir() {
        anyhow::bail!(
            "data directory {} is a file, not a folder: pass --data with a folder (it is created if missing), or move the file away",
            data.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VITRINE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::IsTerminal::is_terminal(&std::io::stderr())))
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The matches of the innermost subcommand (`embed image`, `config serve`): where its settings are.
fn leaf(m: &ArgMatches) -> &ArgMatches {
    match m.subcommand() {
        Some((_, sub)) => leaf(sub),
        None => m,
    }
}

/// Every command with settings, as the argument list after `vitrine config` (`["embed", "image"]`).
fn config_commands() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if cmd.get_subcommands().next().is_none() {
            out.push(path.clone());
        }
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
    let cli = Cli::command();
    let config = cli.find_subcommand("config").expect("the config command exists");
    let mut out = Vec::new();
    for sub in config.get_subcommands() {
        walk(sub, &mut vec![sub.get_name().to_string()], &mut out);
    }
    out
}

/// Every key a config file may hold: the settings of every command.
fn known_keys() -> BTreeSet<String> {
    let cli = Cli::command();
    let config = cli.find_subcommand("config").expect("the config command exists");
    let mut keys = BTreeSet::new();
    for path in config_commands() {
        let cmd = path.iter().fold(config, |c, name| c.find_subcommand(name).expect("listed by config_commands"));
        keys.extend(settings::keys(cmd));
    }
    keys
}

/// `vitrine demo` runs on the bundled model and its own data directory unless a flag or the
/// environment says otherwise, and opens the dashboard with a known key. The config file's `data`
/// and `model` are for the real service: the demo writes the demo catalog's products (over any
/// with the same ids), so it must not follow a shared file into the shop's data directory.
/// The bundled demos: a catalog, the model it is served with, and its own data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoWorld {
    Photos,
    Toy,
}

impl DemoWorld {
    /// (catalog, model, data directory), relative to the repository.
    fn paths(self) -> (&'static str, &'static str, &'static str) {
        match self {
            DemoWorld::Photos => ("demo/catalog.jsonl", "models/tiny-clip", "data/demo"),
            DemoWorld::Toy => ("demo/toy-world/catalog.jsonl", "models/toy-world-clip", "data/demo-toy"),
        }
    }
}

fn demo_defaults(r: &mut Resolved<ServeConfig>, world: DemoWorld) -> Result<()> {
    let root = demo_root()?;
    let (_, model, data) = world.paths();
    let not_chosen = |s: &Source| matches!(s, Source::Default | Source::File(_));
    if not_chosen(r.source("model")) {
        r.value.model.model = root.join(model);
        r.set_source("model", Source::DemoDefault);
    }
    if not_chosen(r.source("data")) {
        r.value.data = root.join(data);
        r.set_source("data", Source::DemoDefault);
    }
    if r.value.admin_key.is_none() {
        r.value.admin_key = Some("demo-admin-key".into());
        r.set_source("admin_key", Source::DemoDefault);
    }
    if r.value.media_root.is_empty() {
        // So the dashboard can import demo/catalog.jsonl, whose images are paths under demo/.
        r.value.media_root = vec![root.join("demo")];
        r.set_source("media_root", Source::DemoDefault);
    }
    Ok(())
}

fn config_rows(what: &ConfigCommand, m: &ArgMatches, file: Option<&ConfigFile>) -> Result<Vec<Row>> {
    Ok(match what {
        ConfigCommand::Serve(_) => resolve::<ServeConfig>(m, file)?.rows(),
        ConfigCommand::Demo(_) => {
            let mut r = resolve::<ServeConfig>(m, file)?;
            demo_defaults(&mut r, DemoWorld::Photos)?;
            r.rows()
        }
        ConfigCommand::Index(_) | ConfigCommand::Reindex(_) => resolve::<IndexSettings>(m, file)?.rows(),
        ConfigCommand::Delete(_) | ConfigCommand::Rebuild(_) | ConfigCommand::Snapshot(_) => {
            resolve::<DataSettings>(m, file)?.rows()
        }
        ConfigCommand::Embed { what: EmbedConfigCommand::Image(_) } => resolve::<EmbedImageSettings>(m, file)?.rows(),
        ConfigCommand::Embed { what: EmbedConfigCommand::Text(_) } => resolve::<ModelSettings>(m, file)?.rows(),
    })
}

fn print_config(command: Option<ConfigCommand>, json: bool, matches: &ArgMatches, file: Option<&ConfigFile>) -> Result<()> {
    let runs: Vec<(Vec<String>, ArgMatches)> = match command {
        Some(_) => {
            let mut path = Vec::new();
            let mut m = matches;
            while let Some((name, sub)) = m.subcommand() {
                path.push(name.to_string());
                m = sub;
            }
            vec![(path[1..].to_vec(), matches.clone())]
        }
        None => config_commands()
            .into_iter()
            .map(|path| {
                let argv = ["vitrine", "config"].into_iter().map(String::from).chain(path.iter().cloned());
                let m = Cli::command().try_get_matches_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok((path, m))
            })
            .collect::<Result<_>>()?,
    };
    let mut out = String::new();
    for (path, m) in runs {
        let Command::Config { command: Some(what), .. } = Cli::from_arg_matches(&m)?.command else {
            unreachable!("a config command with a subcommand");
        };
        out.push_str(&settings::render(&path.join(" "), file, &config_rows(&what, leaf(&m), file)?, json));
    }
    print!("{out}");
    Ok(())
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    let file = cli.config.as_deref().map(|p| ConfigFile::load(p, &known_keys())).transpose()?;
    let file = file.as_ref();
    let m = leaf(matches);
    match cli.command {
        Command::Embed { what: EmbedCommand::Image { paths, .. } } => {
            let s: EmbedImageSettings = resolve(m, file)?.value;
            let embedder = load_model(&s.model)?;
            let inputs: Vec<_> = paths.iter().map(|p| (p.display().to_string(), ImageSource::Path(p.clone()))).collect();
            let mut failed = 0;
            let mut out = std::io::stdout().lock();
            embed_images(&embedder, inputs, s.batch, &ImageLimits::default(), |input, r| match r {
                Ok(v) => print_line(&mut out, serde_json::json!({ "input": input, "embedding": v })),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                }
            });
            Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Embed { what: EmbedCommand::Text { texts, ids, .. } } => {
            let s: ModelSettings = resolve(m, file)?.value;
            let embedder = load_model(&s)?;
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
        Command::Model { what: ModelCommand::Fetch { name, endpoint, revision, dir, force, variant } } => {
            let dest = fetch::fetch(&fetch::FetchOptions { name, endpoint, revision, dest_root: dir, force, variants: variant })?;
            println!("{}", dest.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Index { catalog, delete_missing, json, .. } => {
            let s: IndexSettings = resolve(m, file)?.value;
            check_catalog(&catalog)?;
            check_data_dir(&s.data.data)?;
            let engine = s.data.backend.connect()?;
            let embedder: Arc<dyn Embedder> = Arc::new(load_model_for(&s.model, &s.data.data, engine.as_ref())?);
            // The operator's catalog: local paths resolve beside it, and any address may be fetched.
            let opts = IndexOptions { local_files: LocalFiles::beside(&catalog), ..s.ingest.operator_options() };
            let ix = match engine {
                Some(engine) => Indexer::open_engine(&s.data.data, engine, Some(embedder), opts)?,
                None => Indexer::open(&s.data.data, embedder, opts)?,
            };
            let (records, errors) =
                vitrine_indexer::catalog::parse_file(&catalog).with_context(|| format!("reading {}", catalog.display()))?;
            let bar = progress::Bar::new(&format!("indexing {}", catalog.display()));
            let res = ix.ingest(records, errors, delete_missing, &bar)?;
            bar.finish();
            report(&res, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { ids, .. } => {
            let s: DataSettings = resolve(m, file)?.value;
            check_data_dir(&s.data)?;
            let ix = match s.backend.connect()? {
                Some(engine) => Indexer::open_engine(&s.data, engine, None, IndexOptions::default())?,
                None => Indexer::open_without_model(&s.data, IndexOptions::default())?,
            };
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
        Command::Reindex { json, .. } => {
            let s: IndexSettings = resolve(m, file)?.value;
            check_data_dir(&s.data.data)?;
            let embedder: Arc<dyn Embedder> = Arc::new(load_model(&s.model)?);
            let bar = progress::Bar::new("re-embedding");
            let opts = s.ingest.operator_options();
            let res = match s.data.backend.connect()? {
                Some(engine) => vitrine_indexer::reindex_engine(&s.data.data, engine, embedder, opts, &bar)?,
                None => vitrine_indexer::reindex(&s.data.data, embedder, opts, &bar)?,
            };
            bar.finish();
            report(&res, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild { .. } => {
            let s: DataSettings = resolve(m, file)?.value;
            check_data_dir(&s.data)?;
            embedded_only(&s.backend, "rebuild")?;
            let ix = Indexer::open_without_model(&s.data, IndexOptions::default())?;
            let r = ix.rebuild()?;
            println!("rebuilt generation {}", r.map(|r| r.generation).unwrap_or(0));
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { what: SnapshotCommand::Create { out, .. } } => {
            let s: DataSettings = resolve(m, file)?.value;
            check_data_dir(&s.data)?;
            embedded_only(&s.backend, "snapshot create")?;
            let info = vitrine_indexer::snapshot::create_locked(&s.data, &out, IndexOptions::default())?;
            println!("{}", serde_json::to_string(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { what: SnapshotCommand::Restore { snapshot, force, .. } } => {
            let s: DataSettings = resolve(m, file)?.value;
            check_data_dir(&s.data)?;
            embedded_only(&s.backend, "snapshot restore")?;
            let info = vitrine_indexer::snapshot::restore(&snapshot, &s.data, force, IndexOptions::default().lock_wait)?;
            println!("{}", serde_json::to_string(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => {
            let config: ServeConfig = resolve(m, file)?.value;
            check_data_dir(&config.data)?;
            if config.admin_key.is_none() {
                tracing::warn!("no admin key (--admin-key, VITRINE_ADMIN_KEY or `admin_key`): writes, ingest and the admin dashboard are disabled");
            }
            run_server(config, None)
        }
        Command::Demo { no_serve, world, .. } => {
            let mut r = resolve::<ServeConfig>(m, file)?;
            demo_defaults(&mut r, world)?;
            let config = r.value.clone();
            check_data_dir(&config.data)?;
            // The demo is the Quick start: it needs no engine.
            embedded_only(&config.backend, "demo")?;
            let embedder: Arc<dyn Embedder> = Arc::new(load_model_for(&config.model, &config.data, None)?);
            let catalog = demo_root()?.join(world.paths().0);
            {
                let opts = IndexOptions { local_files: LocalFiles::beside(&catalog), ..config.ingest.operator_options() };
                let ix = Indexer::open(&config.data, embedder.clone(), opts)?;
                let (records, errors) = vitrine_indexer::catalog::parse_file(&catalog)?;
                let demo_ids: BTreeSet<String> = records.iter().map(|r| r.product.id.clone()).collect();
                let bar = progress::Bar::new("indexing the demo catalog");
                // Products added in the dashboard (or over the API) are the user's: a restart keeps them.
                let res = ix.ingest(records, errors, false, &bar)?;
                bar.finish();
                report(&res, false);
                let kept = ix.products().ids()?.into_iter().filter(|id| !demo_ids.contains(id)).count();
                if kept > 0 {
                    eprintln!(
                        "kept {kept} product(s) that are not in the demo catalog (added in the dashboard or over the API); \
                         delete them in the dashboard, or start over with an empty folder: --data DIR"
                    );
                }
            }
            if no_serve {
                return Ok(ExitCode::SUCCESS);
            }
            if r.source("admin_key") == &Source::DemoDefault {
                eprintln!("admin key for this demo: {}", config.admin_key.as_deref().unwrap_or_default());
            }
            eprintln!("open http://{}/ (shopper) and http://{}/admin (dashboard)", config.bind, config.bind);
            run_server(config, Some(embedder))
        }
        Command::Eval { queries, k, fusion, json, .. } => {
            let config: ServeConfig = resolve(m, file)?.value;
            relevance::eval(&config, &queries, k, &fusion, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tune { queries, k, dry_run, json, .. } => {
            let config: ServeConfig = resolve(m, file)?.value;
            relevance::tune(&config, &queries, k, dry_run, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Model { what: ModelCommand::Bench { images, n, batch, rounds, queries, .. } } => {
            let s: ModelSettings = resolve(m, file)?.value;
            let model = load_model(&s)?;
            let out = model_bench::run(&model, &model_bench::BenchOptions { images, n, batch, rounds, queries })?;
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Model { what: ModelCommand::List } => {
            for k in fetch::KNOWN {
                println!("{:<16} {:<46} {}", k.name, k.repo, k.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command, json } => {
            print_config(command, json, matches, file)?;
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
fn run_server(config: ServeConfig, embedder: Option<Arc<dyn Embedder>>) -> Result<ExitCode> {
    let bind = config.bind.clone();
    let model = config.model.clone();
    let data = config.data.clone();
    let state = vitrine_web::build_state(config)?;
    let engine = state.query.searcher().engine().cloned();
    match embedder {
        Some(e) => state.set_model(e)?,
        None => {
            let st = state.clone();
            std::thread::spawn(move || {
                let loaded = load_model_for(&model, &data, engine.as_ref())
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|m| st.set_model(Arc::new(m)).map_err(|e| e.to_string()));
                if let Err(e) = loaded {
                    // The service cannot answer queries without its model: stop rather than stay unready.
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
                tracing::info!("ready");
            });
        }
    }
    actix_web::rt::System::new().block_on(vitrine_web::serve(state, &bind))?;
    Ok(ExitCode::SUCCESS)
}

fn print_line(out: &mut impl std::io::Write, v: serde_json::Value) {
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(out, "{v}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// One name per setting (`--max-upload`, `VITRINE_MAX_UPLOAD`, `max_upload`), and a key that
    /// several commands share means the same in each: one variable, one default, one help line.
    #[test]
    fn every_setting_has_one_name_and_one_meaning() {
        let cli = Cli::command();
        let config = cli.find_subcommand("config").unwrap();
        let mut seen = BTreeMap::new();
        for path in config_commands() {
            let cmd = path.iter().fold(config, |c, name| c.find_subcommand(name).unwrap());
            for a in cmd.get_arguments() {
                let id = a.get_id().to_string();
                assert_eq!(a.get_long().map(str::to_string), Some(id.replace('_', "-")), "{path:?}");
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                assert_eq!(env, Some(format!("VITRINE_{}", id.to_uppercase())), "{path:?}");
                let defaults: Vec<String> = a.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
                let meaning = (env, defaults, a.get_help().map(|h| h.to_string()));
                if let Some(before) = seen.insert(id.clone(), meaning.clone()) {
                    assert_eq!(before, meaning, "`{id}` differs between commands");
                }
            }
        }
        assert!(seen.len() >= 20, "{seen:?}");
        assert_eq!(known_keys(), seen.keys().cloned().collect());
    }

    fn serializes_to_its_keys<T: Settings>() {
        let cmd = T::augment_args(clap::Command::new("t"));
        let want: BTreeSet<String> = settings::keys(&cmd).into_iter().collect();
        let value = serde_json::to_value(vitrine_web::config::defaults::<T>()).unwrap();
        let have: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(want, have, "serde and clap name the keys alike");
    }

    #[test]
    fn every_settings_struct_serializes_to_its_flag_names() {
        serializes_to_its_keys::<ServeConfig>();
        serializes_to_its_keys::<IndexSettings>();
        serializes_to_its_keys::<DataSettings>();
        serializes_to_its_keys::<EmbedImageSettings>();
        serializes_to_its_keys::<ModelSettings>();
    }

    #[test]
    fn the_config_command_lists_every_command_with_settings() {
        let listed: Vec<String> = config_commands().iter().map(|p| p.join(" ")).collect();
        assert_eq!(listed, ["serve", "demo", "index", "delete", "reindex", "rebuild", "snapshot", "embed image", "embed text"]);
    }
}
