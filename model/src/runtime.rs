//! Finding and loading ONNX Runtime, and choosing the device.
//!
//! ort is built with `load-dynamic`: nothing is downloaded at build time, and the shared library is
//! found at run time. The search order is: an explicit path (`--ort-lib`), `VITRINE_ORT_LIB`,
//! `ORT_DYLIB_PATH`, then a `.ort/` folder (what `scripts/setup.sh` fills) in the working
//! directory or beside/above the executable. The environment is process-global and built once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use vitrine_core::error::{CoreError, Result};

use crate::model::VariantChoice;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
    /// CUDA when it loads, else CPU with one log line saying so.
    #[default]
    Auto,
}

/// A device name other than `cpu`, `cuda` (or `gpu`) and `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device {0:?}: use cpu, cuda or auto")]
pub struct UnknownDevice(pub String);

impl std::str::FromStr for Device {
    type Err = UnknownDevice;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownDevice> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            "auto" => Ok(Device::Auto),
            other => Err(UnknownDevice(other.to_string())),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Auto => "auto",
        })
    }
}

/// How sessions are built.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub device: Device,
    /// Threads inside one operator (0 = one per core).
    pub intra_threads: usize,
    /// Explicit path to `libonnxruntime.so*`.
    pub ort_lib: Option<PathBuf>,
    pub cuda_device_id: i32,
    /// Which weights to load (`--variant`); see [`VariantChoice`].
    pub variant: VariantChoice,
}

static ENV: OnceLock<std::result::Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

/// Locate the ONNX Runtime shared library without loading it.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return resolve_lib(p)
            .ok_or_else(|| CoreError::Runtime { message: format!("{} is not an ONNX Runtime library", p.display()) });
    }
    for var in ["VITRINE_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(&v);
            return resolve_lib(&p).ok_or_else(|| CoreError::Runtime {
                message: format!("{var}={} does not point at libonnxruntime.so", p.display()),
            });
        }
    }
    let mut roots = vec![];
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    for root in roots {
        if let Some(p) = resolve_lib(&root.join(".ort")) {
            return Ok(p);
        }
    }
    Err(CoreError::Runtime {
        message: "libonnxruntime.so not found: run scripts/setup.sh, or pass --ort-lib / set VITRINE_ORT_LIB".into(),
    })
}

/// A file is taken as is; a directory is searched for `libonnxruntime.so*` (the newest version wins).
fn resolve_lib(p: &Path) -> Option<PathBuf> {
    if p.is_file() {
        return Some(p.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(p)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib" || n == "onnxruntime.dll")
        })
        .collect();
    found.sort();
    found.pop()
}

/// The process-wide ONNX Runtime environment (loaded on first use).
pub fn environment(explicit: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    let r = ENV.get_or_init(|| {
        let lib = find_library(explicit).map_err(|e| e.to_string())?;
        // ORT 1.32 writes a cache under $XDG_CACHE_HOME; keep it out of read-only homes.
        if std::env::var_os("XDG_CACHE_HOME").is_none() && std::env::var_os("HOME").is_none() {
            std::env::set_var("XDG_CACHE_HOME", std::env::temp_dir());
        }
        let builder = ort::init_from(&lib).map_err(|e| format!("cannot load {}: {e}", lib.display()))?;
        let env = builder
            .with_name("vitrine")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))?;
        tracing::debug!(lib = %lib.display(), "ONNX Runtime loaded");
        Ok((env, lib))
    });
    match r {
        Ok((env, _)) => Ok(env),
        Err(message) => Err(CoreError::Runtime { message: message.clone() }),
    }
}

fn base_builder(opts: &RuntimeOptions) -> ort::Result<SessionBuilder> {
    let env = environment(opts.ort_lib.as_deref()).map_err(|e| ort::Error::new(e.to_string()))?;
    let threads = if opts.intra_threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        opts.intra_threads
    };
    // No spinning: ONNX Runtime's workers otherwise busy-wait after every run, taking the cores
    // from whatever comes next (the search right after a query embedding, the decoders beside a
    // batch), which cost the search service more than the wake-up latency spinning saves.
    let b = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(threads)?
        .with_intra_op_spinning(false)?;
    Ok(b)
}

fn build_session(path: &Path, opts: &RuntimeOptions, cuda: bool) -> ort::Result<Session> {
    let mut b = base_builder(opts)?;
    if cuda {
        let ep = ort::ep::CUDA::default().with_device_id(opts.cuda_device_id).build().error_on_failure();
        b = b.with_execution_providers([ep])?;
    }
    b.commit_from_file(path)
}

/// Build a session on the requested device. Returns the session and the device it really runs on.
pub fn session(path: &Path, opts: &RuntimeOptions) -> Result<(Session, Device)> {
    session_for(opts, |_| Ok((path.to_path_buf(), ()))).map(|(s, d, ())| (s, d))
}

/// Build a session on the requested device from the file `choose` picks for the device the session
/// is being built for (a model's variant depends on it: see [`VariantChoice::resolve`]). Under
/// `auto`, CUDA is tried with its file first, then the CPU with its own. Returns the session, the
/// device it really runs on, and what `choose` returned beside the path.
pub fn session_for<T>(opts: &RuntimeOptions, choose: impl Fn(Device) -> Result<(PathBuf, T)>) -> Result<(Session, Device, T)> {
    let load_err = |path: &Path, e: ort::Error| CoreError::ModelLoad { path: path.to_path_buf(), message: e.to_string() };
    match opts.device {
        Device::Cpu => {
            let (path, t) = choose(Device::Cpu)?;
            Ok((build_session(&path, opts, false).map_err(|e| load_err(&path, e))?, Device::Cpu, t))
        }
        Device::Cuda => {
            let (path, t) = choose(Device::Cuda)?;
            let s = build_session(&path, opts, true).map_err(|e| CoreError::Runtime {
                message: format!(
                    "--device cuda: the CUDA execution provider did not load ({e}); install the GPU build with \
                     VITRINE_ORT_GPU=1 scripts/setup.sh, or use --device cpu"
                ),
            })?;
            Ok((s, Device::Cuda, t))
        }
        Device::Auto => {
            let (path, t) = choose(Device::Cuda)?;
            match build_session(&path, opts, true) {
                Ok(s) => Ok((s, Device::Cuda, t)),
                Err(e) => {
                    static ONCE: std::sync::Once = std::sync::Once::new();
                    ONCE.call_once(|| {
                        tracing::info!("device auto: CUDA unavailable ({}), using CPU", first_line(&e.to_string()))
                    });
                    let (path, t) = choose(Device::Cpu)?;
                    Ok((build_session(&path, opts, false).map_err(|e| load_err(&path, e))?, Device::Cpu, t))
                }
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
