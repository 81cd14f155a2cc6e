//! Owns the unit tests of loading the configuration: the file, the environment overlay and
//! validation.

use secrecy::ExposeSecret;

use super::*;
use crate::domain::policy::SessionLimit;

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
            ("CONCIERGE__MFA__PASSKEY__ENABLED", "true"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(s.session.idle_timeout, Duration::from_secs(2));
    assert_eq!(s.pool_size, 3);
    assert_eq!(s.bind.port(), 9000);
    assert!(s.mfa.passkey.enabled);
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
    let e = Settings::load(None, env(&[("CONCIERGE__SERVER__BIND", "0.0.0.0:8080")])).unwrap_err();
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

/// Previous key-encryption keys come inline, from files or from the environment (a TOML list);
/// a bad one is refused naming its place; none shows in `Debug`.
#[test]
fn previous_key_encryption_keys_are_read_from_every_source() {
    use base64::Engine;
    let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.key");
    std::fs::write(&file, format!("{}\n", b64(3))).unwrap();
    let toml = format!(
        "[provider]\nkey_encryption_key = \"{}\"\nprevious_key_encryption_keys = [\"{}\"]\n\
         previous_key_encryption_key_files = [\"{}\"]\nroot_overlap = \"30m\"\n",
        b64(1),
        b64(2),
        file.display()
    );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, &toml).unwrap();
    let s = Settings::load(Some(&config), env(&[])).unwrap();
    let previous: Vec<[u8; 32]> = s
        .previous_key_encryption_keys
        .iter()
        .map(|k| *k.expose_secret())
        .collect();
    assert_eq!(previous, vec![[2; 32], [3; 32]]);
    assert_eq!(
        s.provider.root_overlap,
        std::time::Duration::from_secs(1800)
    );
    let debug = format!("{s:?}");
    assert!(
        !debug.contains(&b64(2)) && !debug.contains(&b64(3)),
        "{debug}"
    );

    let s = Settings::load(
        None,
        env(&[(
            "CONCIERGE__PROVIDER__PREVIOUS_KEY_ENCRYPTION_KEYS",
            &format!("[\"{}\"]", b64(4)),
        )]),
    )
    .unwrap();
    assert_eq!(s.previous_key_encryption_keys.len(), 1);
    assert_eq!(*s.previous_key_encryption_keys[0].expose_secret(), [4; 32]);

    std::fs::write(
        &config,
        "[provider]\nprevious_key_encryption_keys = [\"c2hvcnQ=\"]\n",
    )
    .unwrap();
    let m = Settings::load(Some(&config), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("provider.previous_key_encryption_keys[0]"),
        "{m}"
    );
    assert!(!m.contains("c2hvcnQ"), "{m}");
    std::fs::write(&config, "[provider]\nroot_overlap = \"8d\"\n").unwrap();
    let m = Settings::load(Some(&config), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(m.contains("provider.root_overlap"), "{m}");
}

#[test]
fn saml_apps_are_checked_and_named_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let app = "[[saml_apps]]\nentity_id = \"https://sp.example/meta\"\nacs_urls = [\"https://sp.example/acs\"]\n";
    std::fs::write(
        &p,
        format!("{app}name_id_format = \"persistent\"\nsign = \"assertion\"\nmfa = \"required\"\n"),
    )
    .unwrap();
    let s = Settings::load(Some(&p), env(&[])).unwrap();
    assert_eq!(s.saml_apps.len(), 1);
    assert_eq!(s.saml_apps[0].sign, saml_apps::SamlSign::Assertion);
    assert_eq!(s.saml_apps[0].mfa, Some(MfaRequirement::Required));

    std::fs::write(&p, format!("{app}{app}")).unwrap();
    let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
    assert!(
        m.contains("saml_apps[1].entity_id") && m.contains("twice"),
        "{m}"
    );

    std::fs::write(
        &p,
        app.replace("https://sp.example/acs", "http://sp.example/acs"),
    )
    .unwrap();
    let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
    assert!(m.contains("saml_apps[0].acs_urls"), "{m}");

    std::fs::write(&p, format!("{app}sign = \"neither\"\n")).unwrap();
    let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
    assert!(m.contains("saml_apps"), "{m}");
}

#[test]
fn saml_attributes_name_formats_and_idp_initiated_are_read_and_errors_name_the_key() {
    use saml_apps::attributes::{AttributeSource, NameFormat};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let app = "[[saml_apps]]\nentity_id = \"https://sp.example/meta\"\nacs_urls = [\"https://sp.example/acs\"]\n";
    let attr =
        |name: &str, more: &str| format!("[[saml_apps.attributes]]\nname = \"{name}\"\n{more}");
    let load = |text: String| {
        std::fs::write(&p, text).unwrap();
        Settings::load(Some(&p), env(&[]))
    };

    // Without a list: today's release (email and name, basic); no IdP-initiated sign-in.
    let s = load(app.to_owned()).unwrap();
    let a = &s.saml_apps[0];
    assert_eq!(a.attributes, saml_apps::attributes::default_release());
    assert_eq!(
        a.attributes
            .iter()
            .map(|x| x.from.clone())
            .collect::<Vec<_>>(),
        [AttributeSource::Email, AttributeSource::Name]
    );
    assert!(
        a.attributes
            .iter()
            .all(|x| x.name_format == NameFormat::Basic)
    );
    assert!(!a.idp_initiated);
    assert_eq!(a.name_id_format, saml_apps::SamlAppNameId::Email);

    let s = load(format!(
        "{app}name_id_format = \"transient\"\nidp_initiated = true\n{}{}{}",
        attr(
            "urn:oid:0.9.2342.19200300.100.1.3",
            "friendly_name = \"mail\"\nname_format = \"uri\"\nfrom = \"email\"\n"
        ),
        attr("memberOf", "from = \"groups\"\n"),
        attr("uid", "name_format = \"unspecified\"\nfrom = \"user_id\"\n"),
    ))
    .unwrap();
    let a = &s.saml_apps[0];
    assert!(a.idp_initiated);
    assert_eq!(a.name_id_format, saml_apps::SamlAppNameId::Transient);
    assert_eq!(a.attributes.len(), 3);
    assert_eq!(a.attributes[0].name, "urn:oid:0.9.2342.19200300.100.1.3");
    assert_eq!(a.attributes[0].friendly_name.as_deref(), Some("mail"));
    assert_eq!(a.attributes[0].name_format, NameFormat::Uri);
    assert_eq!(a.attributes[1].from, AttributeSource::Groups);
    assert_eq!(a.attributes[1].name_format, NameFormat::Basic);
    assert_eq!(a.attributes[2].from, AttributeSource::UserId);

    // An empty list releases nothing.
    let s = load(format!("{app}attributes = []\n")).unwrap();
    assert!(s.saml_apps[0].attributes.is_empty());

    // Each error names the key.
    let cases = [
        (
            format!("{app}{}", attr("mail", "from = \"emial\"\n")),
            "saml_apps[0].attributes[0].from",
        ),
        (
            format!(
                "{app}{}{}",
                attr("mail", "from = \"email\"\n"),
                attr("https://example.com/mail", "from = \"email\"\n")
            ),
            "saml_apps[0].attributes[1]",
        ),
        (
            format!(
                "{app}{}",
                attr("mail", "name_format = \"urn\"\nfrom = \"email\"\n")
            ),
            "saml_apps[0].attributes[0].name_format",
        ),
        (
            format!("{app}{}", attr("mail", "")),
            "saml_apps[0].attributes[0]",
        ),
        (
            format!(
                "{app}{}",
                attr("mail", "from = \"email\"\nfriendly = \"x\"\n")
            ),
            "saml_apps[0].attributes[0].friendly",
        ),
        (
            format!(
                "{app}{}{}",
                attr("mail", "from = \"email\"\n"),
                attr("mail", "from = \"name\"\n")
            ),
            "saml_apps[0].attributes",
        ),
        (
            format!("{app}name_id_format = \"x509\"\n"),
            "saml_apps[0].name_id_format",
        ),
        (
            format!("{app}idp_initiated = \"yes\"\n"),
            "saml_apps[0].idp_initiated",
        ),
    ];
    for (text, key) in cases {
        let m = load(text.clone()).unwrap_err().to_string();
        assert!(m.contains(&format!("key `{key}`")), "{key}: {m}\n{text}");
    }
}

#[test]
fn the_phishing_resistant_level_is_offered_only_where_passkeys_can_work() {
    let offered = |url: &str, enabled: &str| {
        Settings::load(
            None,
            env(&[
                ("CONCIERGE__SERVER__PUBLIC_URL", url),
                ("CONCIERGE__MFA__PASSKEY__ENABLED", enabled),
            ]),
        )
        .unwrap()
        .provider
        .phishing_resistant
    };
    assert!(offered("http://localhost:8080", "true"));
    assert!(!offered("http://localhost:8080", "false"));
    // Browsers refuse an IP address as a WebAuthn RP id: no passkey, no loa:3 in discovery.
    assert!(!offered("http://127.0.0.1:8080", "true"));
}

#[test]
fn hardware_key_needs_passkeys_and_the_trusted_models() {
    // Without `[[mfa.passkey.hardware]]` nothing could pass `hardware_key`: refused at boot,
    // naming the setting that asks for it.
    let err = |pairs: &[(&str, &str)]| {
        Settings::load(None, env(pairs))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let m = err(&[
        ("CONCIERGE__SERVER__PUBLIC_URL", "http://localhost:8080"),
        ("CONCIERGE__MFA__PASSKEY__ENABLED", "true"),
        ("CONCIERGE__MFA__REQUIRED", "hardware_key"),
    ]);
    assert!(
        m.contains("mfa.required") && m.contains("[[mfa.passkey.hardware]]"),
        "{m}"
    );
    let m = err(&[("CONCIERGE__MFA__REQUIRED", "hardware_key")]);
    assert!(m.contains("mfa.required"), "{m}");
}

#[test]
fn kept_upstream_claims_are_checked_and_named_by_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let oidc = |keep: &str| {
        format!(
            "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"https://op.example\"\n\
             client_id = \"c\"\nclient_secret = \"s\"\n[upstreams.claims]\nkeep = {keep}\n"
        )
    };
    std::fs::write(&p, oidc("[\"employee_id\", \"upn\"]")).unwrap();
    let s = Settings::load(Some(&p), env(&[])).unwrap();
    let kept = match &s.upstreams[0].kind {
        UpstreamKind::Oidc(o) => o.claims.keep.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(kept, ["employee_id", "upn"]);
    for bad in ["[\"upn\", \"upn\"]", "[\"\"]", "[\"a b\"]"] {
        std::fs::write(&p, oidc(bad)).unwrap();
        let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(m.contains("upstreams[0].claims.keep"), "{bad}: {m}");
    }
}

#[test]
fn an_idp_that_wants_signed_requests_needs_every_sps_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let cert = dir.path().join("sp.crt");
    let key = crate::domain::test_certs::rsa(2048);
    std::fs::write(
        &cert,
        crate::domain::test_certs::self_signed(&key)
            .to_pem()
            .unwrap(),
    )
    .unwrap();
    let app = |n: u8| {
        format!(
            "[[saml_apps]]\nentity_id = \"https://sp{n}.example/meta\"\n\
             acs_urls = [\"https://sp{n}.example/acs\"]\n"
        )
    };
    let want = "saml_idp_want_authn_requests_signed = true\n";
    // Without the flag an SP without a certificate is fine; with it, it is named.
    std::fs::write(&p, app(1)).unwrap();
    assert!(
        !Settings::load(Some(&p), env(&[]))
            .unwrap()
            .saml_idp_want_authn_requests_signed
    );
    std::fs::write(
        &p,
        format!(
            "{want}{}signing_cert_file = {:?}\n{}",
            app(1),
            cert.display().to_string(),
            app(2)
        ),
    )
    .unwrap();
    let m = Settings::load(Some(&p), env(&[])).unwrap_err().to_string();
    assert!(m.contains("saml_apps[1].signing_cert_file"), "{m}");
    std::fs::write(
        &p,
        format!(
            "{want}{}signing_cert_file = {:?}\n",
            app(1),
            cert.display().to_string()
        ),
    )
    .unwrap();
    assert!(
        Settings::load(Some(&p), env(&[]))
            .unwrap()
            .saml_idp_want_authn_requests_signed
    );
}
