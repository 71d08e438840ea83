//! The on-disk format of a Vitrine data directory, and its upgrades.
//!
//! The format version lives in `DATA/VERSION` (`{"format": N}`), written atomically. Opening a
//! directory detects its version, runs every migration from that version up, one step at a time
//! (each step records its new version before the next begins, so an interrupted upgrade resumes
//! where it stopped), and refuses a version newer than this build understands.
//!
//! Format history:
//! - **1**: `store/` (sled: products, embeddings, change log, metadata), `generations/gen-N/`
//!   (manifest.json, tantivy `keyword/`, vector `segments/` whose graphs are hnsw_rs dumps or,
//!   since the flat search loop, `graph.bin`: both load, no version step was needed; since the
//!   mapped vectors, `vectors.f32` is read in place and the 8-bit codes are computed when a
//!   segment opens, so that change needed none either; since `store/src/hnsw.rs` replaced
//!   hnsw_rs as the builder, `graph.bin` is written by it in the same format: none either),
//!   `CURRENT`, `reports/`, `jobs/` (the service's ingest jobs, JSON with their catalogs), and
//!   `cache/thumbs/` (derived, safe to delete). The model id's `variant` (2026-11-30) was added
//!   without a step: an id without it reads as `fp32`, the weights every older index was built
//!   with, and its content hash covers the same files.
//!
//! Add a step by appending to [`MIGRATIONS`] in a module of its own (`v1_to_v2.rs`), bumping
//! [`CURRENT_FORMAT`], and committing a data directory of the old format under
//! `tests/fixtures/data-vN/` so the upgrade stays tested forever.

use std::path::{Path, PathBuf};

pub const CURRENT_FORMAT: u32 = 1;
pub const VERSION_FILE: &str = "VERSION";

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{path}: data format {found} is newer than this vitrine understands (up to {supported}); upgrade vitrine")]
    FutureVersion { path: PathBuf, found: u32, supported: u32 },
    #[error("{path}: not a Vitrine data directory (it has files but no VERSION)")]
    NotADataDir { path: PathBuf },
    #[error("{path}: unreadable VERSION: {message}")]
    BadVersion { path: PathBuf, message: String },
    #[error("{path}: no migration from format {from}")]
    MissingStep { path: PathBuf, from: u32 },
    #[error("{path}: migration {name} failed: {source}")]
    Step { path: PathBuf, name: &'static str, source: StepError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Why a migration step failed: whatever error its code met (I/O, a store, a parse), kept as an
/// error value with its source chain rather than flattened to text.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

/// One upgrade step from `from` to `from + 1`.
pub struct Migration {
    pub from: u32,
    pub name: &'static str,
    pub run: fn(&Path) -> Result<(), StepError>,
}

/// Every upgrade, in order. Empty while format 1 is the only format.
pub const MIGRATIONS: &[Migration] = &[];

#[derive(serde::Serialize, serde::Deserialize)]
struct VersionFile {
    format: u32,
}

fn io(path: &Path, source: std::io::Error) -> MigrationError {
    MigrationError::Io { path: path.to_path_buf(), source }
}

pub fn read_version(dir: &Path) -> Result<Option<u32>, MigrationError> {
    let p = dir.join(VERSION_FILE);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice::<VersionFile>(&b)
            .map(|v| Some(v.format))
            .map_err(|e| MigrationError::BadVersion { path: p, message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&p, e)),
    }
}

fn write_version(dir: &Path, format: u32) -> Result<(), MigrationError> {
    let p = dir.join(VERSION_FILE);
    let tmp = dir.join("VERSION.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&VersionFile { format }).expect("serializes")).map_err(|e| io(&tmp, e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))
}

/// Open (creating if absent or empty) a data directory and bring it to [`CURRENT_FORMAT`].
/// Returns the format the directory had before.
pub fn open(dir: &Path) -> Result<u32, MigrationError> {
    upgrade_with(dir, MIGRATIONS, CURRENT_FORMAT)
}

/// [`open`] with an explicit list of steps (tests use their own).
pub fn upgrade_with(dir: &Path, steps: &[Migration], target: u32) -> Result<u32, MigrationError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let found = match read_version(dir)? {
        Some(v) => v,
        None => {
            let empty = std::fs::read_dir(dir).map_err(|e| io(dir, e))?.next().is_none();
            if !empty {
                return Err(MigrationError::NotADataDir { path: dir.to_path_buf() });
            }
            write_version(dir, target)?;
            return Ok(target);
        }
    };
    if found > target {
        return Err(MigrationError::FutureVersion { path: dir.to_path_buf(), found, supported: target });
    }
    let mut v = found;
    while v < target {
        let step =
            steps.iter().find(|s| s.from == v).ok_or_else(|| MigrationError::MissingStep { path: dir.to_path_buf(), from: v })?;
        tracing::info!(from = v, to = v + 1, name = step.name, "migrating data directory");
        (step.run)(dir).map_err(|source| MigrationError::Step { path: dir.to_path_buf(), name: step.name, source })?;
        v += 1;
        write_version(dir, v)?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_current_format_in_an_empty_dir() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(open(d.path()).unwrap(), CURRENT_FORMAT);
        assert_eq!(read_version(d.path()).unwrap(), Some(CURRENT_FORMAT));
    }

    #[test]
    fn refuses_a_future_format_with_a_clear_message() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(VERSION_FILE), br#"{"format": 99}"#).unwrap();
        let e = open(d.path()).unwrap_err().to_string();
        assert!(e.contains("format 99 is newer") && e.contains("upgrade vitrine"), "{e}");
    }

    #[test]
    fn a_future_format_is_refused_before_any_step_runs_and_left_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(VERSION_FILE), br#"{"format": 5}"#).unwrap();
        let steps = [Migration { from: 1, name: "marker", run: add_marker }];
        match upgrade_with(d.path(), &steps, 2) {
            Err(MigrationError::FutureVersion { path, found: 5, supported: 2 }) => assert_eq!(path, d.path()),
            other => panic!("expected FutureVersion, got {other:?}"),
        }
        let e = upgrade_with(d.path(), &steps, 2).unwrap_err().to_string();
        assert!(e.starts_with(&d.path().display().to_string()), "the message names the directory: {e}");
        assert!(e.contains("format 5 is newer than this vitrine understands (up to 2); upgrade vitrine"), "{e}");
        assert!(!d.path().join("marker").exists(), "no step ran");
        assert_eq!(read_version(d.path()).unwrap(), Some(5), "VERSION is untouched");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "nothing was written beside it");
    }

    #[test]
    fn an_unreadable_version_file_is_refused_with_its_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(VERSION_FILE), b"format=2").unwrap();
        let e = open(d.path()).unwrap_err();
        assert!(matches!(e, MigrationError::BadVersion { .. }), "{e:?}");
        assert!(e.to_string().contains(&d.path().join(VERSION_FILE).display().to_string()), "{e}");
    }

    #[test]
    fn refuses_a_foreign_non_empty_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("something"), b"x").unwrap();
        assert!(matches!(open(d.path()), Err(MigrationError::NotADataDir { .. })));
    }

    fn add_marker(dir: &Path) -> Result<(), StepError> {
        Ok(std::fs::write(dir.join("marker"), b"2")?)
    }
    fn fail(_: &Path) -> Result<(), StepError> {
        Err("boom".into())
    }

    #[test]
    fn runs_steps_in_order_and_records_each() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(VERSION_FILE), br#"{"format": 1}"#).unwrap();
        let steps = [Migration { from: 1, name: "marker", run: add_marker }, Migration { from: 2, name: "fail", run: fail }];
        let e = upgrade_with(d.path(), &steps, 3).unwrap_err();
        assert!(e.to_string().contains("migration fail failed: boom"));
        assert_eq!(read_version(d.path()).unwrap(), Some(2), "the finished step is recorded");
        assert!(d.path().join("marker").exists());
        assert_eq!(upgrade_with(d.path(), &steps[..1], 2).unwrap(), 2);
    }
}
