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
    /// Free-text reasons written before the media store (they may name server paths): read so
    /// that old data directories load, never written again, never shown. See `media`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_errors: Vec<String>,
    /// Unix seconds of the last write.
    pub updated_at: u64,
    /// What ingest made of each image reference, in the order of `product.images`. Stored images
    /// are exactly the ones with a vector: the k-th `Stored` entry is image vector slot k. Empty
    /// for records written before the media store (their images are not served).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<ImageMedia>,
    /// What zero-shot tagging derived from the images (flattened: `auto_attributes` and
    /// `tagged_with` sit beside the other fields).
    #[serde(flatten, default)]
    pub auto: AutoTags,
}

/// Attributes ingest derived from a product's images by zero-shot tagging.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoTags {
    /// Attribute → label, kept apart from the catalog's `product.attributes` so the API can tell
    /// them apart. Never holds a key the catalog gives: the catalog's value wins. Filters match
    /// both kinds alike.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auto_attributes: BTreeMap<String, String>,
    /// Fingerprint of the tag vocabulary and model that produced `auto_attributes` (empty: none
    /// was configured). An ingest with another fingerprint re-tags the product from its stored
    /// image vectors.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tagged_with: String,
}

impl StoredProduct {
    /// The stored images, in order: the `n` of `/v1/images/{id}/{n}` indexes this list.
    pub fn stored_media(&self) -> impl Iterator<Item = &MediaRef> {
        self.media.iter().filter_map(|m| match m {
            ImageMedia::Stored(r) => Some(r),
            ImageMedia::Failed(_) => None,
        })
    }

    /// Whether every image reference has its outcome recorded (false for records written before
    /// the media store, which must be ingested again to get their images stored).
    pub fn media_complete(&self) -> bool {
        self.media.len() == self.product.images.len()
    }

    /// Every attribute filters and facets see: the catalog's, then the automatic ones (which
    /// never repeat a catalog key).
    pub fn all_attributes(&self) -> impl Iterator<Item = (&String, &String)> {
        let catalog = &self.product.attributes;
        catalog.iter().chain(self.auto.auto_attributes.iter().filter(move |(k, _)| !catalog.contains_key(*k)))
    }
}

/// What ingest made of one image reference.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageMedia {
    Stored(MediaRef),
    Failed(ImageFailure),
}

/// An image in the media store, addressed by the blake3 hash of the stored bytes.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MediaRef {
    /// blake3 of the stored bytes, 64 lowercase hex digits.
    pub hash: String,
    pub format: MediaFormat,
    /// Length of the stored bytes.
    pub bytes: u64,
}

/// The formats the media store keeps as they are (anything else is stored re-encoded as JPEG).
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl MediaFormat {
    pub const ALL: [MediaFormat; 4] = [MediaFormat::Jpeg, MediaFormat::Png, MediaFormat::Webp, MediaFormat::Gif];

    /// The file extension of stored files.
    pub fn ext(self) -> &'static str {
        match self {
            MediaFormat::Jpeg => "jpg",
            MediaFormat::Png => "png",
            MediaFormat::Webp => "webp",
            MediaFormat::Gif => "gif",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            MediaFormat::Jpeg => "image/jpeg",
            MediaFormat::Png => "image/png",
            MediaFormat::Webp => "image/webp",
            MediaFormat::Gif => "image/gif",
        }
    }
}

/// Why an image of a product was not stored: short and typed, because it is shown to anyone who
/// reads the product. The full detail (paths, URLs, decoder messages) goes only to the server log
/// and the admin's failure report.
///
/// # Persisted: changing this needs a migration
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ImageFailure {
    /// The file or URL could not be read (missing, refused, timed out, HTTP error).
    #[error("could not be read")]
    Unreadable,
    #[error("not a supported image format")]
    UnsupportedFormat,
    /// Over the byte limit, the pixel limit or the side limit.
    #[error("over the size limit")]
    TooLarge,
    /// A known format, but corrupt or truncated.
    #[error("could not be decoded")]
    Corrupt,
    /// The model failed on it (an internal fault, not the image's).
    #[error("could not be embedded")]
    NotEmbedded,
}

/// A product write: the record and its vectors.
pub struct ProductWrite {
    pub stored: StoredProduct,
    pub image_vectors: Vec<Vec<f32>>,
    pub text_vector: Option<Vec<f32>>,
}
