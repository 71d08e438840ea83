//! Embedders: turn preprocessed pixels and text into L2-normalized vectors.
//!
//! [`Embedder`] is the seam. [`ClipOnnx`] is the production implementation on ONNX Runtime;
//! [`FakeEmbedder`] is a deterministic stand-in for fast unit tests of code above the model
//! (the tiny real ONNX model covers integration tests).
//!
//! Threading: `ort::Session::run` takes `&mut self`, so each tower is one session behind a mutex
//! whose intra-op pool uses every core. Callers batch; concurrent callers queue on the mutex.

use std::path::Path;
use std::time::Instant;

use ort::session::Session;
use ort::value::TensorRef;
use parking_lot::Mutex;

use crate::model::{ModelDir, ModelFamily, TEXT_FILE, TOKENIZER_FILE, VISION_FILE};
use crate::preprocess::Preprocessor;
use crate::runtime::{self, Device, RuntimeOptions};
use crate::tokenize::TextTokenizer;
use vitrine_core::error::{CoreError, Result};
use vitrine_core::relevance::Floors;
use vitrine_core::vector::l2_normalize;
use vitrine_core::ModelId;

pub trait Embedder: Send + Sync {
    fn model_id(&self) -> &ModelId;
    /// The device inference really runs on.
    fn device(&self) -> Device;
    fn preprocessor(&self) -> &Preprocessor;
    /// `pixels` holds `n` preprocessed images back to back (see [`Preprocessor::run_into`]).
    fn embed_pixels(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>>;
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Token ids of one text, as the text tower sees them.
    fn token_ids(&self, text: &str) -> Result<Vec<u32>>;

    fn dim(&self) -> usize {
        self.model_id().dim
    }

    /// The model card's default relevance floor, if it has one.
    fn relevance_floor(&self) -> Option<Floors> {
        None
    }
}

/// The service's model, set once it is loaded and warmed: the service listens (and answers
/// `/healthz`) before that, and both the query and the write side read it from here.
pub type ModelSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn Embedder>>>;

/// CLIP's two towers exported to ONNX (the model directory contract in [`crate::model`]), and
/// SigLIP's, which differ in the text input (`input_ids` only, padded to a fixed length) and the
/// preprocessing (see [`crate::siglip`]).
pub struct ClipOnnx {
    id: ModelId,
    device: Device,
    preprocessor: Preprocessor,
    tokenizer: TextTokenizer,
    vision: Mutex<Session>,
    text: Mutex<Session>,
    floor: Option<Floors>,
    /// What the text graph's `attention_mask` input gets, if it has one.
    text_mask: TextMask,
    family: ModelFamily,
}

/// The text tower's attention mask input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextMask {
    /// No such input (SigLIP exports).
    Absent,
    /// 1 on tokens, 0 on padding (CLIP).
    Tokens,
    /// All ones: a SigLIP graph that still takes a mask attends to its padding, as it was trained.
    AllOnes,
}

impl ClipOnnx {
    pub fn load(dir: &ModelDir, opts: &RuntimeOptions) -> Result<Self> {
        let started = Instant::now();
        let (vision, device) = runtime::session(&dir.file(VISION_FILE), opts)?;
        // The text tower follows the vision tower's device, so `auto` never splits them.
        let text_opts = RuntimeOptions { device, ..opts.clone() };
        let (text, _) = runtime::session(&dir.file(TEXT_FILE), &text_opts)?;

        let text_len_dim = input_dim(&text, "input_ids", 1);
        let fixed_len = text_len_dim.filter(|d| *d > 0).map(|d| d as usize);
        let has_mask = text.inputs().iter().any(|i| i.name() == "attention_mask");
        let (tokenizer, text_mask) = if dir.family.is_siglip() {
            let t = TextTokenizer::load_siglip(&dir.file(TOKENIZER_FILE), dir.family, fixed_len)?;
            (t, if has_mask { TextMask::AllOnes } else { TextMask::Absent })
        } else {
            let max_len = dir.card.max_text_len.unwrap_or(77);
            (TextTokenizer::load(&dir.file(TOKENIZER_FILE), max_len, fixed_len)?, TextMask::Tokens)
        };
        let required: &[(&Session, &str)] = if dir.family.is_siglip() {
            &[(&vision, "pixel_values"), (&text, "input_ids")]
        } else {
            &[(&vision, "pixel_values"), (&text, "input_ids"), (&text, "attention_mask")]
        };
        for (s, name) in required {
            if !s.inputs().iter().any(|i| i.name() == *name) {
                return Err(CoreError::ModelLoad {
                    path: dir.path.clone(),
                    message: format!("an ONNX graph lacks the input {name}"),
                });
            }
        }
        for (s, kind) in [(&vision, Tower::Image), (&text, Tower::Text)] {
            let names: Vec<&str> = s.outputs().iter().map(|o| o.name()).collect();
            embedding_output_name(&names, kind).map_err(|message| CoreError::ModelLoad { path: dir.path.clone(), message })?;
        }
        let mut me = ClipOnnx {
            id: ModelId { name: dir.name.clone(), content_hash: dir.content_hash()?, dim: 0 },
            device,
            preprocessor: Preprocessor::new(dir.preprocessor.clone()),
            tokenizer,
            vision: Mutex::new(vision),
            text: Mutex::new(text),
            floor: dir.card.relevance_floor,
            text_mask,
            family: dir.family,
        };
        // Read the dimension off a real run: this also warms both sessions up.
        let img_dim = me.embed_pixels(&vec![0.0; me.preprocessor.tensor_len()], 1)?[0].len();
        let txt_dim = me.embed_texts(&["warm up"])?[0].len();
        if img_dim != txt_dim || img_dim == 0 {
            return Err(CoreError::ModelLoad {
                path: dir.path.clone(),
                message: format!("image embeddings have {img_dim} dimensions but text embeddings {txt_dim}"),
            });
        }
        me.id.dim = img_dim;
        tracing::info!(model = %me.id.name, family = ?me.family, dim = img_dim, device = %device, ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(me)
    }

    /// Load from a path with the given options.
    pub fn open(path: &Path, opts: &RuntimeOptions) -> Result<Self> {
        Self::load(&ModelDir::open(path)?, opts)
    }

    /// The text tokenizer, as configured for this model (padding, length, canonicalization).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The model family its directory declared.
    pub fn family(&self) -> ModelFamily {
        self.family
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tower {
    Image,
    Text,
}

/// The one rule for which graph output is the embedding: `image_embeds`/`text_embeds` (CLIP
/// exports, and SigLIP exports of the whole model) when present, else `pooler_output` (exports of
/// `SiglipVisionModel`/`SiglipTextModel`), else the graph's only output.
fn embedding_output_name<'a>(names: &[&'a str], tower: Tower) -> std::result::Result<&'a str, String> {
    let preferred = match tower {
        Tower::Image => "image_embeds",
        Tower::Text => "text_embeds",
    };
    for want in [preferred, "pooler_output"] {
        if let Some(n) = names.iter().find(|n| **n == want) {
            return Ok(n);
        }
    }
    let tower = match tower {
        Tower::Image => "vision",
        Tower::Text => "text",
    };
    match names {
        [only] => Ok(only),
        _ => Err(format!("the {tower} graph has no {preferred} or pooler_output output (it has {names:?})")),
    }
}

fn embedding_output<'s>(outputs: &'s ort::session::SessionOutputs<'_>, tower: Tower) -> Result<&'s ort::value::DynValue> {
    let names: Vec<&str> = outputs.keys().collect();
    let name = embedding_output_name(&names, tower).map_err(infer_err)?;
    outputs.get(name).ok_or_else(|| infer_err(format!("no output {name}")))
}

fn input_dim(s: &Session, name: &str, axis: usize) -> Option<i64> {
    let i = s.inputs().iter().find(|i| i.name() == name)?;
    i.dtype().tensor_shape().and_then(|shape| shape.get(axis).copied())
}

fn infer_err(e: impl std::fmt::Display) -> CoreError {
    CoreError::Inference { message: e.to_string() }
}

/// Rows of a [n, d] output, each L2-normalized.
fn normalized_rows(data: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
    if n == 0 || !data.len().is_multiple_of(n) {
        return Err(infer_err(format!("output of {} values does not split into {n} rows", data.len())));
    }
    let d = data.len() / n;
    Ok(data
        .chunks_exact(d)
        .map(|row| {
            let mut v = row.to_vec();
            l2_normalize(&mut v);
            v
        })
        .collect())
}

impl Embedder for ClipOnnx {
    fn model_id(&self) -> &ModelId {
        &self.id
    }
    fn relevance_floor(&self) -> Option<Floors> {
        self.floor
    }
    fn device(&self) -> Device {
        self.device
    }
    fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    fn embed_pixels(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        if n == 0 {
            return Ok(vec![]);
        }
        let (h, w) = self.preprocessor.output_size();
        if pixels.len() != n * self.preprocessor.tensor_len() {
            return Err(infer_err(format!("{} pixel values for {n} images", pixels.len())));
        }
        let input = TensorRef::from_array_view(([n, 3, h as usize, w as usize], pixels)).map_err(infer_err)?;
        let mut session = self.vision.lock();
        let outputs = session.run(ort::inputs!["pixel_values" => input]).map_err(infer_err)?;
        let out = embedding_output(&outputs, Tower::Image)?;
        let (_, data) = out.try_extract_tensor::<f32>().map_err(infer_err)?;
        normalized_rows(data, n)
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(vec![]);
        }
        let b = self.tokenizer.batch(texts)?;
        let ids = TensorRef::from_array_view(([b.n, b.len], &b.input_ids[..])).map_err(infer_err)?;
        let ones: Vec<i64>;
        let mask_values = match self.text_mask {
            TextMask::Absent => None,
            TextMask::Tokens => Some(&b.attention_mask[..]),
            TextMask::AllOnes => {
                ones = vec![1; b.input_ids.len()];
                Some(&ones[..])
            }
        };
        let mut session = self.text.lock();
        let outputs = match mask_values {
            None => session.run(ort::inputs!["input_ids" => ids]),
            Some(values) => {
                let mask = TensorRef::from_array_view(([b.n, b.len], values)).map_err(infer_err)?;
                session.run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
            }
        }
        .map_err(infer_err)?;
        let out = embedding_output(&outputs, Tower::Text)?;
        let (_, data) = out.try_extract_tensor::<f32>().map_err(infer_err)?;
        normalized_rows(data, b.n)
    }

    fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.ids(text)
    }
}

/// A deterministic embedder without a model, for unit tests of indexing and ranking.
///
/// Images: mean colour of each cell of a coarse grid over the preprocessed tensor. Texts: hashed
/// bag of lowercase words. Both are projected into the same space by hashing, so identical
/// inputs give identical vectors and similar inputs give similar ones.
pub struct FakeEmbedder {
    id: ModelId,
    preprocessor: Preprocessor,
}

impl FakeEmbedder {
    pub fn new(dim: usize) -> Self {
        let mut cfg = crate::model::PreprocessorConfig::load_default();
        cfg.size = crate::model::SizeSpec::ShortestEdge { shortest_edge: 32 };
        cfg.crop_size = crate::model::CropSpec::HeightWidth { height: 32, width: 32 };
        FakeEmbedder {
            id: ModelId { name: "fake".into(), content_hash: format!("fake-{dim}"), dim },
            preprocessor: Preprocessor::new(cfg),
        }
    }

    fn bucket(&self, key: &[u8]) -> (usize, f32) {
        let h = blake3::hash(key);
        let b = h.as_bytes();
        let idx = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize % self.id.dim;
        (idx, if b[8] & 1 == 0 { 1.0 } else { -1.0 })
    }
}

impl Embedder for FakeEmbedder {
    fn model_id(&self) -> &ModelId {
        &self.id
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }
    fn embed_pixels(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        let len = self.preprocessor.tensor_len();
        Ok(pixels
            .chunks_exact(len)
            .take(n)
            .map(|img| {
                let mut v = vec![0.0; self.id.dim];
                // 4x4 grid x 3 channels = 48 cell means, each spread over the space by hashing.
                for (cell, chunk) in img.chunks(len / 48).enumerate() {
                    let mean = chunk.iter().sum::<f32>() / chunk.len() as f32;
                    for k in 0..4u8 {
                        let (i, s) = self.bucket(&[cell as u8, k]);
                        v[i] += s * mean;
                    }
                }
                l2_normalize(&mut v);
                v
            })
            .collect())
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0; self.id.dim];
                for w in t.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                    let (i, s) = self.bucket(w.as_bytes());
                    v[i] += s;
                }
                l2_normalize(&mut v);
                v
            })
            .collect())
    }
    fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.split_whitespace().map(|w| self.bucket(w.as_bytes()).0 as u32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitrine_core::vector::dot;

    #[test]
    fn fake_text_embeddings_are_deterministic_and_word_based() {
        let e = FakeEmbedder::new(64);
        let v = e.embed_texts(&["red mug", "Red MUG", "blue chair"]).unwrap();
        assert!((dot(&v[0], &v[1]) - 1.0).abs() < 1e-6);
        assert!(dot(&v[0], &v[2]) < 0.9);
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_embedding_output_is_chosen_by_one_rule() {
        let pick = |names: &[&'static str], t| embedding_output_name(names, t);
        assert_eq!(pick(&["last_hidden_state", "image_embeds"], Tower::Image), Ok("image_embeds"));
        assert_eq!(pick(&["last_hidden_state", "pooler_output"], Tower::Image), Ok("pooler_output"));
        assert_eq!(pick(&["pooler_output", "text_embeds"], Tower::Text), Ok("text_embeds"));
        assert_eq!(pick(&["image_embeds", "pooler_output"], Tower::Text), Ok("pooler_output"), "not the other tower's name");
        assert_eq!(pick(&["embedding"], Tower::Text), Ok("embedding"));
        assert!(pick(&["last_hidden_state", "logits"], Tower::Image).unwrap_err().contains("last_hidden_state"));
    }

    #[test]
    fn normalized_rows_rejects_bad_shapes() {
        assert!(normalized_rows(&[1.0, 2.0, 3.0], 2).is_err());
        let rows = normalized_rows(&[3.0, 4.0, 0.0, 2.0], 2).unwrap();
        assert_eq!(rows, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    }
}
