//! Owns what an OpenID client is: its definition as written (config file or `concierge clients
//! add`) parsed into [`Client`]; exact redirect URI matching with the RFC 8252 rules for native
//! apps; secrets compared as SHA-256 (they are high-entropy, so a fast hash is right and a
//! password KDF would only slow the token endpoint). The registry that looks clients up is
//! `provider::clients`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use super::Channel;
use super::jose::Alg;
use super::policy::{MfaRequirement, OnLimit};

/// A client as written in the config file or stored by `concierge clients add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_channel")]
    pub channel: Channel,
    /// Public clients (mobile apps, SPAs) have no secret and must use PKCE.
    #[serde(default)]
    pub public: bool,
    /// Hex SHA-256 of the client secret (confidential clients).
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default = "default_auth_method")]
    pub auth_method: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    #[serde(default = "default_grants")]
    pub grant_types: Vec<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Signing algorithm of this client's ID and access tokens (default: provider.signing_alg).
    #[serde(default)]
    pub signing_alg: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub access_token_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_idle_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_absolute_ttl: Option<Duration>,
    /// `aud` of access tokens (default: the client id).
    #[serde(default)]
    pub audience: Option<String>,
    /// Concurrent sessions per user in this client's channel when signing in for it (0: no
    /// limit; default: the channel's `[session]` setting).
    #[serde(default)]
    pub max_sessions_per_user: Option<u32>,
    /// At the limit: `end_oldest` or `refuse` (default: the channel's `[session]` setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_session_limit: Option<OnLimit>,
    /// Second factor when signing in for this client: `off`, `optional`, `required`
    /// (default: `[mfa] required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaRequirement>,
}

fn default_channel() -> Channel {
    Channel::Web
}
fn default_auth_method() -> String {
    "client_secret_basic".into()
}
fn default_grants() -> Vec<String> {
    vec!["authorization_code".into(), "refresh_token".into()]
}
fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups", "offline_access"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl Grant {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authorization_code" => Some(Grant::AuthorizationCode),
            "refresh_token" => Some(Grant::RefreshToken),
            "client_credentials" => Some(Grant::ClientCredentials),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    SecretBasic,
    SecretPost,
}

/// A validated client.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub channel: Channel,
    pub auth_method: AuthMethod,
    secret_sha256: Option<[u8; 32]>,
    pub redirect_uris: Vec<Url>,
    /// `redirect_uris` as registered: what a presented redirect URI is compared with, byte for
    /// byte (RFC 9700 2.1; a parsed URL folds the host's case, default ports, dot segments).
    redirect_uri_strings: Vec<String>,
    pub post_logout_redirect_uris: Vec<Url>,
    /// As registered: what `post_logout_redirect_uri` compares with, byte for byte.
    post_logout_redirect_uri_strings: Vec<String>,
    pub backchannel_logout_uri: Option<Url>,
    pub grants: Vec<Grant>,
    pub scopes: Vec<String>,
    pub signing_alg: Option<Alg>,
    pub access_token_ttl: Option<Duration>,
    pub refresh_idle_ttl: Option<Duration>,
    pub refresh_absolute_ttl: Option<Duration>,
    pub audience: Option<String>,
    pub max_sessions_per_user: Option<u32>,
    pub on_session_limit: Option<OnLimit>,
    pub mfa: Option<MfaRequirement>,
}

/// A client definition error: `field` names the key inside the client.
#[derive(Debug, thiserror::Error)]
#[error("client `{client}`: {field}: {message}")]
pub struct ClientConfigError {
    pub client: String,
    pub field: &'static str,
    pub message: String,
}

fn is_loopback_http(u: &Url) -> bool {
    u.scheme() == "http"
        && match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        }
}

/// `http://<loopback IP>[:port]<rest>` without its port; None for anything else (another
/// scheme or host, a host name such as `localhost`, user info).
fn without_loopback_port(s: &str) -> Option<String> {
    let rest = s.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = match authority.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && h.starts_with('[') == h.ends_with(']') =>
        {
            h
        }
        _ => authority,
    };
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let loopback = ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| format!("http://{host}{tail}"))
}

impl Client {
    pub fn parse(c: &ClientConfig) -> Result<Self, ClientConfigError> {
        let err = |field: &'static str, message: String| ClientConfigError {
            client: c.id.clone(),
            field,
            message,
        };
        let id_ok = !c.id.is_empty()
            && c.id.len() <= 128
            && c.id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if !id_ok {
            return Err(err("id", "must be 1-128 of [A-Za-z0-9-_.]".into()));
        }
        let secret_sha256 = match (&c.secret_sha256, c.public) {
            (Some(_), true) => {
                return Err(err("secret_sha256", "a public client has no secret".into()));
            }
            (None, false) => {
                return Err(err(
                    "secret_sha256",
                    "a confidential client needs one (hex SHA-256 of its secret)".into(),
                ));
            }
            (None, true) => None,
            (Some(h), false) => {
                let bytes = hex::decode(h).ok().filter(|b| b.len() == 32);
                let arr: [u8; 32] = bytes
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| err("secret_sha256", "must be 64 hex characters".into()))?;
                Some(arr)
            }
        };
        let auth_method = if c.public {
            AuthMethod::None
        } else {
            match c.auth_method.as_str() {
                "client_secret_basic" => AuthMethod::SecretBasic,
                "client_secret_post" => AuthMethod::SecretPost,
                other => {
                    return Err(err(
                        "auth_method",
                        format!("`{other}`: use client_secret_basic or client_secret_post"),
                    ));
                }
            }
        };
        let mut grants = Vec::new();
        for g in &c.grant_types {
            grants.push(
                Grant::parse(g)
                    .ok_or_else(|| err("grant_types", format!("unknown grant `{g}`")))?,
            );
        }
        if c.public && grants.contains(&Grant::ClientCredentials) {
            return Err(err(
                "grant_types",
                "a public client cannot use client_credentials".into(),
            ));
        }
        // One rule for every URI the broker sends a browser or a request to: https, http on
        // loopback, or (native apps, browser redirects only) a reverse-DNS private-use scheme.
        let parse_uri = |field: &'static str,
                         r: &str,
                         browser: bool|
         -> Result<Url, ClientConfigError> {
            let u = Url::parse(r).map_err(|e| err(field, format!("`{r}`: {e}")))?;
            if u.fragment().is_some() {
                return Err(err(field, format!("`{r}` must not have a fragment")));
            }
            let ok = match u.scheme() {
                "https" => true,
                "http" => is_loopback_http(&u) || u.host_str() == Some("localhost"),
                // Private-use URI schemes (RFC 8252 7.1) for native apps only.
                s => browser && c.channel == Channel::Mobile && s.contains('.'),
            };
            if !ok {
                return Err(err(
                    field,
                    format!(
                        "`{r}`: use https, http on loopback, or (mobile) a reverse-DNS private-use scheme"
                    ),
                ));
            }
            Ok(u)
        };
        let redirect_uris = c
            .redirect_uris
            .iter()
            .map(|r| parse_uri("redirect_uris", r, true))
            .collect::<Result<Vec<_>, _>>()?;
        if grants.contains(&Grant::AuthorizationCode) && redirect_uris.is_empty() {
            return Err(err(
                "redirect_uris",
                "the authorization_code grant needs at least one".into(),
            ));
        }
        let post_logout_redirect_uris = c
            .post_logout_redirect_uris
            .iter()
            .map(|r| parse_uri("post_logout_redirect_uris", r, true))
            .collect::<Result<Vec<_>, _>>()?;
        let backchannel_logout_uri = c
            .backchannel_logout_uri
            .as_deref()
            .map(|u| parse_uri("backchannel_logout_uri", u, false))
            .transpose()?;
        for (field, d) in [
            ("access_token_ttl", c.access_token_ttl),
            ("refresh_idle_ttl", c.refresh_idle_ttl),
            ("refresh_absolute_ttl", c.refresh_absolute_ttl),
        ] {
            if d.is_some_and(|d| d.as_secs() == 0) {
                return Err(err(field, "must be at least 1s".into()));
            }
        }
        let signing_alg = c
            .signing_alg
            .as_deref()
            .map(|a| {
                Alg::parse(a)
                    .ok_or_else(|| err("signing_alg", format!("`{a}`: use RS256, ES256 or EdDSA")))
            })
            .transpose()?;
        Ok(Client {
            id: c.id.clone(),
            name: if c.name.is_empty() {
                c.id.clone()
            } else {
                c.name.clone()
            },
            channel: c.channel,
            auth_method,
            secret_sha256,
            redirect_uris,
            redirect_uri_strings: c.redirect_uris.clone(),
            post_logout_redirect_uris,
            post_logout_redirect_uri_strings: c.post_logout_redirect_uris.clone(),
            backchannel_logout_uri,
            grants,
            scopes: c.scopes.clone(),
            signing_alg,
            access_token_ttl: c.access_token_ttl,
            refresh_idle_ttl: c.refresh_idle_ttl,
            refresh_absolute_ttl: c.refresh_absolute_ttl,
            audience: c.audience.clone(),
            max_sessions_per_user: c.max_sessions_per_user,
            on_session_limit: c.on_session_limit,
            mfa: c.mfa,
        })
    }

    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }

    pub fn allows(&self, g: Grant) -> bool {
        self.grants.contains(&g)
    }

    /// The admin scope is for clients acting as themselves (client_credentials): a client with
    /// a user grant (authorization_code, refresh_token) may not be allowed it, or a user's
    /// sign-in at that app would carry admin rights.
    pub fn check_admin_scope(&self, admin_scope: &str) -> Result<(), ClientConfigError> {
        let user_grant = self.allows(Grant::AuthorizationCode) || self.allows(Grant::RefreshToken);
        if user_grant && self.scopes.iter().any(|s| s == admin_scope) {
            return Err(ClientConfigError {
                client: self.id.clone(),
                field: "scopes",
                message: format!(
                    "the admin scope `{admin_scope}` is for client_credentials-only clients; \
                     this client has a user grant (authorization_code or refresh_token)"
                ),
            });
        }
        Ok(())
    }

    /// The redirect URIs as registered (the strings exact matching compares with).
    pub fn redirect_uri_strings(&self) -> &[String] {
        &self.redirect_uri_strings
    }

    /// The registered redirect URI `requested` names, compared as strings byte for byte (RFC
    /// 9700 2.1), except that for native apps a registered loopback IP redirect matches any port
    /// (RFC 8252 7.3).
    pub fn redirect_uri(&self, requested: &str) -> Option<Url> {
        let native = self.channel == Channel::Mobile || self.is_public();
        let found = self.redirect_uri_strings.iter().any(|reg| {
            reg == requested
                || native
                    && without_loopback_port(reg)
                        .is_some_and(|r| without_loopback_port(requested) == Some(r))
        });
        let req = Url::parse(requested).ok().filter(|_| found)?;
        req.fragment().is_none().then_some(req)
    }

    /// The registered post-logout redirect URI `requested` names, compared as strings byte for
    /// byte like redirect URIs (RFC 9700 2.1): no case folding, no added slash.
    pub fn post_logout_redirect_uri(&self, requested: &str) -> Option<Url> {
        self.post_logout_redirect_uri_strings
            .iter()
            .any(|r| r == requested)
            .then(|| Url::parse(requested).ok())
            .flatten()
    }

    /// Checks a presented secret in constant time.
    pub fn secret_matches(&self, presented: &str) -> bool {
        match &self.secret_sha256 {
            Some(expected) => {
                let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                bool::from(got.ct_eq(expected))
            }
            None => false,
        }
    }
}

/// Hex SHA-256 of a client secret, as `secret_sha256` wants it.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> ClientConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn native_apps_get_any_loopback_port_but_nothing_else() {
        let c = Client::parse(&cfg(serde_json::json!({
            "id": "app", "public": true, "channel": "mobile",
            "redirect_uris": ["http://127.0.0.1/cb", "com.example.app:/oauth2redirect", "https://app.example.com/cb"]
        })))
        .unwrap();
        assert!(c.redirect_uri("http://127.0.0.1:51234/cb").is_some());
        assert!(c.redirect_uri("http://127.0.0.1/cb").is_some());
        assert!(c.redirect_uri("http://127.0.0.1:51234/other").is_none());
        assert!(c.redirect_uri("http://localhost:51234/cb").is_none());
        assert!(c.redirect_uri("com.example.app:/oauth2redirect").is_some());
        assert!(c.redirect_uri("http://127.0.0.1:51234/cb?").is_none());
        assert!(c.redirect_uri("http://127.0.0.1:/cb").is_none());
        assert!(c.redirect_uri("http://user@127.0.0.1:51234/cb").is_none());
        assert!(c.redirect_uri("com.example.evil:/oauth2redirect").is_none());
        assert!(c.redirect_uri("https://app.example.com/cb").is_some());
        assert!(c.redirect_uri("https://app.example.com/cb?x=1").is_none());
        assert!(c.redirect_uri("https://app.example.com/cb#frag").is_none());
        assert!(
            c.redirect_uri("https://app.example.com:8443/cb").is_none(),
            "ports matter off loopback"
        );
        // Compared as strings (RFC 9700 2.1): what a URL parser would normalise does not match.
        for near in [
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com/x/../cb",
            "https://app.example.com/%63b",
            "HTTPS://app.example.com/cb",
            "com.example.app:/oauth2redirect/",
        ] {
            assert!(c.redirect_uri(near).is_none(), "{near}");
        }
        let v6 = Client::parse(&cfg(serde_json::json!({
            "id": "n6", "public": true, "redirect_uris": ["http://[::1]/cb"]
        })))
        .unwrap();
        assert!(v6.redirect_uri("http://[::1]:8080/cb").is_some());
        assert!(v6.redirect_uri("http://[::1]:8080/cb2").is_none());
        assert!(c.is_public());
    }

    #[test]
    fn definitions_are_checked() {
        let bad = [
            serde_json::json!({"id": "a", "redirect_uris": ["https://x/cb"]}),
            serde_json::json!({"id": "a", "public": true, "secret_sha256": "00", "redirect_uris": ["https://x/cb"]}),
            serde_json::json!({"id": "a", "public": true, "redirect_uris": ["http://evil.example/cb"]}),
            serde_json::json!({"id": "a", "public": true, "redirect_uris": ["myapp:/cb"]}),
            serde_json::json!({"id": "a", "public": true}),
            serde_json::json!({"id": "a b", "public": true, "redirect_uris": ["https://x/cb"]}),
            serde_json::json!({"id": "a", "public": true, "grant_types": ["client_credentials"]}),
            serde_json::json!({"id": "a", "public": true, "signing_alg": "HS256", "redirect_uris": ["https://x/cb"]}),
            serde_json::json!({"id": "a", "public": true, "redirect_uris": ["https://x/cb"], "post_logout_redirect_uris": ["http://evil.example/"]}),
            serde_json::json!({"id": "a", "public": true, "redirect_uris": ["https://x/cb"], "backchannel_logout_uri": "ftp://x/bcl"}),
            serde_json::json!({"id": "a", "public": true, "redirect_uris": ["https://x/cb"], "access_token_ttl": "0s"}),
        ];
        for b in bad {
            assert!(Client::parse(&cfg(b.clone())).is_err(), "{b}");
        }
    }

    #[test]
    fn post_logout_redirect_uris_match_byte_for_byte() {
        let c = Client::parse(&cfg(serde_json::json!({
            "id": "a", "public": true, "redirect_uris": ["https://x.example/cb"],
            "post_logout_redirect_uris": ["https://App.example/bye", "https://x.example"]
        })))
        .unwrap();
        assert!(
            c.post_logout_redirect_uri("https://App.example/bye")
                .is_some()
        );
        assert!(
            c.post_logout_redirect_uri("https://app.example/bye")
                .is_none(),
            "case folded"
        );
        assert!(c.post_logout_redirect_uri("https://x.example").is_some());
        assert!(
            c.post_logout_redirect_uri("https://x.example/").is_none(),
            "slash added"
        );
        assert!(
            c.post_logout_redirect_uri("https://x.example:443")
                .is_none()
        );
    }

    #[test]
    fn secrets_compare_by_hash() {
        let c = Client::parse(&cfg(serde_json::json!({
            "id": "svc", "secret_sha256": hash_secret("s3cret-s3cret"), "grant_types": ["client_credentials"]
        })))
        .unwrap();
        assert!(c.secret_matches("s3cret-s3cret"));
        assert!(!c.secret_matches("s3cret-s3creT"));
        assert!(!c.secret_matches(""));
    }
}
