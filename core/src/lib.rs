//! Vitrine's shared vocabulary: the types every stage speaks. The catalog's products
//! ([`catalog`]), the identity of a model ([`ModelId`]), the one error type ([`CoreError`]) and
//! the vector arithmetic both the embedder and the index use ([`vector`]).
//!
//! The stages sit on top: `vitrine-model` (model directory, preprocessing, tokenizer, ONNX
//! runtime, embedder) and `vitrine-store` (store, generations, vector segments, graph, keyword
//! index). Invariant kept by both: every embedding is L2-normalized, so cosine similarity is a dot
//! product ([`vector::dot`]).

pub mod catalog;
pub mod error;
pub mod filters;
pub mod model_id;
pub mod relevance;
pub mod vector;

pub use error::{CoreError, ImageErrorKind, Result};
pub use filters::{Filters, PriceRange};
pub use model_id::{ModelId, Variant};
