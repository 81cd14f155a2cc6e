//! Owns turning a verified identity into a first-party session.

use crate::config::SessionLimit;
use crate::domain::{Channel, UserId};
use crate::provider::{OAuthError, Provider};
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
    #[error(transparent)]
    Provider(#[from] OAuthError),
}

/// Where the user is signing in from.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub channel: Channel,
    /// The concurrent-session limit that applies to this sign-in.
    pub limit: SessionLimit,
    pub user_agent: String,
    pub ip: String,
}

/// Finds the broker user for `identity` and opens a session for them. Blocking (storage).
pub fn sign_in(
    store: &dyn Store,
    sessions: &SessionManager,
    provider: &Provider,
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
    make_room(store, sessions, provider, &user.id, &ctx)?;
    Ok(sessions.create(NewSession {
        user_id: user.id,
        channel: ctx.channel,
        user_agent: ctx.user_agent,
        ip: ctx.ip,
        upstream: identity.upstream,
        amr: identity.amr,
    })?)
}

/// Enforces the concurrent-session limit: the oldest live sessions in scope end (everywhere,
/// with back-channel logout) until the new one fits. Returns how many ended.
fn make_room(
    store: &dyn Store,
    sessions: &SessionManager,
    provider: &Provider,
    user: &UserId,
    ctx: &ClientContext,
) -> Result<usize, FlowError> {
    let (max, this_channel_only) = match ctx.limit {
        SessionLimit::None => return Ok(0),
        SessionLimit::AllChannels(n) => (n as usize, false),
        SessionLimit::ThisChannel(n) => (n as usize, true),
    };
    let now = sessions.now();
    // Oldest first; sessions already expired but not yet swept do not count.
    let mut live: Vec<SessionRecord> = store
        .sessions_of_user(user)?
        .into_iter()
        .filter(|s| now < s.expires_at && now.saturating_sub(s.last_seen) < s.idle_timeout)
        .filter(|s| !this_channel_only || s.channel == ctx.channel)
        .collect();
    let mut ended = 0;
    while live.len() >= max.max(1) {
        let oldest = live.remove(0);
        provider.end_session_record(&oldest)?;
        tracing::info!(user_id = %user, sid = %oldest.sid, reason = "session_limit", "oldest session ended");
        ended += 1;
    }
    Ok(ended)
}
