use std::collections::HashMap;

use super::*;
use crate::store::{ProductWrite, Store};
use vitrine_core::catalog::{Product, StoredProduct};
use vitrine_model::embed::{Embedder, FakeEmbedder};

const DIM: usize = 32;

struct Dir {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    store: Store,
    name: String,
    embedder: FakeEmbedder,
}

fn new_dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let store = Store::open(&data.join(DEFAULT_STORE)).unwrap();
    Dir { _tmp: tmp, data, store, name: DEFAULT_STORE.into(), embedder: FakeEmbedder::new(DIM) }
}

impl Dir {
    fn model(&self) -> ModelId {
        self.embedder.model_id().clone()
    }

    /// Write a product with one image vector and one text vector, as the indexer would.
    fn put(&self, id: &str, title: &str) {
        let v = self.embedder.embed_texts(&[title, &format!("{title} photo {id}")]).unwrap();
        let stored = StoredProduct {
            product: Product { id: id.into(), title: Some(title.into()), ..Default::default() },
            ord: self.store.ordinal_for(id).unwrap(),
            version: self.store.next_seq().unwrap(),
            hash: title.into(),
            image_vectors: 1,
            has_text_vector: true,
            image_errors: vec![],
            media: vec![],
            updated_at: 0,
            auto: Default::default(),
        };
        self.store.put(ProductWrite { stored, image_vectors: vec![v[1].clone()], text_vector: Some(v[0].clone()) }).unwrap();
    }

    fn build(&self, opts: &BuildOptions) -> Option<BuildReport> {
        build_next(&self.data, &self.store, &self.name, &self.model(), opts).unwrap()
    }

    fn open(&self) -> Generation {
        Generation::open_current(&self.data, &mut SegmentCache::new(), 64).unwrap().expect("a live generation")
    }

    /// Exact top 5 product ids (best point per product) over both vector channels of `g`.
    fn top(&self, g: &Generation, query: &str) -> Vec<(String, f32)> {
        let q = &self.embedder.embed_texts(&[query]).unwrap()[0];
        let mut best: HashMap<u64, f32> = HashMap::new();
        for (img, txt) in &g.segments {
            for index in [img, txt] {
                for (i, s) in index.exact(q, usize::MAX, &|i| g.alive(&index.points[i])) {
                    let e = best.entry(index.points[i].ord).or_insert(f32::MIN);
                    *e = e.max(s);
                }
            }
        }
        let mut ranked: Vec<(String, f32)> =
            best.into_iter().map(|(ord, s)| (g.product_by_ord(ord).unwrap().unwrap().product.id, s)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(5);
        ranked
    }
}

fn no_merge() -> BuildOptions {
    BuildOptions { tombstone_ratio: 1.0, max_segments: 100, ..Default::default() }
}

const TITLES: [&str; 6] = ["red mug", "blue chair", "green lamp", "red chair", "blue mug", "yellow lamp"];

fn seed(d: &Dir, n: usize) {
    for i in 0..n {
        d.put(&format!("p{i}"), &format!("{} {i}", TITLES[i % TITLES.len()]));
    }
}

#[test]
fn an_incremental_step_adds_one_segment_and_tombstones_the_old_points() {
    let d = new_dir();
    seed(&d, 20);
    let first = d.build(&no_merge()).unwrap();
    assert_eq!((first.generation, first.changed, first.merged), (1, 20, true), "the first build is full");
    assert!(d.build(&no_merge()).is_none(), "nothing changed, nothing built");
    d.put("p3", "purple sofa");
    d.put("p99", "new green mug");
    let step = d.build(&no_merge()).unwrap();
    assert_eq!((step.generation, step.changed, step.merged), (2, 2, false));
    let g = d.open();
    assert_eq!(g.manifest.segments, ["seg-00000001", "seg-00000002"]);
    assert_eq!(g.manifest.products, 21);
    // 20 products × 2 points, then 2 × 2 new points, one product of which replaced 2 old ones.
    assert_eq!((g.manifest.points(), g.manifest.live_points, g.manifest.tombstones()), (44, 42, 2));
    assert_eq!(d.top(&g, "purple sofa")[0].0, "p3", "the update is searchable");
    assert_eq!(g.product("p3").unwrap().unwrap().product.title.as_deref(), Some("purple sofa"));
    assert!(d.store.changes_since(0).unwrap().0.is_empty(), "the applied change log is trimmed");
}

#[test]
fn a_build_merges_past_the_tombstone_ratio_with_identical_results() {
    let d = new_dir();
    seed(&d, 20);
    d.build(&no_merge()).unwrap();
    for i in 0..3 {
        d.put(&format!("p{i}"), &format!("orange table {i}"));
    }
    d.build(&no_merge()).unwrap();
    let before = d.open();
    assert_eq!(before.manifest.segments.len(), 2);
    let queries = ["red mug", "blue chair", "orange table", "lamp"];
    // 6 of 46 points are dead (13%); two more updates push it past 20%.
    let opts = BuildOptions { tombstone_ratio: 0.2, max_segments: 100, ..Default::default() };
    d.put("p10", "orange table 10");
    d.put("p11", "red mug 11");
    let r = d.build(&opts).unwrap();
    assert!(r.merged, "{r:?}");
    let after = d.open();
    assert_eq!(after.manifest.segments, [format!("seg-{:08}", r.generation)]);
    assert_eq!(after.manifest.tombstones(), 0);
    assert_eq!(after.manifest.points(), 40);
    // The same store content gives the same ranking, merged or not.
    d.put("p10", "orange table 10 again");
    d.build(&no_merge()).unwrap();
    let incremental = d.open();
    d.build(&BuildOptions { full: true, ..no_merge() }).unwrap();
    let merged = d.open();
    assert_eq!(merged.manifest.segments.len(), 1);
    assert!(incremental.manifest.segments.len() > 1);
    for q in queries {
        let (a, b) = (d.top(&incremental, q), d.top(&merged, q));
        assert_eq!(a.len(), 5);
        assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>(), "{q}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x.1 - y.1).abs() < 1e-6, "{q}: {x:?} vs {y:?}");
        }
    }
}

#[test]
fn past_the_segment_count_the_small_segments_fold_into_one_with_identical_results() {
    let d = new_dir();
    seed(&d, 30);
    let opts = BuildOptions { tombstone_ratio: 1.0, max_segments: 3, ..Default::default() };
    d.build(&opts).unwrap();
    let base = d.open().manifest.segments[0].clone();
    d.put("p1", "a");
    assert!(!d.build(&opts).unwrap().merged);
    d.put("p2", "b");
    assert!(!d.build(&opts).unwrap().merged);
    assert_eq!(d.open().manifest.segments.len(), 3);
    d.put("p3", "c");
    let r = d.build(&opts).unwrap();
    assert!(r.merged, "a fourth segment would pass max_segments");
    let tiered = d.open();
    // The base segment (60 of 66 points) is kept as it is; the two small ones and p3 fold into
    // the new segment, which holds only live points: p1, p2 and p3, two each.
    assert_eq!(tiered.manifest.segments, [base, format!("seg-{:08}", r.generation)]);
    assert_eq!(tiered.segments[1].0.len() + tiered.segments[1].1.len(), 6);
    assert_eq!((tiered.manifest.points(), tiered.manifest.live_points, tiered.manifest.tombstones()), (66, 60, 6));
    assert_eq!(tiered.manifest.products, 30);
    // The same store content ranks the same, folded or rebuilt in full.
    d.build(&BuildOptions { full: true, ..no_merge() }).unwrap();
    let full = d.open();
    assert_eq!(full.manifest.segments.len(), 1);
    for q in ["a", "b", "c", "red mug 7", "blue chair"] {
        let (x, y) = (d.top(&tiered, q), d.top(&full, q));
        assert_eq!(x.iter().map(|h| &h.0).collect::<Vec<_>>(), y.iter().map(|h| &h.0).collect::<Vec<_>>(), "{q}");
        for (a, b) in x.iter().zip(&y) {
            assert!((a.1 - b.1).abs() < 1e-6, "{q}: {a:?} vs {b:?}");
        }
    }
}

#[test]
fn past_the_segment_count_without_a_dominant_segment_everything_is_merged() {
    let d = new_dir();
    seed(&d, 1);
    let opts = BuildOptions { tombstone_ratio: 1.0, max_segments: 3, ..Default::default() };
    d.build(&opts).unwrap();
    d.put("q1", "a");
    d.build(&opts).unwrap();
    d.put("q2", "b");
    d.build(&opts).unwrap();
    d.put("q3", "c");
    let r = d.build(&opts).unwrap();
    assert!(r.merged);
    let g = d.open();
    assert_eq!(g.manifest.segments, [format!("seg-{:08}", r.generation)], "no segment held half the points");
    assert_eq!((g.manifest.products, g.manifest.points(), g.manifest.tombstones()), (4, 8, 0));
}

#[test]
fn numbers_never_repeat_across_a_store_switch_or_a_lost_current() {
    let mut d = new_dir();
    seed(&d, 5);
    d.build(&no_merge()).unwrap();
    d.put("p1", "x");
    d.build(&no_merge()).unwrap();
    let gen2 = std::fs::read(d.data.join(GENERATIONS_DIR).join("gen-00000002/manifest.json")).unwrap();
    // A reindex: another store (and model) starts over from a full build, numbered after the rest.
    d.name = "store-1".into();
    d.store = Store::open(&d.data.join(&d.name)).unwrap();
    d.put("q1", "only product of the new store");
    let r = d.build(&no_merge()).unwrap();
    assert_eq!(r.generation, 3);
    assert_eq!(
        std::fs::read(d.data.join(GENERATIONS_DIR).join("gen-00000002/manifest.json")).unwrap(),
        gen2,
        "an older generation is never overwritten"
    );
    assert_eq!(d.open().manifest.store, "store-1");
    // A folder from a build that crashed before `CURRENT` moved, and a stale temporary one.
    std::fs::create_dir_all(d.data.join(GENERATIONS_DIR).join("gen-00000007")).unwrap();
    std::fs::create_dir_all(d.data.join(GENERATIONS_DIR).join(".tmp-00000009")).unwrap();
    d.put("q2", "another");
    assert_eq!(d.build(&no_merge()).unwrap().generation, 10);
    assert!(!d.data.join(GENERATIONS_DIR).join(".tmp-00000009").exists(), "collected");
    // Even with the live folder gone (and no higher one), `CURRENT`'s name keeps the count.
    assert!(!d.data.join(GENERATIONS_DIR).join("gen-00000007").exists(), "collected with the old ones");
    std::fs::remove_dir_all(d.data.join(GENERATIONS_DIR).join("gen-00000010")).unwrap();
    assert_eq!(high_water(&d.data).unwrap(), 10);
    d.put("q3", "and another");
    assert_eq!(d.build(&no_merge()).unwrap().generation, 11);
    assert_eq!(high_water(&d.data).unwrap(), 11);
}

#[test]
fn the_build_flushes_the_store_and_publishes_durably() {
    let d = new_dir();
    seed(&d, 3);
    d.build(&no_merge()).unwrap();
    let (dir, m) = current(&d.data).unwrap().unwrap();
    assert_eq!(dir, d.data.join(GENERATIONS_DIR).join("gen-00000001"));
    assert_eq!(read_manifest(&dir).unwrap(), m);
    assert!(!d.data.join("CURRENT.tmp").exists());
    // `publish` never replaces an existing generation folder.
    let tmp = d.data.join(GENERATIONS_DIR).join(".tmp-x");
    std::fs::create_dir_all(&tmp).unwrap();
    assert!(publish(&d.data, &tmp, &m).is_err());
    assert_eq!(current(&d.data).unwrap().unwrap().1, m);
}

#[test]
fn current_refuses_a_name_outside_the_generations_folder() {
    let d = new_dir();
    std::fs::write(d.data.join(CURRENT_FILE), "../../etc").unwrap();
    assert!(current(&d.data).is_err());
    std::fs::write(d.data.join(CURRENT_FILE), ".tmp-00000001").unwrap();
    assert!(current(&d.data).is_err());
}

#[test]
fn live_and_referenced_stores_come_from_the_manifests() {
    let mut d = new_dir();
    assert_eq!(live_store(&d.data).unwrap(), DEFAULT_STORE);
    seed(&d, 2);
    d.build(&no_merge()).unwrap();
    d.name = "store-9".into();
    d.store = Store::open(&d.data.join(&d.name)).unwrap();
    seed(&d, 2);
    d.build(&no_merge()).unwrap();
    assert_eq!(live_store(&d.data).unwrap(), "store-9");
    let refs = referenced_stores(&d.data).unwrap().unwrap();
    assert!(refs.contains("store") && refs.contains("store-9"));
    // A lost CURRENT still finds the live store through the newest generation.
    std::fs::remove_file(d.data.join(CURRENT_FILE)).unwrap();
    assert_eq!(live_store(&d.data).unwrap(), "store-9");
    // An unreadable manifest: nobody can say what is unreferenced.
    std::fs::write(d.data.join(GENERATIONS_DIR).join("gen-00000001").join(MANIFEST_FILE), b"{").unwrap();
    assert!(referenced_stores(&d.data).unwrap().is_none());
}
