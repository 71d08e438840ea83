//! API errors: the typed errors of the query and write services, plus the few the HTTP layer
//! finds itself (authentication, body parsing), mapped to an HTTP status and a stable snake_case
//! code in one exhaustive function, [`ApiError::status_and_code`]. Every code is listed in
//! docs/API.md.
//!
//! Body: `{"error": {"code": "...", "message": "..."}}`. A 5xx never shows its cause to the client
//! (it may name server paths); the cause goes to the log.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use vitrine_core::CoreError;
use vitrine_fetch::{Blame, FetchError};
use vitrine_indexer::service::WriteError;
use vitrine_indexer::IndexError;
use vitrine_searcher::service::QueryError;
use vitrine_searcher::SearchError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be parsed (body, query string, path, multipart).
    #[error("{0}")]
    BadRequest(String),
    /// A product write whose images all failed.
    #[error("{0}")]
    InvalidImage(String),
    #[error("{0}")]
    NotFound(String),
    /// A route that exists, asked with a method it does not have.
    #[error("{method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed { method: String, path: String, allow: String },
    #[error("missing API key: send `Authorization: Bearer KEY` or `X-Api-Key: KEY`")]
    Unauthorized,
    #[error("this API key may not do that")]
    Forbidden,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotReady(&'static str),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("worker pool: {0}")]
    Blocking(#[from] actix_web::error::BlockingError),
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Migration(#[from] vitrine_migrations::MigrationError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("backend: {0}")]
    Engine(#[from] vitrine_engine::EngineError),
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;
const INTERNAL: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "internal");

fn core(e: &CoreError) -> (StatusCode, &'static str) {
    match e {
        CoreError::Image { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
        CoreError::Tokenizer { .. } => (BAD, "bad_request"),
        CoreError::ModelLoad { .. }
        | CoreError::Runtime { .. }
        | CoreError::Inference { .. }
        | CoreError::Store { .. }
        | CoreError::Index { .. }
        | CoreError::Io { .. } => INTERNAL,
    }
}

fn search(e: &SearchError) -> (StatusCode, &'static str) {
    match e {
        SearchError::BadRequest(_) => (BAD, "bad_request"),
        SearchError::InvalidQuery(_) => (BAD, "invalid_query"),
        SearchError::NoIndex => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        SearchError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        SearchError::Core(c) => core(c),
        SearchError::Tantivy(_) | SearchError::InvalidSettings { .. } => INTERNAL,
    }
}

fn query(e: &QueryError) -> (StatusCode, &'static str) {
    match e {
        QueryError::MissingInput | QueryError::Conflicting(_) => (BAD, "bad_request"),
        QueryError::Search(s) => search(s),
        QueryError::ImageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        QueryError::ImageUrlsDisabled => (BAD, "image_url_disabled"),
        QueryError::Fetch(f) => fetch(f),
        QueryError::Model(c) => core(c),
        QueryError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        QueryError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        QueryError::ModelMismatch { .. } | QueryError::ModelAlreadySet => (StatusCode::CONFLICT, "conflict"),
    }
}

/// A search's `image_url`: whose fault a failed fetch is decides 4xx or 5xx.
fn fetch(e: &FetchError) -> (StatusCode, &'static str) {
    match e {
        FetchError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        _ => match e.blame() {
            Blame::Source => (BAD, "image_url_failed"),
            Blame::Upstream => (StatusCode::BAD_GATEWAY, "upstream_failed"),
            Blame::Local => INTERNAL,
        },
    }
}

fn index(e: &IndexError) -> (StatusCode, &'static str) {
    match e {
        IndexError::ModelMismatch { .. } | IndexError::Busy { .. } | IndexError::Reindex(_) => (StatusCode::CONFLICT, "conflict"),
        IndexError::Invalid(_) => (BAD, "bad_request"),
        IndexError::Core(c) => core(c),
        IndexError::Migration(_) => INTERNAL,
        // Validated at startup; one that fails later is the server's configuration, not the request.
        IndexError::TagVocabulary { .. } => INTERNAL,
    }
}

fn write(e: &WriteError) -> (StatusCode, &'static str) {
    match e {
        WriteError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        WriteError::Index(i) => index(i),
        WriteError::JobNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        WriteError::ReportGone { .. } => (StatusCode::GONE, "report_gone"),
        WriteError::Io { .. } => INTERNAL,
        WriteError::Upload(u) => match u {
            vitrine_indexer::upload::UploadError::Invalid { .. } => (BAD, "bad_request"),
            vitrine_indexer::upload::UploadError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            vitrine_indexer::upload::UploadError::Io { .. } => INTERNAL,
        },
    }
}

impl ApiError {
    /// The one map from every error the service can return to its HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (BAD, "bad_request"),
            ApiError::InvalidImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Query(e) => query(e),
            ApiError::Search(e) => search(e),
            ApiError::Write(e) => write(e),
            ApiError::Blocking(_) => INTERNAL,
        }
    }

    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!("internal error: {self}");
            "internal error; the server log has the details".to_string()
        } else {
            self.to_string()
        };
        let mut r = HttpResponse::build(status);
        if code == "overloaded" {
            r.insert_header(("Retry-After", "1"));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            r.insert_header(("Allow", allow.as_str()));
        }
        r.json(ErrorBody::new(code, message))
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError::Search(SearchError::Core(e))
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        ApiError::Write(WriteError::Index(e))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code (docs/API.md lists them): `bad_request`, `invalid_query`,
    /// `invalid_image`, `image_url_disabled`, `image_url_failed`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `conflict`, `report_gone`, `payload_too_large`, `not_ready`, `overloaded`,
    /// `upstream_failed`, `internal`.
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: String) -> Self {
        ErrorBody { error: ErrorDetail { code: code.to_string(), message } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_errors_are_4xx_and_faults_5xx() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (QueryError::MissingInput.into(), 400, "bad_request"),
            (SearchError::InvalidQuery("deep".into()).into(), 400, "invalid_query"),
            (QueryError::Search(SearchError::InvalidQuery("x".into())).into(), 400, "invalid_query"),
            (QueryError::ImageTooLarge { limit: 1 }.into(), 413, "payload_too_large"),
            (QueryError::ImageUrlsDisabled.into(), 400, "image_url_disabled"),
            (QueryError::Overloaded { capacity: 1 }.into(), 503, "overloaded"),
            (QueryError::NotReady.into(), 503, "not_ready"),
            (SearchError::NoIndex.into(), 503, "not_ready"),
            (SearchError::NotFound("a".into()).into(), 404, "not_found"),
            (QueryError::Model(CoreError::image("x", vitrine_core::ImageErrorKind::UnknownFormat)).into(), 422, "invalid_image"),
            (WriteError::JobNotFound { id: "j".into() }.into(), 404, "not_found"),
            (WriteError::ReportGone { id: "j".into() }.into(), 410, "report_gone"),
            (WriteError::NotReady.into(), 503, "not_ready"),
            (CoreError::Store { message: "/secret/path broke".into() }.into(), 500, "internal"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::Forbidden, 403, "forbidden"),
            (
                ApiError::MethodNotAllowed { method: "GET".into(), path: "/x".into(), allow: "POST".into() },
                405,
                "method_not_allowed",
            ),
        ];
        for (e, status, code) in cases {
            let (s, c) = e.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code), "{e}");
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e: ApiError = CoreError::Store { message: "/srv/data/store: disk on fire".into() }.into();
        let body = actix_web::body::MessageBody::try_into_bytes(e.error_response().into_body()).unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("/srv/data"), "{text}");
        assert!(text.contains("\"code\":\"internal\""), "{text}");
    }

    #[test]
    fn overload_says_when_to_retry() {
        let e: ApiError = QueryError::Overloaded { capacity: 4 }.into();
        assert_eq!(e.error_response().headers().get("retry-after").unwrap(), "1");
    }
}
