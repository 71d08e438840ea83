//! The product record: what a merchant's catalog line becomes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One product.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Image references, resolved: absolute paths or http(s) URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Product {
    /// The text the text tower embeds for this product: title and description.
    pub fn embedding_text(&self) -> String {
        let mut parts = vec![];
        for p in [&self.title, &self.description].into_iter().flatten() {
            if !p.trim().is_empty() {
                parts.push(p.trim());
            }
        }
        parts.join(". ")
    }
}

/// A product as the store keeps it: the record plus what indexing derived from it.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredProduct {
    pub product: Product,
    /// Dense, never reused number of this product id; the key of every derived index.
    pub ord: u64,
    /// The change-log sequence number of the write that produced this version.
    pub version: u64,
    /// Hash of the record and its image bytes: equal hash, nothing to do.
    pub hash: String,
    /// How many image vectors are stored (slots 0..n).
    pub image_vectors: u16,
    pub has_text_vector: bool,
    /// Images that could not be used, with the reason; the product is still indexed by text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_errors: Vec<String>,
    /// Unix seconds of the last write.
    pub updated_at: u64,
}
