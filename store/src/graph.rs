//! The search side of an HNSW index: `hnsw.rs` builds the graph, its links are saved flat
//! (`graph.bin`, see [`Adjacency`]) beside the segment's vectors, and the loop here searches it.
//! Segments written before `graph.bin` carry hnsw_rs's dump instead; [`Adjacency::from_hnsw`]
//! flattens those when they are opened.
//!
//! Why not hnsw_rs's own search: it keeps each point behind an `Arc` with its neighbour lists
//! under a `RwLock`, tracks visited points in a `HashMap` and allocates an `Arc` per heap entry.
//! At 100k × 512 that cost 5–10 ms a query, several times the distance arithmetic itself. Here the
//! vectors sit in one contiguous array in point order, each layer's adjacency is a CSR pair of
//! `u32` arrays, and the visited set is a per-thread array of epoch stamps, so a query allocates
//! two small heaps and touches only the vectors it scores.
//!
//! Traversal scores 8-bit codes of the vectors (scalar quantization calibrated per dimension,
//! `sq8.rs`), a quarter of the memory traffic of f32, which is what a graph walk is bound by, with
//! the widest integer kernel the CPU has (`simd.rs`); the `ef` results are then rescored with the
//! f32 vectors, so the returned scores are exact and only the choice of candidates is approximate.
//! Only the codes and the links are held in memory: the f32 vectors stay in the segment's file,
//! mapped (`vecfile.rs`), and a query reads the ~`ef` it rescores.
//!
//! The algorithm is the paper's (Malkov & Yashunin, Alg. 2 and 5): greedy descent through the upper
//! layers, then a best-first beam of width `ef` on layer 0. A filter is applied the way hnsw_rs
//! applies it: rejected points are still traversed (they keep the graph connected) but never
//! enter the results. Very selective filters do not come here: the searcher scores those exactly.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hnsw_rs::prelude::*;

use crate::simd::{Kernels, MAX_DIM};
use crate::sq8::{Calibration, Calibrator, Sq8};
use crate::vecfile::{VecFileError, VectorFile};

/// Why a graph could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{n} points: a graph needs 1 to 2^32 - 1")]
    PointCount { n: usize },
    #[error("graph point with id {id} beyond the {n} points")]
    PointOutOfRange { id: usize, n: usize },
    #[error("point {id} missing from the graph")]
    MissingPoint { id: usize },
    #[error("not a graph file")]
    NotAGraphFile,
    #[error("graph has no entry point")]
    NoEntryPoint,
    #[error("graph file ends early")]
    Truncated,
    #[error("graph header (n {stored_n}, {count} layers, entry {entry}) does not fit {n} points")]
    Header { stored_n: usize, count: usize, entry: u32, n: usize },
    #[error("graph layer with out-of-range links")]
    LinksOutOfRange,
    #[error("{vectors} vectors of {dim} dimensions for a graph of {n} points")]
    VectorCount { vectors: usize, n: usize, dim: usize },
    #[error(transparent)]
    Vectors(#[from] VecFileError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One layer's adjacency: the neighbours of point `i` are `targets[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, PartialEq, Eq)]
struct Layer {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Layer {
    fn neighbours(&self, i: u32) -> &[u32] {
        let (a, b) = (self.offsets[i as usize] as usize, self.offsets[i as usize + 1] as usize);
        &self.targets[a..b]
    }
}

/// The links of an HNSW graph over points `0..n`, layer 0 first, and its entry point.
///
/// Persisted as `graph.bin` (`# Persisted: changing this needs a migration`), little endian:
/// `b"VTGRAPH1"`, n u32, layer count u32, entry u32, then per layer: offsets (n + 1 × u32),
/// target count u32, targets (u32 each).
#[derive(Debug, PartialEq, Eq)]
pub struct Adjacency {
    n: usize,
    layers: Vec<Layer>,
    entry: u32,
}

impl Adjacency {
    /// Memory held by the links (offsets and targets of every layer).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| (l.offsets.capacity() + l.targets.capacity()) * 4).sum()
    }

    /// The number of points.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Never true: a graph holds at least one point.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The number of layers (layer 0 included).
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// The point every search starts from (on the top layer).
    pub fn entry(&self) -> u32 {
        self.entry
    }

    /// The neighbours of point `i` on `layer` (empty when the point is not on that layer).
    pub fn neighbours(&self, layer: usize, i: u32) -> &[u32] {
        self.layers[layer].neighbours(i)
    }
}

const MAGIC: &[u8; 8] = b"VTGRAPH1";

/// More layers than any HNSW graph has (a layer holds about 1/M of the one below it).
pub(crate) const MAX_LAYERS: usize = 64;

impl Adjacency {
    /// The links of `hnsw`, whose points are identified by their origin id `0..n`.
    pub fn from_hnsw(hnsw: &Hnsw<'_, f32, DistDot>, n: usize) -> Result<Self, GraphError> {
        if n == 0 || n > u32::MAX as usize {
            return Err(GraphError::PointCount { n });
        }
        let top = usize::from(hnsw.get_point_indexation().get_max_level_observed());
        let mut lists: Vec<Vec<Vec<u32>>> = (0..=top).map(|_| vec![Vec::new(); n]).collect();
        let mut seen = vec![false; n];
        let mut entry = None;
        for p in hnsw.get_point_indexation() {
            let id = p.get_origin_id();
            if id >= n {
                return Err(GraphError::PointOutOfRange { id, n });
            }
            seen[id] = true;
            if usize::from(p.get_point_id().0) == top && entry.is_none() {
                entry = Some(id as u32);
            }
            for (layer, list) in p.get_neighborhood_id().into_iter().enumerate().take(top + 1) {
                lists[layer][id] = list.into_iter().map(|nb| nb.d_id as u32).filter(|&t| (t as usize) < n).collect();
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(GraphError::MissingPoint { id: missing });
        }
        Self::from_layers(n, lists, entry.ok_or(GraphError::NoEntryPoint)?)
    }

    /// A graph from its neighbour lists, `lists[layer][point]`, layer 0 first (every layer with
    /// a list for each of the `n` points, empty where the point is not on that layer).
    pub fn from_layers(n: usize, lists: Vec<Vec<Vec<u32>>>, entry: u32) -> Result<Self, GraphError> {
        if n == 0 || n > u32::MAX as usize {
            return Err(GraphError::PointCount { n });
        }
        let count = lists.len();
        if count == 0 || count > MAX_LAYERS || entry as usize >= n || lists.iter().any(|l| l.len() != n) {
            return Err(GraphError::Header { stored_n: n, count, entry, n });
        }
        let layers = lists
            .into_iter()
            .map(|lists| {
                let mut offsets = Vec::with_capacity(n + 1);
                let mut targets = Vec::with_capacity(lists.iter().map(Vec::len).sum());
                offsets.push(0);
                for list in lists {
                    targets.extend(list);
                    offsets.push(u32::try_from(targets.len()).map_err(|_| GraphError::LinksOutOfRange)?);
                }
                if targets.iter().any(|&t| t as usize >= n) {
                    return Err(GraphError::LinksOutOfRange);
                }
                Ok(Layer { offsets, targets })
            })
            .collect::<Result<_, _>>()?;
        Ok(Adjacency { n, layers, entry })
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut f = BufWriter::new(File::create(path)?);
        f.write_all(MAGIC)?;
        for x in [self.n as u32, self.layers.len() as u32, self.entry] {
            f.write_all(&x.to_le_bytes())?;
        }
        for layer in &self.layers {
            for x in &layer.offsets {
                f.write_all(&x.to_le_bytes())?;
            }
            f.write_all(&(layer.targets.len() as u32).to_le_bytes())?;
            for x in &layer.targets {
                f.write_all(&x.to_le_bytes())?;
            }
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// Read a `graph.bin` of `n` points, checking every offset and target.
    pub fn read(path: &Path, n: usize) -> Result<Self, GraphError> {
        let bytes = std::fs::read(path)?;
        let mut words =
            bytes.get(MAGIC.len()..).unwrap_or_default().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        if !bytes.starts_with(MAGIC) {
            return Err(GraphError::NotAGraphFile);
        }
        let mut next = || words.next().ok_or(GraphError::Truncated);
        let (stored_n, count, entry) = (next()? as usize, next()? as usize, next()?);
        if stored_n != n || count == 0 || count > MAX_LAYERS || entry as usize >= n {
            return Err(GraphError::Header { stored_n, count, entry, n });
        }
        let mut layers = Vec::with_capacity(count);
        for _ in 0..count {
            // Collected through `Result`, a vector grows by doubling (no size hint): shrink, or
            // up to half of the links' memory would be slack for the life of the segment.
            let mut offsets = (0..=n).map(|_| next()).collect::<Result<Vec<u32>, _>>()?;
            offsets.shrink_to_fit();
            let len = next()? as usize;
            let mut targets = (0..len).map(|_| next()).collect::<Result<Vec<u32>, _>>()?;
            targets.shrink_to_fit();
            let sorted = offsets.windows(2).all(|w| w[0] <= w[1]);
            if offsets[0] != 0 || offsets[n] as usize != len || !sorted || targets.iter().any(|&t| t as usize >= n) {
                return Err(GraphError::LinksOutOfRange);
            }
            layers.push(Layer { offsets, targets });
        }
        Ok(Adjacency { n, layers, entry })
    }
}

/// A read-only HNSW graph over `n` unit vectors of `dim` dimensions, in point order.
///
/// In memory: the 8-bit codes and the links. The f32 vectors stay in their file
/// ([`VectorFile`], mapped) and are read only for the points a search rescores.
pub struct FlatGraph {
    dim: usize,
    vectors: VectorFile,
    /// One row of `dim` bytes per point (see [`Sq8`]).
    codes: Vec<u8>,
    sq: Sq8,
    kernels: Kernels,
    adj: Adjacency,
    /// A fixed sample of points (every `n / PIVOTS`-th, so a random sample of the content) that a
    /// search may score up front to start its beam in several regions (see [`FlatGraph::search_with`]).
    pivots: Vec<u32>,
}

/// Points sampled as extra entry points.
pub const PIVOTS: usize = 256;

/// A similarity with a total order, for the heaps.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) struct Scored(pub(crate) f32, pub(crate) u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

thread_local! {
    /// Visited stamps: point `i` is visited in this query when `stamps[i] == epoch`.
    static VISITED: RefCell<(u32, Vec<u32>)> = const { RefCell::new((0, Vec::new())) };
}

impl FlatGraph {
    /// The graph `adj` over `vectors` (n × dim, in point order), with codes calibrated from them
    /// in one sequential pass over the file (a second pass encodes).
    pub fn new(adj: Adjacency, vectors: VectorFile, calibration: Calibration, kernels: Kernels) -> Result<Self, GraphError> {
        let dim = vectors.dim();
        if vectors.len() != adj.n || dim > MAX_DIM {
            return Err(GraphError::VectorCount { vectors: vectors.len(), n: adj.n, dim });
        }
        let mut cal = Calibrator::new(dim);
        vectors.for_each(|_, v| cal.add(v))?;
        let sq = cal.finish(calibration);
        let mut codes = vec![0u8; adj.n * dim];
        vectors.for_each(|i, v| sq.encode(v, &mut codes[i * dim..(i + 1) * dim]))?;
        let n = adj.n;
        let pivots = (0..PIVOTS.min(n)).map(|i| (i * n / PIVOTS.min(n)) as u32).collect();
        Ok(FlatGraph { dim, vectors, codes, sq, kernels, adj, pivots })
    }

    pub fn len(&self) -> usize {
        self.adj.n
    }

    pub fn is_empty(&self) -> bool {
        self.adj.n == 0
    }

    /// The vector of point `i` (from the vector file).
    pub fn vector(&self, i: usize) -> &[f32] {
        self.vectors.vector(i)
    }

    pub fn vectors(&self) -> &VectorFile {
        &self.vectors
    }

    /// Bytes held in the process's own memory: codes, links, pivots and the vectors when they
    /// are resident rather than mapped.
    pub fn resident_bytes(&self) -> usize {
        self.codes.len() + self.adj.bytes() + self.pivots.len() * 4 + self.vectors.resident_bytes() + self.dim * 12
    }

    /// The traversal similarity: the integer dot product of the point's codes with the query's
    /// (exact in `i32`, see `simd::MAX_DIM`), which ranks points as the float dot product does
    /// up to quantization error (see [`Sq8`]).
    fn sim(&self, q: &[i8], i: u32) -> f32 {
        let i = i as usize;
        (self.kernels.dot_u8i8)(&self.codes[i * self.dim..(i + 1) * self.dim], q) as f32
    }

    /// Approximate top-`k` by dot product among points `accept` lets through, best first, with a
    /// layer-0 beam of `ef` (at least `k`).
    pub fn search(&self, q: &[f32], k: usize, ef: usize, accept: &dyn Fn(usize) -> bool) -> Vec<(usize, f32)> {
        self.search_with(q, k, ef, 0, accept)
    }

    /// [`FlatGraph::search`], with the layer-0 beam started from the upper layers' descent plus
    /// the `seeds` best of the [`PIVOTS`] sampled points.
    ///
    /// Why: a query far from every indexed vector (a text query against image vectors) sees an
    /// almost flat similarity landscape on the way down, so the descent often ends in a region
    /// that is not the one holding its best matches, and a beam of width `ef` started there runs
    /// out before it gets across. Scoring a few hundred pivots costs about as much as expanding a
    /// handful of nodes, and lets the beam start next to each promising region at once.
    pub fn search_with(&self, q: &[f32], k: usize, ef: usize, seeds: usize, accept: &dyn Fn(usize) -> bool) -> Vec<(usize, f32)> {
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        let ef = ef.max(k);
        let exact = q;
        let q8 = self.sq.query(q);
        let q = q8.as_slice();
        let mut cur = Scored(self.sim(q, self.adj.entry), self.adj.entry);
        for layer in self.adj.layers[1..].iter().rev() {
            loop {
                let mut moved = false;
                for &nb in layer.neighbours(cur.1) {
                    let s = self.sim(q, nb);
                    if s > cur.0 {
                        cur = Scored(s, nb);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let found = VISITED.with(|v| {
            let (epoch, stamps) = &mut *v.borrow_mut();
            if stamps.len() < self.len() {
                stamps.resize(self.len(), 0);
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                stamps.fill(0);
                *epoch = 1;
            }
            let epoch = *epoch;
            let mut starts = vec![cur];
            if seeds > 0 {
                let mut scored: Vec<Scored> = self.pivots.iter().map(|&p| Scored(self.sim(q, p), p)).collect();
                let take = seeds.min(scored.len());
                scored.select_nth_unstable_by(take - 1, |a, b| b.cmp(a));
                starts.extend(scored[..take].iter().filter(|s| s.1 != cur.1));
            }
            self.beam(q, &starts, ef, accept, epoch, stamps)
        });
        let mut rescored: Vec<(usize, f32)> =
            found.into_iter().map(|s| (s.1 as usize, (self.kernels.dot_f32)(exact, self.vector(s.1 as usize)))).collect();
        crate::vectors::top_k(&mut rescored, k);
        rescored
    }

    /// Layer-0 best-first search from `starts` (distinct points); returns the accepted results (any order).
    fn beam(
        &self,
        q: &[i8],
        starts: &[Scored],
        ef: usize,
        accept: &dyn Fn(usize) -> bool,
        epoch: u32,
        stamps: &mut [u32],
    ) -> Vec<Scored> {
        let layer = &self.adj.layers[0];
        let mut fresh: Vec<u32> = Vec::with_capacity(64);
        let mut candidates = BinaryHeap::with_capacity(ef * 4);
        let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &start in starts {
            stamps[start.1 as usize] = epoch;
            candidates.push(start);
            if accept(start.1 as usize) {
                results.push(Reverse(start));
                if results.len() > ef {
                    results.pop();
                }
            }
        }
        while let Some(c) = candidates.pop() {
            if results.len() >= ef && c.0 < results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0) {
                break;
            }
            fresh.clear();
            for &nb in layer.neighbours(c.1) {
                let stamp = &mut stamps[nb as usize];
                if *stamp != epoch {
                    *stamp = epoch;
                    fresh.push(nb);
                }
            }
            self.touch(&fresh);
            for &nb in &fresh {
                let s = Scored(self.sim(q, nb), nb);
                let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                if results.len() < ef || s.0 > worst {
                    candidates.push(s);
                    if accept(nb as usize) {
                        results.push(Reverse(s));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        results.into_iter().map(|r| r.0).collect()
    }
}

impl FlatGraph {
    /// Load one byte of every cache line of these points' codes before scoring them. The loads
    /// are independent, so their cache misses overlap (a prefetch in safe code); scoring one
    /// vector at a time would wait for each miss in turn. Worth ~2× on a 100k × 512 graph.
    fn touch(&self, ids: &[u32]) {
        let mut x = 0u8;
        for &i in ids {
            let code = &self.codes[i as usize * self.dim..(i as usize + 1) * self.dim];
            for line in code.iter().step_by(64) {
                x ^= *line;
            }
        }
        std::hint::black_box(x);
    }
}
