//! Owns the IdP's Single Logout over the SOAP binding (SAML Bindings 3.2), the back channel to an
//! SP: the LogoutRequest it sends (signed enveloped, as there is no query to sign; the NameID as
//! the SP received it, the session's `sid` as SessionIndex) in a SOAP 1.1 envelope, and the SP's
//! LogoutResponse read out of the envelope of the HTTP answer through the same doors as every SP
//! message (size limit, no DTD, namespaces as libxml2 reads them, the SP's enveloped signature
//! when it has certificates), then checked against the request it answers. When a session ends
//! this way, and what a failure means, are the flow's (`flow::saml_backchannel`).

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::{QName, ResolveResult};
use samael::crypto::CertificateDer;

use super::SamlIdp;
use super::logout_out::enveloped_answer;
use crate::config::saml_apps::SamlApp;
use crate::upstream::saml::SamlError;
use crate::upstream::saml::xml::{MAX_DOCUMENT, check_namespaces, refuse_dtd};

/// The SOAP 1.1 envelope namespace (SAML Bindings 3.2.3).
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The content type of a SOAP 1.1 message.
pub const SOAP_CONTENT_TYPE: &str = "text/xml; charset=utf-8";
/// The SOAPAction SAML Bindings 3.2.2.3 recommends.
pub const SOAP_ACTION: &str = "http://www.oasis-open.org/committees/security";

impl SamlIdp {
    /// The SOAP message of a LogoutRequest to `app`'s SOAP SingleLogoutService for the session
    /// `sid` of the user it knows as `name_id` (of `format`), and the request's ID.
    pub fn soap_logout_request(
        &self,
        app: &SamlApp,
        format: &str,
        name_id: &str,
        sid: &str,
    ) -> Result<(String, String), SamlError> {
        let to = app
            .slo_soap_url
            .as_ref()
            .ok_or(SamlError::Config("the SP has no slo_soap_url".into()))?;
        let id = self.new_id();
        let template = Self::signature_template(&id);
        let xml = self.logout_request_xml(&id, to, &template, format, name_id, sid);
        let signed = self.sign(&xml, &id)?;
        let envelope = format!(
            r#"<soap11:Envelope xmlns:soap11="{SOAP11_NS}"><soap11:Body>{signed}</soap11:Body></soap11:Envelope>"#
        );
        Ok((envelope, id))
    }

    /// `app`'s answer (the HTTP body) to the SOAP LogoutRequest `request_id`: a LogoutResponse in
    /// a SOAP envelope, signed by one of its certificates when it has any, from it, in time,
    /// answering that request, and Success.
    pub fn soap_logout_response(
        &self,
        app: &SamlApp,
        body: &str,
        request_id: &str,
    ) -> Result<(), SamlError> {
        let certs: Vec<CertificateDer> = app
            .signing_certs
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let r = enveloped_answer(&soap_body(body)?, &certs)?;
        self.check_answer(app, &r, request_id, None)
    }
}

/// The one element in the `Body` of the SOAP 1.1 envelope `doc`, as a document of its own. The
/// namespace declarations of the Envelope and Body that it does not make itself are copied onto
/// it, so it reads as it did in place; its signature (exclusive c14n) covers the same bytes
/// either way. A `Header` is passed over; comments, processing instructions, text, a Fault, and
/// anything but exactly one element in the Body are refused.
pub fn soap_body(doc: &str) -> Result<String, SamlError> {
    if doc.len() > MAX_DOCUMENT {
        return Err(SamlError::TooLarge);
    }
    refuse_dtd(doc)?;
    let bad = |m: &str| SamlError::Malformed(format!("SOAP: {m}"));
    let mut reader = NsReader::from_str(doc);
    // The declarations in scope at the Body's child, outer first.
    let mut outer: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut depth = 0usize;
    // Where the child is, what it declares itself, and the declarations in scope at it.
    type Child = (usize, usize, Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);
    let mut child: Option<Child> = None;
    let (mut envelopes, mut bodies) = (0, 0);
    loop {
        let before = usize::try_from(reader.buffer_position()).map_err(|_| SamlError::TooLarge)?;
        let event = reader
            .read_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) if depth < 2 => {
                check_namespaces(&e, reader.resolver())?;
                let (ns, local) = reader.resolver().resolve_element(e.name());
                let soap = matches!(ns, ResolveResult::Bound(n) if n.0 == SOAP11_NS.as_bytes());
                match (depth, local.as_ref()) {
                    (0, b"Envelope") if soap && !empty && envelopes == 0 => envelopes += 1,
                    (1, b"Header") if soap => {
                        if !empty {
                            let name = e.name().as_ref().to_vec();
                            reader
                                .read_to_end(QName(&name))
                                .map_err(|e| SamlError::Malformed(e.to_string()))?;
                        }
                        continue;
                    }
                    (1, b"Body") if soap && !empty && bodies == 0 => bodies += 1,
                    _ => return Err(bad("not an Envelope with a Body")),
                }
                for a in e.attributes().with_checks(true) {
                    let a = a.map_err(|e| SamlError::Malformed(e.to_string()))?;
                    if a.key.as_namespace_binding().is_some() {
                        outer.push((a.key.as_ref().to_vec(), a.value.to_vec()));
                    }
                }
                depth += 1;
            }
            Event::Start(e) | Event::Empty(e) => {
                if child.is_some() {
                    return Err(bad("more than one element in the Body"));
                }
                check_namespaces(&e, reader.resolver())?;
                let (ns, local) = reader.resolver().resolve_element(e.name());
                if matches!(ns, ResolveResult::Bound(n) if n.0 == SOAP11_NS.as_bytes())
                    && local.as_ref() == b"Fault"
                {
                    return Err(bad("the SP answered with a SOAP Fault"));
                }
                let own = e
                    .attributes()
                    .with_checks(true)
                    .filter_map(Result::ok)
                    .filter(|a| a.key.as_namespace_binding().is_some())
                    .map(|a| a.key.as_ref().to_vec())
                    .collect();
                if !empty {
                    let name = e.name().as_ref().to_vec();
                    reader
                        .read_to_end(QName(&name))
                        .map_err(|e| SamlError::Malformed(e.to_string()))?;
                }
                let end =
                    usize::try_from(reader.buffer_position()).map_err(|_| SamlError::TooLarge)?;
                child = Some((before, end, own, outer.clone()));
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Comment(_) => return Err(SamlError::Comment),
            Event::DocType(_) => return Err(SamlError::Dtd),
            // A declaration before any element (after a byte-order mark too).
            Event::Decl(_) if envelopes == 0 => {}
            Event::Eof => break,
            _ => return Err(bad("text, CDATA or a processing instruction")),
        }
    }
    let (start, end, own, outer) = child.ok_or(bad("an empty Body"))?;
    let element = doc.get(start..end).ok_or(bad("the Body's element"))?;
    // `<name` then the rest of the start tag: the copied declarations go between.
    let name_end = element
        .char_indices()
        .skip(1)
        .find(|(_, c)| c.is_ascii_whitespace() || *c == '/' || *c == '>')
        .map(|(i, _)| i)
        .ok_or(bad("the Body's element"))?;
    let mut copied = String::new();
    let mut seen: Vec<&[u8]> = own.iter().map(Vec::as_slice).collect();
    for (key, value) in outer.iter().rev() {
        if seen.contains(&key.as_slice()) {
            continue;
        }
        seen.push(key);
        if value.contains(&b'"') {
            return Err(bad("a namespace declaration with a quote"));
        }
        copied.push_str(&format!(
            " {}=\"{}\"",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        ));
    }
    Ok(format!(
        "{}{copied}{}",
        &element[..name_end],
        &element[name_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::saml::protocol_message;

    const RESPONSE: &str = concat!(
        r#"<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r" Version="2.0" IssueInstant="2026-12-07T00:00:00Z" InResponseTo="_q">"#,
        r#"<saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">https://sp.example/meta</saml:Issuer>"#,
        r#"<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:LogoutResponse>"#
    );

    fn envelope(body: &str) -> String {
        format!(
            r#"<?xml version="1.0"?><S:Envelope xmlns:S="{SOAP11_NS}"><S:Header><x:y xmlns:x="urn:x">z</x:y></S:Header>
            <S:Body>{body}</S:Body></S:Envelope>"#
        )
    }

    #[test]
    fn takes_the_one_element_of_the_body_as_it_was_written() {
        let got = soap_body(&envelope(RESPONSE)).unwrap();
        // The Envelope's declaration is copied onto it (unused: exclusive c14n drops it).
        assert_eq!(
            got,
            RESPONSE.replacen(
                "<samlp:LogoutResponse",
                &format!(r#"<samlp:LogoutResponse xmlns:S="{SOAP11_NS}""#),
                1
            )
        );
        let r: samael::schema::LogoutResponse = protocol_message(&got, "LogoutResponse").unwrap();
        assert_eq!(r.in_response_to.as_deref(), Some("_q"));
    }

    #[test]
    fn only_the_declarations_in_scope_are_carried() {
        // The Header's declaration is not in scope at the Body's element.
        let doc = format!(
            r#"<S:Envelope xmlns:S="{SOAP11_NS}"><S:Header xmlns:h="urn:h"><h:x/></S:Header><S:Body>{RESPONSE}</S:Body></S:Envelope>"#
        );
        let got = soap_body(&doc).unwrap();
        assert!(!got.contains("urn:h"), "{got}");
        // A byte-order mark, then the XML declaration.
        assert!(soap_body(&format!("\u{feff}{}", envelope(RESPONSE))).is_ok());
    }

    #[test]
    fn a_prefix_declared_on_the_envelope_is_carried_onto_the_element() {
        let doc = format!(
            r#"<S:Envelope xmlns:S="{SOAP11_NS}" xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><S:Body>{}</S:Body></S:Envelope>"#,
            RESPONSE.replace(r#" xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol""#, "")
        );
        let got = soap_body(&doc).unwrap();
        let r: samael::schema::LogoutResponse = protocol_message(&got, "LogoutResponse").unwrap();
        assert_eq!(r.id.as_deref(), Some("_r"));
    }

    #[test]
    fn refuses_what_is_not_one_saml_element_in_a_soap_body() {
        let refused = |doc: &str| soap_body(doc).unwrap_err();
        assert!(
            matches!(refused(RESPONSE), SamlError::Malformed(_)),
            "no envelope"
        );
        let other_ns =
            envelope(RESPONSE).replace(SOAP11_NS, "http://www.w3.org/2003/05/soap-envelope");
        assert!(matches!(refused(&other_ns), SamlError::Malformed(_)));
        assert!(matches!(refused(&envelope("")), SamlError::Malformed(_)));
        assert!(matches!(
            refused(&format!("{}{}", envelope(RESPONSE), envelope(RESPONSE))),
            SamlError::Malformed(_)
        ));
        // A second Body (whose declarations must not reach the first's element).
        let two_bodies = envelope(RESPONSE).replace(
            "</S:Body>",
            r#"</S:Body><S:Body xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"> </S:Body>"#,
        );
        assert!(matches!(refused(&two_bodies), SamlError::Malformed(_)));
        assert!(matches!(
            refused(&envelope(&format!("{RESPONSE}{RESPONSE}"))),
            SamlError::Malformed(_)
        ));
        assert!(matches!(
            refused(&envelope(&format!("text{RESPONSE}"))),
            SamlError::Malformed(_)
        ));
        assert!(matches!(
            refused(&envelope(&format!("<!-- c -->{RESPONSE}"))),
            SamlError::Comment
        ));
        assert!(matches!(
            refused(&format!(
                "<!DOCTYPE x [<!ENTITY e \"x\">]>{}",
                envelope(RESPONSE)
            )),
            SamlError::Dtd
        ));
        let fault = envelope(r#"<S:Fault><faultcode>S:Server</faultcode></S:Fault>"#);
        assert!(matches!(refused(&fault), SamlError::Malformed(m) if m.contains("Fault")));
        assert!(matches!(
            refused(&" ".repeat(MAX_DOCUMENT + 1)),
            SamlError::TooLarge
        ));
        assert!(matches!(
            refused(&envelope(r#"<p:x xmlns:p="urn:&#58;x"/>"#)),
            SamlError::Malformed(_)
        ));
    }
}
