//! Owns reading an SP's AuthnRequest as it arrives, over HTTP-Redirect (DEFLATE, through the
//! upstream side's hardened reader) or HTTP-POST (base64): size limits first, no DTD, no
//! comments, namespaces read as libxml2 would read them, and only what the IdP uses taken out
//! (ID, IssueInstant, Issuer, ACS, binding, ForceAuthn, IsPassive, NameIDPolicy, RequestedAuthnContext).
//! Nothing here is trusted until the Issuer and the ACS are found in the registry; an SP with
//! registered certificates must sign its requests (`verify_redirect`, `verify_post`), and what
//! its signature covers is what is used.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use samael::crypto::CertificateDer;

use crate::upstream::saml::SamlError;
use crate::upstream::saml::crypto::read_redirect;
use crate::upstream::saml::dsig;
use crate::upstream::saml::xml::{
    ASSERTION_NS, MAX_DOCUMENT, PROTOCOL_NS, check_namespaces, refuse_dtd,
};

/// What the IdP takes from an AuthnRequest (unchecked against the registry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthnRequest {
    pub id: String,
    pub issuer: String,
    pub destination: Option<String>,
    /// `IssueInstant`, in Unix seconds.
    pub issue_instant: Option<i64>,
    pub acs_url: Option<String>,
    pub acs_index: Option<usize>,
    pub protocol_binding: Option<String>,
    pub force_authn: bool,
    pub is_passive: bool,
    pub name_id_format: Option<String>,
    /// `RequestedAuthnContext`'s class refs, in order.
    pub class_refs: Vec<String>,
}

/// The document of an HTTP-Redirect query string (inflated within the limits), and its
/// RelayState. A query signature (`SigAlg`, `Signature`) is set aside unchecked.
pub fn redirect_document(raw_query: &str) -> Result<(String, Option<String>), SamlError> {
    if raw_query.len() > MAX_DOCUMENT {
        return Err(SamlError::TooLarge);
    }
    let unsigned: Vec<&str> = raw_query
        .split('&')
        .filter(|p| !p.starts_with("SigAlg=") && !p.starts_with("Signature="))
        .collect();
    let m = read_redirect(&unsigned.join("&"), &[])?;
    if m.param != "SAMLRequest" {
        return Err(SamlError::Malformed("no SAMLRequest".into()));
    }
    Ok((m.xml, m.relay_state))
}

/// The request of an HTTP-Redirect query string, and its RelayState. A query signature
/// (`SigAlg`, `Signature`) is set aside unchecked.
pub fn from_redirect(raw_query: &str) -> Result<(AuthnRequest, Option<String>), SamlError> {
    let (xml, relay_state) = redirect_document(raw_query)?;
    Ok((parse(&xml)?, relay_state))
}

/// The request of an HTTP-Redirect query string whose signature verifies under one of `certs`
/// (an SP's registered certificates), over the parameters exactly as they were sent; without a
/// query signature, the document's enveloped one (an HTTP-POST request the broker sent back
/// as HTTP-Redirect). Unsigned is refused.
pub fn verify_redirect(
    raw_query: &str,
    certs: &[CertificateDer],
) -> Result<AuthnRequest, SamlError> {
    verified_redirect(raw_query, certs, parse, |r| &r.id)
}

/// The request of an HTTP-POST document `xml` as its enveloped signature by one of `certs`
/// covers it (through the one door to xmlsec, `dsig::verify`): read again from the bytes xmlsec
/// verified, which must be the request `id` itself.
pub fn verify_post(
    xml: &str,
    id: &str,
    certs: &[CertificateDer],
) -> Result<AuthnRequest, SamlError> {
    verified_post(xml, id, certs, parse, |r| &r.id)
}

/// Any SP request (`read` reads it, `id_of` names its `ID`) of an HTTP-Redirect query string
/// as signed by one of `certs`: the query signature over the parameters exactly as they were
/// sent, or without one the document's enveloped signature. Unsigned is refused. `read` sees
/// only verified bytes (it may decrypt: an `EncryptedID`).
pub fn verified_redirect<T>(
    raw_query: &str,
    certs: &[CertificateDer],
    read: impl Fn(&str) -> Result<T, SamlError>,
    id_of: impl Fn(&T) -> &str,
) -> Result<T, SamlError> {
    let m = read_redirect(raw_query, certs)?;
    if m.signed {
        return read(&m.xml);
    }
    // The root's ID only: nothing else of unverified bytes is read.
    let id = crate::upstream::saml::xml::root_of(&m.xml)?
        .0
        .id
        .ok_or(SamlError::Malformed("no ID".into()))?;
    verified_post(&m.xml, &id, certs, read, id_of).map_err(|e| match e {
        // What the verified bytes held (an EncryptedID that does not decrypt) says so.
        SamlError::Decryption(_) => e,
        _ => SamlError::Signature("the request is not signed by the SP".into()),
    })
}

/// Any SP request of an HTTP-POST document as its enveloped signature by one of `certs` covers
/// it: read again from the bytes xmlsec verified, which must be the element `id` itself.
pub fn verified_post<T>(
    xml: &str,
    id: &str,
    certs: &[CertificateDer],
    read: impl Fn(&str) -> Result<T, SamlError>,
    id_of: impl Fn(&T) -> &str,
) -> Result<T, SamlError> {
    let verified = dsig::verify(xml, id, certs).map_err(|e| match e {
        SamlError::Signature(_) => {
            SamlError::Signature("no valid signature by the SP's certificates".into())
        }
        other => other,
    })?;
    let r = read(&verified)?;
    if id_of(&r) != id {
        return Err(SamlError::Reference(
            "the signature covers another element".into(),
        ));
    }
    Ok(r)
}

/// The request of an HTTP-POST form's `SAMLRequest` (base64).
pub fn from_post(saml_request: &str) -> Result<AuthnRequest, SamlError> {
    parse(&decode_post(saml_request)?)
}

/// The document of an HTTP-POST form's `SAMLRequest`, not yet read.
pub fn decode_post(saml_request: &str) -> Result<String, SamlError> {
    if saml_request.len() > MAX_DOCUMENT * 4 / 3 + 4 {
        return Err(SamlError::TooLarge);
    }
    let clean: String = saml_request
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(clean)
        .map_err(|_| SamlError::Malformed("SAMLRequest is not base64".into()))?;
    String::from_utf8(bytes).map_err(|_| SamlError::Malformed("not UTF-8".into()))
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, SamlError> {
    match e.try_get_attribute(name) {
        Ok(Some(a)) => a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|v| Some(v.into_owned()))
            .map_err(|e| SamlError::Malformed(e.to_string())),
        Ok(None) => Ok(None),
        Err(e) => Err(SamlError::Malformed(e.to_string())),
    }
}

fn boolean(v: Option<String>) -> Result<bool, SamlError> {
    match v.as_deref() {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(SamlError::Malformed(format!("`{other}` is not a boolean"))),
    }
}

/// An `xs:dateTime` (as SAML writes it: RFC 3339, UTC or an offset) in Unix seconds.
pub fn instant(t: &str) -> Result<i64, SamlError> {
    chrono::DateTime::parse_from_rfc3339(t.trim())
        .map(|d| d.timestamp())
        .map_err(|_| SamlError::Malformed("IssueInstant is not a dateTime".into()))
}

fn is(ns: &ResolveResult<'_>, want: &str) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.0 == want.as_bytes())
}

/// Where a text being read goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    Issuer,
    ClassRef,
}

/// Reads an AuthnRequest document.
pub fn parse(xml: &str) -> Result<AuthnRequest, SamlError> {
    if xml.len() > MAX_DOCUMENT {
        return Err(SamlError::TooLarge);
    }
    refuse_dtd(xml)?;
    let mut reader = NsReader::from_str(xml);
    let mut out = AuthnRequest::default();
    let (mut depth, mut text, mut buf) = (0usize, None::<Text>, String::new());
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                check_namespaces(e, reader.resolver())?;
                let (ns, _) = reader.resolver().resolve_element(e.name());
                let local = e.local_name();
                let name = local.as_ref();
                if depth == 0 {
                    if seen_root || !is(&ns, PROTOCOL_NS) || name != b"AuthnRequest" {
                        return Err(SamlError::Malformed("not an AuthnRequest".into()));
                    }
                    seen_root = true;
                    if attr(e, "Version")?.as_deref() != Some("2.0") {
                        return Err(SamlError::Malformed("Version is not 2.0".into()));
                    }
                    out.id = attr(e, "ID")?
                        .filter(|id| !id.is_empty() && id.len() <= 256)
                        .ok_or(SamlError::Malformed("no ID".into()))?;
                    out.destination = attr(e, "Destination")?;
                    out.issue_instant =
                        attr(e, "IssueInstant")?.map(|t| instant(&t)).transpose()?;
                    out.acs_url = attr(e, "AssertionConsumerServiceURL")?;
                    out.acs_index = attr(e, "AssertionConsumerServiceIndex")?
                        .map(|i| i.parse::<usize>())
                        .transpose()
                        .map_err(|_| SamlError::Malformed("a bad ACS index".into()))?;
                    out.protocol_binding = attr(e, "ProtocolBinding")?;
                    out.force_authn = boolean(attr(e, "ForceAuthn")?)?;
                    out.is_passive = boolean(attr(e, "IsPassive")?)?;
                } else if depth == 1 && is(&ns, ASSERTION_NS) && name == b"Issuer" {
                    text = Some(Text::Issuer);
                } else if depth == 1 && is(&ns, PROTOCOL_NS) && name == b"NameIDPolicy" {
                    out.name_id_format = attr(e, "Format")?;
                } else if depth == 2 && is(&ns, ASSERTION_NS) && name == b"AuthnContextClassRef" {
                    text = Some(Text::ClassRef);
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                } else {
                    text = None;
                }
            }
            Event::Text(t) if text.is_some() => {
                buf.push_str(
                    &t.decode()
                        .map_err(|e| SamlError::Malformed(e.to_string()))?,
                );
            }
            Event::GeneralRef(r) if text.is_some() => {
                let name: &[u8] = r;
                let ch = r.resolve_char_ref().ok().flatten().or(match name {
                    b"amp" => Some('&'),
                    b"lt" => Some('<'),
                    b"gt" => Some('>'),
                    b"quot" => Some('"'),
                    b"apos" => Some('\''),
                    _ => None,
                });
                buf.push(ch.ok_or(SamlError::Dtd)?);
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                match text.take() {
                    Some(Text::Issuer) => out.issuer = buf.trim().to_owned(),
                    Some(Text::ClassRef) => out.class_refs.push(buf.trim().to_owned()),
                    None => {}
                }
                buf.clear();
            }
            Event::Comment(_) => return Err(SamlError::Comment),
            Event::DocType(_) => return Err(SamlError::Dtd),
            Event::Eof => break,
            _ => {}
        }
    }
    if out.issuer.is_empty() {
        return Err(SamlError::Malformed("no Issuer".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = concat!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_abc" Version="2.0" IssueInstant="2026-12-07T00:00:00Z" AssertionConsumerServiceURL="https://sp.example/acs" IsPassive="true">"#,
        r#"<saml:Issuer>https://sp.example/meta &amp; more</saml:Issuer>"#,
        r#"<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/>"#,
        r#"<samlp:RequestedAuthnContext><saml:AuthnContextClassRef>https://refeds.org/profile/mfa</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>"#,
        r#"</samlp:AuthnRequest>"#
    );

    #[test]
    fn reads_what_the_idp_uses() {
        let r = parse(REQ).unwrap();
        assert_eq!(r.id, "_abc");
        assert_eq!(r.issue_instant, Some(1_796_601_600));
        assert_eq!(r.issuer, "https://sp.example/meta & more");
        assert_eq!(r.acs_url.as_deref(), Some("https://sp.example/acs"));
        assert!(r.is_passive && !r.force_authn);
        assert_eq!(
            r.name_id_format.as_deref(),
            Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent")
        );
        assert_eq!(r.class_refs, vec!["https://refeds.org/profile/mfa"]);
        let b64 = STANDARD.encode(REQ);
        assert_eq!(from_post(&b64).unwrap(), r);
    }

    #[test]
    fn refuses_dtds_comments_and_other_documents() {
        let dtd = format!("<!DOCTYPE x [<!ENTITY e \"x\">]>{REQ}");
        assert!(matches!(parse(&dtd), Err(SamlError::Dtd)));
        let comment = REQ.replace("<saml:Issuer>", "<!-- c --><saml:Issuer>");
        assert!(matches!(parse(&comment), Err(SamlError::Comment)));
        let other = REQ.replace("AuthnRequest", "LogoutRequest");
        assert!(parse(&other).is_err());
        let no_issuer = REQ.replace(
            "<saml:Issuer>https://sp.example/meta &amp; more</saml:Issuer>",
            "",
        );
        assert!(parse(&no_issuer).is_err());
        assert!(matches!(
            parse(&" ".repeat(MAX_DOCUMENT + 1)),
            Err(SamlError::TooLarge)
        ));
    }
}
