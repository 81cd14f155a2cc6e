//! Owns the IdP's own Single Logout to an SP: the LogoutRequest it sends (HTTP-Redirect to the
//! SP's `slo_url`, signed like the LogoutResponse, the NameID as the SP received it and the
//! session's `sid` as SessionIndex), and reading the SP's LogoutResponse through the same doors
//! as its requests (size limit, the SP's query signature when it has certificates, no DTD,
//! namespaces as libxml2 reads them), checked against the request it answers. Which SPs, in which
//! order, and what a failure means are the flow's (`flow::saml_slo_out`).

use samael::crypto::CertificateDer;
use url::Url;

use super::SamlIdp;
use crate::config::saml_apps::SamlApp;
use crate::upstream::saml::crypto::read_redirect;
use crate::upstream::saml::xml::{MAX_DOCUMENT, STATUS_SUCCESS, escape};
use crate::upstream::saml::{SamlError, check_issued, protocol_message};

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
        let xml = format!(
            concat!(
                r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
                r#"ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{dest}">"#,
                r#"<saml:Issuer>{issuer}</saml:Issuer><saml:NameID Format="{format}">{name_id}</saml:NameID>"#,
                r#"<samlp:SessionIndex>{sid}</samlp:SessionIndex></samlp:LogoutRequest>"#
            ),
            id = id,
            now = self.instant(),
            dest = escape(slo.as_str()),
            issuer = escape(&self.entity_id),
            format = escape(format),
            name_id = escape(name_id),
            sid = escape(sid),
        );
        let to = self.signed_redirect(slo, "SAMLRequest", &xml, Some(relay_state))?;
        Ok((to, id))
    }

    /// `app`'s LogoutResponse (the raw HTTP-Redirect query) to the request `request_id`: signed
    /// by one of its certificates when it has any, from it, to this IdP, in time, and Success.
    pub fn sp_logout_response(
        &self,
        app: &SamlApp,
        raw_query: &str,
        request_id: &str,
    ) -> Result<(), SamlError> {
        if raw_query.len() > MAX_DOCUMENT {
            return Err(SamlError::TooLarge);
        }
        let certs: Vec<CertificateDer> = app
            .signing_certs
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let m = read_redirect(raw_query, &certs)?;
        if m.param != "SAMLResponse" {
            return Err(SamlError::Malformed("no SAMLResponse".into()));
        }
        if !certs.is_empty() && !m.signed {
            return Err(SamlError::Unsigned);
        }
        let r: samael::schema::LogoutResponse = protocol_message(&m.xml, "LogoutResponse")?;
        let issuer = r.issuer.as_ref().and_then(|i| i.value.as_deref());
        if issuer.map(str::trim) != Some(app.entity_id.as_str()) {
            return Err(SamlError::Issuer);
        }
        if r.destination
            .as_deref()
            .is_some_and(|d| d != self.slo_url.as_str())
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
