//! Owns the `kind = "saml"` keys of `[[upstreams]]`: IdP metadata source, SP keys read and
//! checked at boot, NameID format, IdP-initiated login, attribute mapping (whose file shape,
//! [`SamlAttributeMapping`], is in `raw.rs` with the OIDC claim mapping).

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::{RawUpstream, SamlAttributeMapping};
use crate::domain::SecretString;

/// Where the IdP's metadata comes from.
#[derive(Debug, Clone)]
pub enum SamlMetadataSource {
    /// Fetched at the first login, then again every `metadata_refresh` (the last good copy is
    /// kept when a fetch fails).
    Url(Url),
    /// Read once at boot.
    File { path: PathBuf, xml: String },
}

/// A PEM private key and its certificate, read and matched at boot.
#[derive(Debug, Clone)]
pub struct SpKeyPair {
    pub key_pem: SecretString,
    pub cert_pem: String,
}

/// The NameID format the broker asks for (`name_id_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameIdFormat {
    Persistent,
    EmailAddress,
    Transient,
}

impl NameIdFormat {
    pub fn urn(self) -> &'static str {
        match self {
            Self::Persistent => "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
            Self::EmailAddress => "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
            Self::Transient => "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
        }
    }
}

/// `kind = "saml"`, validated.
#[derive(Debug, Clone)]
pub struct SamlUpstreamConfig {
    /// The broker's entity ID at this IdP (default: its SP metadata URL).
    pub sp_entity_id: String,
    pub metadata: SamlMetadataSource,
    pub metadata_refresh: Duration,
    /// Signs AuthnRequests and LogoutRequests; published in the SP metadata.
    pub signing: Option<SpKeyPair>,
    /// Decrypts EncryptedAssertions; its certificate is published for encryption.
    pub decryption: Option<SpKeyPair>,
    pub name_id_format: NameIdFormat,
    pub allow_idp_initiated: bool,
    pub attributes: SamlAttributeMapping,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn key_pair(
    key: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    names: (&str, &str),
    invalid: &impl Fn(&str, String) -> super::ConfigError,
) -> Result<Option<SpKeyPair>, super::ConfigError> {
    let (key_path, cert_path) = match (key, cert) {
        (None, None) => return Ok(None),
        (Some(k), Some(c)) => (k, c),
        (Some(_), None) => return Err(invalid(names.1, format!("is required with {}", names.0))),
        (None, Some(_)) => return Err(invalid(names.0, format!("is required with {}", names.1))),
    };
    let key_pem = read(key_path).map_err(|m| invalid(names.0, m))?;
    let cert_pem = read(cert_path).map_err(|m| invalid(names.1, m))?;
    let pkey = openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes())
        .map_err(|_| invalid(names.0, "is not a PEM private key".into()))?;
    if pkey.rsa().is_err() {
        return Err(invalid(names.0, "must be an RSA key".into()));
    }
    let x509 = openssl::x509::X509::from_pem(cert_pem.as_bytes())
        .map_err(|_| invalid(names.1, "is not a PEM certificate".into()))?;
    let matches = x509
        .public_key()
        .map(|p| p.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(invalid(
            names.1,
            format!("is not the certificate of {}", names.0),
        ));
    }
    Ok(Some(SpKeyPair {
        key_pem: SecretString::new(key_pem),
        cert_pem,
    }))
}

/// Checks one `kind = "saml"` table; `invalid(key, message)` names the key of this upstream.
pub(super) fn validate(
    u: &RawUpstream,
    public_url: &Url,
    invalid: impl Fn(&str, String) -> super::ConfigError,
) -> Result<SamlUpstreamConfig, super::ConfigError> {
    for (set, k) in [
        (u.issuer.is_some(), "issuer"),
        (u.client_id.is_some(), "client_id"),
        (u.client_secret.is_some(), "client_secret"),
        (u.client_secret_file.is_some(), "client_secret_file"),
    ] {
        if set {
            return Err(invalid(
                k,
                "is an OpenID Connect key, not for kind = \"saml\"".into(),
            ));
        }
    }
    let metadata = match (&u.metadata_url, &u.metadata_file) {
        (Some(url), None) => {
            let parsed = Url::parse(url)
                .map_err(|e| invalid("metadata_url", format!("`{url}` is not a URL: {e}")))?;
            if !super::https_or_loopback(&parsed) {
                return Err(invalid(
                    "metadata_url",
                    "must be https (http only on loopback)".into(),
                ));
            }
            SamlMetadataSource::Url(parsed)
        }
        (None, Some(path)) => {
            // Read here; parsed by the connector (`startup::check_connectors` names this key).
            let xml = read(path).map_err(|m| invalid("metadata_file", m))?;
            SamlMetadataSource::File {
                path: path.clone(),
                xml,
            }
        }
        _ => {
            return Err(invalid(
                "metadata_url",
                "exactly one of metadata_url and metadata_file is required for kind = \"saml\""
                    .into(),
            ));
        }
    };
    let metadata_refresh = u.metadata_refresh.unwrap_or(Duration::from_secs(3600));
    if metadata_refresh < Duration::from_secs(60)
        || metadata_refresh > Duration::from_secs(7 * 86_400)
    {
        return Err(invalid(
            "metadata_refresh",
            "must be between 1m and 7d".into(),
        ));
    }
    let sp_entity_id = match &u.sp_entity_id {
        Some(e) if e.trim().is_empty() || e.len() > 1024 => {
            return Err(invalid("sp_entity_id", "must be 1-1024 characters".into()));
        }
        Some(e) => e.clone(),
        None => public_url
            .join(&format!("/upstream/{}/saml/metadata", u.id))
            .map_err(|e| invalid("sp_entity_id", e.to_string()))?
            .to_string(),
    };
    let signing = key_pair(
        &u.signing_key_file,
        &u.signing_cert_file,
        ("signing_key_file", "signing_cert_file"),
        &invalid,
    )?;
    let decryption = key_pair(
        &u.decryption_key_file,
        &u.decryption_cert_file,
        ("decryption_key_file", "decryption_cert_file"),
        &invalid,
    )?;
    let name_id_format = match u.name_id_format.as_deref().unwrap_or("persistent") {
        "persistent" => NameIdFormat::Persistent,
        "emailAddress" => NameIdFormat::EmailAddress,
        "transient" => NameIdFormat::Transient,
        other => {
            return Err(invalid(
                "name_id_format",
                format!("`{other}`: use persistent, emailAddress or transient"),
            ));
        }
    };
    // A transient NameID changes at every login: it cannot be the stable subject.
    if name_id_format == NameIdFormat::Transient && u.attributes.subject.is_none() {
        return Err(invalid(
            "attributes.subject",
            "is required with name_id_format = \"transient\" (a transient NameID is not a stable subject)"
                .into(),
        ));
    }
    for (k, v) in [
        ("attributes.email", &u.attributes.email),
        ("attributes.name", &u.attributes.name),
        ("attributes.groups", &u.attributes.groups),
    ] {
        if v.trim().is_empty() {
            return Err(invalid(k, "must not be empty".into()));
        }
    }
    super::keep::check_keep(&u.attributes.keep).map_err(|m| invalid("attributes.keep", m))?;
    Ok(SamlUpstreamConfig {
        sp_entity_id,
        metadata,
        metadata_refresh,
        signing,
        decryption,
        name_id_format,
        allow_idp_initiated: u.allow_idp_initiated,
        attributes: u.attributes.clone(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Settings, UpstreamKind};

    fn pem_pair(dir: &std::path::Path, name: &str) -> (String, String) {
        use crate::domain::test_certs::{rsa, self_signed};
        let key = rsa(2048);
        let cert = self_signed(&key);
        let (k, c) = (
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.crt")),
        );
        std::fs::write(&k, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(&c, cert.to_pem().unwrap()).unwrap();
        (k.display().to_string(), c.display().to_string())
    }

    fn load(dir: &std::path::Path, upstream: &str) -> Result<Settings, String> {
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            format!("[[upstreams]]\nid = \"corp\"\nkind = \"saml\"\n{upstream}"),
        )
        .unwrap();
        Settings::load(Some(&p), Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn saml_upstreams_are_checked_at_boot() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = pem_pair(dir.path(), "sp");
        let (_, other_cert) = pem_pair(dir.path(), "other");
        let url = "metadata_url = \"https://idp.example/metadata\"\n";

        let s = load(dir.path(), url).unwrap();
        let UpstreamKind::Saml(c) = &s.upstreams[0].kind else {
            panic!("not saml");
        };
        assert_eq!(
            c.sp_entity_id,
            "http://127.0.0.1:8080/upstream/corp/saml/metadata"
        );
        assert!(!c.allow_idp_initiated && c.signing.is_none());
        assert_eq!(c.metadata_refresh.as_secs(), 3600);

        for (extra, key_named) in [
            ("", "upstreams[0].metadata_url"),
            ("metadata_url = \"http://idp.example/m\"\n", "metadata_url"),
            ("metadata_file = \"/nonexistent.xml\"\n", "metadata_file"),
            (
                &format!("{url}metadata_refresh = \"10s\"\n"),
                "metadata_refresh",
            ),
            (
                &format!("{url}name_id_format = \"x509\"\n"),
                "name_id_format",
            ),
            (
                &format!("{url}name_id_format = \"transient\"\n"),
                "attributes.subject",
            ),
            (
                &format!("{url}signing_key_file = {key:?}\n"),
                "signing_cert_file",
            ),
            (
                &format!("{url}signing_key_file = {key:?}\nsigning_cert_file = {other_cert:?}\n"),
                "signing_cert_file",
            ),
            (&format!("{url}issuer = \"https://x\"\n"), "issuer"),
        ] {
            let m = load(dir.path(), extra).unwrap_err();
            assert!(m.contains(key_named), "{extra}: {m}");
        }
        let s = load(
            dir.path(),
            &format!("{url}signing_key_file = {key:?}\nsigning_cert_file = {cert:?}\nname_id_format = \"transient\"\n[upstreams.attributes]\nsubject = \"uid\"\n"),
        )
        .unwrap();
        let UpstreamKind::Saml(c) = &s.upstreams[0].kind else {
            panic!("not saml");
        };
        assert!(c.signing.is_some());
        assert!(
            !format!("{c:?}").contains("PRIVATE KEY"),
            "the key is redacted"
        );
    }
}
