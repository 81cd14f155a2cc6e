//! Owns the sign-in journey end to end: from `/authorize` (or `/login`) through the first factor
//! (password or upstream), the account-link proof, the second factor and the session limit, to
//! the code at the app (dex's `AuthRequest` + `finalizeLogin`). Every entry point loads the
//! login transaction (server-side, [`Journeys`]), records the proof the browser brought, and
//! asks [`machine::next`] what comes after; [`SignIn::drive`] turns that into an [`Outcome`]
//! the web layer renders. No HTTP types here: the web layer gives a [`Browser`] and gets an
//! [`Outcome`].

use std::sync::Arc;

use url::Url;

use super::answer::{AnswerEnv, AnswerError, Resolved};
use super::journey::{JourneyError, JourneyId, Journeys};
use super::login::{ClientContext, FlowError};
use super::machine::{Journey, Proven, Target};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::{SessionSettings, UpstreamConfig};
use crate::domain::evidence::Proof;
use crate::domain::policy::MfaRequirement;
use crate::domain::policy::SessionLimit;
use crate::domain::relying_party::RelyingParty;
use crate::domain::{Channel, Email, ReturnTo, SecretString, UserId};
use crate::flow::contract::{Browser, Hop, Next, Outcome, View};
use crate::mfa::{Mfa, MfaError};
use crate::provider::OAuthError;
use crate::provider::Provider;
use crate::ratelimit::{Lockout, RateLimiter};
use crate::session::SessionManager;
use crate::storage::{SessionRecord, StorageError, Store};
use crate::upstream::Upstreams;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Journey(#[from] JourneyError),
    #[error("the database is unavailable")]
    Unavailable,
    /// Too many journeys started from this address: try again after this many seconds.
    #[error("too many sign-ins started from this address")]
    RateLimited(u64),
    #[error("{0}")]
    Internal(String),
    #[error("background task failed: {0}")]
    Join(String),
}

impl SignInError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<FlowError> for SignInError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Storage(s)
            | FlowError::Session(crate::session::SessionError::Storage(s)) => Self::Storage(s),
            FlowError::Provider(OAuthError::TemporarilyUnavailable) => Self::Unavailable,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<AnswerError> for SignInError {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Storage(s) => Self::Storage(s),
            AnswerError::Unavailable => Self::Unavailable,
            AnswerError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<crate::saml_idp::IdpError> for SignInError {
    fn from(e: crate::saml_idp::IdpError) -> Self {
        match e {
            crate::saml_idp::IdpError::Storage(s) => Self::Storage(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::session::SessionError> for SignInError {
    fn from(e: crate::session::SessionError) -> Self {
        match e {
            crate::session::SessionError::Storage(s) => Self::Storage(s),
        }
    }
}

impl From<MfaError> for SignInError {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::Storage(s) => Self::Storage(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The settings the journey reads.
#[derive(Clone)]
pub struct SignInSettings {
    pub public_url: Url,
    pub mfa_default: MfaRequirement,
    /// Under `optional`, a factor that needs no enrolment (email) counts as enrolled.
    pub optional_counts_implicit_factors: bool,
    pub session: SessionSettings,
    pub upstreams: Vec<UpstreamConfig>,
}

/// The sign-in journey and what it uses.
pub struct SignIn {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<SessionManager>,
    pub provider: Arc<Provider>,
    pub saml: Arc<crate::saml_idp::SamlIdp>,
    pub mfa: Arc<Mfa>,
    pub upstreams: Upstreams,
    pub journeys: Journeys,
    pub limiter: Arc<RateLimiter>,
    pub lockout: Arc<Lockout>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub settings: SignInSettings,
}

/// Runs a journey step again when it lost a compare-and-swap race on the journey (another
/// request of the same browser changed it between this one's read and write): the step starts
/// over from the stored journey, where `accept` and the kept answer decide what it does. Never a
/// 500 for a race.
pub async fn retrying<F, Fut>(step: F) -> Result<Outcome, SignInError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, SignInError>>,
{
    for _ in 0..3 {
        match step().await {
            Err(SignInError::Journey(JourneyError::Conflict)) => {
                tracing::debug!("journey changed concurrently; the step runs again");
            }
            other => return other,
        }
    }
    step().await
}

/// Runs blocking work (storage, plugins) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SignInError> + Send + 'static,
) -> Result<T, SignInError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SignInError::Join(e.to_string()))?
}

/// What `/login` was opened with.
#[derive(Debug, Clone, Default)]
pub struct LoginQuery {
    pub journey: Option<String>,
    pub return_to: Option<String>,
    pub login_hint: Option<String>,
    pub idp_hint: Option<String>,
    /// Show the form even to a signed-in user.
    pub force: bool,
}

impl SignIn {
    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub(crate) fn upstream_config(&self, id: &str) -> Option<&UpstreamConfig> {
        self.settings.upstreams.iter().find(|u| u.id == id)
    }

    /// The upstream whose `domains` route this email, if any.
    pub fn realm_of(&self, email: &str) -> Option<String> {
        let email = Email::parse(email).ok()?;
        let domain = email.domain();
        self.settings
            .upstreams
            .iter()
            .find(|u| u.domains.iter().any(|d| d == domain))
            .map(|u| u.id.clone())
    }

    /// Whether the login page offers email-first (some domains sign in elsewhere).
    pub fn email_first(&self) -> bool {
        self.settings
            .upstreams
            .iter()
            .any(|u| !u.domains.is_empty())
    }

    // --- loading and saving -----------------------------------------------------------------

    // --- entry points -----------------------------------------------------------------------

    pub(crate) fn login_error(
        &self,
        j: &Journey,
        id: &JourneyId,
        key: &'static str,
        status: u16,
    ) -> Outcome {
        self.page_outcome(
            j,
            Next::Page {
                status,
                journey: Some(id.clone()),
                view: View::Login {
                    email: String::new(),
                    error: Some(key),
                    linking: false,
                    passkey: None,
                },
            },
        )
    }

    // --- session limit ------------------------------------------------------------------------

    // --- the journey's order ------------------------------------------------------------------

    /// Where the session belongs: the channel and limits of the app the journey ends at.
    pub(crate) fn context(&self, browser: &Browser, party: Option<&RelyingParty>) -> ClientContext {
        let policies: SessionSettings = self.settings.session.clone();
        let mut ctx = ClientContext {
            channel: Channel::Web,
            limit: policies.web.limit,
            on_limit: policies.web.on_limit,
            user_agent: browser.user_agent.clone(),
            ip: browser.ip.clone(),
        };
        if let Some(party) = party {
            let policy = policies.channel(party.channel);
            ctx.channel = party.channel;
            ctx.limit = match party.max_sessions_per_user {
                Some(0) => SessionLimit::None,
                Some(n) => SessionLimit::ThisChannel(n),
                None => policy.limit,
            };
            ctx.on_limit = party.on_session_limit.unwrap_or(policy.on_limit);
        }
        ctx
    }

    /// The email of account `user_id` (empty if it is gone).
    pub(crate) async fn email_of(&self, user_id: &str) -> Result<String, SignInError> {
        let (store, uid) = (
            Arc::clone(&self.store),
            UserId::from_stored(user_id.to_owned()),
        );
        blocking(move || {
            Ok(store
                .user_by_id(&uid)?
                .map(|u| u.email.as_str().to_owned())
                .unwrap_or_default())
        })
        .await
    }

    pub(crate) async fn current_session(
        &self,
        browser: &Browser,
    ) -> Result<Option<SessionRecord>, SignInError> {
        let Some(cookie) = browser.session.as_ref().map(|s| s.expose().to_owned()) else {
            return Ok(None);
        };
        let sessions = Arc::clone(&self.sessions);
        blocking(move || Ok(sessions.check(&cookie)?.map(|a| a.record))).await
    }

    // --- answers ------------------------------------------------------------------------------

    /// What the journey's answerers use.
    pub(crate) fn answer_env(&self) -> AnswerEnv {
        AnswerEnv {
            provider: Arc::clone(&self.provider),
            saml: Arc::clone(&self.saml),
        }
    }

    /// The relying party the journey answers, as registered now.
    pub(crate) async fn party(&self, j: &Journey) -> Result<Party, SignInError> {
        let Target::App(req) = &j.target else {
            return Ok(Party::Local);
        };
        let (req, env) = (req.clone(), self.answer_env());
        Ok(
            match blocking(move || Ok(req.answerer().resolve(&env)?)).await? {
                Some(r) => Party::Found(r),
                None => Party::Gone,
            },
        )
    }

    /// Adds where the page's forms may lead: the app the journey ends at, the upstreams the
    /// login page can route to.
    pub(crate) fn page_outcome(&self, j: &Journey, next: Next) -> Outcome {
        let mut out = Outcome::new(next);
        if let Target::App(req) = &j.target
            && let Some(uri) = req.answerer().destination()
        {
            out.hops.push(Hop::Url(uri));
        }
        if let Next::Page {
            view: View::Login { linking: false, .. },
            ..
        } = &out.next
            && self.email_first()
        {
            out.hops.push(Hop::RoutedUpstreams);
        }
        if let Next::Page {
            view:
                View::Login {
                    linking: false,
                    passkey,
                    ..
                },
            ..
        } = &mut out.next
        {
            *passkey = j.passkey.as_ref().map(|c| c.options.clone());
        }
        out
    }
}

/// Whom a journey answers, as registered now.
pub(crate) enum Party {
    /// A page of the broker's own.
    Local,
    /// A relying party, ready to be answered.
    Found(Box<dyn Resolved>),
    /// The relying party (or where it is answered) is gone: nothing is answered.
    Gone,
}

impl Party {
    /// The party's policy, if there is one.
    pub(crate) fn policy(&self) -> Option<&RelyingParty> {
        match self {
            Party::Found(r) => Some(r.party()),
            _ => None,
        }
    }
}

/// A local return path (checked once, here), or `/account`.
pub(crate) fn local_target(return_to: Option<&str>) -> String {
    return_to
        .filter(|s| !s.is_empty())
        .and_then(|s| ReturnTo::parse(s).ok())
        .map(|r| r.as_str().to_owned())
        .unwrap_or_else(|| "/account".into())
}

/// The browser as it will be once the binding cookie `new` is set.
pub(crate) fn bound_to(browser: &Browser, new: Option<&str>) -> Browser {
    match new {
        Some(b) => Browser {
            binding: Some(SecretString::new(b.to_owned())),
            ..browser.clone()
        },
        None => browser.clone(),
    }
}

/// What a session the broker opened proves: its methods, as the broker judged them when it
/// opened the session, at its sign-in time.
pub(crate) fn proven_of(s: &SessionRecord) -> Proven {
    Proven {
        user_id: s.user_id.as_str().to_owned(),
        upstream: s.upstream.clone(),
        evidence: s
            .amr
            .iter()
            .map(|m| Proof::local(m.clone(), s.auth_time))
            .collect(),
        acr: s.upstream_acr.clone(),
    }
}

pub(crate) fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// 256 random bits, base64url.
pub(crate) fn random_token(entropy: &dyn Entropy) -> String {
    base64_url(&entropy.bytes32())
}

/// `/upstream/{id}/start` for journey `j`.
pub(crate) fn upstream_start_path(upstream: &str, j: &JourneyId) -> String {
    format!("/upstream/{upstream}/start?journey={}", j.as_cookie_value())
}
