//! Owns the SAML differential: the broker's pre-check (`refuse_dtd` then `dsig::check_profile`,
//! as `response::validate` runs them) against libxml2's own view of the same bytes, parsed the
//! way samael parses before xmlsec runs (`libxml::parser::Parser::default()`, recover mode).
//!
//! `check_profile` answers only yes or no for one consumed ID, so the pre-check's view is read
//! out of it: the IDs it accepts as consumed are exactly the IDs of the elements its signatures
//! sign. Whenever it accepts any, libxml2 must see the same thing: every `Signature` in the
//! XML-DSig namespace (as libxml2 resolves namespaces) enveloped in an element whose `ID` (as
//! samael reads it, `xmlGetProp`) is signed by that signature's one `Reference`, inside the
//! profile's algorithm allow-lists, with no `Reference`, `Manifest` or `SignedInfo` outside a
//! signature and no `xml:id`; and the set of signed IDs must be the set the pre-check accepts.

use std::collections::BTreeSet;

use concierge::upstream::saml::dsig::{
    DIGEST_METHODS, ENVELOPED, EXC_C14N, SIGNATURE_METHODS, check_profile,
};
use concierge::upstream::saml::xml::{DSIG_NS, MAX_DOCUMENT, refuse_dtd};
use libxml::parser::{Parser, ParserOptions};
use libxml::tree::Node;
use quick_xml::events::Event;

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Elements of the XML-DSig namespace that may appear only inside a signature (the pre-check
/// refuses them outside; xmlsec would dereference a Reference or Manifest wherever it is).
const INSIDE_ONLY: &[&str] = &["Reference", "Manifest", "SignedInfo"];
/// Elements the profile never lets into a signature.
const NEVER: &[&str] = &["Object", "Manifest", "RetrievalMethod", "XPath", "XSLT"];

/// One `Signature` as libxml2 sees it.
#[derive(Debug)]
struct LibxmlSignature {
    parent_id: Option<String>,
    references: Vec<Option<String>>,
    problems: Vec<String>,
}

fn is_dsig(n: &Node) -> bool {
    n.get_namespace().is_some_and(|ns| ns.get_href() == DSIG_NS)
}

fn elements(root: &Node, out: &mut Vec<Node>) {
    let mut stack = vec![root.clone()];
    while let Some(n) = stack.pop() {
        stack.extend(n.get_child_elements().into_iter().rev());
        out.push(n);
    }
}

/// Every `ID` attribute value (keyed exactly `ID`, normalised as the pre-check normalises it),
/// read with the pre-check's own streaming parser: candidates for what the pre-check might call
/// signed, found even where libxml2 sees something else.
fn quick_xml_ids(doc: &str, out: &mut BTreeSet<String>) {
    let mut reader = quick_xml::Reader::from_str(doc);
    // Bounded: the document is bounded, and every event consumes input.
    while let Ok(ev) = reader.read_event() {
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                for a in e.attributes().flatten() {
                    if a.key.as_ref() == b"ID"
                        && let Ok(v) = a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    {
                        out.insert(v.into_owned());
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
}

fn libxml_signature(sig: &Node) -> LibxmlSignature {
    let mut problems = Vec::new();
    let parent_id = sig
        .get_parent()
        .filter(Node::is_element_node)
        .and_then(|p| p.get_attribute("ID"));
    let mut all = Vec::new();
    elements(sig, &mut all);
    let mut references = Vec::new();
    for n in all.iter().skip(1) {
        let name = n.get_name();
        if !is_dsig(n) {
            if name == "InclusiveNamespaces" {
                continue;
            }
            problems.push(format!("non-DSig element {name} inside a Signature"));
            continue;
        }
        let alg = n.get_attribute("Algorithm");
        let alg = alg.as_deref();
        match name.as_str() {
            "Signature" => problems.push("a Signature inside a Signature".into()),
            "Reference" => references.push(n.get_attribute("URI")),
            "CanonicalizationMethod" if alg != Some(EXC_C14N) => {
                problems.push(format!("CanonicalizationMethod {alg:?}"));
            }
            "SignatureMethod" if !alg.is_some_and(|a| SIGNATURE_METHODS.contains(&a)) => {
                problems.push(format!("SignatureMethod {alg:?}"));
            }
            "DigestMethod" if !alg.is_some_and(|a| DIGEST_METHODS.contains(&a)) => {
                problems.push(format!("DigestMethod {alg:?}"));
            }
            "Transform" if !matches!(alg, Some(ENVELOPED | EXC_C14N)) => {
                problems.push(format!("Transform {alg:?}"));
            }
            other if NEVER.contains(&other) => problems.push(format!("ds:{other} in a Signature")),
            _ => {}
        }
    }
    LibxmlSignature {
        parent_id,
        references,
        problems,
    }
}

/// The pre-check's verdict for consuming `id`: refused by `refuse_dtd` or by `check_profile`.
fn precheck_accepts(doc: &str, id: &str) -> bool {
    refuse_dtd(doc).is_ok() && check_profile(doc, id).is_ok()
}

/// `Err` describes a disagreement between the pre-check and libxml2 on `data`.
pub fn check(data: &[u8]) -> Result<(), String> {
    let Ok(doc) = std::str::from_utf8(data) else {
        return Ok(());
    };
    if doc.len() > MAX_DOCUMENT || refuse_dtd(doc).is_err() {
        return Ok(());
    }
    // Candidate IDs: every ID either parser sees, and every same-document reference libxml2 sees.
    let mut candidates = BTreeSet::new();
    quick_xml_ids(doc, &mut candidates);
    let parsed = Parser::default().parse_string(doc).ok();
    let mut nodes = Vec::new();
    if let Some(root) = parsed.as_ref().and_then(|d| d.get_root_element()) {
        elements(&root, &mut nodes);
    }
    for n in &nodes {
        if let Some(id) = n.get_attribute("ID") {
            candidates.insert(id);
        }
        if is_dsig(n)
            && n.get_name() == "Reference"
            && let Some(uri) = n.get_attribute("URI")
            && let Some(id) = uri.strip_prefix('#')
        {
            candidates.insert(id.to_owned());
        }
    }
    let accepted: BTreeSet<String> = candidates
        .into_iter()
        .filter(|id| precheck_accepts(doc, id))
        .collect();
    crate::debug(|| format!("the pre-check accepts consuming {accepted:?}"));
    if accepted.is_empty() {
        // Refused by the pre-check: xmlsec never sees it.
        return Ok(());
    }
    if parsed.is_none() {
        // libxml2 refuses it: xmlsec never runs either.
        return Ok(());
    }
    let mut problems = Vec::new();
    let mut signed = BTreeSet::new();
    let mut inside = std::collections::HashSet::new();
    for n in &nodes {
        if is_dsig(n) && n.get_name() == "Signature" {
            let mut sub = Vec::new();
            elements(n, &mut sub);
            inside.extend(sub.iter().map(Node::to_hashable));
            let s = libxml_signature(n);
            problems.extend(s.problems.iter().cloned());
            match (&s.parent_id, s.references.as_slice()) {
                (Some(p), [Some(uri)]) if !p.is_empty() && uri == &format!("#{p}") => {
                    signed.insert(p.clone());
                }
                _ => problems.push(format!(
                    "libxml2 sees a Signature whose parent ID is {:?} and references {:?}",
                    s.parent_id, s.references
                )),
            }
        }
        if n.get_property_ns("id", XML_NS).is_some() {
            problems.push(format!("libxml2 sees an xml:id on {}", n.get_name()));
        }
    }
    for n in &nodes {
        let name = n.get_name();
        if is_dsig(n) && INSIDE_ONLY.contains(&name.as_str()) && !inside.contains(&n.to_hashable())
        {
            problems.push(format!("libxml2 sees a ds:{name} outside any Signature"));
        }
    }
    crate::debug(|| format!("libxml2's signatures sign {signed:?}"));
    if signed != accepted {
        problems.push(format!(
            "the pre-check accepts consuming {accepted:?}; libxml2's signatures sign {signed:?}"
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    if let Some(class) = known_class(doc) {
        crate::tolerated(class);
        return Ok(());
    }
    Err(problems.join("; "))
}

/// The known class of disagreement `doc` belongs to, if it is listed in `CONCIERGE_FUZZ_KNOWN`
/// (comma-separated; scripts/fuzz.sh sets it from fuzz/KNOWN-DISAGREEMENTS while a fix is
/// pending, so that fuzzing goes on past them):
/// - `not-well-formed`: libxml2 refuses the document without recovery (a NUL, a bad attribute
///   name, ...): quick-xml passed it, and samael's recover mode reads something else;
/// - `xmlns-charref`: a reference (`&...;`) in a namespace declaration's value, which quick-xml
///   compares raw and libxml2 decodes;
/// - `prefixed-id`: an attribute `prefix:ID`, which libxml2's `xmlGetProp("ID")` (samael's ID
///   lookup) may take for the element's ID and the pre-check does not.
fn known_class(doc: &str) -> Option<&'static str> {
    let known = crate::known();
    if known.contains(&"not-well-formed") {
        let strict = ParserOptions {
            recover: false,
            ..ParserOptions::default()
        };
        if Parser::default()
            .parse_string_with_options(doc, strict)
            .is_err()
        {
            return Some("not-well-formed");
        }
    }
    let mut reader = quick_xml::Reader::from_str(doc);
    while let Ok(ev) = reader.read_event() {
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                for a in e.attributes().with_checks(false).flatten() {
                    let key = a.key.as_ref();
                    if known.contains(&"xmlns-charref")
                        && key.starts_with(b"xmlns")
                        && a.value.contains(&b'&')
                    {
                        return Some("xmlns-charref");
                    }
                    if known.contains(&"prefixed-id") && key.ends_with(b":ID") {
                        return Some("prefixed-id");
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    None
}
