//! The model directory contract.
//!
//! A model is a directory with `vision_model.onnx`, `text_model.onnx`, `tokenizer.json` and
//! `preprocessor_config.json`: the layout of the CLIP ONNX exports on the Hugging Face Hub. Nothing
//! about the model is a constant in code: image size, mean, std and crop all come from the config,
//! and the embedding dimension and text length come from the ONNX graphs themselves.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vitrine_core::error::{CoreError, Result};
use vitrine_core::relevance::Floors;

pub const VISION_FILE: &str = "vision_model.onnx";
pub const TEXT_FILE: &str = "text_model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
/// The files a model directory must hold, in the order their bytes enter the content hash.
pub const MODEL_FILES: [&str; 4] = [VISION_FILE, TEXT_FILE, TOKENIZER_FILE, PREPROCESSOR_FILE];

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

    /// blake3 over the model files, so that an index notices a swapped model even under the same name.
    /// A SigLIP model's `config.json` and `tokenizer_config.json` change how it runs, so they count
    /// too; a CLIP model's hash is over [`MODEL_FILES`] only, as it always was.
    pub fn content_hash(&self) -> Result<String> {
        let mut h = blake3::Hasher::new();
        let extra: &[&str] = if self.family.is_siglip() { &[CONFIG_FILE, TOKENIZER_CONFIG_FILE] } else { &[] };
        let present_extra = extra.iter().copied().filter(|f| self.file(f).is_file());
        for f in MODEL_FILES.into_iter().chain(present_extra) {
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
        let hash = || ModelDir::open(dir.path()).unwrap().content_hash().unwrap();
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
