//! Rank fusion: pure functions over per-channel ranked lists.
//!
//! A channel's list is `[(doc, raw score)]`, best first. Fusion returns `(doc, fused score)`,
//! best first, ties broken by doc for determinism.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use vitrine_core::relevance::Floors;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FusionMode {
    #[default]
    Rrf,
    Weighted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    #[default]
    Minmax,
    Zscore,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Weights {
    pub image: f32,
    pub text: f32,
    pub keyword: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { image: 1.0, text: 1.0, keyword: 1.0 }
    }
}

impl Weights {
    /// The weights used when a request names none, by what the query holds.
    ///
    /// A photo-only query uses the image channel alone: CLIP scores a photo against product
    /// *text* far less sharply than against product photos, and rank fusion cannot tell a
    /// near-duplicate photo from that weaker signal, so at any weight it can outvote the exact
    /// match. Setting `weights.text > 0` turns the cross-modal channel on (it finds products that
    /// have no usable image). With text in the query, the text channel compares text with text.
    pub fn default_for(has_image: bool, has_text: bool) -> Weights {
        match (has_image, has_text) {
            (true, false) => Weights { image: 1.0, text: 0.0, keyword: 0.0 },
            (true, true) => Weights { image: 1.0, text: 0.5, keyword: 1.0 },
            _ => Weights::default(),
        }
    }
}

/// How the channels are combined; every field has a default, so `{}` is valid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Fusion {
    pub mode: FusionMode,
    /// The RRF constant.
    pub k: f32,
    /// Per-channel weights; `None` picks [`Weights::default_for`] the query.
    pub weights: Option<Weights>,
    pub normalization: Normalization,
    /// The relevance floor of the vector channels (`vitrine_core::relevance`); `None` takes the
    /// index's default (tuned, else the model card's), and `{}` turns it off.
    pub floor: Option<Floors>,
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion { mode: FusionMode::Rrf, k: 60.0, weights: None, normalization: Normalization::Minmax, floor: None }
    }
}

/// A fusion setting out of range; names the field (`fusion.weights.image`, `fusion.k`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {}", if field.starts_with("fusion.floor") { "a number between -1 and 1 (a cosine similarity)" } else { "a finite number >= 0" })]
pub struct InvalidFusion {
    pub field: &'static str,
}

impl Fusion {
    pub fn validate(&self) -> Result<(), InvalidFusion> {
        let w = self.weights.unwrap_or_default();
        for (field, v) in
            [("fusion.weights.image", w.image), ("fusion.weights.text", w.text), ("fusion.weights.keyword", w.keyword)]
        {
            if !v.is_finite() || v < 0.0 {
                return Err(InvalidFusion { field });
            }
        }
        if !self.k.is_finite() || self.k < 0.0 {
            return Err(InvalidFusion { field: "fusion.k" });
        }
        if let Some(f) = &self.floor {
            f.validate().map_err(|e| InvalidFusion { field: e.field })?;
        }
        Ok(())
    }

    /// The channel weights this query runs with: the request's, else [`Weights::default_for`]
    /// what it holds. The query service decides which model towers run from these, and the
    /// searcher which channels run, so both read them here.
    pub fn weights_for(&self, has_image: bool, has_text: bool) -> Weights {
        self.weights.unwrap_or_else(|| Weights::default_for(has_image, has_text))
    }
}

/// Reciprocal rank fusion: `score(d) = Σ_c w_c / (k + rank_c(d))`, ranks starting at 1.
/// A channel with weight 0 contributes nothing; a document absent from a channel gets 0 from it.
pub fn rrf(channels: &[(&[(u64, f32)], f32)], k: f32) -> Vec<(u64, f32)> {
    let mut acc: HashMap<u64, f32> = HashMap::new();
    for (list, w) in channels {
        if *w == 0.0 {
            continue;
        }
        for (rank, (doc, _)) in list.iter().enumerate() {
            *acc.entry(*doc).or_default() += w / (k + rank as f32 + 1.0);
        }
    }
    sorted(acc)
}

/// Normalize one channel's scores.
/// min-max: `(s - min) / (max - min)` (all equal → 1); z-score: `(s - mean) / std` (std 0 → 0).
pub fn normalize(scores: &[f32], how: Normalization) -> Vec<f32> {
    if scores.is_empty() {
        return vec![];
    }
    match how {
        Normalization::Minmax => {
            let (lo, hi) = scores.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), s| (l.min(*s), h.max(*s)));
            scores.iter().map(|s| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 }).collect()
        }
        Normalization::Zscore => {
            let n = scores.len() as f32;
            let mean = scores.iter().sum::<f32>() / n;
            let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / n).sqrt();
            scores.iter().map(|s| if std > 0.0 { (s - mean) / std } else { 0.0 }).collect()
        }
    }
}

/// Weighted score fusion: `score(d) = Σ_c w_c · norm_c(d)`. A document missing from a channel
/// takes 0 for min-max, and that channel's lowest z-score for z-score, so absence never beats
/// presence. (Min-max gives a channel whose scores are all equal, such as a single keyword match,
/// 1 for each; its floor stays 0, or the channel would add the same to every document.)
pub fn weighted(channels: &[(&[(u64, f32)], f32)], how: Normalization) -> Vec<(u64, f32)> {
    let mut acc: HashMap<u64, f32> = HashMap::new();
    let mut floors = vec![];
    for (list, w) in channels {
        if *w == 0.0 || list.is_empty() {
            continue;
        }
        let raw: Vec<f32> = list.iter().map(|(_, s)| *s).collect();
        let norm = normalize(&raw, how);
        let floor = match how {
            Normalization::Minmax => 0.0,
            Normalization::Zscore => norm.iter().copied().fold(f32::INFINITY, f32::min),
        };
        floors.push((*list, *w, floor));
        for ((doc, _), n) in list.iter().zip(norm) {
            *acc.entry(*doc).or_default() += w * n;
        }
    }
    // Documents absent from a channel take its floor.
    for (list, w, floor) in floors {
        let present: std::collections::HashSet<u64> = list.iter().map(|(d, _)| *d).collect();
        for (doc, score) in acc.iter_mut() {
            if !present.contains(doc) {
                *score += w * floor;
            }
        }
    }
    sorted(acc)
}

fn sorted(acc: HashMap<u64, f32>) -> Vec<(u64, f32)> {
    let mut v: Vec<(u64, f32)> = acc.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_matches_a_hand_computed_example() {
        let a = [(1, 0.9), (2, 0.8), (3, 0.1)];
        let b = [(3, 5.0), (1, 4.0)];
        let fused = rrf(&[(&a, 1.0), (&b, 1.0)], 60.0);
        // 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62
        let s1 = 1.0 / 61.0 + 1.0 / 62.0;
        let s3 = 1.0 / 63.0 + 1.0 / 61.0;
        assert_eq!(fused.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!((fused[0].1 - s1).abs() < 1e-7 && (fused[1].1 - s3).abs() < 1e-7);
    }

    #[test]
    fn zero_weight_turns_a_channel_off() {
        let a = [(1, 0.9)];
        let b = [(2, 5.0)];
        let fused = rrf(&[(&a, 0.0), (&b, 1.0)], 60.0);
        assert_eq!(fused, vec![(2, 1.0 / 61.0)]);
        let fused = weighted(&[(&a, 1.0), (&b, 0.0)], Normalization::Minmax);
        assert_eq!(fused.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn normalizations_match_their_formulas() {
        assert_eq!(normalize(&[2.0, 4.0, 6.0], Normalization::Minmax), vec![0.0, 0.5, 1.0]);
        let z = normalize(&[2.0, 4.0, 6.0], Normalization::Zscore);
        let std = (8.0f32 / 3.0).sqrt();
        assert!((z[0] + 2.0 / std).abs() < 1e-6 && z[1].abs() < 1e-6 && (z[2] - 2.0 / std).abs() < 1e-6);
        assert_eq!(normalize(&[3.0, 3.0], Normalization::Minmax), vec![1.0, 1.0]);
    }

    #[test]
    fn weighted_fusion_with_minmax() {
        // image: 1 → 1.0, 2 → 0.0; keyword: 2 → 1.0, 3 → 0.0
        let image = [(1, 0.9), (2, 0.5)];
        let keyword = [(2, 10.0), (3, 2.0)];
        let fused = weighted(&[(&image, 2.0), (&keyword, 1.0)], Normalization::Minmax);
        // 1: 2*1 + 0 = 2; 2: 0 + 1 = 1; 3: 0 + 0 = 0
        assert_eq!(fused, vec![(1, 2.0), (2, 1.0), (3, 0.0)]);
    }

    fn close(got: &[(u64, f32)], want: &[(u64, f32)]) {
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), want.iter().map(|x| x.0).collect::<Vec<_>>(), "{got:?}");
        for ((_, g), (d, w)) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "doc {d}: {g} != {w} in {got:?}");
        }
    }

    #[test]
    fn weighted_zscore_gives_a_missing_document_the_channels_lowest_score() {
        // image: mean 2, std 1 → 1: +1, 2: -1 (floor -1).
        let image = [(1, 3.0), (2, 1.0)];
        // keyword: mean 4, std √(8/3) → 2: +√1.5, 3: 0, 4: -√1.5 (floor -√1.5).
        let keyword = [(2, 6.0), (3, 4.0), (4, 2.0)];
        let z = 1.5f32.sqrt();
        let fused = weighted(&[(&image, 1.0), (&keyword, 2.0)], Normalization::Zscore);
        // 1: +1 + 2·(-z) (absent from keyword: its floor, not 0, which would put it first)
        // 2: -1 + 2·z;  3: -1 (absent from image) + 0;  4: -1 + 2·(-z)
        close(&fused, &[(2, -1.0 + 2.0 * z), (3, -1.0), (1, 1.0 - 2.0 * z), (4, -1.0 - 2.0 * z)]);
    }

    #[test]
    fn weighted_minmax_counts_a_channel_with_a_single_match() {
        // One keyword match normalizes to 1; the products it misses take 0, not the match's own 1.
        let image = [(1, 0.9), (2, 0.5)];
        let keyword = [(2, 7.5)];
        let fused = weighted(&[(&image, 1.0), (&keyword, 1.0)], Normalization::Minmax);
        // 1: image 1 + keyword 0; 2: image 0 + keyword 1: a tie, broken by document.
        close(&fused, &[(1, 1.0), (2, 1.0)]);
        let fused = weighted(&[(&image, 1.0), (&keyword, 1.5)], Normalization::Minmax);
        close(&fused, &[(2, 1.5), (1, 1.0)]);
    }

    #[test]
    fn rrf_weights_scale_each_channel() {
        let a = [(1, 0.9), (2, 0.8)];
        let b = [(2, 3.0), (1, 2.0)];
        // k = 1: rank 1 → w/2, rank 2 → w/3.
        // a·0.5 + b·2: 1 → 0.5/2 + 2/3; 2 → 0.5/3 + 2/2
        close(&rrf(&[(&a, 0.5), (&b, 2.0)], 1.0), &[(2, 0.5 / 3.0 + 1.0), (1, 0.25 + 2.0 / 3.0)]);
        // a·2 + b·0.5: the order flips.
        close(&rrf(&[(&a, 2.0), (&b, 0.5)], 1.0), &[(1, 1.0 + 0.5 / 3.0), (2, 2.0 / 3.0 + 0.25)]);
        // k = 0 is allowed: rank 1 scores w.
        close(&rrf(&[(&a, 3.0)], 0.0), &[(1, 3.0), (2, 1.5)]);
    }

    #[test]
    fn equal_scores_are_ordered_by_document() {
        let a = [(7, 0.9), (5, 0.1)];
        let b = [(3, 0.4), (9, 0.2)];
        // RRF: 7 and 3 tie at 1/61, 5 and 9 at 1/62.
        let fused = rrf(&[(&a, 1.0), (&b, 1.0)], 60.0);
        assert_eq!(fused.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 7, 5, 9]);
        // Weighted: 7 and 3 both 1, 5 and 9 both 0; the same order whatever the input order.
        for (x, y) in [(&a[..], &b[..]), (&b[..], &a[..])] {
            let fused = weighted(&[(x, 1.0), (y, 1.0)], Normalization::Minmax);
            assert_eq!(fused, vec![(3, 1.0), (7, 1.0), (5, 0.0), (9, 0.0)]);
        }
    }

    #[test]
    fn default_weights_follow_what_the_query_holds() {
        let w = |image, text, keyword| Weights { image, text, keyword };
        assert_eq!(Weights::default_for(true, false), w(1.0, 0.0, 0.0), "a photo alone: the image channel alone");
        assert_eq!(Weights::default_for(true, true), w(1.0, 0.5, 1.0));
        assert_eq!(Weights::default_for(false, true), w(1.0, 1.0, 1.0));
        assert_eq!(Weights::default_for(false, false), Weights::default());
    }

    #[test]
    fn validate_refuses_negative_and_non_finite_numbers_and_names_the_field() {
        assert_eq!(Fusion::default().validate(), Ok(()));
        let ok = Fusion { k: 0.0, weights: Some(Weights { image: 0.0, text: 2.5, keyword: 0.0 }), ..Default::default() };
        assert_eq!(ok.validate(), Ok(()));
        for (bad, field) in [
            (Weights { image: -0.5, ..Default::default() }, "fusion.weights.image"),
            (Weights { text: f32::NAN, ..Default::default() }, "fusion.weights.text"),
            (Weights { keyword: f32::INFINITY, ..Default::default() }, "fusion.weights.keyword"),
        ] {
            let e = Fusion { weights: Some(bad), ..Default::default() }.validate().unwrap_err();
            assert_eq!(e.field, field);
            assert_eq!(e.to_string(), format!("{field} must be a finite number >= 0"));
        }
        for k in [-1.0, f32::NAN, f32::INFINITY] {
            let e = Fusion { k, ..Default::default() }.validate().unwrap_err();
            assert_eq!(e, InvalidFusion { field: "fusion.k" });
        }
        let mut floor = Floors::default();
        floor.text.image = Some(f32::NAN);
        let e = Fusion { floor: Some(floor), ..Default::default() }.validate().unwrap_err();
        assert_eq!(e.field, "fusion.floor.text.image");
        assert!(e.to_string().contains("between -1 and 1"), "{e}");
    }

    #[test]
    fn fusion_requests_parse_with_defaults_and_refuse_unknown_fields() {
        let f: Fusion = serde_json::from_str("{}").unwrap();
        assert_eq!(f, Fusion::default());
        let f: Fusion =
            serde_json::from_str(r#"{"mode": "weighted", "normalization": "zscore", "weights": {"text": 0}}"#).unwrap();
        assert_eq!((f.mode, f.normalization), (FusionMode::Weighted, Normalization::Zscore));
        assert_eq!(f.weights, Some(Weights { image: 1.0, text: 0.0, keyword: 1.0 }), "unnamed weights keep their default");
        assert!(serde_json::from_str::<Fusion>(r#"{"mode": "sum"}"#).is_err());
        assert!(serde_json::from_str::<Fusion>(r#"{"kk": 1}"#).is_err());
    }
}
