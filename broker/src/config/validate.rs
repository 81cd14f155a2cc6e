//! Owns validation: [`Settings::validate`] turns [`RawSettings`] into typed [`Settings`], each
//! error naming its key and where it came from.

use super::provider::ProviderSettings;
use super::{
    ConfigError, DatabaseUrl, OidcUpstreamConfig, RawChannelSession, RawRateLimit, RawSettings,
    SessionSettings, Settings, UpstreamClientAuth, UpstreamConfig, UpstreamKind, http,
    https_or_loopback, oidc_auth, saml, secret,
};
use crate::domain::client::Client;
use crate::domain::jose::Alg;
use crate::domain::policy::{ChannelPolicy, SessionLimit};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

impl Settings {
    pub(super) fn validate(
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
        let mut previous_key_encryption_keys = Vec::new();
        let previous = p
            .previous_key_encryption_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    format!("provider.previous_key_encryption_keys[{i}]"),
                    Ok::<_, ConfigError>(k.clone()),
                )
            })
            .chain(
                p.previous_key_encryption_key_files
                    .iter()
                    .enumerate()
                    .map(|(i, path)| {
                        let key = format!("provider.previous_key_encryption_key_files[{i}]");
                        let read = std::fs::read_to_string(path)
                            .map(SecretString::from)
                            .map_err(|e| {
                                invalid(&key, format!("cannot read {}: {e}", path.display()))
                            });
                        (key, read)
                    }),
            );
        for (key, value) in previous {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value?.expose_secret().trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    invalid(
                        &key,
                        "must be 32 bytes, base64 (e.g. `openssl rand -base64 32`)".into(),
                    )
                })?;
            previous_key_encryption_keys.push(std::sync::Arc::new(SecretBox::new(Box::new(bytes))));
        }
        if p.root_overlap > Duration::from_secs(7 * 86400) {
            return Err(invalid(
                "provider.root_overlap",
                "must be at most 7d".into(),
            ));
        }
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
        let mut saml_apps = Vec::new();
        for (i, a) in raw.saml_apps.iter().enumerate() {
            let app = super::saml_apps::SamlApp::parse(a)
                .map_err(|(key, m)| invalid(&format!("saml_apps[{i}].{key}"), m))?;
            if saml_apps
                .iter()
                .any(|x: &super::saml_apps::SamlApp| x.entity_id == app.entity_id)
            {
                return Err(invalid(
                    &format!("saml_apps[{i}].entity_id"),
                    format!("`{}` is defined twice", app.entity_id),
                ));
            }
            if raw.saml_idp_want_authn_requests_signed && app.signing_certs.is_empty() {
                return Err(invalid(
                    &format!("saml_apps[{i}].signing_cert_file"),
                    "is required: saml_idp_want_authn_requests_signed is true (or metadata_file \
                     with a signing certificate)"
                        .into(),
                ));
            }
            saml_apps.push(app);
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
            root_overlap: p.root_overlap,
            // Passkeys are offered only where the public URL can be a WebAuthn relying party (a
            // host name: browsers refuse an IP address; `mfa::passkey::offer` warns).
            phishing_resistant: raw.mfa.passkey.enabled
                && matches!(public_url.host(), Some(url::Host::Domain(d)) if !d.is_empty()),
        };
        let limits = rate_limits(&raw.rate_limit, &invalid)?;
        let mut mfa = raw.mfa.clone().validate(invalid)?;
        let trust: http::TrustAnchors = match &raw.http.ca_file {
            None => Default::default(),
            Some(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|pem| http::TrustAnchors::from_pem(&pem))
                .map_err(|m| invalid("http.ca_file", m))?,
        };
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
                    super::keep::check_keep(&u.claims.keep)
                        .map_err(|m| invalid(&key("claims.keep"), m))?;
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
        // `hardware_key` counts only keys attested as a listed model: without a list (or
        // without passkeys) nothing could pass it.
        let hardware_key = Some(crate::domain::policy::MfaRequirement::HardwareKey);
        let wants_hardware = [(String::from("mfa.required"), Some(mfa.required))]
            .into_iter()
            .chain(
                clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("clients[{i}].mfa"), c.mfa)),
            )
            .chain(
                saml_apps
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("saml_apps[{i}].mfa"), a.mfa)),
            )
            .chain(
                upstreams
                    .iter()
                    .enumerate()
                    .map(|(i, u)| (format!("upstreams[{i}].mfa"), u.mfa)),
            )
            .find(|(_, m)| *m == hardware_key);
        if let Some((key, _)) = wants_hardware
            && (!mfa.passkey.enabled || mfa.passkey.hardware.is_empty())
        {
            return Err(invalid(
                &key,
                "`hardware_key` needs passkeys (`[mfa.passkey] enabled = true`) and the trusted models (`[[mfa.passkey.hardware]]`)".into(),
            ));
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
            previous_key_encryption_keys,
            clients,
            saml_apps,
            saml_idp_want_authn_requests_signed: raw.saml_idp_want_authn_requests_signed,
            saml_apps_metadata_refresh: raw
                .saml_apps_metadata_refresh
                .filter(|d| !d.is_zero())
                .unwrap_or(std::time::Duration::from_secs(24 * 3600)),
            limits,
            audit: raw.audit,
            admin: raw.admin,
            upstreams,
            mfa: super::mfa::MfaSettings {
                trust: trust.clone(),
                ..mfa
            },
            http: trust,
            config_path: None,
        })
    }
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
        mfa_poll_per_account: rate("mfa_poll_per_account", &r.mfa_poll_per_account)?,
        lockout: LockoutPolicy {
            after: r.lockout_after,
            delay: r.lockout_delay,
            max_delay: r.lockout_max_delay,
            window: r.failure_window,
        },
        trusted_proxies,
    })
}
