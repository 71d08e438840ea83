//! One writer per data directory (issue 10): the lock, reindex against a live writer, and what a
//! killed writer leaves for the next start.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vitrine_core::catalog::Product;
use vitrine_indexer::{IndexError, IndexOptions, Indexer, Progress};
use vitrine_model::{Embedder, FakeEmbedder};
use vitrine_searcher::Searcher;
use vitrine_store::generation;
use vitrine_store::lock::WriteLock;

use crate::common::*;

fn opts(wait_ms: u64) -> IndexOptions {
    IndexOptions { lock_wait: Duration::from_millis(wait_ms), ..Default::default() }
}

fn fake(dim: usize) -> Arc<dyn Embedder> {
    Arc::new(FakeEmbedder::new(dim))
}

/// Text-only products: the fake model embeds them without any image.
fn products(n: usize, tag: &str) -> Vec<Product> {
    (0..n).map(|i| Product { id: format!("{tag}{i:04}"), title: Some(format!("{tag} lamp {i}")), ..Default::default() }).collect()
}

fn searchable(data: &Path) -> u64 {
    Searcher::open(data, 16).unwrap().snapshot().map(|g| g.manifest.products).unwrap_or(0)
}

#[test]
fn a_second_indexer_waits_then_is_busy_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Indexer::open(&data, fake(16), opts(0)).unwrap();
    let t = Instant::now();
    let err = Indexer::open(&data, fake(16), opts(300)).err().expect("the directory is held");
    assert!(t.elapsed() >= Duration::from_millis(300), "it waited before giving up");
    match &err {
        IndexError::Busy { holder, waited, .. } => {
            assert!(holder.contains(&format!("pid {}", std::process::id())), "{holder}");
            assert_eq!(*waited, Duration::from_millis(300));
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(err.to_string().contains("stop it"), "{err}");
    // Maintenance writers are writers too.
    assert!(matches!(Indexer::open_without_model(&data, opts(50)), Err(IndexError::Busy { .. })));
    assert!(matches!(vitrine_indexer::recover(&data, opts(50)), Err(IndexError::Busy { .. })));
    drop(first);
    let second = Indexer::open(&data, fake(16), opts(0)).unwrap();
    second.put(products(3, "a")).unwrap();
    assert_eq!(searchable(&data), 3);
}

#[test]
fn the_cli_waits_for_a_writer_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ix = Indexer::open(&data, fake(16), opts(0)).unwrap();
    ix.put(products(3, "a")).unwrap();
    let t = Instant::now();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(ix);
    });
    // Before the lock, this failed at once on sled's own lock with "in use".
    let (ok, out, err) = vitrine(&["delete", "a0001", "--data", data.to_str().unwrap()]);
    release.join().unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("deleted a0001"), "{out}");
    assert!(t.elapsed() >= Duration::from_millis(1400), "the CLI waited for the holder");
    assert_eq!(searchable(&data), 2);
}

#[test]
fn a_killed_cli_writer_releases_the_lock_and_what_it_saved_is_searchable_after_recover() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One full chunk of text-only products, then one whose image server never answers in time:
    // the first chunk is in the store when the writer is killed, but no generation holds it.
    let asked = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    let server = http_server(move |_| {
        seen.store(true, Ordering::SeqCst);
        Reply::Slow(Duration::from_secs(20))
    });
    let mut rows: Vec<serde_json::Value> =
        (0..256).map(|i| json!({"id": format!("t{i:04}"), "title": format!("lamp {i}")})).collect();
    rows.push(json!({"id": "slow", "title": "slow", "image": format!("{server}/slow.jpg")}));
    let cat = dir.path().join("c.jsonl");
    write_jsonl(&cat, &rows);
    let mut child = std::process::Command::new(vitrine_bin())
        .args(["index", cat.to_str().unwrap(), "--data", data.to_str().unwrap(), "--device", "cpu"])
        .args(["--checkpoint-secs", "3600", "--fetch-timeout-secs", "60", "--model"])
        .arg(tiny_model_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !asked.load(Ordering::SeqCst) {
        assert!(t.elapsed() < Duration::from_secs(60), "the child never reached the second chunk");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The holder is the child, and says what it is.
    let holder = WriteLock::holder(&data).expect("the child described itself");
    assert_eq!((holder.pid, holder.role.as_str()), (child.id(), "vitrine index"));
    let err = Indexer::open_without_model(&data, opts(100)).err().expect("held by the child");
    assert!(err.to_string().contains("vitrine index"), "{err}");
    // sled writes its log out every 500 ms; then SIGKILL: no destructor, no flush, no generation.
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(searchable(&data), 0, "nothing was published before the kill");
    // The kernel released the lock with the process; the service's startup recovery applies the
    // store's change log without any new write.
    let report = vitrine_indexer::recover(&data, opts(1000)).unwrap().expect("a generation was built");
    assert!(report.changed > 0);
    let g = Searcher::open(&data, 16).unwrap().snapshot().unwrap();
    let ix = Indexer::open_without_model(&data, opts(0)).unwrap();
    assert_eq!(
        g.manifest.products,
        ix.products().embedded().unwrap().0.product_count() as u64,
        "every saved product is searchable"
    );
    assert!(g.manifest.products >= 1);
    assert!(ix.repair().unwrap().is_none(), "and nothing is left to apply");
}

#[test]
fn recover_applies_a_change_log_that_no_generation_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(vitrine_indexer::recover(&data, opts(0)).unwrap().is_none(), "no directory, nothing to do");
    assert!(!data.exists(), "and nothing created");
    let ix = Indexer::open(&data, fake(16), opts(0)).unwrap();
    ix.put(products(4, "a")).unwrap();
    // A store write that a killed writer never published (as `put` does before its generation).
    let e = FakeEmbedder::new(16);
    let stored = vitrine_core::catalog::StoredProduct {
        product: Product { id: "late".into(), title: Some("late lamp".into()), ..Default::default() },
        ord: ix.products().embedded().unwrap().0.new_ordinal().unwrap(),
        version: ix.products().embedded().unwrap().0.next_seq().unwrap(),
        hash: "h".into(),
        image_vectors: 0,
        has_text_vector: true,
        image_errors: vec![],
        media: vec![],
        updated_at: 0,
        auto: Default::default(),
    };
    let text_vector = Some(e.embed_texts(&["late lamp"]).unwrap().remove(0));
    ix.products()
        .embedded()
        .unwrap()
        .0
        .put(vitrine_store::store::ProductWrite { stored, image_vectors: vec![], text_vector })
        .unwrap();
    ix.products().embedded().unwrap().0.flush().unwrap();
    drop(ix);
    assert_eq!(searchable(&data), 4);
    let r = vitrine_indexer::recover(&data, opts(0)).unwrap().expect("built");
    assert_eq!(r.changed, 1);
    assert_eq!(searchable(&data), 5);
    assert!(vitrine_indexer::recover(&data, opts(0)).unwrap().is_none(), "idempotent");
}

/// Runs `f` when the reindex starts re-embedding, that is while it holds the lock.
struct OnStart<F: Fn() + Sync>(F);
impl<F: Fn() + Sync> Progress for OnStart<F> {
    fn start(&self, _total: u64) {
        (self.0)()
    }
}

#[test]
fn reindex_keeps_the_lock_until_it_switched_and_numbers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ix = Indexer::open(&data, fake(16), opts(0)).unwrap();
    for chunk in products(40, "p").chunks(10) {
        ix.put(chunk.to_vec()).unwrap();
    }
    let before = generation::current(&data).unwrap().unwrap().1.generation;
    // A reindex cannot start while the service's writer lives.
    assert!(matches!(
        vitrine_indexer::reindex(&data, fake(24), opts(100), &vitrine_indexer::NoProgress),
        Err(IndexError::Busy { .. })
    ));
    drop(ix);
    let tried = AtomicBool::new(false);
    let during = OnStart(|| {
        // The service's writer (old model) and a maintenance writer, mid-reindex: both refused,
        // so neither removes the new store nor writes to the old one.
        assert!(matches!(Indexer::open(&data, fake(16), opts(100)), Err(IndexError::Busy { .. })));
        assert!(matches!(Indexer::open_without_model(&data, opts(0)), Err(IndexError::Busy { .. })));
        tried.store(true, Ordering::SeqCst);
    });
    let res = vitrine_indexer::reindex(&data, fake(24), opts(0), &during).unwrap();
    assert!(tried.load(Ordering::SeqCst));
    assert_eq!(res.summary.ingested, 40);
    let (_, m) = generation::current(&data).unwrap().unwrap();
    assert!(m.generation > before, "generation {} after {before}", m.generation);
    assert_eq!((m.products, m.model.dim), (40, 24));
    assert_eq!(searchable(&data), 40);
    let stores: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store"))
        .collect();
    assert_eq!(stores, std::slice::from_ref(&m.store), "only the new store is left");
    // The next writer is the new model's, and numbering still goes on.
    let ix = Indexer::open(&data, fake(24), opts(0)).unwrap();
    ix.put(products(1, "q")).unwrap();
    assert_eq!(generation::current(&data).unwrap().unwrap().1.generation, m.generation + 1);
    assert_eq!(searchable(&data), 41);
}

#[test]
fn a_store_left_by_an_interrupted_reindex_is_removed_only_when_unreferenced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Indexer::open(&data, fake(16), opts(0)).unwrap().put(products(2, "a")).unwrap();
    // A crashed reindex's store, and a store that an older generation still names.
    std::fs::create_dir_all(data.join("store-1")).unwrap();
    let gens = data.join(generation::GENERATIONS_DIR);
    let (live_dir, mut m) = generation::current(&data).unwrap().unwrap();
    m.store = "store-2".into();
    let old = gens.join("gen-00000000");
    generation::copy_tree(&live_dir, &old, false).unwrap();
    std::fs::write(old.join(generation::MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
    std::fs::create_dir_all(data.join("store-2")).unwrap();
    drop(Indexer::open_without_model(&data, opts(0)).unwrap());
    assert!(!data.join("store-1").exists(), "unreferenced: removed");
    assert!(data.join("store-2").exists(), "referenced by a generation: kept");
    assert!(data.join("store").exists(), "live: kept");
    // An unreadable manifest: nothing is removed.
    std::fs::create_dir_all(data.join("store-3")).unwrap();
    std::fs::write(old.join(generation::MANIFEST_FILE), b"{").unwrap();
    drop(Indexer::open_without_model(&data, opts(0)).unwrap());
    assert!(data.join("store-3").exists());
    assert_eq!(searchable(&data), 2);
}
