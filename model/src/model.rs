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
        Self::load_for(path, ModelFamily::Clip)
    }

    /// Read a `preprocessor_config.json` with the defaults of the family's image processor
    /// (`CLIPImageProcessor`, or `SiglipImageProcessor`: see [`crate::siglip::preprocessor_json`]).
    pub fn load_for(path: &Path, family: ModelFamily) -> Result<Self> {
        let bytes = read_bounded(path, MAX_CONFIG_BYTES)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| CoreError::ModelLoad {
            path: path.to_path_buf(),
            message: format!("not a valid image processor config: {e}"),
        })?;
        let value = match family {
            ModelFamily::Clip => value,
            ModelFamily::Siglip | ModelFamily::Siglip2 => crate::siglip::preprocessor_json(value, path)?,
        };
        let cfg: Self = serde_json::from_value(value).map_err(|e| CoreError::ModelLoad {
            path: path.to_path_buf(),
            message: format!("not a valid {} config: {e}", family.image_processor()),
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
        // PIL's resampling filters are 0..=5; anything else is a broken or hostile file, not bicubic.
        if self.resample > 5 {
            return Err(CoreError::ModelLoad {
                path: path.to_path_buf(),
                message: format!("resample {} is not a PIL filter (0 nearest .. 5 hamming)", self.resample),
            });
        }
        if !(self.rescale_factor.is_finite() && self.rescale_factor > 0.0)
            || self.image_mean.iter().chain(&self.image_std).any(|v| !v.is_finite())
        {
            return Err(CoreError::ModelLoad {
                path: path.to_path_buf(),
                message: "rescale_factor, image_mean and image_std must be finite (and the factor positive)".into(),
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

/// The largest JSON config read (`config.json`, `tokenizer_config.json`, `preprocessor_config.json`):
/// real ones are a few KiB, Gemma's `tokenizer_config.json` about 1 MiB; a bigger file is not a config.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The largest `tokenizer.json` read (a 256k-token Gemma vocabulary is about 33 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 512 << 20;

/// Read a model file whole, refusing one over `limit` bytes before reading it.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let err = |message: String| CoreError::ModelLoad { path: path.to_path_buf(), message };
    let len = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?.len();
    if len > limit {
        return Err(err(format!("{len} bytes is more than this file may hold ({limit})")));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))
}

/// The optional Hugging Face `config.json` (its `model_type` says which family a model is).
pub const CONFIG_FILE: &str = "config.json";
/// The optional `tokenizer_config.json` (text length, padding side, lower-casing of SigLIP models).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Which kind of two-tower model a directory holds; it decides the image processor's defaults,
/// how text is tokenized and padded, and which inputs the text tower takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// CLIP (and anything without a `config.json`, or with another `model_type`): the hub's CLIP ONNX layout.
    #[default]
    Clip,
    /// `model_type` `siglip`: SigLIP, and SigLIP 2 at a fixed resolution (google/siglip2-*-224 say `siglip`).
    Siglip,
    /// `model_type` `siglip2`: only fixed-resolution exports are supported (see docs/MODELS.md).
    Siglip2,
}

impl ModelFamily {
    /// The family named by `config.json`'s `model_type`; a directory without the file is CLIP.
    pub fn detect(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        if !path.is_file() {
            return Ok(ModelFamily::Clip);
        }
        let bytes = read_bounded(&path, MAX_CONFIG_BYTES)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| CoreError::ModelLoad { path: path.clone(), message: format!("not valid JSON: {e}") })?;
        Ok(match v.get("model_type").and_then(|t| t.as_str()) {
            Some("siglip") => ModelFamily::Siglip,
            Some("siglip2") => ModelFamily::Siglip2,
            _ => ModelFamily::Clip,
        })
    }

    pub fn is_siglip(self) -> bool {
        matches!(self, ModelFamily::Siglip | ModelFamily::Siglip2)
    }

    fn image_processor(self) -> &'static str {
        if self.is_siglip() {
            "SiglipImageProcessor"
        } else {
            "CLIPImageProcessor"
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
    pub family: ModelFamily,
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
        let family = ModelFamily::detect(&path)?;
        let preprocessor = PreprocessorConfig::load_for(&path.join(PREPROCESSOR_FILE), family)?;
        let card_path = path.join(CARD_FILE);
        let card = if card_path.is_file() {
            let bytes = read_bounded(&card_path, MAX_CONFIG_BYTES)?;
            serde_json::from_slice::<ModelCard>(&bytes).map_err(|e| CoreError::ModelLoad {
                path: path.clone(),
                message: format!("{CARD_FILE}: {e}; fix the file or remove it"),
            })?
        } else {
            ModelCard::default()
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
        Ok(ModelDir { path, name, preprocessor, card, family })
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
    /// is the one indexes recorded before variants existed. A SigLIP model's `config.json` and
    /// `tokenizer_config.json` change how it runs, so they count too; a CLIP model's do not.
    pub fn content_hash(&self, variant: Variant) -> Result<String> {
        let mut h = blake3::Hasher::new();
        let extra: &[&str] = if self.family.is_siglip() { &[CONFIG_FILE, TOKENIZER_CONFIG_FILE] } else { &[] };
        let files: Vec<String> =
            [variant.onnx_file(TOWERS[0]), variant.onnx_file(TOWERS[1]), TOKENIZER_FILE.into(), PREPROCESSOR_FILE.into()]
                .into_iter()
                .chain(extra.iter().filter(|f| self.file(f).is_file()).map(|f| f.to_string()))
                .collect();
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
    fn the_family_comes_from_config_json() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ModelFamily::detect(dir.path()).unwrap(), ModelFamily::Clip, "no config.json: the CLIP layout");
        for (cfg, want) in [
            (r#"{"model_type": "clip"}"#, ModelFamily::Clip),
            (r#"{"model_type": "siglip"}"#, ModelFamily::Siglip),
            (r#"{"model_type": "siglip2"}"#, ModelFamily::Siglip2),
            (r#"{"model_type": "SIGLIP"}"#, ModelFamily::Clip),
            (r#"{"model_type": 7}"#, ModelFamily::Clip),
            (r#"{}"#, ModelFamily::Clip),
        ] {
            std::fs::write(dir.path().join(CONFIG_FILE), cfg).unwrap();
            assert_eq!(ModelFamily::detect(dir.path()).unwrap(), want, "{cfg}");
        }
        std::fs::write(dir.path().join(CONFIG_FILE), "{").unwrap();
        assert!(ModelFamily::detect(dir.path()).is_err(), "a broken config.json is refused, not read as CLIP");
    }

    #[test]
    fn hostile_preprocessor_values_are_refused_for_every_family() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(PREPROCESSOR_FILE);
        for bad in [
            r#"{"resample": 6}"#,
            r#"{"resample": 4294967295}"#,
            r#"{"resample": -1}"#,
            r#"{"rescale_factor": 0}"#,
            r#"{"image_std": [0.5, 0.0, 0.5]}"#,
            r#"{"crop_size": 0}"#,
            r#"{"crop_size": {"height": 5000, "width": 224}}"#,
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(PreprocessorConfig::load_for(&p, ModelFamily::Clip).is_err(), "clip {bad}");
            assert!(PreprocessorConfig::load_for(&p, ModelFamily::Siglip).is_err() || bad.contains("crop"), "siglip {bad}");
        }
        // SigLIP has no crop, so its (unused) crop_size cannot make the output size wrong.
        std::fs::write(&p, r#"{"crop_size": 0, "size": {"height": 160, "width": 192}}"#).unwrap();
        let cfg = PreprocessorConfig::load_for(&p, ModelFamily::Siglip).unwrap();
        assert_eq!((cfg.output_size(), cfg.do_center_crop, cfg.resample, cfg.image_mean), ((160, 192), false, 3, [0.5; 3]));
    }

    #[test]
    fn a_siglip_hash_covers_its_configs_and_a_clip_hash_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        for f in MODEL_FILES {
            std::fs::write(dir.path().join(f), if f == PREPROCESSOR_FILE { "{}" } else { f }).unwrap();
        }
        let hash = || ModelDir::open(dir.path()).unwrap().content_hash(Variant::Fp32).unwrap();
        let clip = hash();
        std::fs::write(dir.path().join(CONFIG_FILE), r#"{"model_type": "clip"}"#).unwrap();
        std::fs::write(dir.path().join(TOKENIZER_CONFIG_FILE), "{}").unwrap();
        assert_eq!(hash(), clip, "a CLIP model's hash is over the four files, as indexes recorded it");
        std::fs::write(dir.path().join(CONFIG_FILE), r#"{"model_type": "siglip"}"#).unwrap();
        let siglip = hash();
        assert_ne!(siglip, clip);
        std::fs::write(dir.path().join(TOKENIZER_CONFIG_FILE), r#"{"padding_side": "left"}"#).unwrap();
        assert_ne!(hash(), siglip, "tokenizer_config.json changes how a SigLIP model runs");
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing vision_model.onnx"), "{err}");
    }
}
