//! Owns encrypting the assertions of a service provider registered with an encryption
//! certificate (`[[saml_apps]] encryption_cert_file`): the Assertion, signed first, becomes an
//! EncryptedAssertion to the SP's key with a fresh content key and IV from the IdP's
//! `Entropy`, through `upstream::saml::crypto` (ADR 22).

use openssl::x509::X509;

use super::SamlIdp;
use crate::clock::Entropy;
use crate::config::saml_apps::{SamlApp, SamlEncryption};
use crate::upstream::saml::SamlError;
use crate::upstream::saml::crypto::{ContentEncryption, encrypt_assertion};

/// The XML-Encryption algorithm of an SP's `encryption`.
fn content(method: SamlEncryption) -> ContentEncryption {
    match method {
        SamlEncryption::Aes256Gcm => ContentEncryption::Aes256Gcm,
        SamlEncryption::Aes128Gcm => ContentEncryption::Aes128Gcm,
        SamlEncryption::Aes256Cbc => ContentEncryption::Aes256Cbc,
    }
}

/// `assertion` as the SP `app` gets it: an EncryptedAssertion to its certificate, or
/// unchanged for an SP without one.
pub fn for_sp(
    app: &SamlApp,
    assertion: String,
    entropy: &dyn Entropy,
) -> Result<String, SamlError> {
    let Some(enc) = &app.encryption else {
        return Ok(assertion);
    };
    let key = X509::from_der(&enc.cert)
        .and_then(|c| c.public_key())
        .map_err(|e| SamlError::Encryption(e.to_string()))?;
    encrypt_assertion(&assertion, content(enc.method), &key, entropy)
}

/// Says at start which SPs get unauthenticated AES-CBC (their `encryption = "aes256-cbc"`).
pub(super) fn warn_weak(apps: &[SamlApp]) {
    for app in apps {
        if app
            .encryption
            .as_ref()
            .is_some_and(|e| e.method == SamlEncryption::Aes256Cbc)
        {
            tracing::warn!(
                sp = %app.entity_id,
                "assertions to this SP are encrypted with AES-256-CBC, which is not authenticated; \
                 prefer aes256-gcm if the SP can decrypt it"
            );
        }
    }
}

impl SamlIdp {
    /// The signed `assertion` as the SP `app` gets it (see [`for_sp`]).
    pub fn encrypt_for(&self, app: &SamlApp, assertion: String) -> Result<String, SamlError> {
        for_sp(app, assertion, self.entropy.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OsEntropy;
    use crate::config::saml_apps::{RawSamlApp, SamlAppNameId, SamlSign, SpEncryption};
    use crate::domain::Channel;
    use crate::upstream::saml::crypto::decrypt_assertion;

    const ASSERTION: &str = r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a" Version="2.0"><saml:Subject><saml:NameID>alice@example.com</saml:NameID></saml:Subject></saml:Assertion>"#;

    fn app(encryption: Option<SpEncryption>) -> SamlApp {
        let mut app = SamlApp::parse(&RawSamlApp {
            entity_id: "https://sp.example/meta".into(),
            name: None,
            acs_urls: vec!["https://sp.example/acs".into()],
            metadata_file: None,
            name_id_format: SamlAppNameId::Email,
            sign: SamlSign::Both,
            channel: Channel::Web,
            mfa: None,
            max_sessions_per_user: None,
            on_session_limit: None,
            signing_cert_file: None,
            slo_url: None,
            slo_soap_url: None,
            encryption_cert_file: None,
            encryption: None,
            attributes: None,
            idp_initiated: false,
        })
        .unwrap();
        app.encryption = encryption;
        app
    }

    #[test]
    fn each_setting_is_encrypted_as_named_to_the_sp_only() {
        let key = crate::domain::test_certs::rsa(2048);
        let cert = crate::domain::test_certs::self_signed(&key)
            .to_der()
            .unwrap();
        // Without a certificate: the assertion as it was.
        let plain = for_sp(&app(None), ASSERTION.to_owned(), &OsEntropy).unwrap();
        assert_eq!(plain, ASSERTION);
        for (method, uri) in [
            (
                SamlEncryption::Aes256Gcm,
                "http://www.w3.org/2009/xmlenc11#aes256-gcm",
            ),
            (
                SamlEncryption::Aes128Gcm,
                "http://www.w3.org/2009/xmlenc11#aes128-gcm",
            ),
            (
                SamlEncryption::Aes256Cbc,
                "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
            ),
        ] {
            let sp = app(Some(SpEncryption {
                cert: cert.clone(),
                method,
            }));
            let sealed = for_sp(&sp, ASSERTION.to_owned(), &OsEntropy).unwrap();
            assert!(
                sealed.contains(&format!(r#"Algorithm="{uri}""#)),
                "{sealed}"
            );
            assert!(!sealed.contains("alice"), "{sealed}");
            let cbc = method == SamlEncryption::Aes256Cbc;
            assert_eq!(decrypt_assertion(&sealed, &key, cbc).unwrap(), ASSERTION);
        }
    }
}
