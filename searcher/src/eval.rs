//! Relevance evaluation on judged queries: the metrics of `vitrine eval` and the Relevance tab.
//!
//! A judged query names what should be found (`relevant`: product id → grade; ≥ 1 is relevant)
//! or, with an empty `relevant`, that nothing should. Every query runs through the query
//! service's own path ([`QueryService::search`]: same defaults, same floor), so what is measured
//! is what shoppers get.
//!
//! Definitions (pinned by issue 12):
//! - recall@k = |relevant ∩ top k| / |relevant|, averaged over the queries with a relevant product;
//! - MRR = mean of 1 / rank of the first relevant hit within the top 100 (0 if none);
//! - nDCG@10 with gain 2^grade − 1 and discount log2(rank + 1), IDCG from the judged grades;
//! - false_positive_rate = the share of empty-`relevant` queries that return any hit;
//! - a channel's metrics come from its own ranked list before fusion (after the floor), averaged
//!   over the same queries; a channel that does not apply to a query counts as an empty list.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::relevance::QueryKind;
use crate::service::{Admission, ImageInput, Query, QueryError, QueryService};
use crate::{Filters, Fusion, SearchResult};

/// Ranks looked at for MRR and the first relevant rank.
pub const DEPTH: usize = 100;
/// Judged queries in one set, at most.
pub const MAX_QUERIES: usize = 10_000;
/// A judged-query file, at most.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Judged products of one query, at most.
pub const MAX_JUDGED: usize = 10_000;

/// One line of a judged-query file. Other fields (a `kind` label, notes) are allowed and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JudgedQuery {
    pub id: String,
    /// Query text.
    #[serde(default)]
    pub q: Option<String>,
    /// A query photo: a path relative to the judged-query file (CLI only; never read over HTTP).
    #[serde(default)]
    pub image: Option<String>,
    /// A query photo as base64 (what the HTTP route takes).
    #[serde(default)]
    pub image_base64: Option<String>,
    #[serde(default)]
    pub filters: Option<Filters>,
    #[serde(default)]
    pub fusion: Option<Fusion>,
    /// Product id → grade (≥ 1 relevant). Empty: nothing should match.
    pub relevant: BTreeMap<String, u32>,
    /// `train` or `test` (for `vitrine tune`); absent: split by a hash of the id.
    #[serde(default)]
    pub split: Option<String>,
}

/// A judged-query file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JudgedError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is over {MAX_FILE_BYTES} bytes; split it")]
    TooLarge { path: String },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("more than {MAX_QUERIES} queries; split the set")]
    TooMany,
}

impl JudgedQuery {
    /// The checks every judged query passes, from a file or over HTTP.
    pub fn check(&self) -> Result<(), String> {
        if self.q.as_deref().map(str::trim).unwrap_or("").is_empty() && self.image.is_none() && self.image_base64.is_none() {
            return Err("a query needs q, image or both".into());
        }
        if self.image.is_some() && self.image_base64.is_some() {
            return Err("give image or image_base64, not both".into());
        }
        if self.relevant.len() > MAX_JUDGED {
            return Err(format!("more than {MAX_JUDGED} judged products"));
        }
        if let Some(s) = &self.split {
            if s != "train" && s != "test" {
                return Err(format!("split {s:?}: use train or test"));
            }
        }
        Ok(())
    }

    /// Whether this query belongs to the tuning split (`split`, else a stable hash of the id).
    pub fn is_train(&self) -> bool {
        match self.split.as_deref() {
            Some(s) => s == "train",
            None => self.id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 2 == 0,
        }
    }

    /// The kind of query this is, which picks its default fusion.
    pub fn kind(&self) -> QueryKind {
        let has_text = self.q.as_deref().is_some_and(|t| !t.trim().is_empty());
        QueryKind::of(self.image.is_some() || self.image_base64.is_some(), has_text)
    }

    /// Judged products with grade ≥ 1.
    pub fn relevant_count(&self) -> usize {
        self.relevant.values().filter(|g| **g >= 1).count()
    }
}

/// Parse judged queries from JSONL text (blank lines and `#` comments skipped).
pub fn parse_judged(text: &str) -> Result<Vec<JudgedQuery>, JudgedError> {
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if out.len() == MAX_QUERIES {
            return Err(JudgedError::TooMany);
        }
        let q: JudgedQuery = serde_json::from_str(line).map_err(|e| JudgedError::Line { line: i + 1, message: e.to_string() })?;
        q.check().map_err(|message| JudgedError::Line { line: i + 1, message })?;
        out.push(q);
    }
    Ok(out)
}

/// Read a judged-query file, bounded.
pub fn read_judged(path: &Path) -> Result<Vec<JudgedQuery>, JudgedError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| JudgedError::Io { path: p.clone(), source })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(JudgedError::TooLarge { path: p });
    }
    let text = std::fs::read_to_string(path).map_err(|source| JudgedError::Io { path: p, source })?;
    parse_judged(&text)
}

/// The metrics of one ranked list or their mean over queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Metrics {
    #[serde(rename = "recall@1")]
    pub recall_1: f64,
    #[serde(rename = "recall@5")]
    pub recall_5: f64,
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    pub mrr: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
}

impl Metrics {
    /// The metrics of `ranked` (ids, best first) against the judged grades. `None` when nothing
    /// is relevant (such a query is counted by the false-positive rate instead).
    pub fn of(ranked: &[&str], relevant: &BTreeMap<String, u32>) -> Option<Metrics> {
        let grade = |id: &str| relevant.get(id).copied().unwrap_or(0);
        let total = relevant.values().filter(|g| **g >= 1).count();
        if total == 0 {
            return None;
        }
        let recall = |k: usize| ranked.iter().take(k).filter(|id| grade(id) >= 1).count() as f64 / total as f64;
        let mrr = first_relevant(ranked, relevant).map_or(0.0, |r| 1.0 / r as f64);
        let dcg = |grades: &mut dyn Iterator<Item = u32>| -> f64 {
            grades.take(10).enumerate().map(|(i, g)| (2f64.powi(g as i32) - 1.0) / ((i + 2) as f64).log2()).sum()
        };
        let mut ideal: Vec<u32> = relevant.values().copied().collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg = dcg(&mut ideal.into_iter());
        let ndcg = if idcg > 0.0 { dcg(&mut ranked.iter().map(|id| grade(id))) / idcg } else { 0.0 };
        Some(Metrics { recall_1: recall(1), recall_5: recall(5), recall_10: recall(10), mrr, ndcg_10: ndcg })
    }

    fn mean(all: &[Metrics]) -> Metrics {
        if all.is_empty() {
            return Metrics::default();
        }
        let n = all.len() as f64;
        let sum = |f: fn(&Metrics) -> f64| all.iter().map(f).sum::<f64>() / n;
        Metrics {
            recall_1: sum(|m| m.recall_1),
            recall_5: sum(|m| m.recall_5),
            recall_10: sum(|m| m.recall_10),
            mrr: sum(|m| m.mrr),
            ndcg_10: sum(|m| m.ndcg_10),
        }
    }
}

/// 1-based rank of the first relevant id within [`DEPTH`].
pub fn first_relevant(ranked: &[&str], relevant: &BTreeMap<String, u32>) -> Option<usize> {
    ranked.iter().take(DEPTH).position(|id| relevant.get(*id).is_some_and(|g| *g >= 1)).map(|i| i + 1)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelMetrics {
    pub image: Metrics,
    pub text: Metrics,
    pub keyword: Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PerQuery {
    pub id: String,
    pub rank_of_first_relevant: Option<usize>,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: Option<f64>,
    /// Hits returned (what the false-positive rate counts for a no-match query).
    pub hits: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
}

/// The report of one run over a judged set (the pinned `vitrine eval --json` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvalReport {
    pub queries: usize,
    pub k: usize,
    pub fused: Metrics,
    pub channels: ChannelMetrics,
    pub false_positive_rate: f64,
    pub per_query: Vec<PerQuery>,
    pub latency_ms: Latency,
    /// The fusion the run forced on queries without their own (`None`: the service's defaults).
    #[serde(default)]
    pub fusion: Option<Fusion>,
}

/// One query's outcome, kept to score it again without re-running (`tune`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub fused: Vec<String>,
    pub image: Vec<String>,
    pub text: Vec<String>,
    pub keyword: Vec<String>,
    pub ms: f64,
}

impl Outcome {
    pub fn from_result(r: &SearchResult, ms: f64) -> Outcome {
        let ids = |l: &[crate::ChannelHit]| l.iter().map(|h| h.id.clone()).collect();
        let ch = r.channels.clone().unwrap_or_default();
        Outcome {
            fused: r.hits.iter().map(|h| h.id.clone()).collect(),
            image: ids(&ch.image),
            text: ids(&ch.text),
            keyword: ids(&ch.keyword),
            ms,
        }
    }
}

/// Score outcomes (one per query, in order) into a report.
pub fn report(queries: &[JudgedQuery], outcomes: &[Outcome], k: usize, fusion: Option<Fusion>) -> EvalReport {
    let (mut fused, mut image, mut text, mut keyword) = (vec![], vec![], vec![], vec![]);
    let (mut negatives, mut false_positives) = (0usize, 0usize);
    let mut per_query = vec![];
    for (q, o) in queries.iter().zip(outcomes) {
        let f = Metrics::of(&refs(&o.fused), &q.relevant);
        match f {
            Some(m) => {
                fused.push(m);
                for (list, acc) in [(&o.image, &mut image), (&o.text, &mut text), (&o.keyword, &mut keyword)] {
                    acc.push(Metrics::of(&refs(list), &q.relevant).unwrap_or_default());
                }
            }
            None => {
                negatives += 1;
                false_positives += usize::from(!o.fused.is_empty());
            }
        }
        per_query.push(PerQuery {
            id: q.id.clone(),
            rank_of_first_relevant: first_relevant(&refs(&o.fused), &q.relevant),
            ndcg_10: f.map(|m| m.ndcg_10),
            hits: o.fused.len(),
        });
    }
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| if ms.is_empty() { 0.0 } else { ms[((ms.len() - 1) as f64 * p).round() as usize] };
    EvalReport {
        queries: queries.len(),
        k,
        fused: Metrics::mean(&fused),
        channels: ChannelMetrics { image: Metrics::mean(&image), text: Metrics::mean(&text), keyword: Metrics::mean(&keyword) },
        false_positive_rate: if negatives == 0 { 0.0 } else { false_positives as f64 / negatives as f64 },
        per_query,
        latency_ms: Latency { p50: pct(0.5), p99: pct(0.99) },
        fusion,
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Where a judged query's photo comes from.
pub enum ImageSource<'a> {
    /// Paths relative to this folder (the CLI: the judged file's folder).
    Folder(&'a Path),
    /// Only `image_base64` (HTTP: the server never reads a path a client names).
    InlineOnly,
}

/// A judged query cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("query {id}: {message}")]
    Input { id: String, message: String },
    #[error("query {id}: {source}")]
    Query { id: String, source: QueryError },
}

/// The service query of a judged one, with `fusion` for queries that name none.
pub fn to_query(q: &JudgedQuery, images: &ImageSource, k: usize, fusion: Option<Fusion>) -> Result<Query, EvalError> {
    let input = |message: String| EvalError::Input { id: q.id.clone(), message };
    let image = match (&q.image, &q.image_base64, images) {
        (Some(_), _, ImageSource::InlineOnly) => {
            return Err(input("image paths are read only by the CLI; send image_base64".into()));
        }
        (Some(rel), _, ImageSource::Folder(dir)) => {
            let rel_path = Path::new(rel);
            if rel_path.is_absolute() || rel_path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(input(format!("image {rel:?} must be a path inside the judged file's folder")));
            }
            let bytes = std::fs::read(dir.join(rel_path)).map_err(|e| input(format!("image {rel:?}: {e}")))?;
            Some(ImageInput::Bytes(bytes))
        }
        (None, Some(b64), _) => {
            use base64::Engine;
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| input(format!("image_base64: {e}")))?;
            Some(ImageInput::Bytes(bytes))
        }
        (None, None, _) => None,
    };
    Ok(Query {
        text: q.q.clone(),
        image,
        k: Some(k.clamp(DEPTH, crate::MAX_K)),
        filters: q.filters.clone().unwrap_or_default(),
        fusion: q.fusion.or(fusion),
        channels: true,
        ..Query::default()
    })
}

/// Run every judged query through the service's own path, `fusion` forced on queries that name
/// none (`None`: the service's defaults). `admit` gives each query its place in the service.
pub fn run(
    service: &QueryService,
    admit: &dyn Fn() -> Result<Admission, QueryError>,
    queries: &[JudgedQuery],
    images: &ImageSource,
    k: usize,
    fusion: Option<Fusion>,
) -> Result<EvalReport, EvalError> {
    run_by_kind(service, admit, queries, images, k, &|_| fusion).map(|mut r| {
        r.fusion = fusion;
        r
    })
}

/// [`run`], with the forced fusion chosen by each query's kind.
pub fn run_by_kind(
    service: &QueryService,
    admit: &dyn Fn() -> Result<Admission, QueryError>,
    queries: &[JudgedQuery],
    images: &ImageSource,
    k: usize,
    fusion: &dyn Fn(QueryKind) -> Option<Fusion>,
) -> Result<EvalReport, EvalError> {
    let mut outcomes = Vec::with_capacity(queries.len());
    for q in queries {
        let query = to_query(q, images, k, fusion(q.kind()))?;
        let err = |source| EvalError::Query { id: q.id.clone(), source };
        let admission = admit().map_err(err)?;
        let t = Instant::now();
        let out = service.search(admission, query).map_err(err)?;
        outcomes.push(Outcome::from_result(&out.result, t.elapsed().as_secs_f64() * 1000.0));
    }
    Ok(report(queries, &outcomes, k, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn metrics_match_a_hand_computed_example() {
        // Relevant: a (grade 2), b (grade 1), c (grade 1, never retrieved); x, y irrelevant.
        let rel = judged(&[("a", 2), ("b", 1), ("c", 1), ("z", 0)]);
        let m = Metrics::of(&["x", "a", "y", "b"], &rel).unwrap();
        assert_eq!(m.recall_1, 0.0);
        assert!((m.recall_5 - 2.0 / 3.0).abs() < 1e-12 && (m.recall_10 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.mrr - 0.5).abs() < 1e-12, "first relevant at rank 2");
        // DCG: a at rank 2 → 3/log2(3); b at rank 4 → 1/log2(5). IDCG: 3/1 + 1/log2(3) + 1/2.
        let dcg = 3.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let idcg = 3.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((m.ndcg_10 - dcg / idcg).abs() < 1e-12, "{} vs {}", m.ndcg_10, dcg / idcg);
        let perfect = Metrics::of(&["a", "b", "c"], &rel).unwrap();
        assert!((perfect.ndcg_10 - 1.0).abs() < 1e-12 && perfect.recall_1 == 1.0 / 3.0 && perfect.mrr == 1.0);
        assert_eq!(Metrics::of(&["a"], &judged(&[("a", 0)])), None, "grade 0 is not relevant");
    }

    #[test]
    fn mrr_looks_only_at_the_first_hundred() {
        let rel = judged(&[("hit", 1)]);
        let mut ranked: Vec<String> = (0..150).map(|i| format!("n{i}")).collect();
        ranked[120] = "hit".into();
        let refs: Vec<&str> = ranked.iter().map(String::as_str).collect();
        assert_eq!(Metrics::of(&refs, &rel).unwrap().mrr, 0.0);
        assert_eq!(first_relevant(&refs, &rel), None);
        ranked.swap(120, 99);
        let refs: Vec<&str> = ranked.iter().map(String::as_str).collect();
        assert_eq!(first_relevant(&refs, &rel), Some(100));
    }

    fn outcome(fused: &[&str], image: &[&str]) -> Outcome {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Outcome { fused: v(fused), image: v(image), text: vec![], keyword: vec![], ms: 1.0 }
    }

    #[test]
    fn the_report_averages_positives_and_counts_false_positives() {
        let q = |id: &str, rel: &[(&str, u32)]| JudgedQuery {
            id: id.into(),
            q: Some("x".into()),
            image: None,
            image_base64: None,
            filters: None,
            fusion: None,
            relevant: judged(rel),
            split: None,
        };
        let queries = [q("p1", &[("a", 1)]), q("p2", &[("b", 1)]), q("n1", &[]), q("n2", &[])];
        let outcomes = [outcome(&["a"], &["a"]), outcome(&["x", "b"], &[]), outcome(&["x"], &[]), outcome(&[], &[])];
        let r = report(&queries, &outcomes, 10, None);
        assert_eq!(r.queries, 4);
        assert_eq!(r.fused.recall_1, 0.5);
        assert_eq!(r.fused.mrr, 0.75);
        assert_eq!(r.channels.image.recall_1, 0.5, "a channel that missed counts as an empty list");
        assert_eq!(r.channels.keyword, Metrics::default());
        assert_eq!(r.false_positive_rate, 0.5);
        assert_eq!(r.per_query[1].rank_of_first_relevant, Some(2));
        assert_eq!(r.per_query[2].ndcg_10, None);
        let json = serde_json::to_value(&r).unwrap();
        for key in ["recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"] {
            assert!(json["fused"][key].is_number() && json["channels"]["text"][key].is_number(), "{key}");
        }
        assert!(json["latency_ms"]["p99"].is_number() && json["per_query"][0]["ndcg@10"].is_number());
    }

    #[test]
    fn judged_files_are_checked_line_by_line() {
        let ok = "{\"id\": \"q1\", \"q\": \"red mug\", \"relevant\": {\"a\": 2}, \"kind\": \"colour+category\"}\n\n# note\n{\"id\": \"q2\", \"image\": \"p.png\", \"relevant\": {}, \"split\": \"test\"}";
        let qs = parse_judged(ok).unwrap();
        assert_eq!(qs.len(), 2);
        assert!(!qs[1].is_train());
        for (bad, line) in [
            ("{\"id\": \"q\", \"relevant\": {}}", 1),
            ("{\"id\": \"q\", \"q\": \"a\", \"relevant\": {}, \"split\": \"dev\"}", 1),
            ("\n{\"id\": \"q\", \"q\": \"a\", \"relevnt\": {}}", 2),
            ("{\"id\": \"q\", \"q\": \"a\", \"relevant\": {\"a\": -1}}", 1),
        ] {
            match parse_judged(bad) {
                Err(JudgedError::Line { line: l, .. }) => assert_eq!(l, line, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let many = "{\"id\": \"q\", \"q\": \"a\", \"relevant\": {}}\n".repeat(MAX_QUERIES + 1);
        assert!(matches!(parse_judged(&many), Err(JudgedError::TooMany)));
    }

    #[test]
    fn image_paths_stay_inside_the_judged_folder_and_never_over_http() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.png"), b"png").unwrap();
        let mut q = parse_judged("{\"id\": \"q\", \"image\": \"p.png\", \"relevant\": {}}").unwrap().remove(0);
        let query = to_query(&q, &ImageSource::Folder(dir.path()), 10, None).unwrap();
        assert!(matches!(query.image, Some(ImageInput::Bytes(ref b)) if b == b"png"));
        assert_eq!(query.k, Some(DEPTH), "deep enough for MRR");
        assert!(query.channels);
        assert!(matches!(to_query(&q, &ImageSource::InlineOnly, 10, None), Err(EvalError::Input { .. })));
        for bad in ["../secret.png", "/etc/passwd", "a/../../b.png"] {
            q.image = Some(bad.into());
            assert!(matches!(to_query(&q, &ImageSource::Folder(dir.path()), 10, None), Err(EvalError::Input { .. })), "{bad}");
        }
    }
}
