//! Owns the sign-in journey end to end: from `/authorize` (or `/login`) through the first factor
//! (password or upstream), the account-link proof, the second factor and the session limit, to
//! the code at the app (dex's `AuthRequest` + `finalizeLogin`). Every entry point loads the
//! login transaction (server-side, [`Journeys`]), records the proof the browser brought, and
//! asks [`machine::next`] what comes after; [`SignIn::drive`] turns that into an [`Outcome`]
//! the web layer renders. No HTTP types here: the web layer gives a [`Browser`] and gets an
//! [`Outcome`].

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use super::journey::{JourneyError, JourneyId, JourneyKey, Journeys, Loaded};
use super::login::{Authenticated, ClientContext, FlowError, federated_user, open_session};
use super::machine::{
    self, Journey, MfaDecision, MfaNeed, PendingLink, Proven, Stage, Target, Want,
};
use crate::audit::{Event, EventKind};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::{SessionSettings, UpstreamConfig};
use crate::domain::client::Client;
use crate::domain::policy::MfaRequirement;
use crate::domain::policy::SessionLimit;
use crate::domain::{Channel, Email, Locale, ReturnTo, SecretString, UserId};
use crate::mfa::host::{Form, Localized};
use crate::mfa::{FactorStatus, Mfa, MfaError};
use crate::provider::authorize::{self, AuthorizeError, AuthorizeRequest, Prompt};
use crate::provider::{OAuthError, Provider};
use crate::ratelimit::{Limited, Lockout, RateLimiter, Scope};
use crate::session::{SessionManager, SessionToken};
use crate::storage::{SessionRecord, StorageError, Store, UpstreamRequest, UpstreamSessionRecord};
use crate::upstream::local::LOCAL_UPSTREAM_ID;
use crate::upstream::{Connector, Federated, PendingUpstream, UpstreamError, Upstreams};

/// How long a login may wait at the upstream.
const PENDING_TTL: i64 = 600;

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
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    pub(crate) fn internal_of(e: impl std::fmt::Display) -> Self {
        Self::internal(e)
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

/// What the web layer knows about the browser making this request.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The browser binding cookie, if it has one.
    pub binding: Option<SecretString>,
    /// The session cookie, if any.
    pub session: Option<SecretString>,
    pub ip: String,
    pub user_agent: String,
    pub locale: Locale,
}

/// Where a page's forms may lead next (browsers apply CSP `form-action` to the redirects after
/// a submission): the web layer turns these into the page's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// An exact URL: the app's redirect URI, a post-logout redirect URI.
    Url(Url),
    /// The sign-in endpoint of every upstream that email domains are routed to.
    RoutedUpstreams,
    /// The logout endpoint of the upstream the session `sid` came from.
    UpstreamLogout(String),
}

/// A message shown on a page: a text of the locale files, or the plugin's own.
#[derive(Clone)]
pub enum Notice {
    Key(&'static str),
    Plugin(Localized),
}

/// The page a journey step shows (the web layer renders it in the browser's language).
#[derive(Clone)]
pub enum View {
    Login {
        email: String,
        error: Option<&'static str>,
        /// Proving this account links an upstream identity to it.
        linking: bool,
    },
    MfaChoose {
        factors: Vec<FactorStatus>,
        may_enroll: bool,
        recovery: bool,
        error: Option<Notice>,
        step_up: bool,
    },
    MfaForm {
        factor: String,
        form: Form,
        enrolling: bool,
        error: Option<Notice>,
    },
    RecoveryCodes {
        codes: Vec<String>,
    },
    SessionLimit {
        sessions: Vec<SessionRecord>,
    },
    /// "Sign out of the broker?" for an app's logout request without a matching hint.
    LogoutConfirm {
        client_name: String,
        /// The request's parameters, posted back with the confirmation.
        fields: Vec<(String, String)>,
    },
}

/// The authorization response an app receives (a code or an error), in its response mode.
#[derive(Debug, Clone)]
pub struct AppAnswer {
    pub redirect_uri: Url,
    pub form_post: bool,
    pub params: Vec<(&'static str, String)>,
}

#[derive(Clone)]
pub enum Next {
    /// A step's page; its forms carry `journey`.
    Page {
        status: u16,
        journey: Option<JourneyId>,
        view: View,
    },
    /// An error or information page with this text.
    Message { status: u16, key: &'static str },
    /// 303 to a page of the broker or to an upstream.
    Redirect(String),
    /// 302 (a SAML HTTP-Redirect binding answer).
    Found(String),
    /// The authorization response, to the app.
    App(AppAnswer),
}

/// A cookie the answer sets or clears.
#[derive(Debug, Clone)]
pub enum CookieOp {
    Session(SessionToken),
    ClearSession,
    /// The browser binding cookie (sent on the SAML IdP's cross-site POST too).
    Binding(String),
}

/// What the web layer renders.
#[derive(Clone)]
pub struct Outcome {
    pub next: Next,
    pub cookies: Vec<CookieOp>,
    pub hops: Vec<Hop>,
    pub retry_after: Option<u64>,
}

impl Outcome {
    pub fn new(next: Next) -> Self {
        Self {
            next,
            cookies: vec![],
            hops: vec![],
            retry_after: None,
        }
    }

    pub fn message(status: u16, key: &'static str) -> Self {
        Self::new(Next::Message { status, key })
    }

    pub fn redirect(to: String) -> Self {
        Self::new(Next::Redirect(to))
    }

    pub(super) fn expired() -> Self {
        Self::message(400, "mfa_expired_message")
    }

    pub fn with_cookie(mut self, c: CookieOp) -> Self {
        self.cookies.push(c);
        self
    }

    pub(super) fn slow(mut self, limited: Limited) -> Self {
        self.retry_after = Some(limited.retry_after_secs);
        self
    }
}

/// The settings the journey reads.
#[derive(Clone)]
pub struct SignInSettings {
    pub public_url: Url,
    pub mfa_default: MfaRequirement,
    pub session: SessionSettings,
    pub upstreams: Vec<UpstreamConfig>,
}

/// The sign-in journey and what it uses.
pub struct SignIn {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<SessionManager>,
    pub provider: Arc<Provider>,
    pub mfa: Arc<Mfa>,
    pub upstreams: Upstreams,
    pub journeys: Journeys,
    pub limiter: Arc<RateLimiter>,
    pub lockout: Arc<Lockout>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub settings: SignInSettings,
}

/// Runs blocking work (storage, plugins) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SignInError> + Send + 'static,
) -> Result<T, SignInError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SignInError::Join(e.to_string()))?
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn binding_hash(binding: &str) -> String {
    hex(&Sha256::digest(binding.as_bytes()))
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

/// An upstream's answer, as it arrived.
#[derive(Debug, Clone)]
pub enum UpstreamAnswer {
    /// OIDC: the callback's query.
    Redirect(BTreeMap<String, String>),
    /// SAML HTTP-POST: the form.
    Post(BTreeMap<String, String>),
}

/// Why an answer matched no pending login of this browser (the audit reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoPending {
    Missing,
    Unknown,
    OtherUpstream,
    OtherBrowser,
}

impl NoPending {
    fn reason(self) -> &'static str {
        match self {
            Self::Missing => "state_missing",
            Self::Unknown => "state_unknown",
            Self::OtherUpstream => "upstream_mismatch",
            Self::OtherBrowser => "browser_mismatch",
        }
    }
}

impl SignIn {
    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    fn upstream_config(&self, id: &str) -> Option<&UpstreamConfig> {
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

    /// A new journey for this browser (and the binding cookie to set if it has none).
    async fn begin(
        &self,
        browser: &Browser,
        mut journey: Journey,
    ) -> Result<(JourneyId, Loaded<Journey>, Option<String>), SignInError> {
        // Each journey is a stored row: counted per address before it is written.
        if let Err(limited) = self.limiter.check(Scope::JourneyPerIp, &browser.ip) {
            self.provider.audit.record(
                Event::new(EventKind::RateLimited)
                    .ip(browser.ip.as_str())
                    .reason(Scope::JourneyPerIp.as_str()),
            );
            return Err(SignInError::RateLimited(limited.retry_after_secs));
        }
        let (binding, new) = match &browser.binding {
            Some(b) if b.expose().len() == 43 => (b.expose().to_owned(), None),
            _ => {
                let b = base64_url(&self.entropy.bytes32());
                (b.clone(), Some(b))
            }
        };
        journey.binding = binding_hash(&binding);
        let j = journey.clone();
        let journeys = self.journeys.clone();
        let id = blocking(move || Ok(journeys.start(&j)?)).await?;
        Ok((
            id,
            Loaded {
                state: journey,
                version: 1,
                expires_at: self.now(),
            },
            new,
        ))
    }

    /// The live journey `raw` of this browser: its id must be well formed and known, and the
    /// browser must hold the binding cookie it was started with.
    pub(super) async fn resume(
        &self,
        browser: &Browser,
        raw: &str,
    ) -> Result<Option<(JourneyId, Loaded<Journey>)>, SignInError> {
        let Some(id) = JourneyId::parse(raw) else {
            return Ok(None);
        };
        let journeys = self.journeys.clone();
        let id2 = id.clone();
        let loaded = match blocking(move || Ok(journeys.load::<Journey>(&id2)?)).await {
            Ok(l) => l,
            Err(SignInError::Journey(
                JourneyError::Unknown | JourneyError::Expired | JourneyError::Finished,
            )) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !self.bound(browser, &loaded.state) {
            return Ok(None);
        }
        Ok(Some((id, loaded)))
    }

    fn bound(&self, browser: &Browser, j: &Journey) -> bool {
        browser.binding.as_ref().is_some_and(|b| {
            binding_hash(b.expose())
                .as_bytes()
                .ct_eq(j.binding.as_bytes())
                .into()
        })
    }

    /// Writes the journey back if nobody else changed it since it was read.
    pub(super) async fn save(
        &self,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
    ) -> Result<(), SignInError> {
        let journeys = self.journeys.clone();
        let (id, state, version) = (id.clone(), loaded.state.clone(), loaded.version);
        let v = blocking(move || Ok(journeys.save(&id, version, &state)?)).await?;
        loaded.version = v;
        Ok(())
    }

    // --- entry points -----------------------------------------------------------------------

    /// `/authorize`: the request is parsed once. With a good-enough session the app gets its
    /// code (after a step-up when the client's MFA policy or `acr_values` ask for more); else a
    /// journey starts and the browser goes to its sign-in page.
    pub async fn authorize(
        &self,
        browser: &Browser,
        raw: BTreeMap<String, Vec<String>>,
    ) -> Result<Outcome, SignInError> {
        // One trip to the blocking pool: the request parsed, and the session (if any) checked.
        let (provider, sessions) = (Arc::clone(&self.provider), Arc::clone(&self.sessions));
        let cookie = browser.session.as_ref().map(|s| s.expose().to_owned());
        let (parsed, session) = blocking(move || {
            let parsed = authorize::parse(&raw, &provider.clients);
            let session = match (&parsed, cookie) {
                (Ok(_), Some(c)) => sessions.check(&c)?.map(|a| a.record),
                _ => None,
            };
            Ok((parsed, session))
        })
        .await?;
        let ar = match parsed {
            Ok(ar) => ar,
            Err(AuthorizeError::Page(key)) => return Ok(Outcome::message(400, key)),
            Err(AuthorizeError::Redirect(r)) => {
                let r = *r;
                return Ok(self.app_error(
                    r.redirect_uri,
                    r.response_mode == authorize::ResponseMode::FormPost,
                    r.state,
                    &r.error,
                ));
            }
            Err(AuthorizeError::Storage(e)) => return Err(e.into()),
        };
        let now = self.now();
        let form_post = ar.response_mode == authorize::ResponseMode::FormPost;
        if ar.needs_login(session.as_ref().map(|s| s.auth_time), now) {
            if ar.prompt == Prompt::None {
                return Ok(self.app_error(
                    ar.redirect_uri,
                    form_post,
                    ar.state,
                    &OAuthError::LoginRequired,
                ));
            }
            let mut j = Journey::new(Target::App(ar.stored()));
            j.login_hint = ar.login_hint.clone();
            j.idp_hint = ar
                .idp_hint
                .clone()
                .filter(|id| self.upstreams.buttons().any(|u| u.id == *id));
            return self.start_and_drive(browser, j).await;
        }
        let Some(session) = session else {
            return Err(SignInError::Internal("session vanished".into()));
        };
        // The MFA policy of the client receiving the code, again on single sign-on.
        let mut probe = Journey::new(Target::App(ar.stored()));
        probe.who = Some(proven_of(&session));
        if self.needs_second_factor(&probe, ar.client.mfa).await? {
            if ar.prompt == Prompt::None {
                return Ok(self.app_error(
                    ar.redirect_uri,
                    form_post,
                    ar.state,
                    &OAuthError::InteractionRequired,
                ));
            }
            probe.step_up = Some(session.sid.clone());
            probe.stage = Stage::Mfa;
            return self.start_and_drive(browser, probe).await;
        }
        let provider = Arc::clone(&self.provider);
        let ar2 = ar.clone();
        let code = blocking(move || {
            provider.issue_code(&ar2, &session).map_err(|e| match e {
                OAuthError::TemporarilyUnavailable => SignInError::Unavailable,
                other => SignInError::Internal(other.to_string()),
            })
        })
        .await?;
        tracing::info!(client_id = %ar.client.id, acr_values = ar.acr_values.as_deref().unwrap_or(""), "authorization code issued");
        Ok(self.app_code(ar.redirect_uri, form_post, ar.state, code))
    }

    /// Whether the session `probe.who` describes must pass a second factor for the client of
    /// `probe`, whose own requirement is `client` (required, `acr_values`, or optional with a usable enrolled factor). Blocking
    /// reads only when the client's policy is optional.
    async fn needs_second_factor(
        &self,
        probe: &Journey,
        client: Option<MfaRequirement>,
    ) -> Result<bool, SignInError> {
        let upstream = probe
            .who
            .as_ref()
            .and_then(|w| self.upstream_config(&w.upstream));
        match machine::mfa_need(self.settings.mfa_default, client, upstream, probe) {
            MfaNeed::Met { .. } => Ok(false),
            MfaNeed::Facts { required: true } => Ok(true),
            MfaNeed::Facts { required: false } => {
                let facts = self.facts(probe, Locale::En).await?;
                Ok(facts.is_some_and(|(f, _)| f.usable))
            }
        }
    }

    /// The MFA requirement of the client a journey ends at.
    async fn client_mfa(&self, j: &Journey) -> Result<Option<MfaRequirement>, SignInError> {
        let Some(id) = j.client_id().map(str::to_owned) else {
            return Ok(None);
        };
        let provider = Arc::clone(&self.provider);
        blocking(move || Ok(provider.clients.get(&id)?.and_then(|c| c.mfa))).await
    }

    /// Starts a journey and shows its first page right away (the sign-in page at the
    /// `/authorize` URL itself: no extra redirect and read).
    async fn start_and_drive(&self, browser: &Browser, j: Journey) -> Result<Outcome, SignInError> {
        let (id, mut loaded, new_binding) = self.begin(browser, j).await?;
        let browser = &bound_to(browser, new_binding.as_deref());
        let mut out = self.drive(browser, &id, &mut loaded).await?;
        if let Some(b) = new_binding {
            out = out.with_cookie(CookieOp::Binding(b));
        }
        Ok(out)
    }

    /// `GET /login`: the page of the journey named, or a new journey (a signed-in browser goes
    /// on unless the form is forced).
    pub async fn show(&self, browser: &Browser, q: LoginQuery) -> Result<Outcome, SignInError> {
        if let Some(raw) = &q.journey {
            let Some((id, mut loaded)) = self.resume(browser, raw).await? else {
                return Ok(Outcome::expired());
            };
            return self.drive(browser, &id, &mut loaded).await;
        }
        let local = local_target(q.return_to.as_deref());
        if !q.force && self.current_session(browser).await?.is_some() {
            return Ok(Outcome::new(Next::Redirect(local)));
        }
        let mut j = Journey::new(Target::Local(local));
        j.login_hint = q
            .login_hint
            .as_deref()
            .and_then(|h| Email::parse(h).ok())
            .map(|e| e.as_str().to_owned());
        j.idp_hint = q
            .idp_hint
            .filter(|id| self.upstreams.buttons().any(|u| u.id == *id));
        self.start_and_drive(browser, j).await
    }

    /// `GET /login/mfa/step-up`: raise this browser's session to a second factor, then go on
    /// to `return_to`.
    pub async fn step_up(
        &self,
        browser: &Browser,
        return_to: Option<&str>,
    ) -> Result<Outcome, SignInError> {
        let local = local_target(return_to);
        let Some(session) = self.current_session(browser).await? else {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("return_to", &local);
            return Ok(Outcome::new(Next::Redirect(format!(
                "/login?{}",
                q.finish()
            ))));
        };
        let mut j = Journey::new(Target::Local(local));
        j.who = Some(proven_of(&session));
        j.step_up = Some(session.sid.clone());
        j.stage = Stage::Mfa;
        self.start_and_drive(browser, j).await
    }

    /// `POST /login`: an email (email-first routing) or an email and password. Rates and the
    /// lockout are checked before the password hash.
    /// A form without a journey (a page cached from before, a plain HTML form elsewhere on the
    /// site) starts one that ends at `return_to` (a local path) or `/account`.
    pub async fn password(
        &self,
        browser: &Browser,
        journey: &str,
        return_to: Option<&str>,
        email: &str,
        password: Option<SecretString>,
    ) -> Result<Outcome, SignInError> {
        let mut new_binding = None;
        let (id, mut loaded) = if journey.is_empty() {
            let local = local_target(return_to);
            let (id, loaded, b) = self
                .begin(browser, Journey::new(Target::Local(local)))
                .await?;
            new_binding = b;
            (id, loaded)
        } else {
            match self.resume(browser, journey).await? {
                Some(x) => x,
                None => return Ok(Outcome::expired()),
            }
        };
        let browser = &match &new_binding {
            Some(b) => Browser {
                binding: Some(SecretString::new(b.clone())),
                ..browser.clone()
            },
            None => browser.clone(),
        };
        let mut out = self
            .password_in(browser, id, &mut loaded, email, password)
            .await?;
        if let Some(b) = new_binding {
            out = out.with_cookie(CookieOp::Binding(b));
        }
        Ok(out)
    }

    async fn password_in(
        &self,
        browser: &Browser,
        id: JourneyId,
        loaded: &mut Loaded<Journey>,
        email: &str,
        password: Option<SecretString>,
    ) -> Result<Outcome, SignInError> {
        let Some((_, connector)) = self.upstreams.password() else {
            return Ok(Outcome::message(404, "error_404_message"));
        };
        let connector = Arc::clone(connector);
        let shown: String = email.chars().take(254).collect();
        let account = shown.trim().to_lowercase();
        let ip = browser.ip.clone();
        let refused = |key: &'static str, status: u16, linking: bool| Next::Page {
            status,
            journey: Some(id.clone()),
            view: View::Login {
                email: shown.clone(),
                error: Some(key),
                linking,
            },
        };
        let linking = loaded.state.link.is_some();
        let failed = |reason: &'static str| {
            self.provider.audit.record(
                Event::new(EventKind::LoginFailed)
                    .ip(ip.as_str())
                    .upstream(LOCAL_UPSTREAM_ID)
                    .reason(reason),
            );
        };
        for (scope, key) in [
            (Scope::LoginPerIp, ip.as_str()),
            (Scope::LoginPerAccount, account.as_str()),
        ] {
            if let Err(limited) = self.limiter.check(scope, key) {
                self.provider.audit.record(
                    Event::new(EventKind::RateLimited)
                        .ip(ip.as_str())
                        .reason(scope.as_str()),
                );
                return Ok(self
                    .page_outcome(&loaded.state, refused("error_rate_limited", 429, linking))
                    .slow(limited));
            }
        }
        let lockout = Arc::clone(&self.lockout);
        let acct = account.clone();
        let lock = blocking(move || Ok(lockout.check(&acct)?)).await?;
        if let Some(limited) = lock.locked {
            failed("locked_out");
            return Ok(self
                .page_outcome(&loaded.state, refused("error_locked_out", 429, linking))
                .slow(limited));
        }
        // Home-realm discovery: an email of a routed domain signs in at its upstream, unless
        // this journey is proving the account an upstream identity claims.
        if !linking
            && let Ok(parsed) = Email::parse(email)
            && let Some(up) = self.realm_of(parsed.as_str())
        {
            loaded.state.login_hint = Some(parsed.as_str().to_owned());
            self.save(&id, loaded).await?;
            return Ok(Outcome::new(Next::Redirect(upstream_start_path(&up, &id))));
        }
        let (Ok(parsed), Some(password)) = (Email::parse(email), password) else {
            failed("invalid_credentials");
            return Ok(self.page_outcome(
                &loaded.state,
                refused("error_invalid_credentials", 401, linking),
            ));
        };
        let identity = match connector.authenticate(&parsed, &password).await {
            Ok(identity) => identity,
            Err(UpstreamError::InvalidCredentials) => {
                failed("invalid_credentials");
                let lockout = Arc::clone(&self.lockout);
                let acct = account.clone();
                if let Some(limited) = blocking(move || Ok(lockout.failed(&acct)?)).await? {
                    self.provider.audit.record(
                        Event::new(EventKind::LockedOut)
                            .ip(ip.as_str())
                            .reason(format!("{} s", limited.retry_after_secs)),
                    );
                    return Ok(self
                        .page_outcome(&loaded.state, refused("error_locked_out", 429, linking))
                        .slow(limited));
                }
                return Ok(self.page_outcome(
                    &loaded.state,
                    refused("error_invalid_credentials", 401, linking),
                ));
            }
            Err(UpstreamError::AccountDisabled) => {
                failed("account_disabled");
                return Ok(self.page_outcome(
                    &loaded.state,
                    refused("error_account_disabled", 403, linking),
                ));
            }
            Err(UpstreamError::Storage(e)) => return Err(e.into()),
            Err(other) => return Err(SignInError::internal(other)),
        };
        if lock.has_failures {
            let lockout = Arc::clone(&self.lockout);
            blocking(move || Ok(lockout.succeeded(&account)?)).await?;
        }
        let who = Proven {
            user_id: identity.subject.clone(),
            upstream: identity.upstream.clone(),
            amr: identity.amr.clone(),
            acr: identity.acr.clone(),
        };
        // With a pending link for this account, the account is now proven: the link is written
        // when the journey completes (after the second factor).
        loaded
            .state
            .first_factor(who, identity.email.as_ref().map(Email::as_str));
        // The password connector read the account (enabled) just now.
        loaded.state.user_checked = true;
        self.drive(browser, &id, loaded).await
    }

    /// `GET /upstream/{id}/start`: leaves for the upstream with a pending login that points at
    /// the journey (a new one if the browser came without).
    pub async fn upstream_start(
        &self,
        browser: &Browser,
        journey: Option<&str>,
        upstream: &str,
        return_to: Option<&str>,
    ) -> Result<Outcome, SignInError> {
        let mut new_binding = None;
        let (id, mut loaded) = match journey {
            Some(raw) => match self.resume(browser, raw).await? {
                Some(x) => x,
                None => return Ok(Outcome::expired()),
            },
            None => {
                let local = local_target(return_to);
                let (id, loaded, b) = self
                    .begin(browser, Journey::new(Target::Local(local)))
                    .await?;
                new_binding = b;
                (id, loaded)
            }
        };
        let binding = match (&new_binding, &browser.binding) {
            (Some(b), _) => b.clone(),
            (None, Some(b)) => b.expose().to_owned(),
            (None, None) => return Ok(Outcome::expired()),
        };
        let hint = loaded.state.login_hint.clone();
        let callback = self.callback_url(upstream)?;
        let started = match self.upstreams.get(upstream).map(|u| &u.connector) {
            Some(Connector::Redirect(c)) => c.start(&callback, hint.as_deref()).await,
            Some(Connector::Post(c)) => c.start(hint.as_deref()).await,
            _ => return Ok(Outcome::message(404, "error_404_message")),
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                return self
                    .upstream_failed(browser, Some((&id, loaded)), upstream, e)
                    .await;
            }
        };
        let Some(state_value) = started.pending.values.get("state").cloned() else {
            return Err(SignInError::Internal("connector returned no state".into()));
        };
        let record = UpstreamRequest {
            state_hash: Sha256::digest(state_value.as_bytes()).into(),
            upstream: upstream.to_owned(),
            binding_hash: Sha256::digest(binding.as_bytes()).into(),
            pending: serde_json::to_string(&started.pending.values)
                .map_err(SignInError::internal)?,
            journey_hash: id.key().0,
            expires_at: self.now().saturating_add(PENDING_TTL),
        };
        let store = Arc::clone(&self.store);
        blocking(move || Ok(store.insert_upstream_request(&record)?)).await?;
        loaded.state.stage = Stage::AtUpstream {
            upstream: upstream.to_owned(),
        };
        // An app's hint is used once: coming back to the page must not bounce again.
        loaded.state.idp_hint = None;
        self.save(&id, &mut loaded).await?;
        let mut out = Outcome::new(Next::Redirect(started.redirect_to.to_string()));
        // The binding must travel with the SAML IdP's cross-site POST: set it (again) as such.
        out = out.with_cookie(CookieOp::Binding(binding));
        Ok(out)
    }

    fn callback_url(&self, id: &str) -> Result<Url, SignInError> {
        self.settings
            .public_url
            .join(&format!("/upstream/{id}/callback"))
            .map_err(SignInError::internal)
    }

    /// The upstream's answer (OIDC callback, SAML ACS): the pending login it names is taken
    /// (single use), must be this browser's and this upstream's; the identity the upstream
    /// vouches for becomes the journey's first factor (or asks for the account-link proof).
    pub async fn upstream_answer(
        &self,
        browser: &Browser,
        upstream: &str,
        answer: UpstreamAnswer,
    ) -> Result<Outcome, SignInError> {
        let state_value = match &answer {
            UpstreamAnswer::Redirect(q) => q.get("state").cloned(),
            UpstreamAnswer::Post(f) => f.get("RelayState").filter(|s| !s.is_empty()).cloned(),
        };
        let pending = match (&answer, state_value) {
            (UpstreamAnswer::Redirect(_), None) => {
                return Ok(self.refused_answer(browser, upstream, NoPending::Missing));
            }
            // SAML without RelayState: unsolicited (IdP-initiated), which the connector refuses
            // unless configured.
            (UpstreamAnswer::Post(_), None) => None,
            (_, Some(s)) => match self.take_pending(browser, upstream, &s).await? {
                Ok(p) => Some(p),
                Err(why) => return Ok(self.refused_answer(browser, upstream, why)),
            },
        };
        // The journey the pending login points at continues under a fresh id (the old one, and
        // a second answer with the same state, find nothing).
        let (journey, values) = match pending {
            Some((key, values)) => {
                let journeys = self.journeys.clone();
                let loaded = blocking(move || Ok(journeys.load_key::<Journey>(&key)?)).await;
                let mut loaded = match loaded {
                    Ok(l) if self.bound(browser, &l.state) => l,
                    Ok(_) => {
                        return Ok(self.refused_answer(browser, upstream, NoPending::OtherBrowser));
                    }
                    Err(SignInError::Journey(_)) => return Ok(Outcome::expired()),
                    Err(e) => return Err(e),
                };
                let (journeys, version) = (self.journeys.clone(), loaded.version);
                let rekeyed = blocking(move || Ok(journeys.rekey(&key, version)?)).await;
                let id = match rekeyed {
                    Ok((id, v)) => {
                        loaded.version = v;
                        id
                    }
                    Err(SignInError::Journey(_)) => {
                        return Ok(self.refused_answer(browser, upstream, NoPending::Unknown));
                    }
                    Err(e) => return Err(e),
                };
                (Some((loaded, id)), Some(values))
            }
            None => (None, None),
        };
        let federated = match (self.upstreams.get(upstream).map(|u| &u.connector), &answer) {
            (Some(Connector::Redirect(c)), UpstreamAnswer::Redirect(q)) => {
                let callback = self.callback_url(upstream)?;
                let pending = PendingUpstream {
                    values: values.unwrap_or_default(),
                };
                c.callback(&callback, &pending, q).await
            }
            (Some(Connector::Post(c)), UpstreamAnswer::Post(f)) => {
                let pending = values.map(|values| PendingUpstream { values });
                c.handle_post(pending.as_ref(), f).await
            }
            _ => return Ok(Outcome::message(404, "error_404_message")),
        };
        let (id, mut loaded, new_binding) = match journey {
            Some((l, id)) => (id, l, None),
            None => {
                // An unsolicited login (configured to be accepted) starts its own journey.
                let (id, l, b) = self
                    .begin(browser, Journey::new(Target::Local("/account".into())))
                    .await?;
                (id, l, b)
            }
        };
        let federated = match federated {
            Ok(f) => f,
            Err(e) => {
                return self
                    .upstream_failed(browser, Some((&id, loaded)), upstream, e)
                    .await;
            }
        };
        let mut out = self
            .federated(browser, &id, &mut loaded, upstream, federated)
            .await?;
        if let Some(b) = new_binding {
            out = out.with_cookie(CookieOp::Binding(b));
        }
        Ok(out)
    }

    async fn take_pending(
        &self,
        browser: &Browser,
        upstream: &str,
        state_value: &str,
    ) -> Result<Result<(JourneyKey, BTreeMap<String, String>), NoPending>, SignInError> {
        let store = Arc::clone(&self.store);
        let now = self.now();
        let hash: [u8; 32] = Sha256::digest(state_value.as_bytes()).into();
        let pending = blocking(move || Ok(store.take_upstream_request(&hash, now)?)).await?;
        let binding = browser
            .binding
            .as_ref()
            .map(|b| -> [u8; 32] { Sha256::digest(b.expose().as_bytes()).into() });
        let p = match pending {
            None => return Ok(Err(NoPending::Unknown)),
            Some(p) if p.upstream != upstream => return Ok(Err(NoPending::OtherUpstream)),
            Some(p) if Some(p.binding_hash) != binding => return Ok(Err(NoPending::OtherBrowser)),
            Some(p) => p,
        };
        let values: BTreeMap<String, String> =
            serde_json::from_str(&p.pending).map_err(SignInError::internal)?;
        Ok(Ok((JourneyKey(p.journey_hash), values)))
    }

    /// An answer that matches no pending login of this browser: a page, audited.
    fn refused_answer(&self, browser: &Browser, upstream: &str, why: NoPending) -> Outcome {
        tracing::warn!(upstream, reason = why.reason(), "upstream answer refused");
        self.provider.audit.record(
            Event::new(EventKind::LoginFailed)
                .upstream(upstream)
                .ip(browser.ip.as_str())
                .reason(why.reason()),
        );
        Outcome::new(Next::Page {
            status: 400,
            journey: None,
            view: View::Login {
                email: String::new(),
                error: Some("error_upstream_expired"),
                linking: false,
            },
        })
    }

    /// An identity the upstream vouched for: mapped to a broker user (or a pending link), then
    /// on through the journey.
    async fn federated(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        upstream: &str,
        federated: Federated,
    ) -> Result<Outcome, SignInError> {
        let identity = federated.identity;
        if let Some(session) = federated.session {
            loaded.state.upstream_session = Some((upstream.to_owned(), session));
        }
        let link_by_email = self
            .upstream_config(upstream)
            .is_some_and(|u| u.link_by_verified_email);
        let (store, entropy, now) = (
            Arc::clone(&self.store),
            Arc::clone(&self.entropy),
            self.now(),
        );
        let ident = identity.clone();
        let mapped = blocking(move || {
            Ok(federated_user(
                store.as_ref(),
                entropy.as_ref(),
                now,
                &ident,
                link_by_email,
            ))
        })
        .await?;
        let mut amr = identity.amr.clone();
        if amr.is_empty() {
            amr.push("fed".into());
        }
        match mapped {
            Ok(mapped) => {
                loaded.state.first_factor(
                    Proven {
                        user_id: mapped.user_id.as_str().to_owned(),
                        upstream: identity.upstream.clone(),
                        amr,
                        acr: identity.acr.clone(),
                    },
                    None,
                );
                loaded.state.link = mapped.link;
                self.drive(browser, id, loaded).await
            }
            Err(FlowError::LinkRequired {
                email,
                upstream,
                subject,
            }) => {
                self.audit_not_linked(browser, &upstream);
                loaded.state.needs_link_proof(PendingLink {
                    upstream,
                    subject,
                    email: email.as_str().to_owned(),
                    user_id: None,
                    groups: identity.groups.clone(),
                    verified_email: None,
                });
                self.save(id, loaded).await?;
                Ok(self.page_outcome(
                    &loaded.state,
                    Next::Page {
                        status: 409,
                        journey: Some(id.clone()),
                        view: View::Login {
                            email: email.as_str().to_owned(),
                            error: Some("error_link_required"),
                            linking: true,
                        },
                    },
                ))
            }
            Err(FlowError::NoEmail) => {
                self.audit_not_linked(browser, upstream);
                Ok(self.login_error(&loaded.state, id, "error_upstream_no_email", 403))
            }
            Err(FlowError::Disabled) => {
                Ok(self.login_error(&loaded.state, id, "error_account_disabled", 403))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn audit_not_linked(&self, browser: &Browser, upstream: &str) {
        self.provider.audit.record(
            Event::new(EventKind::LoginFailed)
                .upstream(upstream)
                .ip(browser.ip.as_str())
                .reason("upstream_account_not_linked"),
        );
    }

    fn login_error(&self, j: &Journey, id: &JourneyId, key: &'static str, status: u16) -> Outcome {
        self.page_outcome(
            j,
            Next::Page {
                status,
                journey: Some(id.clone()),
                view: View::Login {
                    email: String::new(),
                    error: Some(key),
                    linking: false,
                },
            },
        )
    }

    /// The upstream refused, could not be reached, or its answer failed validation: the app
    /// gets the OAuth error it is (when there is one to pass on), else the sign-in page with the
    /// reason; audited; nothing stored.
    async fn upstream_failed(
        &self,
        browser: &Browser,
        journey: Option<(&JourneyId, Loaded<Journey>)>,
        upstream: &str,
        e: UpstreamError,
    ) -> Result<Outcome, SignInError> {
        let (key, status, reason) = match &e {
            UpstreamError::Refused { code, .. } => {
                ("error_upstream_refused", 403, format!("refused:{code}"))
            }
            UpstreamError::Unavailable(_) => {
                ("error_upstream_unavailable", 502, "unavailable".to_owned())
            }
            UpstreamError::Storage(StorageError::Unavailable(_)) => {
                return Err(SignInError::Unavailable);
            }
            UpstreamError::Storage(_) => return Err(SignInError::internal(e)),
            UpstreamError::Invalid { check, .. } => {
                ("error_upstream_failed", 400, format!("rejected:{check}"))
            }
            _ => ("error_upstream_failed", 400, "rejected".to_owned()),
        };
        tracing::warn!(upstream, error = %e, "upstream sign-in failed");
        self.provider.audit.record(
            Event::new(EventKind::LoginFailed)
                .upstream(upstream)
                .ip(browser.ip.as_str())
                .reason(reason),
        );
        let Some((id, mut loaded)) = journey else {
            return Ok(Outcome::message(status, key));
        };
        if let (Target::App(req), Some(error)) = (&loaded.state.target, downstream_error(&e)) {
            let req = req.clone();
            let provider = Arc::clone(&self.provider);
            let ar = blocking(move || Ok(req.resume(&provider.clients)?)).await?;
            if let Some(ar) = ar {
                self.finish_quietly(id, loaded.version).await;
                return Ok(self.app_error(
                    ar.redirect_uri,
                    ar.response_mode == authorize::ResponseMode::FormPost,
                    ar.state,
                    &error,
                ));
            }
        }
        loaded.state.stage = Stage::FirstFactor;
        self.save(id, &mut loaded).await?;
        Ok(self.login_error(&loaded.state, id, key, status))
    }

    // --- session limit ------------------------------------------------------------------------

    /// `POST /login/session-limit`: ends the session the user picked (one of their own), then
    /// the journey goes on (the limit is checked again).
    pub async fn end_one(
        &self,
        browser: &Browser,
        raw: &str,
        sid: &str,
    ) -> Result<Outcome, SignInError> {
        let Some((id, mut loaded)) = self.resume(browser, raw).await? else {
            return Ok(Outcome::message(400, "error_session_limit_ticket"));
        };
        let Some(who) = loaded
            .state
            .who
            .clone()
            .filter(|_| loaded.state.stage == Stage::SessionLimit)
        else {
            return Ok(Outcome::expired());
        };
        let (store, provider, sid) = (
            Arc::clone(&self.store),
            Arc::clone(&self.provider),
            sid.to_owned(),
        );
        let ended = blocking(move || match store.session_by_sid(&sid)? {
            Some(s) if s.user_id.as_str() == who.user_id => {
                provider
                    .end_session_record(&s, "ended_at_session_limit")
                    .map_err(SignInError::internal)?;
                Ok(true)
            }
            _ => Ok(false),
        })
        .await?;
        if !ended {
            return Ok(Outcome::message(404, "error_404_message"));
        }
        self.drive(browser, &id, &mut loaded).await
    }

    // --- the journey's order ------------------------------------------------------------------

    /// Asks the machine what comes next and does it, until a page or the end.
    pub(super) async fn drive(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
    ) -> Result<Outcome, SignInError> {
        loop {
            let want = machine::next(&loaded.state, |e| self.realm_of(e));
            match want {
                Want::FirstFactor { route_to: Some(up) } => {
                    return Ok(Outcome::new(Next::Redirect(upstream_start_path(&up, id))));
                }
                Want::FirstFactor { route_to: None } => {
                    if loaded.state.stage != Stage::FirstFactor {
                        loaded.state.stage = Stage::FirstFactor;
                        self.save(id, loaded).await?;
                    }
                    let email = loaded.state.login_hint.clone().unwrap_or_default();
                    return Ok(self.page_outcome(
                        &loaded.state,
                        Next::Page {
                            status: 200,
                            journey: Some(id.clone()),
                            view: View::Login {
                                email,
                                error: None,
                                linking: false,
                            },
                        },
                    ));
                }
                Want::LinkProof => {
                    let email = loaded
                        .state
                        .link
                        .as_ref()
                        .map(|l| l.email.clone())
                        .unwrap_or_default();
                    return Ok(self.page_outcome(
                        &loaded.state,
                        Next::Page {
                            status: 200,
                            journey: Some(id.clone()),
                            view: View::Login {
                                email,
                                error: Some("error_link_required"),
                                linking: true,
                            },
                        },
                    ));
                }
                Want::SecondFactor => {
                    let Some(who) = loaded.state.who.clone() else {
                        return Ok(Outcome::expired());
                    };
                    // A page already open (GET of the journey again): show it.
                    if loaded.state.stage == Stage::Mfa && loaded.state.mfa.factor.is_some() {
                        return Ok(self.form_page(id, &loaded.state, 200, None));
                    }
                    if loaded.state.mfa.awaiting_codes_ack.is_some() {
                        return Ok(Outcome::expired());
                    }
                    let client = self.client_mfa(&loaded.state).await?;
                    let upstream = self.upstream_config(&who.upstream);
                    match machine::mfa_need(
                        self.settings.mfa_default,
                        client,
                        upstream,
                        &loaded.state,
                    ) {
                        MfaNeed::Met { add_amr } => {
                            machine::second_factor_proven(&mut loaded.state, &add_amr);
                            continue;
                        }
                        MfaNeed::Facts { required } => {
                            let Some((facts, _)) =
                                self.facts(&loaded.state, browser.locale).await?
                            else {
                                // A missing or disabled account: the session step refuses it.
                                machine::second_factor_proven(&mut loaded.state, &[]);
                                continue;
                            };
                            match machine::mfa_decision(required, facts) {
                                MfaDecision::Skip => {
                                    machine::second_factor_proven(&mut loaded.state, &[]);
                                    continue;
                                }
                                MfaDecision::NoFactor => {
                                    return Ok(Outcome::message(503, "mfa_unavailable_message"));
                                }
                                MfaDecision::Ask => {
                                    loaded.state.mfa.required = required;
                                    return self
                                        .choice_or_only(browser, id, loaded, &who, 200, None, true)
                                        .await;
                                }
                            }
                        }
                    }
                }
                Want::Session => return self.complete(browser, id, loaded).await,
            }
        }
    }

    /// Everything is proven: the session opens (within the limit) or is raised (step-up), the
    /// journey finishes (single use), the pending link and the upstream session are written,
    /// and the browser goes on to its target.
    async fn complete(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
    ) -> Result<Outcome, SignInError> {
        let Some(who) = loaded.state.who.clone() else {
            return Ok(Outcome::expired());
        };
        // The app's request as its client is registered now, read once for the session's
        // channel and limits and for the code; a client gone meanwhile gets nothing.
        let app = match &loaded.state.target {
            Target::Local(_) => None,
            Target::App(req) => {
                let (req, provider) = (req.clone(), Arc::clone(&self.provider));
                match blocking(move || Ok(req.resume(&provider.clients)?)).await? {
                    Some(ar) => Some(ar),
                    None => return Ok(Outcome::message(400, "error_authorize_client")),
                }
            }
        };
        if let Some(sid) = loaded.state.step_up.clone() {
            let current = self.current_session(browser).await?;
            let Some(current) =
                current.filter(|c| c.sid == sid && c.user_id.as_str() == who.user_id)
            else {
                return Ok(Outcome::expired());
            };
            self.finish(id, loaded.version).await?;
            let store = Arc::clone(&self.store);
            let amr = crate::flow::mfa::merge_amr(&current.amr, &who.amr);
            let mut record = current.clone();
            record.amr = amr.clone();
            blocking(move || Ok(store.set_session_amr(&sid, &amr)?)).await?;
            return self.answer(&loaded.state, app, &record, vec![]).await;
        }
        let ctx = self.context(browser, app.as_ref().map(|a| a.client.as_ref()));
        let user_checked = loaded.state.user_checked;
        let previous = browser.session.as_ref().map(|s| s.expose().to_owned());
        let (store, sessions, provider) = (
            Arc::clone(&self.store),
            Arc::clone(&self.sessions),
            Arc::clone(&self.provider),
        );
        let auth = Authenticated {
            user_id: UserId::from_stored(who.user_id.clone()),
            upstream: who.upstream.clone(),
            amr: who.amr.clone(),
            acr: who.acr.clone(),
        };
        let opened = blocking(move || {
            // Re-authentication replaces the session this browser had (its apps are told).
            if let Some(old) = previous
                && let Err(e) =
                    crate::flow::logout::end_session(&sessions, &provider, &old, "reauthenticated")
            {
                tracing::warn!(error = %e, "ending the replaced session failed");
            }
            Ok(open_session(
                store.as_ref(),
                &sessions,
                &provider,
                auth,
                ctx,
                user_checked,
            ))
        })
        .await?;
        let (token, record) = match opened {
            Ok(ok) => ok,
            Err(FlowError::SessionLimit { sessions, .. }) => {
                loaded.state.stage = Stage::SessionLimit;
                self.save(id, loaded).await?;
                return Ok(self
                    .page_outcome(
                        &loaded.state,
                        Next::Page {
                            status: 200,
                            journey: Some(id.clone()),
                            view: View::SessionLimit { sessions },
                        },
                    )
                    .with_cookie(CookieOp::ClearSession));
            }
            Err(FlowError::Disabled) => {
                return Ok(self.login_error(&loaded.state, id, "error_account_disabled", 403));
            }
            Err(FlowError::UnknownUser) => {
                return Ok(self.login_error(&loaded.state, id, "error_invalid_credentials", 401));
            }
            Err(e) => return Err(e.into()),
        };
        // Single use: of two completions racing, one finishes; the other's session goes.
        if let Err(e) = self.finish(id, loaded.version).await {
            let (provider, r) = (Arc::clone(&self.provider), record.clone());
            blocking(move || {
                provider
                    .end_session_record(&r, "journey_replayed")
                    .map_err(SignInError::internal)
            })
            .await?;
            return match e {
                SignInError::Journey(_) => Ok(Outcome::expired()),
                other => Err(other),
            };
        }
        self.keep_after_sign_in(&loaded.state, &record).await?;
        tracing::info!(user_id = %record.user_id, upstream = %record.upstream, "login succeeded");
        self.answer(&loaded.state, app, &record, vec![CookieOp::Session(token)])
            .await
    }

    /// What the journey leaves behind once the session exists: the upstream link proven in it,
    /// and what logging out at the upstream needs.
    async fn keep_after_sign_in(
        &self,
        j: &Journey,
        record: &SessionRecord,
    ) -> Result<(), SignInError> {
        let link = j
            .link
            .clone()
            .filter(|l| l.user_id.as_deref() == Some(record.user_id.as_str()));
        let parked = j
            .upstream_session
            .clone()
            .filter(|(up, _)| *up == record.upstream);
        if link.is_none() && parked.is_none() {
            return Ok(());
        }
        let (store, now, r) = (Arc::clone(&self.store), self.now(), record.clone());
        let audit = Arc::clone(&self.provider);
        blocking(move || {
            if let Some(l) = link {
                store.insert_upstream_link(&l.upstream, &l.subject, &r.user_id, now)?;
                store.set_upstream_claims(
                    &l.upstream,
                    &l.subject,
                    &l.groups,
                    l.verified_email.as_deref(),
                )?;
                audit.audit.record(
                    Event::new(EventKind::AdminAction)
                        .user(r.user_id.as_str())
                        .upstream(l.upstream.as_str())
                        .reason("upstream_linked_after_proof"),
                );
            }
            if let Some((upstream, session)) = parked {
                let (id_token, name_id, name_id_format, session_index) = match session {
                    crate::upstream::UpstreamSession::Oidc { id_token } => {
                        (Some(id_token), None, None, None)
                    }
                    crate::upstream::UpstreamSession::Saml {
                        name_id,
                        name_id_format,
                        session_index,
                    } => (None, Some(name_id), name_id_format, session_index),
                };
                store.insert_upstream_session(&UpstreamSessionRecord {
                    sid: r.sid.clone(),
                    upstream,
                    id_token,
                    name_id,
                    name_id_format,
                    session_index,
                    created_at: now,
                })?;
            }
            Ok(())
        })
        .await
    }

    /// The end of a journey: the app's code (the request stored at `/authorize`, its client as
    /// registered now), or the local page.
    async fn answer(
        &self,
        j: &Journey,
        app: Option<AuthorizeRequest>,
        record: &SessionRecord,
        cookies: Vec<CookieOp>,
    ) -> Result<Outcome, SignInError> {
        let mut out = match (&j.target, app) {
            (_, Some(ar)) => {
                let (provider, r, ar2) = (Arc::clone(&self.provider), record.clone(), ar.clone());
                let code = blocking(move || {
                    provider.issue_code(&ar2, &r).map_err(|e| match e {
                        OAuthError::TemporarilyUnavailable => SignInError::Unavailable,
                        other => SignInError::Internal(other.to_string()),
                    })
                })
                .await?;
                tracing::info!(client_id = %ar.client.id, "authorization code issued");
                let form_post = ar.response_mode == authorize::ResponseMode::FormPost;
                self.app_code(ar.redirect_uri, form_post, ar.state, code)
            }
            (Target::Local(path), None) => Outcome::new(Next::Redirect(path.clone())),
            (Target::App(_), None) => Outcome::message(400, "error_authorize_client"),
        };
        out.cookies.extend(cookies);
        Ok(out)
    }

    /// Finishes the journey as read (`version`): single use.
    async fn finish(&self, id: &JourneyId, version: i64) -> Result<(), SignInError> {
        let (journeys, id) = (self.journeys.clone(), id.clone());
        blocking(move || Ok(journeys.finish_at(&id, version)?)).await
    }

    async fn finish_quietly(&self, id: &JourneyId, version: i64) {
        if let Err(e) = self.finish(id, version).await {
            tracing::debug!(error = %e, "journey already finished");
        }
    }

    /// Where the session belongs: the channel and limits of the app the journey ends at.
    fn context(&self, browser: &Browser, client: Option<&Client>) -> ClientContext {
        let policies: SessionSettings = self.settings.session.clone();
        let mut ctx = ClientContext {
            channel: Channel::Web,
            limit: policies.web.limit,
            on_limit: policies.web.on_limit,
            user_agent: browser.user_agent.clone(),
            ip: browser.ip.clone(),
        };
        if let Some(client) = client {
            let policy = policies.channel(client.channel);
            ctx.channel = client.channel;
            ctx.limit = match client.max_sessions_per_user {
                Some(0) => SessionLimit::None,
                Some(n) => SessionLimit::ThisChannel(n),
                None => policy.limit,
            };
            ctx.on_limit = client.on_session_limit.unwrap_or(policy.on_limit);
        }
        ctx
    }

    pub(super) async fn current_session(
        &self,
        browser: &Browser,
    ) -> Result<Option<SessionRecord>, SignInError> {
        let Some(cookie) = browser.session.as_ref().map(|s| s.expose().to_owned()) else {
            return Ok(None);
        };
        let sessions = Arc::clone(&self.sessions);
        blocking(move || {
            Ok(sessions
                .check(&cookie)
                .map_err(SignInError::internal)?
                .map(|a| a.record))
        })
        .await
    }

    // --- answers ------------------------------------------------------------------------------

    /// Adds where the page's forms may lead: the app the journey ends at, the upstreams the
    /// login page can route to.
    pub(super) fn page_outcome(&self, j: &Journey, next: Next) -> Outcome {
        let mut out = Outcome::new(next);
        if let Target::App(req) = &j.target
            && let Ok(uri) = Url::parse(&req.redirect_uri)
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
        out
    }

    fn app_code(
        &self,
        redirect_uri: Url,
        form_post: bool,
        state: Option<String>,
        code: String,
    ) -> Outcome {
        let mut params = vec![("code", code)];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", self.provider.settings.issuer.clone()));
        Outcome::new(Next::App(AppAnswer {
            redirect_uri,
            form_post,
            params,
        }))
    }

    /// An authorization error response with its `state` and `iss` (RFC 9207).
    pub fn app_error(
        &self,
        redirect_uri: Url,
        form_post: bool,
        state: Option<String>,
        e: &OAuthError,
    ) -> Outcome {
        let mut params = vec![("error", e.code().to_owned())];
        if let Some(d) = e.description() {
            params.push(("error_description", d));
        }
        params.push(("iss", self.provider.settings.issuer.clone()));
        if let Some(s) = state {
            params.push(("state", s));
        }
        Outcome::new(Next::App(AppAnswer {
            redirect_uri,
            form_post,
            params,
        }))
    }
}

/// A local return path (checked once, here), or `/account`.
fn local_target(return_to: Option<&str>) -> String {
    return_to
        .filter(|s| !s.is_empty())
        .and_then(|s| ReturnTo::parse(s).ok())
        .map(|r| r.as_str().to_owned())
        .unwrap_or_else(|| "/account".into())
}

/// The browser as it will be once the binding cookie `new` is set.
fn bound_to(browser: &Browser, new: Option<&str>) -> Browser {
    match new {
        Some(b) => Browser {
            binding: Some(SecretString::new(b.to_owned())),
            ..browser.clone()
        },
        None => browser.clone(),
    }
}

fn proven_of(s: &SessionRecord) -> Proven {
    Proven {
        user_id: s.user_id.as_str().to_owned(),
        upstream: s.upstream.clone(),
        amr: s.amr.clone(),
        acr: s.upstream_acr.clone(),
    }
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// 256 random bits, base64url.
pub(crate) fn random_token(entropy: &dyn Entropy) -> String {
    base64_url(&entropy.bytes32())
}

/// `/upstream/{id}/start` for journey `j`.
fn upstream_start_path(upstream: &str, j: &JourneyId) -> String {
    format!("/upstream/{upstream}/start?journey={}", j.as_cookie_value())
}

/// The OAuth error an app receives for an upstream failure, if it is one to pass on.
fn downstream_error(e: &UpstreamError) -> Option<OAuthError> {
    match e {
        UpstreamError::Refused { code, .. } => Some(match code.as_str() {
            "login_required" => OAuthError::LoginRequired,
            "temporarily_unavailable" => OAuthError::TemporarilyUnavailable,
            "server_error" => OAuthError::ServerError("upstream server_error".into()),
            "access_denied"
            | "interaction_required"
            | "consent_required"
            | "account_selection_required" => OAuthError::AccessDenied,
            _ => OAuthError::ServerError(format!("upstream error {code}")),
        }),
        UpstreamError::Unavailable(_) => Some(OAuthError::TemporarilyUnavailable),
        _ => None,
    }
}
