//! Writing generations: the change log since the live generation becomes the next one.
//!
//! Durability order, so that a crash at any instant leaves `CURRENT` on a complete generation
//! whose content is all on disk: store flush → every file and folder of the new generation
//! (manifest included) fsynced → rename into place → `generations/` fsynced → `CURRENT` written by
//! atomic rename (file and data folder fsynced) → change log trimmed → old generations collected.

use std::collections::HashMap;
use std::path::Path;

use tantivy::{TantivyDocument, Term};

use super::{atomic_write, CURRENT_FILE, GENERATIONS_DIR, MANIFEST_FILE};
use super::{
    copy_tree, current, dir_name, high_water, idx_err, io, live_docs, now_secs, open_keyword, sync_dir, sync_tree, Manifest,
};
use crate::keyword::KeywordFields;
use crate::store::Store;
use crate::vectors::{write_index, HnswParams, PointRef, VectorIndex};
use vitrine_core::error::Result;
use vitrine_core::ModelId;

/// Generations kept besides the live one, for readers that still hold them.
const KEEP_GENERATIONS: u64 = 3;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Rebuild every derived index from the store.
    pub full: bool,
    pub hnsw: HnswParams,
    /// Merge when tombstones exceed this share of all points.
    pub tombstone_ratio: f64,
    pub max_segments: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { full: false, hnsw: HnswParams::default(), tombstone_ratio: 0.2, max_segments: 8 }
    }
}

/// What one build did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub generation: u64,
    pub changed: usize,
    pub merged: bool,
}

/// Build the next generation from the store's changes and make it current.
/// Returns `None` when the current generation already has every change.
///
/// The caller holds the data directory's [`WriteLock`](crate::lock::WriteLock): two builders at
/// once would race for the same number and collect each other's folders.
pub fn build_next(
    data: &Path,
    store: &Store,
    store_name: &str,
    model: &ModelId,
    opts: &BuildOptions,
) -> Result<Option<BuildReport>> {
    // A generation must never hold a write that the store could still lose in a crash.
    store.flush()?;
    let gens = data.join(GENERATIONS_DIR);
    std::fs::create_dir_all(&gens).map_err(|e| io(&gens, e))?;
    // A previous generation that cannot be read, or of another store or model, is rebuilt from
    // the store.
    let prev = match current(data) {
        Ok(p) => p.filter(|(dir, m)| {
            dir.join("keyword").is_dir() && m.model.content_hash == model.content_hash && m.store == store_name
        }),
        Err(e) => {
            tracing::warn!("current generation unreadable ({e}); rebuilding from the store");
            None
        }
    };
    let from_seq = prev.as_ref().map(|(_, m)| m.applied_seq).unwrap_or(0);
    let (mut changed, last_seq) = store.changes_since(from_seq)?;
    if prev.is_some() && changed.is_empty() && !opts.full {
        return Ok(None);
    }
    let generation = high_water(data)? + 1;
    let applied_seq = last_seq.max(from_seq);
    let fields = KeywordFields::new();
    let tmp = gens.join(format!(".tmp-{generation:08}"));
    let name = dir_name(generation);
    let final_dir = gens.join(&name);
    if final_dir.exists() {
        // Unreachable while numbers come from `high_water`; never overwrite what a reader may hold.
        return Err(idx_err(&final_dir, "already exists; refusing to overwrite a generation"));
    }
    std::fs::create_dir_all(tmp.join("segments")).map_err(|e| io(&tmp, e))?;

    // Decide between an incremental step and a full merge.
    let mut full = opts.full || prev.is_none();
    // Segments folded into this build's new segment (a tiered merge), instead of a full one.
    let mut fold: Vec<String> = vec![];
    let mut old_live = 0u64;
    let mut old_counts: HashMap<String, u64> = HashMap::new();
    if let Some((pdir, pm)) = &prev {
        if !full {
            let index = open_keyword(&pdir.join("keyword"), &fields, false)?;
            let searcher = manual_reader(&index).map_err(|e| idx_err(pdir, e))?.searcher();
            for id in &changed {
                if let Some(sp) = super::stored_in_keyword(&searcher, &fields, id)? {
                    old_counts.insert(id.clone(), u64::from(sp.image_vectors) + u64::from(sp.has_text_vector));
                }
            }
            old_live = pm.live_points.saturating_sub(old_counts.values().sum::<u64>());
            let dead_after = pm.points() - old_live;
            let ratio = dead_after as f64 / (pm.points().max(1)) as f64;
            if ratio > opts.tombstone_ratio {
                tracing::info!(ratio, segments = pm.segments.len(), "merging vector segments (tombstones)");
                full = true;
            } else if pm.segments.len() + 1 > opts.max_segments {
                match small_segments(pdir, pm)? {
                    Some(small) => {
                        tracing::info!(segments = pm.segments.len(), merged = small.len(), "merging the small vector segments");
                        fold = small;
                    }
                    None => {
                        tracing::info!(segments = pm.segments.len(), "merging vector segments (no dominant segment)");
                        full = true;
                    }
                }
            }
        }
    }
    if full {
        changed = store.ids().collect::<Result<_>>()?;
        old_live = 0;
    }

    // Keyword index.
    let kw_dir = tmp.join("keyword");
    let index = match (&prev, full) {
        (Some((pdir, _)), false) => {
            copy_tree(&pdir.join("keyword"), &kw_dir, true)?;
            open_keyword(&kw_dir, &fields, false)?
        }
        _ => open_keyword(&kw_dir, &fields, true)?,
    };
    let mut writer: tantivy::IndexWriter<TantivyDocument> =
        index.writer_with_num_threads(1, 64 << 20).map_err(|e| idx_err(&kw_dir, e))?;

    let mut image_points: Vec<(PointRef, Vec<f32>)> = vec![];
    let mut text_points: Vec<(PointRef, Vec<f32>)> = vec![];
    let mut new_live = 0u64;
    for id in &changed {
        writer.delete_term(Term::from_field_text(fields.id, id));
        let Some(sp) = store.get(id)? else { continue };
        writer.add_document(fields.document(&sp)).map_err(|e| idx_err(&kw_dir, e))?;
        let pr = PointRef { ord: sp.ord, version: sp.version };
        for v in store.image_vectors(&sp)? {
            image_points.push((pr, v));
        }
        if let Some(v) = store.text_vector(&sp)? {
            text_points.push((pr, v));
        }
        new_live += u64::from(sp.image_vectors) + u64::from(sp.has_text_vector);
    }
    writer.commit().map_err(|e| idx_err(&kw_dir, e))?;
    writer.wait_merging_threads().map_err(|e| idx_err(&kw_dir, e))?;
    let products = manual_reader(&index).map_err(|e| idx_err(&kw_dir, e))?.searcher().num_docs();

    // Vector segments.
    let mut segments = vec![];
    let (mut n_image, mut n_text) = (0u64, 0u64);
    if let (Some((pdir, pm)), false) = (&prev, full) {
        for s in pm.segments.iter().filter(|s| !fold.contains(s)) {
            copy_tree(&pdir.join("segments").join(s), &tmp.join("segments").join(s), true)?;
            segments.push(s.clone());
        }
        n_image = pm.image_points;
        n_text = pm.text_points;
        if !fold.is_empty() {
            // The live points of the folded segments join this build's new segment; their dead
            // points (older versions, deleted products) are dropped.
            let mut live = HashMap::new();
            let searcher = manual_reader(&index).map_err(|e| idx_err(&kw_dir, e))?.searcher();
            live_docs(&searcher, &kw_dir, |o, v, _| {
                live.insert(o, v);
            })?;
            let alive = |p: &PointRef| live.get(&p.ord) == Some(&p.version);
            for s in &fold {
                let sdir = pdir.join("segments").join(s);
                for (channel, points, total) in
                    [("image", &mut image_points, &mut n_image), ("text", &mut text_points, &mut n_text)]
                {
                    let old = VectorIndex::open(&sdir.join(channel), model.dim, opts.hnsw.ef_search)?;
                    *total -= old.len() as u64;
                    points.extend(
                        (0..old.len()).filter(|&i| alive(&old.points[i])).map(|i| (old.points[i], old.vector(i).to_vec())),
                    );
                }
            }
        }
    }
    if !image_points.is_empty() || !text_points.is_empty() {
        // Named after a generation number, which never repeats: readers share segments by name.
        let seg = format!("seg-{generation:08}");
        let sdir = tmp.join("segments").join(&seg);
        write_index(&sdir.join("image"), model.dim, &image_points, opts.hnsw)?;
        write_index(&sdir.join("text"), model.dim, &text_points, opts.hnsw)?;
        n_image += image_points.len() as u64;
        n_text += text_points.len() as u64;
        segments.push(seg);
    }

    let manifest = Manifest {
        generation,
        applied_seq,
        created_at: now_secs(),
        model: model.clone(),
        store: store_name.to_string(),
        segments,
        products,
        image_points: n_image,
        text_points: n_text,
        live_points: old_live + new_live,
    };
    publish(data, &tmp, &manifest)?;
    store.trim_changes(applied_seq)?;
    collect_garbage(&gens, generation);
    tracing::debug!(generation, changed = changed.len(), full, "generation built");
    Ok(Some(BuildReport { generation, changed: changed.len(), merged: full || !fold.is_empty() }))
}

/// A tiered merge: when one segment holds at least half of the points, the others are folded
/// into the next build's segment and it is kept as it is, so a stream of small writes rebuilds
/// the graph of the small segments only. `None` when no segment dominates: then a full merge.
/// Sizes come from the vector files' lengths, without reading them.
fn small_segments(pdir: &Path, pm: &Manifest) -> Result<Option<Vec<String>>> {
    let mut sizes = vec![];
    for s in &pm.segments {
        let mut bytes = 0u64;
        for channel in ["image", "text"] {
            let f = pdir.join("segments").join(s).join(channel).join("vectors.f32");
            bytes += std::fs::metadata(&f).map_err(|e| io(&f, e))?.len();
        }
        sizes.push((bytes, s));
    }
    let total: u64 = sizes.iter().map(|(b, _)| b).sum();
    let Some(&(largest, big)) = sizes.iter().max() else { return Ok(None) };
    if largest * 2 < total {
        return Ok(None);
    }
    Ok(Some(pm.segments.iter().filter(|s| *s != big).cloned().collect()))
}

/// Write `manifest` into the finished folder `tmp`, make all of it durable, rename it to its
/// generation's name and point `CURRENT` at it. Also used to install a restored generation.
pub fn publish(data: &Path, tmp: &Path, manifest: &Manifest) -> Result<()> {
    let gens = data.join(GENERATIONS_DIR);
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| idx_err(tmp, e))?;
    std::fs::write(tmp.join(MANIFEST_FILE), bytes).map_err(|e| io(tmp, e))?;
    sync_tree(tmp)?;
    let name = dir_name(manifest.generation);
    let final_dir = gens.join(&name);
    if final_dir.exists() {
        return Err(idx_err(&final_dir, "already exists; refusing to overwrite a generation"));
    }
    std::fs::rename(tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    sync_dir(&gens)?;
    atomic_write(&data.join(CURRENT_FILE), name.as_bytes())
}

/// Remove generations older than the last few, and temporary folders of interrupted builds (the
/// caller holds the lock, so no other build is under way).
fn collect_garbage(gens: &Path, current: u64) {
    let Ok(rd) = std::fs::read_dir(gens) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = match name.strip_prefix("gen-").and_then(|n| n.parse::<u64>().ok()) {
            Some(g) => g + KEEP_GENERATIONS <= current,
            None => name.starts_with(".tmp-"),
        };
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A reader that never reloads by itself. tantivy's default policy watches `meta.json` from a
/// thread; on a `.tmp-N` build folder that is renamed into place, the watcher then warned at every
/// start that the file was gone.
fn manual_reader(index: &tantivy::Index) -> tantivy::Result<tantivy::IndexReader> {
    index.reader_builder().reload_policy(tantivy::ReloadPolicy::Manual).try_into()
}
