//! SigLIP and SigLIP 2: what differs from CLIP, read from the model's own files.
//!
//! - **Image**: `SiglipImageProcessor` resizes straight to `size.height × size.width` (no crop) with
//!   the configured `resample` (its default is 3, bicubic), then rescales and normalizes (default
//!   mean and std 0.5). [`preprocessor_json`] fills those defaults so that the one
//!   [`crate::preprocess::Preprocessor`] runs it. SigLIP 2's NaFlex processor
//!   (`Siglip2ImageProcessor`: patches at the image's own aspect ratio) is refused by name.
//! - **Text**: the tower takes `input_ids` only and was trained on sequences padded to a fixed
//!   length with `padding="max_length"` (64 in the released models), so the pad token is part of
//!   the input. [`TextSpec::resolve`] reads the length, the pad token, the padding side and the
//!   lower-casing from `tokenizer.json`, `tokenizer_config.json` and `config.json`, in that order.
//!   The text is canonicalized as the reference tokenizer does before `tokenizer.json` sees it
//!   ([`Canonicalize`]), because the hub's `tokenizer.json` files do not carry those steps.
//! - **Outputs**: `image_embeds`/`text_embeds` when the graph has them, else `pooler_output`
//!   (see [`crate::embed`]).

use std::path::Path;

use serde_json::Value;
use tokenizers::{ModelWrapper, Tokenizer};

use crate::model::{read_bounded, ModelFamily, CONFIG_FILE, MAX_CONFIG_BYTES, TOKENIZER_CONFIG_FILE};
use vitrine_core::error::{CoreError, Result};

/// The longest fixed text length accepted from a model's files (released SigLIP models use 64).
pub const MAX_TEXT_LEN: usize = 1024;
/// The released SigLIP models' text length, used when no file says otherwise.
pub const DEFAULT_TEXT_LEN: usize = 64;

/// A SigLIP `preprocessor_config.json` with `SiglipImageProcessor`'s defaults filled in and its
/// rules applied: no center crop, and `size` given as height and width.
pub fn preprocessor_json(mut v: Value, path: &Path) -> Result<Value> {
    let err = |message: String| CoreError::ModelLoad { path: path.to_path_buf(), message };
    let obj = v.as_object_mut().ok_or_else(|| err("the image processor config is not a JSON object".into()))?;
    // NaFlex is told by its processor's name, or by its patch budget when the name is missing.
    let kind = obj.get("image_processor_type").and_then(Value::as_str).unwrap_or("");
    if kind.starts_with("Siglip2ImageProcessor") || obj.contains_key("max_num_patches") {
        let kind = if kind.is_empty() { "a max_num_patches config" } else { kind };
        return Err(err(format!(
            "{kind} (SigLIP 2 NaFlex, variable resolution) is not supported; use a fixed-resolution export \
             such as siglip2-base-patch16-224 (SiglipImageProcessor)"
        )));
    }
    obj.entry("size").or_insert_with(|| serde_json::json!({"height": 224, "width": 224}));
    let size_ok =
        obj["size"].get("height").and_then(Value::as_u64).is_some() && obj["size"].get("width").and_then(Value::as_u64).is_some();
    if !size_ok {
        return Err(err(format!("SiglipImageProcessor needs size {{\"height\": H, \"width\": W}}, not {}", obj["size"])));
    }
    obj.entry("resample").or_insert(Value::from(3));
    obj.entry("image_mean").or_insert(serde_json::json!([0.5, 0.5, 0.5]));
    obj.entry("image_std").or_insert(serde_json::json!([0.5, 0.5, 0.5]));
    // SiglipImageProcessor has no crop step: the resize is the whole geometry.
    obj.insert("do_center_crop".into(), Value::Bool(false));
    Ok(v)
}

/// How text is rewritten before `tokenizer.json` encodes it, as the reference tokenizer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalize {
    /// Nothing (CLIP: its `tokenizer.json` normalizer lower-cases).
    None,
    /// Lower-case only (SigLIP 2's Gemma tokenizer: transformers' `Siglip2Tokenizer`).
    Lowercase,
    /// SentencePiece SigLIP (`SiglipTokenizer.canonicalize_text`): lower-case when `do_lower_case`,
    /// remove ASCII punctuation, collapse whitespace runs to one space, trim.
    Siglip { lowercase: bool },
}

impl Canonicalize {
    pub fn apply(self, text: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Canonicalize::None => text.into(),
            Canonicalize::Lowercase => text.to_lowercase().into(),
            Canonicalize::Siglip { lowercase } => {
                let lowered;
                let text = if lowercase {
                    lowered = text.to_lowercase();
                    lowered.as_str()
                } else {
                    text
                };
                // Python's `\s` on str: Unicode whitespace plus the ASCII separators 0x1C..=0x1F.
                let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
                let mut out = String::with_capacity(text.len());
                let mut pending_space = false;
                for c in text.chars().filter(|c| !c.is_ascii_punctuation()) {
                    if is_space(c) {
                        pending_space = true;
                    } else {
                        if pending_space && !out.is_empty() {
                            out.push(' ');
                        }
                        pending_space = false;
                        out.push(c);
                    }
                }
                out.into()
            }
        }
    }
}

/// How a SigLIP text tower's input is made, resolved once from the model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSpec {
    /// Every sequence is padded (and truncated) to this length.
    pub len: usize,
    pub pad_id: u32,
    pub pad_left: bool,
    pub canonicalize: Canonicalize,
}

/// transformers writes `model_max_length` as this (int(1e30)) when a tokenizer sets no limit.
const NO_LIMIT_SENTINEL: f64 = 1e29;

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read_bounded(path, MAX_CONFIG_BYTES)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CoreError::ModelLoad { path: path.to_path_buf(), message: format!("not valid JSON: {e}") })
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_name(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("content").and_then(Value::as_str))
}

impl TextSpec {
    /// Resolve from `dir`'s files for a SigLIP `family`, with `tokenizer` already loaded from its
    /// `tokenizer.json` (`tokenizer_json` is that file's JSON, for its padding block).
    ///
    /// - length: `tokenizer.json`'s fixed padding, else `tokenizer_config.json`'s
    ///   `model_max_length` (transformers' "no limit" sentinel counts as unset), else
    ///   `config.json`'s `text_config.max_position_embeddings`, else 64. It must be in
    ///   `1..=MAX_TEXT_LEN` and not past the position embeddings.
    /// - pad token: `tokenizer_config.json`'s `pad_token`, else `</s>` (SigLIP) or `<pad>` (SigLIP 2);
    ///   it must be in the vocabulary.
    /// - side: `tokenizer_config.json`'s `padding_side` (`right` or `left`), else the tokenizer
    ///   class's default in transformers: left for `GemmaTokenizer*` and `Siglip2Tokenizer*` (and,
    ///   without a class, for `model_type` `siglip2`), right otherwise.
    /// - canonicalization: a SentencePiece (Unigram) vocabulary is `SiglipTokenizer`'s rules with
    ///   `do_lower_case` (default true); any other (SigLIP 2's Gemma BPE) is lower-cased unless
    ///   `do_lower_case` is false.
    pub fn resolve(dir: &Path, family: ModelFamily, tokenizer: &Tokenizer, tokenizer_json: &Value) -> Result<Self> {
        let tc_path = dir.join(TOKENIZER_CONFIG_FILE);
        let err = |path: &Path, message: String| CoreError::ModelLoad { path: path.to_path_buf(), message };
        let tc = read_json_opt(&tc_path)?.unwrap_or(Value::Null);
        let cfg_path = dir.join(CONFIG_FILE);
        let cfg = read_json_opt(&cfg_path)?.unwrap_or(Value::Null);

        let positions = match cfg.pointer("/text_config/max_position_embeddings") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                err(&cfg_path, format!("text_config.max_position_embeddings must be a positive integer, not {v}"))
            })?),
        };
        let fixed = tokenizer_json.pointer("/padding/strategy/Fixed");
        let (len, from) = if let Some(v) = fixed {
            (v.as_f64().unwrap_or(-1.0), dir.join(crate::model::TOKENIZER_FILE))
        } else if let Some(v) = tc.get("model_max_length").filter(|v| v.as_f64().is_some_and(|n| n < NO_LIMIT_SENTINEL)) {
            (v.as_f64().unwrap_or(-1.0), tc_path.clone())
        } else if let Some(p) = positions {
            (p as f64, cfg_path.clone())
        } else {
            (DEFAULT_TEXT_LEN as f64, dir.to_path_buf())
        };
        let limit = positions.map_or(MAX_TEXT_LEN, |p| (p as usize).min(MAX_TEXT_LEN));
        if !(len.fract() == 0.0 && len >= 1.0 && len <= limit as f64) {
            return Err(err(&from, format!("text length {len} is out of range (1..={limit})")));
        }
        let len = len as usize;

        let pad_name = match tc.get("pad_token") {
            Some(v) => token_name(v).ok_or_else(|| err(&tc_path, format!("pad_token {v} is not a token")))?,
            None if family == ModelFamily::Siglip2 => "<pad>",
            None if matches!(tokenizer.get_model(), ModelWrapper::BPE(_)) => "<pad>",
            None => "</s>",
        };
        let pad_id = tokenizer
            .token_to_id(pad_name)
            .ok_or_else(|| err(&tc_path, format!("the pad token {pad_name:?} is not in tokenizer.json's vocabulary")))?;
        // Without a `padding_side`, transformers pads as the tokenizer class does: Gemma's (the
        // SigLIP 2 vocabulary) and `Siglip2Tokenizer` pad on the left, SiglipTokenizer on the right.
        let class = tc.get("tokenizer_class").and_then(Value::as_str);
        let class_pads_left = match class {
            Some(c) => c.starts_with("Gemma") || c.starts_with("Siglip2"),
            None => family == ModelFamily::Siglip2,
        };
        let pad_left = match tc.get("padding_side").map(|v| v.as_str()) {
            None => class_pads_left,
            Some(Some("right")) => false,
            Some(Some("left")) => true,
            Some(other) => return Err(err(&tc_path, format!("padding_side must be \"left\" or \"right\", not {other:?}"))),
        };
        let lowercase = match tc.get("do_lower_case") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(err(&tc_path, format!("do_lower_case must be true or false, not {v}"))),
        };
        let canonicalize = match tokenizer.get_model() {
            ModelWrapper::Unigram(_) => Canonicalize::Siglip { lowercase },
            _ if lowercase => Canonicalize::Lowercase,
            _ => Canonicalize::None,
        };
        Ok(TextSpec { len, pad_id, pad_left, canonicalize })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siglip_canonicalization_is_the_reference_one() {
        let c = Canonicalize::Siglip { lowercase: true };
        assert_eq!(c.apply("Red Leather Handbag, Size M!"), "red leather handbag size m");
        assert_eq!(c.apply("  multiple   spaces\tand\nnewlines\r\n  "), "multiple spaces and newlines");
        assert_eq!(c.apply("...!!!???"), "");
        assert_eq!(c.apply("a - b"), "a b", "removing punctuation can leave runs of spaces, collapsed after");
        assert_eq!(c.apply("café\u{a0}CRÈME"), "café crème", "Unicode whitespace and letters");
        assert_eq!(Canonicalize::Siglip { lowercase: false }.apply("Big, Red"), "Big Red");
        assert_eq!(Canonicalize::Lowercase.apply("Hello, World!"), "hello, world!");
        assert_eq!(Canonicalize::None.apply("Hello, World!"), "Hello, World!");
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn siglip_preprocessor_defaults_and_refusals() {
        let p = Path::new("preprocessor_config.json");
        let v = preprocessor_json(json("{}"), p).unwrap();
        assert_eq!(v["do_center_crop"], false);
        assert_eq!(v["resample"], 3);
        assert_eq!(v["size"], json(r#"{"height": 224, "width": 224}"#));
        assert_eq!(v["image_mean"], json("[0.5, 0.5, 0.5]"));
        // A crop asked for in the file is still not done: the processor has none.
        let v = preprocessor_json(json(r#"{"do_center_crop": true, "resample": 2}"#), p).unwrap();
        assert_eq!((v["do_center_crop"].clone(), v["resample"].clone()), (json("false"), json("2")));
        for bad in [
            r#"{"image_processor_type": "Siglip2ImageProcessorFast", "max_num_patches": 256}"#,
            r#"{"image_processor_type": "Siglip2ImageProcessor"}"#,
            r#"{"max_num_patches": 256, "patch_size": 16}"#,
            r#"{"size": {"shortest_edge": 224}}"#,
            r#"{"size": 224}"#,
            r#"{"size": {"height": -1, "width": 224}}"#,
            "[]",
        ] {
            assert!(preprocessor_json(json(bad), p).is_err(), "{bad}");
        }
    }
}
