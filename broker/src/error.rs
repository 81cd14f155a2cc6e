//! Owns the one web error type: each variant decides the status code and the safe, localised
//! message of the error page; internals are logged and never shown.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// Which localised message an error page shows; set as a response extension for the middleware
/// that renders error pages (it knows the request's language and id).
#[derive(Debug, Clone, Copy)]
pub struct ErrorMessage(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("bad request")]
    BadRequest,
    #[error("missing or invalid CSRF token")]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The message is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<crate::storage::StorageError> for WebError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::session::SessionError> for WebError {
    fn from(e: crate::session::SessionError) -> Self {
        match e {
            crate::session::SessionError::Storage(s) => s.into(),
        }
    }
}

impl From<crate::pages::PageError> for WebError {
    fn from(e: crate::pages::PageError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for WebError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(m) => tracing::error!(error = %m, "internal error"),
            Self::Unavailable(m) => tracing::warn!(error = %m, "dependency unavailable"),
            other => tracing::debug!(error = %other, "request refused"),
        }
        let mut res = HttpResponse::new(self.status_code());
        if let Self::Csrf = self {
            res.extensions_mut()
                .insert(ErrorMessage("error_csrf_message"));
        }
        res
    }
}
