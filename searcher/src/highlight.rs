//! Highlighted matches: a hit's title and description with the query's words wrapped in
//! `<mark>…</mark>` and everything else HTML-escaped, so a page may insert the string as HTML.
//!
//! A word is marked when the keyword channel would match it: the same analyzer as the index's
//! prose fields (`en_stem`: lower case, English stems, so "mugs" marks "Mug"), plus, in titles, the
//! one-edit typo matches the keyword channel accepts for words no title contains
//! ([`crate::typo_words`]). Operators (`AND`, `OR`, `NOT`, `-word`) and `field:` prefixes are not
//! words. Work per hit is bounded: at most [`MAX_SCAN_BYTES`] of a text are scanned, and a
//! description is cut to a snippet of about [`SNIPPET_BYTES`] around its first match.

use std::collections::HashSet;

use serde::Serialize;
use tantivy::tokenizer::TextAnalyzer;
use vitrine_store::generation::Generation;

use crate::Result;

/// Bytes of a title or description scanned for matches; the rest of a title is escaped unmarked.
pub const MAX_SCAN_BYTES: usize = 4_096;
/// Bytes of description shown around its first match.
pub const SNIPPET_BYTES: usize = 240;
/// Bytes of context kept before the first match of a description snippet.
const SNIPPET_LEAD: usize = 60;

/// A hit's fields with the query's matches marked; HTML-escaped except for the `<mark>` tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Highlights {
    /// The whole title (escaped), with matches marked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A snippet of the description around its first match; absent when nothing in it matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The analyzed words of one query, ready to mark any number of hits.
pub struct Highlighter {
    stems: HashSet<String>,
    typos: Vec<Vec<char>>,
    stem: TextAnalyzer,
    raw: TextAnalyzer,
}

impl Highlighter {
    /// `text`: the keyword query as sent (None for an image-only query: nothing is marked).
    pub fn new(g: &Generation, text: Option<&str>) -> Result<Self> {
        let stem = g.index.tokenizer_for_field(g.fields.title)?;
        let raw = g.index.tokenizer_for_field(g.fields.title_raw)?;
        let typos = match text {
            Some(text) => crate::typo_words(g, &query_words(text))?.into_iter().map(|w| w.chars().collect()).collect(),
            None => vec![],
        };
        Ok(Self::with_analyzers(stem, raw, text, typos))
    }

    /// Without an index to ask which words are typos: the same analyzers as the keyword index's
    /// fields (tantivy's `en_stem` and `default`), no typo marks. The engine backend uses this.
    pub fn without_index(text: Option<&str>) -> Self {
        let tokenizers = tantivy::tokenizer::TokenizerManager::default();
        let stem = tokenizers.get("en_stem").expect("tantivy registers en_stem");
        let raw = tokenizers.get("default").expect("tantivy registers default");
        Self::with_analyzers(stem, raw, text, vec![])
    }

    fn with_analyzers(mut stem: TextAnalyzer, raw: TextAnalyzer, text: Option<&str>, typos: Vec<Vec<char>>) -> Self {
        let mut stems = HashSet::new();
        if let Some(text) = text {
            let words = query_words(text);
            let mut stream = stem.token_stream(&words);
            while let Some(t) = stream.next() {
                // One-letter words ("a", "s") would mark half of every title.
                if t.text.chars().count() > 1 {
                    stems.insert(t.text.clone());
                }
            }
        }
        Highlighter { stems, typos, stem, raw }
    }

    /// Every hit gets a title (escaped, marked where the query matches).
    pub fn highlight(&mut self, title: Option<&str>, description: Option<&str>) -> Highlights {
        Highlights { title: title.map(|t| self.title(t)), description: description.and_then(|d| self.snippet(d)) }
    }

    fn title(&mut self, title: &str) -> String {
        let scanned = &title[..floor_char(title, MAX_SCAN_BYTES)];
        let ranges = self.matches(scanned, true);
        let mut out = render(scanned, &ranges);
        out.push_str(&escape_html(&title[scanned.len()..]));
        out
    }

    fn snippet(&mut self, text: &str) -> Option<String> {
        let scanned = &text[..floor_char(text, MAX_SCAN_BYTES)];
        let ranges = self.matches(scanned, false);
        let first = ranges.first()?.0;
        // Start a little before the first match, at a word boundary.
        let mut start = floor_char(scanned, first.saturating_sub(SNIPPET_LEAD));
        if start > 0 {
            start = scanned[start..first].find(char::is_whitespace).map(|i| start + i + 1).unwrap_or(start);
        }
        let mut end = floor_char(scanned, start + SNIPPET_BYTES);
        if end < scanned.len() {
            end = scanned[..end].rfind(char::is_whitespace).filter(|&i| i > first).unwrap_or(end);
        }
        let inside: Vec<(usize, usize)> =
            ranges.iter().filter(|(a, b)| *a >= start && *b <= end).map(|(a, b)| (a - start, b - start)).collect();
        let mut out = String::new();
        if start > 0 {
            out.push('…');
        }
        out.push_str(&render(&scanned[start..end], &inside));
        if end < text.len() {
            out.push('…');
        }
        Some(out)
    }

    /// Byte ranges of matching words, in order, not overlapping.
    fn matches(&mut self, text: &str, typos: bool) -> Vec<(usize, usize)> {
        let mut ranges = vec![];
        if self.stems.is_empty() && self.typos.is_empty() {
            return ranges;
        }
        let mut stream = self.stem.token_stream(text);
        while let Some(t) = stream.next() {
            if self.stems.contains(&t.text) {
                ranges.push((t.offset_from, t.offset_to));
            }
        }
        if typos && !self.typos.is_empty() {
            let mut stream = self.raw.token_stream(text);
            while let Some(t) = stream.next() {
                let word: Vec<char> = t.text.chars().collect();
                if self.typos.iter().any(|typo| within_one_edit(typo, &word)) {
                    ranges.push((t.offset_from, t.offset_to));
                }
            }
        }
        ranges.sort_unstable();
        // Both analyzers split on the same boundaries, so ranges are equal or apart.
        ranges.dedup_by(|b, a| b.0 < a.1);
        ranges
    }
}

/// The words of a keyword query, without its operators and field prefixes.
fn query_words(text: &str) -> String {
    let mut negated = false;
    text.split_whitespace()
        .filter(|w| {
            // `NOT word` and `-word` exclude the word: nothing that matches holds it.
            let after_not = std::mem::replace(&mut negated, *w == "NOT");
            !after_not && !matches!(*w, "AND" | "OR" | "NOT") && !w.starts_with('-')
        })
        .map(|w| {
            let w = w.trim_start_matches(['+', '(']);
            match w.split_once(':') {
                Some((field, rest)) if !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => rest,
                _ => w,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` escaped for HTML, with `ranges` (sorted, apart, on char boundaries) in `<mark>`.
fn render(text: &str, ranges: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len() + ranges.len() * 13);
    let mut at = 0;
    for &(a, b) in ranges {
        out.push_str(&escape_html(&text[at..a]));
        out.push_str("<mark>");
        out.push_str(&escape_html(&text[a..b]));
        out.push_str("</mark>");
        at = b;
    }
    out.push_str(&escape_html(&text[at..]));
    out
}

/// Escape `& < > " '`: safe in element content and in quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    (0..=i).rev().find(|&j| s.is_char_boundary(j)).unwrap_or(0)
}

/// Whether `a` and `b` differ by at most one insertion, deletion, substitution or transposition of
/// adjacent characters (the distance tantivy's `FuzzyTermQuery::new(term, 1, true)` accepts).
pub fn within_one_edit(a: &[char], b: &[char]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let p = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    if p == short.len() {
        return true; // equal, or one character added at the end
    }
    if short.len() == long.len() {
        let rest_equal = |from: usize| short[from..] == long[from..];
        // A substitution at p, or a transposition of p and p + 1.
        rest_equal(p + 1) || (p + 1 < short.len() && short[p] == long[p + 1] && short[p + 1] == long[p] && rest_equal(p + 2))
    } else {
        short[p..] == long[p + 1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn one_edit() {
        for (a, b) in [("cameraman", "cameramen"), ("cameraman", "cmaeraman"), ("mug", "mugs"), ("mug", "mg"), ("ab", "ba")] {
            assert!(within_one_edit(&chars(a), &chars(b)), "{a} {b}");
            assert!(within_one_edit(&chars(b), &chars(a)), "{b} {a}");
        }
        for (a, b) in [("cameraman", "camerawomen"), ("abc", "cab"), ("mug", "hat"), ("ab", "abcd")] {
            assert!(!within_one_edit(&chars(a), &chars(b)), "{a} {b}");
        }
    }

    #[test]
    fn escaping_and_marks() {
        assert_eq!(escape_html(r#"<img src=x onerror="a('b')">&"#), "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;");
        assert_eq!(render("a <b> c", &[(2, 5)]), "a <mark>&lt;b&gt;</mark> c");
    }

    #[test]
    fn operators_and_fields_are_not_words() {
        assert_eq!(query_words("title:mug AND red -blue NOT green +cat (dog"), "mug red cat dog");
        assert_eq!(query_words("ratio 16:9"), "ratio 9");
    }

    #[test]
    fn cuts_stay_on_char_boundaries() {
        let s = "ééé";
        assert_eq!(floor_char(s, 3), 2);
        assert_eq!(floor_char(s, 100), s.len());
    }
}
