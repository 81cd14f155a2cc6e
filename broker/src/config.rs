//! Owns the configuration: one TOML file, each key overridable by `CONCIERGE__SECTION__KEY`,
//! validated once at start into typed [`Settings`]; errors name the key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{SecretBox, SecretString};
use url::Url;

use crate::domain::client::Client;
use crate::domain::policy::{ChannelPolicy, MfaRequirement};
use provider::ProviderSettings;

mod env;
pub mod http;
pub(crate) mod keep;
pub mod mfa;
mod oidc_auth;
pub mod passkey;
pub mod provider;
mod raw;
mod saml;
pub mod saml_apps;
pub(crate) mod secret;
mod validate;

use env::{origin_of, overlay_env};
pub use keep::MAX_KEPT_VALUE;
pub use oidc_auth::UpstreamClientAuth;
pub use raw::{
    ClaimMapping, LogFormat, RawAdmin, RawAudit, RawChannelSession, RawDatabase, RawHttp, RawLog,
    RawProvider, RawRateLimit, RawServer, RawSession, RawSettings, RawUi, RawUpstream,
    SamlAttributeMapping,
};
pub use saml::{NameIdFormat, SamlMetadataSource, SamlUpstreamConfig, SpKeyPair};

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
    /// Keys that only open (`provider.previous_key_encryption_keys` and `…_files`).
    pub previous_key_encryption_keys: Vec<std::sync::Arc<SecretBox<[u8; 32]>>>,
    pub clients: Vec<Client>,
    /// The service providers of the SAML IdP (`[[saml_apps]]`).
    pub saml_apps: Vec<saml_apps::SamlApp>,
    /// How old a URL-registered SP's metadata may get before it is fetched again.
    pub saml_apps_metadata_refresh: std::time::Duration,
    /// Every AuthnRequest must be signed (`WantAuthnRequestsSigned="true"` in the metadata).
    pub saml_idp_want_authn_requests_signed: bool,
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
}

/// https, or http on a loopback address (development and tests).
pub(crate) fn https_or_loopback(url: &Url) -> bool {
    let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || url.host_str() == Some("localhost");
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

#[cfg(test)]
mod tests;
