//! Zero-shot auto-tagging: attributes read off a product's images by the model itself.
//!
//! The settings hold a [`TagVocabulary`]: attribute → labels, each attribute with its prompt
//! template (`"a photo of a {label} product"`), a margin and an optional minimum score. A
//! [`Tagger`] embeds every label's prompt once with the text tower (one per writer and model:
//! the [`crate::Indexer`] keeps it), and [`Tagger::tag`] scores those prompt vectors against the
//! image vectors ingest already computed, so tagging costs no extra image inference.
//!
//! For each attribute the score of a label is its cosine with the product's images, averaged over
//! the images. The best label is assigned when it beats the runner-up by at least `margin` (and
//! reaches `min_score`, when one is set); otherwise the attribute stays unset, since a guess
//! between two close labels would be a wrong filter as often as a right one. An attribute the
//! catalog itself gives is never tagged: the merchant's value wins.
//!
//! Tags are stored beside the record (`StoredProduct::auto`) with the fingerprint of the
//! vocabulary and model that made them ([`TagVocabulary::fingerprint`]). The ingest hash that
//! skips unchanged products covers only the record and its image bytes, so re-tagging is separate:
//! an unchanged product whose fingerprint differs from the current one is re-tagged from its
//! stored image vectors (no image is loaded or embedded again) and written as a new version. So a
//! changed vocabulary re-tags on the next ingest of the catalog, and a reindex with another model
//! re-tags everything with that model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vitrine_core::catalog::AutoTags;
use vitrine_core::vector::dot;
use vitrine_core::ModelId;
use vitrine_model::Embedder;

use crate::{IndexError, Result};

/// The placeholder a prompt template must contain.
pub const LABEL_PLACEHOLDER: &str = "{label}";
/// Attributes in one vocabulary.
pub const MAX_ATTRIBUTES: usize = 32;
/// Labels of one attribute.
pub const MAX_LABELS: usize = 256;
/// Labels over all attributes: each is one text-tower call when a writer starts.
pub const MAX_TOTAL_LABELS: usize = 1024;
/// Bytes of an attribute name or a label.
pub const MAX_NAME_BYTES: usize = 64;
/// Bytes of a prompt template.
pub const MAX_PROMPT_BYTES: usize = 256;

fn default_prompt() -> String {
    "a photo of a {label} product".into()
}

fn default_margin() -> f32 {
    0.01
}

/// The tag vocabulary: attribute name → how to tag it. Empty: no tagging.
///
/// In the config file (`[tags.colour]` tables), `VITRINE_TAGS` or `--tags` (JSON):
/// `{"colour": {"labels": ["red", "blue"], "prompt": "a photo of a {label} product", "margin": 0.01}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TagVocabulary(pub BTreeMap<String, TagAttribute>);

/// How one attribute is tagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagAttribute {
    /// The values the attribute can take; the one assigned is stored as it is written here.
    pub labels: Vec<String>,
    /// The text embedded for each label, with `{label}` replaced by it.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// How far (in cosine) the best label must beat the runner-up to be assigned.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// The least cosine the best label must reach (unset: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
}

fn invalid(attribute: &str, problem: impl Into<String>) -> IndexError {
    IndexError::TagVocabulary { attribute: attribute.chars().take(MAX_NAME_BYTES).collect(), problem: problem.into() }
}

fn check_name(attribute: &str, what: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() || s.len() > MAX_NAME_BYTES {
        return Err(invalid(attribute, format!("{what} {s:?} must have 1 to {MAX_NAME_BYTES} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(attribute, format!("{what} {s:?} holds a control character")));
    }
    Ok(())
}

impl TagVocabulary {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parse the JSON form (`--tags`, `VITRINE_TAGS`) and validate it.
    pub fn parse_json(s: &str) -> Result<Self> {
        let v: TagVocabulary =
            serde_json::from_str(s).map_err(|e| invalid("", format!("is not a tag vocabulary in JSON: {e}")))?;
        v.validate()?;
        Ok(v)
    }

    /// Refuse a vocabulary that cannot work or would cost without bound at startup.
    pub fn validate(&self) -> Result<()> {
        if self.0.len() > MAX_ATTRIBUTES {
            return Err(invalid("", format!("has {} attributes; at most {MAX_ATTRIBUTES}", self.0.len())));
        }
        let mut total = 0;
        for (name, a) in &self.0 {
            check_name(name, "the attribute name", name)?;
            if name.contains('=') {
                // Filters match `key=value` terms: a key with `=` would match another key's values.
                return Err(invalid(name, "an attribute name cannot contain `=`"));
            }
            if a.labels.len() < 2 || a.labels.len() > MAX_LABELS {
                return Err(invalid(
                    name,
                    format!("has {} labels; it needs 2 to {MAX_LABELS} (the margin compares two)", a.labels.len()),
                ));
            }
            total += a.labels.len();
            let mut seen = std::collections::HashSet::new();
            for l in &a.labels {
                check_name(name, "the label", l)?;
                if !seen.insert(l.as_str()) {
                    return Err(invalid(name, format!("the label {l:?} appears twice")));
                }
            }
            if a.prompt.len() > MAX_PROMPT_BYTES || !a.prompt.contains(LABEL_PLACEHOLDER) {
                return Err(invalid(
                    name,
                    format!(
                        "the prompt {:?} must contain {LABEL_PLACEHOLDER} and have at most {MAX_PROMPT_BYTES} bytes",
                        a.prompt
                    ),
                ));
            }
            if !a.margin.is_finite() || !(0.0..=2.0).contains(&a.margin) {
                return Err(invalid(name, format!("the margin {} must be between 0 and 2", a.margin)));
            }
            if a.min_score.is_some_and(|m| !m.is_finite() || !(-1.0..=1.0).contains(&m)) {
                return Err(invalid(name, "min_score must be between -1 and 1"));
            }
        }
        if total > MAX_TOTAL_LABELS {
            return Err(invalid("", format!("has {total} labels in all; at most {MAX_TOTAL_LABELS}")));
        }
        Ok(())
    }

    /// What a product's tags depend on besides its images: this vocabulary and the model.
    /// Empty for an empty vocabulary, so products stored before tagging existed (whose
    /// fingerprint is empty) are not rewritten while none is configured.
    pub fn fingerprint(&self, model: &ModelId) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut h = blake3::Hasher::new();
        h.update(&serde_json::to_vec(self).expect("a vocabulary serializes"));
        h.update(b"\0");
        h.update(model.content_hash.as_bytes());
        h.update(&(model.dim as u64).to_le_bytes());
        h.finalize().to_hex()[..32].to_string()
    }
}

/// One attribute with its labels' prompt vectors.
struct Attribute {
    name: String,
    margin: f32,
    min_score: Option<f32>,
    labels: Vec<(String, Vec<f32>)>,
}

/// A vocabulary with every prompt embedded by one model: what ingest tags products with.
pub struct Tagger {
    fingerprint: String,
    attributes: Vec<Attribute>,
}

impl Tagger {
    /// Embed each label's prompt once (in batches of 64) with `embedder`'s text tower.
    pub fn new(vocab: &TagVocabulary, embedder: &dyn Embedder) -> Result<Self> {
        vocab.validate()?;
        let mut attributes = vec![];
        for (name, a) in &vocab.0 {
            let prompts: Vec<String> = a.labels.iter().map(|l| a.prompt.replace(LABEL_PLACEHOLDER, l)).collect();
            let mut vectors = vec![];
            for batch in prompts.chunks(64) {
                vectors.extend(embedder.embed_texts(&batch.iter().map(String::as_str).collect::<Vec<_>>())?);
            }
            attributes.push(Attribute {
                name: name.clone(),
                margin: a.margin,
                min_score: a.min_score,
                labels: a.labels.iter().cloned().zip(vectors).collect(),
            });
        }
        Ok(Tagger { fingerprint: vocab.fingerprint(embedder.model_id()), attributes })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The automatic attributes of a product with these `catalog` attributes and these (unit)
    /// image vectors. No image: no tags (text is the catalog's own, and is not evidence of looks).
    pub fn tag(&self, catalog: &BTreeMap<String, String>, images: &[Vec<f32>]) -> AutoTags {
        let mut auto_attributes = BTreeMap::new();
        if !images.is_empty() {
            for a in self.attributes.iter().filter(|a| !catalog.contains_key(&a.name)) {
                let scores = a.labels.iter().map(|(label, p)| {
                    let mean = images.iter().map(|v| dot(v, p)).sum::<f32>() / images.len() as f32;
                    (label.as_str(), mean)
                });
                if let Some(label) = pick(scores, a.margin, a.min_score) {
                    auto_attributes.insert(a.name.clone(), label.to_string());
                }
            }
        }
        AutoTags { auto_attributes, tagged_with: self.fingerprint.clone() }
    }
}

/// The label to assign from `(label, score)` pairs: the best one, when its score beats the
/// runner-up's by at least `margin` (`best - second >= margin`) and reaches `min_score`. Ties
/// and fewer than two labels assign nothing; a NaN score is never the best.
pub fn pick<'a>(scores: impl IntoIterator<Item = (&'a str, f32)>, margin: f32, min_score: Option<f32>) -> Option<&'a str> {
    let mut best: Option<(&str, f32)> = None;
    let mut second = f32::NEG_INFINITY;
    let mut n = 0;
    for (label, s) in scores {
        n += 1;
        if s.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if s <= b => second = second.max(s),
            _ => {
                if let Some((_, b)) = best {
                    second = b;
                }
                best = Some((label, s));
            }
        }
    }
    let (label, b) = best?;
    let assigned = n >= 2 && b - second >= margin && b > second && min_score.is_none_or(|m| b >= m);
    assigned.then_some(label)
}

#[cfg(test)]
mod tests {
    use vitrine_model::FakeEmbedder;

    use super::*;

    fn attr(labels: &[&str]) -> TagAttribute {
        TagAttribute {
            labels: labels.iter().map(|s| s.to_string()).collect(),
            prompt: default_prompt(),
            margin: 0.05,
            min_score: None,
        }
    }

    fn vocab(entries: &[(&str, TagAttribute)]) -> TagVocabulary {
        TagVocabulary(entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn pick_assigns_the_best_label_only_past_the_margin_and_the_minimum() {
        let s = |v: &[(&'static str, f32)]| v.to_vec();
        assert_eq!(pick(s(&[("red", 0.30), ("blue", 0.20), ("green", 0.10)]), 0.05, None), Some("red"));
        assert_eq!(pick(s(&[("blue", 0.25), ("red", 0.5)]), 0.25, None), Some("red"), "exactly the margin is enough");
        assert_eq!(pick(s(&[("red", 0.30), ("blue", 0.28)]), 0.05, None), None, "too close to call");
        assert_eq!(pick(s(&[("red", 0.30), ("blue", 0.30)]), 0.0, None), None, "a tie assigns nothing");
        assert_eq!(pick(s(&[("red", 0.30), ("blue", 0.10)]), 0.05, Some(0.31)), None, "below min_score");
        assert_eq!(pick(s(&[("red", 0.30), ("blue", 0.10)]), 0.05, Some(0.30)), Some("red"));
        assert_eq!(pick(s(&[("red", 0.30)]), 0.0, None), None, "one label has no runner-up");
        assert_eq!(pick(s(&[("red", f32::NAN), ("blue", 0.3), ("green", 0.1)]), 0.1, None), Some("blue"));
        // The runner-up is found wherever it sits in the list.
        assert_eq!(pick(s(&[("a", 0.1), ("b", 0.5), ("c", 0.48)]), 0.05, None), None);
        assert_eq!(pick(s(&[("a", 0.48), ("b", 0.5), ("c", 0.1)]), 0.05, None), None);
    }

    #[test]
    fn tag_scores_prompts_against_the_images_and_the_catalog_wins() {
        // FakeEmbedder embeds text as a bag of hashed words: a one-word "image" vector built the
        // same way is closest to the prompt that holds the word.
        let e = FakeEmbedder::new(64);
        let v = vocab(&[("colour", TagAttribute { prompt: "{label}".into(), ..attr(&["red", "blue", "green"]) })]);
        let t = Tagger::new(&v, &e).unwrap();
        let blue = e.embed_texts(&["blue"]).unwrap();
        let tags = t.tag(&BTreeMap::new(), &blue);
        assert_eq!(tags.auto_attributes.get("colour").map(String::as_str), Some("blue"));
        assert_eq!(tags.tagged_with, v.fingerprint(e.model_id()));
        let catalog = BTreeMap::from([("colour".to_string(), "navy".to_string())]);
        assert!(t.tag(&catalog, &blue).auto_attributes.is_empty(), "a catalog value is never tagged over");
        assert!(t.tag(&BTreeMap::new(), &[]).auto_attributes.is_empty(), "no image, no tag");
        // Two images that disagree average to a tie: nothing is assigned.
        let red = e.embed_texts(&["red"]).unwrap();
        let both = [blue[0].clone(), red[0].clone()];
        assert!(t.tag(&BTreeMap::new(), &both).auto_attributes.is_empty());
    }

    #[test]
    fn fingerprints_change_with_the_vocabulary_and_the_model_and_are_empty_without_one() {
        let m16 = FakeEmbedder::new(16).model_id().clone();
        let m32 = FakeEmbedder::new(32).model_id().clone();
        let a = vocab(&[("colour", attr(&["red", "blue"]))]);
        let b = vocab(&[("colour", attr(&["red", "blue", "green"]))]);
        let mut c = a.clone();
        c.0.get_mut("colour").unwrap().margin = 0.2;
        assert_eq!(a.fingerprint(&m16), a.clone().fingerprint(&m16));
        assert_ne!(a.fingerprint(&m16), b.fingerprint(&m16));
        assert_ne!(a.fingerprint(&m16), c.fingerprint(&m16));
        assert_ne!(a.fingerprint(&m16), a.fingerprint(&m32));
        assert_eq!(TagVocabulary::default().fingerprint(&m16), "");
    }

    #[test]
    fn hostile_vocabularies_are_refused_with_the_attribute_named() {
        let refused = |v: TagVocabulary| match v.validate() {
            Err(IndexError::TagVocabulary { attribute, problem }) => format!("{attribute}: {problem}"),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(vocab(&[("colour", attr(&["red"]))])).contains("needs 2"));
        assert!(refused(vocab(&[("colour", attr(&["red", "red"]))])).contains("twice"));
        assert!(refused(vocab(&[("a=b", attr(&["x", "y"]))])).contains("`=`"));
        assert!(refused(vocab(&[("colour", attr(&["red", &"x".repeat(65)]))])).contains("bytes"));
        assert!(refused(vocab(&[("colour", attr(&["red", "bl\nue"]))])).contains("control"));
        assert!(refused(vocab(&[("colour", TagAttribute { prompt: "a photo".into(), ..attr(&["a", "b"]) })])).contains("{label}"));
        assert!(refused(vocab(&[("colour", TagAttribute { margin: f32::NAN, ..attr(&["a", "b"]) })])).contains("margin"));
        assert!(refused(vocab(&[("colour", TagAttribute { min_score: Some(5.0), ..attr(&["a", "b"]) })])).contains("min_score"));
        let many: Vec<String> = (0..MAX_LABELS + 1).map(|i| format!("l{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(refused(vocab(&[("colour", attr(&many))])).starts_with("colour"));
        let wide: Vec<(String, TagAttribute)> = (0..MAX_ATTRIBUTES + 1).map(|i| (format!("a{i}"), attr(&["x", "y"]))).collect();
        assert!(refused(TagVocabulary(wide.into_iter().collect())).contains("attributes"));
        let labels: Vec<String> = (0..200).map(|i| format!("l{i}")).collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let total: Vec<(String, TagAttribute)> = (0..6).map(|i| (format!("a{i}"), attr(&labels))).collect();
        assert!(refused(TagVocabulary(total.into_iter().collect())).contains("in all"));
        // The JSON form: unknown keys and wrong shapes are refused, a good one parses.
        assert!(TagVocabulary::parse_json(r#"{"colour": {"labels": ["a", "b"], "margn": 0.1}}"#).is_err());
        assert!(TagVocabulary::parse_json(r#"{"colour": ["a", "b"]}"#).is_err());
        let ok = TagVocabulary::parse_json(r#"{"colour": {"labels": ["a", "b"]}}"#).unwrap();
        assert_eq!(ok.0["colour"].prompt, default_prompt());
        assert_eq!(ok.0["colour"].margin, default_margin());
    }
}
