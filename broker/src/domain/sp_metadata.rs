//! Owns a SAML service provider's metadata parsed at the edge: its entity ID, the
//! AssertionConsumerService URLs of the HTTP-POST binding (the only places a Response may go),
//! its SingleLogoutService (HTTP-Redirect, and SOAP for back-channel logout), its signing and encryption certificates and whether
//! it signs its AuthnRequests. No DTD, no entities, at most [`MAX_SP_METADATA`] bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use samael::metadata::EntityDescriptor;
use url::Url;

/// The largest SP metadata document read (a file, a URL's answer, a stored copy).
pub const MAX_SP_METADATA: usize = 1024 * 1024;

const POST_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const METADATA_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const SOAP_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpMetadataError {
    #[error("larger than 1 MiB")]
    TooLarge,
    #[error("a DTD or an entity declaration (refused)")]
    Dtd,
    #[error("not an EntityDescriptor: {0}")]
    NotEntityDescriptor(String),
    #[error("no entityID")]
    NoEntityId,
    #[error("no SPSSODescriptor")]
    NoSpDescriptor,
    #[error("no AssertionConsumerService with the HTTP-POST binding")]
    NoPostAcs,
    #[error("{0}")]
    Location(String),
    #[error("X509Certificate: {0}")]
    Certificate(String),
    #[error("AuthnRequestsSigned is true but no signing certificate is given")]
    SignedWithoutCertificate,
    #[error("expired: its validUntil ({0}) is past")]
    Expired(String),
}

/// What the broker uses of an SP's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpMetadata {
    pub entity_id: String,
    /// HTTP-POST AssertionConsumerServices: the `isDefault` one first, then by `index`.
    pub acs_urls: Vec<Url>,
    /// The first SingleLogoutService of the HTTP-Redirect binding.
    pub slo_url: Option<Url>,
    /// The first SingleLogoutService of the SOAP binding (back-channel logout), when https.
    pub slo_soap_url: Option<Url>,
    /// DER certificates of the keys with `use="signing"` or no `use`.
    pub signing_certs: Vec<Vec<u8>>,
    /// DER of the first certificate with `use="encryption"` or no `use`.
    pub encryption_cert: Option<Vec<u8>>,
    /// `AuthnRequestsSigned="true"`.
    pub authn_requests_signed: bool,
    /// The earlier of the EntityDescriptor's and the SPSSODescriptor's `validUntil` (Unix
    /// seconds): the metadata is not to be used after.
    pub valid_until: Option<i64>,
}

/// True when `doc` holds a DTD or an entity declaration (anywhere, any case).
pub fn has_dtd(doc: &str) -> bool {
    let upper = doc.to_ascii_uppercase();
    upper.contains("<!DOCTYPE") || upper.contains("<!ENTITY")
}

/// An endpoint of an SP: https (http only on localhost), no fragment, no user info.
pub fn sp_endpoint(u: &str) -> Result<Url, String> {
    let url = Url::parse(u).map_err(|e| format!("`{u}`: {e}"))?;
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if !(url.scheme() == "https" || url.scheme() == "http" && local)
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "`{u}` must be https (http only on localhost), without a fragment or user info"
        ));
    }
    Ok(url)
}

fn certificate(text: &str) -> Result<Vec<u8>, SpMetadataError> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(clean)
        .map_err(|_| SpMetadataError::Certificate("not base64".into()))?;
    openssl::x509::X509::from_der(&der)
        .map_err(|_| SpMetadataError::Certificate("not a certificate".into()))?;
    Ok(der)
}

/// The document's root is a metadata `EntityDescriptor` (serde would read any root element).
fn root_is_entity_descriptor(xml: &str) -> Result<(), SpMetadataError> {
    use quick_xml::events::Event;
    use quick_xml::name::{Namespace, ResolveResult};
    let not = |m: &str| SpMetadataError::NotEntityDescriptor(m.to_owned());
    let mut reader = quick_xml::NsReader::from_str(xml);
    loop {
        match reader.read_resolved_event() {
            Ok((ns, Event::Start(e) | Event::Empty(e))) => {
                let md =
                    matches!(ns, ResolveResult::Bound(Namespace(n)) if n == METADATA_NS.as_bytes());
                return if md && e.local_name().as_ref() == b"EntityDescriptor" {
                    Ok(())
                } else {
                    Err(not("the root element is not md:EntityDescriptor"))
                };
            }
            Ok((_, Event::Eof)) => return Err(not("no element")),
            Ok(_) => {}
            Err(e) => return Err(not(&e.to_string())),
        }
    }
}

impl SpMetadata {
    /// Parses an `EntityDescriptor` with an `SPSSODescriptor` (the first one).
    pub fn parse(xml: &str) -> Result<Self, SpMetadataError> {
        if xml.len() > MAX_SP_METADATA {
            return Err(SpMetadataError::TooLarge);
        }
        if has_dtd(xml) {
            return Err(SpMetadataError::Dtd);
        }
        root_is_entity_descriptor(xml)?;
        let ed: EntityDescriptor = xml
            .parse()
            .map_err(|e| SpMetadataError::NotEntityDescriptor(format!("{e}")))?;
        let valid_until = ed.valid_until.map(|t| t.timestamp());
        let entity_id = ed
            .entity_id
            .filter(|e| !e.trim().is_empty() && e.len() <= 1024)
            .ok_or(SpMetadataError::NoEntityId)?;
        let sp = ed
            .sp_sso_descriptors
            .as_ref()
            .and_then(|d| d.first())
            .ok_or(SpMetadataError::NoSpDescriptor)?;
        // The entity's and the role's `validUntil`, whichever comes first.
        let valid_until = match (valid_until, sp.valid_until.map(|t| t.timestamp())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut acs: Vec<_> = sp
            .assertion_consumer_services
            .iter()
            .filter(|e| e.binding == POST_BINDING)
            .collect();
        if acs.is_empty() {
            return Err(SpMetadataError::NoPostAcs);
        }
        acs.sort_by_key(|e| (e.is_default != Some(true), e.index));
        let acs_urls = acs
            .iter()
            .map(|e| {
                sp_endpoint(&e.location)
                    .map_err(|m| SpMetadataError::Location(format!("AssertionConsumerService {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let slo = |binding: &str| {
            sp.single_logout_services
                .iter()
                .flatten()
                .find(|e| e.binding == binding)
                .map(|e| {
                    sp_endpoint(&e.location)
                        .map_err(|m| SpMetadataError::Location(format!("SingleLogoutService {m}")))
                })
                .transpose()
        };
        // The broker posts to a SOAP endpoint itself (a server-side request to an address the SP
        // chooses): only an https one is taken from metadata, never http on loopback.
        let (slo_url, slo_soap_url) = (
            slo(REDIRECT_BINDING)?,
            slo(SOAP_BINDING)?.filter(|u| u.scheme() == "https"),
        );
        let (mut signing_certs, mut encryption_cert) = (Vec::new(), None);
        for kd in sp.key_descriptors.iter().flatten() {
            let usage = kd.key_use.as_deref().unwrap_or("");
            for c in kd
                .key_info
                .x509_data
                .iter()
                .flat_map(|x| x.certificates.iter())
            {
                let der = certificate(c)?;
                if matches!(usage, "" | "encryption") && encryption_cert.is_none() {
                    encryption_cert = Some(der.clone());
                }
                if matches!(usage, "" | "signing") {
                    signing_certs.push(der);
                }
            }
        }
        let authn_requests_signed = sp.authn_requests_signed == Some(true);
        if authn_requests_signed && signing_certs.is_empty() {
            return Err(SpMetadataError::SignedWithoutCertificate);
        }
        Ok(Self {
            entity_id,
            acs_urls,
            slo_url,
            slo_soap_url,
            signing_certs,
            encryption_cert,
            authn_requests_signed,
            valid_until,
        })
    }

    /// Refuses metadata past its `validUntil` at `now` (SAML Metadata 2.2.1).
    pub fn check_current(&self, now: i64) -> Result<(), SpMetadataError> {
        match self.valid_until {
            Some(t) if t <= now => Err(SpMetadataError::Expired(
                chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_else(|| t.to_string()),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_b64() -> String {
        use crate::domain::test_certs::{rsa, self_signed};
        STANDARD.encode(self_signed(&rsa(2048)).to_der().unwrap())
    }

    fn key(usage: Option<&str>, cert: &str) -> String {
        let u = usage.map(|u| format!(" use=\"{u}\"")).unwrap_or_default();
        format!(
            "<md:KeyDescriptor{u}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        )
    }

    fn doc(signed: bool, keys: &str, services: &str) -> String {
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://sp.example/meta"><md:SPSSODescriptor AuthnRequestsSigned="{signed}" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{keys}{services}</md:SPSSODescriptor></md:EntityDescriptor>"#
        )
    }

    const SERVICES: &str = concat!(
        r#"<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/slo-post"/>"#,
        r#"<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://sp.example/slo"/>"#,
        r#"<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" Location="https://sp.example/slo-soap"/>"#,
        r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs3" index="3"/>"#,
        r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact" Location="https://sp.example/art" index="0"/>"#,
        r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs1" index="1"/>"#,
        r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs7" index="7" isDefault="true"/>"#,
    );

    #[test]
    fn reads_the_post_acs_urls_in_order_the_slo_and_the_keys() {
        let (s, e, both) = (cert_b64(), cert_b64(), cert_b64());
        let keys = format!(
            "{}{}{}",
            key(Some("signing"), &s),
            key(Some("encryption"), &e),
            key(None, &both)
        );
        let m = SpMetadata::parse(&doc(true, &keys, SERVICES)).unwrap();
        assert_eq!(m.entity_id, "https://sp.example/meta");
        let acs: Vec<_> = m.acs_urls.iter().map(Url::as_str).collect();
        assert_eq!(
            acs,
            [
                "https://sp.example/acs7",
                "https://sp.example/acs1",
                "https://sp.example/acs3"
            ]
        );
        assert_eq!(m.slo_url.unwrap().as_str(), "https://sp.example/slo");
        assert_eq!(
            m.slo_soap_url.unwrap().as_str(),
            "https://sp.example/slo-soap"
        );
        // An http SOAP endpoint (the broker would post to it itself) is not taken.
        let local = SERVICES.replace("https://sp.example/slo-soap", "http://localhost:2375/x");
        let plain = SpMetadata::parse(&doc(false, "", &local)).unwrap();
        assert_eq!(plain.slo_soap_url, None);
        let der = |b: &str| STANDARD.decode(b).unwrap();
        assert_eq!(m.signing_certs, vec![der(&s), der(&both)]);
        assert_eq!(m.encryption_cert, Some(der(&e)), "the first one");
        assert!(m.authn_requests_signed);
        // A key without `use` is both.
        let m = SpMetadata::parse(&doc(false, &key(None, &both), SERVICES)).unwrap();
        assert_eq!(m.signing_certs, vec![der(&both)]);
        assert_eq!(m.encryption_cert, Some(der(&both)));
        assert!(!m.authn_requests_signed);
        assert_eq!(m.valid_until, None);
        m.check_current(i64::MAX).unwrap();
    }

    #[test]
    fn metadata_past_its_valid_until_is_not_current() {
        let xml = doc(false, "", SERVICES).replacen(
            "entityID=",
            r#"validUntil="2026-12-07T00:00:00Z" entityID="#,
            1,
        );
        let m = SpMetadata::parse(&xml).unwrap();
        assert_eq!(m.valid_until, Some(1_796_601_600));
        m.check_current(1_796_601_599).unwrap();
        assert!(matches!(
            m.check_current(1_796_601_600),
            Err(SpMetadataError::Expired(_))
        ));
        // The role's, when it comes first.
        let role = xml.replacen(
            "<md:SPSSODescriptor ",
            r#"<md:SPSSODescriptor validUntil="2026-12-06T00:00:00Z" "#,
            1,
        );
        assert_eq!(
            SpMetadata::parse(&role).unwrap().valid_until,
            Some(1_796_515_200)
        );
    }

    #[test]
    fn hostile_or_broken_metadata_is_refused() {
        let good = doc(false, "", SERVICES);
        assert!(SpMetadata::parse(&good).is_ok());
        let cases = [
            (
                format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{good}"),
                SpMetadataError::Dtd,
            ),
            (format!("{good}<!entity a 'b'>"), SpMetadataError::Dtd),
            (
                good.replace("SPSSODescriptor", "IDPSSODescriptor"),
                SpMetadataError::NoSpDescriptor,
            ),
            (
                good.replace(POST_BINDING, "urn:x"),
                SpMetadataError::NoPostAcs,
            ),
            (
                doc(false, &key(Some("signing"), "not base64!"), SERVICES),
                SpMetadataError::Certificate("not base64".into()),
            ),
            (
                doc(false, &key(Some("signing"), "QUJD"), SERVICES),
                SpMetadataError::Certificate("not a certificate".into()),
            ),
            (
                doc(true, "", SERVICES),
                SpMetadataError::SignedWithoutCertificate,
            ),
            (
                good.replace("entityID=\"https://sp.example/meta\"", ""),
                SpMetadataError::NoEntityId,
            ),
            (" ".repeat(MAX_SP_METADATA + 1), SpMetadataError::TooLarge),
        ];
        for (xml, want) in cases {
            assert_eq!(SpMetadata::parse(&xml).unwrap_err(), want, "{xml:.200}");
        }
        for bad in [
            "/acs",
            "http://sp.example/acs",
            "https://sp.example/acs#f",
            "javascript:alert(1)",
        ] {
            let xml = good.replace("https://sp.example/acs1", bad);
            assert!(
                matches!(SpMetadata::parse(&xml), Err(SpMetadataError::Location(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            SpMetadata::parse("<nope/>"),
            Err(SpMetadataError::NotEntityDescriptor(_))
        ));
        assert!(matches!(
            SpMetadata::parse("garbage"),
            Err(SpMetadataError::NotEntityDescriptor(_))
        ));
    }
}
