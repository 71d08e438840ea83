//! The model stage: the model-directory contract ([`model`]), image decoding and preprocessing
//! ([`preprocess`]), the text tokenizer ([`tokenize`]), ONNX Runtime ([`runtime`]) and the CLIP
//! embedder on top of them ([`embed`]), plus batched image embedding for the command line
//! ([`pipeline`]) and micro-batching of concurrent queries ([`batch`]). SigLIP and SigLIP 2 models run through the same embedder; what they change
//! (image processor defaults, text canonicalization and padding) is read in [`siglip`].
//!
//! Invariants:
//! - every embedding that leaves this crate is L2-normalized, so cosine similarity is a dot product;
//! - preprocessing follows the model's `preprocessor_config.json`, never constants;
//! - decoding untrusted bytes never panics and never allocates past [`preprocess::ImageLimits`].
//!
//! Threading: preprocessing is pure and meant for rayon; each ONNX session sits behind a mutex
//! (see [`embed`]).

pub mod batch;
pub mod embed;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod runtime;
pub mod siglip;
pub mod tokenize;

pub use embed::{ClipOnnx, Embedder, FakeEmbedder, ModelSlot};
pub use model::ModelDir;
pub use preprocess::{ImageLimits, Preprocessor};
pub use runtime::{Device, RuntimeOptions};
