//! API keys: `Authorization: Bearer KEY` or `X-Api-Key: KEY`, compared in constant time.

use actix_web::HttpRequest;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn presented(req: &HttpRequest) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    h.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(|v| v.trim().to_string())
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn require_admin(req: &HttpRequest, state: &AppState) -> ApiResult<()> {
    let Some(want) = &state.config.admin_key else {
        return Err(ApiError::Forbidden);
    };
    match presented(req) {
        None => Err(ApiError::Unauthorized),
        Some(k) if same(&k, want) => Ok(()),
        Some(_) => Err(ApiError::Forbidden),
    }
}

/// A route guarded by `key` when it is set (the admin key opens it too); open when unset.
fn require_optional(req: &HttpRequest, state: &AppState, key: Option<&str>) -> ApiResult<()> {
    let Some(want) = key else { return Ok(()) };
    match presented(req) {
        None => Err(ApiError::Unauthorized),
        Some(k) if same(&k, want) || state.config.admin_key.as_deref().is_some_and(|a| same(&k, a)) => Ok(()),
        Some(_) => Err(ApiError::Forbidden),
    }
}

/// Everything a shopper reads: searches, products, images and thumbnails.
pub fn require_search(req: &HttpRequest, state: &AppState) -> ApiResult<()> {
    require_optional(req, state, state.config.search_key.as_deref())
}

/// `/metrics`, when `metrics_key` is set.
pub fn require_metrics(req: &HttpRequest, state: &AppState) -> ApiResult<()> {
    require_optional(req, state, state.config.metrics_key.as_deref())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn a_key_is_read_from_either_header_trimmed_and_bearer_only() {
        let r = TestRequest::default().insert_header(("x-api-key", "  k1 ")).to_http_request();
        assert_eq!(presented(&r).as_deref(), Some("k1"));
        let r = TestRequest::default().insert_header(("authorization", "Bearer k2")).to_http_request();
        assert_eq!(presented(&r).as_deref(), Some("k2"));
        // X-Api-Key wins when both are sent; other schemes are not keys.
        let r = TestRequest::default()
            .insert_header(("authorization", "Bearer k2"))
            .insert_header(("x-api-key", "k1"))
            .to_http_request();
        assert_eq!(presented(&r).as_deref(), Some("k1"));
        for h in ["Basic k3", "bearer k3", "k3"] {
            let r = TestRequest::default().insert_header(("authorization", h)).to_http_request();
            assert_eq!(presented(&r), None, "{h}");
        }
        assert_eq!(presented(&TestRequest::default().to_http_request()), None);
    }

    #[test]
    fn keys_compare_whole_and_exact() {
        assert!(same("secret", "secret"));
        for other in ["secreT", "secret ", "secre", "", "secretsecret"] {
            assert!(!same("secret", other), "{other:?}");
        }
        assert!(same("", ""));
    }
}
