//! Owns the validation of how the broker authenticates at an OIDC upstream's token endpoint
//! (`token_endpoint_auth_method`, and the key of `private_key_jwt`).

use crate::domain::SecretString;

use super::{ConfigError, RawUpstream};

/// Client authentication at an upstream's token endpoint (OIDC Core 9).
#[derive(Debug, Clone, Default)]
pub enum UpstreamClientAuth {
    /// HTTP Basic with the client id and secret (the default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the broker's key for this upstream (RFC 7523 2.2): RS256 for an RSA
    /// key, ES256 for a P-256 key.
    PrivateKeyJwt {
        /// PKCS#8 DER of the private key.
        key_der: SecretBytes,
        /// The `kid` of the assertion's header (default: the RFC 7638 thumbprint).
        kid: Option<String>,
    },
}

/// Key bytes whose `Debug` does not show them.
#[derive(Clone)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

pub(super) fn validate(
    u: &RawUpstream,
    invalid: impl Fn(&str, String) -> ConfigError,
) -> Result<UpstreamClientAuth, ConfigError> {
    let method = u
        .token_endpoint_auth_method
        .as_deref()
        .unwrap_or("client_secret_basic");
    let no_key = || {
        if u.client_assertion_key_file.is_some() || u.client_assertion_kid.is_some() {
            Err(invalid(
                "client_assertion_key_file",
                "only with token_endpoint_auth_method = \"private_key_jwt\"".into(),
            ))
        } else {
            Ok(())
        }
    };
    match method {
        "client_secret_basic" => no_key().map(|()| UpstreamClientAuth::ClientSecretBasic),
        "client_secret_post" => no_key().map(|()| UpstreamClientAuth::ClientSecretPost),
        "private_key_jwt" => {
            let path = u.client_assertion_key_file.as_ref().ok_or_else(|| {
                invalid(
                    "client_assertion_key_file",
                    "is required with token_endpoint_auth_method = \"private_key_jwt\"".into(),
                )
            })?;
            let pem = SecretString::new(std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "client_assertion_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?);
            let bad = |m: String| invalid("client_assertion_key_file", m);
            let key = openssl::pkey::PKey::private_key_from_pem(pem.expose().as_bytes())
                .map_err(|_| bad("is not a PEM private key".into()))?;
            let ok = match key.id() {
                openssl::pkey::Id::RSA => key.bits() >= 2048,
                openssl::pkey::Id::EC => {
                    key.ec_key().ok().and_then(|k| k.group().curve_name())
                        == Some(openssl::nid::Nid::X9_62_PRIME256V1)
                }
                _ => false,
            };
            if !ok {
                return Err(bad(
                    "must be an RSA key (2048 bits or more) or a P-256 key".into()
                ));
            }
            let der = key
                .private_key_to_pkcs8()
                .map_err(|_| bad("cannot be encoded as PKCS#8".into()))?;
            Ok(UpstreamClientAuth::PrivateKeyJwt {
                key_der: SecretBytes(der),
                kid: u.client_assertion_kid.clone().filter(|k| !k.is_empty()),
            })
        }
        other => Err(invalid(
            "token_endpoint_auth_method",
            format!("`{other}`: use client_secret_basic, client_secret_post or private_key_jwt"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::UpstreamClientAuth;
    use crate::config::{Settings, UpstreamKind};

    fn load(dir: &std::path::Path, extra: &str) -> Result<Settings, String> {
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            format!(
                "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n{extra}"
            ),
        )
        .unwrap();
        Settings::load(Some(&p), Vec::new()).map_err(|e| e.to_string())
    }

    fn auth(s: &Settings) -> &UpstreamClientAuth {
        let UpstreamKind::Oidc(o) = &s.upstreams[0].kind else {
            panic!("not oidc");
        };
        &o.client_auth
    }

    #[test]
    fn client_authentication_is_checked_at_boot() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        std::fs::write(&key, rsa.private_key_to_pem().unwrap()).unwrap();
        let small = dir.path().join("small.pem");
        let rsa1024 = openssl::rsa::Rsa::generate(1024).unwrap();
        std::fs::write(&small, rsa1024.private_key_to_pem().unwrap()).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();

        let s = load(dir.path(), "client_secret = \"s\"\n").unwrap();
        assert!(matches!(auth(&s), UpstreamClientAuth::ClientSecretBasic));
        let s = load(
            dir.path(),
            "client_secret = \"s\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n",
        )
        .unwrap();
        assert!(matches!(auth(&s), UpstreamClientAuth::ClientSecretPost));
        // private_key_jwt needs no secret.
        let s = load(
            dir.path(),
            &format!(
                "token_endpoint_auth_method = \"private_key_jwt\"\nclient_assertion_key_file = {key:?}\n"
            ),
        )
        .unwrap();
        assert!(matches!(
            auth(&s),
            UpstreamClientAuth::PrivateKeyJwt { kid: None, .. }
        ));
        assert!(!format!("{:?}", auth(&s)).contains("MII"), "key redacted");

        for (extra, named) in [
            (
                "client_secret = \"s\"\ntoken_endpoint_auth_method = \"tls_client_auth\"\n"
                    .to_owned(),
                "token_endpoint_auth_method",
            ),
            (
                "token_endpoint_auth_method = \"private_key_jwt\"\n".to_owned(),
                "client_assertion_key_file",
            ),
            (
                format!(
                    "token_endpoint_auth_method = \"private_key_jwt\"\nclient_assertion_key_file = {small:?}\n"
                ),
                "client_assertion_key_file",
            ),
            (
                format!("client_secret = \"s\"\nclient_assertion_key_file = {key:?}\n"),
                "client_assertion_key_file",
            ),
            (
                "token_endpoint_auth_method = \"client_secret_post\"\n".to_owned(),
                "client_secret",
            ),
            (
                format!("client_secret = \"s\"\n[http]\nca_file = {ca:?}\n"),
                "http.ca_file",
            ),
        ] {
            let m = load(dir.path(), &extra).unwrap_err();
            assert!(m.contains(named), "{extra}: {m}");
        }
    }
}
