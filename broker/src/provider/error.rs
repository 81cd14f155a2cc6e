//! Owns [`OAuthError`], the OAuth 2.0 / OIDC error codes the provider answers with, and how
//! storage and key errors map onto them.

use super::keys::KeyError;
use crate::storage::StorageError;

/// OAuth 2.0 / OIDC errors; each variant is an RFC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    #[error("invalid_client")]
    InvalidClient,
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(String),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("unsupported_response_type")]
    UnsupportedResponseType,
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    #[error("login_required")]
    LoginRequired,
    /// `prompt=none`, but a step-up (second factor) would need the user.
    #[error("interaction_required")]
    InteractionRequired,
    /// The user (or the upstream identity provider) refused the authorization.
    #[error("access_denied")]
    AccessDenied,
    #[error("invalid_token")]
    InvalidToken,
    #[error("insufficient_scope")]
    InsufficientScope,
    #[error("server_error")]
    ServerError(String),
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    /// A `request` object at /authorize (OIDC Core 6.1): not supported.
    #[error("request_not_supported")]
    RequestNotSupported,
    /// A `request_uri` at /authorize (OIDC Core 6.2): not supported.
    #[error("request_uri_not_supported")]
    RequestUriNotSupported,
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::LoginRequired => "login_required",
            Self::InteractionRequired => "interaction_required",
            Self::AccessDenied => "access_denied",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::ServerError(_) => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
        }
    }

    /// A description safe to send to the client (never internals).
    pub fn description(&self) -> Option<String> {
        match self {
            Self::InvalidRequest(m)
            | Self::InvalidGrant(m)
            | Self::UnauthorizedClient(m)
            | Self::InvalidScope(m) => Some(m.clone()),
            Self::InvalidClient => Some("client authentication failed".into()),
            Self::InvalidToken => Some("the access token is not valid".into()),
            Self::TemporarilyUnavailable => {
                Some("temporarily unavailable; try again in a moment".into())
            }
            _ => None,
        }
    }
}

impl From<StorageError> for OAuthError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => Self::TemporarilyUnavailable,
            other => Self::ServerError(other.to_string()),
        }
    }
}

impl From<KeyError> for OAuthError {
    fn from(e: KeyError) -> Self {
        Self::ServerError(e.to_string())
    }
}
