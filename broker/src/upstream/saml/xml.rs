//! Owns reading untrusted SAML XML before anything else touches it: documents with a DTD,
//! entity declarations, comments or processing instructions are refused outright (nothing that
//! libxml2 would expand or that a signature does not cover gets through), and the shape of a
//! Response (its root, how many assertions it carries, which of them are signed) is read with a
//! streaming parser that never expands anything.

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceResolver, ResolveResult};

use super::SamlError;

pub const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// The largest SAML document (decoded) the broker reads.
pub const MAX_DOCUMENT: usize = 256 * 1024;

fn in_ns(ns: &ResolveResult<'_>, want: &str) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.0 == want.as_bytes())
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

/// Refuses a start tag whose names libxml2 (and so xmlsec and samael) could put in other
/// namespaces than quick-xml's resolver does, which compares the raw bytes of declarations
/// (issue #17, ADR 7). libxml2 expands character and entity references and normalises tabs and
/// line ends in a declaration's value (`xmlns:ds="http&#58;//www.w3.org/2000/09/xmldsig#"` is
/// XML-DSig to libxml2, an unknown namespace to the resolver); it ignores `xmlns:p=""` (XML
/// Namespaces 1.0 cannot undeclare a prefix, so the outer binding stays) where the resolver
/// unbinds; and it keeps an element or attribute with an undeclared prefix (in no namespace, or
/// the attribute under its local name). So all of these are refused, and an `ID` attribute with
/// a prefix too (samael registers IDs through `xmlHasProp`, which ignores the prefix). The
/// reserved prefixes `xml` and `xmlns` are guarded by the resolver itself (an error).
pub fn check_namespaces(e: &BytesStart<'_>, resolver: &NamespaceResolver) -> Result<(), SamlError> {
    let refuse = |what: String| Err(SamlError::Malformed(what));
    if let (ResolveResult::Unknown(p), _) = resolver.resolve_element(e.name()) {
        return refuse(format!(
            "the prefix {} is not declared",
            String::from_utf8_lossy(&p)
        ));
    }
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(|e| SamlError::Malformed(e.to_string()))?;
        let key = a.key;
        if let Some(declared) = key.as_namespace_binding() {
            if a.value
                .iter()
                .any(|b| matches!(b, b'&' | b'<' | b'\t' | b'\n' | b'\r'))
            {
                return refuse(format!(
                    "the namespace declaration {} is written with a reference or a tab or line end",
                    String::from_utf8_lossy(key.as_ref())
                ));
            }
            if a.value.is_empty()
                && matches!(declared, quick_xml::name::PrefixDeclaration::Named(_))
            {
                return refuse(format!(
                    "{}=\"\" (a prefix cannot be undeclared)",
                    String::from_utf8_lossy(key.as_ref())
                ));
            }
            continue;
        }
        if key.prefix().is_none() {
            continue;
        }
        let (ns, local) = resolver.resolve_attribute(key);
        if let ResolveResult::Unknown(p) = ns {
            return refuse(format!(
                "the prefix {} is not declared",
                String::from_utf8_lossy(&p)
            ));
        }
        if local.as_ref().eq_ignore_ascii_case(b"id") && !key.as_ref().starts_with(b"xml:") {
            return refuse(format!(
                "a prefixed ID attribute {}",
                String::from_utf8_lossy(key.as_ref())
            ));
        }
    }
    Ok(())
}

/// Refuses what must never reach an XML parser that expands entities: a DOCTYPE or an ENTITY
/// declaration anywhere (checked on the raw bytes, before any parsing).
pub fn refuse_dtd(doc: &str) -> Result<(), SamlError> {
    if crate::domain::sp_metadata::has_dtd(doc) {
        return Err(SamlError::Dtd);
    }
    Ok(())
}

/// What the streaming read of a `samlp:Response` found. Nothing in it is trusted: it only
/// decides which checks apply (and refuses shapes no honest IdP sends).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    /// The text of the Response's own `saml:Issuer`.
    pub issuer: Option<String>,
    /// A `ds:Signature` is a direct child of the Response.
    pub response_signed: bool,
    /// `ds:Signature` elements anywhere.
    pub signatures: usize,
    /// The ID of the one `saml:Assertion`, if the Response carries a plain one.
    pub assertion_id: Option<String>,
    /// The Response carries one `saml:EncryptedAssertion` instead.
    pub encrypted: bool,
    /// Assertions and EncryptedAssertions in the whole document (0 or 1: more are refused).
    pub assertions: usize,
    /// Top-level and second-level StatusCode values.
    pub status: Option<String>,
    pub sub_status: Option<String>,
}

/// A SAML document reduced to its root element: namespace, local name and `ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub ns: String,
    pub name: String,
    pub id: Option<String>,
}

/// Reads `doc` (already past [`refuse_dtd`]) as a SAML Response. Refuses comments, processing
/// instructions, a DOCTYPE, entity references other than the predefined ones, more than one
/// Response, and more than one Assertion or EncryptedAssertion in the whole document (an extra
/// assertion anywhere, before, after or inside the signed one, is the signature wrapping
/// attack's tell). None at all is for a refusal's Status, checked by the caller.
pub fn read_envelope(doc: &str) -> Result<Envelope, SamlError> {
    let mut reader = NsReader::from_str(doc);
    let mut env = Envelope::default();
    let (mut depth, mut responses, mut assertions, mut encrypted) = (0usize, 0, 0, 0);
    let mut in_status: Option<usize> = None;
    let mut in_issuer = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?;
        let (start, empty) = match &event {
            Event::Start(s) => (Some(s), false),
            Event::Empty(s) => (Some(s), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            check_namespaces(e, reader.resolver())?;
            let (ns, _) = reader.resolver().resolve_element(e.name());
            let local = e.local_name();
            let local = local.as_ref();
            if depth == 0 {
                if !(in_ns(&ns, PROTOCOL_NS) && local == b"Response") {
                    return Err(SamlError::NotAResponse);
                }
                env.id =
                    attr(e, "ID")?.ok_or(SamlError::Malformed("Response without ID".into()))?;
                env.destination = attr(e, "Destination")?;
                env.in_response_to = attr(e, "InResponseTo")?;
            }
            if in_ns(&ns, PROTOCOL_NS) && local == b"Response" {
                responses += 1;
            }
            if in_ns(&ns, ASSERTION_NS) && local == b"Assertion" {
                assertions += 1;
                env.assertion_id = attr(e, "ID")?;
            }
            if in_ns(&ns, ASSERTION_NS) && local == b"EncryptedAssertion" {
                encrypted += 1;
            }
            if in_ns(&ns, DSIG_NS) && local == b"Signature" {
                env.signatures += 1;
                env.response_signed |= depth == 1;
            }
            if depth == 1 && in_ns(&ns, ASSERTION_NS) && local == b"Issuer" {
                in_issuer = !empty;
                env.issuer = Some(String::new());
            }
            if depth == 1 && in_ns(&ns, PROTOCOL_NS) && local == b"Status" {
                in_status = Some(depth);
            }
            if let Some(sd) = in_status
                && in_ns(&ns, PROTOCOL_NS)
                && local == b"StatusCode"
            {
                let value = attr(e, "Value")?;
                if depth == sd + 1 {
                    env.status = value;
                } else if depth == sd + 2 && env.sub_status.is_none() {
                    env.sub_status = value;
                }
            }
            if !empty {
                depth += 1;
            }
            continue;
        }
        match event {
            Event::Text(t) if in_issuer => {
                let text = t
                    .decode()
                    .map_err(|e| SamlError::Malformed(e.to_string()))?;
                if let Some(i) = env.issuer.as_mut() {
                    i.push_str(&text);
                }
            }
            Event::End(_) => {
                in_issuer = false;
                depth = depth.saturating_sub(1);
                if in_status == Some(depth) {
                    in_status = None;
                }
            }
            Event::Comment(_) => return Err(SamlError::Comment),
            Event::PI(_) => return Err(SamlError::Malformed("processing instruction".into())),
            Event::DocType(_) => return Err(SamlError::Dtd),
            Event::GeneralRef(r) => {
                let name: &[u8] = &r;
                if !matches!(name, b"amp" | b"lt" | b"gt" | b"quot" | b"apos")
                    && !name.starts_with(b"#")
                {
                    return Err(SamlError::Dtd);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if responses == 0 {
        return Err(SamlError::Malformed("no Response element".into()));
    }
    if responses != 1 {
        return Err(SamlError::Wrapping("more than one Response element".into()));
    }
    if assertions + encrypted > 1 {
        return Err(SamlError::Wrapping(format!(
            "{} assertions in the document (exactly one is accepted)",
            assertions + encrypted
        )));
    }
    env.assertions = assertions + encrypted;
    env.encrypted = encrypted == 1;
    Ok(env)
}

/// The root element of a (verified) document, and whether it holds exactly one element named
/// `Assertion` in the assertion namespace (and no comments).
pub fn root_of(doc: &str) -> Result<(Root, usize), SamlError> {
    let mut reader = NsReader::from_str(doc);
    let mut root = None;
    let mut assertions = 0;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                check_namespaces(e, reader.resolver())?;
                let (ns, _) = reader.resolver().resolve_element(e.name());
                let local = e.local_name();
                let name = String::from_utf8_lossy(local.as_ref()).into_owned();
                if in_ns(&ns, ASSERTION_NS) && (name == "Assertion" || name == "EncryptedAssertion")
                {
                    assertions += 1;
                }
                if root.is_none() {
                    let ns = match &ns {
                        ResolveResult::Bound(n) => String::from_utf8_lossy(n.0).into_owned(),
                        _ => String::new(),
                    };
                    root = Some(Root {
                        ns,
                        name,
                        id: attr(e, "ID")?,
                    });
                }
            }
            Event::Comment(_) => return Err(SamlError::Comment),
            Event::DocType(_) => return Err(SamlError::Dtd),
            Event::Eof => break,
            _ => {}
        }
    }
    root.map(|r| (r, assertions))
        .ok_or(SamlError::Malformed("no root element".into()))
}

/// The `samlp:SessionIndex` elements of a (verified) LogoutRequest: children of the root, each
/// one's text (SAML Core 3.7.1; samael reads it as an attribute and never finds it).
pub fn session_indexes(doc: &str) -> Result<Vec<String>, SamlError> {
    let mut reader = NsReader::from_str(doc);
    let (mut depth, mut current): (usize, Option<String>) = (0, None);
    let mut out = Vec::new();
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?;
        match &event {
            Event::Start(e) => {
                if depth == 1
                    && in_ns(&ns, PROTOCOL_NS)
                    && e.local_name().as_ref() == b"SessionIndex"
                {
                    current = Some(String::new());
                }
                depth += 1;
            }
            Event::Empty(e)
                if depth == 1
                    && in_ns(&ns, PROTOCOL_NS)
                    && e.local_name().as_ref() == b"SessionIndex" =>
            {
                return Err(SamlError::Malformed("an empty SessionIndex".into()));
            }
            Event::Text(t) => {
                if let Some(c) = current.as_mut() {
                    c.push_str(
                        &t.decode()
                            .map_err(|e| SamlError::Malformed(e.to_string()))?,
                    );
                }
            }
            Event::GeneralRef(r) => {
                if let Some(c) = current.as_mut() {
                    let name: &[u8] = r;
                    let ch = r
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .or(match name {
                            b"amp" => Some('&'),
                            b"lt" => Some('<'),
                            b"gt" => Some('>'),
                            b"quot" => Some('"'),
                            b"apos" => Some('\''),
                            _ => None,
                        })
                        .ok_or(SamlError::Dtd)?;
                    c.push(ch);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1
                    && let Some(c) = current.take()
                {
                    let c = c.trim();
                    if c.is_empty() {
                        return Err(SamlError::Malformed("an empty SessionIndex".into()));
                    }
                    out.push(c.to_owned());
                }
            }
            Event::Comment(_) => return Err(SamlError::Comment),
            Event::DocType(_) => return Err(SamlError::Dtd),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Escapes text for an XML attribute value or element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1" Destination="https://sp/acs" InResponseTo="q1"><saml:Issuer>idp</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"/></samlp:StatusCode></samlp:Status><saml:Assertion ID="a1"/></samlp:Response>"#;

    #[test]
    fn reads_the_envelope() {
        let e = read_envelope(OK).unwrap();
        assert_eq!(e.id, "r1");
        assert_eq!(e.issuer.as_deref(), Some("idp"));
        assert_eq!(e.destination.as_deref(), Some("https://sp/acs"));
        assert_eq!(e.in_response_to.as_deref(), Some("q1"));
        assert_eq!(e.assertion_id.as_deref(), Some("a1"));
        assert!(!e.response_signed && !e.encrypted);
        assert_eq!(
            e.status.as_deref(),
            Some("urn:oasis:names:tc:SAML:2.0:status:Responder")
        );
        assert_eq!(
            e.sub_status.as_deref(),
            Some("urn:oasis:names:tc:SAML:2.0:status:AuthnFailed")
        );
    }

    #[test]
    fn refuses_dtds_comments_and_extra_assertions() {
        let dtd = format!("<!DOCTYPE r [<!ENTITY a \"b\">]>{OK}");
        assert!(matches!(refuse_dtd(&dtd), Err(SamlError::Dtd)));
        assert!(matches!(refuse_dtd("<!doctype x>"), Err(SamlError::Dtd)));
        let comment = OK.replace("<saml:Issuer>idp", "<saml:Issuer>i<!---->dp");
        assert!(matches!(read_envelope(&comment), Err(SamlError::Comment)));
        let two = OK.replace(
            "<saml:Assertion ID=\"a1\"/>",
            "<saml:Assertion ID=\"a0\"/><saml:Assertion ID=\"a1\"/>",
        );
        assert!(matches!(read_envelope(&two), Err(SamlError::Wrapping(_))));
        let none = OK.replace("<saml:Assertion ID=\"a1\"/>", "");
        assert_eq!(read_envelope(&none).unwrap().assertions, 0);
        let entity = OK.replace("<saml:Issuer>idp", "<saml:Issuer>&x;");
        assert!(matches!(read_envelope(&entity), Err(SamlError::Dtd)));
        let other_root = OK.replace("samlp:Response", "samlp:LogoutResponse");
        assert!(matches!(
            read_envelope(&other_root),
            Err(SamlError::NotAResponse)
        ));
    }

    #[test]
    fn namespaces_libxml2_reads_otherwise_are_refused() {
        // An assertion libxml2 sees (its namespace written with a character reference) would
        // otherwise not be counted.
        let hidden = OK.replace(
            "<saml:Assertion ID=\"a1\"/>",
            "<saml:Assertion ID=\"a1\"/><h:Assertion xmlns:h=\"urn&#58;oasis:names:tc:SAML:2.0:assertion\" ID=\"a2\"/>",
        );
        assert!(matches!(
            read_envelope(&hidden),
            Err(SamlError::Malformed(_))
        ));
        let unbound = OK.replace("<saml:Issuer>", "<saml:Issuer xmlns:saml=\"\">");
        assert!(matches!(
            read_envelope(&unbound),
            Err(SamlError::Malformed(_))
        ));
        let undeclared = OK.replace("<saml:Issuer>idp</saml:Issuer>", "<x:Issuer>idp</x:Issuer>");
        assert!(matches!(
            read_envelope(&undeclared),
            Err(SamlError::Malformed(_))
        ));
        assert!(matches!(
            root_of(&hidden.replace("<samlp:Response ", "<samlp:Response xmlns:d=\"&amp;\" ")),
            Err(SamlError::Malformed(_))
        ));
    }

    #[test]
    fn session_indexes_are_the_child_elements() {
        let req = r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="l1" SessionIndex="attr"><saml:Issuer>idp</saml:Issuer><saml:NameID>u</saml:NameID><samlp:SessionIndex>s-1</samlp:SessionIndex><samlp:SessionIndex> s&amp;2 </samlp:SessionIndex><samlp:Extensions><samlp:SessionIndex>nested</samlp:SessionIndex></samlp:Extensions></samlp:LogoutRequest>"#;
        assert_eq!(session_indexes(req).unwrap(), ["s-1", "s&2"]);
        let none =
            r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="l1"/>"#;
        assert!(session_indexes(none).unwrap().is_empty());
        let empty = req.replace("s-1", "");
        assert!(session_indexes(&empty).is_err());
    }

    #[test]
    fn root_names_the_element_and_counts_assertions() {
        let (root, n) = root_of(OK).unwrap();
        assert_eq!(
            root,
            Root {
                ns: PROTOCOL_NS.into(),
                name: "Response".into(),
                id: Some("r1".into())
            }
        );
        assert_eq!(n, 1);
    }
}
