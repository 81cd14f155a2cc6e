//! Owns SAML metadata: reading an IdP's (entity ID, single sign-on and logout endpoints of the
//! HTTP-Redirect binding, signing certificates) and writing the broker's own SP metadata.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use samael::crypto::CertificateDer;
use samael::metadata::EntityDescriptor;

use super::SamlError;
use super::xml::escape;

pub const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub const POST_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// What the broker uses of an IdP's metadata.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    pub entity_id: String,
    /// SingleSignOnService, HTTP-Redirect binding.
    pub sso_url: url::Url,
    /// SingleLogoutService, HTTP-Redirect binding, if the IdP has one.
    pub slo_url: Option<url::Url>,
    /// The only certificates whose keys may sign this IdP's responses.
    pub certs: Vec<CertificateDer>,
}

impl IdpMetadata {
    /// Parses an `EntityDescriptor` with an `IDPSSODescriptor`. No DTD, no entities.
    pub fn parse(xml: &str) -> Result<Self, SamlError> {
        let bad = |m: &str| SamlError::Metadata(m.to_owned());
        super::xml::refuse_dtd(xml)?;
        let ed: EntityDescriptor = xml
            .parse()
            .map_err(|e| SamlError::Metadata(format!("not an EntityDescriptor: {e}")))?;
        let entity_id = ed
            .entity_id
            .filter(|e| !e.is_empty())
            .ok_or_else(|| bad("no entityID"))?;
        let idp = ed
            .idp_sso_descriptors
            .as_ref()
            .and_then(|d| d.first())
            .ok_or_else(|| bad("no IDPSSODescriptor"))?;
        let redirect = |eps: &[samael::metadata::Endpoint]| {
            eps.iter()
                .find(|e| e.binding == REDIRECT_BINDING)
                .map(|e| url::Url::parse(&e.location))
        };
        let sso_url = redirect(&idp.single_sign_on_services)
            .ok_or_else(|| bad("no SingleSignOnService with the HTTP-Redirect binding"))?
            .map_err(|_| bad("SingleSignOnService Location is not a URL"))?;
        let slo_url = match redirect(&idp.single_logout_services) {
            Some(u) => Some(u.map_err(|_| bad("SingleLogoutService Location is not a URL"))?),
            None => None,
        };
        // Keys for signing; keys without a `use` serve both purposes.
        let mut certs = Vec::new();
        for kd in &idp.key_descriptors {
            if !matches!(kd.key_use.as_deref(), None | Some("") | Some("signing")) {
                continue;
            }
            for c in kd
                .key_info
                .x509_data
                .iter()
                .flat_map(|x| x.certificates.iter())
            {
                let clean: String = c.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let der = STANDARD
                    .decode(clean)
                    .map_err(|_| bad("X509Certificate is not base64"))?;
                openssl::x509::X509::from_der(&der)
                    .map_err(|_| bad("X509Certificate is not a certificate"))?;
                certs.push(CertificateDer::from(der));
            }
        }
        if certs.is_empty() {
            return Err(bad("no signing certificate"));
        }
        Ok(Self {
            entity_id,
            sso_url,
            slo_url,
            certs,
        })
    }
}

/// The parts of the broker's SP metadata.
pub struct SpMetadata<'a> {
    pub entity_id: &'a str,
    pub acs_url: &'a str,
    pub slo_url: Option<&'a str>,
    pub signing_cert_pem: Option<&'a str>,
    pub encryption_cert_pem: Option<&'a str>,
    pub name_id_format: &'a str,
}

fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect()
}

impl SpMetadata<'_> {
    /// The `EntityDescriptor` an IdP administrator loads. `WantAssertionsSigned` is `false`
    /// because that is what the ACS enforces: a signature over the Response or over the
    /// Assertion is accepted (either covers the assertion, and only the verified bytes are
    /// consumed); a Response with neither is refused.
    pub fn to_xml(&self) -> String {
        let key = |pem: &str, usage: &str| {
            format!(
                "<md:KeyDescriptor use=\"{usage}\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
                pem_body(pem)
            )
        };
        let mut keys = String::new();
        if let Some(c) = self.signing_cert_pem {
            keys.push_str(&key(c, "signing"));
        }
        if let Some(c) = self.encryption_cert_pem {
            keys.push_str(&key(c, "encryption"));
        }
        let slo = self
            .slo_url
            .map(|u| {
                format!(
                    "<md:SingleLogoutService Binding=\"{REDIRECT_BINDING}\" Location=\"{}\"/>",
                    escape(u)
                )
            })
            .unwrap_or_default();
        format!(
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" ",
                "xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{entity}\">",
                "<md:SPSSODescriptor AuthnRequestsSigned=\"{signed}\" WantAssertionsSigned=\"false\" ",
                "protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">",
                "{keys}{slo}<md:NameIDFormat>{fmt}</md:NameIDFormat>",
                "<md:AssertionConsumerService Binding=\"{post}\" Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>",
                "</md:SPSSODescriptor></md:EntityDescriptor>\n"
            ),
            entity = escape(self.entity_id),
            signed = self.signing_cert_pem.is_some(),
            keys = keys,
            slo = slo,
            fmt = escape(self.name_id_format),
            post = POST_BINDING,
            acs = escape(self.acs_url),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_b64() -> String {
        use crate::domain::test_certs::{rsa, self_signed};
        STANDARD.encode(self_signed(&rsa(2048)).to_der().unwrap())
    }

    #[test]
    fn reads_idp_metadata() {
        let xml = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example/">
<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
<md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>AAAA</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
{}
</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/slo"/>
<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example/post"/>
<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/>
</md:IDPSSODescriptor></md:EntityDescriptor>"#,
            cert_b64()
        );
        let m = IdpMetadata::parse(&xml).unwrap();
        assert_eq!(m.entity_id, "https://idp.example/");
        assert_eq!(m.sso_url.as_str(), "https://idp.example/sso");
        assert_eq!(m.slo_url.unwrap().as_str(), "https://idp.example/slo");
        assert_eq!(m.certs.len(), 1, "only the signing key");
        assert!(matches!(
            IdpMetadata::parse(&xml.replace("use=\"signing\"", "use=\"encryption\"")),
            Err(SamlError::Metadata(_))
        ));
        assert!(matches!(
            IdpMetadata::parse(&format!("<!DOCTYPE x>{xml}")),
            Err(SamlError::Dtd)
        ));
    }

    #[test]
    fn sp_metadata_is_well_formed_and_escaped() {
        let xml = SpMetadata {
            entity_id: "https://id.example/upstream/x/saml/metadata?a=1&b=2",
            acs_url: "https://id.example/upstream/x/saml/acs",
            slo_url: Some("https://id.example/upstream/x/saml/slo"),
            signing_cert_pem: Some(
                "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
            ),
            encryption_cert_pem: None,
            name_id_format: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        }
        .to_xml();
        assert!(
            xml.contains("entityID=\"https://id.example/upstream/x/saml/metadata?a=1&amp;b=2\"")
        );
        assert!(xml.contains("<ds:X509Certificate>QUJD</ds:X509Certificate>"));
        assert!(xml.contains("AuthnRequestsSigned=\"true\""));
        // What the ACS enforces: a Response-only signature is accepted (ADR 7).
        assert!(xml.contains("WantAssertionsSigned=\"false\""));
        let ed: EntityDescriptor = xml.parse().unwrap();
        assert!(ed.sp_sso_descriptors.is_some());
    }
}
