//! Snapshots: a consistent copy of a data directory, taken while it is served, and its restore.
//!
//! ```text
//! OUT/SNAPSHOT.json        what the snapshot holds (SnapshotInfo)
//! OUT/VERSION              the data format
//! OUT/CURRENT              the generation's name
//! OUT/generations/gen-N/   the live generation
//! OUT/<store>/             the store, copied record by record into a fresh sled database
//! OUT/media/               content-addressed media, when the directory has some
//! OUT/relevance.json        the tuned relevance defaults, when `vitrine tune` saved some
//! ```
//!
//! Consistency: only the holder of the data directory's writer takes a snapshot. It first makes
//! the live generation hold every store change ([`Indexer::sync`]) and then copies; no write can
//! come in between, so the copied store and the copied generation hold the same products. Readers
//! are never stopped. The copy is written under a temporary name and renamed into place once
//! complete and fsynced, so a crash never leaves a snapshot that looks whole.
//!
//! Restore reads and validates a snapshot (sizes, names, VERSION, manifest) before it writes
//! anything, copies it beside the target's contents and checks the copy (the store's count and
//! model against the manifest, and the generation opens) before it replaces anything. The restored
//! generation is numbered past every number the target ever used, and its segments are renamed to
//! match, so a searcher still serving the target never sees its generation go back.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vitrine_core::CoreError;
use vitrine_store::generation::{self, Generation, Manifest, SegmentCache};
use vitrine_store::lock::LOCK_FILE;
use vitrine_store::store::Store;

use crate::{lock_dir, same_model, IndexError, IndexOptions, Indexer, Result, RESTORING_FILE};

pub const SNAPSHOT_FILE: &str = "SNAPSHOT.json";
pub const MEDIA_DIR: &str = "media";
/// Small files of a snapshot are read only up to these sizes: a snapshot may come from anywhere.
const MAX_SMALL_FILE: u64 = 64 << 10;
const MAX_MANIFEST: u64 = 4 << 20;
/// The relevance settings file, at most (the searcher refuses larger ones too).
const MAX_RELEVANCE_FILE: u64 = 1 << 20;

/// What a snapshot holds.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    pub created_at: u64,
    /// The data format (`VERSION`) of the copy.
    pub format: u32,
    pub generation: u64,
    pub store: String,
    pub products: u64,
    /// Store records copied: products, vectors, counters, jobs.
    pub records: u64,
    /// Bytes of generation and media files copied (the store's size is sled's affair).
    pub bytes: u64,
    pub media: bool,
}

fn io(path: &Path, e: std::io::Error) -> IndexError {
    CoreError::io(path.display().to_string(), e).into()
}

fn invalid(msg: String) -> IndexError {
    IndexError::Invalid(msg)
}

/// Read a small file whole, refusing one over `max` bytes.
fn read_small(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut bytes = vec![];
    f.take(max + 1).read_to_end(&mut bytes).map_err(|e| io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(invalid(format!("{}: larger than {max} bytes", path.display())));
    }
    Ok(bytes)
}

/// A folder name we wrote ourselves: `prefix` and then letters, digits and dashes.
fn plain_name(name: &str, prefix: &str) -> bool {
    name.len() <= 64 && name.strip_prefix(prefix).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

fn valid_store_name(name: &str) -> bool {
    name == generation::DEFAULT_STORE || plain_name(name, "store-")
}

/// `p` made absolute with symlinks resolved as far as it exists.
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolved(parent).join(name),
        _ => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
    }
}

/// Refuse two folders of which one holds the other: a copy would copy itself, a restore with
/// `--force` would delete its own source.
fn refuse_nested(a: &Path, b: &Path) -> Result<()> {
    let (ra, rb) = (resolved(a), resolved(b));
    if ra.starts_with(&rb) || rb.starts_with(&ra) {
        return Err(invalid(format!("{} and {} must not be inside one another", a.display(), b.display())));
    }
    Ok(())
}

/// Entries of `dir` other than the lock file; empty when `dir` does not exist.
fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().filter(|e| e.file_name() != LOCK_FILE).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(io(dir, e)),
    }
}

fn remove_entry(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io(path, e))?;
    let removed = if meta.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    removed.map_err(|e| io(path, e))
}

/// Write a consistent snapshot of `ix`'s data directory into `out`, a new (or empty) folder.
/// The caller holds the writer (the service passes the one it already has), so it may be serving.
pub fn create(ix: &Indexer, out: &Path) -> Result<SnapshotInfo> {
    let data = ix.data_dir();
    if !entries(out)?.is_empty() || out.join(LOCK_FILE).exists() {
        return Err(invalid(format!("{} exists and is not empty: snapshot into a new folder", out.display())));
    }
    refuse_nested(data, out)?;
    let Some((_, store_name)) = ix.products().embedded() else {
        return Err(invalid(
            "the engine backend keeps the catalog in the engine: back it up with the engine's own backup (docs/SCALING.md)"
                .into(),
        ));
    };
    // Every store change goes into the live generation first: then the two agree.
    ix.sync()?;
    let (gen_dir, manifest) =
        generation::current(data)?.ok_or_else(|| invalid(format!("{} has no index to snapshot", data.display())))?;
    if manifest.store != store_name {
        return Err(invalid(format!("the live generation reads {}, the writer {}", manifest.store, store_name)));
    }
    let name = out.file_name().ok_or_else(|| invalid(format!("{}: not a folder name", out.display())))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
    let staging = parent.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    if staging.exists() {
        remove_entry(&staging)?;
    }
    let made = write_snapshot(ix, &gen_dir, &manifest, &staging).and_then(|info| {
        if out.exists() {
            std::fs::remove_dir(out).map_err(|e| io(out, e))?;
        }
        std::fs::rename(&staging, out).map_err(|e| io(out, e))?;
        generation::sync_dir(&parent)?;
        Ok(info)
    });
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let info = made?;
    tracing::info!(out = %out.display(), generation = info.generation, products = info.products, "snapshot written");
    Ok(info)
}

fn write_snapshot(ix: &Indexer, gen_dir: &Path, manifest: &Manifest, staging: &Path) -> Result<SnapshotInfo> {
    let data = ix.data_dir();
    let (store, store_name) =
        ix.products().embedded().ok_or_else(|| invalid("the engine backend has no store to copy".into()))?;
    std::fs::create_dir_all(staging).map_err(|e| io(staging, e))?;
    let format = vitrine_migrations::read_version(data)?.ok_or_else(|| invalid(format!("{}: no VERSION", data.display())))?;
    let version = data.join(vitrine_migrations::VERSION_FILE);
    std::fs::copy(&version, staging.join(vitrine_migrations::VERSION_FILE)).map_err(|e| io(&version, e))?;
    let records = store.copy_to(&staging.join(store_name))?;
    let gen_name = generation::dir_name(manifest.generation);
    let mut bytes = generation::copy_tree(gen_dir, &staging.join(generation::GENERATIONS_DIR).join(&gen_name), false)?;
    std::fs::write(staging.join(generation::CURRENT_FILE), &gen_name).map_err(|e| io(staging, e))?;
    let media = data.join(MEDIA_DIR).is_dir();
    if media {
        bytes += generation::copy_tree(&data.join(MEDIA_DIR), &staging.join(MEDIA_DIR), false)?;
    }
    // The tuned relevance defaults, as they are (the searcher validates them when it reads them).
    let relevance = data.join(generation::RELEVANCE_FILE);
    if relevance.is_file() {
        bytes += std::fs::copy(&relevance, staging.join(generation::RELEVANCE_FILE)).map_err(|e| io(&relevance, e))?;
    }
    let info = SnapshotInfo {
        created_at: generation::now_secs(),
        format,
        generation: manifest.generation,
        store: store_name.to_string(),
        products: manifest.products,
        records,
        bytes,
        media,
    };
    let json = serde_json::to_vec_pretty(&info).expect("snapshot info serializes");
    std::fs::write(staging.join(SNAPSHOT_FILE), json).map_err(|e| io(staging, e))?;
    generation::sync_tree(staging)?;
    Ok(info)
}

/// For the command line: take the writer of `data` (waiting up to `opts.lock_wait`), then
/// [`create`].
pub fn create_locked(data: &Path, out: &Path, opts: IndexOptions) -> Result<SnapshotInfo> {
    if vitrine_migrations::read_version(data)?.is_none() {
        return Err(invalid(format!("{} is not a Vitrine data directory", data.display())));
    }
    let ix = Indexer::open_without_model(data, opts)?;
    create(&ix, out)
}

/// A snapshot's description (its `SNAPSHOT.json`), read with the same size bound as [`validate`].
pub fn read_info(snapshot: &Path) -> Result<SnapshotInfo> {
    let path = snapshot.join(SNAPSHOT_FILE);
    serde_json::from_slice(&read_small(&path, MAX_SMALL_FILE)?).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// Check a snapshot without writing anything: its description, format, names and manifest.
pub fn validate(snapshot: &Path) -> Result<(SnapshotInfo, Manifest)> {
    let bad = |why: String| invalid(format!("{} is not a usable snapshot: {why}", snapshot.display()));
    if !snapshot.is_dir() {
        return Err(bad("not a folder".into()));
    }
    let info = read_info(snapshot).map_err(|e| bad(e.to_string()))?;
    read_small(&snapshot.join(vitrine_migrations::VERSION_FILE), MAX_SMALL_FILE)?;
    let format = vitrine_migrations::read_version(snapshot)?.ok_or_else(|| bad("no VERSION".into()))?;
    if format > vitrine_migrations::CURRENT_FORMAT {
        return Err(bad(format!(
            "data format {format} is newer than this vitrine understands (up to {})",
            vitrine_migrations::CURRENT_FORMAT
        )));
    }
    if format != info.format {
        return Err(bad(format!("VERSION says format {format}, {SNAPSHOT_FILE} says {}", info.format)));
    }
    read_small(&snapshot.join(generation::CURRENT_FILE), MAX_SMALL_FILE)?;
    let gen_name = generation::dir_name(info.generation);
    let gen_dir = snapshot.join(generation::GENERATIONS_DIR).join(&gen_name);
    read_small(&gen_dir.join(generation::MANIFEST_FILE), MAX_MANIFEST)?;
    let (dir, manifest) = generation::current(snapshot)?.ok_or_else(|| bad("no CURRENT".into()))?;
    if dir != gen_dir || manifest.generation != info.generation {
        return Err(bad(format!("CURRENT does not name generation {}", info.generation)));
    }
    if manifest.store != info.store || !valid_store_name(&manifest.store) {
        return Err(bad(format!("store name {:?}", manifest.store)));
    }
    if manifest.products != info.products {
        return Err(bad(format!("{} products in the manifest, {} in {SNAPSHOT_FILE}", manifest.products, info.products)));
    }
    for s in &manifest.segments {
        if !plain_name(s, "seg-") || !gen_dir.join("segments").join(s).is_dir() {
            return Err(bad(format!("segment {s:?}")));
        }
    }
    if !gen_dir.join("keyword").is_dir() || !snapshot.join(&manifest.store).is_dir() {
        return Err(bad("the keyword index or the store is missing".into()));
    }
    Ok((info, manifest))
}

/// Restore `snapshot` into `data`: a new or empty folder, or with `force` a Vitrine data directory
/// whose contents it replaces. Takes the write lock of `data` (waiting up to `wait`) for the
/// whole restore. Returns the snapshot's description with the generation number given here.
pub fn restore(snapshot: &Path, data: &Path, force: bool, wait: Duration) -> Result<SnapshotInfo> {
    let (mut info, mut manifest) = validate(snapshot)?;
    refuse_nested(snapshot, data)?;
    if !entries(data)?.is_empty() {
        if vitrine_migrations::read_version(data)?.is_none() {
            return Err(invalid(format!("{} is not a Vitrine data directory: refusing to replace its files", data.display())));
        }
        if !force {
            return Err(invalid(format!(
                "{} is not empty: restore into an empty folder, or add --force to replace its contents",
                data.display()
            )));
        }
    }
    let _lock = lock_dir(data, wait)?;
    let high = generation::high_water(data)?;
    let number = if high >= manifest.generation { high + 1 } else { manifest.generation };
    for e in entries(data)? {
        if e.file_name().to_string_lossy().starts_with(".restore-") {
            remove_entry(&e.path())?;
        }
    }
    let staging = data.join(format!(".restore-{}", std::process::id()));
    let gen_tmp = staging.join("generation");
    info.bytes = match copy_and_check(snapshot, &staging, &gen_tmp, &info, &manifest) {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };

    // Read before anything changes: a bad file must refuse the restore, not break it halfway.
    let relevance_path = snapshot.join(generation::RELEVANCE_FILE);
    let relevance = if relevance_path.is_file() { Some(read_small(&relevance_path, MAX_RELEVANCE_FILE)?) } else { None };
    // From here on the target changes; a crash leaves the marker, and writers refuse to open.
    generation::atomic_write(&data.join(RESTORING_FILE), b"")?;
    let current = data.join(generation::CURRENT_FILE);
    if current.exists() {
        std::fs::remove_file(&current).map_err(|e| io(&current, e))?;
        generation::sync_dir(data)?;
    }
    let keep = [RESTORING_FILE, vitrine_migrations::VERSION_FILE];
    for e in entries(data)? {
        let name = e.file_name();
        if e.path() != staging && !keep.iter().any(|k| name == *k) {
            remove_entry(&e.path())?;
        }
    }
    for name in [manifest.store.as_str(), MEDIA_DIR] {
        let from = staging.join(name);
        if from.exists() {
            std::fs::rename(&from, data.join(name)).map_err(|e| io(&from, e))?;
        }
    }
    let version = read_small(&snapshot.join(vitrine_migrations::VERSION_FILE), MAX_SMALL_FILE)?;
    generation::atomic_write(&data.join(vitrine_migrations::VERSION_FILE), &version)?;
    if let Some(bytes) = &relevance {
        generation::atomic_write(&data.join(generation::RELEVANCE_FILE), bytes)?;
    }
    if number != manifest.generation {
        // Segment names carry the generation that wrote them, and readers share loaded segments
        // by name: give the restored ones names the target never used.
        let mut renamed = vec![];
        for (i, s) in manifest.segments.iter().enumerate() {
            let new = format!("seg-{number:08}-{i}");
            let segs = gen_tmp.join("segments");
            std::fs::rename(segs.join(s), segs.join(&new)).map_err(|e| io(&segs, e))?;
            renamed.push(new);
        }
        manifest.segments = renamed;
        manifest.generation = number;
    }
    let gens = data.join(generation::GENERATIONS_DIR);
    std::fs::create_dir_all(&gens).map_err(|e| io(&gens, e))?;
    generation::publish(data, &gen_tmp, &manifest)?;
    std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    std::fs::remove_file(data.join(RESTORING_FILE)).map_err(|e| io(data, e))?;
    generation::sync_dir(data)?;
    info.generation = number;
    tracing::info!(data = %data.display(), generation = number, products = info.products, "snapshot restored");
    Ok(info)
}

/// Copy the snapshot's store, generation and media into `staging` and check that the copy opens
/// and agrees with the manifest. Returns the bytes copied.
fn copy_and_check(snapshot: &Path, staging: &Path, gen_tmp: &Path, info: &SnapshotInfo, manifest: &Manifest) -> Result<u64> {
    std::fs::create_dir_all(staging).map_err(|e| io(staging, e))?;
    let mut bytes = generation::copy_tree(&snapshot.join(&manifest.store), &staging.join(&manifest.store), false)?;
    let gen_dir = snapshot.join(generation::GENERATIONS_DIR).join(generation::dir_name(info.generation));
    bytes += generation::copy_tree(&gen_dir, gen_tmp, false)?;
    if snapshot.join(MEDIA_DIR).is_dir() {
        bytes += generation::copy_tree(&snapshot.join(MEDIA_DIR), &staging.join(MEDIA_DIR), false)?;
    }
    {
        let store = Store::open(&staging.join(&manifest.store))?;
        let count = store.product_count() as u64;
        if count != manifest.products {
            return Err(invalid(format!("the snapshot's store holds {count} products, its generation {}", manifest.products)));
        }
        match store.model()? {
            Some(m) if same_model(&m, &manifest.model) => {}
            _ => return Err(invalid("the snapshot's store and generation disagree on the model".into())),
        }
    }
    let g = Generation::open(gen_tmp.to_path_buf(), manifest.clone(), &mut SegmentCache::new(), 16)?;
    if g.searcher.num_docs() != manifest.products {
        return Err(invalid(format!("the snapshot's keyword index holds {} products", g.searcher.num_docs())));
    }
    drop(g);
    // The generation is published from the staging folder: `publish` fsyncs it then.
    Ok(bytes)
}
