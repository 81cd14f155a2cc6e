//! Owns the SAML answer: the Response a service provider receives at its ACS (HTTP-POST binding,
//! auto-posted by the browser): on success a signed Assertion for the session (NameID, bearer
//! confirmation, audience, authentication statement, the attributes released to the SP:
//! `saml_idp::attributes`), on a refusal a Response with the status in SAML's words; without
//! `InResponseTo` when no request is answered (IdP-initiated). The SP and its ACS URLs come from
//! the registry (`[[saml_apps]]`, `saml_idp`), never from the request alone.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{Answer, AnswerEnv, AnswerError, Refusal, Resolved};
use crate::audit::{Event, EventKind};
use crate::config::saml_apps::{SamlApp, SamlSign};
use crate::domain::auth::{ACR_LOA1, ACR_LOA2, ACR_LOA3, AMR_PWD, session_level};
use crate::domain::relying_party::RelyingParty;
use crate::flow::contract::{AppAnswer, Next, Outcome};
use crate::saml_idp::SamlIdp;
use crate::storage::SessionRecord;
use crate::upstream::saml::xml::escape;

const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
const NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";
pub const REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
pub const UNSUPPORTED_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:status:UnsupportedBinding";
pub const REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
pub const INVALID_NAME_ID_POLICY: &str = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy";
/// The class a multi-factor session is asserted with (REFEDS MFA profile).
pub const CLASS_MFA: &str = "https://refeds.org/profile/mfa";
pub const CLASS_PASSWORD: &str =
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
const CLASS_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified";
/// How long an assertion may be presented (and the skew allowed before it).
const LIFETIME: i64 = 300;
const SKEW: i64 = 60;

/// An AuthnRequest as the journey keeps it (parsed and checked against the registry by
/// `start/saml_sso.rs`; `ForceAuthn` and `IsPassive` were consumed there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlRequest {
    /// The SP's entity ID (the request's `Issuer`).
    pub sp: String,
    /// Where the Response is posted: one of the SP's registered ACS URLs.
    pub acs: String,
    /// The AuthnRequest's `ID`, answered as `InResponseTo`; `None` for an IdP-initiated
    /// (unsolicited) sign-in, whose Response answers no request.
    pub request_id: Option<String>,
    pub relay_state: Option<String>,
    /// The `NameIDPolicy` format asked for, if any.
    pub name_id_format: Option<String>,
    /// The `RequestedAuthnContext` as the broker's levels ([`acr_values_of`]).
    pub acr_values: Option<String>,
}

/// The broker's levels a `RequestedAuthnContext` asks for, most wanted first (classes it does
/// not know are left out).
pub fn acr_values_of(class_refs: &[String]) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in class_refs {
        let acr = match c.as_str() {
            ACR_LOA3 => ACR_LOA3,
            CLASS_MFA | ACR_LOA2 => ACR_LOA2,
            CLASS_PASSWORD | ACR_LOA1 => ACR_LOA1,
            _ => continue,
        };
        if !out.contains(&acr) {
            out.push(acr);
        }
    }
    (!out.is_empty()).then(|| out.join(" "))
}

/// The class a session is asserted with, from its level and methods.
fn class_of(session: &SessionRecord) -> &'static str {
    if session_level(&session.amr) >= 2 {
        CLASS_MFA
    } else if session.amr.iter().any(|m| m == AMR_PWD) {
        CLASS_PASSWORD
    } else {
        CLASS_UNSPECIFIED
    }
}

impl Answer for SamlRequest {
    fn party_key(&self) -> String {
        format!("saml:{}", self.sp)
    }

    fn acr_values(&self) -> Option<&str> {
        self.acr_values.as_deref()
    }

    fn destination(&self) -> Option<Url> {
        Url::parse(&self.acs).ok()
    }

    fn resolve(&self, env: &AnswerEnv) -> Result<Option<Box<dyn Resolved>>, AnswerError> {
        Ok(self
            .ready(&env.saml)?
            .map(|r| Box::new(r) as Box<dyn Resolved>))
    }
}

impl SamlRequest {
    /// The request with its SP as registered now; `None` when the SP, or this ACS URL of it,
    /// is gone.
    /// Blocking when the SP is not from the config file.
    pub fn ready(&self, idp: &SamlIdp) -> Result<Option<Ready>, crate::saml_idp::IdpError> {
        let Some(app) = idp.app(&self.sp)? else {
            return Ok(None);
        };
        let Some(acs) = app
            .acs_urls
            .iter()
            .find(|u| u.as_str() == self.acs)
            .cloned()
        else {
            return Ok(None);
        };
        Ok(Some(Ready {
            party: RelyingParty {
                key: self.party_key(),
                name: app.name.clone(),
                channel: app.channel,
                max_sessions_per_user: app.max_sessions_per_user,
                on_session_limit: app.on_session_limit,
                mfa: app.mfa,
            },
            app: (*app).clone(),
            acs,
            req: self.clone(),
        }))
    }
}

/// A request whose SP and ACS are registered now.
pub struct Ready {
    party: RelyingParty,
    app: SamlApp,
    acs: Url,
    req: SamlRequest,
}

fn instant(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn internal(e: impl std::fmt::Display) -> AnswerError {
    AnswerError::Internal(e.to_string())
}

impl Ready {
    /// ` InResponseTo="…"` for a solicited Response; nothing for an unsolicited one.
    fn in_response_to(&self) -> String {
        self.req
            .request_id
            .as_deref()
            .map(|r| format!(r#" InResponseTo="{}""#, escape(r)))
            .unwrap_or_default()
    }

    /// The Response (status, then the assertion if any), signed as the SP wants it, posted to
    /// the ACS with the RelayState.
    fn respond(
        self,
        idp: &SamlIdp,
        status: &str,
        assertion: Option<String>,
    ) -> Result<Outcome, AnswerError> {
        let id = idp.new_id();
        let signed = matches!(self.app.sign, SamlSign::Response | SamlSign::Both);
        let doc = format!(
            concat!(
                r#"<samlp:Response xmlns:samlp="{p}" xmlns:saml="{a}" ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{acs}"{irt}>"#,
                r#"<saml:Issuer>{idp}</saml:Issuer>{sig}{status}{assertion}</samlp:Response>"#
            ),
            p = PROTOCOL_NS,
            a = ASSERTION_NS,
            id = id,
            now = instant(idp.clock.now()),
            acs = escape(self.acs.as_str()),
            irt = self.in_response_to(),
            idp = escape(&idp.entity_id),
            sig = if signed {
                SamlIdp::signature_template(&id)
            } else {
                String::new()
            },
            status = status,
            assertion = assertion.unwrap_or_default(),
        );
        let doc = if signed {
            idp.sign(&doc, &id).map_err(internal)?
        } else {
            doc
        };
        let mut params = vec![(
            "SAMLResponse".to_owned(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, doc),
        )];
        if let Some(rs) = self.req.relay_state {
            params.push(("RelayState".into(), rs));
        }
        Ok(Outcome::new(Next::App(AppAnswer {
            redirect_uri: self.acs,
            form_post: true,
            params,
        })))
    }

    /// A Response without an assertion: `top` with the second-level status `second`, and a
    /// message for the SP.
    pub fn status_answer(
        self,
        env: &AnswerEnv,
        top: &str,
        second: Option<&str>,
        message: Option<&str>,
    ) -> Outcome {
        let status = format!(
            r#"<samlp:Status><samlp:StatusCode Value="{top}">{sub}</samlp:StatusCode>{msg}</samlp:Status>"#,
            sub = second
                .map(|s| format!(r#"<samlp:StatusCode Value="{s}"/>"#))
                .unwrap_or_default(),
            msg = message
                .map(|m| format!("<samlp:StatusMessage>{}</samlp:StatusMessage>", escape(m)))
                .unwrap_or_default(),
        );
        let sp = self.req.sp.clone();
        self.respond(&env.saml, &status, None).unwrap_or_else(|e| {
            tracing::error!(sp = %sp, error = %e, "a SAML error Response could not be signed");
            Outcome::message(500, "error_500_message")
        })
    }
}

impl Resolved for Ready {
    fn party(&self) -> &RelyingParty {
        &self.party
    }

    fn answer(
        self: Box<Self>,
        env: &AnswerEnv,
        session: &SessionRecord,
    ) -> Result<Outcome, AnswerError> {
        let idp = &env.saml;
        let user = idp
            .store
            .user_by_id(&session.user_id)?
            .ok_or_else(|| internal("the session's account is gone"))?;
        let (format, name_id) = idp
            .name_id_for(
                &self.app,
                user.id.as_str(),
                user.email.as_str(),
                &session.sid,
            )
            .map_err(internal)?;
        // The SP takes part in the session: a logout of it tells whether the SP was reached.
        idp.store
            .add_session_client(&session.sid, &self.party.key)?;
        let now = idp.clock.now();
        let id = idp.new_id();
        let attributes = idp
            .attribute_statement(&self.app, &user, session)
            .map_err(internal)?;
        let signed = matches!(self.app.sign, SamlSign::Assertion | SamlSign::Both);
        let assertion = format!(
            concat!(
                r#"<saml:Assertion xmlns:saml="{a}" ID="{id}" Version="2.0" IssueInstant="{now}">"#,
                r#"<saml:Issuer>{idp}</saml:Issuer>{sig}"#,
                r#"<saml:Subject><saml:NameID Format="{format}">{name_id}</saml:NameID>"#,
                r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">"#,
                r#"<saml:SubjectConfirmationData{irt} NotOnOrAfter="{exp}" Recipient="{acs}"/>"#,
                r#"</saml:SubjectConfirmation></saml:Subject>"#,
                r#"<saml:Conditions NotBefore="{nbf}" NotOnOrAfter="{exp}"><saml:AudienceRestriction>"#,
                r#"<saml:Audience>{sp}</saml:Audience></saml:AudienceRestriction></saml:Conditions>"#,
                r#"<saml:AuthnStatement AuthnInstant="{auth}" SessionIndex="{sid}" SessionNotOnOrAfter="{end}">"#,
                r#"<saml:AuthnContext><saml:AuthnContextClassRef>{class}</saml:AuthnContextClassRef></saml:AuthnContext>"#,
                r#"</saml:AuthnStatement>{attributes}</saml:Assertion>"#
            ),
            a = ASSERTION_NS,
            id = id,
            now = instant(now),
            idp = escape(&idp.entity_id),
            sig = if signed {
                SamlIdp::signature_template(&id)
            } else {
                String::new()
            },
            format = format,
            name_id = escape(&name_id),
            irt = self.in_response_to(),
            exp = instant(now + LIFETIME),
            nbf = instant(now - SKEW),
            acs = escape(self.acs.as_str()),
            sp = escape(&self.app.entity_id),
            auth = instant(session.auth_time),
            sid = escape(&session.sid),
            end = instant(session.expires_at),
            class = class_of(session),
            attributes = attributes,
        );
        let assertion = if signed {
            idp.sign(&assertion, &id).map_err(internal)?
        } else {
            assertion
        };
        // Signed first, then encrypted to the SP when it has an encryption certificate.
        let assertion = idp.encrypt_for(&self.app, assertion).map_err(internal)?;
        tracing::info!(
            sp = %self.app.entity_id,
            acs = %self.acs,
            encrypted = self.app.encryption.is_some(),
            "SAML Response issued"
        );
        // The assertion is the SAML token: audited as one, the party key naming the SP.
        env.provider.audit.record(
            Event::new(EventKind::TokenIssued)
                .client(&self.party.key)
                .user(user.id.as_str())
                .sid(&session.sid)
                .reason("saml_response"),
        );
        let status =
            format!(r#"<samlp:Status><samlp:StatusCode Value="{SUCCESS}"/></samlp:Status>"#);
        self.respond(idp, &status, Some(assertion))
    }

    fn refuse(self: Box<Self>, env: &AnswerEnv, why: &Refusal) -> Outcome {
        let (second, message) = match why {
            Refusal::LoginRequired | Refusal::InteractionRequired => (Some(NO_PASSIVE), None),
            Refusal::AccessDenied => (Some(REQUEST_DENIED), None),
            Refusal::Unavailable => (None, Some("temporarily unavailable")),
            Refusal::UpstreamFailed(reason) => (None, Some(reason.as_str())),
        };
        self.status_answer(env, RESPONDER, second, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_kept_before_unsolicited_answers_reads_the_same() {
        // A journey stored by an earlier version (request_id a plain string) reads as solicited.
        let old = r#"{"sp":"https://sp.example","acs":"https://sp.example/acs","request_id":"_r1","relay_state":"rs","name_id_format":null,"acr_values":null}"#;
        let r: SamlRequest = serde_json::from_str(old).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("_r1"));
        let unsolicited = SamlRequest {
            request_id: None,
            ..r.clone()
        };
        let back: SamlRequest =
            serde_json::from_str(&serde_json::to_string(&unsolicited).unwrap()).unwrap();
        assert_eq!(back, unsolicited);
    }

    #[test]
    fn requested_classes_map_to_levels() {
        let v = |c: &[&str]| acr_values_of(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(v(&[CLASS_MFA]).as_deref(), Some(ACR_LOA2));
        assert_eq!(v(&[ACR_LOA3]).as_deref(), Some(ACR_LOA3));
        assert_eq!(
            v(&[CLASS_PASSWORD, "urn:x", CLASS_MFA]).as_deref(),
            Some("urn:concierge:loa:1 urn:concierge:loa:2")
        );
        assert_eq!(v(&["urn:x"]), None);
    }
}
