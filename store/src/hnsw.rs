//! The build side of an HNSW index: inserts a segment's vectors into a graph and returns its links
//! as an [`Adjacency`] (saved as `graph.bin`, searched by `graph.rs`).
//!
//! The algorithm is the paper's (Malkov & Yashunin, Alg. 1, 2 and 4):
//! - each point draws a level `⌊−ln(u) · mL⌋`, `mL = 1 / ln(M)`, from a generator seeded by the
//!   build's seed and the point's id, so the levels do not depend on the insertion order;
//! - an insertion descends greedily through the layers above the point's level, then on each layer
//!   from its level down to 0 runs a beam of width `ef_construction`, started from the previous
//!   layer's results, and links the point to at most `M` of them chosen by the heuristic (Alg. 4:
//!   a candidate is kept only when it is closer to the point than to every neighbour kept before
//!   it, which keeps links pointing in different directions), as hnswlib does (selecting up to
//!   `2·M` on layer 0, as hnsw_rs does, changed no recall in the test below and doubles the
//!   back-links to make);
//! - links are made both ways; a neighbour whose list overflows (`M` on the upper layers, `2·M` on
//!   layer 0, the layout hnsw_rs and hnswlib use and `graph.rs` was tuned on) is re-pruned by the
//!   same heuristic, then filled back up to half its bound with the closest of the pruned
//!   candidates (the paper's `keepPrunedConnections`, capped). Why: without the fill most lists
//!   sit well under their bound and recall@10 at search `ef` 10 came out ~0.01 below that of
//!   hnsw_rs's graphs (whose lists keep the closest `2·M`) in
//!   `recall_matches_the_hnsw_rs_build_on_clustered_vectors` (0.947 vs 0.956); filled to half or
//!   three quarters, the two match (0.955 vs 0.956). Why not to the full bound: a full list
//!   re-prunes on every new back-link (`2·M + 1` similarities and the heuristic's pairwise ones);
//!   that variant (with `2·M` selected on layer 0 too) took 112 s for the 20k × 512 bench segment
//!   at load ~10, against 14–17 s for this one at load 3–4;
//! - last, points that no layer-0 path from the entry reaches any more (every link to them pruned
//!   away, a few per thousand at small `M`) are linked back in (see [`Build::link_orphans`]).
//!
//! Similarity is the f32 dot product of unit vectors, with the widest kernel the CPU has
//! (`simd.rs`, chosen at run time). Not the 8-bit codes the search walks: a code ranks points
//! against one query only (the query's own scale and offset drop out, see `sq8.rs`), while the
//! heuristic compares a candidate's similarity to the new point with its similarity to other
//! neighbours, i.e. across queries, so codes would need a symmetric form with per-point
//! corrections. Not built or measured yet: the f32 build is within the 1.3× of hnswlib that was
//! asked for (1.17× in CPU time at 100k × 512, see `docs/SCALING.md`).
//!
//! Threading: insertions run in parallel on the caller's rayon pool after the first
//! [`SERIAL_PREFIX`] points are inserted one by one (a stable top of the graph). Each point's
//! link lists sit behind a mutex of its own and a thread holds at most one of them at a time
//! (a list is copied out before its neighbours are scored), so there is no lock order to keep and
//! no deadlock; the entry point and top level sit behind a lock of their own. With one thread
//! the insertion order is the point order, so a seed gives one graph exactly.
//!
//! Memory: the vectors are borrowed, not copied; per point a mutex, its lists (room for `2·M` ids
//! on layer 0 and `M` per upper layer, an upper layer holding ~1/M of the points) and a level
//! byte (~270 B per point at M 24), plus one visited-stamp array of `n` u32 per inserting thread;
//! the [`Adjacency`] is then made from the lists (both are held for a moment at the end).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use crate::graph::{Adjacency, GraphError, Scored, MAX_LAYERS};
use crate::simd::Kernels;
use crate::vectors::HnswParams;

/// At most this many passes of [`Build::link_orphans`].
const ORPHAN_ROUNDS: usize = 4;

/// Points inserted one at a time before the parallel insertion starts.
pub const SERIAL_PREFIX: usize = 256;

/// The seed of [`HnswBuilder::new`].
pub const DEFAULT_SEED: u64 = 0x7669_7472_696e_6521;

/// Builds HNSW graphs over unit vectors, ranked by dot product.
#[derive(Clone, Copy)]
pub struct HnswBuilder {
    m: usize,
    ef_construction: usize,
    seed: u64,
    kernels: Kernels,
}

impl HnswBuilder {
    /// A builder with `params.m` links per point (at least 2; `2·M` on layer 0) and a beam of
    /// `params.ef_construction` (at least `M`), the default seed and the CPU's widest kernels.
    pub fn new(params: HnswParams) -> Self {
        let m = params.m.max(2);
        HnswBuilder { m, ef_construction: params.ef_construction.max(m), seed: DEFAULT_SEED, kernels: Kernels::detect() }
    }

    /// The seed of the level draws.
    pub fn seed(self, seed: u64) -> Self {
        HnswBuilder { seed, ..self }
    }

    /// Score with these kernels instead of the widest.
    pub fn kernels(self, kernels: Kernels) -> Self {
        HnswBuilder { kernels, ..self }
    }

    /// The graph over `vectors` (point `i` is `vectors[i]`, all of one dimension), built on the
    /// current rayon pool.
    pub fn build(&self, vectors: &[&[f32]]) -> Result<Adjacency, GraphError> {
        let n = vectors.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(GraphError::PointCount { n });
        }
        let ml = 1.0 / (self.m as f64).ln();
        let levels: Vec<u8> = (0..n).map(|i| level(self.seed, i as u64, ml)).collect();
        let links = levels
            .iter()
            .map(|&l| {
                Mutex::new(
                    (0..=usize::from(l)).map(|layer| Vec::with_capacity(if layer == 0 { 2 * self.m } else { self.m })).collect(),
                )
            })
            .collect();
        let build = Build {
            vectors,
            dot: self.kernels.dot_f32,
            m: self.m,
            ef: self.ef_construction,
            entry: RwLock::new((0, usize::from(levels[0]))),
            levels,
            links,
            scratch: Mutex::new(Vec::new()),
        };
        let prefix = SERIAL_PREFIX.min(n);
        (1..prefix).for_each(|i| build.insert(i));
        if rayon::current_num_threads() == 1 {
            (prefix..n).for_each(|i| build.insert(i));
        } else {
            (prefix..n).into_par_iter().for_each(|i| build.insert(i));
        }
        build.link_orphans();
        build.into_adjacency()
    }
}

/// A point's level: `⌊−ln(u) · ml⌋` for `u` uniform in (0, 1], drawn from (seed, point) alone.
fn level(seed: u64, i: u64, ml: f64) -> u8 {
    let x = splitmix64(seed ^ splitmix64(i));
    let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    (-u.ln() * ml).floor().min((MAX_LAYERS - 1) as f64) as u8
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One build in progress.
struct Build<'a> {
    vectors: &'a [&'a [f32]],
    dot: fn(&[f32], &[f32]) -> f32,
    m: usize,
    ef: usize,
    levels: Vec<u8>,
    /// `links[i][layer]`: point `i`'s neighbours on each layer up to its level.
    links: Vec<Mutex<Vec<Vec<u32>>>>,
    /// The entry point and the top layer (the entry's level).
    entry: RwLock<(u32, usize)>,
    /// Per-search state, handed to whichever thread inserts next (at most one per thread exists).
    scratch: Mutex<Vec<Scratch>>,
}

/// A beam search's visited stamps and heaps, reused from one search to the next.
struct Scratch {
    epoch: u32,
    stamps: Vec<u32>,
    candidates: BinaryHeap<Scored>,
    results: BinaryHeap<Reverse<Scored>>,
    list: Vec<u32>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch { epoch: 0, stamps: vec![0; n], candidates: BinaryHeap::new(), results: BinaryHeap::new(), list: Vec::new() }
    }

    /// A fresh visited set (stamps of older searches no longer count).
    fn next_epoch(&mut self) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
        self.epoch
    }
}

impl Build<'_> {
    fn sim(&self, a: u32, b: u32) -> f32 {
        (self.dot)(self.vectors[a as usize], self.vectors[b as usize])
    }

    /// The most links a point keeps on `layer`.
    fn cap(&self, layer: usize) -> usize {
        if layer == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    /// Copy point `i`'s neighbours on `layer` into `out` (held locked only for the copy).
    fn copy_links(&self, i: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        if let Some(list) = self.links[i as usize].lock().get(layer) {
            out.extend_from_slice(list);
        }
    }

    fn insert(&self, i: usize) {
        let me = i as u32;
        let level = usize::from(self.levels[i]);
        let (entry, top) = *self.entry.read();
        let mut scratch = self.scratch.lock().pop().unwrap_or_else(|| Scratch::new(self.vectors.len()));
        let mut cur = Scored(self.sim(me, entry), entry);
        for layer in (level + 1..=top).rev() {
            cur = self.greedy(me, cur, layer, &mut scratch.list);
        }
        let mut starts = vec![cur];
        for layer in (0..=level.min(top)).rev() {
            let found = self.beam(me, &starts, layer, &mut scratch);
            let chosen = self.select(&found, self.m);
            self.connect(me, layer, &chosen);
            starts = found;
        }
        self.scratch.lock().push(scratch);
        if level > top {
            let mut e = self.entry.write();
            if level > e.1 {
                *e = (me, level);
            }
        }
    }

    /// Greedy descent on one upper layer: move to the best neighbour until none is better.
    fn greedy(&self, me: u32, mut cur: Scored, layer: usize, list: &mut Vec<u32>) -> Scored {
        loop {
            let mut moved = false;
            self.copy_links(cur.1, layer, list);
            for &nb in list.iter().filter(|&&nb| nb != me) {
                let s = self.sim(me, nb);
                if s > cur.0 {
                    cur = Scored(s, nb);
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Best-first search for `me` on `layer` from `starts` (distinct points, already scored),
    /// with a beam of `ef`: the best `ef` points found, best first, `me` left out.
    fn beam(&self, me: u32, starts: &[Scored], layer: usize, s: &mut Scratch) -> Vec<Scored> {
        let epoch = s.next_epoch();
        s.stamps[me as usize] = epoch;
        let Scratch { stamps, candidates, results, list, .. } = s;
        candidates.clear();
        results.clear();
        for &start in starts {
            if stamps[start.1 as usize] == epoch {
                continue;
            }
            stamps[start.1 as usize] = epoch;
            candidates.push(start);
            results.push(Reverse(start));
            if results.len() > self.ef {
                results.pop();
            }
        }
        while let Some(c) = candidates.pop() {
            let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
            if results.len() >= self.ef && c.0 < worst {
                break;
            }
            self.copy_links(c.1, layer, list);
            list.retain(|&nb| {
                let stamp = &mut stamps[nb as usize];
                let fresh = *stamp != epoch;
                *stamp = epoch;
                fresh
            });
            for (j, &nb) in list.iter().enumerate() {
                if let Some(&next) = list.get(j + 1) {
                    crate::simd::prefetch(self.vectors[next as usize]);
                }
                let s = Scored(self.sim(me, nb), nb);
                let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                if results.len() < self.ef || s.0 > worst {
                    candidates.push(s);
                    results.push(Reverse(s));
                    if results.len() > self.ef {
                        results.pop();
                    }
                }
            }
        }
        let mut found: Vec<Scored> = results.drain().map(|r| r.0).collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found
    }

    /// The heuristic (Alg. 4) over `candidates`, best first, each scored against the base point:
    /// keep a candidate when no kept one is more similar to it than the base point is, up to `cap`.
    fn select(&self, candidates: &[Scored], cap: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(cap);
        for &c in candidates {
            if kept.len() == cap {
                break;
            }
            if kept.iter().all(|r| self.sim(c.1, r.1) <= c.0) {
                kept.push(c);
            }
        }
        kept
    }

    /// Link `me` to `chosen` on `layer`, and each of them back to `me`.
    fn connect(&self, me: u32, layer: usize, chosen: &[Scored]) {
        for &c in chosen {
            self.add_link(me, c.1, c.0, layer);
        }
        for &c in chosen {
            self.add_link(c.1, me, c.0, layer);
        }
    }

    /// Add `to` (of similarity `sim` to `from`) to `from`'s list on `layer`; re-prune the list by
    /// the heuristic when it overflows. Another insertion may have linked to `from` already
    /// (it can reach a point on a layer before the point's own links there are set), so the own
    /// links are added one by one too rather than written over.
    fn add_link(&self, from: u32, to: u32, sim: f32, layer: usize) {
        let cap = self.cap(layer);
        let mut guard = self.links[from as usize].lock();
        let Some(list) = guard.get_mut(layer) else { return };
        if list.contains(&to) {
            return;
        }
        if list.len() < cap {
            list.push(to);
            return;
        }
        let mut candidates: Vec<Scored> = Vec::with_capacity(list.len() + 1);
        for (j, &x) in list.iter().enumerate() {
            if let Some(&next) = list.get(j + 1) {
                crate::simd::prefetch(self.vectors[next as usize]);
            }
            candidates.push(Scored(self.sim(from, x), x));
        }
        candidates.push(Scored(sim, to));
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let kept = self.select(&candidates, cap);
        list.clear();
        list.extend(kept.iter().map(|s| s.1));
        // Filled back up to half the bound with the closest pruned ones (see the module doc).
        for c in &candidates {
            if list.len() >= cap / 2 {
                break;
            }
            if !list.contains(&c.1) {
                list.push(c.1);
            }
        }
    }

    /// Layer-0 points no search can reach: every link to them was pruned away by later
    /// insertions (the heuristic keeps a list's links diverse, not its targets reachable; a
    /// handful per thousand at small M, none seen at M 24). Each one is linked from the best
    /// reachable point a beam search for it finds, in place of that point's least similar link
    /// whose target has another link to it; the rounds repeat until none is left (bounded: a
    /// replaced link can orphan a point reachable only through it).
    fn link_orphans(&self) {
        let n = self.vectors.len();
        let (entry, _) = *self.entry.read();
        let mut scratch = Scratch::new(n);
        for _ in 0..ORPHAN_ROUNDS {
            let mut reached = vec![false; n];
            self.mark_reachable(entry, &mut reached);
            if reached.iter().all(|&r| r) {
                return;
            }
            let mut in_degree = vec![0u32; n];
            for node in &self.links {
                for &t in &node.lock()[0] {
                    in_degree[t as usize] += 1;
                }
            }
            for u in 0..n as u32 {
                if reached[u as usize] {
                    continue;
                }
                let found = self.beam(u, &[Scored(self.sim(u, entry), entry)], 0, &mut scratch);
                for v in found.iter().filter(|v| reached[v.1 as usize]) {
                    let mut guard = self.links[v.1 as usize].lock();
                    let list = &mut guard[0];
                    if list.len() < self.cap(0) {
                        list.push(u);
                    } else {
                        let weakest = list
                            .iter()
                            .enumerate()
                            .filter(|(_, &t)| in_degree[t as usize] > 1)
                            .min_by(|a, b| self.sim(v.1, *a.1).total_cmp(&self.sim(v.1, *b.1)));
                        let Some((at, &t)) = weakest else { continue };
                        in_degree[t as usize] -= 1;
                        list[at] = u;
                    }
                    in_degree[u as usize] += 1;
                    drop(guard);
                    self.mark_reachable(u, &mut reached);
                    break;
                }
            }
        }
    }

    /// Mark every point reachable from `from` on layer 0 (and `from` itself).
    fn mark_reachable(&self, from: u32, reached: &mut [bool]) {
        if reached[from as usize] {
            return;
        }
        reached[from as usize] = true;
        let mut stack = vec![from];
        while let Some(i) = stack.pop() {
            for &t in &self.links[i as usize].lock()[0] {
                if !reached[t as usize] {
                    reached[t as usize] = true;
                    stack.push(t);
                }
            }
        }
    }

    fn into_adjacency(self) -> Result<Adjacency, GraphError> {
        let n = self.vectors.len();
        let (entry, top) = self.entry.into_inner();
        let mut lists: Vec<Vec<Vec<u32>>> = (0..=top).map(|_| Vec::with_capacity(n)).collect();
        for node in self.links {
            let mut node = node.into_inner();
            for (layer, out) in lists.iter_mut().enumerate() {
                out.push(node.get_mut(layer).map(std::mem::take).unwrap_or_default());
            }
        }
        Adjacency::from_layers(n, lists, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{write_index, PointRef, VectorIndex, FLAT_MAX_POINTS};
    use rand::{Rng, SeedableRng};

    fn gaussian(rng: &mut impl Rng) -> f32 {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// `n` points and `nq` held-out queries: unit vectors around `clusters` random centres (the
    /// distribution of `benches/segment.rs`, noise of norm `noise`).
    fn clustered(n: usize, nq: usize, dim: usize, clusters: usize, noise: f32, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let unit = |mut v: Vec<f32>| {
            vitrine_core::vector::l2_normalize(&mut v);
            v
        };
        let centres: Vec<Vec<f32>> = (0..clusters).map(|_| unit((0..dim).map(|_| gaussian(&mut rng)).collect())).collect();
        let s = noise / (dim as f32).sqrt();
        let sample = |rng: &mut rand::rngs::StdRng| {
            let c = &centres[rng.random_range(0..clusters)];
            unit(c.iter().map(|c| c + s * gaussian(rng)).collect())
        };
        let points = (0..n).map(|_| sample(&mut rng)).collect();
        let queries = (0..nq).map(|_| sample(&mut rng)).collect();
        (points, queries)
    }

    fn slices(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(Vec::as_slice).collect()
    }

    fn small(m: usize) -> HnswParams {
        HnswParams { m, ef_construction: 64, ef_search: 32 }
    }

    /// Every list within its layer's bound, no self-link, no duplicate; every point on layer 0
    /// reachable from the entry point; a point linked on an upper layer is on that layer.
    fn check_structure(adj: &Adjacency, m: usize) {
        let n = adj.len();
        assert!(adj.layer_count() >= 1 && (adj.entry() as usize) < n);
        for layer in 0..adj.layer_count() {
            let cap = if layer == 0 { 2 * m } else { m };
            for i in 0..n as u32 {
                let list = adj.neighbours(layer, i);
                assert!(list.len() <= cap, "point {i} has {} links on layer {layer}", list.len());
                assert!(!list.contains(&i), "point {i} links to itself on layer {layer}");
                let mut sorted = list.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), list.len(), "point {i} has a duplicate link on layer {layer}");
                if layer > 0 {
                    for &t in list {
                        let on_layer = !adj.neighbours(layer, t).is_empty() || t == adj.entry();
                        assert!(on_layer, "point {i} links to {t} on layer {layer}, where {t} has no links");
                    }
                }
            }
        }
        let mut seen = vec![false; n];
        let mut stack = vec![adj.entry()];
        seen[adj.entry() as usize] = true;
        while let Some(i) = stack.pop() {
            for &t in adj.neighbours(0, i) {
                if !seen[t as usize] {
                    seen[t as usize] = true;
                    stack.push(t);
                }
            }
        }
        let unreached = seen.iter().filter(|s| !**s).count();
        assert_eq!(unreached, 0, "{unreached} of {n} points unreachable from the entry point on layer 0");
    }

    #[test]
    fn links_stay_in_bounds_without_self_links_or_duplicates_and_reach_every_point() {
        let (points, _) = clustered(3000, 0, 24, 30, 0.5, 1);
        // M 4 leaves a dozen points unreachable before `link_orphans`; the baseline kernels (what
        // a CPU without AVX2 runs) build a graph as sound as the widest ones.
        let scalar = Kernels::at(crate::simd::Level::Scalar).unwrap();
        for (m, kernels) in [(4, Kernels::detect()), (12, Kernels::detect()), (8, scalar)] {
            let adj = HnswBuilder::new(small(m)).kernels(kernels).build(&slices(&points)).unwrap();
            assert!(adj.layer_count() >= 2, "3000 points at M {m} make more than one layer");
            check_structure(&adj, m);
            // Layer 0 is not starved: the mean degree is at least 3/4 M (measured: 7.2 at M 4,
            // 12.4 at M 12).
            let links: usize = (0..3000).map(|i| adj.neighbours(0, i).len()).sum();
            assert!(4 * links >= 3 * 3000 * m, "mean layer-0 degree {} at M {m}", links as f64 / 3000.0);
        }
    }

    #[test]
    fn one_thread_and_one_seed_give_one_graph() {
        let (points, _) = clustered(1500, 0, 16, 20, 0.5, 2);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let build = |seed| pool.install(|| HnswBuilder::new(small(8)).seed(seed).build(&slices(&points)).unwrap());
        let a = build(7);
        assert_eq!(a, build(7), "same seed, one thread: the same graph");
        assert_ne!(a, build(8), "another seed draws other levels");
    }

    #[test]
    fn tiny_graphs_link_every_point() {
        let (points, _) = clustered(25, 0, 8, 3, 0.5, 3);
        let m = 4;
        for n in [1, 2, m + 1, 25] {
            let adj = HnswBuilder::new(small(m)).build(&slices(&points[..n])).unwrap();
            assert_eq!(adj.len(), n);
            check_structure(&adj, m);
            if n == 2 {
                assert_eq!(adj.neighbours(0, 0), &[1]);
                assert_eq!(adj.neighbours(0, 1), &[0]);
            }
            if n == 1 {
                assert!(adj.neighbours(0, 0).is_empty());
            }
        }
        assert!(matches!(HnswBuilder::new(small(m)).build(&[]), Err(GraphError::PointCount { n: 0 })));
    }

    #[test]
    fn levels_follow_the_papers_distribution() {
        // P(level ≥ l) = M^-l: at M 16, 1/16 of the points reach layer 1, 1/256 layer 2.
        let ml = 1.0 / 16f64.ln();
        let levels: Vec<u8> = (0..200_000).map(|i| level(DEFAULT_SEED, i, ml)).collect();
        let at_least = |l: u8| levels.iter().filter(|&&x| x >= l).count() as f64 / levels.len() as f64;
        assert!((at_least(1) - 1.0 / 16.0).abs() < 0.003, "{}", at_least(1));
        assert!((at_least(2) - 1.0 / 256.0).abs() < 0.0006, "{}", at_least(2));
    }

    /// Recall@10 of a segment searched by `graph.rs` against exact search, for our graph and for
    /// hnsw_rs's graph (the builder before this one) over the same files.
    #[test]
    fn recall_matches_the_hnsw_rs_build_on_clustered_vectors() {
        let (dim, n, nq) = (32, FLAT_MAX_POINTS + 1000, 300);
        // Noise 1.0 around 100 centres: neighbourhoods overlap, so a low ef misses some of the
        // top 10 and the comparison is not saturated at 1.0.
        let (vectors, queries) = clustered(n, nq, dim, 100, 1.0, 4);
        let points: Vec<_> =
            vectors.iter().enumerate().map(|(i, v)| (PointRef { ord: i as u64, version: 1 }, v.clone())).collect();
        let params = HnswParams::default();
        let ours = tempfile::tempdir().unwrap();
        write_index(ours.path(), dim, &points, params).unwrap();
        let theirs = tempfile::tempdir().unwrap();
        for f in ["points.bin", "vectors.f32"] {
            std::fs::copy(ours.path().join(f), theirs.path().join(f)).unwrap();
        }
        let data: Vec<(&[f32], usize)> = vectors.iter().enumerate().map(|(i, v)| (v.as_slice(), i)).collect();
        let h = hnsw_rs::prelude::Hnsw::<f32, hnsw_rs::prelude::DistDot>::new(
            params.m,
            n,
            16,
            params.ef_construction,
            hnsw_rs::prelude::DistDot {},
        );
        h.parallel_insert_slice(&data);
        Adjacency::from_hnsw(&h, n).unwrap().write(&theirs.path().join("graph.bin")).unwrap();
        let recall = |dir: &std::path::Path, ef: usize| {
            let idx = VectorIndex::open(dir, dim, ef).unwrap();
            assert!(idx.is_graph());
            let hits: usize = queries
                .iter()
                .map(|q| {
                    let exact = idx.exact(q, 10, &|_| true);
                    idx.search(q, 10, &|_| true).iter().filter(|a| exact.iter().any(|e| e.0 == a.0)).count()
                })
                .sum();
            hits as f64 / (nq * 10) as f64
        };
        for ef in [10, 32] {
            let (r_ours, r_theirs) = (recall(ours.path(), ef), recall(theirs.path(), ef));
            eprintln!("recall@10 at ef {ef}: ours {r_ours:.4}, hnsw_rs {r_theirs:.4}");
            // The goal's tolerance: within 0.01 of the hnsw_rs graph at the same ef (measured:
            // 0.955 vs 0.956 at ef 10, 0.998 vs 0.998 at ef 32; both builds are parallel, so
            // each varies by ~0.003 from run to run).
            assert!(r_ours >= r_theirs - 0.01, "ef {ef}: recall@10 {r_ours} against hnsw_rs's {r_theirs}");
            assert!(r_ours >= [0.94, 0.99][usize::from(ef > 10)], "ef {ef}: recall@10 {r_ours}");
        }
    }
}
