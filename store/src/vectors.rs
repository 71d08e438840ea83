//! Vector indexes: one immutable set of points per channel (image or text) per segment.
//!
//! A point is an embedding of one product version: `(ord, version)`. Whether it is alive is decided
//! by the reader's live map (`ord → current version`), so updates and deletes never touch an
//! immutable file: an old point just stops matching (a tombstone by version).
//!
//! Small indexes are searched exactly (a flat scan is both exact and faster below a few thousand
//! points); larger ones get an HNSW graph, built by [`HnswBuilder`] (`hnsw.rs`, dot product on
//! unit vectors), saved as `graph.bin` and searched as a [`FlatGraph`] (see `graph.rs` for why).
//! Only the graph's 8-bit codes and links are held in memory; `vectors.f32` is mapped
//! (`vecfile.rs`), and exact scoring of a filtered subset, the rescoring of a graph search's
//! candidates and more-like-this read the vectors they need from it.
//!
//! Files (`# Persisted: changing this needs a migration`): `points.bin` (per point: ord u64 LE,
//! version u64 LE), `vectors.f32` (n × dim f32 LE), and for a graph `graph.bin` (the links, see
//! [`Adjacency`]). Segments written before `graph.bin` existed carry hnsw_rs's own dump
//! (`hnsw.hnsw.graph` + `hnsw.hnsw.data`) instead: they are loaded through hnsw_rs and flattened,
//! which works but needs about three times the memory while loading. A reader that predates
//! `graph.bin` sees a new graph segment as a flat one and scans it exactly: slower, still correct.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hnsw_rs::prelude::*;

use crate::graph::{Adjacency, FlatGraph};
use crate::hnsw::HnswBuilder;
use crate::simd::{Kernels, MAX_DIM};
use crate::sq8::Calibration;
use crate::vecfile::VectorFile;
use vitrine_core::error::{CoreError, Result};

/// Below this many points an index is searched by exact scan.
pub const FLAT_MAX_POINTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointRef {
    pub ord: u64,
    pub version: u64,
}

/// How a query vector relates to the vectors of the index it searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// The same tower made both (a photo against image vectors, text against text vectors).
    Same,
    /// The other tower made the query (text against image vectors, a photo against text
    /// vectors): it lies far from every indexed vector, which a graph serves worse.
    Cross,
}

/// A cross-modal query's beam is this many times `ef_search` wide (see [`VectorIndex::search_as`]).
pub const CROSS_MODAL_EF_FACTOR: usize = 2;
/// A cross-modal query's beam also starts from this many of the best sampled pivots.
pub const CROSS_MODAL_SEEDS: usize = 16;

/// HNSW build and search settings.
#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { m: 24, ef_construction: 200, ef_search: 128 }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> CoreError {
    CoreError::io(path.display().to_string(), e)
}

/// Write an index for `points` into `dir` (created). Vectors must be unit length.
pub fn write_index(dir: &Path, dim: usize, points: &[(PointRef, Vec<f32>)], params: HnswParams) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut pf = BufWriter::new(File::create(dir.join("points.bin")).map_err(|e| io_err(dir, e))?);
    let mut vf = BufWriter::new(File::create(dir.join("vectors.f32")).map_err(|e| io_err(dir, e))?);
    for (p, v) in points {
        if v.len() != dim {
            return Err(CoreError::Index { path: dir.into(), message: format!("vector of {} dims, expected {dim}", v.len()) });
        }
        pf.write_all(&p.ord.to_le_bytes()).and_then(|_| pf.write_all(&p.version.to_le_bytes())).map_err(|e| io_err(dir, e))?;
        for x in v {
            vf.write_all(&x.to_le_bytes()).map_err(|e| io_err(dir, e))?;
        }
    }
    for f in [pf, vf] {
        f.into_inner().map_err(|e| io_err(dir, e.into_error()))?.sync_all().map_err(|e| io_err(dir, e))?;
    }
    if points.len() > FLAT_MAX_POINTS {
        let vectors: Vec<&[f32]> = points.iter().map(|(_, v)| v.as_slice()).collect();
        let adj = HnswBuilder::new(params)
            .build(&vectors)
            .map_err(|e| CoreError::Index { path: dir.into(), message: e.to_string() })?;
        let path = dir.join("graph.bin");
        adj.write(&path).map_err(|e| io_err(&path, e))?;
    }
    Ok(())
}

/// The hnsw_rs build that wrote segments before [`HnswBuilder`] (kept to write an old segment's
/// dump in the compatibility test).
#[cfg(test)]
fn build_hnsw<'a>(vectors: impl Iterator<Item = &'a [f32]>, n: usize, params: HnswParams) -> Hnsw<'static, f32, DistDot> {
    let hnsw = Hnsw::<f32, DistDot>::new(params.m, n.max(1), 16, params.ef_construction, DistDot {});
    let data: Vec<(&[f32], usize)> = vectors.enumerate().map(|(i, v)| (v, i)).collect();
    hnsw.parallel_insert_slice(&data);
    hnsw
}

/// A loaded, immutable vector index.
pub struct VectorIndex {
    pub points: Vec<PointRef>,
    dim: usize,
    storage: Storage,
    ef_search: usize,
    kernels: Kernels,
}

enum Storage {
    /// Small: scanned exactly.
    Flat(VectorFile),
    Graph(FlatGraph),
}

/// How a segment is opened. The defaults are what the searcher runs; the others exist to measure
/// against (`store/benches/segment.rs`).
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    pub ef_search: usize,
    /// How the graph's 8-bit codes are calibrated.
    pub calibration: Calibration,
    /// Read the f32 vectors into memory instead of mapping them (the layout before mapping).
    pub resident_vectors: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { ef_search: HnswParams::default().ef_search, calibration: Calibration::default(), resident_vectors: false }
    }
}

/// The most points a segment may hold: graph ids are `u32`.
pub const MAX_POINTS: usize = u32::MAX as usize - 1;

impl VectorIndex {
    /// Open the segment in `dir` with the default options and beam width `ef_search`.
    pub fn open(dir: &Path, dim: usize, ef_search: usize) -> Result<Self> {
        Self::open_with(dir, dim, OpenOptions { ef_search, ..OpenOptions::default() })
    }

    /// Open the segment in `dir`. Every file is checked against the others before anything is
    /// sized from it: `points.bin` whole 16-byte records and at most [`MAX_POINTS`],
    /// `vectors.f32` exactly points × dim floats, `graph.bin` the same point count and in-range
    /// links; `dim` at most [`MAX_DIM`].
    pub fn open_with(dir: &Path, dim: usize, opts: OpenOptions) -> Result<Self> {
        let index_err = |message: String| CoreError::Index { path: dir.into(), message };
        if dim == 0 || dim > MAX_DIM {
            return Err(index_err(format!("{dim} dimensions: a segment holds 1 to {MAX_DIM}")));
        }
        let ppath = dir.join("points.bin");
        let plen = std::fs::metadata(&ppath).map_err(|e| io_err(&ppath, e))?.len();
        if !plen.is_multiple_of(16) || plen / 16 > MAX_POINTS as u64 {
            return Err(index_err(format!("points.bin has {plen} bytes: not whole 16-byte points, or over {MAX_POINTS}")));
        }
        let vpath = dir.join("vectors.f32");
        let vlen = std::fs::metadata(&vpath).map_err(|e| io_err(&vpath, e))?.len();
        let n = (plen / 16) as usize;
        if (n as u64).checked_mul(dim as u64 * 4) != Some(vlen) {
            return Err(index_err(format!("vectors.f32 has {vlen} bytes for {n} points")));
        }
        let pb = std::fs::read(&ppath).map_err(|e| io_err(&ppath, e))?;
        let points: Vec<PointRef> = pb
            .chunks_exact(16)
            .map(|c| PointRef {
                ord: u64::from_le_bytes(c[..8].try_into().expect("8")),
                version: u64::from_le_bytes(c[8..].try_into().expect("8")),
            })
            .collect();
        if points.len() != n {
            return Err(index_err(format!("points.bin changed while it was read ({} points, then {n})", points.len())));
        }
        let graph = dir.join("graph.bin");
        let adj = if graph.exists() {
            Some(Adjacency::read(&graph, points.len()).map_err(|e| index_err(format!("{}: {e}", graph.display())))?)
        } else if dir.join("hnsw.hnsw.graph").exists() {
            // An older segment: hnsw_rs loads its dump (graph and vectors), only the links are
            // kept, and the hnsw_rs structure (which borrows `io`) is dropped here.
            let io = HnswIo::new(dir, "hnsw");
            let h = io.load_hnsw_with_dist::<f32, DistDot>(DistDot {}).map_err(|e| index_err(format!("HNSW load: {e}")))?;
            Some(Adjacency::from_hnsw(&h, points.len()).map_err(|e| index_err(e.to_string()))?)
        } else {
            None
        };
        let vectors = VectorFile::open(&vpath, n, dim, opts.resident_vectors).map_err(|e| index_err(e.to_string()))?;
        let kernels = Kernels::detect();
        let storage = match adj {
            Some(adj) => {
                Storage::Graph(FlatGraph::new(adj, vectors, opts.calibration, kernels).map_err(|e| index_err(e.to_string()))?)
            }
            None => Storage::Flat(vectors),
        };
        Ok(VectorIndex { points, dim, storage, ef_search: opts.ef_search, kernels })
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn is_graph(&self) -> bool {
        matches!(self.storage, Storage::Graph(_))
    }

    /// The vector of point `i`, borrowed from the mapped vector file (read from disk on first
    /// touch).
    pub fn vector(&self, i: usize) -> &[f32] {
        match &self.storage {
            Storage::Flat(flat) => flat.vector(i),
            Storage::Graph(g) => g.vector(i),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes this index holds in the process's own memory (the points, and for a graph its codes
    /// and links; the vectors only when opened resident). Mapped vector pages come on top, as
    /// page cache the kernel may reclaim.
    pub fn resident_bytes(&self) -> usize {
        self.points.len() * 16
            + match &self.storage {
                Storage::Flat(flat) => flat.resident_bytes(),
                Storage::Graph(g) => g.resident_bytes(),
            }
    }

    /// The instruction set level the distance kernels run at.
    pub fn simd_level(&self) -> crate::simd::Level {
        self.kernels.level
    }

    /// Approximate top-k by similarity among points accepted by `accept` (graph), or exact (flat).
    pub fn search(&self, q: &[f32], k: usize, accept: &(dyn Fn(usize) -> bool + Sync)) -> Vec<(usize, f32)> {
        match &self.storage {
            Storage::Graph(g) => g.search(q, k, self.ef_search.max(k), accept),
            Storage::Flat(_) => self.exact(q, k, accept),
        }
    }

    /// [`VectorIndex::search`] with the settings for a query of this `modality`: a cross-modal
    /// query gets a beam [`CROSS_MODAL_EF_FACTOR`] times wider, started from [`CROSS_MODAL_SEEDS`]
    /// pivots as well as the graph's entry (measured by `benches/crossmodal.rs`).
    pub fn search_as(
        &self,
        q: &[f32],
        k: usize,
        modality: Modality,
        accept: &(dyn Fn(usize) -> bool + Sync),
    ) -> Vec<(usize, f32)> {
        match modality {
            Modality::Same => self.search(q, k, accept),
            Modality::Cross => self.search_with(q, k, self.ef_search * CROSS_MODAL_EF_FACTOR, CROSS_MODAL_SEEDS, accept),
        }
    }

    /// Top-k with an explicit beam width `ef` and `seeds` pivot entry points (graph; a flat
    /// index is exact and ignores both).
    pub fn search_with(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        seeds: usize,
        accept: &(dyn Fn(usize) -> bool + Sync),
    ) -> Vec<(usize, f32)> {
        match &self.storage {
            Storage::Graph(g) => g.search_with(q, k, ef.max(k), seeds, accept),
            Storage::Flat(_) => self.exact(q, k, accept),
        }
    }

    /// Exact top-k over accepted points.
    pub fn exact(&self, q: &[f32], k: usize, accept: &(dyn Fn(usize) -> bool + Sync)) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> =
            (0..self.points.len()).filter(|&i| accept(i)).map(|i| (i, (self.kernels.dot_f32)(q, self.vector(i)))).collect();
        top_k(&mut scored, k);
        scored
    }
}

/// Keep the k highest scores, sorted descending (ties by index, for determinism).
pub fn top_k(v: &mut Vec<(usize, f32)>, k: usize) {
    let cmp = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > k && k > 0 {
        v.select_nth_unstable_by(k - 1, cmp);
        v.truncate(k);
    }
    if k == 0 {
        v.clear();
    }
    v.sort_by(cmp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitrine_core::vector::dot;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        vitrine_core::vector::l2_normalize(&mut v);
        v
    }

    #[test]
    fn graph_index_round_trips_and_agrees_with_exact_search() {
        let dim = 32;
        let n = FLAT_MAX_POINTS + 500;
        let points: Vec<_> = (0..n).map(|i| (PointRef { ord: i as u64, version: 1 }, unit(i as u64, dim))).collect();
        let dir = tempfile::tempdir().unwrap();
        write_index(dir.path(), dim, &points, HnswParams::default()).unwrap();
        let idx = VectorIndex::open(dir.path(), dim, 128).unwrap();
        assert!(idx.is_graph());
        assert_eq!(idx.len(), n);
        assert_eq!(idx.vector(7), points[7].1.as_slice());
        let mut hits = 0;
        for qi in (0..n).step_by(97) {
            let q = &points[qi].1;
            let approx = idx.search(q, 10, &|_| true);
            let exact = idx.exact(q, 10, &|_| true);
            assert_eq!(exact[0].0, qi, "a point is its own nearest neighbour");
            hits += approx.iter().filter(|a| exact.iter().any(|e| e.0 == a.0)).count();
        }
        let queries = n.div_ceil(97);
        let recall = hits as f64 / (queries * 10) as f64;
        assert!(recall > 0.9, "recall@10 {recall}");
    }

    #[test]
    fn graph_search_with_a_filter_returns_k_accepted_points_close_to_exact() {
        let dim = 24;
        let n = FLAT_MAX_POINTS + 1000;
        let points: Vec<_> = (0..n).map(|i| (PointRef { ord: i as u64, version: 1 }, unit(i as u64 + 7, dim))).collect();
        let dir = tempfile::tempdir().unwrap();
        write_index(dir.path(), dim, &points, HnswParams::default()).unwrap();
        let idx = VectorIndex::open(dir.path(), dim, 64).unwrap();
        assert!(idx.is_graph());
        let accept = |i: usize| i % 10 == 3;
        let mut hits = 0;
        for qi in (0..n).step_by(211) {
            let q = &points[qi].1;
            let approx = idx.search(q, 10, &accept);
            assert_eq!(approx.len(), 10, "a filter keeping 10% still fills k");
            assert!(approx.iter().all(|(i, _)| accept(*i)));
            assert!(approx.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            for (i, s) in &approx {
                assert!((s - dot(q, &points[*i].1)).abs() < 1e-5, "returned scores are exact f32 scores");
            }
            let exact = idx.exact(q, 10, &accept);
            hits += approx.iter().filter(|a| exact.iter().any(|e| e.0 == a.0)).count();
        }
        let recall = hits as f64 / (n.div_ceil(211) * 10) as f64;
        assert!(recall > 0.9, "filtered recall@10 {recall}");
    }

    /// Points in tight clusters, and queries in random directions: near no point, as a text
    /// query is to image vectors.
    fn clustered(n: usize, dim: usize) -> Vec<(PointRef, Vec<f32>)> {
        let centres: Vec<Vec<f32>> = (0..40).map(|c| unit(10_000 + c, dim)).collect();
        (0..n)
            .map(|i| {
                let noise = unit(i as u64 + 77, dim);
                let mut v: Vec<f32> = centres[i % 40].iter().zip(&noise).map(|(c, e)| c + 0.35 * e).collect();
                vitrine_core::vector::l2_normalize(&mut v);
                (PointRef { ord: i as u64, version: 1 }, v)
            })
            .collect()
    }

    #[test]
    fn cross_modal_settings_find_what_far_away_queries_miss() {
        let dim = 32;
        let points = clustered(FLAT_MAX_POINTS + 2000, dim);
        let dir = tempfile::tempdir().unwrap();
        write_index(dir.path(), dim, &points, HnswParams::default()).unwrap();
        let idx = VectorIndex::open(dir.path(), dim, 16).unwrap();
        let (mut same, mut cross) = (0, 0);
        let queries = 200;
        for qi in 0..queries {
            let q = unit(900_000 + qi, dim);
            let exact = idx.exact(&q, 10, &|_| true);
            let count = |r: Vec<(usize, f32)>| r.iter().filter(|a| exact.iter().any(|e| e.0 == a.0)).count();
            same += count(idx.search_as(&q, 10, Modality::Same, &|_| true));
            let c = idx.search_as(&q, 10, Modality::Cross, &|_| true);
            assert!(c.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            cross += count(c);
        }
        let (same, cross) = (same as f64 / (queries * 10) as f64, cross as f64 / (queries * 10) as f64);
        eprintln!("random-direction recall@10 at ef_search 16: same-modality settings {same}, cross-modal {cross}");
        // Measured 0.80 -> 0.93 with hnsw_rs graphs, 0.79-0.80 -> 0.93 with `HnswBuilder` (both insert
        // in parallel, so the graph and the numbers vary a little).
        assert!(cross >= same + 0.05, "cross-modal settings must do better on far queries: {cross} vs {same}");
        assert!(cross >= 0.88, "cross-modal recall@10 {cross} (same-modality settings: {same})");
    }

    /// Recall of each search setting on the vectors `scripts/crossmodal_vectors.py` writes
    /// (`CROSSMODAL_DIR`, default `../target/crossmodal`): a measurement, not a check, so it is
    /// ignored by default (`cargo test -p vitrine-store --lib crossmodal_sweep -- --ignored
    /// --nocapture`); `benches/crossmodal.rs` measures the same with latency, in release.
    #[test]
    #[ignore = "a measurement on generated vectors"]
    fn crossmodal_sweep() {
        let dir = std::path::PathBuf::from(std::env::var("CROSSMODAL_DIR").unwrap_or_else(|_| "../target/crossmodal".into()));
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        let dim = meta["dim"].as_u64().unwrap() as usize;
        let read = |name: &str| -> Vec<Vec<f32>> {
            crate::store::bytes_to_vec(&std::fs::read(dir.join(name)).unwrap()).chunks_exact(dim).map(<[f32]>::to_vec).collect()
        };
        let base = read("base.f32");
        let points: Vec<_> = base.iter().enumerate().map(|(i, v)| (PointRef { ord: i as u64, version: 1 }, v.clone())).collect();
        let tmp = tempfile::tempdir().unwrap();
        write_index(tmp.path(), dim, &points, HnswParams::default()).unwrap();
        let idx = VectorIndex::open(tmp.path(), dim, HnswParams::default().ef_search).unwrap();
        let random: Vec<Vec<f32>> = (0..200).map(|i| unit(700_000 + i, dim)).collect();
        for (name, qs) in [("text", read("text.f32")), ("photo", read("photo.f32")), ("random", random)] {
            let truth: Vec<Vec<(usize, f32)>> = qs.iter().map(|q| idx.exact(q, 10, &|_| true)).collect();
            for (ef, seeds) in [(64, 0), (128, 0), (256, 0), (512, 0), (64, 16), (128, 16), (256, 16), (128, 64)] {
                let t = std::time::Instant::now();
                let mut hits = 0;
                for (q, tr) in qs.iter().zip(&truth) {
                    let r = idx.search_with(q, 10, ef, seeds, &|_| true);
                    hits += r.iter().filter(|a| tr.iter().any(|e| e.0 == a.0)).count();
                }
                let per_query_ms = t.elapsed().as_secs_f64() * 1000.0 / qs.len() as f64;
                let recall = hits as f64 / (qs.len() * 10) as f64;
                eprintln!("{} points x {dim}: {name} ef {ef} seeds {seeds}: recall@10 {recall:.4}, {per_query_ms:.3} ms/query (debug build)", base.len());
            }
        }
    }

    #[test]
    fn pivot_seeds_keep_filters_k_and_exact_scores() {
        let dim = 24;
        let points = clustered(FLAT_MAX_POINTS + 500, dim);
        let dir = tempfile::tempdir().unwrap();
        write_index(dir.path(), dim, &points, HnswParams::default()).unwrap();
        let idx = VectorIndex::open(dir.path(), dim, 32).unwrap();
        let accept = |i: usize| i % 7 == 2;
        for qi in 0..20 {
            let q = unit(500_000 + qi, dim);
            let r = idx.search_with(&q, 10, 32, 64, &accept);
            assert_eq!(r.len(), 10);
            assert!(r.iter().all(|(i, _)| accept(*i)));
            for (i, s) in &r {
                assert!((s - dot(&q, &points[*i].1)).abs() < 1e-5, "scores are exact f32 scores");
            }
        }
        // A pivot (point 0 is always one) is found first when it is the query, even with ef = k.
        let r = idx.search_with(&points[0].1, 1, 1, 8, &|_| true);
        assert_eq!(r[0].0, 0);
        // More seeds than pivots, and k above n, are clamped rather than a panic.
        assert_eq!(idx.search_with(&points[3].1, 5, 5, 100_000, &|_| true)[0].0, 3);
    }

    #[test]
    fn segments_with_only_the_hnsw_rs_dump_still_load_as_graphs() {
        let dim = 16;
        let n = FLAT_MAX_POINTS + 200;
        let points: Vec<_> = (0..n).map(|i| (PointRef { ord: i as u64, version: 1 }, unit(i as u64 + 3, dim))).collect();
        let dir = tempfile::tempdir().unwrap();
        write_index(dir.path(), dim, &points, HnswParams::default()).unwrap();
        // The layout before graph.bin: hnsw_rs's own dump (16 layers, as file_dump needs).
        std::fs::remove_file(dir.path().join("graph.bin")).unwrap();
        let hnsw = build_hnsw(points.iter().map(|(_, v)| v.as_slice()), n, HnswParams::default());
        assert_eq!(hnsw.file_dump(dir.path(), "hnsw").unwrap(), "hnsw");
        let idx = VectorIndex::open(dir.path(), dim, 64).unwrap();
        assert!(idx.is_graph());
        let hits = idx.search(&points[11].1, 5, &|_| true);
        assert_eq!(hits[0].0, 11, "a point is its own nearest neighbour");
    }

    #[test]
    fn a_corrupt_graph_file_is_an_error_not_a_panic() {
        let dim = 8;
        let n = FLAT_MAX_POINTS + 10;
        let points: Vec<_> = (0..n).map(|i| (PointRef { ord: i as u64, version: 1 }, unit(i as u64, dim))).collect();
        let dir = tempfile::tempdir().unwrap();
        write_index(dir.path(), dim, &points, HnswParams::default()).unwrap();
        let path = dir.path().join("graph.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        bytes[len - 4..].copy_from_slice(&u32::MAX.to_le_bytes()); // a link to a point that does not exist
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(VectorIndex::open(dir.path(), dim, 64), Err(CoreError::Index { .. })));
        std::fs::write(&path, &bytes[..len / 2]).unwrap();
        assert!(matches!(VectorIndex::open(dir.path(), dim, 64), Err(CoreError::Index { .. })));
    }

    /// A graph segment written without hnsw_rs (fast): `n` points, a ring plus random links.
    fn quick_graph_segment(dir: &Path, n: usize, dim: usize) -> Vec<Vec<f32>> {
        let vectors: Vec<Vec<f32>> = (0..n).map(|i| unit(i as u64 + 11, dim)).collect();
        let points: Vec<_> = (0..64).map(|i| (PointRef { ord: i as u64, version: 1 }, vectors[i].clone())).collect();
        write_index(dir, dim, &points, HnswParams::default()).unwrap(); // flat: just the two files
        let mut pb = Vec::new();
        let mut vb = Vec::new();
        for (i, v) in vectors.iter().enumerate() {
            pb.extend((i as u64).to_le_bytes());
            pb.extend(1u64.to_le_bytes());
            vb.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        std::fs::write(dir.join("points.bin"), pb).unwrap();
        std::fs::write(dir.join("vectors.f32"), vb).unwrap();
        let lists: Vec<Vec<u32>> =
            (0..n).map(|i| (1..=12).map(|d| ((i + d * d * 7919) % n) as u32).chain([((i + 1) % n) as u32]).collect()).collect();
        Adjacency::from_layers(n, vec![lists], 0).unwrap().write(&dir.join("graph.bin")).unwrap();
        vectors
    }

    #[test]
    fn mapped_and_resident_vectors_answer_alike_and_only_resident_ones_are_held() {
        let (n, dim) = (3000, 40);
        let dir = tempfile::tempdir().unwrap();
        let vectors = quick_graph_segment(dir.path(), n, dim);
        for calibration in [Calibration::PerDimension, Calibration::Global] {
            let open = |resident_vectors| {
                VectorIndex::open_with(dir.path(), dim, OpenOptions { ef_search: 64, calibration, resident_vectors }).unwrap()
            };
            let (mapped, resident) = (open(false), open(true));
            assert!(mapped.is_graph());
            let codes_and_links = mapped.resident_bytes();
            assert_eq!(resident.resident_bytes(), codes_and_links + n * dim * 4, "only the resident index holds the f32 vectors");
            assert!(codes_and_links < n * (16 + dim + 13 * 4 + 4) + 256 * 4 + dim * 12 + 64, "{codes_and_links} bytes");
            assert_eq!(mapped.vector(1234), vectors[1234].as_slice());
            for qi in [0, 17, 2999] {
                let q = unit(qi as u64 + 900, dim);
                assert_eq!(mapped.search(&q, 10, &|_| true), resident.search(&q, 10, &|_| true));
                assert_eq!(mapped.exact(&q, 10, &|_| true), resident.exact(&q, 10, &|_| true));
                let exact = mapped.exact(&q, 1, &|_| true)[0];
                assert!((exact.1 - dot(&q, &vectors[exact.0])).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn hostile_segment_files_are_errors_not_panics_or_huge_allocations() {
        let (n, dim) = (FLAT_MAX_POINTS + 100, 16);
        let dir = tempfile::tempdir().unwrap();
        quick_graph_segment(dir.path(), n, dim);
        let good = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let (points, vectors, graph) = (good("points.bin"), good("vectors.f32"), good("graph.bin"));
        assert!(VectorIndex::open(dir.path(), dim, 32).unwrap().is_graph());
        let opens = |what: &str| {
            let r = VectorIndex::open(dir.path(), dim, 32);
            assert!(matches!(r, Err(CoreError::Index { .. })), "{what}: {:?}", r.as_ref().map(|i| i.len()).err());
        };
        let put = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        // points.bin: a torn record; one point fewer than the vectors.
        put("points.bin", &points[..points.len() - 3]);
        opens("torn points.bin");
        put("points.bin", &points[..points.len() - 16]);
        opens("a point short");
        put("points.bin", &points);
        // vectors.f32: truncated, one float too many.
        put("vectors.f32", &vectors[..vectors.len() - 4]);
        opens("truncated vectors");
        put("vectors.f32", &[vectors.as_slice(), &[0; 4]].concat());
        opens("a float too many");
        put("vectors.f32", &vectors);
        // graph.bin: a header claiming 2^32-1 points or 2^32-1 layers, a layer claiming 2^32-1
        // targets: each is refused before anything that size is allocated.
        let mut g = graph.clone();
        g[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        put("graph.bin", &g);
        opens("graph of 2^32-1 points");
        let mut g = graph.clone();
        g[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        put("graph.bin", &g);
        opens("2^32-1 layers");
        let mut g = graph.clone();
        let count_at = 20 + (n + 1) * 4;
        g[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        put("graph.bin", &g);
        opens("2^32-1 targets");
        put("graph.bin", &graph[..graph.len() / 3]);
        opens("truncated graph");
        put("graph.bin", b"VTGRAPH1");
        opens("header only");
        put("graph.bin", &graph);
        // Dimensions the kernels refuse, or that do not divide the file.
        for bad in [0, 15, crate::simd::MAX_DIM + 1] {
            assert!(VectorIndex::open(dir.path(), bad, 32).is_err(), "dim {bad}");
        }
        // Non-finite values are data, not a crash: the segment opens and searches.
        let mut v = vectors.clone();
        v[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        v[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
        put("vectors.f32", &v);
        let idx = VectorIndex::open(dir.path(), dim, 32).unwrap();
        assert_eq!(idx.search(&unit(5, dim), 10, &|_| true).len(), 10);
        assert_eq!(VectorIndex::open(dir.path(), dim, 32).unwrap().exact(&unit(5, dim), 10, &|i| i > 0).len(), 10);
    }

    #[test]
    fn filters_apply_inside_the_search() {
        let dim = 16;
        let points: Vec<_> = (0..100).map(|i| (PointRef { ord: i, version: 1 }, unit(i, dim))).collect();
        let dir = tempfile::tempdir().unwrap();
        write_index(dir.path(), dim, &points, HnswParams::default()).unwrap();
        let idx = VectorIndex::open(dir.path(), dim, 64).unwrap();
        let hits = idx.search(&points[3].1, 5, &|i| i % 2 == 0);
        assert_eq!(hits.len(), 5, "a filter still returns k results");
        assert!(hits.iter().all(|(i, _)| i % 2 == 0));
    }
}
