//! `vitrine tune`: choose fusion settings and the relevance floor on the train split of judged
//! queries, and report held-out metrics against the current defaults.
//!
//! Each train query is embedded once ([`QueryService::prepare`] with every tower), then searched
//! under many settings ([`QueryService::run`]). The search is coordinate ascent, per query kind
//! (text, photo, photo with text), on `mean nDCG@10 − penalty × false-positive rate`:
//! 1. the floors of the kind's two vector channels, from quantiles of the scores relevant
//!    products get in that channel, and the top score no-match queries reach;
//! 2. the fusion mode (RRF with k ∈ {10, 30, 60, 120}, weighted with min-max or z-score);
//! 3. each channel's weight ∈ {0, 0.25, 0.5, 1, 2}.
//!
//! The floor is keyed by query modality (`vitrine_core::relevance`), and a photo-with-text query
//! uses the photo floor for its image channel and the text floor for its text channel, so text
//! and photo queries tune the floors and photo-with-text queries only their fusion.
//!
//! A move is taken only when it improves the objective, so the result is never worse than the
//! starting point (the current defaults) on the train split.

use serde::{Deserialize, Serialize};
use vitrine_core::relevance::{Floors, Modality, VectorChannel};

use crate::eval::{self, EvalError, EvalReport, ImageSource, JudgedQuery, Outcome};
use crate::relevance::{QueryKind, RelevanceSettings};
use crate::service::{Admission, Prepared, QueryError, QueryService, Towers};
use crate::{Fusion, FusionMode, Normalization, Weights};

#[derive(Debug, Clone, Copy)]
pub struct TuneOptions {
    /// Hits per query scored (the report's `k`).
    pub k: usize,
    /// How much one no-match query that returns hits costs, in nDCG@10 points.
    pub false_positive_penalty: f64,
    /// Passes of coordinate ascent.
    pub rounds: usize,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions { k: 10, false_positive_penalty: 0.5, rounds: 2 }
    }
}

/// What `tune` chose and measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneReport {
    pub train_queries: usize,
    pub test_queries: usize,
    /// Train objective per kind: (before, after).
    pub train_objective: std::collections::BTreeMap<String, (f64, f64)>,
    /// Held-out metrics under the defaults in force before tuning.
    pub before: EvalReport,
    /// Held-out metrics under the tuned settings.
    pub after: EvalReport,
}

struct Trial<'a> {
    service: &'a QueryService,
    /// The kind's train queries, and each one prepared (same order).
    judged: Vec<JudgedQuery>,
    prepared: Vec<Prepared>,
    penalty: f64,
    k: usize,
}

impl Trial<'_> {
    fn outcomes(&self, f: &Fusion) -> Result<Vec<Outcome>, EvalError> {
        self.judged
            .iter()
            .zip(&self.prepared)
            .map(|(q, p)| {
                let r = self.service.run(p, Some(*f)).map_err(|source| EvalError::Query { id: q.id.clone(), source })?;
                Ok(Outcome::from_result(&r, 0.0))
            })
            .collect()
    }

    fn objective(&self, f: &Fusion) -> Result<f64, EvalError> {
        let r = eval::report(&self.judged, &self.outcomes(f)?, self.k, None);
        Ok(r.fused.ndcg_10 - self.penalty * r.false_positive_rate)
    }

    /// Scores relevant products reach in one vector channel (floor off), and the best score any
    /// no-match query reaches there.
    fn channel_scores(&self, f: &Fusion, channel: VectorChannel) -> Result<(Vec<f32>, Option<f32>), EvalError> {
        let off = Fusion { floor: Some(Floors::default()), ..*f };
        let (mut relevant, mut negative_top) = (vec![], None::<f32>);
        for (q, p) in self.judged.iter().zip(&self.prepared) {
            let r = self.service.run(p, Some(off)).map_err(|source| EvalError::Query { id: q.id.clone(), source })?;
            let ch = r.channels.unwrap_or_default();
            let list = match channel {
                VectorChannel::Image => ch.image,
                VectorChannel::Text => ch.text,
            };
            if q.relevant_count() == 0 {
                if let Some(top) = list.first() {
                    negative_top = Some(negative_top.map_or(top.score, |t| t.max(top.score)));
                }
            } else {
                relevant.extend(list.iter().filter(|h| q.relevant.get(&h.id).is_some_and(|g| *g >= 1)).map(|h| h.score));
            }
        }
        relevant.sort_by(f32::total_cmp);
        Ok((relevant, negative_top))
    }
}

/// The modalities whose floors a kind tunes (see the module doc).
fn floor_keys(kind: QueryKind) -> Vec<(Modality, VectorChannel)> {
    match kind {
        QueryKind::Text => vec![(Modality::Text, VectorChannel::Image), (Modality::Text, VectorChannel::Text)],
        QueryKind::Photo => vec![(Modality::Photo, VectorChannel::Image), (Modality::Photo, VectorChannel::Text)],
        QueryKind::PhotoText => vec![],
    }
}

fn floor_candidates(relevant: &[f32], negative_top: Option<f32>) -> Vec<Option<f32>> {
    let mut c = vec![None];
    if !relevant.is_empty() {
        for q in [0.0, 0.02, 0.05, 0.1, 0.2] {
            c.push(Some(relevant[((relevant.len() - 1) as f64 * q).round() as usize]));
        }
    }
    if let Some(t) = negative_top {
        // Just above the best no-match hit: nothing of those queries survives.
        c.push(Some((t + 1e-4).min(1.0)));
    }
    c
}

fn mode_candidates(f: &Fusion) -> Vec<Fusion> {
    let mut c: Vec<Fusion> = [10.0, 30.0, 60.0, 120.0].iter().map(|k| Fusion { mode: FusionMode::Rrf, k: *k, ..*f }).collect();
    for n in [Normalization::Minmax, Normalization::Zscore] {
        c.push(Fusion { mode: FusionMode::Weighted, normalization: n, ..*f });
    }
    c
}

const WEIGHTS: [f32; 5] = [0.0, 0.25, 0.5, 1.0, 2.0];

/// Tune on the train split, measure on the test split. Does not save; the caller saves the
/// returned settings under the writer lock.
pub fn tune(
    service: &QueryService,
    admit: &dyn Fn() -> Result<Admission, QueryError>,
    queries: &[JudgedQuery],
    images: &ImageSource,
    opts: TuneOptions,
) -> Result<(RelevanceSettings, TuneReport), EvalError> {
    let model = service
        .embedder()
        .map(|e| e.model_id().clone())
        .ok_or_else(|| EvalError::Query { id: "-".into(), source: QueryError::NotReady })?;
    let (train, test): (Vec<&JudgedQuery>, Vec<&JudgedQuery>) = queries.iter().partition(|q| q.is_train());
    let mut floors = service.resolve_fusion(QueryKind::Text, None).floor.unwrap_or_default();
    let mut settings = RelevanceSettings {
        model,
        text: None,
        photo: None,
        photo_text: None,
        floor: None,
        tuned_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        report: serde_json::Value::Null,
    };
    let mut train_objective = std::collections::BTreeMap::new();
    for kind in QueryKind::ALL {
        let judged: Vec<JudgedQuery> = train.iter().filter(|q| q.kind() == kind).map(|q| (*q).clone()).collect();
        let mut prepared = vec![];
        for q in &judged {
            let query = eval::to_query(q, images, opts.k, None)?;
            let err = |source| EvalError::Query { id: q.id.clone(), source };
            let _admission = admit().map_err(err)?;
            prepared.push(service.prepare(query, Towers::All).map_err(err)?);
        }
        let start = Fusion { floor: None, ..service.resolve_fusion(kind, None) };
        if prepared.is_empty() {
            settings.set_kind(kind, Some(start));
            continue;
        }
        let trial = Trial { service, judged, prepared, penalty: opts.false_positive_penalty, k: opts.k };
        let has_image = kind != QueryKind::Text;
        let mut cur =
            Fusion { weights: Some(start.weights_for(has_image, kind != QueryKind::Photo)), floor: Some(floors), ..start };
        let before = trial.objective(&cur)?;
        let mut best = before;
        let consider = |cand: Fusion, cur: &mut Fusion, best: &mut f64| -> Result<(), EvalError> {
            let o = trial.objective(&cand)?;
            if o > *best + 1e-9 {
                *best = o;
                *cur = cand;
            }
            Ok(())
        };
        for _ in 0..opts.rounds {
            for (modality, channel) in floor_keys(kind) {
                let (relevant, negative_top) = trial.channel_scores(&cur, channel)?;
                for v in floor_candidates(&relevant, negative_top) {
                    let mut f = cur.floor.unwrap_or_default();
                    f.set(modality, channel, v);
                    consider(Fusion { floor: Some(f), ..cur }, &mut cur, &mut best)?;
                }
            }
            for cand in mode_candidates(&cur) {
                consider(cand, &mut cur, &mut best)?;
            }
            for ch in 0..3 {
                for v in WEIGHTS {
                    let mut w = cur.weights.unwrap_or_default();
                    *[&mut w.image, &mut w.text, &mut w.keyword][ch] = v;
                    if w == (Weights { image: 0.0, text: 0.0, keyword: 0.0 }) {
                        continue;
                    }
                    consider(Fusion { weights: Some(w), ..cur }, &mut cur, &mut best)?;
                }
            }
        }
        floors = cur.floor.unwrap_or(floors);
        settings.set_kind(kind, Some(Fusion { floor: None, ..cur }));
        train_objective.insert(kind.name().to_string(), (before, best));
    }
    settings.floor = Some(floors);

    let test: Vec<JudgedQuery> = test.into_iter().cloned().collect();
    let before = eval::run_by_kind(service, admit, &test, images, opts.k, &|_| None)?;
    let tuned = settings.clone();
    let after = eval::run_by_kind(service, admit, &test, images, opts.k, &|kind| {
        tuned.for_kind(kind).map(|f| Fusion { floor: f.floor.or(tuned.floor), ..f })
    })?;
    settings.report = serde_json::json!({
        "test_queries": test.len(),
        "before": {"fused": before.fused, "false_positive_rate": before.false_positive_rate},
        "after": {"fused": after.fused, "false_positive_rate": after.false_positive_rate},
    });
    let report = TuneReport { train_queries: train.len(), test_queries: test.len(), train_objective, before, after };
    Ok((settings, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_candidates_come_from_relevant_scores_and_the_best_negative() {
        let relevant: Vec<f32> = (0..101).map(|i| i as f32 / 100.0).collect();
        let c = floor_candidates(&relevant, Some(0.3));
        assert_eq!(c[0], None, "no floor is always a candidate");
        assert_eq!(&c[1..6], &[Some(0.0), Some(0.02), Some(0.05), Some(0.1), Some(0.2)]);
        assert!((c[6].unwrap() - 0.3001).abs() < 1e-6);
        assert_eq!(floor_candidates(&[], None), vec![None]);
        assert_eq!(floor_candidates(&[], Some(1.0)), vec![None, Some(1.0)], "never above a cosine's range");
    }

    #[test]
    fn kinds_tune_the_floors_of_their_own_modality() {
        assert!(floor_keys(QueryKind::Text).iter().all(|(m, _)| *m == Modality::Text));
        assert!(floor_keys(QueryKind::Photo).iter().all(|(m, _)| *m == Modality::Photo));
        assert!(floor_keys(QueryKind::PhotoText).is_empty());
        let modes = mode_candidates(&Fusion::default());
        assert_eq!(modes.len(), 6);
        assert!(modes.iter().all(|f| f.validate().is_ok()));
    }
}
