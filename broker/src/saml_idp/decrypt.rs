//! Owns the IdP's encryption key: an RSA-2048 key pair made at the first start and sealed in
//! `secrets` (`saml_idp.encryption.v1`, never used to sign), its certificate published in the
//! metadata with `use="encryption"` and the methods it decrypts, and what it decrypts: an SP's
//! `EncryptedID` in a LogoutRequest (SAML Core 3.7.1, 6.3), read only from the bytes the SP's
//! signature covers, with the key-transport and content checks of the SAML SP side
//! (`upstream::saml::crypto::decrypt_assertion`: RSA-OAEP only, never PKCS#1 v1.5).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use super::{IdpError, key_err, new_key_pair, sealed_secret};
use crate::clock::{Entropy, UnixTime};
use crate::domain::kek::KeyEncryptionKeys;
use crate::storage::Store;
use crate::upstream::saml::SamlError;
use crate::upstream::saml::crypto::{ContentEncryption, decrypt_assertion};
use crate::upstream::saml::xml::ASSERTION_NS;

/// The name of the sealed key pair in `secrets`.
pub const ENCRYPTION_SECRET: &str = "saml_idp.encryption.v1";

/// RSA-OAEP key transport, the one the IdP asks for (it also takes `xmlenc11#rsa-oaep`).
const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";

/// The IdP's decryption key and its certificate.
pub struct DecryptionKey {
    key: PKey<Private>,
    /// Base64 DER, as the metadata writes it.
    cert_b64: String,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The IdP's encryption key pair, made and sealed under `kek` by the first instance to start.
pub fn load(
    store: &dyn Store,
    kek: &KeyEncryptionKeys,
    entropy: &dyn Entropy,
    now: UnixTime,
) -> Result<DecryptionKey, IdpError> {
    let pem = sealed_secret(store, kek, entropy, now, ENCRYPTION_SECRET, || {
        new_key_pair(entropy)
    })?;
    let cert = X509::from_pem(&pem).map_err(key_err)?;
    Ok(DecryptionKey {
        key: PKey::private_key_from_pem(&pem).map_err(key_err)?,
        cert_b64: STANDARD.encode(cert.to_der().map_err(key_err)?),
    })
}

impl DecryptionKey {
    /// The metadata's `KeyDescriptor use="encryption"`: the certificate, then the methods the
    /// IdP decrypts, preferred first (AES-GCM; AES-CBC only inside a signed message).
    pub fn key_descriptor(&self) -> String {
        let methods: String = [ContentEncryption::Aes256Gcm, ContentEncryption::Aes128Gcm]
            .iter()
            .map(|m| m.uri())
            .chain([RSA_OAEP_MGF1P])
            .map(|uri| format!(r#"<md:EncryptionMethod Algorithm="{uri}"/>"#))
            .collect();
        format!(
            r#"<md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>{methods}</md:KeyDescriptor>"#,
            self.cert_b64
        )
    }

    /// The NameID value in the `EncryptedID` of `verified` (the bytes an SP's signature covers:
    /// AES-CBC is then no padding oracle).
    pub fn name_id(&self, verified: &str) -> Result<String, SamlError> {
        let xml = decrypt_assertion(verified, &self.key, true)?;
        name_id_value(&xml)
    }
}

/// The text of a decrypted `saml:NameID` (its only content).
fn name_id_value(xml: &str) -> Result<String, SamlError> {
    let bad = |m: &str| SamlError::Decryption(format!("the EncryptedID: {m}"));
    let mut reader = NsReader::from_str(xml);
    let mut depth = 0usize;
    let mut value = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?;
        match event {
            Event::Start(e) if depth == 0 => {
                let (ns, local) = reader.resolver().resolve_element(e.name());
                let saml = matches!(ns, ResolveResult::Bound(n) if n.0 == ASSERTION_NS.as_bytes());
                if !saml || local.as_ref() != b"NameID" {
                    return Err(bad("it holds no NameID"));
                }
                depth = 1;
            }
            Event::Text(t) if depth == 1 => {
                let text = t
                    .xml_content(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|e| SamlError::Malformed(e.to_string()))?;
                value.push_str(&text);
            }
            // `&amp;`, `&#38;` …: the predefined and character references only.
            Event::GeneralRef(r) if depth == 1 => {
                let name = r
                    .decode()
                    .map_err(|e| SamlError::Malformed(e.to_string()))?;
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or(bad("an entity reference"))?
                        .to_owned(),
                };
                value.push_str(&resolved);
            }
            Event::End(_) if depth == 1 => depth = 2,
            Event::Eof => break,
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Decl(_) if depth == 0 => {}
            _ => return Err(bad("more than one NameID")),
        }
    }
    let value = value.trim();
    if value.is_empty() || depth != 2 {
        return Err(bad("an empty NameID"));
    }
    Ok(value.to_owned())
}

/// `xml` (a LogoutRequest) identifies its subject by a `saml:EncryptedID` child of the root.
pub fn has_encrypted_id(xml: &str) -> Result<bool, SamlError> {
    let mut reader = NsReader::from_str(xml);
    let mut depth = 0usize;
    loop {
        match reader
            .read_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?
        {
            Event::Start(e) => {
                if depth == 1 {
                    let (ns, local) = reader.resolver().resolve_element(e.name());
                    if matches!(ns, ResolveResult::Bound(n) if n.0 == ASSERTION_NS.as_bytes())
                        && local.as_ref() == b"EncryptedID"
                    {
                        return Ok(true);
                    }
                }
                depth += 1;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => return Ok(false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_name_id_and_nothing_else() {
        let ok = format!(
            r#"<saml:NameID xmlns:saml="{ASSERTION_NS}" Format="x"> a@example.com </saml:NameID>"#
        );
        assert_eq!(name_id_value(&ok).unwrap(), "a@example.com");
        let two = format!("{ok}{ok}");
        assert!(name_id_value(&two).is_err());
        let other = format!(r#"<saml:Issuer xmlns:saml="{ASSERTION_NS}">a</saml:Issuer>"#);
        assert!(name_id_value(&other).is_err());
        let no_ns = "<NameID>a@example.com</NameID>";
        assert!(name_id_value(no_ns).is_err());
        let empty = format!(r#"<saml:NameID xmlns:saml="{ASSERTION_NS}"> </saml:NameID>"#);
        assert!(name_id_value(&empty).is_err());
        let nested = format!(r#"<saml:NameID xmlns:saml="{ASSERTION_NS}"><b/>a</saml:NameID>"#);
        assert!(name_id_value(&nested).is_err());
        let refs =
            format!(r#"<saml:NameID xmlns:saml="{ASSERTION_NS}">a&amp;b&#38;c</saml:NameID>"#);
        assert_eq!(name_id_value(&refs).unwrap(), "a&b&c");
        let entity = format!(r#"<saml:NameID xmlns:saml="{ASSERTION_NS}">a&x;</saml:NameID>"#);
        assert!(name_id_value(&entity).is_err());
    }

    #[test]
    fn finds_an_encrypted_id_only_as_a_child_of_the_root() {
        let child = format!(
            r#"<p:LogoutRequest xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:s="{ASSERTION_NS}"><s:Issuer>i</s:Issuer><s:EncryptedID><x/></s:EncryptedID></p:LogoutRequest>"#
        );
        assert!(has_encrypted_id(&child).unwrap());
        let deeper = format!(
            r#"<p:LogoutRequest xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:s="{ASSERTION_NS}"><p:Extensions><s:EncryptedID><x/></s:EncryptedID></p:Extensions></p:LogoutRequest>"#
        );
        assert!(!has_encrypted_id(&deeper).unwrap());
    }
}
