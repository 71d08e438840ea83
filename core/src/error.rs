//! The one error type of the core crate.
//!
//! User errors (bad input, wrong model, limits) are kept apart from internal ones so that the web
//! layer can map them to 4xx and 5xx without string matching: see [`CoreError::is_user_error`].

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An input image could not be read, decoded or was outside the configured limits.
    #[error("image {input}: {kind}")]
    Image { input: String, kind: ImageErrorKind },

    /// A model directory is missing a file or has a malformed config.
    #[error("model {path}: {message}")]
    ModelLoad { path: PathBuf, message: String },

    /// ONNX Runtime could not be found or loaded.
    #[error("ONNX Runtime: {message}")]
    Runtime { message: String },

    /// Inference failed inside ONNX Runtime.
    #[error("inference: {message}")]
    Inference { message: String },

    /// The tokenizer rejected an input.
    #[error("tokenizer: {message}")]
    Tokenizer { message: String },

    /// The persistent store failed.
    #[error("store: {message}")]
    Store { message: String },

    /// An index generation is missing or corrupt.
    #[error("index {path}: {message}")]
    Index { path: PathBuf, message: String },

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

/// Why an image was rejected. Every variant is a user error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageErrorKind {
    #[error("empty input (0 bytes)")]
    Empty,
    #[error("{bytes} bytes is over the limit of {limit} bytes")]
    TooManyBytes { bytes: u64, limit: u64 },
    #[error("{width}x{height} pixels is over the limit of {limit_pixels} pixels or {limit_side} per side")]
    TooLarge { width: u32, height: u32, limit_pixels: u64, limit_side: u32 },
    #[error("not a supported image format (JPEG, PNG, WebP, GIF)")]
    UnknownFormat,
    #[error("could not decode: {0}")]
    Decode(String),
    #[error("could not read: {0}")]
    Read(String),
}

impl CoreError {
    pub fn image(input: impl Into<String>, kind: ImageErrorKind) -> Self {
        CoreError::Image { input: input.into(), kind }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CoreError::Io { context: context.into(), source }
    }

    pub fn store(e: impl std::fmt::Display) -> Self {
        CoreError::Store { message: e.to_string() }
    }

    /// True when the caller sent something wrong (an HTTP 4xx), false for faults of ours (5xx).
    pub fn is_user_error(&self) -> bool {
        matches!(self, CoreError::Image { .. } | CoreError::Tokenizer { .. })
    }
}

impl From<sled::Error> for CoreError {
    fn from(e: sled::Error) -> Self {
        CoreError::store(e)
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
