//! Where the write service keeps products: the seam between ingest and the backend.
//!
//! Ingest (hashing, fetching, embedding, tagging, the media store) is the same for every backend;
//! what a product write *is* differs:
//! - **embedded**: one atomic sled batch (record, vectors, change-log entry); the derived indexes
//!   (tantivy, vector segments) follow in generations built from the change log
//!   ([`ProductStore::builds_generations`]);
//! - **engine** (`oceanbase://…`): one SQL transaction per product (row, vectors, attributes);
//!   the engine indexes it itself, so a write is searchable once committed and there are no
//!   generations. Ordinals and versions come from the engine, so several writers on several nodes
//!   never hand out the same one.

use vitrine_core::catalog::{ProductWrite, StoredProduct};
use vitrine_core::ModelId;
use vitrine_engine::Engine;
use vitrine_store::store::Store;

use crate::Result;

/// The product store of one writer.
pub enum ProductStore {
    /// sled, in the data directory's store folder `name` (the live generation names it).
    Embedded { store: Store, name: String },
    /// A database of an OceanBase cluster (or seekdb).
    Engine(Engine),
}

impl ProductStore {
    /// Whether writes become searchable through generations (`sync` builds one) rather than at
    /// commit.
    pub fn builds_generations(&self) -> bool {
        matches!(self, ProductStore::Embedded { .. })
    }

    /// The embedded store, for what only it has (generations, its change log).
    pub fn embedded(&self) -> Option<(&Store, &str)> {
        match self {
            ProductStore::Embedded { store, name } => Some((store, name)),
            ProductStore::Engine(_) => None,
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<StoredProduct>> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.get(id)?,
            ProductStore::Engine(e) => e.get(id)?,
        })
    }

    /// Write a product with its vectors atomically.
    pub fn put(&self, w: ProductWrite) -> Result<()> {
        match self {
            ProductStore::Embedded { store, .. } => store.put(w)?,
            ProductStore::Engine(e) => e.put(&w)?,
        }
        Ok(())
    }

    /// Delete a product and its vectors atomically; false when it did not exist.
    pub fn delete(&self, id: &str) -> Result<bool> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.delete(id)?,
            ProductStore::Engine(e) => e.delete(id)?,
        })
    }

    /// The ordinal of product `id`: `known` (its stored one) when it has one, else a new one that
    /// is never reused.
    pub fn ordinal(&self, id: &str, known: Option<u64>) -> Result<u64> {
        if let Some(o) = known {
            return Ok(o);
        }
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.new_ordinal()?,
            ProductStore::Engine(e) => e.ordinal_for(id)?,
        })
    }

    /// A new write version, above every earlier one.
    pub fn next_seq(&self) -> Result<u64> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.next_seq()?,
            ProductStore::Engine(e) => e.next_seq()?,
        })
    }

    pub fn ids(&self) -> Result<Vec<String>> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.ids().collect::<vitrine_core::Result<_>>()?,
            ProductStore::Engine(e) => e.ids()?,
        })
    }

    pub fn product_count(&self) -> Result<u64> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.product_count() as u64,
            ProductStore::Engine(e) => e.product_count()?,
        })
    }

    /// Every product, for a scan (media collection). The engine is read page by page.
    pub fn for_each_product(&self, mut f: impl FnMut(StoredProduct)) -> Result<()> {
        match self {
            ProductStore::Embedded { store, .. } => {
                for p in store.products() {
                    f(p?);
                }
            }
            ProductStore::Engine(e) => {
                const PAGE: usize = 1_000;
                let mut offset = 0;
                loop {
                    let (page, _) = e.list_products(None, offset, PAGE)?;
                    let n = page.len();
                    page.into_iter().for_each(&mut f);
                    if n < PAGE {
                        break;
                    }
                    offset += n;
                }
            }
        }
        Ok(())
    }

    pub fn image_vectors(&self, p: &StoredProduct) -> Result<Vec<Vec<f32>>> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.image_vectors(p)?,
            ProductStore::Engine(e) => e.image_vectors(&p.product.id)?,
        })
    }

    pub fn text_vector(&self, p: &StoredProduct) -> Result<Option<Vec<f32>>> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.text_vector(p)?,
            ProductStore::Engine(e) => e.text_vector(&p.product.id)?,
        })
    }

    pub fn model(&self) -> Result<Option<ModelId>> {
        Ok(match self {
            ProductStore::Embedded { store, .. } => store.model()?,
            ProductStore::Engine(e) => e.model()?,
        })
    }

    pub fn set_model(&self, m: &ModelId) -> Result<()> {
        match self {
            ProductStore::Embedded { store, .. } => store.set_model(m)?,
            ProductStore::Engine(e) => e.set_model(m)?,
        }
        Ok(())
    }

    /// Make acknowledged writes durable (the engine's are at commit).
    pub fn flush(&self) -> Result<()> {
        if let ProductStore::Embedded { store, .. } = self {
            store.flush()?;
        }
        Ok(())
    }
}
