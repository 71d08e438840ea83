//! Which model made a vector: stored with every index so that vectors of two models never mix.

use serde::{Deserialize, Serialize};

/// What identifies a model inside an index: the index refuses to open with a model whose id differs.
///
/// # Persisted: changing this needs a migration
///
/// `variant` was added to format 1 without a step: an id written before it reads as `fp32` (the
/// only weights loaded then, and its content hash covers the same files), and older builds ignore
/// the field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ModelId {
    /// A human name (`vitrine-model.json`'s `name`, else the directory name).
    pub name: String,
    /// blake3 over the four model files the variant loads (its two ONNX towers, the tokenizer and
    /// the preprocessor config), hex.
    pub content_hash: String,
    /// Embedding dimension.
    pub dim: usize,
    /// Which weights of the model directory: `fp32`, `fp16` or `quantized`.
    #[serde(default)]
    pub variant: Variant,
}

impl ModelId {
    /// The same model: same files (by content hash), variant and dimension; the name is only a label.
    /// Every "may this model read or write that index" check goes through here.
    pub fn same_model(&self, other: &ModelId) -> bool {
        self.content_hash == other.content_hash && self.dim == other.dim && self.variant == other.variant
    }

    /// What to do when an index holds vectors of `self` and `given` was loaded: the one fix to
    /// name in every mismatch message (CLI, service, indexer). `data` is the data directory.
    ///
    /// `place` is where the index is: a data directory, or an engine backend's URL (with its
    /// password already masked), which the command names as `--backend`.
    pub fn mismatch_fix(&self, given: &ModelId, place: &str) -> String {
        let flag = if place.contains("://") { "--backend" } else { "--data" };
        if self.variant != given.variant && self.name == given.name {
            format!(
                "the index holds {have} vectors: pass --variant {have} (or --variant auto, which follows the index), \
                 or re-embed everything as {want} with `vitrine reindex --variant {want} {flag} {place}`",
                have = self.variant,
                want = given.variant
            )
        } else {
            format!("use the same model, or re-embed everything with `vitrine reindex --model DIR {flag} {place}`")
        }
    }
}

/// Which weights of a model directory made a vector: the fp32 export, or one of the variants the
/// Hugging Face hub's exports ship beside it (`vision_model_fp16.onnx`, `..._quantized.onnx`).
/// Choosing one (`--variant auto`) is `vitrine_model::model::VariantChoice`'s job.
///
/// # Persisted (inside [`ModelId`]): the names are stored in indexes
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The full-precision export (`vision_model.onnx`, `text_model.onnx`).
    #[default]
    Fp32,
    /// Half-precision weights (`*_fp16.onnx`): the GPU's variant.
    Fp16,
    /// Int8 weights, activations quantized per call (`*_quantized.onnx`): the CPU's variant.
    Quantized,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Fp32, Variant::Fp16, Variant::Quantized];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Fp32 => "fp32",
            Variant::Fp16 => "fp16",
            Variant::Quantized => "quantized",
        }
    }

    /// The ONNX file of `tower` (`vision_model`, `text_model`) for this variant, as the hub names it.
    pub fn onnx_file(self, tower: &str) -> String {
        match self {
            Variant::Fp32 => format!("{tower}.onnx"),
            v => format!("{tower}_{}.onnx", v.as_str()),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A variant name other than the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model variant {0:?}: use fp32, fp16 or quantized")]
pub struct UnknownVariant(pub String);

impl std::str::FromStr for Variant {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, UnknownVariant> {
        Variant::ALL.into_iter().find(|v| v.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownVariant(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(variant: Variant) -> ModelId {
        ModelId { name: "m".into(), content_hash: "h".into(), dim: 4, variant }
    }

    #[test]
    fn an_id_written_before_variants_reads_as_fp32() {
        let old: ModelId = serde_json::from_str(r#"{"name": "m", "content_hash": "h", "dim": 4}"#).unwrap();
        assert_eq!(old, id(Variant::Fp32));
        let json = serde_json::to_value(id(Variant::Quantized)).unwrap();
        assert_eq!(json["variant"], "quantized");
        assert_eq!(serde_json::from_value::<ModelId>(json).unwrap(), id(Variant::Quantized));
    }

    #[test]
    fn variants_are_part_of_the_model() {
        assert!(id(Variant::Fp32).same_model(&id(Variant::Fp32)));
        assert!(!id(Variant::Fp32).same_model(&id(Variant::Quantized)));
        let fix = id(Variant::Quantized).mismatch_fix(&id(Variant::Fp32), "data");
        assert!(fix.contains("--variant quantized") && fix.contains("reindex --variant fp32 --data data"), "{fix}");
        let other = ModelId { name: "other".into(), ..id(Variant::Fp32) };
        assert!(other.mismatch_fix(&id(Variant::Fp32), "d").contains("reindex --model DIR --data d"));
        let url = "oceanbase://app:***@127.0.0.1:2881/shop";
        assert!(other.mismatch_fix(&id(Variant::Fp32), url).ends_with(&format!("reindex --model DIR --backend {url}`")));
    }

    #[test]
    fn names_and_files_follow_the_hub() {
        for v in Variant::ALL {
            assert_eq!(v.as_str().parse::<Variant>(), Ok(v));
        }
        assert_eq!("FP16".parse::<Variant>(), Ok(Variant::Fp16));
        assert!("int8".parse::<Variant>().is_err());
        assert_eq!(Variant::Fp32.onnx_file("vision_model"), "vision_model.onnx");
        assert_eq!(Variant::Quantized.onnx_file("text_model"), "text_model_quantized.onnx");
        assert_eq!(Variant::Fp16.onnx_file("vision_model"), "vision_model_fp16.onnx");
    }
}
