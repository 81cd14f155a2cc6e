//! Owns how a journey answers the relying party it was started for, whatever the protocol:
//! [`Request`] is what the journey keeps of the protocol's request (tagged with its protocol in
//! the journey's JSON), [`Answer`] what the journey asks of it while it runs (who the party is,
//! the level it wants, where its answer goes), and [`Resolved`] the party as registered now,
//! which answers a signed-in session or words a refusal. One file per protocol (Keycloak's
//! `LoginProtocol`): `openid.rs` answers with an authorization code; a SAML Response or a device
//! approval is a file beside it, one variant of [`Request`] and one arm of
//! [`Request::answerer`].
//!
//! Nothing here knows the journey's machine or steps: the journey calls in, never the reverse.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::relying_party::RelyingParty;
use crate::flow::contract::Outcome;
use crate::provider::Provider;
use crate::provider::authorize::StoredRequest;
use crate::saml_idp::SamlIdp;
use crate::storage::{SessionRecord, StorageError};

pub mod openid;
pub mod saml;

/// The request a journey answers, as kept in the journey (parsed once, where it came in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum Request {
    /// An OpenID Connect authorization request (`openid.rs`).
    Openid(StoredRequest),
    /// A SAML AuthnRequest (`saml.rs`).
    Saml(saml::SamlRequest),
}

impl Request {
    /// The protocol's answerer for this request.
    pub fn answerer(&self) -> &dyn Answer {
        match self {
            Request::Openid(r) => r,
            Request::Saml(r) => r,
        }
    }
}

/// What a protocol's kept request tells the journey. Only [`Answer::resolve`] may block (a
/// registry read): run it off the async threads.
pub trait Answer: Send + Sync {
    /// The relying party's key (`protocol:id`), known without a registry read.
    fn party_key(&self) -> String;
    /// The authentication context the request asks for, as `acr_values` (space-separated, most
    /// wanted first); a SAML `RequestedAuthnContext` is mapped to the broker's levels.
    fn acr_values(&self) -> Option<&str>;
    /// Where the answer goes: its origin is where the sign-in pages' forms may lead
    /// (`form-action` after the last step).
    fn destination(&self) -> Option<Url>;
    /// The request again, with its relying party as registered now; `None`: the party (or the
    /// address it is answered at) is gone, and nothing is answered.
    fn resolve(&self, env: &AnswerEnv) -> Result<Option<Box<dyn Resolved>>, AnswerError>;
}

/// A request whose relying party is registered now: its policy, and how it is answered. Both
/// answers may block (storage, signing).
pub trait Resolved: Send {
    /// The party's policy (MFA, channel, session limit) as the journey applies it.
    fn party(&self) -> &RelyingParty;
    /// The answer for the signed-in session `session` (an authorization code, a signed
    /// Response), delivered by the browser.
    fn answer(
        self: Box<Self>,
        env: &AnswerEnv,
        session: &SessionRecord,
    ) -> Result<Outcome, AnswerError>;
    /// A refusal in the protocol's own words, delivered at the party (an OAuth error at the
    /// redirect URI, a SAML Response with a status).
    fn refuse(self: Box<Self>, env: &AnswerEnv, why: &Refusal) -> Outcome;
}

/// Why a journey answers its relying party with a refusal; each protocol words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No interaction was allowed and nobody is signed in.
    LoginRequired,
    /// No interaction was allowed and the session needs more (a second factor).
    InteractionRequired,
    /// The user or the upstream said no.
    AccessDenied,
    /// Try again later: a database or an upstream is down.
    Unavailable,
    /// The upstream failed; `reason` is what the party is told.
    UpstreamFailed(String),
}

/// Why an answer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the database is unavailable")]
    Unavailable,
    #[error("{0}")]
    Internal(String),
}

impl From<crate::saml_idp::IdpError> for AnswerError {
    fn from(e: crate::saml_idp::IdpError) -> Self {
        match e {
            crate::saml_idp::IdpError::Storage(s) => Self::Storage(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// What answerers use: the OpenID provider today (codes, clients, the issuer); a SAML IdP's
/// signer and registry beside it.
#[derive(Clone)]
pub struct AnswerEnv {
    pub provider: Arc<Provider>,
    pub saml: Arc<SamlIdp>,
}
