//! Owns the one web error type: each variant decides the status code and the safe, localised
//! message of the error page; internals are logged and never shown.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// Which localised message an error page shows; set as a response extension for the middleware
/// that renders error pages (it knows the request's language and id).
#[derive(Debug, Clone, Copy)]
pub struct ErrorMessage(pub &'static str);

/// Marks an answer given because the database is unavailable (a response extension): the
/// middleware counts it and audits the outage once.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUnavailable;

/// `Retry-After` (seconds) of every "the database is unavailable" answer.
pub const UNAVAILABLE_RETRY_AFTER: &str = "5";

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
    /// An OAuth error answered as RFC 6749 JSON (token, introspection, revocation endpoints).
    #[error("oauth error: {0}")]
    OAuth(crate::provider::OAuthError),
    /// A protected-resource error (userinfo): RFC 6750 `WWW-Authenticate: Bearer`.
    #[error("bearer error: {0}")]
    Bearer(crate::provider::OAuthError),
    /// A rate limit or lockout, on a page: 429 with `Retry-After` (seconds).
    #[error("too many requests; retry after {0} s")]
    TooManyRequests(u64),
    /// A rate limit at an OAuth endpoint: 429 JSON with `Retry-After` (seconds).
    #[error("too many requests at an OAuth endpoint; retry after {0} s")]
    OAuthTooManyRequests(u64),
    /// An admin API error: JSON `{error, error_description}` with this status.
    #[error("admin api: {status} {code}")]
    Api {
        status: StatusCode,
        code: &'static str,
        description: String,
    },
}

impl WebError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// An admin API error.
    pub fn api(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self::Api {
            status,
            code,
            description: description.into(),
        }
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
            Self::TooManyRequests(_) | Self::OAuthTooManyRequests(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Api { status, .. } => *status,
            Self::Bearer(crate::provider::OAuthError::InvalidRequest(m)) if m.is_empty() => {
                StatusCode::UNAUTHORIZED
            }
            Self::OAuth(e) | Self::Bearer(e) => oauth_status(e),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::OAuth(e) | Self::Bearer(e) = self {
            return oauth_response(e, matches!(self, Self::Bearer(_)));
        }
        match self {
            Self::OAuthTooManyRequests(secs) => {
                return HttpResponse::TooManyRequests()
                    .insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()))
                    .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
                    .json(serde_json::json!({
                        "error": "slow_down",
                        "error_description": format!("too many requests from this client; retry after {secs} s"),
                    }));
            }
            Self::Api {
                status,
                code,
                description,
            } => {
                let mut res = HttpResponse::build(*status);
                res.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
                if *status == StatusCode::UNAUTHORIZED {
                    res.insert_header((
                        actix_web::http::header::WWW_AUTHENTICATE,
                        format!("Bearer error=\"{code}\""),
                    ));
                }
                return res.json(serde_json::json!({
                    "error": code,
                    "error_description": description,
                }));
            }
            _ => {}
        }
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
        if let Self::Unavailable(_) = self {
            res.extensions_mut()
                .insert(ErrorMessage("error_db_unavailable_message"));
            res.extensions_mut().insert(DatabaseUnavailable);
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static(UNAVAILABLE_RETRY_AFTER),
            );
        }
        if let Self::TooManyRequests(secs) = self
            && let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, v);
        }
        res
    }
}

fn oauth_status(e: &crate::provider::OAuthError) -> StatusCode {
    use crate::provider::OAuthError as E;
    match e {
        E::InvalidClient | E::InvalidToken => StatusCode::UNAUTHORIZED,
        E::InsufficientScope => StatusCode::FORBIDDEN,
        E::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// RFC 6749 5.2 / RFC 6750 3 error answer; server errors are logged, not described.
fn oauth_response(e: &crate::provider::OAuthError, bearer: bool) -> HttpResponse {
    use crate::provider::OAuthError as E;
    if let E::ServerError(m) = e {
        tracing::error!(error = %m, "internal error at an OAuth endpoint");
    }
    let no_credentials = bearer && matches!(e, E::InvalidRequest(m) if m.is_empty());
    let status = if no_credentials {
        StatusCode::UNAUTHORIZED
    } else {
        oauth_status(e)
    };
    if no_credentials {
        return HttpResponse::build(status)
            .insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"))
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"error": "invalid_request", "error_description": "a bearer token is required"}));
    }
    let mut res = HttpResponse::build(status);
    res.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    let unavailable = matches!(e, E::TemporarilyUnavailable);
    if unavailable {
        res.insert_header((
            actix_web::http::header::RETRY_AFTER,
            UNAVAILABLE_RETRY_AFTER,
        ));
    }
    if bearer {
        let desc = e.description().unwrap_or_default().replace('"', "'");
        let value = if matches!(e, E::InvalidRequest(_)) && desc.is_empty() {
            "Bearer".to_owned()
        } else {
            format!(
                "Bearer error=\"{}\", error_description=\"{desc}\"",
                e.code()
            )
        };
        res.insert_header((actix_web::http::header::WWW_AUTHENTICATE, value));
    } else if matches!(e, E::InvalidClient) {
        res.insert_header((
            actix_web::http::header::WWW_AUTHENTICATE,
            "Basic realm=\"concierge\"",
        ));
    }
    let mut body = serde_json::json!({ "error": e.code() });
    if let Some(d) = e.description() {
        body["error_description"] = serde_json::Value::String(d);
    }
    let mut res = res.json(body);
    if unavailable {
        res.extensions_mut().insert(DatabaseUnavailable);
    }
    res
}
