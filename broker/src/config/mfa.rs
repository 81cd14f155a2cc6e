//! Owns the `[mfa]` configuration: the policy default, attempt limits, the SMTP server and SMS
//! gateway behind the host capabilities, and each plugin's manifest (file, sha256 pin, grants,
//! limits, settings), parsed into typed values at boot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::policy::MfaRequirement;

/// `[mfa]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMfa {
    /// The default for every client and upstream (`off`, `optional`, `required`).
    pub required: MfaRequirement,
    /// Wrong answers to one factor (within `lockout`) before it is locked for the user.
    pub max_attempts: u32,
    /// How long a locked factor stays locked, and the window wrong answers are counted in.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// How often plugin files and pins are checked for changes (hot reload); 0 disables.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Recovery codes handed out at the first enrolment (0: none).
    pub recovery_codes: u32,
    /// How long a started second-factor step stays valid.
    #[serde(with = "humantime_serde")]
    pub step_ttl: Duration,
    /// However often it is stepped, a sign-in journey ends this long after it started.
    #[serde(with = "humantime_serde")]
    pub journey_max_age: Duration,
    /// Under `optional`: whether a factor that needs no enrolment (an email code to the
    /// account's address) counts as enrolled, so that every user with an email is asked.
    pub optional_counts_implicit_factors: bool,
    pub smtp: Option<RawSmtp>,
    pub sms: Option<RawSms>,
    /// `[[mfa.plugins]]`: each plugin's manifest.
    pub plugins: Vec<RawPlugin>,
    /// `[mfa.passkey]`: the native passkey / security key factor (`mfa::passkey`).
    pub passkey: PasskeySettings,
}

pub use super::passkey::{HardwareKey, PasskeySettings};

impl Default for RawMfa {
    fn default() -> Self {
        Self {
            required: MfaRequirement::Off,
            max_attempts: 5,
            lockout: Duration::from_secs(15 * 60),
            reload_interval: Duration::from_secs(1),
            recovery_codes: 10,
            step_ttl: Duration::from_secs(10 * 60),
            journey_max_age: Duration::from_secs(60 * 60),
            optional_counts_implicit_factors: false,
            smtp: None,
            sms: None,
            plugins: Vec::new(),
            passkey: PasskeySettings::default(),
        }
    }
}

/// `[mfa.smtp]`: where `send-email` goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `none` (plain, for a relay on localhost), `starttls` (default) or `tls`.
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, skip_serializing)]
    pub password: Option<secrecy::SecretString>,
    /// A file holding `password` (one trailing newline is removed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `Concierge <no-reply@example.com>`.
    pub from: String,
    #[serde(default = "default_send_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_tls() -> String {
    "starttls".into()
}
fn default_send_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[mfa.sms]`: the HTTP gateway behind `send-sms` (request shape in docs/plugins.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSms {
    /// Receives `POST {"to": "+82…", "body": "…"}` as JSON.
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(default, skip_serializing)]
    pub token: Option<secrecy::SecretString>,
    /// A file holding `token` (one trailing newline is removed).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_send_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// One `[[mfa.plugins]]` table: the plugin's manifest, written by the operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub id: String,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Hex SHA-256 of the file: any other file is refused.
    pub sha256: String,
    /// Host capabilities the plugin may import: `clock`, `random`, `state`, `email`, `sms`,
    /// `log`. `config` is always linked.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Wall time per call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// CPU budget per call (wasmtime fuel; one TOTP verify uses about 65,000).
    #[serde(default = "default_fuel")]
    pub fuel: u64,
    /// Linear memory cap, e.g. `4MiB`.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Values the plugin reads through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `[mfa.plugins.http]`: where the `http` capability (contract 0.2) may go, and the secrets
    /// the host substitutes for the plugin. Required with the `http` grant.
    #[serde(default)]
    pub http: Option<RawPluginHttp>,
    /// The upstream claims (`keep` of an upstream's mapping) the plugin may read through the
    /// `claims` interface (contract 0.2, always linked): none unless listed here.
    #[serde(default)]
    pub claims: Vec<String>,
}

/// `[mfa.plugins.http]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginHttp {
    /// Origins requests may go to: `https://pi.example` or `http://127.0.0.1:8080` (scheme,
    /// host and port, compared exactly; no path).
    #[serde(default)]
    pub origins: Vec<String>,
    /// Credentials the host holds and substitutes when the plugin names them.
    #[serde(default)]
    pub secrets: Vec<RawPluginSecret>,
}

/// One `[[mfa.plugins.http.secrets]]`: a credential bound to one header or one form field and
/// to some of the plugin's origins. Its value comes from `env` or `file`, never the file itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginSecret {
    /// What the plugin calls it (`secret-ref.secret(name)`).
    pub name: String,
    /// The environment variable holding the value.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the value (one trailing newline is removed).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The origins it may be sent to (each one of `http.origins`).
    pub origins: Vec<String>,
    /// The request header it may fill (e.g. `Authorization`)...
    #[serde(default)]
    pub header: Option<String>,
    /// ... or the form field (e.g. `pass`): exactly one of the two.
    #[serde(default)]
    pub field: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_millis(100)
}
fn default_fuel() -> u64 {
    50_000_000
}
fn default_memory() -> String {
    "4MiB".into()
}

/// A host capability a plugin can be granted (one WIT interface each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Clock,
    Random,
    State,
    Email,
    Sms,
    Log,
    /// Outbound HTTP to listed origins (contract 0.2).
    Http,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Self::Clock,
        Self::Random,
        Self::State,
        Self::Email,
        Self::Sms,
        Self::Log,
        Self::Http,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clock => "clock",
            Self::Random => "random",
            Self::State => "state",
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Log => "log",
            Self::Http => "http",
        }
    }

    /// The contract version that introduced this capability.
    pub fn version(self) -> &'static str {
        match self {
            Self::Http => "0.2.0",
            _ => "0.1.0",
        }
    }

    /// The component import that needs this grant.
    pub fn interface(self) -> String {
        format!("concierge:mfa/{}@{}", self.as_str(), self.version())
    }
}

/// An origin requests may go to: scheme (`http`, `https`), host (lower case; an IPv6 address in
/// brackets, as in a URL) and port (explicit or the scheme's default), compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute http(s) URL without user info.
    pub fn of(url: &url::Url) -> Option<Self> {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    /// An origin as written in the manifest: `scheme://host[:port]`, nothing after it but `/`.
    pub fn parse(s: &str) -> Option<Self> {
        let url = url::Url::parse(s).ok()?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        Self::of(&url)
    }

    /// The host as an IP address when it is one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Where a secret may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSlot {
    /// A request header (name in lower case).
    Header(String),
    /// A form field of a `form` body.
    Field(String),
}

/// A host-held credential for the `http` capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSecret {
    pub name: String,
    pub value: crate::domain::SecretString,
    pub origins: BTreeSet<Origin>,
    pub slot: SecretSlot,
}

/// `[mfa.plugins.http]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpGrant {
    pub origins: BTreeSet<Origin>,
    pub secrets: Vec<PluginSecret>,
}

/// A plugin's manifest, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginManifest {
    pub id: String,
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub grants: BTreeSet<Capability>,
    pub timeout: Duration,
    pub fuel: u64,
    pub memory_bytes: usize,
    pub config: BTreeMap<String, String>,
    /// What the `http` capability may do (set exactly when `http` is granted).
    pub http: Option<HttpGrant>,
    /// The upstream claims the plugin may read (`claims`, always linked: none unless listed).
    pub claims: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<(String, crate::domain::SecretString)>,
    pub from: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmsSettings {
    pub url: url::Url,
    pub token: Option<crate::domain::SecretString>,
    pub timeout: Duration,
}

/// `[mfa]`, validated.
#[derive(Debug, Clone)]
pub struct MfaSettings {
    pub required: MfaRequirement,
    pub max_attempts: u32,
    pub lockout: Duration,
    pub reload_interval: Duration,
    pub recovery_codes: u32,
    pub step_ttl: Duration,
    pub journey_max_age: Duration,
    pub optional_counts_implicit_factors: bool,
    pub smtp: Option<SmtpSettings>,
    pub sms: Option<SmsSettings>,
    pub plugins: Vec<PluginManifest>,
    pub passkey: PasskeySettings,
    /// `[http]`'s trust anchors, for the plugins' `http` capability (set from the whole
    /// configuration after validation).
    pub trust: super::http::TrustAnchors,
}

/// A plugin id: `[a-z0-9-]{1,32}`.
pub fn valid_plugin_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `localhost` or a loopback IP address (`127.0.0.1`, `::1`, `[::1]`).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `config` key through which the host offers `[ui] product_name` to every plugin.
pub const PRODUCT_NAME_KEY: &str = "product_name";

impl MfaSettings {
    /// Offers `[ui] product_name` to every plugin through its `config` capability, as
    /// `product_name`, unless its manifest's `config` sets that key itself.
    pub fn offer_product_name(&mut self, product_name: &str) {
        for p in &mut self.plugins {
            p.config
                .entry(PRODUCT_NAME_KEY.to_owned())
                .or_insert_with(|| product_name.trim().to_owned());
        }
    }
}

/// `4MiB`, `512KiB`, `1048576`.
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: usize = n.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The host's own redacting type, for the send-email and send-sms capabilities.
fn exposed(s: &secrecy::SecretString) -> crate::domain::SecretString {
    crate::domain::SecretString::new(secrecy::ExposeSecret::expose_secret(s).to_owned())
}

/// `[mfa.plugins.http]` checked: origins parse, each secret has one value source, one slot,
/// and only listed origins; a secret never goes over plain http off loopback.
fn http_grant<E>(
    raw: RawPluginHttp,
    key: &dyn Fn(&str) -> String,
    invalid: &impl Fn(&str, String) -> E,
) -> Result<HttpGrant, E> {
    let mut origins = BTreeSet::new();
    for o in &raw.origins {
        let origin = Origin::parse(o).ok_or_else(|| {
            invalid(
                &key("http.origins"),
                format!("`{o}` is not an origin like https://mfa.example or http://127.0.0.1:8080"),
            )
        })?;
        origins.insert(origin);
    }
    if origins.is_empty() {
        return Err(invalid(
            &key("http.origins"),
            "lists no origin: the plugin could reach nothing".into(),
        ));
    }
    let mut secrets: Vec<PluginSecret> = Vec::new();
    for (j, s) in raw.secrets.into_iter().enumerate() {
        let skey = |k: &str| key(&format!("http.secrets[{j}].{k}"));
        if s.name.is_empty() || s.name.len() > 64 || secrets.iter().any(|x| x.name == s.name) {
            return Err(invalid(
                &skey("name"),
                "must be 1-64 bytes and unique".into(),
            ));
        }
        let value = match (&s.env, &s.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| invalid(&skey("env"), format!("the variable `{var}` is not set")))?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        &skey("file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                text.strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text)
                    .to_owned()
            }
            _ => {
                return Err(invalid(
                    &skey("env"),
                    "set exactly one of `env` and `file`".into(),
                ));
            }
        };
        if value.is_empty() || value.contains(['\r', '\n', '\0']) {
            return Err(invalid(
                &skey("env"),
                "the value is empty or holds a line break".into(),
            ));
        }
        let slot = match (s.header, s.field) {
            (Some(h), None) if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                SecretSlot::Header(h.to_ascii_lowercase())
            }
            (None, Some(f)) if !f.is_empty() => SecretSlot::Field(f),
            _ => {
                return Err(invalid(
                    &skey("header"),
                    "set exactly one of `header` (a header name) and `field`".into(),
                ));
            }
        };
        let mut bound = BTreeSet::new();
        for o in &s.origins {
            let origin = Origin::parse(o)
                .filter(|origin| origins.contains(origin))
                .ok_or_else(|| {
                    invalid(
                        &skey("origins"),
                        format!("`{o}` is not one of `http.origins`"),
                    )
                })?;
            if origin.scheme != "https" && !origin.is_loopback() {
                return Err(invalid(
                    &skey("origins"),
                    format!(
                        "`{o}` would carry the secret in clear: https, or http only to a loopback address"
                    ),
                ));
            }
            bound.insert(origin);
        }
        if bound.is_empty() {
            return Err(invalid(&skey("origins"), "lists no origin".into()));
        }
        secrets.push(PluginSecret {
            name: s.name,
            value: crate::domain::SecretString::new(value),
            origins: bound,
            slot,
        });
    }
    Ok(HttpGrant { origins, secrets })
}

impl RawMfa {
    /// Validates; `invalid(key, message)` builds the error naming the key.
    pub fn validate<E>(self, invalid: impl Fn(&str, String) -> E) -> Result<MfaSettings, E> {
        let mut seen = BTreeSet::new();
        let mut plugins = Vec::new();
        for (i, p) in self.plugins.into_iter().enumerate() {
            let key = |k: &str| format!("mfa.plugins[{i}].{k}");
            if !valid_plugin_id(&p.id) {
                return Err(invalid(&key("id"), "must be 1-32 of a-z, 0-9, -".into()));
            }
            if !seen.insert(p.id.clone()) {
                return Err(invalid(&key("id"), format!("`{}` is listed twice", p.id)));
            }
            let sha256 = hex::decode(p.sha256.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| invalid(&key("sha256"), "must be 64 hex digits".into()))?;
            let mut grants = BTreeSet::new();
            for g in &p.grants {
                if g == "config" {
                    // Always linked; naming it is harmless.
                    continue;
                }
                let c = Capability::parse(g).ok_or_else(|| {
                    invalid(
                        &key("grants"),
                        format!("`{g}` is not one of clock, random, state, email, sms, log, http"),
                    )
                })?;
                grants.insert(c);
            }
            if p.timeout.is_zero() || p.timeout > Duration::from_secs(10) {
                return Err(invalid(
                    &key("timeout"),
                    "must be between 1ms and 10s".into(),
                ));
            }
            if p.fuel == 0 {
                return Err(invalid(&key("fuel"), "must be above 0".into()));
            }
            let memory_bytes = parse_bytes(&p.memory)
                .filter(|m| (64 << 10..=256 << 20).contains(m))
                .ok_or_else(|| {
                    invalid(
                        &key("memory"),
                        "must be like `4MiB`, between 64KiB and 256MiB".into(),
                    )
                })?;
            let http = match (grants.contains(&Capability::Http), p.http) {
                (false, None) => None,
                (true, Some(h)) => Some(http_grant(h, &key, &invalid)?),
                (true, None) => {
                    return Err(invalid(
                        &key("http"),
                        "the `http` grant needs `[mfa.plugins.http] origins`".into(),
                    ));
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        &key("http"),
                        "is set but `grants` does not list `http`".into(),
                    ));
                }
            };
            super::keep::check_keep(&p.claims).map_err(|m| invalid(&key("claims"), m))?;
            plugins.push(PluginManifest {
                id: p.id,
                path: p.path,
                sha256,
                grants,
                timeout: p.timeout,
                fuel: p.fuel,
                memory_bytes,
                config: p.config,
                http,
                claims: p.claims.into_iter().collect(),
            });
        }
        let smtp = match self.smtp {
            None => None,
            Some(s) => {
                let tls = match s.tls.as_str() {
                    "none" => SmtpTls::None,
                    "starttls" => SmtpTls::StartTls,
                    "tls" => SmtpTls::Tls,
                    other => {
                        return Err(invalid(
                            "mfa.smtp.tls",
                            format!("`{other}` is not none, starttls or tls"),
                        ));
                    }
                };
                if s.from.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(invalid("mfa.smtp.from", "is not a mailbox".into()));
                }
                let password = super::secret::resolve(
                    "mfa.smtp.password",
                    s.password.as_ref(),
                    s.password_file.as_deref(),
                    &invalid,
                )?;
                let credentials = match (s.username, password) {
                    (Some(u), Some(p)) => Some((u, exposed(&p))),
                    (None, None) => None,
                    _ => {
                        return Err(invalid(
                            "mfa.smtp.username",
                            "username and password go together".into(),
                        ));
                    }
                };
                // Like `server.public_url`: no secret crosses a network in clear.
                if tls == SmtpTls::None && credentials.is_some() && !is_loopback_host(&s.host) {
                    return Err(invalid(
                        "mfa.smtp.tls",
                        format!(
                            "`none` would send the SMTP password in clear to `{}`; use starttls or tls (none only with a relay on a loopback address)",
                            s.host
                        ),
                    ));
                }
                Some(SmtpSettings {
                    host: s.host,
                    port: s.port,
                    tls,
                    credentials,
                    from: s.from,
                    timeout: s.timeout,
                })
            }
        };
        let sms = match self.sms {
            None => None,
            Some(s) => {
                let url = url::Url::parse(&s.url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| invalid("mfa.sms.url", "is not an http(s) URL".into()))?;
                let token = super::secret::resolve(
                    "mfa.sms.token",
                    s.token.as_ref(),
                    s.token_file.as_deref(),
                    &invalid,
                )?;
                if token.is_some() && !super::https_or_loopback(&url) {
                    return Err(invalid(
                        "mfa.sms.url",
                        "must be https when a token is set (the bearer token would travel in clear); plain http only to a gateway on a loopback address".into(),
                    ));
                }
                Some(SmsSettings {
                    url,
                    token: token.as_ref().map(exposed),
                    timeout: s.timeout,
                })
            }
        };
        if self.max_attempts == 0 {
            return Err(invalid("mfa.max_attempts", "must be at least 1".into()));
        }
        Ok(MfaSettings {
            required: self.required,
            max_attempts: self.max_attempts,
            lockout: self.lockout,
            reload_interval: self.reload_interval,
            recovery_codes: self.recovery_codes.min(50),
            step_ttl: self.step_ttl,
            journey_max_age: self.journey_max_age,
            optional_counts_implicit_factors: self.optional_counts_implicit_factors,
            smtp,
            sms,
            plugins,
            passkey: self.passkey.validate(&invalid)?,
            trust: super::http::TrustAnchors::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(id: &str) -> RawPlugin {
        RawPlugin {
            id: id.into(),
            path: "x.wasm".into(),
            sha256: "00".repeat(32),
            grants: vec!["clock".into()],
            timeout: default_timeout(),
            fuel: default_fuel(),
            memory: default_memory(),
            config: BTreeMap::new(),
            http: None,
            claims: Vec::new(),
        }
    }

    #[test]
    fn a_plugin_reads_only_the_claims_its_manifest_lists() {
        let with = |claims: &[&str]| {
            let mut p = plugin("p");
            p.claims = claims.iter().map(|c| (*c).to_owned()).collect();
            check(RawMfa {
                plugins: vec![p],
                ..RawMfa::default()
            })
        };
        assert!(
            with(&[]).unwrap().plugins[0].claims.is_empty(),
            "none by default"
        );
        let ok = with(&["employee_id", "urn:oid:2.16.840.1.113730.3.1.3"]).unwrap();
        assert_eq!(ok.plugins[0].claims.len(), 2);
        for bad in [&["a", "a"][..], &[""], &["two words"], &["x"; 17]] {
            let e = with(bad).unwrap_err();
            assert!(e.starts_with("mfa.plugins[0].claims"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_http_grant_needs_origins_and_bound_secrets() {
        let secret = |origins: &[&str], header: Option<&str>| RawPluginSecret {
            name: "pi".into(),
            env: Some("PATH".into()),
            file: None,
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            header: header.map(str::to_owned),
            field: None,
        };
        let with = |http: Option<RawPluginHttp>, grant: bool| {
            let mut p = plugin("p");
            if grant {
                p.grants.push("http".into());
            }
            p.http = http;
            check(RawMfa {
                plugins: vec![p],
                ..RawMfa::default()
            })
        };
        let http = |origins: &[&str], secrets: Vec<RawPluginSecret>| {
            Some(RawPluginHttp {
                origins: origins.iter().map(|o| (*o).to_owned()).collect(),
                secrets,
            })
        };
        let ok = with(
            http(
                &["https://PI.example", "http://127.0.0.1:8080"],
                vec![secret(&["https://pi.example:443"], Some("Authorization"))],
            ),
            true,
        )
        .unwrap();
        let grant = ok.plugins[0].http.as_ref().unwrap();
        assert!(ok.plugins[0].grants.contains(&Capability::Http));
        assert_eq!(
            grant
                .origins
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["http://127.0.0.1:8080", "https://pi.example:443"]
        );
        assert_eq!(
            grant.secrets[0].slot,
            SecretSlot::Header("authorization".into())
        );
        assert!(!format!("{grant:?}").contains(&std::env::var("PATH").unwrap()));
        for (http, grant, why) in [
            (None, true, "needs"),
            (http(&["https://a.example"], vec![]), false, "does not list"),
            (http(&[], vec![]), true, "no origin"),
            (
                http(&["https://a.example/path"], vec![]),
                true,
                "not an origin",
            ),
            (
                http(
                    &["https://a.example"],
                    vec![secret(&["https://b.example"], Some("x"))],
                ),
                true,
                "not one of",
            ),
            (
                http(
                    &["http://a.example"],
                    vec![secret(&["http://a.example"], Some("x"))],
                ),
                true,
                "in clear",
            ),
            (
                http(
                    &["https://a.example"],
                    vec![secret(&["https://a.example"], None)],
                ),
                true,
                "exactly one",
            ),
        ] {
            let e = with(http, grant).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    fn check(raw: RawMfa) -> Result<MfaSettings, String> {
        raw.validate(|k, m| format!("{k}: {m}"))
    }

    #[test]
    fn manifests_are_parsed_and_refused_with_the_key() {
        let mut raw = RawMfa {
            plugins: vec![plugin("totp")],
            ..RawMfa::default()
        };
        let s = check(raw.clone()).unwrap();
        assert_eq!(s.plugins[0].memory_bytes, 4 << 20);
        assert!(s.plugins[0].grants.contains(&Capability::Clock));

        raw.plugins = vec![plugin("Bad Id")];
        assert!(
            check(raw.clone())
                .unwrap_err()
                .starts_with("mfa.plugins[0].id")
        );
        raw.plugins = vec![plugin("a"), plugin("a")];
        assert!(check(raw.clone()).unwrap_err().contains("twice"));
        let mut p = plugin("a");
        p.grants = vec!["network".into()];
        raw.plugins = vec![p];
        assert!(
            check(raw.clone())
                .unwrap_err()
                .starts_with("mfa.plugins[0].grants")
        );
        let mut p = plugin("a");
        p.sha256 = "abc".into();
        raw.plugins = vec![p];
        assert!(check(raw.clone()).unwrap_err().contains("sha256"));
        let mut p = plugin("a");
        p.memory = "1TiB".into();
        raw.plugins = vec![p];
        assert!(check(raw).unwrap_err().contains("memory"));
    }

    fn smtp(host: &str, tls: &str, user: bool) -> RawSmtp {
        RawSmtp {
            host: host.into(),
            port: 25,
            tls: tls.into(),
            username: user.then(|| "mailer".into()),
            password: user.then(|| "hunter2".into()),
            password_file: None,
            from: "Concierge <no-reply@example.com>".into(),
            timeout: default_send_timeout(),
        }
    }

    #[test]
    fn passkeys_are_off_unless_enabled() {
        assert!(!check(RawMfa::default()).unwrap().passkey.enabled);
        let raw: RawMfa = toml::from_str("[passkey]\nenabled = true").unwrap();
        assert!(check(raw).unwrap().passkey.enabled);
        assert!(toml::from_str::<RawMfa>("[passkey]\nrp_id = \"x\"").is_err());
    }

    #[test]
    fn secrets_are_not_sent_in_clear_off_loopback() {
        let with = |smtp: RawSmtp| {
            check(RawMfa {
                smtp: Some(smtp),
                ..RawMfa::default()
            })
        };
        let err = with(smtp("smtp.example.com", "none", true)).unwrap_err();
        assert!(err.starts_with("mfa.smtp.tls"), "{err}");
        assert!(with(smtp("smtp.example.com", "none", false)).is_ok());
        assert!(with(smtp("smtp.example.com", "starttls", true)).is_ok());
        for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"] {
            assert!(with(smtp(host, "none", true)).is_ok(), "{host}");
        }
        let sms = |url: &str, token: bool| {
            check(RawMfa {
                sms: Some(RawSms {
                    url: url.into(),
                    token: token.then(|| "gw-secret".into()),
                    token_file: None,
                    timeout: default_send_timeout(),
                }),
                ..RawMfa::default()
            })
        };
        let err = sms("http://sms.example.com/send", true).unwrap_err();
        assert!(err.starts_with("mfa.sms.url"), "{err}");
        assert!(sms("http://sms.example.com/send", false).is_ok());
        assert!(sms("https://sms.example.com/send", true).is_ok());
        assert!(sms("http://127.0.0.1:9000/send", true).is_ok());
    }

    #[test]
    fn the_product_name_is_offered_unless_the_manifest_sets_it() {
        let mut own = plugin("b");
        own.config
            .insert(PRODUCT_NAME_KEY.into(), "Own Name".into());
        let mut s = check(RawMfa {
            plugins: vec![plugin("a"), own],
            ..RawMfa::default()
        })
        .unwrap();
        s.offer_product_name("Acme Sign-in");
        assert_eq!(s.plugins[0].config[PRODUCT_NAME_KEY], "Acme Sign-in");
        assert_eq!(s.plugins[1].config[PRODUCT_NAME_KEY], "Own Name");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("4 MiB"), Some(4 << 20));
        assert_eq!(parse_bytes("4MB"), None);
    }
}
