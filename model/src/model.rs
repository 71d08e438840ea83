//! The model directory contract.
//!
//! A model is a directory with `vision_model.onnx`, `text_model.onnx`, `tokenizer.json` and
//! `preprocessor_config.json`: the layout of the CLIP ONNX exports on the Hugging Face Hub. Nothing
//! about the model is a constant in code: image size, mean, std and crop all come from the config,
//! and the embedding dimension and text length come from the ONNX graphs themselves.
//!
//! Beside the fp32 towers a directory may hold the hub's variants of them
//! (`vision_model_quantized.onnx`, `text_model_fp16.onnx`, ...); [`VariantChoice`] decides which
//! one a run loads.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vitrine_core::error::{CoreError, Result};
use vitrine_core::relevance::Floors;
pub use vitrine_core::Variant;

use crate::runtime::Device;

pub const VISION_FILE: &str = "vision_model.onnx";
pub const TEXT_FILE: &str = "text_model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
/// The files a model directory must hold, in the order their bytes enter the content hash.
pub const MODEL_FILES: [&str; 4] = [VISION_FILE, TEXT_FILE, TOKENIZER_FILE, PREPROCESSOR_FILE];
/// The towers, by the stem of their ONNX file names (`vision_model.onnx`, `vision_model_fp16.onnx`).
pub const TOWERS: [&str; 2] = ["vision_model", "text_model"];

/// `--variant`: which weights to load. `auto` takes the device's variant where the directory has
/// it: `quantized` on the CPU, `fp16` on CUDA, else `fp32`. The one owner of that decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum VariantChoice {
    #[default]
    Auto,
    Exact(Variant),
}

impl VariantChoice {
    /// The variant to load on `device` (the device the session really gets, never `Auto`) from a
    /// directory holding `available`. `None` when an exact choice is not in the directory (the
    /// caller names the missing file and the fix).
    pub fn resolve(self, device: Device, available: &[Variant]) -> Option<Variant> {
        match self {
            VariantChoice::Exact(v) => available.contains(&v).then_some(v),
            VariantChoice::Auto => {
                let preferred = match device {
                    Device::Cpu => Some(Variant::Quantized),
                    Device::Cuda => Some(Variant::Fp16),
                    Device::Auto => None,
                };
                Some(preferred.filter(|v| available.contains(v)).unwrap_or(Variant::Fp32))
            }
        }
    }

    /// The choice for reading or extending an index whose vectors were made by `indexed`: `auto`
    /// follows the index; an exact choice must be the index's own (Err names it). Vectors of two
    /// variants never mix in one index.
    pub fn pinned_by(self, indexed: Option<Variant>) -> std::result::Result<VariantChoice, VariantMismatch> {
        match (self, indexed) {
            (_, None) => Ok(self),
            (VariantChoice::Auto, Some(v)) => Ok(VariantChoice::Exact(v)),
            (VariantChoice::Exact(want), Some(have)) if want == have => Ok(self),
            (VariantChoice::Exact(want), Some(have)) => Err(VariantMismatch { have, want }),
        }
    }
}

/// An exact `--variant` other than the one an index was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the index was built with the {have} variant, but --variant {want} was given: pass --variant {have} (or auto, \
     which follows the index), or re-embed everything with `vitrine reindex --variant {want}`"
)]
pub struct VariantMismatch {
    pub have: Variant,
    pub want: Variant,
}

impl std::fmt::Display for VariantChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VariantChoice::Auto => f.write_str("auto"),
            VariantChoice::Exact(v) => v.fmt(f),
        }
    }
}

/// A `--variant` other than fp32, fp16, quantized and auto.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model variant {0:?}: use fp32, fp16, quantized or auto")]
pub struct UnknownVariantChoice(pub String);

impl std::str::FromStr for VariantChoice {
    type Err = UnknownVariantChoice;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(VariantChoice::Auto);
        }
        s.parse().map(VariantChoice::Exact).map_err(|_| UnknownVariantChoice(s.to_string()))
    }
}

impl From<VariantChoice> for String {
    fn from(v: VariantChoice) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for VariantChoice {
    type Error = UnknownVariantChoice;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        s.parse()
    }
}

/// Hugging Face `CLIPImageProcessor` settings. Fields missing from the file take the processor's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PreprocessorConfig {
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default)]
    pub size: SizeSpec,
    #[serde(default = "default_resample")]
    pub resample: u32,
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    #[serde(default)]
    pub crop_size: CropSpec,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "default_rescale")]
    pub rescale_factor: f32,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "default_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "default_std")]
    pub image_std: [f32; 3],
}

/// `size` is `{"shortest_edge": N}` in CLIP configs, `{"height": H, "width": W}` in some others, or a bare number in old ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SizeSpec {
    ShortestEdge { shortest_edge: u32 },
    Exact { height: u32, width: u32 },
    Bare(u32),
}

impl Default for SizeSpec {
    fn default() -> Self {
        SizeSpec::ShortestEdge { shortest_edge: 224 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CropSpec {
    HeightWidth { height: u32, width: u32 },
    Bare(u32),
}

impl Default for CropSpec {
    fn default() -> Self {
        CropSpec::HeightWidth { height: 224, width: 224 }
    }
}

impl CropSpec {
    pub fn height_width(&self) -> (u32, u32) {
        match *self {
            CropSpec::HeightWidth { height, width } => (height, width),
            CropSpec::Bare(n) => (n, n),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_resample() -> u32 {
    3 // PIL bicubic
}
fn default_rescale() -> f32 {
    1.0 / 255.0
}
fn default_mean() -> [f32; 3] {
    [0.481_454_66, 0.457_827_5, 0.408_210_73]
}
fn default_std() -> [f32; 3] {
    [0.268_629_54, 0.261_302_6, 0.275_777_1]
}

impl PreprocessorConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CoreError::ModelLoad { path: path.to_path_buf(), message: format!("cannot read: {e}") })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| CoreError::ModelLoad {
            path: path.to_path_buf(),
            message: format!("not a valid CLIPImageProcessor config: {e}"),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let (h, w) = self.output_size();
        if h == 0 || w == 0 || h > 4096 || w > 4096 {
            return Err(CoreError::ModelLoad {
                path: path.to_path_buf(),
                message: format!("output size {w}x{h} is out of range"),
            });
        }
        if self.image_std.iter().any(|s| *s <= 0.0) {
            return Err(CoreError::ModelLoad { path: path.to_path_buf(), message: "image_std must be positive".into() });
        }
        Ok(())
    }

    /// The (height, width) of the tensor the vision tower receives.
    pub fn output_size(&self) -> (u32, u32) {
        if self.do_center_crop {
            self.crop_size.height_width()
        } else {
            match self.size {
                SizeSpec::Exact { height, width } => (height, width),
                SizeSpec::ShortestEdge { shortest_edge: n } | SizeSpec::Bare(n) => (n, n),
            }
        }
    }
}

/// A validated model directory: every file is present and the configs parse.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
    pub name: String,
    pub preprocessor: PreprocessorConfig,
    pub card: ModelCard,
}

/// The optional `vitrine-model.json` beside the ONNX files: what Vitrine knows about a model that
/// the graphs do not say. Read once, here; every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelCard {
    /// A human name (else the directory name).
    pub name: Option<String>,
    /// Longest token sequence the text tower takes (default 77), when its graph does not fix it.
    pub max_text_len: Option<usize>,
    /// The default relevance floor (see `vitrine_core::relevance`), calibrated for this model.
    pub relevance_floor: Option<Floors>,
}

/// The model card's file name.
pub const CARD_FILE: &str = "vitrine-model.json";

impl ModelDir {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(CoreError::ModelLoad {
                path: path.clone(),
                message: "not a directory; get a model with `vitrine model fetch`".into(),
            });
        }
        for f in MODEL_FILES {
            if !path.join(f).is_file() {
                return Err(CoreError::ModelLoad { path: path.clone(), message: format!("missing {f}") });
            }
        }
        let preprocessor = PreprocessorConfig::load(&path.join(PREPROCESSOR_FILE))?;
        let card = match std::fs::read(path.join(CARD_FILE)) {
            Ok(bytes) => serde_json::from_slice::<ModelCard>(&bytes).map_err(|e| CoreError::ModelLoad {
                path: path.clone(),
                message: format!("{CARD_FILE}: {e}; fix the file or remove it"),
            })?,
            Err(_) => ModelCard::default(),
        };
        if let Some(f) = &card.relevance_floor {
            f.validate().map_err(|e| CoreError::ModelLoad {
                path: path.clone(),
                message: format!("{CARD_FILE}: relevance_floor: {e}"),
            })?;
        }
        let name = card.name.clone().unwrap_or_else(|| {
            path.canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "model".into())
        });
        Ok(ModelDir { path, name, preprocessor, card })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The variants whose two towers are both in the directory (`fp32` always is).
    pub fn variants(&self) -> Vec<Variant> {
        Variant::ALL.into_iter().filter(|v| TOWERS.iter().all(|t| self.file(&v.onnx_file(t)).is_file())).collect()
    }

    /// The ONNX file of `tower` (one of [`TOWERS`]) in `variant`.
    pub fn tower_file(&self, tower: &str, variant: Variant) -> PathBuf {
        self.file(&variant.onnx_file(tower))
    }

    /// Why `variant` cannot load from this directory, with the ways to get it.
    pub fn missing_variant(&self, variant: Variant) -> CoreError {
        let missing: Vec<String> = TOWERS.iter().map(|t| variant.onnx_file(t)).filter(|f| !self.file(f).is_file()).collect();
        let make = match variant {
            Variant::Quantized => format!(
                "make it with `scripts/quantize_model.py {}`, or download the hub's with `vitrine model fetch NAME --variant quantized`",
                self.path.display()
            ),
            _ => format!("download it with `vitrine model fetch NAME --variant {variant}`"),
        };
        let have: Vec<&str> = self.variants().iter().map(|v| v.as_str()).collect();
        CoreError::ModelLoad {
            path: self.path.clone(),
            message: format!(
                "variant {variant} is missing {}: {make}; or pick one the directory has ({})",
                missing.join(" and "),
                have.join(", ")
            ),
        }
    }

    /// blake3 over the files `variant` loads (its two towers, the tokenizer and the preprocessor
    /// config), so that an index notices a swapped model even under the same name. The fp32 hash
    /// is the one indexes recorded before variants existed.
    pub fn content_hash(&self, variant: Variant) -> Result<String> {
        let mut h = blake3::Hasher::new();
        let files = [variant.onnx_file(TOWERS[0]), variant.onnx_file(TOWERS[1]), TOKENIZER_FILE.into(), PREPROCESSOR_FILE.into()];
        for f in &files {
            let p = self.file(f);
            let file = std::fs::File::open(&p).map_err(|e| CoreError::io(format!("reading {}", p.display()), e))?;
            h.update(f.as_bytes());
            h.update_reader(file).map_err(|e| CoreError::io(format!("reading {}", p.display()), e))?;
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

/// Whether a model (by its `vitrine-model.json` name) holds random weights: a test and demo model
/// whose rankings mean nothing. The one rule: a word `random` in the name (`tiny-clip-random`).
pub fn has_random_weights(name: &str) -> bool {
    name.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w.eq_ignore_ascii_case("random"))
}

impl PreprocessorConfig {
    /// The OpenAI CLIP ViT-B/32 settings; used where no config file is at hand (tests, fakes).
    pub fn load_default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir_with_card(card: Option<&str>) -> (tempfile::TempDir, Result<ModelDir>) {
        let dir = tempfile::tempdir().unwrap();
        for f in MODEL_FILES {
            std::fs::write(dir.path().join(f), if f == PREPROCESSOR_FILE { "{}" } else { "" }).unwrap();
        }
        if let Some(c) = card {
            std::fs::write(dir.path().join(CARD_FILE), c).unwrap();
        }
        let m = ModelDir::open(dir.path());
        (dir, m)
    }

    #[test]
    fn the_model_card_is_read_once_with_its_floor() {
        let (_d, m) = model_dir_with_card(Some(
            r#"{"name": "toy", "max_text_len": 32, "relevance_floor": {"text": {"image": 0.21}, "photo": {"image": 0.7}}}"#,
        ));
        let m = m.unwrap();
        assert_eq!(m.name, "toy");
        assert_eq!(m.card.max_text_len, Some(32));
        let f = m.card.relevance_floor.unwrap();
        assert_eq!((f.text.image, f.photo.image, f.text.text), (Some(0.21), Some(0.7), None));
        let (d, m) = model_dir_with_card(None);
        let m = m.unwrap();
        assert!(m.card.relevance_floor.is_none());
        assert_eq!(m.name, d.path().file_name().unwrap().to_string_lossy(), "no card: the directory names the model");
    }

    #[test]
    fn a_broken_card_is_refused_not_ignored() {
        for bad in ["{", r#"{"relevance_floor": {"text": {"image": 3.0}}}"#, r#"{"relevance_floor": {"txt": {}}}"#] {
            let (_d, m) = model_dir_with_card(Some(bad));
            assert!(matches!(m, Err(CoreError::ModelLoad { .. })), "{bad}");
        }
    }

    #[test]
    fn parses_hub_style_config_and_defaults() {
        let cfg: PreprocessorConfig = serde_json::from_str(
            r#"{"crop_size": 256, "size": {"shortest_edge": 256}, "image_mean": [0.5,0.5,0.5], "image_std": [0.5,0.5,0.5]}"#,
        )
        .unwrap();
        assert_eq!(cfg.output_size(), (256, 256));
        assert!(cfg.do_center_crop);
        assert_eq!(cfg.resample, 3);
        let cfg: PreprocessorConfig =
            serde_json::from_str(r#"{"do_center_crop": false, "size": {"height": 160, "width": 192}}"#).unwrap();
        assert_eq!(cfg.output_size(), (160, 192));
    }

    #[test]
    fn random_weights_are_told_by_the_name() {
        for n in ["tiny-clip-random", "clip-vit-b32-random", "Random_clip"] {
            assert!(has_random_weights(n), "{n}");
        }
        for n in ["toy-world-clip", "clip-vit-b32", "randomized", "tiny-clip"] {
            assert!(!has_random_weights(n), "{n}");
        }
    }

    use Variant::{Fp16, Fp32, Quantized};

    #[test]
    fn auto_takes_the_devices_variant_where_the_directory_has_it() {
        let all = [Fp32, Fp16, Quantized];
        let auto = VariantChoice::Auto;
        assert_eq!(auto.resolve(Device::Cpu, &all), Some(Quantized));
        assert_eq!(auto.resolve(Device::Cuda, &all), Some(Fp16));
        // Each device's variant only: the CPU never falls to fp16, CUDA never to int8.
        assert_eq!(auto.resolve(Device::Cpu, &[Fp32, Fp16]), Some(Fp32));
        assert_eq!(auto.resolve(Device::Cuda, &[Fp32, Quantized]), Some(Fp32));
        assert_eq!(auto.resolve(Device::Cpu, &[Fp32]), Some(Fp32));
        // Unresolved device: fp32.
        assert_eq!(auto.resolve(Device::Auto, &all), Some(Fp32));
        // An exact choice is taken on any device, or not at all.
        assert_eq!(VariantChoice::Exact(Fp16).resolve(Device::Cpu, &all), Some(Fp16));
        assert_eq!(VariantChoice::Exact(Quantized).resolve(Device::Cuda, &all), Some(Quantized));
        assert_eq!(VariantChoice::Exact(Quantized).resolve(Device::Cpu, &[Fp32, Fp16]), None);
    }

    #[test]
    fn an_index_pins_the_variant() {
        let auto = VariantChoice::Auto;
        assert_eq!(auto.pinned_by(None), Ok(auto));
        assert_eq!(auto.pinned_by(Some(Fp32)), Ok(VariantChoice::Exact(Fp32)));
        assert_eq!(VariantChoice::Exact(Quantized).pinned_by(Some(Quantized)), Ok(VariantChoice::Exact(Quantized)));
        let err = VariantChoice::Exact(Fp32).pinned_by(Some(Quantized)).unwrap_err();
        assert_eq!(err, VariantMismatch { have: Quantized, want: Fp32 });
        let msg = err.to_string();
        assert!(msg.contains("--variant quantized") && msg.contains("reindex --variant fp32"), "{msg}");
    }

    #[test]
    fn variant_choices_parse_and_serialize_by_name() {
        for (s, v) in
            [("auto", VariantChoice::Auto), ("fp32", VariantChoice::Exact(Fp32)), ("QUANTIZED", VariantChoice::Exact(Quantized))]
        {
            assert_eq!(s.parse::<VariantChoice>(), Ok(v));
            assert_eq!(serde_json::to_value(v).unwrap(), s.to_ascii_lowercase());
            assert_eq!(serde_json::from_value::<VariantChoice>(serde_json::json!(s)).unwrap(), v);
        }
        assert!("int8".parse::<VariantChoice>().unwrap_err().to_string().contains("fp32, fp16, quantized or auto"));
        assert!(serde_json::from_str::<VariantChoice>("\"q4\"").is_err());
    }

    #[test]
    fn a_directory_lists_its_whole_variants_and_hashes_what_each_loads() {
        let (dir, m) = model_dir_with_card(None);
        let m = m.unwrap();
        assert_eq!(m.variants(), [Fp32]);
        let fp32 = m.content_hash(Fp32).unwrap();
        // Half a variant (one tower) is no variant.
        std::fs::write(dir.path().join("vision_model_quantized.onnx"), "q").unwrap();
        assert_eq!(m.variants(), [Fp32]);
        let err = m.missing_variant(Quantized).to_string();
        assert!(err.contains("missing text_model_quantized.onnx") && err.contains("scripts/quantize_model.py"), "{err}");
        assert!(!err.contains("vision_model_quantized.onnx"), "{err}");
        std::fs::write(dir.path().join("text_model_quantized.onnx"), "q").unwrap();
        assert_eq!(m.variants(), [Fp32, Quantized]);
        assert_eq!(m.tower_file("text_model", Quantized), dir.path().join("text_model_quantized.onnx"));
        let q = m.content_hash(Quantized).unwrap();
        assert_ne!(q, fp32);
        assert_eq!(m.content_hash(Fp32).unwrap(), fp32, "adding a variant leaves the fp32 hash alone");
        assert!(m.missing_variant(Fp16).to_string().contains("model fetch NAME --variant fp16"));
    }

    /// The fp32 hash is the one indexes recorded before variants: over the four files in order.
    #[test]
    fn the_fp32_hash_is_unchanged() {
        let (dir, m) = model_dir_with_card(None);
        let mut h = blake3::Hasher::new();
        for f in MODEL_FILES {
            h.update(f.as_bytes());
            h.update(&std::fs::read(dir.path().join(f)).unwrap());
        }
        assert_eq!(m.unwrap().content_hash(Fp32).unwrap(), h.finalize().to_hex().to_string());
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing vision_model.onnx"), "{err}");
    }
}
