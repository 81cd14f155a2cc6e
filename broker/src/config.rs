//! Owns the configuration: one TOML file, every key overridable by `CONCIERGE__SECTION__KEY`
//! environment variables, validated once at start into typed [`Settings`] whose errors name the
//! key and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::Locale;
use crate::domain::client::{Client, ClientConfig};
use crate::domain::jose::Alg;
use crate::domain::policy::{ChannelPolicy, MfaRequirement, OnLimit, SessionLimit};
use provider::ProviderSettings;

pub mod http;
pub mod mfa;
mod oidc_auth;
pub mod provider;
mod saml;
pub(crate) mod secret;
pub use oidc_auth::UpstreamClientAuth;
pub use saml::{
    NameIdFormat, SamlAttributeMapping, SamlMetadataSource, SamlUpstreamConfig, SpKeyPair,
};

pub const ENV_PREFIX: &str = "CONCIERGE__";

/// Why the configuration was refused. Always names the file or variable and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration in {origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

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

/// One upstream identity provider, validated.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Stable id: in URLs (`/upstream/{id}/…`) and in the link table. `[a-z0-9_-]`, not `local`.
    pub id: String,
    /// Button label on the login page (default: the id).
    pub name: Option<String>,
    /// Link a first login to an existing account with the same email, when the upstream says the
    /// email is verified. Only for upstreams you trust to verify emails (default: false; the user
    /// then proves the existing account by signing in with it).
    pub link_by_verified_email: bool,
    /// Lower-case email domains routed to this upstream.
    pub domains: Vec<String>,
    pub mfa: Option<MfaRequirement>,
    pub trust_upstream_mfa: bool,
    pub mfa_acr_values: Vec<String>,
    pub kind: UpstreamKind,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once at boot
pub enum UpstreamKind {
    Oidc(OidcUpstreamConfig),
    Saml(Box<SamlUpstreamConfig>),
}

/// `kind = "oidc"`.
#[derive(Debug, Clone)]
pub struct OidcUpstreamConfig {
    /// The upstream's issuer; `{issuer}/.well-known/openid-configuration` is read.
    pub issuer: String,
    pub client_id: String,
    /// Empty with `private_key_jwt`.
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub claims: ClaimMapping,
    /// How the broker authenticates at the upstream's token endpoint.
    pub client_auth: UpstreamClientAuth,
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
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            email: "email".into(),
            name: "name".into(),
            groups: "groups".into(),
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

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err("sqlite URL needs a file path, e.g. sqlite://data/concierge.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(rest)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Url::parse(raw).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(raw.to_owned()));
        }
        Err("must start with sqlite:// or postgres://".into())
    }

    /// A form safe to log: the password of a PostgreSQL URL is masked.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(u) => match Url::parse(u) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    url.to_string()
                }
                Err(_) => "postgres://<unparseable>".into(),
            },
        }
    }
}

/// Validated, typed settings: what the rest of the broker reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// True when no config file was given: the embedded default ("demo mode").
    pub demo: bool,
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub public_url: Url,
    pub max_form_bytes: usize,
    pub workers: Option<usize>,
    pub database: DatabaseUrl,
    pub pool_size: u32,
    pub busy_timeout: Duration,
    /// PostgreSQL: checkout wait and statement timeout (`[database]`).
    pub pool_timeout: Duration,
    pub statement_timeout: Duration,
    /// `/readyz`'s own wait for the database.
    pub ready_timeout: Duration,
    pub session: SessionSettings,
    pub ui: RawUi,
    pub log: RawLog,
    pub provider: ProviderSettings,
    /// `None`: use (or create) the key file in data_dir (SQLite only).
    pub key_encryption_key: Option<std::sync::Arc<SecretBox<[u8; 32]>>>,
    pub clients: Vec<Client>,
    pub limits: crate::domain::limits::Limits,
    pub audit: RawAudit,
    pub admin: RawAdmin,
    pub upstreams: Vec<UpstreamConfig>,
    pub mfa: mfa::MfaSettings,
    /// Trust anchors of outbound HTTPS (`[http] ca_file`).
    pub http: http::TrustAnchors,
    /// The file these settings came from (`None`: the embedded default); plugin hot reload
    /// re-reads its `[mfa]` pins.
    pub config_path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub touch_interval: Duration,
    pub sweep_interval: Duration,
    pub web: ChannelPolicy,
    pub mobile: ChannelPolicy,
    pub api: ChannelPolicy,
}

impl SessionSettings {
    pub fn channel(&self, c: crate::domain::Channel) -> &ChannelPolicy {
        match c {
            crate::domain::Channel::Web => &self.web,
            crate::domain::Channel::Mobile => &self.mobile,
            crate::domain::Channel::Api => &self.api,
        }
    }
}

impl Settings {
    /// Served over https: cookies get `Secure` and the `__Host-` prefix, HSTS is sent.
    pub fn https(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// Loads the file (or the embedded default when `path` is `None`), overlays `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (origin, mut tree) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                        path: p.to_owned(),
                        message: e.to_string(),
                    })?;
                (format!("config file {}", p.display()), table)
            }
            None => (
                "the embedded default configuration".to_owned(),
                toml::Table::new(),
            ),
        };
        let from_env = overlay_env(&mut tree, env);
        let raw: RawSettings =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                let key = e.path().to_string();
                let origin = origin_of(&key, &from_env, &origin);
                ConfigError::Invalid {
                    origin,
                    key,
                    message: e.into_inner().to_string(),
                }
            })?;
        let mut settings = Self::validate(raw, path.is_none(), |key| {
            origin_of(key, &from_env, &origin)
        })?;
        settings.config_path = path.map(Path::to_path_buf);
        Ok(settings)
    }

    fn validate(
        raw: RawSettings,
        demo: bool,
        origin: impl Fn(&str) -> String,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin(key),
            key: key.to_owned(),
            message,
        };
        let bind: SocketAddr = raw.server.bind.parse().map_err(|_| {
            invalid(
                "server.bind",
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    raw.server.bind
                ),
            )
        })?;
        if demo && !bind.ip().is_loopback() {
            return Err(invalid(
                "server.bind",
                format!(
                    "demo mode (no config file) only listens on a loopback address, not {bind}; \
                     write a config file to serve other hosts"
                ),
            ));
        }
        let public_url = match &raw.server.public_url {
            Some(u) => Url::parse(u)
                .map_err(|e| invalid("server.public_url", format!("`{u}` is not a URL: {e}")))?,
            None => Url::parse(&format!("http://{bind}"))
                .map_err(|e| invalid("server.public_url", e.to_string()))?,
        };
        match public_url.scheme() {
            "https" => {}
            "http" => {
                let loopback = match public_url.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(d)) => d == "localhost",
                    None => false,
                };
                if !loopback {
                    return Err(invalid(
                        "server.public_url",
                        "plain http is only allowed on a loopback address; use https".into(),
                    ));
                }
            }
            other => {
                return Err(invalid(
                    "server.public_url",
                    format!("scheme must be http or https, not {other}"),
                ));
            }
        }
        if raw.server.max_form_bytes < 1024 || raw.server.max_form_bytes > 1024 * 1024 {
            return Err(invalid(
                "server.max_form_bytes",
                "must be between 1024 and 1048576".into(),
            ));
        }
        if let Some(w) = raw.server.workers
            && !(1..=512).contains(&w)
        {
            return Err(invalid(
                "server.workers",
                "must be between 1 and 512".into(),
            ));
        }
        let data_dir = if raw.data_dir.as_os_str().is_empty() {
            PathBuf::from("concierge-data")
        } else {
            raw.data_dir.clone()
        };
        let database = if raw.database.url.is_empty() {
            DatabaseUrl::Sqlite(data_dir.join("concierge.db"))
        } else {
            DatabaseUrl::parse(&raw.database.url).map_err(|m| invalid("database.url", m))?
        };
        if raw.database.pool_size == 0 || raw.database.pool_size > 512 {
            return Err(invalid(
                "database.pool_size",
                "must be between 1 and 512".into(),
            ));
        }
        for (key, d, max) in [
            ("database.pool_timeout", raw.database.pool_timeout, 60),
            (
                "database.statement_timeout",
                raw.database.statement_timeout,
                600,
            ),
            ("database.ready_timeout", raw.database.ready_timeout, 30),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(max) {
                return Err(invalid(key, format!("must be between 100ms and {max}s")));
            }
        }
        let s = &raw.session;
        let name_ok = !s.cookie_name.is_empty()
            && s.cookie_name.len() <= 64
            && s.cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok || s.cookie_name.starts_with("__") {
            return Err(invalid(
                "session.cookie_name",
                "must be 1-64 of [A-Za-z0-9_-], without a __ prefix (added automatically)".into(),
            ));
        }
        for (key, d) in [
            ("session.idle_timeout", s.idle_timeout),
            ("session.absolute_timeout", s.absolute_timeout),
            ("session.touch_interval", s.touch_interval),
            ("session.sweep_interval", s.sweep_interval),
        ] {
            if d.as_secs() == 0 {
                return Err(invalid(key, "must be at least 1s".into()));
            }
        }
        if s.idle_timeout > s.absolute_timeout {
            return Err(invalid(
                "session.idle_timeout",
                "must not be longer than session.absolute_timeout".into(),
            ));
        }
        let channel_policy =
            |name: &str, c: &RawChannelSession| -> Result<ChannelPolicy, ConfigError> {
                let idle = c.idle_timeout.unwrap_or(s.idle_timeout);
                let absolute = c.absolute_timeout.unwrap_or(s.absolute_timeout);
                if idle.as_secs() == 0 || absolute.as_secs() == 0 {
                    return Err(invalid(
                        &format!("session.{name}"),
                        "timeouts must be at least 1s".into(),
                    ));
                }
                if idle > absolute {
                    return Err(invalid(
                        &format!("session.{name}.idle_timeout"),
                        "must not be longer than the channel's absolute_timeout".into(),
                    ));
                }
                let limit = match (c.max_per_user, s.max_per_user) {
                    (Some(0), _) | (None, 0) => SessionLimit::None,
                    (Some(n), _) => SessionLimit::ThisChannel(n),
                    (None, n) => SessionLimit::AllChannels(n),
                };
                Ok(ChannelPolicy {
                    idle_timeout: idle,
                    absolute_timeout: absolute,
                    limit,
                    on_limit: c.on_limit.unwrap_or(s.on_limit),
                })
            };
        let web = channel_policy("web", &s.web)?;
        let mobile = channel_policy("mobile", &s.mobile)?;
        let api = channel_policy("api", &s.api)?;
        tracing_subscriber::EnvFilter::try_new(&raw.log.level)
            .map_err(|e| invalid("log.level", format!("not a valid filter: {e}")))?;
        if raw.ui.product_name.trim().is_empty() {
            return Err(invalid("ui.product_name", "must not be empty".into()));
        }
        let p = &raw.provider;
        let issuer = match &p.issuer {
            Some(i) => {
                let u = Url::parse(i)
                    .map_err(|e| invalid("provider.issuer", format!("`{i}` is not a URL: {e}")))?;
                let loopback = matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                    || matches!(u.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
                    || u.host_str() == Some("localhost");
                let scheme_ok = u.scheme() == "https" || (u.scheme() == "http" && loopback);
                // The endpoints are served at the root, so the issuer has no path.
                if !scheme_ok || u.query().is_some() || u.fragment().is_some() || u.path() != "/" {
                    return Err(invalid(
                        "provider.issuer",
                        "must be https (http only on loopback), without path, query or fragment"
                            .into(),
                    ));
                }
                i.trim_end_matches('/').to_owned()
            }
            None => public_url.as_str().trim_end_matches('/').to_owned(),
        };
        let signing_alg = Alg::parse(&p.signing_alg).ok_or_else(|| {
            invalid(
                "provider.signing_alg",
                format!("`{}`: use RS256, ES256 or EdDSA", p.signing_alg),
            )
        })?;
        for (key, d) in [
            ("provider.access_token_ttl", p.access_token_ttl),
            ("provider.id_token_ttl", p.id_token_ttl),
            ("provider.code_ttl", p.code_ttl),
            ("provider.refresh_idle_ttl", p.refresh_idle_ttl),
            ("provider.refresh_absolute_ttl", p.refresh_absolute_ttl),
        ] {
            if d.as_secs() == 0 {
                return Err(invalid(key, "must be at least 1s".into()));
            }
        }
        if p.key_reload_interval < Duration::from_secs(1)
            || p.key_reload_interval > Duration::from_secs(600)
        {
            return Err(invalid(
                "provider.key_reload_interval",
                "must be between 1s and 10m".into(),
            ));
        }
        // A new key must be in every instance's JWKS (and caches) before it signs.
        if p.jwks_max_age < Duration::from_secs(120) || p.jwks_max_age < p.key_reload_interval * 2 {
            return Err(invalid(
                "provider.jwks_max_age",
                "must be at least 2m and twice provider.key_reload_interval".into(),
            ));
        }
        if p.code_ttl > Duration::from_secs(600) {
            return Err(invalid(
                "provider.code_ttl",
                "must be at most 10m (RFC 6749 4.1.2)".into(),
            ));
        }
        let key_encryption_key = match secret::resolve(
            "provider.key_encryption_key",
            p.key_encryption_key.as_ref(),
            p.key_encryption_key_file.as_deref(),
            invalid,
        )? {
            Some(k) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(k.expose_secret().trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        invalid(
                            "provider.key_encryption_key",
                            "must be 32 bytes, base64 (e.g. `openssl rand -base64 32`)".into(),
                        )
                    })?;
                Some(std::sync::Arc::new(SecretBox::new(Box::new(bytes))))
            }
            None => None,
        };
        if key_encryption_key.is_none() && !demo && matches!(database, DatabaseUrl::Postgres(_)) {
            return Err(invalid(
                "provider.key_encryption_key",
                "is required with PostgreSQL (every instance needs the same key): `openssl rand -base64 32`".into(),
            ));
        }
        let mut clients = Vec::new();
        for (i, c) in raw.clients.iter().enumerate() {
            let client = Client::parse(c)
                .and_then(|c| c.check_admin_scope(&raw.admin.scope).map(|()| c))
                .map_err(|e| invalid(&format!("clients[{i}].{}", e.field), e.to_string()))?;
            if clients.iter().any(|x: &Client| x.id == client.id) {
                return Err(invalid(
                    &format!("clients[{i}].id"),
                    format!("`{}` is defined twice", client.id),
                ));
            }
            clients.push(client);
        }
        let provider = ProviderSettings {
            issuer,
            access_token_ttl: p.access_token_ttl,
            id_token_ttl: p.id_token_ttl,
            code_ttl: p.code_ttl,
            refresh_idle_ttl: p.refresh_idle_ttl,
            refresh_absolute_ttl: p.refresh_absolute_ttl,
            refresh_reuse_grace: p.refresh_reuse_grace,
            signing_alg,
            jwks_max_age: p.jwks_max_age,
            key_reload_interval: p.key_reload_interval,
        };
        let limits = rate_limits(&raw.rate_limit, &invalid)?;
        let mut mfa = raw.mfa.clone().validate(invalid)?;
        mfa.offer_product_name(&raw.ui.product_name);
        let mut upstream_ids: Vec<&str> = Vec::new();
        let mut upstreams = Vec::new();
        for (i, u) in raw.upstreams.iter().enumerate() {
            let key = |k: &str| format!("upstreams[{i}].{k}");
            let id_ok = (1..=32).contains(&u.id.len())
                && u.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !id_ok || u.id == "local" {
                return Err(invalid(
                    &key("id"),
                    "must be 1-32 of [a-z0-9_-], and not `local`".into(),
                ));
            }
            if upstream_ids.contains(&u.id.as_str()) {
                return Err(invalid(&key("id"), format!("`{}` is defined twice", u.id)));
            }
            upstream_ids.push(&u.id);
            let mut domains = Vec::new();
            for d in &u.domains {
                let d = d.trim().to_ascii_lowercase();
                let ok = !d.is_empty()
                    && d.contains('.')
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                if !ok {
                    return Err(invalid(&key("domains"), format!("`{d}` is not a domain")));
                }
                if upstreams
                    .iter()
                    .any(|x: &UpstreamConfig| x.domains.contains(&d))
                {
                    return Err(invalid(
                        &key("domains"),
                        format!("`{d}` is routed to another upstream already"),
                    ));
                }
                domains.push(d);
            }
            let kind = match u.kind.as_str() {
                "oidc" => {
                    let required = |k: &str, v: &Option<String>| {
                        v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
                            invalid(&key(k), "is required for kind = \"oidc\"".into())
                        })
                    };
                    let client_auth = oidc_auth::validate(u, |k, m| invalid(&key(k), m))?;
                    let client_secret = secret::resolve(
                        &key("client_secret"),
                        u.client_secret.as_ref(),
                        u.client_secret_file.as_deref(),
                        invalid,
                    )?;
                    let client_secret = match client_auth {
                        UpstreamClientAuth::PrivateKeyJwt { .. } => {
                            client_secret.unwrap_or_else(|| SecretString::from(String::new()))
                        }
                        _ => client_secret
                            .filter(|s| !s.expose_secret().is_empty())
                            .ok_or_else(|| {
                                invalid(
                                    &key("client_secret"),
                                    "is required for kind = \"oidc\"".into(),
                                )
                            })?,
                    };
                    let o = OidcUpstreamConfig {
                        issuer: required("issuer", &u.issuer)?,
                        client_id: required("client_id", &u.client_id)?,
                        client_secret,
                        scopes: u.scopes.clone(),
                        claims: u.claims.clone(),
                        client_auth,
                    };
                    let url = Url::parse(&o.issuer).map_err(|e| {
                        invalid(&key("issuer"), format!("`{}` is not a URL: {e}", o.issuer))
                    })?;
                    if !https_or_loopback(&url) {
                        return Err(invalid(
                            &key("issuer"),
                            "must be https (http only on loopback)".into(),
                        ));
                    }
                    if o.client_id.is_empty()
                        || (o.client_secret.expose_secret().is_empty()
                            && !matches!(o.client_auth, UpstreamClientAuth::PrivateKeyJwt { .. }))
                    {
                        return Err(invalid(
                            &key("client_secret"),
                            "client_id and client_secret are required".into(),
                        ));
                    }
                    if !o.scopes.iter().any(|s| s == "openid") {
                        return Err(invalid(&key("scopes"), "must include `openid`".into()));
                    }
                    UpstreamKind::Oidc(o)
                }
                "saml" => UpstreamKind::Saml(Box::new(saml::validate(u, &public_url, |k, m| {
                    invalid(&key(k), m)
                })?)),
                other => {
                    return Err(invalid(
                        &key("kind"),
                        format!("`{other}`: the supported kinds are `oidc` and `saml`"),
                    ));
                }
            };
            upstreams.push(UpstreamConfig {
                id: u.id.clone(),
                name: u.name.clone(),
                link_by_verified_email: u.link_by_verified_email,
                domains,
                mfa: u.mfa,
                trust_upstream_mfa: u.trust_upstream_mfa,
                mfa_acr_values: u.mfa_acr_values.clone(),
                kind,
            });
        }
        if raw.audit.retention < Duration::from_secs(3600) {
            return Err(invalid("audit.retention", "must be at least 1h".into()));
        }
        if raw.audit.flush_interval.is_zero() || raw.audit.flush_interval > Duration::from_secs(60)
        {
            return Err(invalid(
                "audit.flush_interval",
                "must be between 1ms and 1m".into(),
            ));
        }
        let scope_ok = !raw.admin.scope.is_empty()
            && raw
                .admin
                .scope
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
        if !scope_ok {
            return Err(invalid(
                "admin.scope",
                "must be one OAuth scope token (printable ASCII, no spaces)".into(),
            ));
        }
        Ok(Self {
            demo,
            data_dir,
            bind,
            public_url,
            max_form_bytes: raw.server.max_form_bytes,
            workers: raw.server.workers,
            database,
            pool_size: raw.database.pool_size,
            busy_timeout: raw.database.busy_timeout,
            pool_timeout: raw.database.pool_timeout,
            statement_timeout: raw.database.statement_timeout,
            ready_timeout: raw.database.ready_timeout,
            session: SessionSettings {
                cookie_name: s.cookie_name.clone(),
                idle_timeout: s.idle_timeout,
                absolute_timeout: s.absolute_timeout,
                touch_interval: s.touch_interval,
                sweep_interval: s.sweep_interval,
                web,
                mobile,
                api,
            },
            ui: raw.ui,
            log: raw.log,
            provider,
            key_encryption_key,
            clients,
            limits,
            audit: raw.audit,
            admin: raw.admin,
            upstreams,
            mfa,
            http: match &raw.http.ca_file {
                None => Default::default(),
                Some(path) => std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|pem| http::TrustAnchors::from_pem(&pem))
                    .map_err(|m| invalid("http.ca_file", m))?,
            },
            config_path: None,
        })
    }
}

/// https, or http on a loopback address (development and tests).
pub(crate) fn https_or_loopback(url: &Url) -> bool {
    let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || url.host_str() == Some("localhost");
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

fn rate_limits(
    r: &RawRateLimit,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<crate::domain::limits::Limits, ConfigError> {
    use crate::domain::limits::{Cidr, Limits, LockoutPolicy, Rate};
    let rate =
        |key: &str, v: &str| Rate::parse(v).map_err(|m| invalid(&format!("rate_limit.{key}"), m));
    let mut trusted_proxies = Vec::new();
    for (i, p) in r.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(
            Cidr::parse(p).map_err(|m| invalid(&format!("rate_limit.trusted_proxies[{i}]"), m))?,
        );
    }
    for (key, d) in [
        ("lockout_delay", r.lockout_delay),
        ("lockout_max_delay", r.lockout_max_delay),
        ("failure_window", r.failure_window),
    ] {
        if d.as_secs() == 0 {
            return Err(invalid(
                &format!("rate_limit.{key}"),
                "must be at least 1s".into(),
            ));
        }
    }
    if r.lockout_max_delay < r.lockout_delay {
        return Err(invalid(
            "rate_limit.lockout_max_delay",
            "must not be shorter than rate_limit.lockout_delay".into(),
        ));
    }
    Ok(Limits {
        login_per_ip: rate("login_per_ip", &r.login_per_ip)?,
        login_per_account: rate("login_per_account", &r.login_per_account)?,
        mfa_per_ip: rate("mfa_per_ip", &r.mfa_per_ip)?,
        mfa_per_account: rate("mfa_per_account", &r.mfa_per_account)?,
        token_per_client: rate("token_per_client", &r.token_per_client)?,
        callback_per_ip: rate("callback_per_ip", &r.callback_per_ip)?,
        journey_per_ip: rate("journey_per_ip", &r.journey_per_ip)?,
        mfa_send_per_account: rate("mfa_send_per_account", &r.mfa_send_per_account)?,
        lockout: LockoutPolicy {
            after: r.lockout_after,
            delay: r.lockout_delay,
            max_delay: r.lockout_max_delay,
            window: r.failure_window,
        },
        trusted_proxies,
    })
}

/// Says whether a failing key came from an environment variable or from the file.
fn origin_of(key: &str, from_env: &BTreeMap<String, String>, file_origin: &str) -> String {
    from_env
        .iter()
        .find(|(k, _)| {
            key == k.as_str()
                || key.starts_with(&format!("{k}."))
                || k.starts_with(&format!("{key}."))
        })
        .map(|(_, var)| format!("environment variable {var}"))
        .unwrap_or_else(|| file_origin.to_owned())
}

/// Keys holding secrets (wrapped in [`SecretString`], never shown by `Debug`).
const SECRET_KEYS: &[&str] = &["client_secret", "password", "token", "key_encryption_key"];

/// Applies `CONCIERGE__A__B=v` to `tree` as `a.b = v`. Values are typed by the default value at
/// that key (number, bool, list), else kept as strings. Returns key path -> variable name.
fn overlay_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    let defaults = toml::Value::try_from(RawSettings::default()).ok();
    let mut applied = BTreeMap::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            continue;
        }
        let default = defaults.as_ref().and_then(|d| lookup(d, &path));
        // A secret is text even when it looks like a number (`CONCIERGE__MFA__SMTP__PASSWORD=1234`).
        let typed = if path
            .last()
            .is_some_and(|k| SECRET_KEYS.contains(&k.as_str()))
        {
            toml::Value::String(value)
        } else {
            coerce(&value, default)
        };
        if let Some(key) = insert(tree, &path, typed) {
            applied.insert(key, var);
        }
    }
    applied
}

fn lookup<'a>(v: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter().try_fold(v, |v, k| v.as_table()?.get(k))
}

fn coerce(value: &str, default: Option<&toml::Value>) -> toml::Value {
    let parsed = || {
        toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    match default {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_owned()),
        Some(_) => parsed().unwrap_or_else(|| toml::Value::String(value.to_owned())),
        // Keys without a default (optional ones): numbers, bools and lists parse, the rest is text.
        None => match parsed() {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Array(_)),
            ) => v,
            _ => toml::Value::String(value.to_owned()),
        },
    }
}

/// Sets `path` in `tree`; returns the key as errors name it (`upstreams[0].client_secret`), or
/// `None` when the path cannot be set. The segment after `upstreams` picks an existing
/// `[[upstreams]]` table by its index or its `id`: `CONCIERGE__UPSTREAMS__CORP__CLIENT_SECRET`.
fn insert(tree: &mut toml::Table, path: &[String], value: toml::Value) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut table = tree;
    let mut key = String::new();
    let mut segments = parents.iter();
    while let Some(p) = segments.next() {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(p);
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            // Only `[[upstreams]]`, for their secrets; clients and plugins stay file-only.
            toml::Value::Array(items) if key == "upstreams" => {
                let pick = segments.next()?;
                let index = match pick.parse::<usize>() {
                    Ok(i) => i,
                    Err(_) => items.iter().position(|item| {
                        item.get("id").and_then(toml::Value::as_str) == Some(pick.as_str())
                    })?,
                };
                key.push_str(&format!("[{index}]"));
                items.get_mut(index)?.as_table_mut()?
            }
            _ => return None,
        };
    }
    table.insert(last.clone(), value);
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(last);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn embedded_default_is_demo_on_loopback_sqlite() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert!(s.demo);
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(
            s.database,
            DatabaseUrl::Sqlite("concierge-data/concierge.db".into())
        );
        assert!(!s.https());
    }

    #[test]
    fn environment_overrides_keys_with_their_types() {
        let s = Settings::load(
            None,
            env(&[
                ("CONCIERGE__SESSION__IDLE_TIMEOUT", "2s"),
                ("CONCIERGE__DATABASE__POOL_SIZE", "3"),
                ("CONCIERGE__SERVER__BIND", "127.0.0.1:9000"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.session.idle_timeout, Duration::from_secs(2));
        assert_eq!(s.pool_size, 3);
        assert_eq!(s.bind.port(), 9000);
    }

    #[test]
    fn database_waits_have_short_defaults_and_bounds() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.pool_timeout, Duration::from_secs(2));
        assert_eq!(s.statement_timeout, Duration::from_secs(5));
        assert_eq!(s.ready_timeout, Duration::from_millis(500));
        let s = Settings::load(
            None,
            env(&[
                ("CONCIERGE__DATABASE__POOL_TIMEOUT", "750ms"),
                ("CONCIERGE__DATABASE__READY_TIMEOUT", "1s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.pool_timeout, Duration::from_millis(750));
        assert_eq!(s.ready_timeout, Duration::from_secs(1));
        for (key, value) in [
            ("CONCIERGE__DATABASE__POOL_TIMEOUT", "10ms"),
            ("CONCIERGE__DATABASE__POOL_TIMEOUT", "2m"),
            ("CONCIERGE__DATABASE__STATEMENT_TIMEOUT", "0s"),
            ("CONCIERGE__DATABASE__READY_TIMEOUT", "1m"),
        ] {
            let e = Settings::load(None, env(&[(key, value)])).unwrap_err();
            let field = key
                .trim_start_matches("CONCIERGE__")
                .replace("__", ".")
                .to_lowercase();
            assert!(e.to_string().contains(&field), "{key}={value}: {e}");
        }
    }

    #[test]
    fn demo_mode_refuses_a_public_bind() {
        let e =
            Settings::load(None, env(&[("CONCIERGE__SERVER__BIND", "0.0.0.0:8080")])).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("server.bind") && m.contains("CONCIERGE__SERVER__BIND"),
            "{m}"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[session]\nidle_timeout = \"soon\"\n").unwrap();
        let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(
            m.contains("c.toml") && m.contains("session.idle_timeout"),
            "{m}"
        );

        std::fs::write(&p, "[sesion]\nidle_timeout = \"1m\"\n").unwrap();
        let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(m.contains("sesion"), "{m}");

        std::fs::write(&p, "[session\n").unwrap();
        let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(m.contains("not valid TOML"), "{m}");

        std::fs::write(
            &p,
            "[session]\nidle_timeout = \"2h\"\nabsolute_timeout = \"1h\"\n",
        )
        .unwrap();
        let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(m.contains("session.idle_timeout"), "{m}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[server]\nbind = \"0.0.0.0:80\"\npublic_url = \"http://id.example.com\"\n",
        )
        .unwrap();
        let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(m.contains("server.public_url"), "{m}");
        std::fs::write(
            &p,
            "[server]\nbind = \"0.0.0.0:80\"\npublic_url = \"https://id.example.com\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&p), env(&[])).unwrap();
        assert!(s.https() && !s.demo);
    }

    #[test]
    fn channels_inherit_and_override_session_policy() {
        use crate::domain::Channel;
        let s = Settings::load(
            None,
            env(&[
                ("CONCIERGE__SESSION__MAX_PER_USER", "3"),
                ("CONCIERGE__SESSION__MOBILE__IDLE_TIMEOUT", "7d"),
                ("CONCIERGE__SESSION__MOBILE__ABSOLUTE_TIMEOUT", "30d"),
                ("CONCIERGE__SESSION__API__MAX_PER_USER", "0"),
            ]),
        )
        .unwrap();
        let web = s.session.channel(Channel::Web);
        assert_eq!(
            (web.idle_timeout, web.limit),
            (Duration::from_secs(1800), SessionLimit::AllChannels(3))
        );
        assert_eq!(
            s.session.channel(Channel::Mobile).idle_timeout,
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(s.session.channel(Channel::Api).limit, SessionLimit::None);
        let m = Settings::load(
            None,
            env(&[("CONCIERGE__SESSION__MOBILE__IDLE_TIMEOUT", "13h")]),
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("session.mobile.idle_timeout"), "{m}");
    }

    #[test]
    fn provider_rules_name_their_keys() {
        for (var, value, key) in [
            (
                "CONCIERGE__PROVIDER__JWKS_MAX_AGE",
                "30s",
                "provider.jwks_max_age",
            ),
            (
                "CONCIERGE__PROVIDER__ISSUER",
                "https://id.example.com/tenant",
                "provider.issuer",
            ),
            (
                "CONCIERGE__PROVIDER__ISSUER",
                "http://id.example.com",
                "provider.issuer",
            ),
            (
                "CONCIERGE__PROVIDER__SIGNING_ALG",
                "HS256",
                "provider.signing_alg",
            ),
            (
                "CONCIERGE__PROVIDER__KEY_ENCRYPTION_KEY",
                "c2hvcnQ=",
                "provider.key_encryption_key",
            ),
        ] {
            let m = Settings::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(m.contains(key) && m.contains(var), "{m}");
        }
        let s = Settings::load(
            None,
            env(&[("CONCIERGE__PROVIDER__ISSUER", "https://id.example.com/")]),
        )
        .unwrap();
        assert_eq!(s.provider.issuer, "https://id.example.com");
    }

    /// Every secret of the configuration, set to a marker (inline, from a `*_file` and from the
    /// environment): neither the raw nor the validated settings show it in `Debug`.
    #[test]
    fn no_debug_of_the_settings_shows_a_secret() {
        use base64::Engine;
        const MARK: &str = "MARKER-5ecret";
        let kek = [0x5a_u8; 32];
        let kek_b64 = base64::engine::general_purpose::STANDARD.encode(kek);
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            p
        };
        let sms_token = file("sms-token", &format!("{MARK}-sms\n"));
        let corp_secret = file("corp-secret", &format!("{MARK}-file\n"));
        let toml = format!(
            r#"
[server]
public_url = "http://127.0.0.1:8080"
[provider]
key_encryption_key = "{kek_b64}"
[mfa.smtp]
host = "smtp.example.com"
from = "Concierge <no-reply@example.com>"
username = "concierge"
password = "{MARK}-smtp"
[mfa.sms]
url = "https://sms.example.com/send"
token_file = "{}"
[[upstreams]]
id = "google"
kind = "oidc"
issuer = "https://accounts.example.com"
client_id = "broker"
client_secret = "{MARK}-inline"
[[upstreams]]
id = "corp"
kind = "oidc"
issuer = "https://corp.example.com"
client_id = "broker"
client_secret_file = "{}"
[[upstreams]]
id = "azure"
kind = "oidc"
issuer = "https://azure.example.com"
client_id = "broker"
"#,
            sms_token.display(),
            corp_secret.display()
        );
        let config = file("c.toml", &toml);
        let env = env(&[(
            "CONCIERGE__UPSTREAMS__AZURE__CLIENT_SECRET",
            "MARKER-5ecret-env",
        )]);

        let raw: RawSettings = toml::from_str(&toml).unwrap();
        let s = Settings::load(Some(&config), env).unwrap();
        let secrets: Vec<String> = s
            .upstreams
            .iter()
            .map(|u| match &u.kind {
                UpstreamKind::Oidc(o) => o.client_secret.expose_secret().to_owned(),
                UpstreamKind::Saml(_) => String::new(),
            })
            .collect();
        assert_eq!(
            secrets,
            [
                format!("{MARK}-inline"),
                format!("{MARK}-file"),
                format!("{MARK}-env")
            ]
        );
        let smtp = s.mfa.smtp.as_ref().unwrap().credentials.as_ref().unwrap();
        assert_eq!(smtp.1.expose(), format!("{MARK}-smtp"));
        let sms = s.mfa.sms.as_ref().unwrap().token.as_ref().unwrap();
        assert_eq!(sms.expose(), format!("{MARK}-sms"));
        assert_eq!(
            s.key_encryption_key.as_ref().map(|k| *k.expose_secret()),
            Some(kek)
        );

        let kek_debug = format!("{kek:?}");
        for debug in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{raw:?}"),
            format!("{raw:#?}"),
        ] {
            assert!(!debug.contains(MARK), "{debug}");
            assert!(!debug.contains(&kek_b64), "{debug}");
            assert!(!debug.contains(&kek_debug[1..20]), "{debug}");
        }
    }

    #[test]
    fn a_numeric_secret_from_the_environment_stays_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"https://corp.example.com\"\nclient_id = \"b\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&p),
            env(&[("CONCIERGE__UPSTREAMS__0__CLIENT_SECRET", "0123456789")]),
        )
        .unwrap();
        let UpstreamKind::Oidc(o) = &s.upstreams[0].kind else {
            panic!("oidc")
        };
        assert_eq!(o.client_secret.expose_secret(), "0123456789");
        // Both ways at once is refused, naming the key and the variable.
        let m = Settings::load(
            Some(&p),
            env(&[
                ("CONCIERGE__UPSTREAMS__CORP__CLIENT_SECRET", "x"),
                (
                    "CONCIERGE__UPSTREAMS__CORP__CLIENT_SECRET_FILE",
                    "/nonexistent",
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("upstreams[0].client_secret_file")
                && m.contains("CONCIERGE__UPSTREAMS__CORP__CLIENT_SECRET")
                && !m.contains("`x`"),
            "{m}"
        );
    }

    #[test]
    fn postgres_password_is_redacted() {
        let u = DatabaseUrl::parse("postgres://app:s3cret@db:5432/concierge").unwrap();
        assert!(!u.redacted().contains("s3cret"));
    }
}
