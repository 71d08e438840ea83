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

/// Words shorter than this get no typo tolerance (too many neighbours at edit distance 1).
pub const TYPO_MIN_CHARS: usize = 4;
/// Query words that get typo tolerance at most, per query.
pub const TYPO_MAX_WORDS: usize = 8;

/// The terms of `text` as the raw title field (`title_raw`) indexes them: words, lower-cased,
/// words over 40 bytes dropped, each once, in order.
pub fn raw_terms(text: &str) -> Vec<String> {
    static DEFAULT: std::sync::OnceLock<tantivy::tokenizer::TextAnalyzer> = std::sync::OnceLock::new();
    let mut analyzer = DEFAULT
        .get_or_init(|| tantivy::tokenizer::TokenizerManager::default().get("default").expect("tantivy has default"))
        .clone();
    let mut stream = analyzer.token_stream(text);
    let mut out: Vec<String> = vec![];
    while stream.advance() {
        let t = &stream.token().text;
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// The query words that may get typo tolerance: raw terms of at least [`TYPO_MIN_CHARS`]
/// characters, at most [`TYPO_MAX_WORDS`] of them. (Each backend then keeps those no title
/// contains.)
pub fn typo_candidates(text: &str) -> Vec<String> {
    raw_terms(text).into_iter().filter(|w| w.chars().count() >= TYPO_MIN_CHARS).take(TYPO_MAX_WORDS).collect()
}

/// Every string one edit from `word` (Damerau: a deletion, an adjacent transposition, a
/// substitution or an insertion of a lower-case ASCII letter or digit, or of one of the word's own
/// characters), `word` itself excluded: what a term dictionary without fuzzy search is probed with.
/// Bounded: for a word of n characters over an alphabet of a letters, at most n + (n - 1) + 2·a·n + a.
pub fn one_edit_away(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut alphabet: Vec<char> = ('a'..='z').chain('0'..='9').collect();
    for c in &chars {
        if !alphabet.contains(c) {
            alphabet.push(*c);
        }
    }
    let n = chars.len();
    let mut out = std::collections::BTreeSet::new();
    let s = |v: &[char]| v.iter().collect::<String>();
    for i in 0..n {
        out.insert(s(&[&chars[..i], &chars[i + 1..]].concat()));
        if i + 1 < n {
            let mut t = chars.clone();
            t.swap(i, i + 1);
            out.insert(s(&t));
        }
        for &c in &alphabet {
            let mut t = chars.clone();
            t[i] = c;
            out.insert(s(&t));
        }
    }
    for i in 0..=n {
        for &c in &alphabet {
            let mut t = chars.clone();
            t.insert(i, c);
            out.insert(s(&t));
        }
    }
    out.remove(word);
    out.into_iter().collect()
}

/// Text as the keyword index's stemmed fields see it: tantivy's `en_stem` analyzer (words,
/// lower-cased, words over 40 bytes dropped, English stems), terms joined by single spaces. The
/// engine backend stores and queries this form in its full-text columns, so both backends match
/// the same words ("mugs" finds "mug").
pub fn stemmed_terms(text: &str) -> String {
    static EN_STEM: std::sync::OnceLock<tantivy::tokenizer::TextAnalyzer> = std::sync::OnceLock::new();
    let mut analyzer = EN_STEM
        .get_or_init(|| tantivy::tokenizer::TokenizerManager::default().get("en_stem").expect("tantivy has en_stem"))
        .clone();
    let mut stream = analyzer.token_stream(text);
    let mut out = String::with_capacity(text.len());
    while stream.advance() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&stream.token().text);
    }
    out
}

#[cfg(test)]
mod stem_tests {
    use super::*;

    #[test]
    fn stemmed_terms_are_what_the_stemmed_fields_index() {
        assert_eq!(stemmed_terms("Galaxies, MUGS & a Cameraman's mug!"), "galaxi mug a cameraman s mug");
        assert_eq!(stemmed_terms("galaxy"), stemmed_terms("Galaxies"));
        assert_eq!(stemmed_terms("  ,;  "), "");
        assert_eq!(stemmed_terms(&"x".repeat(41)), "", "over 40 bytes: dropped, as in the index");
    }

    #[test]
    fn typo_words_and_their_neighbours() {
        assert_eq!(raw_terms("Vintage CAMERAMAN, vintage print"), ["vintage", "cameraman", "print"]);
        assert_eq!(typo_candidates("a cat cameramen photos"), ["cameramen", "photos"], "under 4 characters: none");
        assert_eq!(typo_candidates(&"word ".repeat(20)).len(), 1);
        let many: String = (0..20).map(|i| format!("word{i} ")).collect();
        assert_eq!(typo_candidates(&many).len(), TYPO_MAX_WORDS);
        let near = one_edit_away("cmaeraman");
        assert!(near.contains(&"cameraman".to_string()), "a transposition");
        let near = one_edit_away("cameramen");
        assert!(near.contains(&"cameraman".to_string()) && !near.contains(&"cameramen".to_string()));
        for w in ["mug", "mugs", "mu", "smug", "mig"] {
            assert_eq!(one_edit_away("mug").contains(&w.to_string()), w != "mug", "{w}");
        }
        assert!(!one_edit_away("mug").contains(&"gum".to_string()), "two edits");
        let n = 9;
        assert!(one_edit_away("cameramen").len() <= n + (n - 1) + 2 * 36 * n + 36);
        assert!(one_edit_away("très").iter().any(|w| w == "tres"), "the word's own characters are in the alphabet");
    }
}
