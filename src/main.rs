//! `vitrine`: the one binary. Each subcommand parses its flags, calls a library crate and maps
//! errors to an exit code (1 for failures, 2 for usage errors via clap).

mod fetch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use vitrine_core::pipeline::{embed_images, ImageSource};
use vitrine_core::{ClipOnnx, Device, Embedder, ImageLimits, RuntimeOptions};

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
        Command::Model { what: ModelCommand::List } => {
            for k in fetch::KNOWN {
                println!("{:<14} {:<32} {}", k.name, k.repo, k.about);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_line(out: &mut impl std::io::Write, v: serde_json::Value) {
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(out, "{v}");
}
