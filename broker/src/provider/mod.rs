//! Owns the broker as an OpenID provider to its own apps: clients, signing keys, the
//! authorization request, codes, the token grants (authorization_code with PKCE, rotating
//! refresh tokens with reuse detection, client_credentials), JWT access tokens (RFC 9068) and
//! ID tokens, introspection, userinfo and revocation. Blocking (storage); no HTTP in here.

pub mod authorize;
pub mod clients;
pub mod keys;
pub mod logout;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{Auditor, Event, EventKind};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::provider::ProviderSettings;
use crate::domain::UserId;
use crate::domain::client::{AuthMethod, Client, Grant};
use crate::domain::jose::Alg;
use crate::jwt;
use crate::storage::{
    AuthCodeRecord, CodeUse, RefreshRecord, Rotation, SessionRecord, StorageError, Store,
};
use clients::ClientRegistry;
use keys::{KeyError, KeyRing};

/// OAuth 2.0 / OIDC errors; each variant is an RFC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    #[error("invalid_client")]
    InvalidClient,
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(String),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("unsupported_response_type")]
    UnsupportedResponseType,
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    #[error("login_required")]
    LoginRequired,
    /// `prompt=none`, but a step-up (second factor) would need the user.
    #[error("interaction_required")]
    InteractionRequired,
    /// The user (or the upstream identity provider) refused the authorization.
    #[error("access_denied")]
    AccessDenied,
    #[error("invalid_token")]
    InvalidToken,
    #[error("insufficient_scope")]
    InsufficientScope,
    #[error("server_error")]
    ServerError(String),
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    /// A `request` object at /authorize (OIDC Core 6.1): not supported.
    #[error("request_not_supported")]
    RequestNotSupported,
    /// A `request_uri` at /authorize (OIDC Core 6.2): not supported.
    #[error("request_uri_not_supported")]
    RequestUriNotSupported,
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::LoginRequired => "login_required",
            Self::InteractionRequired => "interaction_required",
            Self::AccessDenied => "access_denied",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::ServerError(_) => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
        }
    }

    /// A description safe to send to the client (never internals).
    pub fn description(&self) -> Option<String> {
        match self {
            Self::InvalidRequest(m)
            | Self::InvalidGrant(m)
            | Self::UnauthorizedClient(m)
            | Self::InvalidScope(m) => Some(m.clone()),
            Self::InvalidClient => Some("client authentication failed".into()),
            Self::InvalidToken => Some("the access token is not valid".into()),
            Self::TemporarilyUnavailable => {
                Some("temporarily unavailable; try again in a moment".into())
            }
            _ => None,
        }
    }
}

impl From<StorageError> for OAuthError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => Self::TemporarilyUnavailable,
            other => Self::ServerError(other.to_string()),
        }
    }
}

impl From<KeyError> for OAuthError {
    fn from(e: KeyError) -> Self {
        Self::ServerError(e.to_string())
    }
}

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
    if crate::domain::auth::session_level(amr) >= 2 {
        crate::domain::auth::ACR_LOA2
    } else {
        crate::domain::auth::ACR_LOA1
    }
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
            "acr_values_supported": [crate::domain::auth::ACR_LOA1, crate::domain::auth::ACR_LOA2],
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

    /// Issues a one-time code for an authorized request on a live session.
    pub fn issue_code(
        &self,
        req: &authorize::AuthorizeRequest,
        session: &SessionRecord,
    ) -> Result<String, OAuthError> {
        let code = self.random_token();
        let now = self.now();
        self.store.insert_code(&AuthCodeRecord {
            code_hash: sha256(&code),
            client_id: req.client.id.clone(),
            // Empty when /authorize was not given one (the client's single registered URI).
            redirect_uri: if req.redirect_uri_given {
                req.redirect_uri_presented.clone()
            } else {
                String::new()
            },
            user_id: session.user_id.clone(),
            sid: session.sid.clone(),
            scope: req.scope.join(" "),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone().unwrap_or_default(),
            auth_time: session.auth_time,
            acr: Some(acr_for(&session.amr).to_owned()),
            amr: session.amr.clone(),
            expires_at: now.saturating_add(secs(self.settings.code_ttl)),
            consumed_at: None,
        })?;
        // The client takes part in this session: it hears of the session's end.
        self.store
            .add_session_client(&session.sid, &req.client.id)?;
        Ok(code)
    }

    /// The public id of a grant (one code and the refresh token family it started), derived
    /// from the family id. Every user access token of the grant carries it in its `jti`
    /// (`<grant id>.<random>`), so revoking the grant ends them all.
    fn grant_id(family_id: &str) -> String {
        let d = Sha256::new()
            .chain_update(b"concierge-grant:")
            .chain_update(family_id.as_bytes())
            .finalize();
        URL_SAFE_NO_PAD.encode(&d[..18])
    }

    /// The revoked-list key that ends every access token of the grant `grant_id`.
    fn grant_key(grant_id: &str) -> String {
        format!("grant:{grant_id}")
    }

    /// A fresh jti for a user access token of the grant of `family_id`.
    fn grant_jti(&self, family_id: &str) -> String {
        format!("{}.{}", Self::grant_id(family_id), self.random_token())
    }

    /// Ends a grant: its refresh tokens are deleted and its access tokens inactive (RFC 7009
    /// 2.1). Returns the number of refresh tokens deleted.
    fn revoke_grant(&self, family_id: &str) -> Result<u64, OAuthError> {
        let n = self.store.delete_refresh_family(family_id)?;
        // With the family gone no new access token of the grant can be issued: the key need
        // outlive only those issued so far.
        let until = self.now().saturating_add(self.max_token_ttl());
        self.store
            .revoke_jti(&Self::grant_key(&Self::grant_id(family_id)), until)?;
        Ok(n)
    }

    /// `grant_type=authorization_code`.
    pub fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        client.require(Grant::AuthorizationCode)?;
        let now = self.now();
        let hash = sha256(code);
        // Who presents the code is checked before anything is spent: a wrong client, redirect
        // URI or PKCE verifier gets invalid_grant and changes nothing (else anyone holding the
        // code could burn it, or revoke its owner's tokens by replaying it).
        let rec = self
            .store
            .code(&hash)?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown code".into()))?;
        if rec.client_id != client.id {
            return Err(OAuthError::InvalidGrant(
                "code was issued to another client".into(),
            ));
        }
        // RFC 6749 4.1.3: required, and identical, if the authorization request included it.
        let redirect_ok = match (rec.redirect_uri.is_empty(), redirect_uri) {
            (false, given) => given == Some(rec.redirect_uri.as_str()),
            (true, None) => true,
            (true, Some(given)) => {
                matches!(client.redirect_uri_strings(), [only] if only == given)
            }
        };
        if !redirect_ok {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri does not match the authorization request".into(),
            ));
        }
        match (rec.code_challenge.is_empty(), verifier) {
            (true, None) => {}
            (true, Some(_)) => {
                return Err(OAuthError::InvalidGrant(
                    "no PKCE challenge was sent for this code".into(),
                ));
            }
            (false, None) => return Err(OAuthError::InvalidGrant("code_verifier required".into())),
            (false, Some(v)) => {
                let valid_shape = (43..=128).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
                if !valid_shape || computed != rec.code_challenge {
                    return Err(OAuthError::InvalidGrant("PKCE verification failed".into()));
                }
            }
        }
        // The rightful client replaying a redeemed code (RFC 6749 4.1.2, RFC 9700 4.5).
        if rec.consumed_at.is_some() {
            return Err(self.code_replayed(&rec)?);
        }
        if now >= rec.expires_at {
            return Err(OAuthError::InvalidGrant("code expired".into()));
        }
        // The session must still be live.
        let session = self.store.session_by_sid(&rec.sid)?;
        if session.is_none_or(|s| now >= s.expires_at) {
            return Err(OAuthError::InvalidGrant("the session has ended".into()));
        }
        let grantee = Grantee {
            user_id: rec.user_id.clone(),
            sid: rec.sid.clone(),
            scope: rec.scope.clone(),
            auth_time: rec.auth_time,
            acr: rec.acr.clone(),
            amr: rec.amr.clone(),
            nonce: rec.nonce.clone(),
        };
        let family = hex::encode(rec.code_hash);
        let absolute = now.saturating_add(secs(
            client
                .refresh_absolute_ttl
                .unwrap_or(self.settings.refresh_absolute_ttl),
        ));
        let (response, refresh) = self.user_tokens(
            client,
            &grantee,
            self.grant_jti(&family),
            Some((family, absolute)),
            true,
        )?;
        // One transaction spends the code and stores its refresh token: a crash in between
        // cannot leave a spent code without its grant, nor a grant whose code can be redeemed.
        match self.store.redeem_code(&hash, now, refresh.as_ref())? {
            CodeUse::First(_) => {}
            CodeUse::Replayed(rec) => return Err(self.code_replayed(&rec)?),
            CodeUse::Unknown => return Err(OAuthError::InvalidGrant("unknown code".into())),
        }
        self.audit.record(
            Event::new(EventKind::TokenIssued)
                .client(client.id.as_str())
                .user(rec.user_id.as_str())
                .sid(rec.sid.as_str())
                .reason("authorization_code"),
        );
        Ok(response)
    }

    /// A redeemed code came back from its own client: everything it issued is revoked.
    fn code_replayed(&self, rec: &AuthCodeRecord) -> Result<OAuthError, OAuthError> {
        let revoked = self.revoke_grant(&hex::encode(rec.code_hash))?;
        tracing::warn!(client_id = %rec.client_id, refresh_revoked = revoked, "authorization code replayed; its tokens are revoked");
        self.audit.record(
            Event::new(EventKind::CodeReplayed)
                .client(rec.client_id.as_str())
                .user(rec.user_id.as_str())
                .sid(rec.sid.as_str()),
        );
        Ok(OAuthError::InvalidGrant("code already used".into()))
    }

    /// Signs the access token (and, for `openid`, the ID token) and stores a refresh token.
    fn user_tokens(
        &self,
        client: &Client,
        g: &Grantee,
        jti: String,
        refresh_family: Option<(String, UnixTime)>,
        with_id_token: bool,
    ) -> Result<(TokenResponse, Option<RefreshRecord>), OAuthError> {
        let now = self.now();
        let ttl = self.access_ttl(client);
        let user = self
            .store
            .user_by_id(&g.user_id)?
            .ok_or_else(|| OAuthError::InvalidGrant("the user no longer exists".into()))?;
        if user.disabled {
            return Err(OAuthError::InvalidGrant("the account is disabled".into()));
        }
        let mut at = Map::new();
        at.insert("iss".into(), json!(self.settings.issuer));
        at.insert("sub".into(), json!(g.user_id.as_str()));
        at.insert(
            "aud".into(),
            json!(client.audience.clone().unwrap_or_else(|| client.id.clone())),
        );
        at.insert("exp".into(), json!(now + ttl));
        at.insert("iat".into(), json!(now));
        at.insert("jti".into(), json!(jti));
        at.insert("client_id".into(), json!(client.id));
        at.insert("scope".into(), json!(g.scope));
        at.insert("sid".into(), json!(g.sid));
        at.insert("auth_time".into(), json!(g.auth_time));
        if let Some(acr) = &g.acr {
            at.insert("acr".into(), json!(acr));
        }
        at.insert("amr".into(), json!(g.amr));
        let scopes: Vec<&str> = g.scope.split_whitespace().collect();
        let (groups, email_verified) = self.federated_claims(&g.sid, &user, &scopes)?;
        if scopes.contains(&"groups") {
            at.insert("groups".into(), json!(groups));
        }
        let access_token = self.sign_for(client, "at+jwt", &Value::Object(at))?;

        let id_token = if with_id_token && scopes.contains(&"openid") {
            let mut id = Map::new();
            id.insert("iss".into(), json!(self.settings.issuer));
            id.insert("sub".into(), json!(g.user_id.as_str()));
            id.insert("aud".into(), json!(client.id));
            id.insert("azp".into(), json!(client.id));
            id.insert("exp".into(), json!(now + secs(self.settings.id_token_ttl)));
            id.insert("iat".into(), json!(now));
            id.insert("auth_time".into(), json!(g.auth_time));
            if let Some(n) = &g.nonce {
                id.insert("nonce".into(), json!(n));
            }
            id.insert("at_hash".into(), json!(jwt::half_hash(&access_token)));
            id.insert("sid".into(), json!(g.sid));
            if let Some(acr) = &g.acr {
                id.insert("acr".into(), json!(acr));
            }
            id.insert("amr".into(), json!(g.amr));
            if scopes.contains(&"email") {
                id.insert("email".into(), json!(user.email.as_str()));
                id.insert("email_verified".into(), json!(email_verified));
            }
            if scopes.contains(&"groups") {
                id.insert("groups".into(), json!(groups));
            }
            if scopes.contains(&"profile") && !user.name.is_empty() {
                id.insert("name".into(), json!(user.name));
            }
            Some(self.sign_for(client, "JWT", &Value::Object(id))?)
        } else {
            None
        };

        // The refresh token's record is returned, not stored: the caller stores it in the
        // same transaction as whatever it spends (a code, or the previous refresh token).
        let (refresh_token, refresh_record) = match refresh_family {
            Some((family_id, absolute)) if client.allows(Grant::RefreshToken) => {
                let token = self.random_token();
                let idle = now.saturating_add(secs(
                    client
                        .refresh_idle_ttl
                        .unwrap_or(self.settings.refresh_idle_ttl),
                ));
                let record = RefreshRecord {
                    token_hash: sha256(&token),
                    family_id,
                    client_id: client.id.clone(),
                    user_id: g.user_id.clone(),
                    sid: g.sid.clone(),
                    scope: g.scope.clone(),
                    auth_time: g.auth_time,
                    acr: g.acr.clone(),
                    amr: g.amr.clone(),
                    created_at: now,
                    idle_expires_at: idle.min(absolute),
                    expires_at: absolute,
                    used_at_ms: None,
                };
                (Some(token), Some(record))
            }
            _ => (None, None),
        };
        let response = TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: g.scope.clone(),
            id_token,
            refresh_token,
        };
        Ok((response, refresh_record))
    }

    /// `grant_type=refresh_token`: rotation with reuse detection and a grace window.
    pub fn refresh(
        &self,
        client: &Client,
        token: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        client.require(Grant::RefreshToken)?;
        let now = self.now();
        let hash = sha256(token);
        let rec = self
            .store
            .refresh_token(&hash)?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown refresh token".into()))?;
        if rec.client_id != client.id {
            return Err(OAuthError::InvalidGrant(
                "refresh token was issued to another client".into(),
            ));
        }
        if now >= rec.expires_at || now >= rec.idle_expires_at {
            return Err(OAuthError::InvalidGrant("refresh token expired".into()));
        }
        // A token spent at or before this cut-off is being reused; one spent after it is a
        // concurrent refresh (two tabs) inside the grace window, and is answered too. In
        // milliseconds: a grace of 0 answers no second use at all, even in the same second.
        let now_ms = self.clock.now_millis();
        let grace_ms =
            i64::try_from(self.settings.refresh_reuse_grace.as_millis()).unwrap_or(i64::MAX);
        let reuse_cutoff_ms = now_ms.saturating_sub(grace_ms);
        if rec.used_at_ms.is_some_and(|t| t <= reuse_cutoff_ms) {
            return Err(self.reuse_detected(client, &rec)?);
        }
        let session = self.store.session_by_sid(&rec.sid)?;
        let Some(session) = session.filter(|s| now < s.expires_at) else {
            self.store.delete_refresh_family(&rec.family_id)?;
            return Err(OAuthError::InvalidGrant("the session has ended".into()));
        };
        let granted: Vec<&str> = rec.scope.split_whitespace().collect();
        let scope = match scope {
            Some(s) => {
                let asked: Vec<&str> = s.split_whitespace().collect();
                if asked.iter().any(|a| !granted.contains(a)) {
                    return Err(OAuthError::InvalidScope(
                        "a refresh cannot widen the scope".into(),
                    ));
                }
                asked.join(" ")
            }
            None => rec.scope.clone(),
        };
        let grantee = Grantee {
            user_id: rec.user_id.clone(),
            sid: rec.sid.clone(),
            scope,
            auth_time: rec.auth_time,
            acr: rec.acr.clone(),
            amr: rec.amr.clone(),
            nonce: None,
        };
        let (response, refresh) = self.user_tokens(
            client,
            &grantee,
            self.grant_jti(&rec.family_id),
            Some((rec.family_id.clone(), rec.expires_at)),
            true,
        )?;
        let new = refresh
            .ok_or_else(|| OAuthError::ServerError("refresh grant without refresh token".into()))?;
        // One transaction: spend the old token, store the new one, and count the refresh as
        // activity of the session (an app refreshing for the user keeps it from going idle).
        match self
            .store
            .rotate_refresh(&hash, now_ms, reuse_cutoff_ms, &new, session.key)?
        {
            Rotation::Rotated => {
                self.audit.record(
                    Event::new(EventKind::TokenRefreshed)
                        .client(client.id.as_str())
                        .user(rec.user_id.as_str())
                        .sid(rec.sid.as_str()),
                );
                Ok(response)
            }
            Rotation::ReuseDetected => Err(self.reuse_detected(client, &rec)?),
        }
    }

    /// A spent refresh token came back: its family is gone (the live token too).
    fn reuse_detected(
        &self,
        client: &Client,
        rec: &RefreshRecord,
    ) -> Result<OAuthError, OAuthError> {
        let n = self.store.delete_refresh_family(&rec.family_id)?;
        tracing::warn!(client_id = %client.id, user_id = %rec.user_id, revoked = n, "refresh token reuse detected; family revoked");
        self.audit.record(
            Event::new(EventKind::RefreshReuseDetected)
                .client(client.id.as_str())
                .user(rec.user_id.as_str())
                .sid(rec.sid.as_str()),
        );
        // A stolen token may be in use elsewhere: everything of this user ends (a security event).
        self.revoke_user(&rec.user_id, "refresh_token_reuse")?;
        Ok(OAuthError::InvalidGrant(
            "refresh token already used".into(),
        ))
    }

    /// Revoke-all on a security event: the user's token epoch moves to now (every user token
    /// issued before is inactive at introspection and userinfo, even unexpired), and every
    /// session ends with its refresh tokens, each app that took part being told by back-channel
    /// logout. Returns the number of sessions ended.
    pub fn revoke_user(&self, user: &UserId, reason: &str) -> Result<usize, OAuthError> {
        let now = self.now();
        self.store.set_tokens_valid_after(user, now)?;
        let sessions = self.store.sessions_of_user(user)?;
        for s in &sessions {
            self.end_session_record(s, reason)?;
        }
        tracing::warn!(user_id = %user, reason, sessions = sessions.len(), "all sessions and tokens of the user revoked");
        self.audit.record(
            Event::new(EventKind::UserRevoked)
                .user(user.as_str())
                .reason(reason),
        );
        Ok(sessions.len())
    }

    /// Ends one stored session everywhere: the record, its refresh tokens, and back-channel
    /// logout to its apps.
    pub fn end_session_record(&self, s: &SessionRecord, reason: &str) -> Result<usize, OAuthError> {
        self.store.delete_session(&s.key)?;
        self.store.delete_refresh_for_sid(&s.sid)?;
        self.session_ended(s, reason)
    }

    /// `grant_type=client_credentials`: an access token for the client itself.
    pub fn client_credentials(
        &self,
        client: &Client,
        scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.allows(Grant::ClientCredentials) || client.is_public() {
            return Err(OAuthError::UnauthorizedClient(
                "grant not allowed for this client".into(),
            ));
        }
        let scope = match scope {
            Some(s) => {
                let asked: Vec<&str> = s.split_whitespace().collect();
                if let Some(bad) = asked
                    .iter()
                    .find(|a| !client.scopes.iter().any(|c| c == *a))
                {
                    return Err(OAuthError::InvalidScope(format!(
                        "`{bad}` is not allowed for this client"
                    )));
                }
                asked.join(" ")
            }
            None => String::new(),
        };
        let now = self.now();
        let ttl = self.access_ttl(client);
        let claims = json!({
            "iss": self.settings.issuer,
            "sub": client.id,
            "aud": client.audience.clone().unwrap_or_else(|| client.id.clone()),
            "exp": now + ttl,
            "iat": now,
            "jti": self.random_token(),
            "client_id": client.id,
            "scope": scope,
        });
        let access_token = self.sign_for(client, "at+jwt", &claims)?;
        self.audit.record(
            Event::new(EventKind::TokenIssued)
                .client(client.id.as_str())
                .reason("client_credentials"),
        );
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope,
            id_token: None,
            refresh_token: None,
        })
    }

    /// Verifies one of our access tokens and that nothing has ended it since.
    pub fn active_access_token(&self, token: &str) -> Result<Map<String, Value>, OAuthError> {
        let claims = self.verified_access_token(token)?;
        let now = self.now();
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(OAuthError::InvalidToken)?;
        if now >= exp
            || claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str())
        {
            return Err(OAuthError::InvalidToken);
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or(OAuthError::InvalidToken)?;
        let sid = claims.get("sid").and_then(Value::as_str);
        // A user token's jti starts with its grant's id: a revoked grant ends it too.
        let grant = jti
            .split_once('.')
            .filter(|_| sid.is_some())
            .map(|(g, _)| Self::grant_key(g));
        let state = self.store.token_state(jti, grant.as_deref(), sid)?;
        if state.revoked {
            return Err(OAuthError::InvalidToken);
        }
        // A user's token lives only as long as its session (idle allowance: unflushed activity)
        // and only if issued since the user's last revoke-all (the token epoch).
        let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
        let live = |s: crate::storage::SessionLiveness| {
            now < s.expires_at
                && now.saturating_sub(s.last_seen) < s.idle_timeout.saturating_add(60)
                && iat >= s.tokens_valid_after
        };
        if sid.is_some() && !state.session.is_some_and(live) {
            return Err(OAuthError::InvalidToken);
        }
        Ok(claims)
    }

    /// The claims of a correctly signed `at+jwt` of ours (cached); nothing else is checked here.
    fn verified_access_token(&self, token: &str) -> Result<Map<String, Value>, OAuthError> {
        let key = sha256(token);
        let cache = || match self.verified.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(claims) = cache().get(&key) {
            return Ok(claims.clone());
        }
        let (header, claims) = jwt::verify(token, |kid| self.keys.verifier(kid))
            .map_err(|_| OAuthError::InvalidToken)?;
        if !header.typ.is_some_and(|t| t.eq_ignore_ascii_case("at+jwt")) {
            return Err(OAuthError::InvalidToken);
        }
        let mut c = cache();
        if c.len() >= VERIFIED_CACHE {
            c.clear();
        }
        c.insert(key, claims.clone());
        Ok(claims)
    }

    /// RFC 7662. Anything not active is just `{"active": false}`.
    pub fn introspect(&self, client: &Client, token: &str) -> Result<Value, OAuthError> {
        let inactive = json!({"active": false});
        if token.matches('.').count() == 2 {
            return match self.active_access_token(token) {
                Ok(mut c) => {
                    c.insert("active".into(), json!(true));
                    c.insert("token_type".into(), json!("Bearer"));
                    Ok(Value::Object(c))
                }
                Err(OAuthError::InvalidToken) => Ok(inactive),
                Err(e) => Err(e),
            };
        }
        let now = self.now();
        let Some(rec) = self.store.refresh_token(&sha256(token))? else {
            return Ok(inactive);
        };
        let session_live = self
            .store
            .session_by_sid(&rec.sid)?
            .is_some_and(|s| now < s.expires_at);
        let active = rec.client_id == client.id
            && rec.used_at_ms.is_none()
            && now < rec.expires_at
            && now < rec.idle_expires_at
            && session_live;
        if !active {
            return Ok(inactive);
        }
        Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": rec.client_id,
            "sub": rec.user_id.as_str(),
            "scope": rec.scope,
            "sid": rec.sid,
            "iat": rec.created_at,
            "exp": rec.expires_at.min(rec.idle_expires_at),
            "iss": self.settings.issuer,
        }))
    }

    /// What the upstream of session `sid` said at its last sign-in, for tokens with the
    /// `groups` or `email` scope: its groups, and whether it verified the user's current email
    /// (only an upstream trusted for verified email records one). Local accounts: none, false.
    fn federated_claims(
        &self,
        sid: &str,
        user: &crate::storage::User,
        scopes: &[&str],
    ) -> Result<(Vec<String>, bool), OAuthError> {
        if !scopes.contains(&"groups") && !scopes.contains(&"email") {
            return Ok((Vec::new(), false));
        }
        let Some(session) = self.store.session_by_sid(sid)? else {
            return Ok((Vec::new(), false));
        };
        let (groups, verified) = self.store.upstream_claims(&session.upstream, &user.id)?;
        Ok((groups, verified.as_deref() == Some(user.email.as_str())))
    }

    /// OIDC UserInfo for a bearer access token.
    pub fn userinfo(&self, token: &str) -> Result<Value, OAuthError> {
        let claims = self.active_access_token(token)?;
        let scope = claims.get("scope").and_then(Value::as_str).unwrap_or("");
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        if !scopes.contains(&"openid") || !claims.contains_key("sid") {
            return Err(OAuthError::InsufficientScope);
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(OAuthError::InvalidToken)?;
        let user = self
            .store
            .user_by_id(&UserId::from_stored(sub.to_owned()))?
            .filter(|u| !u.disabled)
            .ok_or(OAuthError::InvalidToken)?;
        let sid = claims
            .get("sid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (groups, email_verified) = self.federated_claims(sid, &user, &scopes)?;
        let mut out = Map::new();
        out.insert("sub".into(), json!(sub));
        if scopes.contains(&"email") {
            out.insert("email".into(), json!(user.email.as_str()));
            out.insert("email_verified".into(), json!(email_verified));
        }
        if scopes.contains(&"groups") {
            out.insert("groups".into(), json!(groups));
        }
        if scopes.contains(&"profile") && !user.name.is_empty() {
            out.insert("name".into(), json!(user.name));
        }
        Ok(Value::Object(out))
    }

    /// RFC 7009: a refresh token ends its grant (its family and the grant's access tokens);
    /// an access token is denied until it expires.
    /// Unknown or foreign tokens are ignored (the answer is the same).
    pub fn revoke(&self, client: &Client, token: &str) -> Result<(), OAuthError> {
        if token.matches('.').count() == 2 {
            if let Ok((_, claims)) = jwt::verify(token, |kid| self.keys.verifier(kid))
                && claims.get("client_id").and_then(Value::as_str) == Some(client.id.as_str())
                && let (Some(jti), Some(exp)) = (
                    claims.get("jti").and_then(Value::as_str),
                    claims.get("exp").and_then(Value::as_i64),
                )
            {
                self.store.revoke_jti(jti, exp)?;
                let mut e = Event::new(EventKind::TokenRevoked)
                    .client(client.id.as_str())
                    .reason("access_token");
                e.user_id = claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .filter(|s| *s != client.id)
                    .map(str::to_owned);
                self.audit.record(e);
            }
            return Ok(());
        }
        if let Some(rec) = self.store.refresh_token(&sha256(token))?
            && rec.client_id == client.id
        {
            self.revoke_grant(&rec.family_id)?;
            self.audit.record(
                Event::new(EventKind::TokenRevoked)
                    .client(client.id.as_str())
                    .user(rec.user_id.as_str())
                    .sid(rec.sid.as_str())
                    .reason("refresh_token"),
            );
        }
        Ok(())
    }
}
