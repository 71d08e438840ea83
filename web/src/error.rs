//! API errors: one enum, one exhaustive mapping to HTTP status and a stable snake_case code.
//! Body: `{"error": {"code": "...", "message": "..."}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use vitrine_indexer::IndexError;
use vitrine_searcher::SearchError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidImage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("missing API key: send `Authorization: Bearer KEY` or `X-Api-Key: KEY`")]
    Unauthorized,
    #[error("this API key may not do that")]
    Forbidden,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the model queue is full ({0} requests waiting); retry shortly")]
    Overloaded(usize),
    #[error("{0}")]
    NotReady(String),
    /// A server this one fetched from failed or timed out (an `image_url`).
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidImage(_) => "invalid_image",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Upstream(_) => "upstream_failed",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidImage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Overloaded(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!("internal error: {self}");
        }
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Overloaded(_)) {
            r.insert_header(("Retry-After", "1"));
        }
        r.json(serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

impl From<vitrine_core::CoreError> for ApiError {
    fn from(e: vitrine_core::CoreError) -> Self {
        use vitrine_core::CoreError as C;
        match e {
            C::Image { .. } => ApiError::InvalidImage(e.to_string()),
            C::Tokenizer { .. } => ApiError::BadRequest(e.to_string()),
            C::Store { ref message } if message.contains("in use by another vitrine process") => {
                ApiError::Conflict(e.to_string())
            }
            C::ModelLoad { .. } | C::Runtime { .. } | C::Inference { .. } | C::Store { .. } | C::Index { .. } | C::Io { .. } => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::BadRequest(m) => ApiError::BadRequest(m),
            SearchError::NoIndex => ApiError::NotReady(e.to_string()),
            SearchError::NotFound(_) => ApiError::NotFound(e.to_string()),
            SearchError::Core(c) => c.into(),
            SearchError::Tantivy(t) => ApiError::Internal(t.to_string()),
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::ModelMismatch { .. } => ApiError::Conflict(e.to_string()),
            IndexError::Invalid(m) => ApiError::BadRequest(m),
            IndexError::Core(c) => c.into(),
            IndexError::Migration(m) => ApiError::Internal(m.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(format!("worker pool: {e}"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
