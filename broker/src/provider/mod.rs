//! Owns the broker as an OpenID provider to its own apps: the [`Provider`], discovery, JWKS,
//! client authentication and signing; each grant and concern in its own file. Blocking, no HTTP.

pub mod authorize;
mod client_credentials;
pub mod clients;
mod code;
mod error;
mod introspect;
pub mod keys;
pub mod logout;
mod refresh;
mod revoke;
mod tokens;

pub use error::OAuthError;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::audit::Auditor;
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::provider::ProviderSettings;
use crate::domain::UserId;
use crate::domain::client::{AuthMethod, Client};
use crate::domain::jose::Alg;
use crate::jwt;
use crate::storage::Store;
use clients::ClientRegistry;
use keys::{KeyError, KeyRing};

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Credentials a client presented at the token, introspection or revocation endpoint.
#[derive(Debug, Default, Clone)]
pub struct ClientCredentials {
    /// From `Authorization: Basic` (already URL-decoded).
    pub basic: Option<(String, String)>,
    pub form_id: Option<String>,
    pub form_secret: Option<String>,
}

/// The token endpoint's success answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The user-bound facts every token of one grant carries.
#[derive(Debug, Clone)]
struct Grantee {
    user_id: UserId,
    sid: String,
    scope: String,
    auth_time: UnixTime,
    acr: Option<String>,
    amr: Vec<String>,
    nonce: Option<String>,
}

/// The authentication context class the broker asserts for a set of methods: multi-factor only
/// when the broker itself verified a second factor (or trusted an upstream's), which adds `mfa`.
/// An upstream's own `amr` alone (e.g. `otp` from an untrusted upstream) does not count.
pub fn acr_for(amr: &[String]) -> &'static str {
    crate::domain::auth::acr_of_level(crate::domain::auth::session_level(amr))
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

pub struct Provider {
    pub settings: ProviderSettings,
    pub clients: ClientRegistry,
    pub keys: KeyRing,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    /// Wakes the back-channel logout sender when something was queued.
    pub logout_wakeup: tokio::sync::Notify,
    /// The session's parties that are not OpenID clients (SAML SPs), told through the same
    /// outbox; set once at start by what knows them (`flow::saml_backchannel`).
    pub other_parties: std::sync::OnceLock<Arc<dyn logout::OtherParties>>,
    /// Access tokens whose signature and type were already checked (SHA-256 of the token ->
    /// claims). Resource servers introspect the same token many times; a signature check is
    /// 18-38 us. Only the signature is cached: expiry, revocation and session are checked on
    /// every call. Bounded; emptied when full.
    verified: VerifiedTokens,
    /// Where auth events go.
    pub audit: Arc<Auditor>,
}

/// SHA-256 of a verified access token -> its claims.
type VerifiedTokens = std::sync::Mutex<std::collections::HashMap<[u8; 32], Map<String, Value>>>;

/// How many verified tokens the cache holds before it starts over.
const VERIFIED_CACHE: usize = 16_384;

impl Provider {
    pub fn new(
        settings: ProviderSettings,
        clients: ClientRegistry,
        keys: KeyRing,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        audit: Arc<Auditor>,
    ) -> Self {
        Self {
            audit,
            settings,
            clients,
            keys,
            store,
            clock,
            entropy,
            logout_wakeup: tokio::sync::Notify::new(),
            other_parties: std::sync::OnceLock::new(),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    fn random_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.entropy.bytes32())
    }

    /// The longest a token signed now can stay valid: how long retired keys stay published.
    pub fn max_token_ttl(&self) -> i64 {
        let longest_client = self
            .clients
            .configured()
            .filter_map(|c| c.access_token_ttl)
            .max()
            .unwrap_or_default();
        secs(
            self.settings
                .access_token_ttl
                .max(self.settings.id_token_ttl)
                .max(longest_client),
        )
        .saturating_add(60)
    }

    pub fn discovery(&self) -> Value {
        let i = &self.settings.issuer;
        let mut acr_values_supported =
            vec![crate::domain::auth::ACR_LOA1, crate::domain::auth::ACR_LOA2];
        if self.settings.phishing_resistant {
            acr_values_supported.push(crate::domain::auth::ACR_LOA3);
        }
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "jwks_uri": format!("{i}/jwks"),
            "introspection_endpoint": format!("{i}/introspect"),
            "revocation_endpoint": format!("{i}/revoke"),
            "end_session_endpoint": format!("{i}/oidc/logout"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "form_post"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "acr_values_supported": acr_values_supported,
            "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash", "email", "email_verified", "name", "groups"],
            "prompt_values_supported": ["none", "login"],
            "ui_locales_supported": ["en", "ko"],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "frontchannel_logout_supported": false,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    pub fn jwks(&self) -> Value {
        self.keys.jwks(self.now(), self.max_token_ttl())
    }

    /// Authenticates the calling client (RFC 6749 2.3). Public clients identify themselves only.
    pub fn authenticate_client(
        &self,
        creds: &ClientCredentials,
    ) -> Result<Arc<Client>, OAuthError> {
        let (id, secret, via_basic) = match (&creds.basic, &creds.form_id) {
            (Some(_), Some(_)) if creds.form_secret.is_some() => {
                return Err(OAuthError::InvalidRequest(
                    "use one client authentication method".into(),
                ));
            }
            (Some((id, secret)), _) => (id.as_str(), Some(secret.as_str()), true),
            (None, Some(id)) => (id.as_str(), creds.form_secret.as_deref(), false),
            (None, None) => return Err(OAuthError::InvalidClient),
        };
        let client = self.clients.get(id)?.ok_or(OAuthError::InvalidClient)?;
        match client.auth_method {
            AuthMethod::None => {
                if secret.is_some_and(|s| !s.is_empty()) {
                    return Err(OAuthError::InvalidClient);
                }
            }
            AuthMethod::SecretBasic | AuthMethod::SecretPost => {
                let expected_basic = client.auth_method == AuthMethod::SecretBasic;
                let ok =
                    secret.is_some_and(|s| client.secret_matches(s)) && via_basic == expected_basic;
                if !ok {
                    return Err(OAuthError::InvalidClient);
                }
            }
        }
        Ok(client)
    }

    fn alg_for(&self, client: &Client) -> Alg {
        client.signing_alg.unwrap_or(self.settings.signing_alg)
    }

    /// Seconds an access token for `client` lives.
    fn access_ttl(&self, client: &Client) -> i64 {
        secs(
            client
                .access_token_ttl
                .unwrap_or(self.settings.access_token_ttl),
        )
    }

    /// Signs `claims` for `client` with its algorithm's current key, as a JWT of type `typ`. A
    /// client registered at run time may name an algorithm no key exists for yet: its first
    /// token creates one.
    pub(crate) fn sign_for(
        &self,
        client: &Client,
        typ: &str,
        claims: &Value,
    ) -> Result<String, OAuthError> {
        let alg = self.alg_for(client);
        let now = self.now();
        let sign = || {
            self.keys
                .with_signer(alg, now, |kid, s| jwt::sign(s, alg, kid, typ, claims))
        };
        let signed = match sign() {
            Err(KeyError::NoKey(_)) => {
                self.keys
                    .ensure(self.store.as_ref(), self.entropy.as_ref(), &[alg], now)?;
                sign()?
            }
            other => other?,
        };
        signed.map_err(|e| OAuthError::ServerError(e.to_string()))
    }

    /// All algorithms in use, so that each has a key.
    pub fn algorithms(&self) -> Vec<Alg> {
        let mut algs = vec![self.settings.signing_alg];
        for c in self.clients.configured() {
            if let Some(a) = c.signing_alg
                && !algs.contains(&a)
            {
                algs.push(a);
            }
        }
        algs
    }
}
