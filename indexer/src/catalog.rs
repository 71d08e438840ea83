//! Catalog parsing: JSONL and CSV, one product per line or row.
//!
//! Known fields: `id` (required), `title`, `description`, `brand`, `category`, `price`,
//! `currency`, `image` / `images`, `url`, `attributes`. Any other field is kept as an attribute.
//! Image references are resolved here: http(s) URLs stay as they are, relative paths are taken
//! relative to the catalog file. A bad line becomes a [`RecordError`] and parsing goes on.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vitrine_core::catalog::Product;

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

/// Parse a catalog file; `base` resolves relative image paths.
pub fn parse_file(path: &Path) -> std::io::Result<(Vec<Record>, Vec<RecordError>)> {
    let f = std::fs::File::open(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = base.canonicalize().unwrap_or(base);
    Ok(parse(std::io::BufReader::new(f), Format::from_path(path), &base))
}

pub fn parse(reader: impl BufRead, format: Format, base: &Path) -> (Vec<Record>, Vec<RecordError>) {
    let (records, mut errors) = match format {
        Format::Jsonl => parse_jsonl(reader, base),
        Format::Csv => parse_csv(reader, base),
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

fn parse_jsonl(reader: impl BufRead, base: &Path) -> (Vec<Record>, Vec<RecordError>) {
    let mut records = vec![];
    let mut errors = vec![];
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                errors.push(RecordError { line: line_no, id: None, reason: format!("unreadable line: {e}") });
                continue;
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(map)) => match product_from_map(map.into_iter().collect(), base) {
                Ok(product) => records.push(Record { line: line_no, product }),
                Err((id, reason)) => errors.push(RecordError { line: line_no, id, reason }),
            },
            Ok(_) => errors.push(RecordError { line: line_no, id: None, reason: "not a JSON object".into() }),
            Err(e) => errors.push(RecordError { line: line_no, id: None, reason: format!("malformed JSON: {e}") }),
        }
    }
    (records, errors)
}

fn parse_csv(reader: impl BufRead, base: &Path) -> (Vec<Record>, Vec<RecordError>) {
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
        match product_from_map(map, base) {
            Ok(product) => records.push(Record { line: line_no, product }),
            Err((id, reason)) => errors.push(RecordError { line: line_no, id, reason }),
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

/// Resolve an image reference: URLs and `media:` references as they are, `file://` and relative
/// paths to absolute paths.
pub fn resolve_image(r: &str, base: &Path) -> String {
    let r = r.trim();
    if r.starts_with("http://") || r.starts_with("https://") || r.starts_with(crate::MEDIA_REF_PREFIX) {
        return r.to_string();
    }
    let p = r.strip_prefix("file://").unwrap_or(r);
    let path = PathBuf::from(p);
    if path.is_absolute() {
        p.to_string()
    } else {
        base.join(path).display().to_string()
    }
}

/// Build a product from a JSON object's fields. Errors carry the id when there is one.
pub fn product_from_map(map: Vec<(String, Value)>, base: &Path) -> Result<Product, (Option<String>, String)> {
    let mut p = Product::default();
    let mut attributes = BTreeMap::new();
    let mut id = None;
    for (k, v) in map {
        match k.as_str() {
            "id" => id = scalar_string(&v),
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
                    Value::String(s) => {
                        Some(s.trim().parse::<f64>().map_err(|_| (None, format!("price {s:?} is not a number")))?)
                    }
                    other => return Err((None, format!("price {other} is not a number"))),
                };
                if p.price.is_some_and(|x| !x.is_finite() || x < 0.0) {
                    return Err((None, "price must be a finite, non-negative number".into()));
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
                other => return Err((None, format!("attributes must be an object, got {other}"))),
            },
            _ => {
                if let Some(s) = scalar_string(&v) {
                    attributes.insert(k, s);
                }
            }
        }
    }
    let Some(id) = id else { return Err((None, "missing id".into())) };
    if id.len() > 512 {
        return Err((None, "id is longer than 512 bytes".into()));
    }
    p.id = id.clone();
    p.images = p.images.iter().map(|r| resolve_image(r, base)).collect();
    p.images.dedup();
    p.attributes = attributes;
    // Errors found before the id was known still name it.
    Ok(p).map_err(|(_, r): (Option<String>, String)| (Some(id), r))
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
        let (records, errors) = parse(text.as_bytes(), Format::Jsonl, Path::new("/cat"));
        assert_eq!(records.len(), 2);
        let a = &records[0].product;
        assert_eq!(a.images, vec!["/cat/img/a.jpg"]);
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
    }

    #[test]
    fn csv_with_image_lists_and_attribute_columns() {
        let text = "id,title,price,images,attr.color,material\nx1,Lamp,19.99,a.jpg|b.jpg,blue,brass\nx2,,oops,,,\n";
        let (records, errors) = parse(text.as_bytes(), Format::Csv, Path::new("/c"));
        assert_eq!(records.len(), 1);
        let p = &records[0].product;
        assert_eq!(p.images, vec!["/c/a.jpg", "/c/b.jpg"]);
        assert_eq!(p.attributes.get("color").map(String::as_str), Some("blue"));
        assert_eq!(p.attributes.get("material").map(String::as_str), Some("brass"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
        assert_eq!(errors[0].id.as_deref(), None);
    }
}
