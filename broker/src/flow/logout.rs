//! Owns ending a first-party session: the record and its refresh tokens go, and every app that
//! took part is told through back-channel logout.

use crate::provider::{OAuthError, Provider};
use crate::session::{SessionError, SessionManager};
use crate::storage::SessionRecord;

#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Provider(#[from] OAuthError),
}

/// Ends the session behind a cookie value (if any); `reason` goes to the audit trail.
/// Blocking (storage).
pub fn end_session(
    sessions: &SessionManager,
    provider: &Provider,
    cookie_value: &str,
    reason: &str,
) -> Result<Option<SessionRecord>, LogoutError> {
    let Some(record) = sessions.end(cookie_value)? else {
        return Ok(None);
    };
    let queued = provider.session_ended(&record, reason)?;
    tracing::info!(sid = %record.sid, backchannel = queued, "session ended");
    Ok(Some(record))
}
