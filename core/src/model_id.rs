//! Which model made a vector: stored with every index so that vectors of two models never mix.

use serde::{Deserialize, Serialize};

/// What identifies a model inside an index: the index refuses to open with a model whose id differs.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ModelId {
    /// A human name (`vitrine-model.json`'s `name`, else the directory name).
    pub name: String,
    /// blake3 over the four model files, hex.
    pub content_hash: String,
    /// Embedding dimension.
    pub dim: usize,
}

impl ModelId {
    /// The same model: same files (by content hash) and dimension; the name is only a label.
    /// Every "may this model read or write that index" check goes through here.
    pub fn same_model(&self, other: &ModelId) -> bool {
        self.content_hash == other.content_hash && self.dim == other.dim
    }
}
