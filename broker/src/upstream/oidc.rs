//! Owns the upstream OpenID Connect connector: discovery (cached, refreshed, re-fetched when an
//! ID token names an unknown key), authorization code + PKCE + state + nonce, the code exchange
//! with the configured client authentication, ID token validation under the broker's clock (keys
//! and algorithms through the `openidconnect` crate), userinfo merged, every response read with
//! a size cap, and the per-upstream claim mapping into an [`Identity`](super::Identity).
//!
//! One file per role under `oidc/`: `token` (client authentication, code exchange), `id_token`
//! (the ID token check), `claims` (userinfo, claim mapping); discovery and the connector's
//! redirect steps are here.

mod claims;
mod id_token;
mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope,
};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use url::Url;

use super::{
    Federated, PendingUpstream, RedirectConnector, UpstreamError, UpstreamSession, UpstreamStart,
};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::{ClaimMapping, OidcUpstreamConfig};
use crate::http;
use id_token::IdTokenError;
use token::ClientAuth;

/// How long discovery (and the upstream's JWKS) is trusted before it is fetched again.
const METADATA_TTL: i64 = 3600;

/// A client built from discovery: authorization endpoint set, token and userinfo endpoints as
/// the upstream publishes them.
type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// What the broker reads of the upstream's discovery document and JWKS.
#[derive(Clone)]
struct Discovery {
    meta: CoreProviderMetadata,
    jwks: CoreJsonWebKeySet,
    /// RFC 9207: the upstream puts `iss` in every authorization response.
    iss_parameter: bool,
    end_session: Option<Url>,
}

pub struct OidcConnector {
    id: String,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    auth: ClientAuth,
    scopes: Vec<String>,
    mapping: ClaimMapping,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    discovery: tokio::sync::RwLock<Option<(Discovery, UnixTime)>>,
}

fn rejected(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Rejected(e.to_string())
}

fn unavailable(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unavailable(e.to_string())
}

impl OidcConnector {
    pub fn new(
        id: &str,
        cfg: &OidcUpstreamConfig,
        trust: &crate::config::http::TrustAnchors,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, UpstreamError> {
        let http = http::client(Duration::from_secs(10), trust).map_err(unavailable)?;
        let auth = ClientAuth::from_config(&cfg.client_auth)?;
        Ok(Self {
            id: id.to_owned(),
            issuer: IssuerUrl::new(cfg.issuer.clone()).map_err(rejected)?,
            client_id: ClientId::new(cfg.client_id.clone()),
            client_secret: ClientSecret::new(cfg.client_secret.expose_secret().to_owned()),
            auth,
            scopes: cfg.scopes.clone(),
            mapping: cfg.claims.clone(),
            http,
            clock,
            entropy,
            discovery: tokio::sync::RwLock::new(None),
        })
    }

    fn random(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.entropy.bytes32())
    }

    /// A GET to the upstream whose JSON answer is read up to [`http::MAX_RESPONSE`].
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
    ) -> Result<(T, Vec<u8>), UpstreamError> {
        let res = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable(format!("{what}: {}", http::describe(&e))))?;
        if !res.status().is_success() {
            return Err(unavailable(format!("{what} answered {}", res.status())));
        }
        let body = http::read_capped(res, http::MAX_RESPONSE)
            .await
            .map_err(|e| unavailable(format!("{what}: {e}")))?;
        let doc = serde_json::from_slice(&body).map_err(|e| unavailable(format!("{what}: {e}")))?;
        Ok((doc, body))
    }

    /// The upstream's discovery document (with its JWKS), from cache unless stale or `refresh`.
    async fn discovery(&self, refresh: bool) -> Result<Discovery, UpstreamError> {
        let now = self.clock.now();
        if !refresh
            && let Some((d, at)) = self.discovery.read().await.as_ref()
            && now - at < METADATA_TTL
        {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        let what = format!("discovery of {}", self.issuer.as_str());
        let (meta, body): (CoreProviderMetadata, _) = self.get_json(&what, &url).await?;
        if meta.issuer() != &self.issuer {
            return Err(unavailable(format!(
                "{what}: the document names another issuer"
            )));
        }
        let raw: Map<String, Value> = serde_json::from_slice(&body).map_err(unavailable)?;
        let (jwks, _) = self
            .get_json(
                &format!("JWKS of {}", self.issuer.as_str()),
                meta.jwks_uri().url().as_str(),
            )
            .await?;
        let d = Discovery {
            meta,
            jwks,
            iss_parameter: raw.get("authorization_response_iss_parameter_supported")
                == Some(&Value::Bool(true)),
            end_session: raw
                .get("end_session_endpoint")
                .and_then(Value::as_str)
                .and_then(|u| Url::parse(u).ok())
                .filter(|u| u.scheme() == "https" || crate::config::https_or_loopback(u)),
        };
        *self.discovery.write().await = Some((d.clone(), now));
        Ok(d)
    }

    fn client(&self, m: CoreProviderMetadata, callback: &Url) -> Result<Client, UpstreamError> {
        Ok(CoreClient::from_provider_metadata(
            m,
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_redirect_uri(RedirectUrl::new(callback.to_string()).map_err(rejected)?))
    }
}

#[async_trait]
impl RedirectConnector for OidcConnector {
    async fn start(
        &self,
        callback: &Url,
        login_hint: Option<&str>,
    ) -> Result<UpstreamStart, UpstreamError> {
        let d = self.discovery(false).await?;
        let client = self.client(d.meta, callback)?;
        let (state, nonce, verifier) = (self.random(), self.random(), self.random());
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.clone()));
        let (s, n) = (state.clone(), nonce.clone());
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(s),
                move || Nonce::new(n),
            )
            .set_pkce_challenge(challenge);
        for scope in self.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        if let Some(h) = login_hint {
            req = req.add_extra_param("login_hint", h.to_owned());
        }
        let (redirect_to, _, _) = req.url();
        let values = BTreeMap::from([
            ("state".to_owned(), state),
            ("nonce".to_owned(), nonce),
            ("code_verifier".to_owned(), verifier),
        ]);
        Ok(UpstreamStart {
            redirect_to,
            pending: PendingUpstream { values },
        })
    }

    async fn callback(
        &self,
        callback: &Url,
        pending: &PendingUpstream,
        query: &BTreeMap<String, String>,
    ) -> Result<Federated, UpstreamError> {
        if let Some(code) = query.get("error") {
            return Err(UpstreamError::Refused {
                code: code.chars().take(64).collect(),
                description: query
                    .get("error_description")
                    .map(|d| d.chars().take(300).collect()),
            });
        }
        let get = |k: &str| {
            pending
                .values
                .get(k)
                .ok_or_else(|| rejected(format!("pending login without {k}")))
        };
        let (expected_state, nonce, verifier) =
            (get("state")?, get("nonce")?, get("code_verifier")?);
        if query.get("state") != Some(expected_state) {
            return Err(rejected("state does not match this browser's request"));
        }
        let d = self.discovery(false).await?;
        // RFC 9207: if the upstream names itself, it must be the one we sent the user to; an
        // upstream that says it always does (2.4) must have.
        match query.get("iss") {
            Some(iss)
                if iss.trim_end_matches('/') != self.issuer.as_str().trim_end_matches('/') =>
            {
                return Err(rejected(
                    "iss of the authorization response is another issuer",
                ));
            }
            None if d.iss_parameter => {
                return Err(rejected(
                    "the authorization response has no iss, which this upstream always sends",
                ));
            }
            _ => {}
        }
        let code = query
            .get("code")
            .ok_or_else(|| rejected("no code in the callback"))?;
        let (id_token, access_token) = self.exchange(&d, code, verifier, callback).await?;
        let mut claims = match self.verify_id_token(&d, &id_token, nonce) {
            Ok(c) => c,
            // A key the cached JWKS does not have: fetch it once more (key rotation upstream).
            Err(IdTokenError::UnknownKey) => {
                let fresh = self.discovery(true).await?;
                self.verify_id_token(&fresh, &id_token, nonce)
                    .map_err(IdTokenError::into_upstream)?
            }
            Err(IdTokenError::Invalid(e)) => return Err(e),
        };
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for (k, v) in self.userinfo(&d.meta, &access_token, &sub).await? {
            claims.entry(k).or_insert(v);
        }
        Ok(Federated {
            identity: self.identity(&claims)?,
            session: Some(UpstreamSession::Oidc { id_token }),
        })
    }

    async fn logout_url(
        &self,
        session: &UpstreamSession,
        post_logout: &Url,
        state: &str,
    ) -> Result<Option<Url>, UpstreamError> {
        let UpstreamSession::Oidc { id_token } = session else {
            return Ok(None);
        };
        let Some(mut url) = self.discovery(false).await?.end_session else {
            return Ok(None);
        };
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token)
            .append_pair("post_logout_redirect_uri", post_logout.as_str())
            .append_pair("client_id", self.client_id.as_str())
            .append_pair("state", state);
        Ok(Some(url))
    }

    async fn logout_endpoint(&self) -> Result<Option<Url>, UpstreamError> {
        Ok(self.discovery(false).await?.end_session)
    }

    async fn login_endpoint(&self) -> Result<Option<Url>, UpstreamError> {
        let d = self.discovery(false).await?;
        Ok(Some(d.meta.authorization_endpoint().url().clone()))
    }
}
