//! Owns the contract between the sign-in journey and the web layer: what the web layer knows of the browser ([`Browser`]) and what it renders ([`Outcome`]: a page [`View`], a message, a redirect, the app's answer, cookies, and where forms may lead next). No HTTP types.

use url::Url;

use crate::domain::{Locale, SecretString};
use crate::flow::journey::JourneyId;
use crate::mfa::FactorStatus;
use crate::mfa::host::{Form, Localized};
use crate::ratelimit::Limited;
use crate::session::SessionToken;
use crate::storage::SessionRecord;

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
    /// A POST from one of the broker's own pages whose CSRF token was verified: only such a
    /// request may make the journey send something (a code by email or SMS, a push).
    pub posted: bool,
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

/// A message shown on a page: a text of the locale files, or the plugin's own; `Done` says
/// something worked (shown as a status, not as an error).
#[derive(Clone)]
pub enum Notice {
    Key(&'static str),
    Plugin(Localized),
    Done(&'static str),
}

/// The page a journey step shows (the web layer renders it in the browser's language).
#[derive(Clone)]
pub enum View {
    Login {
        email: String,
        error: Option<&'static str>,
        /// Proving this account links an upstream identity to it.
        linking: bool,
        /// The journey's passkey challenge (options for the page's script), when passkeys sign
        /// in without a password. Filled by `SignIn::page_outcome`.
        passkey: Option<String>,
    },
    MfaChoose {
        factors: Vec<FactorStatus>,
        may_enroll: bool,
        recovery: bool,
        error: Option<Notice>,
        step_up: bool,
        /// A journey that manages factors: enrolled factors can be removed (after a recent
        /// proof), and the page links back to the account.
        manage: bool,
        /// The party asks for the phishing-resistant level: `Some(true)` when only passkeys are
        /// offered, `Some(false)` when the user first passes a factor they have.
        phishing_resistant: Option<bool>,
        /// The user's passkeys, one by one (managing factors: each can be removed alone).
        passkeys: Vec<crate::mfa::passkey_list::PasskeyInfo>,
    },
    MfaForm {
        factor: String,
        form: Form,
        enrolling: bool,
        error: Option<Notice>,
    },
    /// A native factor's own page (`templates/pages/{page}.hbs`), with its script.
    MfaNative {
        factor: String,
        page: String,
        data: serde_json::Value,
        enrolling: bool,
        error: Option<Notice>,
    },
    /// A waiting factor's page: the approval awaited (refreshing itself), approved (go on),
    /// or over (expired, denied).
    MfaWait {
        factor: String,
        intro: crate::mfa::host::Localized,
        number: Option<String>,
        /// Seconds until the page polls again; none when nothing is awaited any more.
        refresh: Option<u32>,
        approved: bool,
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
    /// "Continue as `email`?": an upstream's unsolicited sign-in would replace this browser's
    /// session (`unsolicited`), or a proven sign-in was reached by a GET, which never finishes a
    /// journey (the user finishes it with a POST from this page).
    ContinueAs {
        email: String,
        upstream: String,
        unsolicited: bool,
    },
}

/// The authorization response an app receives (a code or an error), in its response mode.
#[derive(Debug, Clone)]
pub struct AppAnswer {
    pub redirect_uri: Url,
    pub form_post: bool,
    pub params: Vec<(String, String)>,
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
