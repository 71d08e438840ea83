//! Vitrine's shared core: the types every other crate speaks, the CLIP embedder on ONNX Runtime,
//! image decoding and preprocessing, and the text tokenizer.
//!
//! Invariants:
//! - every embedding that leaves this crate is L2-normalized, so cosine similarity is a dot product;
//! - preprocessing follows the model's `preprocessor_config.json`, never constants;
//! - decoding untrusted bytes never panics and never allocates past [`preprocess::ImageLimits`].
//!
//! Threading: preprocessing is pure and meant for rayon; each ONNX session sits behind a mutex
//! (see [`embed`]).

pub mod catalog;
pub mod embed;
pub mod error;
pub mod generation;
pub mod graph;
pub mod keyword;
pub mod lock;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod runtime;
pub mod store;
pub mod tokenize;
pub mod vectors;

pub use embed::{ClipOnnx, Embedder, FakeEmbedder, ModelSlot};
pub use error::{CoreError, ImageErrorKind, Result};
pub use model::{ModelDir, ModelId};
pub use preprocess::{ImageLimits, Preprocessor};
pub use runtime::{Device, RuntimeOptions};
