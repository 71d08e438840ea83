//! Embedders: turn preprocessed pixels and text into L2-normalized vectors.
//!
//! [`Embedder`] is the seam. [`ClipOnnx`] is the production implementation on ONNX Runtime;
//! [`FakeEmbedder`] is a deterministic stand-in for fast unit tests of code above the model
//! (the tiny real ONNX model covers integration tests).
//!
//! Threading: `ort::Session::run` takes `&mut self`, so each tower is one session behind a mutex
//! whose intra-op pool uses every core. Callers batch; concurrent callers queue on the mutex.
//!
//! Variants: the towers load the weights [`RuntimeOptions::variant`] resolves to on the device the
//! session gets; fp16 graphs that take or give half floats are fed and read through conversions, so
//! callers always see f32. On CUDA the vision tower runs through an IO binding (see [`PinnedIo`]).

use std::path::Path;
use std::time::Instant;

use half::f16;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};
use parking_lot::Mutex;

use crate::model::{ModelDir, ModelFamily, Variant, TOKENIZER_FILE, TOWERS};
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
    vision: Mutex<Tower>,
    text: Mutex<Tower>,
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

/// One tower's session and what its graph takes and gives.
struct Tower {
    session: Session,
    /// The element type of the float input (`pixel_values`): f32, or f16 in some fp16 exports.
    float_input: TensorElementType,
    /// The output holding the embedding.
    output: String,
    /// On CUDA: inputs from pinned host memory, outputs written back to pinned memory.
    io: Option<PinnedIo>,
}

impl Tower {
    /// `output` is the graph's embedding output, chosen by [`embedding_output_name`].
    fn new(session: Session, float_input: &str, output: String, device: Device, cuda_device_id: i32) -> Result<Self> {
        let float_input = session
            .inputs()
            .iter()
            .find(|i| i.name() == float_input)
            .and_then(|i| i.dtype().tensor_type())
            .unwrap_or(TensorElementType::Float32);
        let io =
            if device == Device::Cuda && io_binding_enabled() { Some(PinnedIo::new(&session, cuda_device_id)?) } else { None };
        Ok(Tower { session, float_input, output, io })
    }
}

/// `VITRINE_IO_BINDING=0` turns the CUDA IO binding off (to measure what it is worth).
fn io_binding_enabled() -> bool {
    std::env::var("VITRINE_IO_BINDING").map_or(true, |v| v != "0")
}

/// The CUDA path's buffers: the batch is written once into pinned (page-locked) host memory, from
/// which ONNX Runtime copies it to the device asynchronously; the output is bound to pinned memory
/// too, so the result comes back without a pageable staging copy, and everything in between (the
/// weights, the activations) stays on the device. The pinned input is kept between calls and
/// reallocated only when the batch size changes.
struct PinnedIo {
    binding: IoBinding,
    pinned: Allocator,
    /// (images, pinned tensor) of the last batch.
    input: Option<(usize, DynValue)>,
    device_id: i32,
}

impl PinnedIo {
    fn new(session: &Session, device_id: i32) -> Result<Self> {
        let mem = MemoryInfo::new(AllocationDevice::CUDA_PINNED, device_id, AllocatorType::Device, MemoryType::CPUInput)
            .map_err(infer_err)?;
        Ok(PinnedIo {
            binding: session.create_binding().map_err(infer_err)?,
            pinned: Allocator::new(session, mem).map_err(infer_err)?,
            input: None,
            device_id,
        })
    }

    /// Run `session` on `pixels` (shape `shape`) as `ty`, returning the embedding output as f32.
    fn run(
        &mut self,
        session: &mut Session,
        input: &str,
        output: &str,
        shape: [usize; 4],
        pixels: &[f32],
        ty: TensorElementType,
    ) -> Result<Vec<f32>> {
        let n = shape[0];
        if self.input.as_ref().is_none_or(|(have, _)| *have != n) {
            let t = match ty {
                TensorElementType::Float16 => Tensor::<f16>::new(&self.pinned, shape).map_err(infer_err)?.upcast().into_dyn(),
                _ => Tensor::<f32>::new(&self.pinned, shape).map_err(infer_err)?.upcast().into_dyn(),
            };
            self.input = Some((n, t));
        }
        let (_, tensor) = self.input.as_mut().expect("allocated above");
        match ty {
            TensorElementType::Float16 => {
                let (_, dst) = tensor.try_extract_tensor_mut::<f16>().map_err(infer_err)?;
                dst.iter_mut().zip(pixels).for_each(|(d, s)| *d = f16::from_f32(*s));
            }
            _ => tensor.try_extract_tensor_mut::<f32>().map_err(infer_err)?.1.copy_from_slice(pixels),
        }
        self.binding.bind_input(input, &*tensor).map_err(infer_err)?;
        let out_mem =
            MemoryInfo::new(AllocationDevice::CUDA_PINNED, self.device_id, AllocatorType::Device, MemoryType::CPUOutput)
                .map_err(infer_err)?;
        self.binding.bind_output_to_device(output, &out_mem).map_err(infer_err)?;
        let outputs = session.run_binding(&self.binding).map_err(infer_err)?;
        self.binding.synchronize_outputs().map_err(infer_err)?;
        let out = outputs.get(output).ok_or_else(|| infer_err(format!("no output {output}")))?;
        floats(out)
    }
}

/// A float output as f32, whether the graph gives f32 or f16.
fn floats(v: &DynValue) -> Result<Vec<f32>> {
    match v.try_extract_tensor::<f32>() {
        Ok((_, data)) => Ok(data.to_vec()),
        Err(_) => {
            let (_, data) = v.try_extract_tensor::<f16>().map_err(infer_err)?;
            Ok(data.iter().map(|x| x.to_f32()).collect())
        }
    }
}

impl ClipOnnx {
    pub fn load(dir: &ModelDir, opts: &RuntimeOptions) -> Result<Self> {
        let started = Instant::now();
        let available = dir.variants();
        // The variant follows the device the vision session really gets (auto: CUDA, else CPU).
        let pick = |device: Device| -> Result<(std::path::PathBuf, Variant)> {
            let v = opts.variant.resolve(device, &available).ok_or_else(|| match opts.variant {
                crate::model::VariantChoice::Exact(v) => dir.missing_variant(v),
                crate::model::VariantChoice::Auto => unreachable!("auto always resolves"),
            })?;
            Ok((dir.tower_file(TOWERS[0], v), v))
        };
        let (vision, device, variant) = runtime::session_for(opts, pick)?;
        // The text tower follows the vision tower's device and variant, so `auto` never splits them.
        let text_opts = RuntimeOptions { device, ..opts.clone() };
        let (text, _) = runtime::session(&dir.tower_file(TOWERS[1], variant), &text_opts)?;

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
        let output_of = |s: &Session, kind: TowerKind| -> Result<String> {
            let names: Vec<&str> = s.outputs().iter().map(|o| o.name()).collect();
            embedding_output_name(&names, kind)
                .map(str::to_string)
                .map_err(|message| CoreError::ModelLoad { path: dir.path.clone(), message })
        };
        let (vision_out, text_out) = (output_of(&vision, TowerKind::Image)?, output_of(&text, TowerKind::Text)?);
        let mut me = ClipOnnx {
            id: ModelId { name: dir.name.clone(), content_hash: dir.content_hash(variant)?, dim: 0, variant },
            device,
            preprocessor: Preprocessor::new(dir.preprocessor.clone()),
            tokenizer,
            vision: Mutex::new(Tower::new(vision, "pixel_values", vision_out, device, opts.cuda_device_id)?),
            text: Mutex::new(Tower::new(text, "input_ids", text_out, device, opts.cuda_device_id)?),
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
        tracing::info!(model = %me.id.name, family = ?me.family, dim = img_dim, device = %device, variant = %variant, ms = started.elapsed().as_millis() as u64, "model loaded");
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

/// Which tower a graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TowerKind {
    Image,
    Text,
}

/// The one rule for which graph output is the embedding: `image_embeds`/`text_embeds` (CLIP
/// exports, and SigLIP exports of the whole model) when present, else `pooler_output` (exports of
/// `SiglipVisionModel`/`SiglipTextModel`), else the graph's only output.
fn embedding_output_name<'a>(names: &[&'a str], tower: TowerKind) -> std::result::Result<&'a str, String> {
    let preferred = match tower {
        TowerKind::Image => "image_embeds",
        TowerKind::Text => "text_embeds",
    };
    for want in [preferred, "pooler_output"] {
        if let Some(n) = names.iter().find(|n| **n == want) {
            return Ok(n);
        }
    }
    let tower = match tower {
        TowerKind::Image => "vision",
        TowerKind::Text => "text",
    };
    match names {
        [only] => Ok(only),
        _ => Err(format!("the {tower} graph has no {preferred} or pooler_output output (it has {names:?})")),
    }
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
        let shape = [n, 3, h as usize, w as usize];
        let mut guard = self.vision.lock();
        let tower = &mut *guard;
        let data = if let Some(io) = tower.io.as_mut() {
            io.run(&mut tower.session, "pixel_values", &tower.output, shape, pixels, tower.float_input)?
        } else if tower.float_input == TensorElementType::Float16 {
            let half: Vec<f16> = pixels.iter().map(|v| f16::from_f32(*v)).collect();
            let input = TensorRef::from_array_view((shape, &half[..])).map_err(infer_err)?;
            let outputs = tower.session.run(ort::inputs!["pixel_values" => input]).map_err(infer_err)?;
            floats(&outputs[tower.output.as_str()])?
        } else {
            let input = TensorRef::from_array_view((shape, pixels)).map_err(infer_err)?;
            let outputs = tower.session.run(ort::inputs!["pixel_values" => input]).map_err(infer_err)?;
            floats(&outputs[tower.output.as_str()])?
        };
        normalized_rows(&data, n)
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
        let mut tower = self.text.lock();
        let tower = &mut *tower;
        let outputs = match mask_values {
            None => tower.session.run(ort::inputs!["input_ids" => ids]),
            Some(values) => {
                let mask = TensorRef::from_array_view(([b.n, b.len], values)).map_err(infer_err)?;
                tower.session.run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
            }
        }
        .map_err(infer_err)?;
        normalized_rows(&floats(&outputs[tower.output.as_str()])?, b.n)
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
            id: ModelId { name: "fake".into(), content_hash: format!("fake-{dim}"), dim, variant: Variant::Fp32 },
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

    /// fp16 graphs may give half floats: they read as f32, like f32 outputs do.
    #[test]
    fn half_and_single_float_outputs_read_as_f32() {
        crate::runtime::environment(None).expect("ONNX Runtime (scripts/setup.sh)");
        let h = Tensor::from_array(([3usize], vec![f16::from_f32(0.5), f16::from_f32(-2.0), f16::from_f32(1.0 / 3.0)])).unwrap();
        let got = floats(&h.into_dyn()).unwrap();
        assert_eq!(&got[..2], &[0.5, -2.0]);
        assert!((got[2] - 1.0 / 3.0).abs() < 1e-3, "{got:?}");
        let f = Tensor::from_array(([2usize], vec![0.25f32, 4.0])).unwrap();
        assert_eq!(floats(&f.into_dyn()).unwrap(), [0.25, 4.0]);
        let i = Tensor::from_array(([1usize], vec![7i64])).unwrap();
        assert!(floats(&i.into_dyn()).is_err(), "integers are no embedding");
    }

    #[test]
    fn the_embedding_output_is_chosen_by_one_rule() {
        let pick = |names: &[&'static str], t| embedding_output_name(names, t);
        assert_eq!(pick(&["last_hidden_state", "image_embeds"], TowerKind::Image), Ok("image_embeds"));
        assert_eq!(pick(&["last_hidden_state", "pooler_output"], TowerKind::Image), Ok("pooler_output"));
        assert_eq!(pick(&["pooler_output", "text_embeds"], TowerKind::Text), Ok("text_embeds"));
        assert_eq!(pick(&["image_embeds", "pooler_output"], TowerKind::Text), Ok("pooler_output"), "not the other tower's name");
        assert_eq!(pick(&["embedding"], TowerKind::Text), Ok("embedding"));
        assert!(pick(&["last_hidden_state", "logits"], TowerKind::Image).unwrap_err().contains("last_hidden_state"));
    }

    #[test]
    fn normalized_rows_rejects_bad_shapes() {
        assert!(normalized_rows(&[1.0, 2.0, 3.0], 2).is_err());
        let rows = normalized_rows(&[3.0, 4.0, 0.0, 2.0], 2).unwrap();
        assert_eq!(rows, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    }
}
