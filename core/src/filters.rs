//! What a query may filter by: one definition for every backend (the embedded index turns it into
//! a tantivy query, the engine backend into SQL), with the bounds a client must stay within.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Filters: keys are ANDed, values within a key ORed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Filters {
    pub category: Vec<String>,
    pub brand: Vec<String>,
    pub price: Option<PriceRange>,
    pub attributes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PriceRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Values in one filter list (a category, brand or attribute key).
pub const MAX_FILTER_VALUES: usize = 100;
/// Attribute keys in one filter.
pub const MAX_FILTER_ATTRIBUTES: usize = 32;
/// Bytes of one filter value or attribute key.
pub const MAX_FILTER_VALUE_BYTES: usize = 256;

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.category.is_empty() && self.brand.is_empty() && self.price.is_none() && self.attributes.is_empty()
    }

    /// Bounds on what one query may filter by: a filter is evaluated per query, so its size is
    /// the client's to choose only within these limits.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |m: String| Err(m);
        if self.attributes.len() > MAX_FILTER_ATTRIBUTES {
            return bad(format!("filters.attributes: at most {MAX_FILTER_ATTRIBUTES} keys"));
        }
        let lists = [("category", &self.category), ("brand", &self.brand)]
            .into_iter()
            .chain(self.attributes.iter().map(|(k, v)| (k.as_str(), v)));
        for (name, values) in lists {
            if values.len() > MAX_FILTER_VALUES {
                return bad(format!("filters.{name}: at most {MAX_FILTER_VALUES} values"));
            }
            if name.len() > MAX_FILTER_VALUE_BYTES || values.iter().any(|v| v.len() > MAX_FILTER_VALUE_BYTES) {
                return bad(format!("filters.{name}: keys and values are at most {MAX_FILTER_VALUE_BYTES} bytes"));
            }
        }
        if let Some(p) = self.price {
            for (name, v) in [("min", p.min), ("max", p.max)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return bad(format!("filters.price.{name} must be a finite number"));
                }
            }
            if let (Some(lo), Some(hi)) = (p.min, p.max) {
                if lo > hi {
                    return bad(format!("filters.price: min {lo} is above max {hi}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_bounds() {
        let mut f = Filters { category: vec!["x".into(); MAX_FILTER_VALUES], ..Default::default() };
        assert!(f.validate().is_ok());
        f.category.push("y".into());
        assert!(f.validate().unwrap_err().contains("at most 100 values"));
        let f = Filters { brand: vec!["b".repeat(MAX_FILTER_VALUE_BYTES + 1)], ..Default::default() };
        assert!(f.validate().is_err());
        let f = Filters {
            attributes: (0..=MAX_FILTER_ATTRIBUTES).map(|i| (format!("k{i}"), vec!["v".into()])).collect(),
            ..Default::default()
        };
        assert!(f.validate().is_err());
        let f = Filters { price: Some(PriceRange { min: Some(5.0), max: Some(1.0) }), ..Default::default() };
        assert!(f.validate().is_err());
        let f = Filters { price: Some(PriceRange { min: Some(f64::NAN), max: None }), ..Default::default() };
        assert!(f.validate().is_err());
    }
}
