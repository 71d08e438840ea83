//! Catalog parsing: JSONL and CSV, one product per line or row.
//!
//! Known fields: `id` (required), `title`, `description`, `brand`, `category`, `price`,
//! `currency`, `image` / `images`, `url`, `attributes`. Any other field is kept as an attribute.
//! Image references are kept as written: what a local path means (relative to the catalog's
//! folder, or to a media root) is the ingest's [`vitrine_fetch::LocalFiles`] policy, applied by
//! the indexer. A bad line becomes a [`RecordError`] and parsing goes on.
//!
//! Bounds (a catalog may come from anyone with the admin key, or from a broken export): a JSONL
//! line is read only up to [`MAX_LINE_BYTES`] (a longer one is skipped as an error without being
//! held in memory); a product has at most [`MAX_IMAGES`] images and [`MAX_ATTRIBUTES`] attributes,
//! and no text field over [`MAX_FIELD_BYTES`]. serde_json refuses nesting deeper than 128, so no
//! line recurses without bound.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read};
use std::path::Path;

use serde_json::Value;
use vitrine_core::catalog::Product;

/// The longest JSONL line: the same bound as one product sent to `PUT /v1/products/{id}`.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Images per product.
pub const MAX_IMAGES: usize = 32;
/// Attributes per product.
pub const MAX_ATTRIBUTES: usize = 256;
/// The longest text field (title, description, an attribute's value, an image reference).
pub const MAX_FIELD_BYTES: usize = 64 << 10;

/// A line that could not become a product.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordError {
    /// 1-based line (JSONL) or row (CSV, header = line 1).
    pub line: usize,
    pub id: Option<String>,
    pub reason: String,
}

/// A parsed catalog line.
#[derive(Debug, Clone)]
pub struct Record {
    pub line: usize,
    pub product: Product,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    pub fn from_path(p: &Path) -> Format {
        match p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Format::Csv,
            _ => Format::Jsonl,
        }
    }
}

/// Parse a catalog file. Its relative image paths mean something only with a policy: the CLI's
/// is [`vitrine_fetch::LocalFiles::beside`] this file.
pub fn parse_file(path: &Path) -> std::io::Result<(Vec<Record>, Vec<RecordError>)> {
    let f = std::fs::File::open(path)?;
    Ok(parse(std::io::BufReader::new(f), Format::from_path(path)))
}

pub fn parse(reader: impl BufRead, format: Format) -> (Vec<Record>, Vec<RecordError>) {
    let (records, mut errors) = match format {
        Format::Jsonl => parse_jsonl(reader),
        Format::Csv => parse_csv(reader),
    };
    // Duplicate ids within one file: the first wins, later ones are errors.
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut kept = Vec::with_capacity(records.len());
    for r in records {
        match first.get(&r.product.id) {
            Some(line) => errors.push(RecordError {
                line: r.line,
                id: Some(r.product.id.clone()),
                reason: format!("duplicate id (first seen on line {line})"),
            }),
            None => {
                first.insert(r.product.id.clone(), r.line);
                kept.push(r);
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    (kept, errors)
}

fn parse_jsonl(mut reader: impl BufRead) -> (Vec<Record>, Vec<RecordError>) {
    let mut records = vec![];
    let mut errors = vec![];
    let mut buf = Vec::new();
    for line_no in 1.. {
        buf.clear();
        match reader.by_ref().take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                errors.push(RecordError { line: line_no, id: None, reason: format!("unreadable line: {e}") });
                break;
            }
        }
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            let skipped = skip_line(&mut reader);
            let reason = format!("line longer than {MAX_LINE_BYTES} bytes");
            errors.push(RecordError { line: line_no, id: None, reason });
            if skipped.is_err() {
                break;
            }
            continue;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            errors.push(RecordError { line: line_no, id: None, reason: "unreadable line: not UTF-8".into() });
            continue;
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(map)) => match product_from_map(map.into_iter().collect()) {
                Ok(product) => records.push(Record { line: line_no, product }),
                Err(InvalidProduct { id, reason }) => errors.push(RecordError { line: line_no, id, reason }),
            },
            Ok(_) => errors.push(RecordError { line: line_no, id: None, reason: "not a JSON object".into() }),
            Err(e) => errors.push(RecordError { line: line_no, id: None, reason: format!("malformed JSON: {e}") }),
        }
    }
    (records, errors)
}

/// Consume the rest of the current line without keeping it.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match memchr::memchr(b'\n', chunk) {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

fn parse_csv(reader: impl BufRead) -> (Vec<Record>, Vec<RecordError>) {
    let mut records = vec![];
    let mut errors = vec![];
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            errors.push(RecordError { line: 1, id: None, reason: format!("unreadable CSV header: {e}") });
            return (records, errors);
        }
    };
    for (i, row) in rdr.records().enumerate() {
        let line_no = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                errors.push(RecordError { line: line_no, id: None, reason: format!("malformed CSV row: {e}") });
                continue;
            }
        };
        let mut map: Vec<(String, Value)> = vec![];
        let mut attrs = serde_json::Map::new();
        for (h, v) in headers.iter().zip(row.iter()) {
            if v.is_empty() {
                continue;
            }
            if let Some(k) = h.strip_prefix("attr.").or_else(|| h.strip_prefix("attributes.")) {
                attrs.insert(k.to_string(), Value::String(v.to_string()));
            } else if h == "images" {
                map.push((h.into(), Value::Array(v.split('|').map(|s| Value::String(s.trim().to_string())).collect())));
            } else if h == "price" {
                map.push((
                    h.into(),
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .unwrap_or(Value::String(v.into())),
                ));
            } else {
                map.push((h.to_string(), Value::String(v.to_string())));
            }
        }
        if !attrs.is_empty() {
            map.push(("attributes".into(), Value::Object(attrs)));
        }
        match product_from_map(map) {
            Ok(product) => records.push(Record { line: line_no, product }),
            Err(InvalidProduct { id, reason }) => errors.push(RecordError { line: line_no, id, reason }),
        }
    }
    (records, errors)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Why a catalog line or a product body could not become a product.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidProduct {
    /// The product's id, when it has a usable one.
    pub id: Option<String>,
    pub reason: String,
}

/// Build a product from a JSON object's fields. Errors carry the id when there is one.
pub fn product_from_map(map: Vec<(String, Value)>) -> Result<Product, InvalidProduct> {
    // The id first (the last `id` field, as a JSON object keeps it), so every error names it.
    let id = map.iter().rev().find(|(k, _)| k == "id").and_then(|(_, v)| scalar_string(v));
    let fail = |reason: String| InvalidProduct { id: id.clone().filter(|i| i.len() <= 512), reason };
    let mut p = Product::default();
    let mut attributes = BTreeMap::new();
    for (k, v) in map {
        match k.as_str() {
            "id" => {}
            "title" => p.title = scalar_string(&v),
            "description" => p.description = scalar_string(&v),
            "brand" => p.brand = scalar_string(&v),
            "category" => p.category = scalar_string(&v),
            "currency" => p.currency = scalar_string(&v),
            "url" => p.url = scalar_string(&v),
            "price" => {
                p.price = match &v {
                    Value::Null => None,
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) if s.trim().is_empty() => None,
                    Value::String(s) => Some(s.trim().parse::<f64>().map_err(|_| fail(format!("price {s:?} is not a number")))?),
                    other => return Err(fail(format!("price {other} is not a number"))),
                };
                if p.price.is_some_and(|x| !x.is_finite() || x < 0.0) {
                    return Err(fail("price must be a finite, non-negative number".into()));
                }
            }
            "image" => p.images.extend(scalar_string(&v)),
            "images" => match v {
                Value::Array(items) => p.images.extend(items.iter().filter_map(scalar_string)),
                other => p.images.extend(scalar_string(&other)),
            },
            "attributes" => match v {
                Value::Object(m) => {
                    for (ak, av) in m {
                        if let Some(s) = scalar_string(&av) {
                            attributes.insert(ak, s);
                        }
                    }
                }
                Value::Null => {}
                other => return Err(fail(format!("attributes must be an object, got {other}"))),
            },
            _ => {
                if let Some(s) = scalar_string(&v) {
                    attributes.insert(k, s);
                }
            }
        }
    }
    let Some(id) = id.clone() else { return Err(fail("missing id".into())) };
    if id.len() > 512 {
        return Err(fail("id is longer than 512 bytes".into()));
    }
    let id_err = fail;
    if p.images.len() > MAX_IMAGES {
        return Err(id_err(format!("{} images; at most {MAX_IMAGES} per product", p.images.len())));
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(id_err(format!("{} attributes; at most {MAX_ATTRIBUTES} per product", attributes.len())));
    }
    let texts = [&p.title, &p.description, &p.brand, &p.category, &p.currency, &p.url];
    let longest = texts
        .into_iter()
        .flatten()
        .chain(&p.images)
        .chain(attributes.iter().flat_map(|(k, v)| [k, v]))
        .map(String::len)
        .max()
        .unwrap_or(0);
    if longest > MAX_FIELD_BYTES {
        return Err(id_err(format!("a field of {longest} bytes; at most {MAX_FIELD_BYTES}")));
    }
    p.id = id;
    p.images.dedup();
    p.attributes = attributes;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_with_every_kind_of_bad_line() {
        let text = r#"{"id": "a", "title": "Red mug", "price": 12.5, "image": "img/a.jpg", "color": "red", "attributes": {"size": "M"}}
{"id": "b", "images": ["https://x.test/b.jpg", "/abs/b2.png"], "price": "7"}
{not json
{"title": "no id"}
{"id": "a", "title": "again"}
[1, 2]

{"id": 42, "price": "cheap"}
"#;
        let (records, errors) = parse(text.as_bytes(), Format::Jsonl);
        assert_eq!(records.len(), 2);
        let a = &records[0].product;
        assert_eq!(a.images, vec!["img/a.jpg"], "references are kept as written; the ingest's policy resolves them");
        assert_eq!(a.attributes.get("color").map(String::as_str), Some("red"), "unknown fields become attributes");
        assert_eq!(a.attributes.get("size").map(String::as_str), Some("M"));
        assert_eq!(records[1].product.images, vec!["https://x.test/b.jpg", "/abs/b2.png"]);
        assert_eq!(records[1].product.price, Some(7.0));
        let reasons: Vec<_> = errors.iter().map(|e| (e.line, e.reason.split(':').next().unwrap().to_string())).collect();
        assert_eq!(
            reasons,
            vec![
                (3, "malformed JSON".to_string()),
                (4, "missing id".to_string()),
                (5, "duplicate id (first seen on line 1)".to_string()),
                (6, "not a JSON object".to_string()),
                (8, "price \"cheap\" is not a number".to_string()),
            ]
        );
        // An error found before the loop reached `id` still names the product.
        assert_eq!(errors[4].id.as_deref(), Some("42"));
    }

    #[test]
    fn csv_with_image_lists_and_attribute_columns() {
        let text = "id,title,price,images,attr.color,material\nx1,Lamp,19.99,a.jpg|b.jpg,blue,brass\nx2,,oops,,,\n";
        let (records, errors) = parse(text.as_bytes(), Format::Csv);
        assert_eq!(records.len(), 1);
        let p = &records[0].product;
        assert_eq!(p.images, vec!["a.jpg", "b.jpg"]);
        assert_eq!(p.attributes.get("color").map(String::as_str), Some("blue"));
        assert_eq!(p.attributes.get("material").map(String::as_str), Some("brass"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
        assert_eq!(errors[0].id.as_deref(), Some("x2"), "the error names the row's product");
    }

    #[test]
    fn a_line_over_the_bound_is_an_error_and_the_next_line_still_parses() {
        let long = format!("{{\"id\": \"big\", \"title\": \"{}\"}}", "x".repeat(3 * MAX_LINE_BYTES));
        let text = format!("{long}\n{{\"id\": \"small\"}}\n{}\n", "y".repeat(MAX_LINE_BYTES + 10));
        let (records, errors) = parse(text.as_bytes(), Format::Jsonl);
        assert_eq!(records.iter().map(|r| (r.line, r.product.id.as_str())).collect::<Vec<_>>(), [(2, "small")]);
        let lines: Vec<_> = errors.iter().map(|e| (e.line, e.reason.as_str())).collect();
        let why = format!("line longer than {MAX_LINE_BYTES} bytes");
        assert_eq!(lines, [(1, why.as_str()), (3, why.as_str())]);
        // A line of exactly the bound (newline excluded) is read.
        let exact = format!("{{\"id\": \"e\"}}{}", " ".repeat(MAX_LINE_BYTES - 11));
        assert_eq!(exact.len(), MAX_LINE_BYTES);
        let (records, errors) = parse(format!("{exact}\n").as_bytes(), Format::Jsonl);
        assert_eq!((records.len(), errors.len()), (1, 0), "{errors:?}");
    }

    #[test]
    fn hostile_products_are_refused_with_a_reason() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let images: Vec<String> = (0..MAX_IMAGES + 1).map(|i| format!("https://x.test/{i}.jpg")).collect();
        let attrs: serde_json::Map<String, Value> = (0..MAX_ATTRIBUTES + 1).map(|i| (format!("a{i}"), Value::from(i))).collect();
        let text = [
            format!("{{\"id\": \"deep\", \"attributes\": {{\"x\": {deep}}}}}"),
            serde_json::json!({"id": "imgs", "images": images}).to_string(),
            serde_json::json!({"id": "attrs", "attributes": attrs}).to_string(),
            serde_json::json!({"id": "long", "description": "d".repeat(MAX_FIELD_BYTES + 1)}).to_string(),
            serde_json::json!({"id": "bad\u{0}price", "price": -1}).to_string(),
            serde_json::json!({"id": "ok", "images": images[..MAX_IMAGES]}).to_string(),
        ]
        .join("\n");
        let (records, errors) = parse(text.as_bytes(), Format::Jsonl);
        assert_eq!(records.iter().map(|r| r.product.id.as_str()).collect::<Vec<_>>(), ["ok"]);
        let reasons: Vec<_> = errors.iter().map(|e| (e.line, e.reason.split([':', ';']).next().unwrap().to_string())).collect();
        assert_eq!(
            reasons,
            [
                (1, "malformed JSON".to_string()),
                (2, "33 images".into()),
                (3, "257 attributes".into()),
                (4, format!("a field of {} bytes", MAX_FIELD_BYTES + 1)),
                (5, "price must be a finite, non-negative number".into()),
            ]
        );
        assert_eq!(errors[1].id.as_deref(), Some("imgs"), "errors name the product");
    }

    /// Whatever the bytes, parsing ends, and each record or error belongs to one line.
    fn check_invariants(text: &[u8], format: Format) {
        let (records, errors) = parse(text, format);
        // CSV also ends a row at a lone `\r`, and counts its header as line 1.
        let lines = text.iter().filter(|b| **b == b'\n' || **b == b'\r').count() + 2;
        let mut seen = std::collections::HashSet::new();
        for r in &records {
            assert!(r.line >= 1 && r.line <= lines, "line {} of {lines}", r.line);
            assert!(!r.product.id.is_empty() && r.product.id.len() <= 512);
            assert!(r.product.images.len() <= MAX_IMAGES && r.product.attributes.len() <= MAX_ATTRIBUTES);
            assert!(r.product.price.is_none_or(|p| p.is_finite() && p >= 0.0));
            assert!(seen.insert(r.product.id.clone()), "ids are unique");
        }
        for e in &errors {
            assert!(e.line >= 1 && e.line <= lines, "error line {} of {lines}", e.line);
            assert!(!e.reason.is_empty());
        }
        if format == Format::Jsonl {
            assert!(records.len() + errors.len() <= lines);
        }
    }

    const SAMPLE_JSONL: &str = r#"{"id": "a", "title": "Red mug", "price": 12.5, "images": ["img/a.jpg", "https://x.test/a.png"], "attributes": {"size": "M", "n": 3}}
{"id": "b", "brand": "Acme", "category": "lamps", "price": "7", "color": null}
"#;
    const SAMPLE_CSV: &str = "id,title,price,images,attr.color\nx1,Lamp,19.99,a.jpg|b.jpg,blue\nx2,\"Quoted, title\",3,,\n";

    /// Random edits of a valid sample: bytes replaced, inserted and removed.
    fn mutate(sample: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut bytes = sample.as_bytes().to_vec();
        for &(at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op % 3 {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            check_invariants(&bytes, Format::Jsonl);
            check_invariants(&bytes, Format::Csv);
        }

        #[test]
        fn mutated_catalogs_never_panic(edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>(), 0u8..3), 1..24)) {
            check_invariants(&mutate(SAMPLE_JSONL, &edits), Format::Jsonl);
            check_invariants(&mutate(SAMPLE_CSV, &edits), Format::Csv);
        }
    }
}
