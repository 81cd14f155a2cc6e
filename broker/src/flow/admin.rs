//! Owns the admin actions on sessions and passkeys, shared by the CLI and the admin REST API:
//! which sessions a query selects, and ending them (one, a user's with revoke-all, a client's,
//! all); a user's passkeys listed and removed one by one (`mfa::passkey_list`); each action
//! written to the audit trail with who did it.

use crate::audit::{Event, EventKind};
use crate::domain::UserId;
use crate::mfa::MfaError;
use crate::mfa::passkey_list::{self, PasskeyInfo, Removed};
use crate::provider::{OAuthError, Provider};
use crate::storage::{SessionRecord, StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such session")]
    UnknownSession,
    #[error("no such user")]
    UnknownUser,
    #[error("no such passkey")]
    UnknownPasskey,
    #[error(transparent)]
    Mfa(#[from] MfaError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Provider(#[from] OAuthError),
}

/// Which sessions an admin means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sid(String),
    /// Revoke-all: every session and every token of the user.
    User(UserId),
    /// The sessions a client took part in.
    Client(String),
    All,
}

/// The sessions `target` selects, oldest first, at most `limit`. Blocking.
pub fn list(
    store: &dyn Store,
    target: &Target,
    limit: i64,
) -> Result<Vec<SessionRecord>, AdminError> {
    let mut list = match target {
        Target::Sid(sid) => store.session_by_sid(sid)?.into_iter().collect(),
        Target::User(u) => store.sessions_of_user(u)?,
        Target::Client(c) => store.sessions_of_client(c)?,
        Target::All => store.all_sessions(limit)?,
    };
    list.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(list)
}

/// Ends the sessions `target` selects everywhere (refresh tokens, back-channel logout); for a
/// user, also moves their token epoch so unexpired access tokens are refused. `actor` names who
/// asked (e.g. `cli`, or the admin API client). Returns how many sessions ended. Blocking.
pub fn revoke(
    store: &dyn Store,
    provider: &Provider,
    target: &Target,
    actor: &str,
) -> Result<usize, AdminError> {
    let reason = format!("admin:{actor}");
    let (ended, event) = match target {
        Target::User(u) => {
            if store.user_by_id(u)?.is_none() {
                return Err(AdminError::UnknownUser);
            }
            let n = provider.revoke_user(u, &reason)?;
            (n, Event::new(EventKind::AdminAction).user(u.as_str()))
        }
        Target::Sid(sid) => {
            let s = store
                .session_by_sid(sid)?
                .ok_or(AdminError::UnknownSession)?;
            provider.end_session_record(&s, &reason)?;
            (
                1,
                Event::new(EventKind::AdminAction)
                    .user(s.user_id.as_str())
                    .sid(sid.as_str()),
            )
        }
        Target::Client(c) => {
            let list = store.sessions_of_client(c)?;
            for s in &list {
                provider.end_session_record(s, &reason)?;
            }
            (
                list.len(),
                Event::new(EventKind::AdminAction).client(c.as_str()),
            )
        }
        Target::All => {
            let mut n = 0;
            loop {
                let batch = store.all_sessions(1_000)?;
                if batch.is_empty() {
                    break;
                }
                for s in &batch {
                    provider.end_session_record(s, &reason)?;
                }
                n += batch.len();
            }
            (n, Event::new(EventKind::AdminAction))
        }
    };
    let what = match target {
        Target::Sid(_) => "revoke_session",
        Target::User(_) => "revoke_user",
        Target::Client(_) => "revoke_client_sessions",
        Target::All => "revoke_all_sessions",
    };
    provider
        .audit
        .record(event.reason(format!("{what} by {actor}")));
    Ok(ended)
}

/// The passkeys of a user, oldest first. Blocking.
pub fn passkeys(store: &dyn Store, user: &UserId) -> Result<Vec<PasskeyInfo>, AdminError> {
    if store.user_by_id(user)?.is_none() {
        return Err(AdminError::UnknownUser);
    }
    Ok(passkey_list::list(store, user)?)
}

/// Removes one passkey of a user (`id`: base64url, as listed); `actor` names who asked. As a
/// password change does, it ends the user's sessions everywhere and moves their token epoch (a
/// passkey is removed because a device was lost or stolen: what it opened ends with it).
/// Returns how many passkeys are left. Blocking.
pub fn remove_passkey(
    store: &dyn Store,
    provider: &Provider,
    user: &UserId,
    id: &str,
    actor: &str,
) -> Result<usize, AdminError> {
    if store.user_by_id(user)?.is_none() {
        return Err(AdminError::UnknownUser);
    }
    match passkey_list::remove(store, &provider.audit, user, id, &format!("admin:{actor}"))? {
        Removed::Left(n) => {
            provider.revoke_user(user, "passkey_removed")?;
            Ok(n)
        }
        Removed::NotFound => Err(AdminError::UnknownPasskey),
    }
}
