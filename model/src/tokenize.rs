//! The text tokenizer (Hugging Face `tokenizer.json`) and batch padding.
//!
//! Text is truncated to the model's maximum length. A model whose text input has a fixed length
//! is padded to it; a CLIP model with a dynamic length gets each batch padded only to its longest
//! sequence, which is much faster for short queries. A SigLIP model is always padded to its text
//! length (it was trained so, and pools the last position), on the side its files say, after the
//! text is canonicalized as its reference tokenizer does ([`crate::siglip::TextSpec`]).

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::model::{read_bounded, ModelFamily, MAX_TOKENIZER_BYTES};
use crate::siglip::{Canonicalize, TextSpec};
use vitrine_core::error::{CoreError, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    fixed_len: Option<usize>,
    pad_id: i64,
    pad_left: bool,
    canonicalize: Canonicalize,
}

/// A padded batch, row-major [n, len].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub n: usize,
    pub len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

impl TextTokenizer {
    /// `fixed_len` is the model's static sequence length, if any; `max_len` the longest it accepts.
    pub fn load(path: &Path, max_len: usize, fixed_len: Option<usize>) -> Result<Self> {
        let bytes = read_bounded(path, MAX_TOKENIZER_BYTES)?;
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| CoreError::ModelLoad { path: path.to_path_buf(), message: format!("tokenizer: {e}") })?;
        // CLIP pads with its end token in Hugging Face exports; fall back to an explicit pad token, then 0.
        let pad_id = inner
            .token_to_id("<|endoftext|>")
            .or_else(|| inner.token_to_id("<pad>"))
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        let max_len = fixed_len.unwrap_or(max_len);
        Self::configure(inner, path, max_len, fixed_len, pad_id, false, Canonicalize::None)
    }

    /// A SigLIP tokenizer: `path` is the model directory's `tokenizer.json`; `graph_len` the text
    /// tower's fixed sequence length, if its graph has one (it must then agree with the files).
    pub fn load_siglip(path: &Path, family: ModelFamily, graph_len: Option<usize>) -> Result<Self> {
        let err = |message: String| CoreError::ModelLoad { path: path.to_path_buf(), message };
        let bytes = read_bounded(path, MAX_TOKENIZER_BYTES)?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| err(format!("tokenizer: {e}")))?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| err(format!("tokenizer: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let spec = TextSpec::resolve(dir, family, &inner, &json)?;
        if let Some(g) = graph_len.filter(|g| *g != spec.len) {
            return Err(err(format!("the text graph takes {g} tokens but the tokenizer files say {}", spec.len)));
        }
        Self::configure(inner, path, spec.len, Some(spec.len), spec.pad_id, spec.pad_left, spec.canonicalize)
    }

    fn configure(
        mut inner: Tokenizer,
        path: &Path,
        max_len: usize,
        fixed_len: Option<usize>,
        pad_id: u32,
        pad_left: bool,
        canonicalize: Canonicalize,
    ) -> Result<Self> {
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| CoreError::ModelLoad { path: path.to_path_buf(), message: format!("tokenizer: {e}") })?;
        inner.with_padding(None);
        // User text that contains "<|endoftext|>" is text, not a control token.
        inner.set_encode_special_tokens(true);
        Ok(TextTokenizer { inner, max_len, fixed_len, pad_id: i64::from(pad_id), pad_left, canonicalize })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids with the start and end tokens, truncated to the maximum length.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let text = self.canonicalize.apply(text);
        let enc = self.inner.encode(text.as_ref(), true).map_err(|e| CoreError::Tokenizer { message: e.to_string() })?;
        let ids = enc.get_ids();
        // Truncation keeps the end token in CLIP's post-processor; guard anyway.
        Ok(ids[..ids.len().min(self.max_len)].to_vec())
    }

    pub fn batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(t)).collect::<Result<_>>()?;
        let longest = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let len = self.fixed_len.unwrap_or(longest);
        let mut input_ids = vec![self.pad_id; texts.len() * len];
        let mut attention_mask = vec![0i64; texts.len() * len];
        for (row, seq) in ids.iter().enumerate() {
            let start = if self.pad_left { len - seq.len() } else { 0 };
            for (j, id) in seq.iter().enumerate() {
                input_ids[row * len + start + j] = i64::from(*id);
                attention_mask[row * len + start + j] = 1;
            }
        }
        Ok(TokenBatch { n: texts.len(), len, input_ids, attention_mask })
    }
}
