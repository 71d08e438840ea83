use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vitrine_core::{ClipOnnx, Device, RuntimeOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model_dir() -> PathBuf {
    root().join("models/tiny-clip")
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// One tiny CLIP per test binary: loading is cheap, but sessions are better shared.
pub fn tiny_model() -> &'static ClipOnnx {
    static M: OnceLock<ClipOnnx> = OnceLock::new();
    M.get_or_init(|| {
        let opts = RuntimeOptions { device: Device::Cpu, intra_threads: 2, ..Default::default() };
        ClipOnnx::open(&tiny_model_dir(), &opts).expect("tiny model loads (did scripts/setup.sh install .ort/?)")
    })
}

pub fn vitrine_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitrine"))
}

pub fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[allow(dead_code)]
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}
