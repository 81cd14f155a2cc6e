//! Owns the XML-DSig profile every signed SAML document must keep before xmlsec sees it (SAML
//! Core 5.4): each `ds:Signature` anywhere in the document is enveloped in the element it signs,
//! has exactly one `ds:Reference` whose URI is `#<ID of that element>`, exactly the
//! enveloped-signature and exclusive-c14n transforms, exclusive c14n as its canonicalization and
//! a signature and digest method from the allow-list. Nothing else (no other URI, transform,
//! `ds:Object`, `ds:Manifest` or `ds:RetrievalMethod`) reaches xmlsec, which would otherwise
//! dereference and run whatever an unauthenticated document names (ADR 7). Namespaces are read
//! as libxml2 reads them, or the document is refused (`xml::check_namespaces`, issue #17).
//!
//! Also the broker's one door to xmlsec: [`verify`], [`sign`] and [`sign_with`] run that check
//! and then `xmlsec_lockdown` (locked down, strict parse); clippy's `disallowed-methods` keeps
//! every other caller off samael's XML-DSig functions and off
//! `xmlsec_lockdown::{verify, sign, sign_with}`. The SAML IdP role verifies through [`verify`]
//! and signs through [`sign_with`] with its key loaded once.

use std::collections::HashSet;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer};
use xmlsec_lockdown::XmlsecError;

use super::SamlError;
use super::xml::{DSIG_NS, check_namespaces};

/// Exclusive XML canonicalization without comments: the only canonicalization and the only
/// transform besides enveloped-signature.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// Signature methods accepted. SHA-1 (`rsa-sha1`, `dsa-sha1`), SHA-224 and HMAC are not.
pub const SIGNATURE_METHODS: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];

/// Digest methods accepted (no SHA-1).
pub const DIGEST_METHODS: &[&str] = &[
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];

/// [`SIGNATURE_METHODS`] as samael names them (it checks them again before xmlsec runs).
const ALGORITHMS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Verifies the signatures of `doc` (the exact bytes given) by `certs` only and returns the
/// bytes xmlsec verified (the pre-digest of the one verified reference), which must then be
/// the element `consumed` names (the caller checks). [`check_profile`] first: nothing outside
/// the profile, or read otherwise by libxml2, reaches xmlsec.
#[allow(clippy::disallowed_methods)] // the broker's one call of xmlsec verification
pub fn verify(doc: &str, consumed: &str, certs: &[CertificateDer]) -> Result<String, SamlError> {
    check_profile(doc, consumed)?;
    xmlsec_lockdown::verify(doc, certs, ALGORITHMS).map_err(|e| match e {
        XmlsecError::NotWellFormed => SamlError::Malformed(e.to_string()),
        XmlsecError::Lockdown(e) => SamlError::Signature(format!("xmlsec lockdown: {e}")),
        XmlsecError::Invalid(_) | XmlsecError::Sign(_) | XmlsecError::Key => {
            SamlError::Signature("no valid signature by the IdP's metadata keys".into())
        }
    })
}

/// Signs `template`, a document whose `ds:Signature` templates (empty `DigestValue` and
/// `SignatureValue`) keep the profile and sign the element `signed`, with `private_key_der`,
/// loaded for this one signature (tests and benchmarks; the IdP signs with [`sign_with`]).
#[allow(clippy::disallowed_methods)] // the broker's one call of xmlsec signing from DER
pub fn sign(template: &str, signed: &str, private_key_der: &[u8]) -> Result<String, SamlError> {
    check_profile(template, signed)?;
    xmlsec_lockdown::sign(template, private_key_der).map_err(|e| SamlError::Config(e.to_string()))
}

/// [`sign`] with a key loaded once (`SamlIdp::sign`): the same profile check first, the same
/// output byte for byte, without decoding the key again.
#[allow(clippy::disallowed_methods)] // the broker's one call of xmlsec signing with a loaded key
pub fn sign_with(
    template: &str,
    signed: &str,
    key: &xmlsec_lockdown::SigningKey,
) -> Result<String, SamlError> {
    check_profile(template, signed)?;
    xmlsec_lockdown::sign_with(template, key).map_err(|e| SamlError::Config(e.to_string()))
}

/// The elements a `ds:KeyInfo` may hold (the key that verifies is always one from the IdP's
/// metadata; these are only read past). No `RetrievalMethod`, no `EncryptedKey`, nothing with a
/// URI.
const KEY_INFO_ELEMENTS: &[&str] = &[
    "X509Data",
    "X509Certificate",
    "X509SubjectName",
    "X509IssuerSerial",
    "X509IssuerName",
    "X509SerialNumber",
    "X509SKI",
    "KeyName",
    "KeyValue",
    "RSAKeyValue",
    "Modulus",
    "Exponent",
];

/// An element of a captured `ds:Signature` subtree.
#[derive(Debug, Default)]
struct Node {
    /// The element is in the XML-DSig namespace.
    dsig: bool,
    /// The element is in the exclusive-c14n namespace (`InclusiveNamespaces`).
    exc_c14n: bool,
    name: String,
    /// Attributes other than namespace declarations, by their name as written.
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
    /// Non-whitespace character data directly inside.
    text: bool,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn only_attrs(&self, allowed: &[&str]) -> Result<(), SamlError> {
        match self
            .attrs
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            Some((k, _)) => Err(SamlError::Reference(format!(
                "attribute {k} on ds:{} is refused",
                self.name
            ))),
            None => Ok(()),
        }
    }

    /// The children, which must be exactly the DSig elements `names` in this order.
    fn children_are(&self, names: &[&str]) -> Result<&[Node], SamlError> {
        let got: Vec<&str> = self.children.iter().map(|c| c.name.as_str()).collect();
        if self.text || self.children.iter().any(|c| !c.dsig) || got.as_slice() != names {
            return Err(SamlError::Reference(format!(
                "ds:{} must hold exactly {names:?}, not {got:?}",
                self.name
            )));
        }
        Ok(&self.children)
    }

    fn leaf(&self) -> Result<(), SamlError> {
        if self.children.is_empty() {
            Ok(())
        } else {
            Err(SamlError::Reference(format!(
                "ds:{} must not have children",
                self.name
            )))
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> SamlError {
    SamlError::Malformed(e.to_string())
}

/// The attributes of `e`, refusing duplicates, `xml:id` (libxml2 would make it an ID xmlsec can
/// reference) and a raw `<` (libxml2's recovery would read it differently).
fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, SamlError> {
    let mut out = Vec::new();
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(malformed)?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        if key == "xml:id" {
            return Err(SamlError::Reference("xml:id attributes are refused".into()));
        }
        if a.value.contains(&b'<') {
            return Err(SamlError::Malformed("`<` in an attribute value".into()));
        }
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(malformed)?
            .into_owned();
        out.push((key, value));
    }
    Ok(out)
}

fn bound_to(ns: &ResolveResult<'_>, want: &str) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.0 == want.as_bytes())
}

/// Checks every `ds:Signature` of `doc` (the exact bytes xmlsec will get) against the profile,
/// and that one of them signs the element with ID `consumed`. Runs in one streaming pass that
/// expands nothing and fetches nothing.
pub fn check_profile(doc: &str, consumed: &str) -> Result<(), SamlError> {
    let mut reader = NsReader::from_str(doc);
    // The `ID` of each open element outside a signature, innermost last.
    let mut open: Vec<Option<String>> = Vec::new();
    // The signature being captured: its open elements, outermost first, and its parent's ID.
    let mut capture: Vec<Node> = Vec::new();
    let mut signed_parent: Option<Option<String>> = None;
    let mut signed: Vec<String> = Vec::new();
    let mut ids = HashSet::new();
    loop {
        let event = reader.read_event().map_err(malformed)?;
        let (start, empty) = match &event {
            Event::Start(s) => (Some(s), false),
            Event::Empty(s) => (Some(s), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            // The namespaces libxml2 will see, or a refusal (issue #17).
            check_namespaces(e, reader.resolver())?;
            let (ns, _) = reader.resolver().resolve_element(e.name());
            let attrs = attributes(e)?;
            let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            let dsig = bound_to(&ns, DSIG_NS);
            if let Some((_, id)) = attrs.iter().find(|(k, _)| k == "ID")
                && !ids.insert(id.clone())
            {
                return Err(SamlError::Wrapping(format!("the ID {id} appears twice")));
            }
            if capture.is_empty() && dsig && local == "Signature" {
                signed_parent = Some(open.last().cloned().flatten());
            }
            if capture.is_empty() && signed_parent.is_none() {
                if dsig && matches!(local.as_str(), "Manifest" | "Reference" | "SignedInfo") {
                    return Err(SamlError::Reference(format!(
                        "ds:{local} outside a ds:Signature"
                    )));
                }
                if !empty {
                    open.push(
                        attrs
                            .iter()
                            .find(|(k, _)| k == "ID")
                            .map(|(_, v)| v.clone()),
                    );
                }
                continue;
            }
            let node = Node {
                dsig,
                exc_c14n: bound_to(&ns, EXC_C14N),
                name: local,
                attrs,
                children: Vec::new(),
                text: false,
            };
            if empty {
                close(&mut capture, node, &mut signed_parent, &mut signed)?;
            } else {
                capture.push(node);
            }
            continue;
        }
        match event {
            Event::End(_) => match capture.pop() {
                Some(node) => close(&mut capture, node, &mut signed_parent, &mut signed)?,
                None => {
                    open.pop();
                }
            },
            Event::Text(t) => {
                if let Some(node) = capture.last_mut()
                    && t.iter().any(|b| !b.is_ascii_whitespace())
                {
                    node.text = true;
                }
            }
            Event::CData(_) => {
                if let Some(node) = capture.last_mut() {
                    node.text = true;
                }
            }
            Event::GeneralRef(r) => {
                let name: &[u8] = &r;
                if !matches!(name, b"amp" | b"lt" | b"gt" | b"quot" | b"apos")
                    && !name.starts_with(b"#")
                {
                    return Err(SamlError::Dtd);
                }
                if let Some(node) = capture.last_mut() {
                    node.text = true;
                }
            }
            Event::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(malformed)?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") {
                        return Err(SamlError::Malformed("an encoding other than UTF-8".into()));
                    }
                }
            }
            Event::Comment(_) => return Err(SamlError::Comment),
            Event::PI(_) => return Err(SamlError::Malformed("processing instruction".into())),
            Event::DocType(_) => return Err(SamlError::Dtd),
            Event::Eof => break,
            _ => {}
        }
    }
    if !capture.is_empty() || signed_parent.is_some() {
        return Err(SamlError::Malformed("an unclosed ds:Signature".into()));
    }
    if !signed.iter().any(|s| s == consumed) {
        return Err(SamlError::Reference(format!(
            "no signature signs the consumed element {consumed}"
        )));
    }
    Ok(())
}

/// Closes `node`: appends it to its parent in the capture, or (the `ds:Signature` itself)
/// checks it against the profile and records the ID it signs.
fn close(
    capture: &mut [Node],
    node: Node,
    signed_parent: &mut Option<Option<String>>,
    signed: &mut Vec<String>,
) -> Result<(), SamlError> {
    if let Some(parent) = capture.last_mut() {
        parent.children.push(node);
        return Ok(());
    }
    let parent_id = signed_parent.take().flatten();
    signed.push(check_signature(&node, parent_id.as_deref())?);
    Ok(())
}

/// Checks one `ds:Signature` whose parent element has the ID `parent_id`; returns that ID.
fn check_signature(sig: &Node, parent_id: Option<&str>) -> Result<String, SamlError> {
    let parent_id = parent_id
        .filter(|id| !id.is_empty())
        .ok_or(SamlError::Reference(
            "the ds:Signature's parent element has no ID".into(),
        ))?;
    sig.only_attrs(&["Id"])?;
    let names: &[&str] = if sig.children.len() == 3 {
        &["SignedInfo", "SignatureValue", "KeyInfo"]
    } else {
        &["SignedInfo", "SignatureValue"]
    };
    let parts = sig.children_are(names)?;
    let [signed_info, value, rest @ ..] = parts else {
        return Err(SamlError::Reference("ds:Signature is incomplete".into()));
    };
    value.only_attrs(&["Id"])?;
    value.leaf()?;
    if let Some(key_info) = rest.first() {
        check_key_info(key_info)?;
    }
    signed_info.only_attrs(&["Id"])?;
    let [c14n, method, reference] =
        signed_info.children_are(&["CanonicalizationMethod", "SignatureMethod", "Reference"])?
    else {
        return Err(SamlError::Reference("ds:SignedInfo is incomplete".into()));
    };
    if c14n.attr("Algorithm") != Some(EXC_C14N) {
        return Err(SamlError::Algorithm(format!(
            "CanonicalizationMethod {:?}",
            c14n.attr("Algorithm")
        )));
    }
    check_c14n(c14n)?;
    match method.attr("Algorithm") {
        Some(a) if SIGNATURE_METHODS.contains(&a) => {}
        other => return Err(SamlError::Algorithm(format!("SignatureMethod {other:?}"))),
    }
    method.only_attrs(&["Algorithm"])?;
    method.leaf()?;
    reference.only_attrs(&["URI", "Id"])?;
    let want = format!("#{parent_id}");
    if reference.attr("URI") != Some(want.as_str()) {
        return Err(SamlError::Reference(format!(
            "Reference URI {:?} is not {want:?}, the signed element",
            reference.attr("URI")
        )));
    }
    let [transforms, digest, digest_value] =
        reference.children_are(&["Transforms", "DigestMethod", "DigestValue"])?
    else {
        return Err(SamlError::Reference("ds:Reference is incomplete".into()));
    };
    transforms.only_attrs(&[])?;
    let [enveloped, exc] = transforms.children_are(&["Transform", "Transform"])? else {
        return Err(SamlError::Reference("two transforms are required".into()));
    };
    if enveloped.attr("Algorithm") != Some(ENVELOPED) || exc.attr("Algorithm") != Some(EXC_C14N) {
        return Err(SamlError::Reference(format!(
            "transforms {:?}, {:?} (enveloped-signature then exclusive c14n are required)",
            enveloped.attr("Algorithm"),
            exc.attr("Algorithm")
        )));
    }
    enveloped.only_attrs(&["Algorithm"])?;
    if enveloped.text {
        return Err(SamlError::Reference("text in a ds:Transform".into()));
    }
    enveloped.leaf()?;
    check_c14n(exc)?;
    match digest.attr("Algorithm") {
        Some(a) if DIGEST_METHODS.contains(&a) => {}
        other => return Err(SamlError::Algorithm(format!("DigestMethod {other:?}"))),
    }
    digest.only_attrs(&["Algorithm"])?;
    digest.leaf()?;
    digest_value.only_attrs(&[])?;
    digest_value.leaf()?;
    Ok(parent_id.to_owned())
}

/// An exclusive-c14n `CanonicalizationMethod` or `Transform`: only its `Algorithm`, and at most
/// one `ec:InclusiveNamespaces` with a `PrefixList`.
fn check_c14n(node: &Node) -> Result<(), SamlError> {
    node.only_attrs(&["Algorithm"])?;
    let inclusive_ok = |c: &Node| {
        c.exc_c14n
            && c.name == "InclusiveNamespaces"
            && c.children.is_empty()
            && !c.text
            && c.attrs.iter().all(|(k, _)| k == "PrefixList")
    };
    match node.children.as_slice() {
        [] if !node.text => Ok(()),
        [c] if !node.text && inclusive_ok(c) => Ok(()),
        _ => Err(SamlError::Reference(format!(
            "ds:{} may hold only ec:InclusiveNamespaces",
            node.name
        ))),
    }
}

fn check_key_info(node: &Node) -> Result<(), SamlError> {
    node.only_attrs(&["Id"])?;
    fn walk(n: &Node) -> Result<(), SamlError> {
        for c in &n.children {
            if !c.dsig || !KEY_INFO_ELEMENTS.contains(&c.name.as_str()) || !c.attrs.is_empty() {
                return Err(SamlError::Reference(format!(
                    "ds:KeyInfo may not hold {}",
                    c.name
                )));
            }
            walk(c)?;
        }
        Ok(())
    }
    walk(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(id: &str, reference: &str) -> String {
        format!(
            r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}">{reference}<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AA==</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AA==</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>AA==</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"##
        )
    }

    const TRANSFORMS: &str = r#"<ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/></ds:Transform></ds:Transforms>"#;

    fn doc(signature: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><r:Response xmlns:r="urn:x" ID="r1"><a:Assertion xmlns:a="urn:y" ID="a1">{signature}<a:Subject/></a:Assertion></r:Response>"#
        )
    }

    #[test]
    fn the_profile_passes() {
        let d = doc(&sig("a1", TRANSFORMS));
        check_profile(&d, "a1").unwrap();
        assert!(matches!(
            check_profile(&d, "r1"),
            Err(SamlError::Reference(_))
        ));
    }

    #[test]
    fn everything_else_is_refused() {
        let refused = [
            sig("r1", TRANSFORMS),
            sig("", TRANSFORMS).replace("URI=\"#\"", "URI=\"\""),
            sig("a1", TRANSFORMS).replace("#a1", "file:///dev/zero"),
            sig("a1", TRANSFORMS).replace("#a1", "http://127.0.0.1:1/"),
            sig("a1", TRANSFORMS).replace("#a1", "#xpointer(id('a1'))"),
            sig("a1", ""),
            sig("a1", TRANSFORMS).replace(
                "</ds:Transforms>",
                "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/></ds:Transforms>",
            ),
            sig("a1", TRANSFORMS).replace(
                "</ds:Reference>",
                "</ds:Reference><ds:Reference URI=\"#a1\"/>",
            ),
            sig("a1", TRANSFORMS).replace("xmldsig-more#rsa-sha256", "xmldsig-more#rsa-sha1"),
            sig("a1", TRANSFORMS).replace("xmlenc#sha256", "xmldsig#sha1"),
            sig("a1", TRANSFORMS).replace(
                "<ds:X509Data>",
                "<ds:RetrievalMethod URI=\"http://x/\"/><ds:X509Data>",
            ),
            sig("a1", TRANSFORMS).replace(
                "</ds:KeyInfo>",
                "</ds:KeyInfo><ds:Object><ds:Manifest/></ds:Object>",
            ),
        ];
        for s in refused {
            let d = doc(&s);
            assert!(check_profile(&d, "a1").is_err(), "{s}");
        }
        // Signatures anywhere are checked, not only the consumed one's.
        let extra = doc(&format!(
            "{}<a:Advice ID=\"x\">{}</a:Advice>",
            sig("a1", TRANSFORMS),
            sig("x", "")
        ));
        assert!(check_profile(&extra, "a1").is_err());
        let latin = doc(&sig("a1", TRANSFORMS)).replace("UTF-8", "ISO-8859-1");
        assert!(check_profile(&latin, "a1").is_err());
    }

    /// A second signature, over the Response, whose one transform is an XSLT program: what
    /// xmlsec would run if it saw the signature and the pre-check did not (issue #17).
    fn hostile(open: &str, prefix: &str) -> String {
        format!(
            r##"<{prefix}Signature {open}><{prefix}SignedInfo><{prefix}CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><{prefix}SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><{prefix}Reference URI="#r1"><{prefix}Transforms><{prefix}Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"/></{prefix}Transform><{prefix}Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><{prefix}XPath>count(//.) &gt; 0</{prefix}XPath></{prefix}Transform></{prefix}Transforms><{prefix}DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><{prefix}DigestValue>AA==</{prefix}DigestValue></{prefix}Reference></{prefix}SignedInfo><{prefix}SignatureValue>AA==</{prefix}SignatureValue></{prefix}Signature>"##
        )
    }

    /// The valid document with `extra` as the Response's first child.
    fn beside(extra: &str) -> String {
        doc(&sig("a1", TRANSFORMS)).replacen("ID=\"r1\">", &format!("ID=\"r1\">{extra}"), 1)
    }

    #[test]
    fn namespaces_are_read_as_libxml2_reads_them() {
        // libxml2 expands references in a namespace declaration: each of these is the XML-DSig
        // namespace to it (and to xmlsec), and was invisible to the pre-check.
        let refused = [
            hostile(
                r#"xmlns:ds="http&#58;//www.w3.org/2000/09/xmldsig#""#,
                "ds:",
            ),
            hostile(
                r#"xmlns:ds="http&#x3a;//www.w3.org/2000/09/xmldsig#""#,
                "ds:",
            ),
            hostile(
                r#"xmlns:ds="http&#x3A;//www.w3.org/2000/09/xmldsig&#35;""#,
                "ds:",
            ),
            hostile(
                r#"xmlns:ds="&#104;ttp://www.w3.org/2000/09/xmldsig#""#,
                "ds:",
            ),
            // The default namespace, written the same ways.
            hostile(r#"xmlns="http&#58;//www.w3.org/2000/09/xmldsig#""#, ""),
            hostile(r#"xmlns="http&#x3a;//www.w3.org/2000/09/xmldsig#""#, ""),
            // A predefined entity (libxml2 expands it too; no honest namespace needs one).
            hostile(
                r#"xmlns:ds="http://www.w3.org/2000/09/xmldsig#&amp;""#,
                "ds:",
            ),
            // Whitespace libxml2 normalises in attribute values.
            hostile("xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\t\"", "ds:"),
            hostile("xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\n\"", "ds:"),
            hostile("xmlns:ds=\"\rhttp://www.w3.org/2000/09/xmldsig#\"", "ds:"),
            // `xmlns:ds=""` cannot undeclare a prefix in XML Namespaces 1.0: libxml2 ignores it
            // and keeps the outer binding (declared on the Response below), quick-xml unbinds.
            hostile(r#"xmlns:ds="""#, "ds:"),
            // An undeclared prefix (libxml2 keeps the element, in no namespace).
            hostile("", "undeclared:"),
            // The signature's own children rebound to another namespace, or out of the default.
            sig("a1", TRANSFORMS).replace(
                "<ds:SignedInfo>",
                r#"<ds:SignedInfo xmlns:ds="urn:not-dsig">"#,
            ),
            hostile(r#"xmlns="http://www.w3.org/2000/09/xmldsig#""#, "").replacen(
                "<SignedInfo>",
                r#"<SignedInfo xmlns="">"#,
                1,
            ),
            // The reserved prefixes.
            hostile(
                r#"xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xml="urn:x""#,
                "ds:",
            ),
            hostile(
                r#"xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xmlns="urn:x""#,
                "ds:",
            ),
            // A declaration given twice on one element.
            hostile(
                r#"xmlns:ds="urn:x" xmlns:ds="http://www.w3.org/2000/09/xmldsig#""#,
                "ds:",
            ),
        ];
        for extra in &refused {
            let d = beside(extra).replacen(
                "xmlns:r=\"urn:x\"",
                "xmlns:r=\"urn:x\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"",
                1,
            );
            assert!(check_profile(&d, "a1").is_err(), "accepted: {extra}");
        }
        // Namespaces anywhere else in the document, not only on a signature.
        let elsewhere = [
            doc(&sig("a1", TRANSFORMS)).replace(r#"xmlns:a="urn:y""#, r#"xmlns:a="urn&#58;y""#),
            doc(&sig("a1", TRANSFORMS)).replace("<a:Subject/>", "<a:Subject xmlns=\"urn&amp;z\"/>"),
            doc(&sig("a1", TRANSFORMS)).replace("<a:Subject/>", "<b:Subject/>"),
        ];
        for d in &elsewhere {
            assert!(check_profile(d, "a1").is_err(), "accepted: {d}");
        }
    }

    #[test]
    fn attributes_are_read_as_libxml2_reads_them() {
        // xmlsec reads `Algorithm` with xmlGetProp, which ignores the attribute's namespace, and
        // samael registers IDs with xmlHasProp, which does too.
        let refused = [
            sig("a1", TRANSFORMS).replace(
                r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
                r#"<ds:Transform xmlns:f="urn:f" f:Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116" Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
            ),
            sig("a1", TRANSFORMS).replace(
                r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
                r#"<ds:Transform ds:Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
            ),
            sig("a1", TRANSFORMS).replace(
                r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
                r#"<ds:Transform undeclared:Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
            ),
        ];
        for s in &refused {
            assert!(check_profile(&doc(s), "a1").is_err(), "accepted: {s}");
        }
        // A prefixed `ID` is an ID to samael (xmlHasProp) but not to the pre-check.
        let prefixed_id = doc(&sig("a1", TRANSFORMS))
            .replace("<a:Subject/>", r#"<a:Subject xmlns:p="urn:p" p:ID="a1"/>"#);
        assert!(check_profile(&prefixed_id, "a1").is_err());
        let undeclared_id =
            doc(&sig("a1", TRANSFORMS)).replace("<a:Subject/>", r#"<a:Subject q:ID="x"/>"#);
        assert!(check_profile(&undeclared_id, "a1").is_err());
    }

    #[test]
    fn honest_namespace_spellings_pass() {
        // The signature in the default namespace, under another prefix, declared on the root,
        // and the predefined `xml` prefix: all the XML-DSig namespace, all checked and accepted.
        let default_ns = sig("a1", TRANSFORMS)
            .replace("ds:", "")
            .replace("xmlns:ds=", "xmlns=");
        let other_prefix = sig("a1", TRANSFORMS)
            .replace("ds:", "dsig:")
            .replace("xmlns:ds=", "xmlns:dsig=");
        let on_root =
            doc(&sig("a1", TRANSFORMS)
                .replace(r#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#""#, ""))
            .replacen(
                "xmlns:r=\"urn:x\"",
                "xmlns:r=\"urn:x\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"",
                1,
            );
        for d in [doc(&default_ns), doc(&other_prefix), on_root] {
            check_profile(&d, "a1").unwrap_or_else(|e| panic!("{e}: {d}"));
        }
        let lang =
            doc(&sig("a1", TRANSFORMS)).replace("<a:Subject/>", r#"<a:Subject xml:lang="en"/>"#);
        check_profile(&lang, "a1").unwrap();
        // The same signature in the default namespace with an XSLT transform is seen, and
        // refused, as before.
        let visible = beside(&hostile(
            r#"xmlns="http://www.w3.org/2000/09/xmldsig#""#,
            "",
        ));
        assert!(matches!(
            check_profile(&visible, "a1"),
            Err(SamlError::Reference(_))
        ));
    }
}
