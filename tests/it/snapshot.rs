//! `vitrine snapshot create` / `restore`: consistent copies of a served data directory.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vitrine_core::catalog::Product;
use vitrine_indexer::snapshot::{self, SnapshotInfo};
use vitrine_indexer::{IndexOptions, Indexer};
use vitrine_model::{Embedder, FakeEmbedder};
use vitrine_searcher::{SearchQuery, Searcher};
use vitrine_store::generation::{self, Generation, SegmentCache};
use vitrine_store::store::Store;

use crate::common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn info(out: &str) -> SnapshotInfo {
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (id, score) of the hits, and the total, for a text query through every channel.
fn results(data: &Path, text: &str) -> (Vec<(String, f32)>, usize) {
    let searcher = Searcher::open(data, 64).unwrap();
    let v = tiny_model().embed_texts(&[text]).unwrap().remove(0);
    let q = SearchQuery { text: Some(text.into()), text_vector: Some(v), k: 10, ..Default::default() };
    let r = searcher.search(&q).unwrap();
    (r.hits.into_iter().map(|h| (h.id, h.score)).collect(), r.total)
}

#[test]
fn a_restored_copy_answers_every_query_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    index_json(&root().join("demo/catalog.jsonl"), &data, &[]);
    std::fs::create_dir_all(data.join("media/ab")).unwrap();
    std::fs::write(data.join("media/ab/abcdef"), b"image bytes").unwrap();
    // What `vitrine tune` saved travels with the copy (its content is the searcher's to check).
    std::fs::write(data.join("relevance.json"), b"{\"tuned\": true}").unwrap();
    let out = dir.path().join("snap");
    let (ok, stdout, err) = vitrine(&["snapshot", "create", "--data", s(&data), s(&out)]);
    assert!(ok, "{err}");
    let made = info(&stdout);
    assert_eq!(made.products, 34);
    assert!(made.media);
    let restored = dir.path().join("restored");
    let (ok, stdout, err) = vitrine(&["snapshot", "restore", s(&out), "--data", s(&restored)]);
    assert!(ok, "{err}");
    assert_eq!(info(&stdout).generation, made.generation, "a new target keeps the number");
    for q in ["red", "poster", "wooden chair", "astronaut", "a blue mug on a table"] {
        let (a, b) = (results(&data, q), results(&restored, q));
        assert!(!a.0.is_empty(), "{q}");
        assert_eq!(a, b, "{q}");
    }
    assert_eq!(std::fs::read(restored.join("media/ab/abcdef")).unwrap(), b"image bytes");
    assert_eq!(std::fs::read(restored.join("relevance.json")).unwrap(), b"{\"tuned\": true}");
    // The restored directory is a working data directory: the next write goes on from it.
    let more = index_json(&root().join("demo/catalog.jsonl"), &restored, &[]);
    assert_eq!(more["unchanged"], 34, "{more}");
}

#[test]
fn restore_refuses_a_non_empty_target_and_a_broken_snapshot_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ix = Indexer::open(&data, Arc::new(FakeEmbedder::new(16)), IndexOptions::default()).unwrap();
    ix.put(products(5, "a")).unwrap();
    let out = dir.path().join("snap");
    snapshot::create(&ix, &out).unwrap();
    assert!(snapshot::create(&ix, &out).is_err(), "never into a non-empty folder");
    assert!(snapshot::create(&ix, &data.join("inside")).is_err(), "never inside the data directory");
    drop(ix);
    let wait = Duration::from_secs(1);
    // A non-empty target without --force, and a folder that is not a data directory even with it.
    let err = snapshot::restore(&out, &data, false, wait).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), b"mine").unwrap();
    assert!(snapshot::restore(&out, &foreign, true, wait).is_err());
    assert_eq!(std::fs::read(foreign.join("thesis.tex")).unwrap(), b"mine");
    assert!(snapshot::restore(&out, &out.join("x"), false, wait).is_err(), "never into itself");
    // Broken snapshots: each refused, with the target untouched.
    let target = dir.path().join("target");
    let tamper = |name: &str, f: &dyn Fn(&Path)| {
        let bad = dir.path().join(name);
        generation::copy_tree(&out, &bad, false).unwrap();
        f(&bad);
        let e = snapshot::restore(&bad, &target, false, wait).unwrap_err().to_string();
        assert!(!target.join(generation::CURRENT_FILE).exists(), "{name}: {e}");
        e
    };
    let e = tamper("future", &|p| std::fs::write(p.join("VERSION"), br#"{"format": 99}"#).unwrap());
    assert!(e.contains("newer"), "{e}");
    let e = tamper("escape", &|p| {
        let gen = std::fs::read_to_string(p.join("CURRENT")).unwrap();
        let mpath = p.join("generations").join(gen.trim()).join("manifest.json");
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
        m["segments"] = serde_json::json!(["../../../../etc"]);
        std::fs::write(&mpath, m.to_string()).unwrap();
    });
    assert!(e.contains("segment"), "{e}");
    let e = tamper("huge", &|p| std::fs::write(p.join("SNAPSHOT.json"), vec![b' '; 1 << 20]).unwrap());
    assert!(e.contains("larger"), "{e}");
    let e = tamper("nostore", &|p| std::fs::remove_dir_all(p.join("store")).unwrap());
    assert!(e.contains("missing"), "{e}");
    let e = tamper("lying", &|p| {
        let mut i: serde_json::Value = serde_json::from_slice(&std::fs::read(p.join("SNAPSHOT.json")).unwrap()).unwrap();
        i["products"] = serde_json::json!(6);
        std::fs::write(p.join("SNAPSHOT.json"), i.to_string()).unwrap();
    });
    assert!(e.contains("products"), "{e}");
    // With --force, the data directory is replaced by the snapshot.
    let ix = Indexer::open(&data, Arc::new(FakeEmbedder::new(16)), IndexOptions::default()).unwrap();
    ix.put(products(3, "b")).unwrap();
    drop(ix);
    snapshot::restore(&out, &data, true, wait).unwrap();
    let g = Searcher::open(&data, 16).unwrap().snapshot().unwrap();
    assert_eq!(g.manifest.products, 5);
    assert!(g.product("b0000").unwrap().is_none());
    assert!(!data.join(vitrine_indexer::RESTORING_FILE).exists());
}

fn products(n: usize, tag: &str) -> Vec<Product> {
    (0..n).map(|i| Product { id: format!("{tag}{i:04}"), title: Some(format!("{tag} lamp {i}")), ..Default::default() }).collect()
}

#[test]
fn a_snapshot_taken_while_another_thread_writes_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fake = FakeEmbedder::new(16);
    let ix = Indexer::open(&data, Arc::new(FakeEmbedder::new(16)), IndexOptions::default()).unwrap();
    ix.put(products(20, "base")).unwrap();
    // The service's pattern: one writer behind a mutex, shared by request threads.
    let writer = Arc::new(Mutex::new(ix));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = (writer.clone(), stop.clone());
    let busy = std::thread::spawn(move || {
        let mut i = 0u64;
        while !w.1.load(std::sync::atomic::Ordering::SeqCst) {
            let ix = w.0.lock().unwrap();
            // Store writes that no generation holds yet, as between two chunks of an ingest.
            let id = format!("w{i:05}");
            let stored = vitrine_core::catalog::StoredProduct {
                product: Product { id: id.clone(), title: Some(format!("lamp {i}")), ..Default::default() },
                ord: ix.products().embedded().unwrap().0.new_ordinal().unwrap(),
                version: ix.products().embedded().unwrap().0.next_seq().unwrap(),
                hash: id.clone(),
                image_vectors: 0,
                has_text_vector: true,
                image_errors: vec![],
                media: vec![],
                updated_at: 0,
                auto: Default::default(),
            };
            let text_vector = Some(fake.embed_texts(&[&id]).unwrap().remove(0));
            ix.products()
                .embedded()
                .unwrap()
                .0
                .put(vitrine_store::store::ProductWrite { stored, image_vectors: vec![], text_vector })
                .unwrap();
            if i.is_multiple_of(7) {
                ix.sync().unwrap();
            }
            drop(ix);
            i += 1;
            std::thread::yield_now();
        }
        i
    });
    let mut seen = vec![];
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        let out = dir.path().join(format!("snap{round}"));
        let made = snapshot::create(&writer.lock().unwrap(), &out).unwrap();
        seen.push(made.products);
        // Every product of the copied store is in the copied generation, at the same version.
        let store = Store::open(&out.join(&made.store)).unwrap();
        let g = Generation::open_current(&out, &mut SegmentCache::new(), 16).unwrap().unwrap();
        assert_eq!(g.manifest.products, store.product_count() as u64, "round {round}");
        let mut ids = HashSet::new();
        for p in store.products() {
            let p = p.unwrap();
            let in_gen = g.product(&p.product.id).unwrap().unwrap_or_else(|| panic!("{} not in the generation", p.product.id));
            assert_eq!(in_gen.version, p.version);
            ids.insert(p.product.id);
        }
        assert_eq!(ids.len() as u64, made.products);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = busy.join().unwrap();
    assert!(written > 0);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen[0] > 20, "the writer wrote before the first snapshot: {seen:?}");
}

#[test]
fn restoring_over_a_served_directory_moves_its_readers_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // `a` has few generations, `b` many: b's snapshot is numbered below what `a` already used.
    let ia = Indexer::open(&a, Arc::new(FakeEmbedder::new(16)), IndexOptions::default()).unwrap();
    ia.put(products(4, "a")).unwrap();
    let snap_a = dir.path().join("snap-a");
    snapshot::create(&ia, &snap_a).unwrap();
    drop(ia);
    let ib = Indexer::open(&b, Arc::new(FakeEmbedder::new(16)), IndexOptions::default()).unwrap();
    for chunk in products(12, "b").chunks(2) {
        ib.put(chunk.to_vec()).unwrap();
    }
    drop(ib);
    let reader = Searcher::open(&b, 16).unwrap();
    let before = reader.snapshot().unwrap().manifest.generation;
    let restored = snapshot::restore(&snap_a, &b, true, Duration::from_secs(1)).unwrap();
    assert!(restored.generation > before, "{} after {before}", restored.generation);
    assert!(reader.refresh().unwrap(), "the reader takes the restored generation");
    let g = reader.snapshot().unwrap();
    assert_eq!(g.manifest.products, 4);
    assert!(g.product("a0003").unwrap().is_some() && g.product("b0000").unwrap().is_none());
    // Its segments got names the directory never used, so no loaded segment is mistaken for one.
    assert!(g.manifest.segments.iter().all(|s| s.starts_with(&format!("seg-{:08}-", restored.generation))), "{:?}", g.manifest);
    // And the next write numbers on from there.
    let ib = Indexer::open(&b, Arc::new(FakeEmbedder::new(16)), IndexOptions::default()).unwrap();
    ib.put(products(1, "c")).unwrap();
    assert!(reader.refresh().unwrap());
    assert_eq!(reader.snapshot().unwrap().manifest.generation, restored.generation + 1);
    assert_eq!(reader.snapshot().unwrap().manifest.products, 5);
}

/// `POST /v1/snapshots` (admin only) writes a snapshot into the service's snapshot directory while
/// it serves; `GET /v1/snapshots` lists it; restored on another path it answers like the original.
#[actix_web::test]
async fn the_admin_api_takes_a_snapshot_while_serving_that_restores_identically() {
    use actix_web::http::StatusCode;
    use actix_web::test::{self, TestRequest};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    index_json(&root().join("demo/catalog.jsonl"), &data, &[]);
    let snaps = dir.path().join("snaps");
    let state = crate::service::state_for(data.clone(), |c| c.snapshot_dir = Some(snaps.clone()));
    let app = test::init_service(vitrine_web::app(state.clone())).await;
    let (status, v) = crate::service::call(&app, TestRequest::post().uri("/v1/snapshots")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{v}");
    let (status, v) =
        crate::service::call(&app, TestRequest::post().uri("/v1/snapshots").insert_header(("x-api-key", "wrong"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let admin = ("x-api-key", crate::service::KEY);
    let (status, made) = crate::service::call(&app, TestRequest::post().uri("/v1/snapshots").insert_header(admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["products"], 34, "{made}");
    let name = made["name"].as_str().unwrap();
    assert!(name.starts_with("snapshot-") && !name.contains('/'), "{made}");
    // A second one in the same second gets its own folder.
    let (status, second) = crate::service::call(&app, TestRequest::post().uri("/v1/snapshots").insert_header(admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_ne!(second["name"], made["name"]);
    let (status, list) = crate::service::call(&app, TestRequest::get().uri("/v1/snapshots").insert_header(admin)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: HashSet<&str> = list["snapshots"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, HashSet::from([name, second["name"].as_str().unwrap()]), "{list}");
    // Still serving after the snapshots.
    let (status, v) = crate::service::call(&app, TestRequest::get().uri("/v1/search?q=mug")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    state.writes.close();
    let restored = dir.path().join("restored");
    let (ok, _, err) = vitrine(&["snapshot", "restore", s(&snaps.join(name)), "--data", s(&restored)]);
    assert!(ok, "{err}");
    for q in ["red", "poster", "wooden chair", "a blue mug on a table"] {
        let (a, b) = (results(&data, q), results(&restored, q));
        assert!(!a.0.is_empty(), "{q}");
        assert_eq!(a, b, "{q}");
    }
}
