//! The relevance defaults an index carries: what `vitrine tune` chose on judged queries.
//!
//! They live in `DATA/relevance.json`, written atomically under the writer lock, copied by
//! snapshots, and read by the searcher on each refresh. They are tied to the model they were
//! tuned with: a floor calibrated for one model's similarities means nothing for another's, so
//! after a reindex to another model they are ignored (and `/v1/stats` says so) until re-tuned.
//!
//! Precedence, per query: the request's own `fusion` > these defaults for the query's kind > the
//! built-in defaults; and for the floor: the request's `fusion.floor` > the tuned floor > the
//! model card's floor > none.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vitrine_core::relevance::Floors;
use vitrine_core::ModelId;
use vitrine_store::generation::atomic_write;

use crate::{Fusion, Result, SearchError};

/// The file, in the data directory.
pub use vitrine_store::generation::RELEVANCE_FILE;
/// A larger file is not ours: refuse it rather than read it.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// What a query holds, which decides its default fusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    Text,
    Photo,
    PhotoText,
}

impl QueryKind {
    pub fn of(has_image: bool, has_text: bool) -> QueryKind {
        match (has_image, has_text) {
            (true, false) => QueryKind::Photo,
            (true, true) => QueryKind::PhotoText,
            _ => QueryKind::Text,
        }
    }

    pub const ALL: [QueryKind; 3] = [QueryKind::Text, QueryKind::Photo, QueryKind::PhotoText];

    pub fn name(self) -> &'static str {
        match self {
            QueryKind::Text => "text",
            QueryKind::Photo => "photo",
            QueryKind::PhotoText => "photo_text",
        }
    }
}

/// Tuned defaults, per query kind, and the floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RelevanceSettings {
    /// The model these were tuned with; other models ignore them.
    #[schema(value_type = Object)]
    pub model: ModelId,
    pub text: Option<Fusion>,
    pub photo: Option<Fusion>,
    pub photo_text: Option<Fusion>,
    pub floor: Option<Floors>,
    /// Seconds since the epoch.
    pub tuned_at: u64,
    /// What `tune` measured (held-out metrics before and after), for people to read.
    #[serde(default)]
    pub report: serde_json::Value,
}

impl RelevanceSettings {
    pub fn for_kind(&self, kind: QueryKind) -> Option<Fusion> {
        match kind {
            QueryKind::Text => self.text,
            QueryKind::Photo => self.photo,
            QueryKind::PhotoText => self.photo_text,
        }
    }

    pub fn set_kind(&mut self, kind: QueryKind, f: Option<Fusion>) {
        match kind {
            QueryKind::Text => self.text = f,
            QueryKind::Photo => self.photo = f,
            QueryKind::PhotoText => self.photo_text = f,
        }
    }

    /// Every fusion and floor in range.
    pub fn validate(&self) -> Result<()> {
        for f in QueryKind::ALL.iter().filter_map(|k| self.for_kind(*k)) {
            f.validate().map_err(|e| SearchError::BadRequest(format!("{RELEVANCE_FILE}: {e}")))?;
        }
        if let Some(f) = &self.floor {
            f.validate().map_err(|e| SearchError::BadRequest(format!("{RELEVANCE_FILE}: {e}")))?;
        }
        Ok(())
    }

    /// The settings saved in `data`, if any. A file that is unreadable, too large or invalid is
    /// an error: serving silently without the operator's tuning would be worse.
    pub fn load(data: &Path) -> Result<Option<RelevanceSettings>> {
        let path = data.join(RELEVANCE_FILE);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SearchError::Core(vitrine_core::CoreError::io(format!("reading {}", path.display()), e))),
        };
        let invalid = |message: String| SearchError::InvalidSettings { path: path.clone(), message };
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(invalid(format!("not a regular file of at most {MAX_FILE_BYTES} bytes")));
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| SearchError::Core(vitrine_core::CoreError::io(format!("reading {}", path.display()), e)))?;
        let s: RelevanceSettings = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        s.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(Some(s))
    }

    /// Write atomically. The caller holds the data directory's writer lock.
    pub fn save(&self, data: &Path) -> Result<()> {
        self.validate()?;
        let bytes = serde_json::to_vec_pretty(self).expect("settings serialize");
        atomic_write(&data.join(RELEVANCE_FILE), &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FusionMode;

    fn model() -> ModelId {
        ModelId { name: "m".into(), content_hash: "abc".into(), dim: 8, variant: Default::default() }
    }

    #[test]
    fn settings_round_trip_through_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RelevanceSettings::load(dir.path()).unwrap(), None);
        let mut s = RelevanceSettings {
            model: model(),
            text: None,
            photo: None,
            photo_text: None,
            floor: None,
            tuned_at: 1,
            report: serde_json::json!({"ndcg@10": 0.5}),
        };
        s.set_kind(QueryKind::Text, Some(Fusion { mode: FusionMode::Weighted, ..Fusion::default() }));
        s.save(dir.path()).unwrap();
        let back = RelevanceSettings::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.for_kind(QueryKind::Text).unwrap().mode, FusionMode::Weighted);
        assert_eq!(back.for_kind(QueryKind::Photo), None);
    }

    #[test]
    fn a_hostile_settings_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RELEVANCE_FILE);
        std::fs::write(&path, vec![b' '; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        assert!(RelevanceSettings::load(dir.path()).is_err(), "too large");
        std::fs::write(&path, "{").unwrap();
        assert!(RelevanceSettings::load(dir.path()).is_err(), "not JSON");
        let bad = serde_json::json!({"model": model(), "text": {"k": -1.0}, "photo": null, "photo_text": null,
            "floor": null, "tuned_at": 0});
        std::fs::write(&path, bad.to_string()).unwrap();
        assert!(RelevanceSettings::load(dir.path()).is_err(), "out of range");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(RelevanceSettings::load(dir.path()).is_err(), "a directory");
    }

    #[test]
    fn the_kind_follows_what_the_query_holds() {
        assert_eq!(QueryKind::of(false, true), QueryKind::Text);
        assert_eq!(QueryKind::of(true, false), QueryKind::Photo);
        assert_eq!(QueryKind::of(true, true), QueryKind::PhotoText);
    }
}
