//! Owns the upstream OpenID Connect connector: discovery (cached, refreshed, re-fetched when an
//! ID token names an unknown key), authorization code + PKCE + state + nonce, the code exchange
//! with the configured client authentication, ID token validation under the broker's clock (keys
//! and algorithms through the `openidconnect` crate), userinfo merged, every response read with
//! a size cap, and the per-upstream claim mapping into an [`Identity`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    ClientId, ClientSecret, CsrfToken, IssuerUrl, JsonWebKey, JsonWebKeyUse, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use url::Url;

use super::{
    Federated, Identity, PendingUpstream, RedirectConnector, UpstreamError, UpstreamSession,
    UpstreamStart,
};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::{ClaimMapping, OidcUpstreamConfig, UpstreamClientAuth};
use crate::domain::Email;
use crate::domain::jose::Alg;
use crate::http;
use crate::jwt::{self, Signer};

/// How long discovery (and the upstream's JWKS) is trusted before it is fetched again.
const METADATA_TTL: i64 = 3600;
/// Bounded clock skew for `exp`, `iat` and `nbf`.
const SKEW: i64 = 60;
/// ID tokens issued longer ago than this are refused (they should be minutes old).
const MAX_AGE: i64 = 600;
/// Lifetime of a `private_key_jwt` client assertion.
const ASSERTION_TTL: i64 = 60;

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

/// The broker's `private_key_jwt` key for one upstream.
struct AssertionKey {
    signer: Signer,
    alg: Alg,
    kid: String,
}

enum ClientAuth {
    Basic,
    Post,
    PrivateKeyJwt(Box<AssertionKey>),
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

fn invalid(e: impl std::fmt::Display) -> IdTokenError {
    IdTokenError::Invalid(rejected(format!("ID token: {e}")))
}

/// A NumericDate claim (RFC 7519 2): a JSON number of seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, IdTokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.trunc() as i64)
            })
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` is not a number"))),
    }
}

/// The RFC 7638 thumbprint of the public half of `der` (PKCS#8), the default assertion `kid`.
fn thumbprint(der: &[u8]) -> Option<String> {
    use sha2::{Digest, Sha256};
    let key = openssl::pkey::PKey::private_key_from_pkcs8(der).ok()?;
    let canonical = if let Ok(rsa) = key.rsa() {
        format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
            URL_SAFE_NO_PAD.encode(rsa.n().to_vec())
        )
    } else {
        let ec = key.ec_key().ok()?;
        let mut ctx = openssl::bn::BigNumContext::new().ok()?;
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().ok()?,
            openssl::bn::BigNum::new().ok()?,
        );
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .ok()?;
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x.to_vec_padded(32).ok()?),
            URL_SAFE_NO_PAD.encode(y.to_vec_padded(32).ok()?)
        )
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
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
        let auth = match &cfg.client_auth {
            UpstreamClientAuth::ClientSecretBasic => ClientAuth::Basic,
            UpstreamClientAuth::ClientSecretPost => ClientAuth::Post,
            UpstreamClientAuth::PrivateKeyJwt { key_der, kid } => {
                let der = &key_der.0;
                let rsa = openssl::pkey::PKey::private_key_from_pkcs8(der)
                    .map_err(rejected)?
                    .rsa()
                    .is_ok();
                let alg = if rsa { Alg::RS256 } else { Alg::ES256 };
                let kid = match kid {
                    Some(k) => k.clone(),
                    None => thumbprint(der)
                        .ok_or_else(|| rejected("client assertion key: no thumbprint"))?,
                };
                ClientAuth::PrivateKeyJwt(Box::new(AssertionKey {
                    signer: Signer::from_pkcs8(alg, der).map_err(rejected)?,
                    alg,
                    kid,
                }))
            }
        };
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

    /// The code exchange (RFC 6749 4.1.3) with this upstream's client authentication; returns
    /// the ID token and the access token.
    async fn exchange(
        &self,
        d: &Discovery,
        code: &str,
        verifier: &str,
        callback: &Url,
    ) -> Result<(String, String), UpstreamError> {
        let endpoint = d
            .meta
            .token_endpoint()
            .ok_or_else(|| rejected("the upstream publishes no token_endpoint"))?
            .url()
            .clone();
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.to_owned()),
            ("redirect_uri", callback.to_string()),
            ("code_verifier", verifier.to_owned()),
        ];
        let mut req = self
            .http
            .post(endpoint.clone())
            .header("accept", "application/json");
        match &self.auth {
            // RFC 6749 2.3.1: both halves form-encoded before Basic.
            ClientAuth::Basic => {
                let enc = |s: &str| -> String {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
                };
                req = req.basic_auth(
                    enc(self.client_id.as_str()),
                    Some(enc(self.client_secret.secret())),
                );
            }
            ClientAuth::Post => {
                form.push(("client_id", self.client_id.to_string()));
                form.push(("client_secret", self.client_secret.secret().clone()));
            }
            ClientAuth::PrivateKeyJwt(key) => {
                let now = self.clock.now();
                let claims = serde_json::json!({
                    "iss": self.client_id.as_str(),
                    "sub": self.client_id.as_str(),
                    "aud": endpoint.as_str(),
                    "jti": self.random(),
                    "iat": now,
                    "exp": now + ASSERTION_TTL,
                });
                let assertion = jwt::sign(&key.signer, key.alg, &key.kid, "JWT", &claims)
                    .map_err(|e| rejected(format!("client assertion: {e}")))?;
                form.push(("client_id", self.client_id.to_string()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
            }
        }
        let res = req
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(format!("token request: {}", http::describe(&e))))?;
        let status = res.status();
        let body = http::read_capped(res, http::MAX_RESPONSE)
            .await
            .map_err(|e| rejected(format!("token response: {e}")))?;
        let doc: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| rejected(format!("token response ({status}) is not a JSON object")))?;
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        if !status.is_success() {
            return Err(rejected(format!(
                "token request answered {status}: {}",
                text("error")
                    .unwrap_or_default()
                    .chars()
                    .take(64)
                    .collect::<String>()
            )));
        }
        if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err(rejected("token response: token_type is not Bearer"));
        }
        let access = text("access_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| rejected("token response without access_token"))?;
        let id_token =
            text("id_token").ok_or_else(|| rejected("the token response has no ID token"))?;
        Ok((id_token, access))
    }

    /// Checks the ID token (OIDC Core 3.1.3.7, RFC 7519 4.1) under the broker's clock and
    /// returns its claims: an asymmetric algorithm the upstream advertises, a key of its JWKS,
    /// `iss`, `aud` and `azp`, `exp`, `iat`, `nbf`, `nonce`.
    fn verify_id_token(
        &self,
        d: &Discovery,
        token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, IdTokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS"));
        };
        let object = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        };
        let header = object(h).ok_or_else(|| invalid("malformed header"))?;
        let alg: CoreJwsSigningAlgorithm = header
            .get("alg")
            .cloned()
            .and_then(|a| serde_json::from_value(a).ok())
            .ok_or_else(|| invalid("unknown alg"))?;
        let asymmetric = !matches!(
            alg,
            CoreJwsSigningAlgorithm::None
                | CoreJwsSigningAlgorithm::HmacSha256
                | CoreJwsSigningAlgorithm::HmacSha384
                | CoreJwsSigningAlgorithm::HmacSha512
        );
        let advertised = d
            .meta
            .id_token_signing_alg_values_supported()
            .contains(&alg);
        if !asymmetric || !advertised {
            return Err(invalid(format!(
                "alg {} is not allowed",
                header.get("alg").unwrap_or(&Value::Null)
            )));
        }
        if header.contains_key("crit") {
            return Err(invalid("a `crit` header is not understood"));
        }
        if let Some(typ) = header.get("typ") {
            let ok = typ.as_str().is_some_and(|t| {
                t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt")
            });
            if !ok {
                return Err(invalid("typ is not JWT"));
            }
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let keys: Vec<&CoreJsonWebKey> = d
            .jwks
            .keys()
            .iter()
            .filter(|k| kid.is_none() || k.key_id().map(|i| i.as_str()) == kid)
            .filter(|k| k.key_use().is_none_or(|u| u.allows_signature()))
            .collect();
        if keys.is_empty() {
            return Err(IdTokenError::UnknownKey);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| invalid("malformed signature"))?;
        let input = &token.as_bytes()[..h.len() + 1 + p.len()];
        if !keys
            .iter()
            .any(|k| k.verify_signature(&alg, input, &signature).is_ok())
        {
            return Err(invalid("bad signature"));
        }

        let claims = object(p).ok_or_else(|| invalid("payload is not a JSON object"))?;
        let now = self.clock.now();
        let text = |k: &str| claims.get(k).and_then(Value::as_str);
        if text("iss") != Some(self.issuer.as_str()) {
            return Err(invalid("iss is not the upstream"));
        }
        let client_id = self.client_id.as_str();
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.contains(&client_id) {
            return Err(invalid("aud does not name the broker"));
        }
        // OIDC Core 3.1.3.7 (3-5): another audience needs `azp`, and `azp` must be the broker.
        match text("azp") {
            Some(azp) if azp != client_id => {
                return Err(invalid("azp names another client"));
            }
            None if audiences.len() > 1 => {
                return Err(invalid("several audiences and no azp"));
            }
            _ => {}
        }
        let exp = numeric_date(&claims, "exp")?.ok_or_else(|| invalid("no exp"))?;
        if exp <= now - SKEW {
            return Err(invalid(format!("expired at {exp}")));
        }
        let iat = numeric_date(&claims, "iat")?.ok_or_else(|| invalid("no iat"))?;
        if iat > now + SKEW {
            return Err(invalid(format!("issued in the future ({iat})")));
        }
        if iat < now - MAX_AGE {
            return Err(invalid(format!("issued too long ago ({iat})")));
        }
        // RFC 7519 4.1.5: not to be accepted before `nbf`.
        if let Some(nbf) = numeric_date(&claims, "nbf")?
            && nbf > now + SKEW
        {
            return Err(invalid(format!("not valid before {nbf}")));
        }
        if text("nonce") != Some(nonce) {
            return Err(invalid("nonce does not match the request"));
        }
        if text("sub").is_none_or(str::is_empty) {
            return Err(invalid("no sub"));
        }
        Ok(claims)
    }

    /// The ID-token check against a discovery document and a JWKS given as JSON, for the fuzz
    /// targets in fuzz/ only (not an API): `Ok(claims)` when the token is accepted, `Err` with
    /// the reason otherwise.
    #[doc(hidden)]
    pub fn check_id_token_for_fuzzing(
        &self,
        metadata: &str,
        jwks: &str,
        token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, String> {
        let d = Discovery {
            meta: serde_json::from_str(metadata).map_err(|e| e.to_string())?,
            jwks: serde_json::from_str(jwks).map_err(|e| e.to_string())?,
            iss_parameter: false,
            end_session: None,
        };
        self.verify_id_token(&d, token, nonce)
            .map_err(|e| e.into_upstream().to_string())
    }

    /// Claims from the userinfo endpoint, if it has one; its `sub` must be the ID token's.
    async fn userinfo(
        &self,
        m: &CoreProviderMetadata,
        access_token: &str,
        sub: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let Some(url) = m.userinfo_endpoint() else {
            return Ok(Map::new());
        };
        let res = self
            .http
            .get(url.url().clone())
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable(format!("userinfo: {}", http::describe(&e))))?;
        if !res.status().is_success() {
            return Err(unavailable(format!("userinfo answered {}", res.status())));
        }
        let body = http::read_capped(res, http::MAX_RESPONSE)
            .await
            .map_err(|e| rejected(format!("userinfo: {e}")))?;
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
        // OIDC Core 5.1: a boolean. Anything else (e.g. the string "true") is not a verification.
        let email_verified = claims.get("email_verified") == Some(&Value::Bool(true));
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
