//! The CLIP text tokenizer (Hugging Face `tokenizer.json`) and batch padding.
//!
//! Text is truncated to the model's maximum length. A model whose text input has a fixed length
//! is padded to it; a model with a dynamic length gets each batch padded only to its longest
//! sequence, which is much faster for short queries.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use vitrine_core::error::{CoreError, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    fixed_len: Option<usize>,
    pad_id: i64,
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
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| CoreError::ModelLoad { path: path.to_path_buf(), message: format!("tokenizer: {e}") })?;
        let max_len = fixed_len.unwrap_or(max_len);
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
        // CLIP pads with its end token in Hugging Face exports; fall back to an explicit pad token, then 0.
        let pad_id = inner
            .token_to_id("<|endoftext|>")
            .or_else(|| inner.token_to_id("<pad>"))
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        Ok(TextTokenizer { inner, max_len, fixed_len, pad_id: i64::from(pad_id) })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids with the start and end tokens, truncated to the maximum length.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| CoreError::Tokenizer { message: e.to_string() })?;
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
            for (j, id) in seq.iter().enumerate() {
                input_ids[row * len + j] = i64::from(*id);
                attention_mask[row * len + j] = 1;
            }
        }
        Ok(TokenBatch { n: texts.len(), len, input_ids, attention_mask })
    }
}
