//! Owns the configuration file as written ([`RawSettings`] and its sections): serde structs
//! with their defaults, before the environment overlay and validation.

use super::mfa;
use crate::domain::Locale;
use crate::domain::client::ClientConfig;
use crate::domain::policy::{MfaRequirement, OnLimit};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The file as written by the operator (and overlaid by the environment), before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
    pub data_dir: PathBuf,
    pub server: RawServer,
    pub database: RawDatabase,
    pub session: RawSession,
    pub ui: RawUi,
    pub log: RawLog,
    pub provider: RawProvider,
    pub rate_limit: RawRateLimit,
    pub audit: RawAudit,
    pub admin: RawAdmin,
    /// Multi-factor authentication: policy default, limits, plugins (`[mfa]`).
    pub mfa: mfa::RawMfa,
    /// Clients of the OpenID provider (`[[clients]]` tables).
    pub clients: Vec<ClientConfig>,
    /// Service providers of the SAML IdP (`[[saml_apps]]` tables).
    pub saml_apps: Vec<super::saml_apps::RawSamlApp>,
    /// How old the metadata of an SP registered from a URL (`concierge saml-apps add
    /// --metadata-url`) may get before it is fetched again (default 24h).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub saml_apps_metadata_refresh: Option<Duration>,
    /// The IdP wants every AuthnRequest signed (its metadata says `WantAuthnRequestsSigned`):
    /// every SP must have a signing certificate.
    #[serde(default)]
    pub saml_idp_want_authn_requests_signed: bool,
    /// Upstream identity providers (`[[upstreams]]` tables), in login-page order.
    pub upstreams: Vec<RawUpstream>,
    /// Outbound HTTPS to upstreams and apps (`[http]`).
    pub http: RawHttp,
}

/// `[http]`: what the broker's requests to other parties trust.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// A PEM bundle of CA certificates trusted besides the public roots and the system store
    /// (upstreams and apps behind a private CA).
    pub ca_file: Option<PathBuf>,
}

/// One `[[upstreams]]` table as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// `oidc`.
    pub kind: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub client_secret: Option<SecretString>,
    /// A file holding `client_secret` (one trailing newline is removed).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_upstream_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Home-realm discovery: emails of these domains are sent to this upstream.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Second factor for users of this upstream (raises the client's and `[mfa]`'s setting).
    #[serde(default)]
    pub mfa: Option<MfaRequirement>,
    /// Count the upstream's own MFA (its `amr`, or an `acr` in `mfa_acr_values`) as the factor.
    #[serde(default)]
    pub trust_upstream_mfa: bool,
    #[serde(default)]
    pub mfa_acr_values: Vec<String>,
    // kind = "saml" (validated in `config/saml.rs`).
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    #[serde(default)]
    pub metadata_url: Option<String>,
    #[serde(default)]
    pub metadata_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub metadata_refresh: Option<Duration>,
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub signing_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub decryption_key_file: Option<PathBuf>,
    #[serde(default)]
    pub decryption_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub name_id_format: Option<String>,
    #[serde(default)]
    pub allow_idp_initiated: bool,
    #[serde(default)]
    pub attributes: SamlAttributeMapping,
    // kind = "oidc": client authentication at the token endpoint (validated in
    // `config/oidc_auth.rs`).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub client_assertion_key_file: Option<PathBuf>,
    #[serde(default)]
    pub client_assertion_kid: Option<String>,
}

fn default_upstream_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// Which upstream claims become the broker's identity fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub subject: String,
    pub email: String,
    pub name: String,
    pub groups: String,
    /// Claims kept as text with the user's link (a string as it is, a number or boolean as
    /// JSON writes it), for MFA plugins granted `claims` (e.g. a privacyIDEA user name).
    pub keep: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            email: "email".into(),
            name: "name".into(),
            groups: "groups".into(),
            keep: Vec::new(),
        }
    }
}

/// Which SAML attributes (by `Name` or `FriendlyName`) become the identity's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlAttributeMapping {
    /// Default: the NameID.
    pub subject: Option<String>,
    pub email: String,
    pub name: String,
    pub groups: String,
    /// Attributes (by `Name` or `FriendlyName`) whose first value is kept with the user's link,
    /// for MFA plugins granted `claims`.
    pub keep: Vec<String>,
}

impl Default for SamlAttributeMapping {
    fn default() -> Self {
        Self {
            subject: None,
            email: "mail".into(),
            name: "displayName".into(),
            groups: "groups".into(),
            keep: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProvider {
    /// Default: server.public_url without a trailing slash.
    pub issuer: Option<String>,
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub id_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_idle_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_absolute_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    pub signing_alg: String,
    /// 32 random bytes, base64: encrypts signing keys at rest. Required with PostgreSQL; with
    /// SQLite a key file in data_dir is created when unset.
    #[serde(skip_serializing)]
    pub key_encryption_key: Option<SecretString>,
    /// A file holding `key_encryption_key` (one trailing newline is removed).
    pub key_encryption_key_file: Option<PathBuf>,
    /// Earlier key-encryption keys (base64 of 32 bytes each): they only open values sealed
    /// under them, until `concierge keys rewrap` has sealed everything under the current key.
    #[serde(skip_serializing)]
    pub previous_key_encryption_keys: Vec<SecretString>,
    /// Files each holding one previous key-encryption key.
    pub previous_key_encryption_key_files: Vec<PathBuf>,
    /// After `concierge keys rotate-root`, how long the previous root secret's keys still
    /// accept CSRF tokens and sign-in journeys made before the rotation.
    #[serde(with = "humantime_serde")]
    pub root_overlap: Duration,
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// How often each instance reloads signing keys from the database (rotation by another
    /// instance or the CLI is served within this).
    #[serde(with = "humantime_serde")]
    pub key_reload_interval: Duration,
}

impl Default for RawProvider {
    fn default() -> Self {
        Self {
            issuer: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            id_token_ttl: Duration::from_secs(15 * 60),
            code_ttl: Duration::from_secs(60),
            refresh_idle_ttl: Duration::from_secs(7 * 86400),
            refresh_absolute_ttl: Duration::from_secs(30 * 86400),
            refresh_reuse_grace: Duration::from_secs(5),
            signing_alg: "RS256".into(),
            key_encryption_key: None,
            key_encryption_key_file: None,
            previous_key_encryption_keys: Vec::new(),
            previous_key_encryption_key_files: Vec::new(),
            root_overlap: Duration::from_secs(60 * 60),
            jwks_max_age: Duration::from_secs(600),
            key_reload_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub bind: String,
    pub public_url: Option<String>,
    pub max_form_bytes: usize,
    pub workers: Option<usize>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            public_url: None,
            max_form_bytes: 16 * 1024,
            workers: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    pub url: String,
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// PostgreSQL: the longest a request waits for a connection (connecting included).
    #[serde(with = "humantime_serde")]
    pub pool_timeout: Duration,
    /// PostgreSQL: `statement_timeout` of every connection.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How long `/readyz` waits for the database before it answers "not ready".
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            pool_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    pub cookie_name: String,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub touch_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// At most this many live sessions per user (0: no limit).
    pub max_per_user: u32,
    /// At the limit: `end_oldest` (the oldest session ends) or `refuse` (the user picks one to end).
    pub on_limit: OnLimit,
    /// Overrides for sessions of each channel (`[session.web]`, `[session.mobile]`, `[session.api]`).
    pub web: RawChannelSession,
    pub mobile: RawChannelSession,
    pub api: RawChannelSession,
}

/// A channel's own session policy; unset keys take the `[session]` value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawChannelSession {
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub absolute_timeout: Option<Duration>,
    /// Limit counted over this channel's sessions of the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_limit: Option<OnLimit>,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            cookie_name: "concierge_session".into(),
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            touch_interval: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(60),
            max_per_user: 0,
            on_limit: OnLimit::EndOldest,
            web: RawChannelSession::default(),
            mobile: RawChannelSession::default(),
            api: RawChannelSession::default(),
        }
    }
}

/// `[rate_limit]`: limits per instance (GCRA), lockout shared through the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    /// Proxies whose `X-Forwarded-For` is believed (addresses or networks, e.g. `10.0.0.0/8`).
    pub trusted_proxies: Vec<String>,
    pub login_per_ip: String,
    pub login_per_account: String,
    pub mfa_per_ip: String,
    pub mfa_per_account: String,
    pub token_per_client: String,
    /// Answers from upstreams (OIDC callback, SAML ACS and Single Logout) per client address.
    pub callback_per_ip: String,
    /// Sign-in journeys started per client address (each is a stored login transaction).
    pub journey_per_ip: String,
    /// Second-factor messages (email, SMS, push) sent per user.
    pub mfa_send_per_account: String,
    /// Polls of a waiting second factor (an approval on a phone) per user.
    pub mfa_poll_per_account: String,
    /// Failed sign-ins (within `failure_window`) before the account is locked; 0: never.
    pub lockout_after: u32,
    #[serde(with = "humantime_serde")]
    pub lockout_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub lockout_max_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            login_per_ip: "30/1m".into(),
            login_per_account: "10/1m".into(),
            mfa_per_ip: "30/1m".into(),
            mfa_per_account: "10/1m".into(),
            token_per_client: "1000/1s".into(),
            callback_per_ip: "30/1m".into(),
            journey_per_ip: "60/1m".into(),
            mfa_send_per_account: "5/10m".into(),
            mfa_poll_per_account: "40/1m".into(),
            lockout_after: 5,
            lockout_delay: Duration::from_secs(30),
            lockout_max_delay: Duration::from_secs(15 * 60),
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// Audit rows older than this are deleted by the sweeper.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often buffered audit rows are written.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(90 * 86_400),
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// `[admin]`: the admin REST API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// The scope an access token must carry to call `/admin/v1`.
    pub scope: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            scope: "concierge:admin".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUi {
    pub templates_dir: Option<PathBuf>,
    pub default_locale: Locale,
    pub product_name: String,
}

impl Default for RawUi {
    fn default() -> Self {
        Self {
            templates_dir: None,
            default_locale: Locale::En,
            product_name: "Concierge".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: LogFormat,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}
