//! Owns an SP's encryption settings in `[[saml_apps]]`: the certificate its assertions are
//! encrypted to (`encryption_cert_file`: one certificate, an RSA key of at least 2048 bits) and
//! the content encryption (`encryption`), read and checked at boot (ADR 22).

use std::path::Path;

use openssl::x509::X509;
use serde::{Deserialize, Serialize};

/// The smallest RSA key assertions are encrypted to.
pub const MIN_RSA_BITS: u32 = 2048;

/// The content encryption of an SP's assertions (the content key is always wrapped with
/// RSA-OAEP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SamlEncryption {
    #[default]
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
    #[serde(rename = "aes128-gcm")]
    Aes128Gcm,
    /// Unauthenticated: weaker, only for an SP that cannot decrypt GCM (the assertion's or the
    /// Response's signature is then all that keeps a changed cipher text from being decrypted).
    #[serde(rename = "aes256-cbc")]
    Aes256Cbc,
}

/// What an SP's assertions are encrypted to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpEncryption {
    /// The SP's certificate (DER), its key RSA of at least [`MIN_RSA_BITS`].
    pub cert: Vec<u8>,
    pub method: SamlEncryption,
}

/// The encryption of an SP from its `encryption_cert_file` and `encryption` keys: `None`
/// without a certificate (assertions in the clear); the error names the key.
pub fn parse(
    cert_file: Option<&Path>,
    method: Option<SamlEncryption>,
) -> Result<Option<SpEncryption>, (&'static str, String)> {
    const KEY: &str = "encryption_cert_file";
    let Some(path) = cert_file else {
        return match method {
            Some(_) => Err((
                "encryption",
                "needs encryption_cert_file (the SP's certificate to encrypt to)".into(),
            )),
            None => Ok(None),
        };
    };
    let pem =
        std::fs::read(path).map_err(|e| (KEY, format!("cannot read {}: {e}", path.display())))?;
    let certs = X509::stack_from_pem(&pem).unwrap_or_default();
    let [cert] = certs.as_slice() else {
        return Err((
            KEY,
            format!(
                "{} must hold exactly one PEM certificate (it holds {})",
                path.display(),
                certs.len()
            ),
        ));
    };
    let der = cert.to_der().map_err(|e| (KEY, e.to_string()))?;
    from_der(&der, method)
        .map(Some)
        .map_err(|m| (KEY, format!("{}: {m}", path.display())))
}

/// The encryption to the certificate `der` (from a file or the SP's metadata): its key must be
/// RSA of at least [`MIN_RSA_BITS`].
pub fn from_der(der: &[u8], method: Option<SamlEncryption>) -> Result<SpEncryption, String> {
    let cert = X509::from_der(der).map_err(|e| e.to_string())?;
    let key = cert.public_key().map_err(|e| e.to_string())?;
    if key.rsa().is_err() {
        return Err(
            "the key is not RSA (assertions are encrypted with RSA-OAEP key transport)".into(),
        );
    }
    if key.bits() < MIN_RSA_BITS {
        return Err(format!(
            "the RSA key has {} bits; at least {MIN_RSA_BITS} are needed",
            key.bits()
        ));
    }
    Ok(SpEncryption {
        cert: der.to_vec(),
        method: method.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;

    fn cert_pem(key: &PKey<Private>) -> Vec<u8> {
        crate::domain::test_certs::self_signed(key)
            .to_pem()
            .unwrap()
    }

    fn rsa(bits: u32) -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
    }

    #[test]
    fn an_rsa_certificate_of_2048_bits_or_more_is_what_is_encrypted_to() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, pem: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let good = file("good.crt", &cert_pem(&rsa(2048)));
        let got = parse(Some(&good), None).unwrap().unwrap();
        assert_eq!(got.method, SamlEncryption::Aes256Gcm);
        assert_eq!(
            X509::from_der(&got.cert)
                .unwrap()
                .public_key()
                .unwrap()
                .bits(),
            2048
        );
        let cbc = parse(Some(&good), Some(SamlEncryption::Aes256Cbc)).unwrap();
        assert_eq!(cbc.unwrap().method, SamlEncryption::Aes256Cbc);
        assert_eq!(parse(None, None).unwrap(), None);

        let ec = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut two = cert_pem(&rsa(2048));
        two.extend(cert_pem(&rsa(2048)));
        for (name, pem, says) in [
            ("small.crt", cert_pem(&rsa(1024)), "1024 bits"),
            ("ec.crt", cert_pem(&ec), "not RSA"),
            (
                "key.pem",
                rsa(2048).private_key_to_pem_pkcs8().unwrap(),
                "holds 0",
            ),
            ("two.crt", two, "holds 2"),
        ] {
            let (key, why) = parse(Some(&file(name, &pem)), None).unwrap_err();
            assert_eq!(key, "encryption_cert_file");
            assert!(why.contains(says), "{name}: {why}");
        }
        let (key, _) = parse(Some(&dir.path().join("missing.crt")), None).unwrap_err();
        assert_eq!(key, "encryption_cert_file");
        // An algorithm without a certificate to encrypt to is a mistake, not a no-op.
        let (key, _) = parse(None, Some(SamlEncryption::Aes128Gcm)).unwrap_err();
        assert_eq!(key, "encryption");
    }

    #[test]
    fn the_config_file_names_the_key_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, small, good) = (
            dir.path().join("c.toml"),
            dir.path().join("small.crt"),
            dir.path().join("good.crt"),
        );
        std::fs::write(&small, cert_pem(&rsa(1024))).unwrap();
        std::fs::write(&good, cert_pem(&rsa(2048))).unwrap();
        let load = |keys: &str| {
            std::fs::write(
                &cfg,
                format!(
                    "[[saml_apps]]\nentity_id = \"https://sp.example/meta\"\nacs_urls = [\"https://sp.example/acs\"]\n{keys}"
                ),
            )
            .unwrap();
            crate::config::Settings::load(Some(&cfg), Vec::new())
        };
        let s = load(&format!(
            "encryption_cert_file = {good:?}\nencryption = \"aes128-gcm\"\n"
        ))
        .unwrap();
        let enc = s.saml_apps[0].encryption.as_ref().unwrap();
        assert_eq!(enc.method, SamlEncryption::Aes128Gcm);
        for (keys, names) in [
            (
                format!("encryption_cert_file = {small:?}\n"),
                "saml_apps[0].encryption_cert_file",
            ),
            (
                "encryption = \"aes256-gcm\"\n".to_owned(),
                "saml_apps[0].encryption",
            ),
            (
                format!("encryption_cert_file = {good:?}\nencryption = \"tripledes-cbc\"\n"),
                "encryption",
            ),
        ] {
            let m = load(&keys).unwrap_err().to_string();
            assert!(m.contains(names), "{keys}: {m}");
        }
    }

    #[test]
    fn the_algorithms_are_named_as_in_the_docs() {
        #[derive(Deserialize)]
        struct T {
            e: SamlEncryption,
        }
        for (name, want) in [
            ("aes256-gcm", SamlEncryption::Aes256Gcm),
            ("aes128-gcm", SamlEncryption::Aes128Gcm),
            ("aes256-cbc", SamlEncryption::Aes256Cbc),
        ] {
            let t: T = toml::from_str(&format!("e = \"{name}\"")).unwrap();
            assert_eq!(t.e, want);
        }
        for bad in ["aes128-cbc", "tripledes-cbc", "rsa-1_5", "Aes256Gcm"] {
            assert!(
                toml::from_str::<T>(&format!("e = \"{bad}\"")).is_err(),
                "{bad}"
            );
        }
    }
}
