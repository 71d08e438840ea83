//! Index generations: immutable, self-contained snapshots of the derived indexes.
//!
//! ```text
//! DATA/CURRENT                       name of the live generation (replaced by atomic rename)
//! DATA/generations/gen-00000007/
//!     manifest.json                  what this generation holds (Manifest)
//!     keyword/                       tantivy index
//!     segments/seg-00000005/{image,text}/   vector indexes (hard links to earlier generations)
//!     segments/seg-00000007/{image,text}/   points changed since the previous generation
//! ```
//!
//! The [`builder`] writes generations (only the holder of the data directory's
//! [`WriteLock`](crate::lock::WriteLock) calls it); the [`reader`] opens them.
//!
//! A build starts from the previous generation: it hard-links its files into a temporary folder,
//! applies the store's change log since `applied_seq` (a new small vector segment; delete + add
//! in tantivy, which never rewrites a file in place), renames the folder into place and then
//! swaps `CURRENT`. Readers hold whole generations, so they never see a half-written index. A
//! crash at any point leaves `CURRENT` on a complete generation, and the next build re-applies
//! the change log from that generation's `applied_seq`: the store (sled) is the truth, and a
//! generation is only ever a function of it.
//!
//! Generation numbers never repeat and never go back, whatever the store or the model: the next
//! number is one past every `gen-*` and `.tmp-*` folder and the live manifest. A reader can
//! therefore refuse any generation numbered below the one it holds, and loaded vector segments
//! can be shared by name.
//!
//! Old points of updated or deleted products stay in their segments as tombstones (their version
//! no longer matches the live map); when they pass `tombstone_ratio` of all points, or there are
//! too many segments, the build merges everything into one fresh segment from stored vectors.

mod builder;
mod reader;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use tantivy::Index;

use crate::keyword::KeywordFields;
use vitrine_core::error::{CoreError, Result};
use vitrine_core::ModelId;

pub use builder::{build_next, publish, BuildOptions, BuildReport};
pub use reader::{doc_product, stored_in_keyword, Generation, SegmentCache};

pub const CURRENT_FILE: &str = "CURRENT";
/// The relevance defaults `vitrine tune` saved (read and written by `vitrine_searcher::relevance`;
/// named here, with the rest of the data directory's layout, so snapshots can copy it).
pub const RELEVANCE_FILE: &str = "relevance.json";
pub const GENERATIONS_DIR: &str = "generations";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The store folder of a data directory that was never reindexed.
pub const DEFAULT_STORE: &str = "store";

/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub generation: u64,
    /// Every store change up to this sequence number is in this generation.
    pub applied_seq: u64,
    pub created_at: u64,
    pub model: ModelId,
    /// The store folder (under the data directory) this generation was built from.
    #[serde(default = "default_store")]
    pub store: String,
    pub segments: Vec<String>,
    pub products: u64,
    pub image_points: u64,
    pub text_points: u64,
    /// Points whose product version is still current.
    pub live_points: u64,
}

fn default_store() -> String {
    DEFAULT_STORE.into()
}

impl Manifest {
    pub fn points(&self) -> u64 {
        self.image_points + self.text_points
    }
    pub fn tombstones(&self) -> u64 {
        self.points().saturating_sub(self.live_points)
    }
}

fn io(ctx: &Path, e: std::io::Error) -> CoreError {
    CoreError::io(ctx.display().to_string(), e)
}

fn idx_err(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Index { path: path.to_path_buf(), message: e.to_string() }
}

fn open_keyword(dir: &Path, fields: &KeywordFields, create: bool) -> Result<Index> {
    if create {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        Index::create_in_dir(dir, fields.schema.clone()).map_err(|e| idx_err(dir, e))
    } else {
        Index::open_in_dir(dir).map_err(|e| idx_err(dir, e))
    }
}

/// Every live product of a keyword index, as `(ord, version, address)`: what "this point is the
/// current version of a product" means, read from the `ord`/`version` fast fields. Readers build
/// their live map from it, and a tiered merge keeps the points it names.
fn live_docs(searcher: &tantivy::Searcher, dir: &Path, mut f: impl FnMut(u64, u64, tantivy::DocAddress)) -> Result<()> {
    for (seg_ord, sr) in searcher.segment_readers().iter().enumerate() {
        let ords = sr.fast_fields().u64("ord").map_err(|e| idx_err(dir, e))?;
        let versions = sr.fast_fields().u64("version").map_err(|e| idx_err(dir, e))?;
        for doc in sr.doc_ids_alive() {
            if let (Some(o), Some(v)) = (ords.first(doc), versions.first(doc)) {
                f(o, v, tantivy::DocAddress::new(seg_ord as u32, doc));
            }
        }
    }
    Ok(())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The folder name of generation `n`.
pub fn dir_name(n: u64) -> String {
    format!("gen-{n:08}")
}

/// The manifest in a generation folder.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let m = std::fs::read(&path).map_err(|e| io(&path, e))?;
    serde_json::from_slice(&m).map_err(|e| idx_err(dir, e))
}

/// The live generation's folder and manifest, if there is one.
pub fn current(data: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let cur = data.join(CURRENT_FILE);
    let name = match std::fs::read_to_string(&cur) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&cur, e)),
    };
    // CURRENT is ours, but a name like `../..` must still never leave the generations folder.
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(idx_err(&cur, format!("names no generation: {name:?}")));
    }
    let dir = data.join(GENERATIONS_DIR).join(&name);
    let manifest = read_manifest(&dir)?;
    Ok(Some((dir, manifest)))
}

/// Every `gen-N` folder under `data`, by number (ascending).
pub fn generation_dirs(data: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let gens = data.join(GENERATIONS_DIR);
    let rd = match std::fs::read_dir(&gens) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(&gens, e)),
    };
    let mut out = vec![];
    for e in rd {
        let e = e.map_err(|e| io(&gens, e))?;
        if let Some(n) = e.file_name().to_str().and_then(|n| n.strip_prefix("gen-")).and_then(|n| n.parse::<u64>().ok()) {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The highest generation number ever used in `data`: every `gen-*` and `.tmp-*` folder, the name
/// in `CURRENT` (its folder may be gone) and the live manifest. 0 for a new directory.
pub fn high_water(data: &Path) -> Result<u64> {
    let mut high = generation_dirs(data)?.last().map(|(n, _)| *n).unwrap_or(0);
    if let Ok(rd) = std::fs::read_dir(data.join(GENERATIONS_DIR)) {
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_str().and_then(|n| n.strip_prefix(".tmp-")).and_then(|n| n.parse::<u64>().ok()) {
                high = high.max(n);
            }
        }
    }
    if let Ok(name) = std::fs::read_to_string(data.join(CURRENT_FILE)) {
        if let Some(n) = name.trim().strip_prefix("gen-").and_then(|n| n.parse::<u64>().ok()) {
            high = high.max(n);
        }
    }
    if let Ok(Some((_, m))) = current(data) {
        high = high.max(m.generation);
    }
    Ok(high)
}

/// The store the live generation was built from; without a readable `CURRENT`, the newest
/// generation that names one; the default store for a new directory.
pub fn live_store(data: &Path) -> Result<String> {
    if let Ok(Some((_, m))) = current(data) {
        return Ok(m.store);
    }
    for (_, dir) in generation_dirs(data)?.iter().rev() {
        if let Ok(m) = read_manifest(dir) {
            return Ok(m.store);
        }
    }
    Ok(DEFAULT_STORE.into())
}

/// Every store some generation folder was built from, or `None` when a manifest cannot be read
/// (then nobody can tell which stores are unreferenced).
pub fn referenced_stores(data: &Path) -> Result<Option<HashSet<String>>> {
    let mut stores = HashSet::new();
    for (_, dir) in generation_dirs(data)? {
        match read_manifest(&dir) {
            Ok(m) => stores.insert(m.store),
            Err(_) => return Ok(None),
        };
    }
    Ok(Some(stores))
}

/// Write `bytes` to `path` so that readers see the old or the new content, never a mix, and the
/// new content survives a power cut once this returns.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Make a folder's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// fsync every file and folder under `dir` (and `dir` itself), so that a rename of `dir` that
/// follows publishes only durable content. Hard-linked files are clean already and cost little.
pub fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        if entry.file_type().map_err(|e| io(&path, e))?.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| io(&path, e))?;
        }
    }
    sync_dir(dir)
}

/// Copy every file under `src` into `dst` (created; recursively), skipping tantivy's lock files
/// and anything that is neither a file nor a folder. With `link`, hard links where the file system
/// allows (generation files are never rewritten in place, so sharing them is safe).
pub fn copy_tree(src: &Path, dst: &Path, link: bool) -> Result<u64> {
    std::fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(src).map_err(|e| io(src, e))? {
        let entry = entry.map_err(|e| io(src, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let kind = entry.file_type().map_err(|e| io(&from, e))?;
        if kind.is_dir() {
            bytes += copy_tree(&from, &to, link)?;
        } else if kind.is_file() {
            if !(link && std::fs::hard_link(&from, &to).is_ok()) {
                std::fs::copy(&from, &to).map_err(|e| io(&to, e))?;
            }
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
