//! The keyword index: tantivy over title, description, brand, category and attributes.
//!
//! English stemming on the prose fields; a non-stemmed `title_raw` for typo tolerance (fuzzy
//! queries match stemmed terms poorly: a typo of a word meets the stem, not the word); `brand`, `category` and `attr` (`key=value`)
//! as exact terms for filters and facets; `price` as a fast field for range filters and buckets;
//! `ord` and `version` as fast fields that tie a document to the vector points of that product
//! version. The whole product is stored as JSON in `doc`, so a generation answers reads alone.
//!
//! # Persisted: changing this schema needs a migration (or a reindex)

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING,
};
use tantivy::TantivyDocument;

use vitrine_core::catalog::StoredProduct;

#[derive(Clone)]
pub struct KeywordFields {
    pub schema: Schema,
    pub id: Field,
    pub ord: Field,
    pub version: Field,
    pub title: Field,
    pub title_raw: Field,
    pub description: Field,
    pub brand_text: Field,
    pub category_text: Field,
    pub attr_text: Field,
    pub brand: Field,
    pub category: Field,
    pub attr: Field,
    pub price: Field,
    pub doc: Field,
}

impl KeywordFields {
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let stemmed = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer("en_stem").set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let raw = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer("default").set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let id = b.add_text_field("id", STRING | STORED);
        let ord = b.add_u64_field("ord", NumericOptions::default() | FAST | INDEXED);
        let version = b.add_u64_field("version", NumericOptions::default() | FAST);
        let title = b.add_text_field("title", stemmed.clone());
        let title_raw = b.add_text_field("title_raw", raw);
        let description = b.add_text_field("description", stemmed.clone());
        let brand_text = b.add_text_field("brand_text", stemmed.clone());
        let category_text = b.add_text_field("category_text", stemmed.clone());
        let attr_text = b.add_text_field("attr_text", stemmed);
        let brand = b.add_text_field("brand", STRING | FAST);
        let category = b.add_text_field("category", STRING | FAST);
        let attr = b.add_text_field("attr", STRING | FAST);
        let price = b.add_f64_field("price", NumericOptions::default() | FAST | INDEXED);
        let doc = b.add_text_field("doc", STORED);
        KeywordFields {
            schema: b.build(),
            id,
            ord,
            version,
            title,
            title_raw,
            description,
            brand_text,
            category_text,
            attr_text,
            brand,
            category,
            attr,
            price,
            doc,
        }
    }

    /// The fields free text is matched against, with their boosts.
    pub fn search_fields(&self) -> Vec<(Field, f32)> {
        vec![(self.title, 3.0), (self.brand_text, 2.0), (self.category_text, 2.0), (self.description, 1.0), (self.attr_text, 1.0)]
    }

    pub fn document(&self, p: &StoredProduct) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        let pr = &p.product;
        d.add_text(self.id, &pr.id);
        d.add_u64(self.ord, p.ord);
        d.add_u64(self.version, p.version);
        if let Some(t) = &pr.title {
            d.add_text(self.title, t);
            d.add_text(self.title_raw, t);
        }
        if let Some(t) = &pr.description {
            d.add_text(self.description, t);
        }
        if let Some(t) = &pr.brand {
            d.add_text(self.brand_text, t);
            d.add_text(self.brand, t);
        }
        if let Some(t) = &pr.category {
            d.add_text(self.category_text, t);
            d.add_text(self.category, t);
        }
        for (k, v) in &pr.attributes {
            d.add_text(self.attr_text, format!("{k} {v}"));
        }
        // Automatic attributes filter and facet like the catalog's, but stay out of the keyword
        // text: their evidence is the image, which the image channel already scores, and a wrong
        // tag must not also push a product up the keyword ranking.
        for (k, v) in p.all_attributes() {
            d.add_text(self.attr, attr_term(k, v));
        }
        if let Some(price) = pr.price {
            d.add_f64(self.price, price);
        }
        d.add_text(self.doc, serde_json::to_string(p).expect("a product serializes"));
        d
    }
}

impl Default for KeywordFields {
    fn default() -> Self {
        Self::new()
    }
}

/// The exact term an attribute filter matches: `key=value`.
pub fn attr_term(key: &str, value: &str) -> String {
    format!("{key}={value}")
}
