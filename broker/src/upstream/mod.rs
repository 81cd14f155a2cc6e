//! Owns the broker's side as a client of identity providers: the connector traits every upstream
//! kind implements (form-based local accounts, redirect-based OIDC, POST-based SAML), and the one
//! [`Identity`] they all return. The rest of the broker never names a concrete connector.

pub mod local;
pub mod oidc;
pub mod saml;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use url::Url;

use crate::domain::{Email, SecretString};

/// Who an upstream says the user is, in the broker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The upstream that vouched for this identity (its configured id, `local` for accounts).
    pub upstream: String,
    /// The upstream's stable subject for the user (for `local`, the broker's user id).
    pub subject: String,
    pub email: Option<Email>,
    /// Whether the upstream asserts it verified `email`; linking by email requires it.
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The claims or attributes the operator keeps for MFA plugins (`keep`), as text.
    pub kept: std::collections::BTreeMap<String, String>,
    /// Authentication methods the upstream performed (RFC 8176), e.g. `pwd`, `mfa`.
    pub amr: Vec<String>,
    /// The upstream's authentication context class, if it told us one.
    pub acr: Option<String>,
}

/// Why an upstream did not produce an identity. Messages are safe to log, never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Wrong credentials or unknown user: deliberately indistinguishable.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("account disabled")]
    AccountDisabled,
    /// The upstream refused (e.g. OAuth `access_denied`); the code is passed downstream.
    #[error("upstream refused: {code}")]
    Refused {
        code: String,
        description: Option<String>,
    },
    /// The upstream's answer failed validation (signature, audience, replay ...).
    #[error("upstream response rejected: {0}")]
    Rejected(String),
    /// Like `Rejected`, naming the check that failed with a stable code (the audit trail
    /// records `rejected:<check>`).
    #[error("upstream response rejected ({check}): {detail}")]
    Invalid { check: &'static str, detail: String },
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// A form-based connector: the user types credentials into the broker's own page.
#[async_trait]
pub trait PasswordConnector: Send + Sync {
    async fn authenticate(
        &self,
        login: &Email,
        password: &SecretString,
    ) -> Result<Identity, UpstreamError>;
}

/// What the broker keeps in the browser's pending login between leaving for the upstream and
/// coming back (state, nonce, PKCE verifier, AuthnRequest id ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingUpstream {
    pub values: BTreeMap<String, String>,
}

/// Where to send the browser to authenticate upstream, and what to remember until it returns.
#[derive(Debug, Clone)]
pub struct UpstreamStart {
    pub redirect_to: Url,
    pub pending: PendingUpstream,
}

/// What ending the user's session at the upstream later needs (logout propagation), kept with
/// the broker session (table `upstream_sessions`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpstreamSession {
    /// The upstream's ID token: the `id_token_hint` of RP-initiated logout.
    Oidc { id_token: String },
    /// What a SAML LogoutRequest names.
    Saml {
        name_id: String,
        name_id_format: Option<String>,
        session_index: Option<String>,
    },
}

impl std::fmt::Debug for UpstreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Oidc { .. } => f.write_str("Oidc { id_token: <redacted> }"),
            Self::Saml { session_index, .. } => f
                .debug_struct("Saml")
                .field("session_index", session_index)
                .finish_non_exhaustive(),
        }
    }
}

/// An upstream login: who the user is, and how to end the session there later.
#[derive(Debug, Clone)]
pub struct Federated {
    pub identity: Identity,
    pub session: Option<UpstreamSession>,
}

/// A SAML LogoutRequest from the IdP, checked: whom it logs out, and the redirect (with the
/// signed LogoutResponse) that answers it.
#[derive(Debug, Clone)]
pub struct IdpLogout {
    pub name_id: String,
    /// Empty: every session of the NameID.
    pub session_indexes: Vec<String>,
    pub respond_to: Url,
}

/// A redirect-based connector (OpenID Connect): leave by redirect, come back to a GET callback.
#[async_trait]
pub trait RedirectConnector: Send + Sync {
    async fn start(
        &self,
        callback: &Url,
        login_hint: Option<&str>,
    ) -> Result<UpstreamStart, UpstreamError>;
    /// `callback` is the URL the upstream redirected to (the `redirect_uri` of the request).
    async fn callback(
        &self,
        callback: &Url,
        pending: &PendingUpstream,
        query: &BTreeMap<String, String>,
    ) -> Result<Federated, UpstreamError>;
    /// Where to send the browser to end its session at the upstream (RP-initiated logout),
    /// coming back to `post_logout` with `state`; `None` when the upstream has no
    /// `end_session_endpoint`.
    async fn logout_url(
        &self,
        session: &UpstreamSession,
        post_logout: &Url,
        state: &str,
    ) -> Result<Option<Url>, UpstreamError>;
    /// The upstream's logout endpoint (`end_session_endpoint`), if it has one.
    async fn logout_endpoint(&self) -> Result<Option<Url>, UpstreamError>;
    /// Where `start` sends the browser (the authorization endpoint), for the `form-action` of
    /// pages whose answer may lead there.
    async fn login_endpoint(&self) -> Result<Option<Url>, UpstreamError> {
        Ok(None)
    }
}

/// A POST-based connector (SAML 2.0): leave by redirect, come back with a form POST to the ACS
/// (the connector knows its own ACS URL). The pending values hold the `state` (RelayState).
#[async_trait]
pub trait PostConnector: Send + Sync {
    async fn start(&self, login_hint: Option<&str>) -> Result<UpstreamStart, UpstreamError>;
    /// `pending` is `None` for IdP-initiated logins, which a connector refuses unless configured.
    async fn handle_post(
        &self,
        pending: Option<&PendingUpstream>,
        form: &BTreeMap<String, String>,
    ) -> Result<Federated, UpstreamError>;
    /// The SP metadata document this connector publishes.
    fn metadata(&self) -> Result<String, UpstreamError>;
    /// A signed LogoutRequest to the IdP's Single Logout service (HTTP-Redirect) and its ID;
    /// `None` when Single Logout is not set up (no SP signing key, or no IdP SLO endpoint).
    async fn logout_request(
        &self,
        session: &UpstreamSession,
        relay_state: &str,
    ) -> Result<Option<(Url, String)>, UpstreamError>;
    /// Checks the IdP's LogoutResponse (the raw query string) to our request `request_id`.
    async fn logout_response(&self, raw_query: &str, request_id: &str)
    -> Result<(), UpstreamError>;
    /// Checks a LogoutRequest from the IdP (the raw query string of the HTTP-Redirect binding).
    async fn idp_logout(&self, raw_query: &str) -> Result<IdpLogout, UpstreamError>;
    /// The IdP's Single Logout endpoint when the broker can use it (SLO set up).
    async fn logout_endpoint(&self) -> Result<Option<Url>, UpstreamError>;
    /// Where `start` sends the browser (the IdP's SSO service), for the `form-action` of
    /// pages whose answer may lead there.
    async fn login_endpoint(&self) -> Result<Option<Url>, UpstreamError> {
        Ok(None)
    }
}

/// One configured upstream of any kind.
#[derive(Clone)]
pub enum Connector {
    Password(Arc<dyn PasswordConnector>),
    Redirect(Arc<dyn RedirectConnector>),
    Post(Arc<dyn PostConnector>),
}

/// A configured upstream as the pages and flows see it.
#[derive(Clone)]
pub struct Upstream {
    pub id: String,
    pub display_name: String,
    pub connector: Connector,
}

/// The set of configured upstreams, in the order the login page shows them.
#[derive(Clone, Default)]
pub struct Upstreams {
    list: Vec<Upstream>,
}

impl Upstreams {
    pub fn new(list: Vec<Upstream>) -> Self {
        Self { list }
    }
    pub fn get(&self, id: &str) -> Option<&Upstream> {
        self.list.iter().find(|u| u.id == id)
    }
    /// The form-based connector the login page's own form posts to, if any.
    pub fn password(&self) -> Option<(&str, &Arc<dyn PasswordConnector>)> {
        self.list.iter().find_map(|u| match &u.connector {
            Connector::Password(c) => Some((u.id.as_str(), c)),
            _ => None,
        })
    }
    /// Upstreams reached by a button on the login page (redirect- and POST-based).
    pub fn buttons(&self) -> impl Iterator<Item = &Upstream> {
        self.list
            .iter()
            .filter(|u| !matches!(u.connector, Connector::Password(_)))
    }
}

/// Owns the sign-in endpoints of the upstreams that email domains are routed to, as the login
/// page's CSP `form-action` needs them: kept here, refreshed in the background, so rendering a
/// page does not wait on an upstream. A dead upstream (one that did not answer in time) is
/// remembered as unknown until the next refresh (a negative cache): it slows no sign-in page. Only
/// an endpoint never tried, or one whose last try failed at once (a refused connection: an
/// upstream starting up), is fetched while a page renders, bounded, and such a quick failure is
/// tried again at most every [`QUICK_RETRY`].
#[derive(Clone, Default)]
pub struct RoutedEndpoints {
    known: Arc<std::sync::RwLock<std::collections::BTreeMap<String, Known>>>,
}

#[derive(Clone)]
struct Known {
    url: Option<Url>,
    at: std::time::Instant,
    /// The last try failed without waiting (refused, not found): cheap to try again.
    quick_failure: bool,
}

/// How long one upstream's endpoint may take to be found.
const ENDPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// A failure shorter than this was not a wait on a dead upstream.
const QUICK: std::time::Duration = std::time::Duration::from_millis(200);
/// How often a quickly failed endpoint may be tried again while pages render.
const QUICK_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

impl RoutedEndpoints {
    async fn fetch(upstreams: &Upstreams, id: &str) -> Known {
        let started = std::time::Instant::now();
        let endpoint = match upstreams.get(id).map(|u| &u.connector) {
            Some(Connector::Redirect(c)) => {
                tokio::time::timeout(ENDPOINT_WAIT, c.login_endpoint()).await
            }
            Some(Connector::Post(c)) => {
                tokio::time::timeout(ENDPOINT_WAIT, c.login_endpoint()).await
            }
            _ => Ok(Ok(None)),
        };
        let url = match endpoint {
            Ok(Ok(url)) => url,
            Ok(Err(e)) => {
                tracing::warn!(upstream = id, error = %e, "upstream sign-in endpoint unknown");
                None
            }
            Err(_) => {
                tracing::warn!(
                    upstream = id,
                    "upstream sign-in endpoint: no answer in time"
                );
                None
            }
        };
        let at = std::time::Instant::now();
        Known {
            quick_failure: url.is_none() && at.duration_since(started) < QUICK,
            url,
            at,
        }
    }

    fn remember(&self, id: &str, known: Known) {
        if let Ok(mut map) = self.known.write() {
            map.insert(id.to_owned(), known);
        }
    }

    /// Fetches every endpoint of `ids` again (the background refresh).
    pub async fn refresh(&self, upstreams: &Upstreams, ids: &[String]) {
        for id in ids {
            let known = Self::fetch(upstreams, id).await;
            self.remember(id, known);
        }
    }

    /// The endpoints of `ids` as known now (see the type for when one is fetched).
    pub async fn endpoints(&self, upstreams: &Upstreams, ids: &[String]) -> Vec<Url> {
        let mut out = Vec::new();
        for id in ids {
            let cached = self.known.read().ok().and_then(|k| k.get(id).cloned());
            let fetch = match &cached {
                None => true,
                Some(k) => k.quick_failure && k.at.elapsed() >= QUICK_RETRY,
            };
            let url = match (fetch, cached) {
                (false, Some(k)) => k.url,
                _ => {
                    let known = Self::fetch(upstreams, id).await;
                    let url = known.url.clone();
                    self.remember(id, known);
                    url
                }
            };
            out.extend(url);
        }
        out
    }
}
