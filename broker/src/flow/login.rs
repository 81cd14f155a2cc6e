//! Owns turning a verified identity into a first-party session.

use crate::audit::{Event, EventKind};
use crate::clock::Entropy;
use crate::clock::UnixTime;
use crate::domain::policy::{OnLimit, SessionLimit};
use crate::domain::{Channel, Email, UserId};
use crate::flow::machine::{PendingLink, Proven};
use crate::provider::logout::Ending;
use crate::provider::{OAuthError, Provider};
use crate::session::{NewSession, Opened, SessionError, SessionManager, SessionToken};
use crate::storage::User;
use crate::storage::{SessionRecord, StorageError, Store, UpstreamClaims};
use crate::upstream::Identity;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the account behind this identity no longer exists")]
    UnknownUser,
    #[error("the account is disabled")]
    Disabled,
    /// The proofs were made before the user's token epoch moved (password change, revoke-all).
    #[error("the sign-in's proofs predate the account's last revocation")]
    ProofOutdated,
    #[error("identities from upstream `{0}` cannot sign in yet")]
    UnsupportedUpstream(String),
    /// An account with the upstream's email exists, but the email is not trusted for linking:
    /// the user must prove that account first.
    #[error("an existing account must be proven before it is linked")]
    LinkRequired {
        email: Email,
        upstream: String,
        subject: String,
    },
    /// A first login from an upstream that gave no usable email: no account can be created.
    #[error("the upstream gave no email address")]
    NoEmail,
    /// An unsolicited answer for an identity not linked to any account: nothing is linked or
    /// created on an answer the broker did not ask for.
    #[error("an unsolicited sign-in for an identity that is not linked")]
    NotLinked,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Provider(#[from] OAuthError),
    /// The user is at the session limit and the policy is to let them choose one to end.
    #[error("the user is at the session limit")]
    SessionLimit {
        /// The live sessions that count against the limit, oldest first.
        sessions: Vec<SessionRecord>,
    },
}

/// Where the user is signing in from.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub channel: Channel,
    /// The concurrent-session limit that applies to this sign-in.
    pub limit: SessionLimit,
    pub on_limit: OnLimit,
    pub user_agent: String,
    pub ip: String,
}

/// Maps an upstream identity to a broker user: through the link table; else, when the upstream
/// is trusted for it and says the email is verified, by linking the account with that email;
/// else, if no account has that email, by creating one (just in time). An existing account is
/// never taken over on an email the upstream did not verify, or from an untrusted upstream.
/// An `unsolicited` answer (SAML IdP-initiated) maps only through the link table: it never links
/// nor creates an account ([`FlowError::NotLinked`]). Blocking (storage).
pub fn federated_user(
    store: &dyn Store,
    entropy: &dyn Entropy,
    now: crate::clock::UnixTime,
    identity: &Identity,
    link_by_verified_email: bool,
    unsolicited: bool,
) -> Result<Mapped, FlowError> {
    // What the tokens of this session may say: the upstream's groups, and its verified email
    // only when the upstream is trusted for verified email.
    let remember = |store: &dyn Store| {
        let verified = identity
            .email
            .as_ref()
            .filter(|_| link_by_verified_email && identity.email_verified)
            .map(Email::as_str);
        store.set_upstream_claims(
            &identity.upstream,
            &identity.subject,
            &UpstreamClaims {
                groups: identity.groups.clone(),
                verified_email: verified.map(str::to_owned),
                kept: identity.kept.clone(),
            },
        )
    };
    if let Some(user) = store.upstream_link(&identity.upstream, &identity.subject)? {
        remember(store)?;
        return Ok(Mapped {
            user_id: user,
            link: None,
        });
    }
    if unsolicited {
        return Err(FlowError::NotLinked);
    }
    let email = identity.email.clone().ok_or(FlowError::NoEmail)?;
    if let Some(existing) = store.user_by_email(&email)? {
        if link_by_verified_email && identity.email_verified {
            // Linked when the journey completes (after the account's second factor), not now.
            return Ok(Mapped {
                user_id: existing.id.clone(),
                link: Some(PendingLink {
                    upstream: identity.upstream.clone(),
                    subject: identity.subject.clone(),
                    email: email.as_str().to_owned(),
                    user_id: Some(existing.id.as_str().to_owned()),
                    groups: identity.groups.clone(),
                    verified_email: Some(email.as_str().to_owned()),
                    kept: identity.kept.clone(),
                }),
            });
        }
        return Err(FlowError::LinkRequired {
            email,
            upstream: identity.upstream.clone(),
            subject: identity.subject.clone(),
        });
    }
    let user = User {
        id: UserId::new_random(entropy),
        email,
        name: identity.name.clone().unwrap_or_default(),
        password_hash: None,
        disabled: false,
        created_at: now,
        updated_at: now,
        tokens_valid_after: 0,
    };
    store.insert_user_with_link(&user, &identity.upstream, &identity.subject)?;
    remember(store)?;
    Ok(Mapped {
        user_id: user.id,
        link: None,
    })
}

/// The broker user an upstream identity maps to, and the link to write once the journey
/// completes (an existing account claimed by a verified email from a trusted upstream).
#[derive(Debug, Clone)]
pub struct Mapped {
    pub user_id: UserId,
    pub link: Option<PendingLink>,
}

/// Opens a session for the user a journey proved (`amr` computed from the evidence), within the concurrent-session policy
/// (`user_checked`: the caller read the account, enabled, in this same request).
/// Blocking (storage).
pub fn open_session(
    store: &dyn Store,
    sessions: &SessionManager,
    provider: &Provider,
    who: &Proven,
    ctx: ClientContext,
    user_checked: bool,
    now: UnixTime,
) -> Result<(SessionToken, SessionRecord), FlowError> {
    let user_id = UserId::from_stored(who.user_id.clone());
    // When the oldest proof behind this sign-in was made: older than the user's token epoch (a
    // password change, a revoke-all, a disable since), it opens nothing.
    let proven_since = who.since().unwrap_or(now);
    // The account must still exist and be enabled (a journey may have waited minutes); a
    // password checked in this very request already read it.
    if !user_checked {
        let user = store.user_by_id(&user_id)?.ok_or(FlowError::UnknownUser)?;
        if user.disabled {
            return Err(FlowError::Disabled);
        }
        if proven_since < user.tokens_valid_after {
            return Err(FlowError::ProofOutdated);
        }
    }
    let ip = ctx.ip.clone();
    let new = NewSession {
        user_id,
        channel: ctx.channel,
        user_agent: ctx.user_agent,
        ip: ctx.ip,
        upstream: who.upstream.clone(),
        amr: who.amr(),
        upstream_acr: who.acr.clone(),
    };
    // Count, end the oldest (or refuse) and insert in one transaction: concurrent sign-ins of
    // one user never exceed the limit.
    let (token, record, evicted) = match sessions.create_within(new, ctx.limit, ctx.on_limit)? {
        Opened::Created {
            token,
            record,
            evicted,
        } => (token, *record, evicted),
        Opened::Full(sessions) => return Err(FlowError::SessionLimit { sessions }),
    };
    for oldest in &evicted {
        tracing::info!(user_id = %oldest.user_id, sid = %oldest.sid, reason = "session_limit", "oldest session ended");
        // The new session is stored: a failure to tell the old one's apps must not lose it.
        if let Err(e) = provider.session_ended(oldest, "session_limit", Ending::Elsewhere) {
            tracing::warn!(error = %e, sid = %oldest.sid, "recording an ended session failed");
        }
    }
    let event = |kind| {
        Event::new(kind)
            .user(record.user_id.as_str())
            .sid(record.sid.as_str())
            .ip(ip.as_str())
            .upstream(record.upstream.as_str())
    };
    provider.audit.record(event(EventKind::LoginSucceeded));
    provider
        .audit
        .record(event(EventKind::SessionCreated).reason(record.channel.as_str()));
    Ok((token, record))
}
