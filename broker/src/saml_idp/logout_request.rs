//! Owns reading an SP's LogoutRequest as it arrives, over HTTP-Redirect or HTTP-POST, with the
//! AuthnRequest's hardening through the same doors (`authn_request`: size and inflate limits,
//! the query or enveloped signature of an SP with registered certificates; `upstream::saml`: no
//! DTD, namespaces read as libxml2 reads them, samael's reading of the verified bytes), then
//! checked against the registry: a registered Issuer with a SingleLogoutService, this IdP's SLO
//! URL as the Destination when one is named, an IssueInstant within the bounded skew. Which
//! session it ends, and its ID used once, are the flow's (`flow::saml_slo`).

use samael::crypto::CertificateDer;

use super::SamlIdp;
use super::authn_request::{decode_post, redirect_document, verified_post, verified_redirect};
use crate::clock::UnixTime;
use crate::config::saml_apps::SamlApp;
use crate::upstream::saml::xml::session_indexes;
use crate::upstream::saml::{SamlError, check_issued, protocol_message};

/// The longest RelayState carried back (as for an AuthnRequest).
const MAX_RELAY_STATE: usize = 1024;

/// What the IdP takes from a LogoutRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub id: String,
    pub issuer: String,
    pub destination: Option<String>,
    /// `IssueInstant`, in Unix seconds.
    pub issue_instant: Option<UnixTime>,
    /// The NameID the SP knows the user by (sent as it is, or in an `EncryptedID`).
    pub name_id: String,
    /// The `SessionIndex` elements (the broker's session `sid`s); none: every session of the
    /// NameID the SP knows of.
    pub session_indexes: Vec<String>,
}

/// Reads a LogoutRequest document.
pub fn parse(xml: &str) -> Result<LogoutRequest, SamlError> {
    let r: samael::schema::LogoutRequest = protocol_message(xml, "LogoutRequest")?;
    if r.version.as_deref() != Some("2.0") {
        return Err(SamlError::Malformed("Version is not 2.0".into()));
    }
    let id =
        r.id.filter(|id| !id.is_empty() && id.len() <= 256)
            .ok_or(SamlError::Malformed("no ID".into()))?;
    let issuer = r
        .issuer
        .and_then(|i| i.value)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or(SamlError::Malformed("no Issuer".into()))?;
    // An `EncryptedID` is read (decrypted) only from verified bytes (`SamlIdp::read_verified`):
    // until then the NameID is empty, which nothing accepts.
    let name_id = match r.name_id {
        Some(n) => Some(n.value.trim().to_owned()).filter(|v| !v.is_empty()),
        None if super::decrypt::has_encrypted_id(xml)? => Some(String::new()),
        None => None,
    }
    .ok_or(SamlError::NoSubject)?;
    Ok(LogoutRequest {
        id,
        issuer,
        destination: r.destination,
        issue_instant: r.issue_instant.map(|t| t.timestamp()),
        name_id,
        session_indexes: session_indexes(xml)?,
    })
}

/// A LogoutRequest of a registered SP, checked.
#[derive(Debug)]
pub struct Checked {
    pub request: LogoutRequest,
    pub relay_state: Option<String>,
    pub app: SamlApp,
    /// Its signature by one of the SP's registered certificates was checked (an SP without any
    /// sends unsigned requests, which `flow::saml_slo` refuses: SAML Profiles 4.4.4.1).
    pub signed: bool,
    /// The document of an HTTP-POST request (to send back as HTTP-Redirect when the POST came
    /// without the session cookie).
    pub post_document: Option<String>,
}

fn certs_of(app: &SamlApp) -> Vec<CertificateDer> {
    app.signing_certs
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect()
}

impl SamlIdp {
    /// A LogoutRequest over HTTP-Redirect (the raw query string).
    pub fn logout_request_redirect(&self, raw_query: &str) -> Result<Checked, SamlError> {
        let (xml, relay_state) = redirect_document(raw_query)?;
        let unverified = parse(&xml)?;
        let app = self.app(&unverified.issuer)?.ok_or(SamlError::Issuer)?;
        let certs = certs_of(&app);
        let request = if certs.is_empty() {
            unverified
        } else {
            verified_redirect(raw_query, &certs, |x| self.read_verified(x), |r| &r.id)?
        };
        self.checked(request, relay_state, &app, !certs.is_empty(), None)
    }

    /// A LogoutRequest over HTTP-POST (the form's `SAMLRequest` and `RelayState`).
    pub fn logout_request_post(
        &self,
        saml_request: &str,
        relay_state: Option<String>,
    ) -> Result<Checked, SamlError> {
        let xml = decode_post(saml_request)?;
        let unverified = parse(&xml)?;
        let app = self.app(&unverified.issuer)?.ok_or(SamlError::Issuer)?;
        let certs = certs_of(&app);
        let request = if certs.is_empty() {
            unverified
        } else {
            verified_post(
                &xml,
                &unverified.id,
                &certs,
                |x| self.read_verified(x),
                |r| &r.id,
            )?
        };
        self.checked(request, relay_state, &app, !certs.is_empty(), Some(xml))
    }

    /// A LogoutRequest from the bytes its signature covers, its `EncryptedID` (if any)
    /// decrypted with the IdP's encryption key.
    fn read_verified(&self, xml: &str) -> Result<LogoutRequest, SamlError> {
        let mut r = parse(xml)?;
        if r.name_id.is_empty() {
            r.name_id = self.decryption.name_id(xml)?;
        }
        Ok(r)
    }

    fn checked(
        &self,
        request: LogoutRequest,
        relay_state: Option<String>,
        app: &SamlApp,
        signed: bool,
        post_document: Option<String>,
    ) -> Result<Checked, SamlError> {
        // What a signature covers is what counts: the Issuer it names is the SP's.
        if request.issuer != app.entity_id {
            return Err(SamlError::Issuer);
        }
        // An EncryptedID that no signature covered was not read.
        if request.name_id.is_empty() {
            return Err(SamlError::NoSubject);
        }
        if request
            .destination
            .as_deref()
            .is_some_and(|d| d != self.slo_url.as_str())
        {
            return Err(SamlError::Destination);
        }
        check_issued(request.issue_instant, self.clock.now())?;
        if relay_state
            .as_ref()
            .is_some_and(|r| r.len() > MAX_RELAY_STATE)
        {
            return Err(SamlError::Malformed("RelayState too long".into()));
        }
        if app.slo_url.is_none() {
            return Err(SamlError::Config(format!(
                "`{}` has no slo_url to answer at",
                app.entity_id
            )));
        }
        Ok(Checked {
            request,
            relay_state,
            app: app.clone(),
            signed,
            post_document,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = concat!(
        r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_l1" Version="2.0" IssueInstant="2026-12-07T00:00:00Z" Destination="https://id.example.com/saml/idp/slo">"#,
        r#"<saml:Issuer>https://sp.example/meta</saml:Issuer>"#,
        r#"<saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">a@example.com</saml:NameID>"#,
        r#"<samlp:SessionIndex>sid-1</samlp:SessionIndex></samlp:LogoutRequest>"#
    );

    #[test]
    fn reads_what_the_idp_uses_and_refuses_the_rest() {
        let r = parse(REQ).unwrap();
        assert_eq!(r.id, "_l1");
        assert_eq!(r.issuer, "https://sp.example/meta");
        assert_eq!(r.name_id, "a@example.com");
        assert_eq!(r.session_indexes, ["sid-1"]);
        assert_eq!(r.issue_instant, Some(1_796_601_600));
        let dtd = format!("<!DOCTYPE x [<!ENTITY e \"x\">]>{REQ}");
        assert!(matches!(parse(&dtd), Err(SamlError::Dtd)));
        let comment = REQ.replace("<saml:Issuer>", "<!-- c --><saml:Issuer>");
        assert!(matches!(parse(&comment), Err(SamlError::Comment)));
        assert!(parse(&REQ.replace("LogoutRequest", "AuthnRequest")).is_err());
        assert!(parse(&REQ.replace("a@example.com", " ")).is_err());
        assert!(matches!(
            parse(&" ".repeat(crate::upstream::saml::xml::MAX_DOCUMENT + 1)),
            Err(SamlError::TooLarge)
        ));
    }
}
