//! Owns turning a verified identity into a first-party session.

use crate::domain::{Channel, UserId};
use crate::session::{NewSession, SessionError, SessionManager, SessionToken};
use crate::storage::{SessionRecord, StorageError, Store};
use crate::upstream::Identity;
use crate::upstream::local::LOCAL_UPSTREAM_ID;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the account behind this identity no longer exists")]
    UnknownUser,
    #[error("the account is disabled")]
    Disabled,
    #[error("identities from upstream `{0}` cannot sign in yet")]
    UnsupportedUpstream(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Where the user is signing in from.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub channel: Channel,
    pub user_agent: String,
    pub ip: String,
}

/// Finds the broker user for `identity` and opens a session for them. Blocking (storage).
pub fn sign_in(
    store: &dyn Store,
    sessions: &SessionManager,
    identity: Identity,
    ctx: ClientContext,
) -> Result<(SessionToken, SessionRecord), FlowError> {
    if identity.upstream != LOCAL_UPSTREAM_ID {
        // Federated identities are mapped to users through the link table (upstream issue).
        return Err(FlowError::UnsupportedUpstream(identity.upstream));
    }
    let user = store
        .user_by_id(&UserId::from_stored(identity.subject))?
        .ok_or(FlowError::UnknownUser)?;
    if user.disabled {
        return Err(FlowError::Disabled);
    }
    Ok(sessions.create(NewSession {
        user_id: user.id,
        channel: ctx.channel,
        user_agent: ctx.user_agent,
        ip: ctx.ip,
        upstream: identity.upstream,
        amr: identity.amr,
    })?)
}
