//! Owns the IdP's own Single Logout to an SP: the LogoutRequest it sends (HTTP-Redirect to the
//! SP's `slo_url`, signed like the LogoutResponse, the NameID as the SP received it and the
//! session's `sid` as SessionIndex), and reading the SP's LogoutResponse (HTTP-Redirect or
//! HTTP-POST, both of which the metadata offers) through the same doors as its requests (size
//! limit, the SP's query or enveloped signature when it has certificates, no DTD,
//! namespaces as libxml2 reads them), checked against the request it answers. Which SPs, in which
//! order, and what a failure means are the flow's (`flow::saml_slo_out`).

use samael::crypto::CertificateDer;
use samael::schema::LogoutResponse;
use url::Url;

use super::SamlIdp;
use super::authn_request::{decode_post, verified_post};
use crate::config::saml_apps::SamlApp;
use crate::upstream::saml::crypto::read_redirect;
use crate::upstream::saml::xml::{MAX_DOCUMENT, STATUS_SUCCESS, escape};
use crate::upstream::saml::{SamlError, check_issued, protocol_message};

/// The LogoutResponse document `xml`, read from the bytes its enveloped signature by one of
/// `certs` covers (when there are certificates: then it must be signed).
pub(super) fn enveloped_answer(
    xml: &str,
    certs: &[CertificateDer],
) -> Result<LogoutResponse, SamlError> {
    let read = |xml: &str| protocol_message::<LogoutResponse>(xml, "LogoutResponse");
    let unverified = read(xml)?;
    if certs.is_empty() {
        return Ok(unverified);
    }
    let id = unverified
        .id
        .clone()
        .ok_or(SamlError::Malformed("no ID".into()))?;
    verified_post(xml, &id, certs, read, |r| {
        r.id.as_deref().unwrap_or_default()
    })
}

/// An SP's LogoutResponse as it came back to the SLO endpoint.
#[derive(Debug, Clone)]
pub enum LogoutAnswer {
    /// The raw query string of an HTTP-Redirect.
    Redirect(String),
    /// The fields of an HTTP-POST.
    Post {
        saml_response: String,
        relay_state: Option<String>,
    },
}

impl LogoutAnswer {
    /// Its `RelayState` (empty when there is none).
    pub fn relay_state(&self) -> String {
        match self {
            Self::Redirect(q) => url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "RelayState")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default(),
            Self::Post { relay_state, .. } => relay_state.clone().unwrap_or_default(),
        }
    }
}

impl SamlIdp {
    /// The LogoutRequest to `app` for the session `sid` of the user it knows as `name_id` (of
    /// `format`), with `relay_state`: where to send the browser, and the request's ID.
    pub fn logout_request(
        &self,
        app: &SamlApp,
        format: &str,
        name_id: &str,
        sid: &str,
        relay_state: &str,
    ) -> Result<(Url, String), SamlError> {
        let slo = app
            .slo_url
            .clone()
            .ok_or(SamlError::Config("the SP has no slo_url".into()))?;
        let id = self.new_id();
        let xml = self.logout_request_xml(&id, &slo, "", format, name_id, sid);
        let to = self.signed_redirect(slo, "SAMLRequest", &xml, Some(relay_state))?;
        Ok((to, id))
    }

    /// A LogoutRequest `id` to `dest` for the session `sid` of the user the SP knows as
    /// `name_id` (of `format`), `signature` (a template, or nothing) after the Issuer.
    pub(super) fn logout_request_xml(
        &self,
        id: &str,
        dest: &Url,
        signature: &str,
        format: &str,
        name_id: &str,
        sid: &str,
    ) -> String {
        format!(
            concat!(
                r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
                r#"ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{dest}">"#,
                r#"<saml:Issuer>{issuer}</saml:Issuer>{signature}<saml:NameID Format="{format}">{name_id}</saml:NameID>"#,
                r#"<samlp:SessionIndex>{sid}</samlp:SessionIndex></samlp:LogoutRequest>"#
            ),
            id = id,
            now = self.instant(),
            dest = escape(dest.as_str()),
            issuer = escape(&self.entity_id),
            signature = signature,
            format = escape(format),
            name_id = escape(name_id),
            sid = escape(sid),
        )
    }

    /// `app`'s LogoutResponse to the request `request_id`: signed by one of its certificates
    /// when it has any (the query signature over HTTP-Redirect, an enveloped one over
    /// HTTP-POST), from it, to this IdP, in time, and Success.
    pub fn sp_logout_response(
        &self,
        app: &SamlApp,
        answer: &LogoutAnswer,
        request_id: &str,
    ) -> Result<(), SamlError> {
        let certs: Vec<CertificateDer> = app
            .signing_certs
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let read = |xml: &str| protocol_message::<LogoutResponse>(xml, "LogoutResponse");
        let r = match answer {
            LogoutAnswer::Redirect(raw_query) => {
                if raw_query.len() > MAX_DOCUMENT {
                    return Err(SamlError::TooLarge);
                }
                let m = read_redirect(raw_query, &certs)?;
                if m.param != "SAMLResponse" {
                    return Err(SamlError::Malformed("no SAMLResponse".into()));
                }
                if !certs.is_empty() && !m.signed {
                    return Err(SamlError::Unsigned);
                }
                read(&m.xml)?
            }
            LogoutAnswer::Post { saml_response, .. } => {
                let r = enveloped_answer(&decode_post(saml_response)?, &certs)?;
                // SAML Bindings 3.5.5.2: a signed HTTP-POST message names its Destination.
                if !certs.is_empty() && r.destination.is_none() {
                    return Err(SamlError::Destination);
                }
                r
            }
        };
        self.check_answer(app, &r, request_id, Some(&self.slo_url))
    }

    /// A LogoutResponse (read from what the SP signed, when it signs) checked: from `app`, to
    /// `destination` when it names one and one is expected (the SOAP binding has none), in
    /// time, answering `request_id`, Success.
    pub(super) fn check_answer(
        &self,
        app: &SamlApp,
        r: &LogoutResponse,
        request_id: &str,
        destination: Option<&Url>,
    ) -> Result<(), SamlError> {
        let issuer = r.issuer.as_ref().and_then(|i| i.value.as_deref());
        if issuer.map(str::trim) != Some(app.entity_id.as_str()) {
            return Err(SamlError::Issuer);
        }
        if let (Some(got), Some(want)) = (r.destination.as_deref(), destination)
            && got != want.as_str()
        {
            return Err(SamlError::Destination);
        }
        check_issued(r.issue_instant.map(|t| t.timestamp()), self.clock.now())?;
        if r.in_response_to.as_deref() != Some(request_id) {
            return Err(SamlError::InResponseTo);
        }
        let code = r
            .status
            .as_ref()
            .and_then(|s| s.status_code.value.clone())
            .unwrap_or_default();
        if code != STATUS_SUCCESS {
            return Err(SamlError::Status { code, sub: None });
        }
        Ok(())
    }
}
