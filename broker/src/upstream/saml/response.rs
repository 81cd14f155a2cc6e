//! Owns validating a SAML Response from the ACS, as a pure function of the document, what the
//! broker expects and the time: structure first (no DTD, no comments, exactly one assertion),
//! then the XML signature by the IdP's metadata certificates only, then every check on the
//! content that was verified. What is consumed is parsed out of the bytes xmlsec verified (the
//! pre-digest of the one verified reference), never out of the document as received (ADR 7).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::pkey::{PKey, Private};
use samael::crypto::CertificateDer;
use samael::schema::{Assertion, Response};

use super::SamlError;
use super::xml::{ASSERTION_NS, PROTOCOL_NS, STATUS_SUCCESS, read_envelope, refuse_dtd, root_of};
use crate::clock::UnixTime;

/// Bounded clock skew for every time in a response.
pub const SKEW: i64 = 60;
/// Assertions issued longer ago than this are refused (they should be seconds old).
pub const MAX_AGE: i64 = 600;

const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// What the broker expects of this response.
pub struct Expected<'a> {
    pub idp_entity_id: &'a str,
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    /// The IdP's signing certificates, from its metadata.
    pub certs: &'a [CertificateDer],
    /// The AuthnRequest this browser sent; `None` for an unsolicited (IdP-initiated) response,
    /// which the caller allows only when configured.
    pub request_id: Option<&'a str>,
    pub decryption_key: Option<&'a PKey<Private>>,
    /// The NameID format asked for: a NameID of another (stated) format is refused.
    pub name_id_format: &'a str,
    pub now: UnixTime,
}

/// A validated assertion, reduced to what the broker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub assertion_id: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    pub authn_context: Option<String>,
    /// Values by attribute `Name` and by `FriendlyName`.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Until when the assertion ID must be remembered (no replay can pass the checks later).
    pub replay_until: UnixTime,
}

fn ts(t: &chrono::DateTime<chrono::Utc>) -> UnixTime {
    t.timestamp()
}

/// Decodes the base64 form field.
pub fn decode(encoded: &str) -> Result<String, SamlError> {
    let clean: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if clean.len() > super::xml::MAX_DOCUMENT * 4 / 3 + 4 {
        return Err(SamlError::TooLarge);
    }
    let bytes = STANDARD
        .decode(clean)
        .map_err(|_| SamlError::Malformed("SAMLResponse is not base64".into()))?;
    String::from_utf8(bytes).map_err(|_| SamlError::Malformed("SAMLResponse is not UTF-8".into()))
}

/// Verifies the signatures of `doc` and returns the verified bytes, which must be the element
/// `(ns, name)` with ID `id`.
fn verified_element(
    doc: &str,
    certs: &[CertificateDer],
    ns: &str,
    name: &str,
    id: &str,
) -> Result<String, SamlError> {
    // xmlsec dereferences every Reference and runs every transform a signature names before
    // any key is checked: only the SAML profile gets that far, to an xmlsec that can open no URI
    // and run no other transform (ADR 7).
    let signed = super::dsig::verify(doc, id, certs)?;
    let (root, _) = root_of(&signed)?;
    if root.ns != ns || root.name != name || root.id.as_deref() != Some(id) {
        return Err(SamlError::Wrapping(format!(
            "the signed element is {}:{} {:?}, not the {name} {id} that is consumed",
            root.ns, root.name, root.id
        )));
    }
    Ok(signed)
}

/// Decrypts the EncryptedAssertion of a Response document: the result must be one Assertion.
/// AES-CBC only when `response_xml` is the verified bytes of the signed Response.
fn decrypt(
    response_xml: &str,
    key: Option<&PKey<Private>>,
    response_verified: bool,
) -> Result<(String, String), SamlError> {
    let key = key.ok_or(SamlError::Decryption(
        "an EncryptedAssertion arrived but no decryption key is configured".into(),
    ))?;
    let xml = super::crypto::decrypt_assertion(response_xml, key, response_verified)?;
    refuse_dtd(&xml)?;
    let (root, count) = root_of(&xml)?;
    match root.id {
        Some(id) if root.ns == ASSERTION_NS && root.name == "Assertion" && count == 1 => {
            Ok((xml, id))
        }
        _ => Err(SamlError::Malformed(
            "the decrypted content is not one Assertion".into(),
        )),
    }
}

fn parse_assertion(xml: &str) -> Result<Assertion, SamlError> {
    xml.parse()
        .map_err(|e| SamlError::Malformed(format!("Assertion: {e}")))
}

/// Validates a decoded SAML Response document.
pub fn validate(doc: &str, exp: &Expected<'_>) -> Result<Verified, SamlError> {
    if doc.len() > super::xml::MAX_DOCUMENT {
        return Err(SamlError::TooLarge);
    }
    refuse_dtd(doc)?;
    let env = read_envelope(doc)?;
    // Bound to this browser's request (the envelope may be unsigned: these only refuse early;
    // the signed parts are checked below).
    if env.destination.as_deref() != Some(exp.acs_url) {
        return Err(SamlError::Destination);
    }
    if env.in_response_to.as_deref() != exp.request_id {
        return Err(SamlError::InResponseTo);
    }
    if env.status.as_deref() != Some(STATUS_SUCCESS) {
        return Err(SamlError::Status {
            code: env.status.clone().unwrap_or_default(),
            sub: env.sub_status.clone(),
        });
    }
    if env.assertions != 1 {
        return Err(SamlError::Wrapping(
            "a successful Response must carry exactly one assertion".into(),
        ));
    }
    if env.signatures == 0 && !env.encrypted {
        return Err(SamlError::Unsigned);
    }
    let assertion = if env.response_signed {
        // The whole Response is signed: consume only what that signature covered.
        let signed = verified_element(doc, exp.certs, PROTOCOL_NS, "Response", &env.id)?;
        check_response(&read_envelope(&signed)?, exp)?;
        if env.encrypted {
            parse_assertion(&decrypt(&signed, exp.decryption_key, true)?.0)?
        } else {
            let response: Response = signed
                .parse()
                .map_err(|e| SamlError::Malformed(format!("signed Response: {e}")))?;
            response.assertion.ok_or(SamlError::Wrapping(
                "the signed Response has no assertion".into(),
            ))?
        }
    } else if env.encrypted {
        // Only the assertion inside can be signed.
        let (xml, id) = decrypt(doc, exp.decryption_key, false)?;
        parse_assertion(&verified_element(
            &xml,
            exp.certs,
            ASSERTION_NS,
            "Assertion",
            &id,
        )?)?
    } else {
        let id = env
            .assertion_id
            .as_deref()
            .ok_or(SamlError::Malformed("Assertion without ID".into()))?;
        parse_assertion(&verified_element(
            doc,
            exp.certs,
            ASSERTION_NS,
            "Assertion",
            id,
        )?)?
    };
    check_assertion(&assertion, exp)
}

/// The signed Response's own fields (read from the verified bytes).
fn check_response(r: &super::xml::Envelope, exp: &Expected<'_>) -> Result<(), SamlError> {
    if r.destination.as_deref() != Some(exp.acs_url) {
        return Err(SamlError::Destination);
    }
    if r.in_response_to.as_deref() != exp.request_id {
        return Err(SamlError::InResponseTo);
    }
    if let Some(i) = &r.issuer
        && i.trim() != exp.idp_entity_id
    {
        return Err(SamlError::Issuer);
    }
    Ok(())
}

fn check_assertion(a: &Assertion, exp: &Expected<'_>) -> Result<Verified, SamlError> {
    let now = exp.now;
    if a.version != "2.0" {
        return Err(SamlError::Malformed("Assertion Version is not 2.0".into()));
    }
    if a.issuer.value.as_deref() != Some(exp.idp_entity_id) {
        return Err(SamlError::Issuer);
    }
    let issued = ts(&a.issue_instant);
    if issued > now + SKEW {
        return Err(SamlError::NotYetValid(
            "IssueInstant is in the future".into(),
        ));
    }
    if issued < now - MAX_AGE {
        return Err(SamlError::Expired("IssueInstant is too old".into()));
    }
    // Conditions: time window and audience.
    let c = a.conditions.as_ref().ok_or(SamlError::Audience)?;
    if let Some(nb) = &c.not_before
        && now + SKEW < ts(nb)
    {
        return Err(SamlError::NotYetValid("Conditions NotBefore".into()));
    }
    if let Some(na) = &c.not_on_or_after
        && now - SKEW >= ts(na)
    {
        return Err(SamlError::Expired("Conditions NotOnOrAfter".into()));
    }
    let restrictions = c.audience_restrictions.as_deref().unwrap_or_default();
    if restrictions.is_empty()
        || !restrictions
            .iter()
            .all(|r| r.audience.iter().any(|x| x == exp.sp_entity_id))
    {
        return Err(SamlError::Audience);
    }
    // Subject: a NameID, and a bearer confirmation for this ACS and this request, still valid.
    let subject = a.subject.as_ref().ok_or(SamlError::NoSubject)?;
    let name_id = subject
        .name_id
        .as_ref()
        .filter(|n| !n.value.trim().is_empty())
        .ok_or(SamlError::NoSubject)?;
    if let Some(f) = &name_id.format
        && f != exp.name_id_format
        && f != "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
    {
        return Err(SamlError::NameIdFormat(f.clone()));
    }
    // Holder-of-key and sender-vouches confirmations are not supported: without a bearer one
    // the subject is not confirmed at all.
    let mut why = SamlError::ConfirmationMethod;
    let confirmed = subject
        .subject_confirmations
        .iter()
        .flatten()
        .filter(|sc| sc.method.as_deref() == Some(BEARER))
        .any(|sc| {
            let Some(d) = &sc.subject_confirmation_data else {
                return false;
            };
            if d.recipient.as_deref() != Some(exp.acs_url) {
                why = SamlError::Recipient;
                return false;
            }
            if d.in_response_to.as_deref() != exp.request_id {
                why = SamlError::InResponseTo;
                return false;
            }
            match &d.not_on_or_after {
                Some(na) if now - SKEW < ts(na) => {}
                _ => {
                    why = SamlError::Expired("SubjectConfirmationData NotOnOrAfter".into());
                    return false;
                }
            }
            if let Some(nb) = &d.not_before
                && now + SKEW < ts(nb)
            {
                why = SamlError::NotYetValid("SubjectConfirmationData NotBefore".into());
                return false;
            }
            true
        });
    if !confirmed {
        return Err(why);
    }
    let statement = a
        .authn_statements
        .as_deref()
        .and_then(|s| s.first())
        .ok_or(SamlError::Malformed("no AuthnStatement".into()))?;
    if let Some(end) = &statement.session_not_on_or_after
        && now - SKEW >= ts(end)
    {
        return Err(SamlError::Expired("SessionNotOnOrAfter".into()));
    }
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for attr in a
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| &s.attributes)
    {
        let values: Vec<String> = attr.values.iter().filter_map(|v| v.value.clone()).collect();
        for key in [&attr.name, &attr.friendly_name].into_iter().flatten() {
            attributes
                .entry(key.clone())
                .or_default()
                .extend(values.iter().cloned());
        }
    }
    Ok(Verified {
        assertion_id: a.id.clone(),
        name_id: name_id.value.clone(),
        name_id_format: name_id.format.clone(),
        session_index: statement.session_index.clone(),
        authn_context: statement
            .authn_context
            .as_ref()
            .and_then(|c| c.value.as_ref())
            .and_then(|r| r.value.clone()),
        attributes,
        replay_until: issued + MAX_AGE + SKEW,
    })
}
