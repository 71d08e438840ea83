//! The store: sled is the source of truth for products and their embeddings.
//!
//! Everything derived (vector segments, the keyword index) can be rebuilt from here without
//! running the model. One sled tree holds all records under one-byte prefixes, so that a product
//! write (record + vectors + change-log entry) is one atomic `apply_batch`.
//!
//! Keys (all `# Persisted: changing this needs a migration`):
//! - `p\0{id}` → `StoredProduct` JSON
//! - `v\0{id}\0{slot:u16 BE}` → embedding, little-endian f32 (slot `TEXT_SLOT` is the text vector)
//! - `l\0{seq:u64 BE}` → product id changed by that write (the change log)
//! - `m\0{name}` → metadata (`next_ord`, `model`)
//!
//! Ingest jobs are not here: they are files under `DATA/jobs/` (see `vitrine_indexer::jobs`).
//!
//! Only one process can open a sled database: the store is the single writer. Readers (the
//! searcher) never open it; they read immutable generations (see [`crate::generation`]).

use std::path::Path;

use vitrine_core::catalog::StoredProduct;
use vitrine_core::error::{CoreError, Result};
use vitrine_core::ModelId;

pub const TEXT_SLOT: u16 = u16::MAX;

/// How long [`Store::open`] waits for sled to release the folder lock of a handle just dropped.
pub const SLED_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub use vitrine_core::catalog::ProductWrite;

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix, 0];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

pub fn vec_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn bytes_to_vec(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Whether sled failed to open because its folder lock is held. sled 0.34 wraps the lock's
/// `WouldBlock` into an `ErrorKind::Other` error with the text "could not acquire lock on …"
/// (sled/src/config.rs), so its text is the only way to tell; this is the one place that reads it.
fn sled_lock_busy(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().starts_with("could not acquire lock on")
}

impl Store {
    /// Open (or create) the store. Callers hold the data directory's writer lock
    /// (`crate::lock`), so sled's own folder lock can only be held by a handle this process just
    /// dropped: sled releases it from a background thread a moment later, so a busy lock is
    /// retried for up to [`SLED_RELEASE_WAIT`] before it is reported.
    pub fn open(path: &Path) -> Result<Self> {
        let deadline = std::time::Instant::now() + SLED_RELEASE_WAIT;
        let db = loop {
            match sled::Config::new().path(path).cache_capacity(64 << 20).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if sled_lock_busy(&io) => {
                    if std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    return Err(CoreError::Store {
                        message: format!(
                            "{} is in use by another vitrine process (a running `vitrine serve` or `vitrine index`); \
                             stop it, or send the catalog to the running service with POST /v1/ingest",
                            path.display()
                        ),
                    });
                }
                Err(other) => return Err(CoreError::store(other)),
            }
        };
        let tree = db.open_tree("main")?;
        Ok(Store { db, tree })
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<StoredProduct>> {
        match self.tree.get(key(b'p', &[id.as_bytes()]))? {
            Some(b) => Ok(Some(serde_json::from_slice(&b).map_err(CoreError::store)?)),
            None => Ok(None),
        }
    }

    pub fn product_count(&self) -> usize {
        self.tree.scan_prefix([b'p', 0]).count()
    }

    /// All products, in id order.
    pub fn products(&self) -> impl Iterator<Item = Result<StoredProduct>> + '_ {
        self.tree
            .scan_prefix([b'p', 0])
            .map(|r| r.map_err(CoreError::from).and_then(|(_, v)| serde_json::from_slice(&v).map_err(CoreError::store)))
    }

    pub fn ids(&self) -> impl Iterator<Item = Result<String>> + '_ {
        self.tree
            .scan_prefix([b'p', 0])
            .keys()
            .map(|r| r.map_err(CoreError::from).map(|k| String::from_utf8_lossy(&k[2..]).into_owned()))
    }

    fn next_counter(&self, name: &str) -> Result<u64> {
        let k = key(b'm', &[name.as_bytes()]);
        let new = self.tree.update_and_fetch(&k, |old| {
            let n = old.map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]))).unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(u64::from_be_bytes(new.expect("just set").as_ref().try_into().expect("8 bytes")))
    }

    /// A fresh ordinal, never handed out before.
    pub fn new_ordinal(&self) -> Result<u64> {
        self.next_counter("next_ord")
    }

    /// The ordinal of `id`: its existing one, or a fresh one.
    pub fn ordinal_for(&self, id: &str) -> Result<u64> {
        match self.get(id)? {
            Some(p) => Ok(p.ord),
            None => self.new_ordinal(),
        }
    }

    /// A fresh change-log sequence number (monotonic; gaps are harmless).
    pub fn next_seq(&self) -> Result<u64> {
        self.next_counter("next_seq")
    }

    /// The highest sequence number in the change log (0 when empty).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self
            .tree
            .scan_prefix([b'l', 0])
            .keys()
            .next_back()
            .transpose()?
            .map(|k| u64::from_be_bytes(k[2..10].try_into().expect("8 bytes")))
            .unwrap_or(0))
    }

    /// Ids changed after `seq` (deduplicated, in first-change order), with the last seq seen.
    pub fn changes_since(&self, seq: u64) -> Result<(Vec<String>, u64)> {
        let start = key(b'l', &[&(seq + 1).to_be_bytes()]);
        let end = key(b'l', &[&u64::MAX.to_be_bytes()]);
        let mut seen = std::collections::HashSet::new();
        let mut ids = vec![];
        let mut last = seq;
        for r in self.tree.range(start..=end) {
            let (k, v) = r?;
            last = u64::from_be_bytes(k[2..10].try_into().expect("8 bytes"));
            let id = String::from_utf8_lossy(&v).into_owned();
            if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        Ok((ids, last))
    }

    /// Drop change-log entries up to `seq` once a generation has applied them.
    pub fn trim_changes(&self, seq: u64) -> Result<()> {
        let start = key(b'l', &[&0u64.to_be_bytes()]);
        let end = key(b'l', &[&seq.to_be_bytes()]);
        let mut batch = sled::Batch::default();
        for k in self.tree.range(start..=end).keys() {
            batch.remove(k?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn remove_derived(&self, batch: &mut sled::Batch, id: &str, old: Option<&StoredProduct>) {
        if let Some(old) = old {
            for slot in 0..old.image_vectors {
                batch.remove(key(b'v', &[id.as_bytes(), &slot.to_be_bytes()]));
            }
            batch.remove(key(b'v', &[id.as_bytes(), &TEXT_SLOT.to_be_bytes()]));
        }
    }

    /// Write a product with its vectors atomically, and log the change.
    pub fn put(&self, w: ProductWrite) -> Result<()> {
        let id = w.stored.product.id.clone();
        let old = self.get(&id)?;
        let mut batch = sled::Batch::default();
        self.remove_derived(&mut batch, &id, old.as_ref());
        for (slot, v) in w.image_vectors.iter().enumerate() {
            batch.insert(key(b'v', &[id.as_bytes(), &(slot as u16).to_be_bytes()]), vec_to_bytes(v));
        }
        if let Some(v) = &w.text_vector {
            batch.insert(key(b'v', &[id.as_bytes(), &TEXT_SLOT.to_be_bytes()]), vec_to_bytes(v));
        }
        batch.insert(key(b'p', &[id.as_bytes()]), serde_json::to_vec(&w.stored).map_err(CoreError::store)?);
        batch.insert(key(b'l', &[&w.stored.version.to_be_bytes()]), id.as_bytes());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Delete a product and its vectors atomically. Returns false if it did not exist.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let Some(old) = self.get(id)? else { return Ok(false) };
        let seq = self.next_seq()?;
        let mut batch = sled::Batch::default();
        self.remove_derived(&mut batch, id, Some(&old));
        batch.remove(key(b'p', &[id.as_bytes()]));
        batch.insert(key(b'l', &[&seq.to_be_bytes()]), id.as_bytes());
        self.tree.apply_batch(batch)?;
        Ok(true)
    }

    pub fn image_vectors(&self, p: &StoredProduct) -> Result<Vec<Vec<f32>>> {
        (0..p.image_vectors)
            .map(|slot| {
                let b = self.tree.get(key(b'v', &[p.product.id.as_bytes(), &slot.to_be_bytes()]))?;
                b.map(|b| bytes_to_vec(&b))
                    .ok_or_else(|| CoreError::store(format!("{}: image vector {slot} missing", p.product.id)))
            })
            .collect()
    }

    pub fn text_vector(&self, p: &StoredProduct) -> Result<Option<Vec<f32>>> {
        if !p.has_text_vector {
            return Ok(None);
        }
        Ok(self.tree.get(key(b'v', &[p.product.id.as_bytes(), &TEXT_SLOT.to_be_bytes()]))?.map(|b| bytes_to_vec(&b)))
    }

    pub fn model(&self) -> Result<Option<ModelId>> {
        match self.tree.get(key(b'm', &[b"model"]))? {
            Some(b) => Ok(Some(serde_json::from_slice(&b).map_err(CoreError::store)?)),
            None => Ok(None),
        }
    }

    pub fn set_model(&self, m: &ModelId) -> Result<()> {
        self.tree.insert(key(b'm', &[b"model"]), serde_json::to_vec(m).map_err(CoreError::store)?)?;
        Ok(())
    }

    /// Generic small records (jobs): `j\0{id}`.
    pub fn put_record(&self, kind: u8, id: &str, value: &[u8]) -> Result<()> {
        self.tree.insert(key(kind, &[id.as_bytes()]), value)?;
        Ok(())
    }

    pub fn get_record(&self, kind: u8, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key(kind, &[id.as_bytes()]))?.map(|b| b.to_vec()))
    }

    pub fn records(&self, kind: u8) -> Result<Vec<Vec<u8>>> {
        self.tree.scan_prefix([kind, 0]).values().map(|r| r.map(|v| v.to_vec()).map_err(CoreError::from)).collect()
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Copy every record (counters, change log and jobs included) into a new store at `dest`,
    /// flushed. Consistent when the caller holds the writer: nothing else writes meanwhile.
    /// Returns the number of records. A logical copy, unlike copying sled's files, cannot catch
    /// sled's background threads half-way.
    pub fn copy_to(&self, dest: &Path) -> Result<u64> {
        let db = sled::Config::new().path(dest).create_new(true).open()?;
        let tree = db.open_tree("main")?;
        let (mut n, mut batch) = (0u64, sled::Batch::default());
        for r in self.tree.iter() {
            let (k, v) = r?;
            batch.insert(k, v);
            n += 1;
            if n % 4096 == 0 {
                tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        tree.apply_batch(batch)?;
        db.flush()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitrine_core::catalog::Product;

    fn write(store: &Store, id: &str, n_images: usize) -> u64 {
        let seq = store.next_seq().unwrap();
        let stored = StoredProduct {
            product: Product { id: id.into(), ..Default::default() },
            ord: store.ordinal_for(id).unwrap(),
            version: seq,
            hash: "h".into(),
            image_vectors: n_images as u16,
            has_text_vector: true,
            image_errors: vec![],
            media: vec![],
            updated_at: 0,
            auto: Default::default(),
        };
        store
            .put(ProductWrite { stored, image_vectors: vec![vec![1.0, 0.0]; n_images], text_vector: Some(vec![0.0, 1.0]) })
            .unwrap();
        seq
    }

    #[test]
    fn writes_are_logged_and_ordinals_are_stable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write(&store, "a", 2);
        write(&store, "b", 1);
        let ord_a = store.get("a").unwrap().unwrap().ord;
        let s3 = write(&store, "a", 1);
        assert_eq!(store.get("a").unwrap().unwrap().ord, ord_a, "an update keeps the ordinal");
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(store.image_vectors(&a).unwrap().len(), 1);
        let (ids, last) = store.changes_since(0).unwrap();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(last, s3);
        assert!(store.delete("b").unwrap());
        assert!(!store.delete("b").unwrap());
        let (ids, _) = store.changes_since(s3).unwrap();
        assert_eq!(ids, vec!["b"]);
        assert_eq!(store.product_count(), 1);
        store.trim_changes(s3).unwrap();
        assert_eq!(store.changes_since(0).unwrap().0, vec!["b"]);
    }
}
