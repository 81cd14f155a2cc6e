//! Owns the relying party: whoever a sign-in journey answers (an OpenID client today; a SAML
//! service provider or a device client later), as the journey's policy sees it. The MFA, channel
//! and session-limit policy is keyed on this, not on one protocol's registry.

use crate::domain::Channel;
use crate::domain::client::Client;
use crate::domain::policy::{MfaRequirement, OnLimit};

/// A relying party's policy, whatever protocol registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    /// `protocol:id`, unique across protocols (`openid:webapp`), for logs and audit.
    pub key: String,
    /// The name shown to the user.
    pub name: String,
    pub channel: Channel,
    /// Its own concurrent-session limit (`Some(0)`: none), else its channel's.
    pub max_sessions_per_user: Option<u32>,
    pub on_session_limit: Option<OnLimit>,
    /// Its own MFA requirement, else `[mfa] required`.
    pub mfa: Option<MfaRequirement>,
}

impl RelyingParty {
    /// An OpenID client as a relying party.
    pub fn openid(client: &Client) -> Self {
        Self {
            key: format!("openid:{}", client.id),
            name: client.name.clone(),
            channel: client.channel,
            max_sessions_per_user: client.max_sessions_per_user,
            on_session_limit: client.on_session_limit,
            mfa: client.mfa,
        }
    }
}
