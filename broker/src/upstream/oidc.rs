//! Owns the upstream OpenID Connect connector: discovery (cached, refreshed, re-fetched when an
//! ID token names an unknown key), authorization code + PKCE + state + nonce, ID token
//! validation through the `openidconnect` crate under the broker's clock, userinfo merged, and
//! the per-upstream claim mapping into an [`Identity`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AccessToken, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use url::Url;

use super::{
    Federated, Identity, PendingUpstream, RedirectConnector, UpstreamError, UpstreamSession,
    UpstreamStart,
};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::{ClaimMapping, OidcUpstreamConfig};
use crate::domain::Email;

/// How long discovery (and the upstream's JWKS) is trusted before it is fetched again.
const METADATA_TTL: i64 = 3600;
/// Bounded clock skew for `exp` and `iat`.
const SKEW: i64 = 60;
/// ID tokens issued longer ago than this are refused (they should be minutes old).
const MAX_AGE: i64 = 600;

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

/// Why an ID token was not accepted: a key the cached JWKS lacks (worth one re-fetch), or
/// anything else (final).
enum IdTokenError {
    UnknownKey,
    Invalid(UpstreamError),
}

impl IdTokenError {
    fn into_upstream(self) -> UpstreamError {
        match self {
            Self::UnknownKey => rejected("ID token signed by a key the upstream does not publish"),
            Self::Invalid(e) => e,
        }
    }
}

pub struct OidcConnector {
    id: String,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    scopes: Vec<String>,
    mapping: ClaimMapping,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    metadata: tokio::sync::RwLock<Option<(CoreProviderMetadata, UnixTime)>>,
    end_session: tokio::sync::RwLock<Option<(Option<Url>, UnixTime)>>,
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
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, UpstreamError> {
        // Never follow redirects from the upstream's endpoints (SSRF, token leakage).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(unavailable)?;
        Ok(Self {
            id: id.to_owned(),
            issuer: IssuerUrl::new(cfg.issuer.clone()).map_err(rejected)?,
            client_id: ClientId::new(cfg.client_id.clone()),
            client_secret: ClientSecret::new(cfg.client_secret.expose_secret().to_owned()),
            scopes: cfg.scopes.clone(),
            mapping: cfg.claims.clone(),
            http,
            clock,
            entropy,
            metadata: tokio::sync::RwLock::new(None),
            end_session: tokio::sync::RwLock::new(None),
        })
    }

    /// The upstream's `end_session_endpoint` (RP-Initiated Logout 1.0), from its discovery
    /// document (the `openidconnect` metadata type does not carry it), cached like discovery.
    async fn end_session_endpoint(&self) -> Result<Option<Url>, UpstreamError> {
        let now = self.clock.now();
        if let Some((url, at)) = self.end_session.read().await.as_ref()
            && now - at < METADATA_TTL
        {
            return Ok(url.clone());
        }
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        let res = self
            .http
            .get(&discovery)
            .send()
            .await
            .map_err(unavailable)?;
        if !res.status().is_success() {
            return Err(unavailable(format!("discovery answered {}", res.status())));
        }
        let body = res.bytes().await.map_err(unavailable)?;
        let doc: Map<String, Value> = serde_json::from_slice(&body).map_err(unavailable)?;
        let url = doc
            .get("end_session_endpoint")
            .and_then(Value::as_str)
            .and_then(|u| Url::parse(u).ok())
            .filter(|u| u.scheme() == "https" || crate::config::https_or_loopback(u));
        *self.end_session.write().await = Some((url.clone(), now));
        Ok(url)
    }

    fn random(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.entropy.bytes32())
    }

    /// The upstream's discovery document (with its JWKS), from cache unless stale or `refresh`.
    async fn metadata(&self, refresh: bool) -> Result<CoreProviderMetadata, UpstreamError> {
        let now = self.clock.now();
        if !refresh
            && let Some((m, at)) = self.metadata.read().await.as_ref()
            && now - at < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| unavailable(format!("discovery of {}: {e}", self.issuer.as_str())))?;
        *self.metadata.write().await = Some((m.clone(), now));
        Ok(m)
    }

    fn client(&self, m: CoreProviderMetadata, callback: &Url) -> Result<Client, UpstreamError> {
        Ok(CoreClient::from_provider_metadata(
            m,
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_redirect_uri(RedirectUrl::new(callback.to_string()).map_err(rejected)?))
    }

    /// The verified ID token's claims as JSON (for the mapping of arbitrary claims).
    fn verify_id_token(
        &self,
        client: &Client,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &str,
    ) -> Result<Map<String, Value>, IdTokenError> {
        let now = self.clock.now();
        let at = |t: i64| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0).unwrap_or_default();
        let verifier = client
            .id_token_verifier()
            // `exp` is checked against this: tokens expired less than SKEW ago still pass.
            .set_time_fn(move || at(now - SKEW))
            .set_issue_time_verifier_fn(move |iat| {
                let iat = iat.timestamp();
                if iat > now + SKEW {
                    Err(format!("issued in the future ({iat})"))
                } else if iat < now - MAX_AGE {
                    Err(format!("issued too long ago ({iat})"))
                } else {
                    Ok(())
                }
            });
        id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| match e {
                ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                ) => IdTokenError::UnknownKey,
                other => IdTokenError::Invalid(rejected(format!("ID token: {other}"))),
            })?;
        // Verified above; read every claim (including custom ones the mapping may name).
        let raw = id_token.to_string();
        let payload = raw
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
            .ok_or_else(|| {
                IdTokenError::Invalid(rejected("ID token payload is not a JSON object"))
            })?;
        Ok(payload)
    }

    /// Claims from the userinfo endpoint, if it has one; its `sub` must be the ID token's.
    async fn userinfo(
        &self,
        m: &CoreProviderMetadata,
        access_token: &AccessToken,
        sub: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let Some(url) = m.userinfo_endpoint() else {
            return Ok(Map::new());
        };
        let res = self
            .http
            .get(url.url().clone())
            .bearer_auth(access_token.secret())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(unavailable)?;
        if !res.status().is_success() {
            return Err(unavailable(format!("userinfo answered {}", res.status())));
        }
        let body = res.bytes().await.map_err(unavailable)?;
        let claims: Map<String, Value> = serde_json::from_slice(&body).map_err(rejected)?;
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(rejected("userinfo `sub` differs from the ID token's"));
        }
        Ok(claims)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, UpstreamError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .filter(|s| !s.is_empty())
        };
        let subject = text(&self.mapping.subject)
            .ok_or_else(|| rejected(format!("no `{}` claim", self.mapping.subject)))?;
        let email = text(&self.mapping.email).and_then(|e| Email::parse(&e).ok());
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            // Some providers send it as a string.
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        let groups = match claims.get(&self.mapping.groups) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let amr = match claims.get("amr") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            upstream: self.id.clone(),
            subject,
            email,
            email_verified,
            name: text(&self.mapping.name),
            groups,
            amr,
            acr: text("acr"),
        })
    }
}

#[async_trait]
impl RedirectConnector for OidcConnector {
    async fn start(
        &self,
        callback: &Url,
        login_hint: Option<&str>,
    ) -> Result<UpstreamStart, UpstreamError> {
        let m = self.metadata(false).await?;
        let client = self.client(m, callback)?;
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
        // RFC 9207: if the upstream names itself, it must be the one we sent the user to.
        if let Some(iss) = query.get("iss")
            && iss.trim_end_matches('/') != self.issuer.as_str().trim_end_matches('/')
        {
            return Err(rejected(
                "iss of the authorization response is another issuer",
            ));
        }
        let code = query
            .get("code")
            .ok_or_else(|| rejected("no code in the callback"))?;
        let m = self.metadata(false).await?;
        let client = self.client(m.clone(), callback)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.clone()))
            .map_err(rejected)?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| rejected(format!("token request: {e}")))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| rejected("the token response has no ID token"))?;
        let mut claims = match self.verify_id_token(&client, id_token, nonce) {
            Ok(c) => c,
            // A key the cached JWKS does not have: fetch it once more (key rotation upstream).
            Err(IdTokenError::UnknownKey) => {
                let fresh = self.metadata(true).await?;
                let client = self.client(fresh, callback)?;
                self.verify_id_token(&client, id_token, nonce)
                    .map_err(IdTokenError::into_upstream)?
            }
            Err(IdTokenError::Invalid(e)) => return Err(e),
        };
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for (k, v) in self.userinfo(&m, tokens.access_token(), &sub).await? {
            claims.entry(k).or_insert(v);
        }
        Ok(Federated {
            identity: self.identity(&claims)?,
            session: Some(UpstreamSession::Oidc {
                id_token: id_token.to_string(),
            }),
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
        let Some(mut url) = self.end_session_endpoint().await? else {
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
        self.end_session_endpoint().await
    }

    async fn login_endpoint(&self) -> Result<Option<Url>, UpstreamError> {
        let m = self.metadata(false).await?;
        Ok(Some(m.authorization_endpoint().url().clone()))
    }
}
