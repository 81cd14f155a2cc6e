//! Owns the SAML start: an SP's AuthnRequest (HTTP-Redirect or HTTP-POST) read once
//! (`saml_idp::authn_request`), its Issuer and ACS found in the registry (an unknown SP or ACS
//! gets a page, never a Response: there is nowhere trusted to send one), then handed to the
//! protocol-neutral arrival (`single_sign_on.rs`) as an [`Arrival`]. Its IssueInstant must be
//! within the bounded skew and its ID is used once per SP (a replay gets a page). An SP with registered
//! certificates (`signing_cert_file`) must sign its requests; the others' signatures are not
//! checked.

use std::sync::Arc;

use samael::crypto::CertificateDer;

use super::single_sign_on::Arrival;
use crate::flow::answer::Request;
use crate::flow::answer::saml::{
    self, INVALID_NAME_ID_POLICY, REQUEST_DENIED, REQUESTER, SamlRequest, UNSUPPORTED_BINDING,
};
use crate::flow::contract::{Browser, Outcome};
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::saml_idp::authn_request;
use crate::saml_idp::{NAMEID_UNSPECIFIED, SamlIdp, name_id_format};
use crate::upstream::saml::crypto::redirect_query;
use crate::upstream::saml::metadata::POST_BINDING;
use crate::upstream::saml::{SamlError, check_issued};

/// The longest RelayState carried back (SAML Bindings says 80 bytes; some SPs send more).
const MAX_RELAY_STATE: usize = 1024;

/// How the AuthnRequest came.
pub enum SamlBinding {
    /// The raw query string of a GET.
    Redirect(String),
    /// The form fields of a POST.
    Post {
        saml_request: String,
        relay_state: Option<String>,
    },
    /// A POST of a `SAMLResponse`: an SP's LogoutResponse (at the SLO endpoint only).
    PostAnswer {
        saml_response: String,
        relay_state: Option<String>,
    },
}

/// A request of a registered SP, for a registered ACS.
struct Checked {
    request: SamlRequest,
    /// The request's `ID`, used once.
    id: String,
    /// The request's IssueInstant (within the skew).
    issued: i64,
    force_authn: bool,
    is_passive: bool,
    /// The NameID format asked for (if any) is the SP's.
    name_id_ok: bool,
}

/// What the request turned out to be.
enum Parsed {
    /// Registered SP and ACS.
    Ok(Box<Checked>),
    /// A page (a message key), with why for the log: the request names no registered SP and
    /// ACS, or it is not the SP's (a signature it needs is missing or bad).
    Page(&'static str, String),
    /// A request of a registered SP to a registered ACS refused: answered there with an error
    /// Response (`Requester` and this second-level status), no assertion; why for the log.
    Refuse(Box<SamlRequest>, &'static str, String),
    /// The registry could not be read.
    Failed(crate::saml_idp::IdpError),
    /// A good request came by a POST without the session cookie (SameSite=Lax: a cross-site
    /// POST does not carry it): the same request again as a top-level GET, which carries it.
    AsRedirect(String),
}

fn check(idp: &SamlIdp, binding: SamlBinding, has_session_cookie: bool) -> Parsed {
    // A POST's document, to send back as HTTP-Redirect once the request is known good.
    let mut resend = None;
    let (ar, relay_state) = match &binding {
        SamlBinding::Redirect(q) => match authn_request::from_redirect(q) {
            Ok(r) => r,
            Err(e) => return Parsed::Page("error_400_message", e.to_string()),
        },
        SamlBinding::PostAnswer { .. } => {
            return Parsed::Page(
                "error_400_message",
                "a SAMLResponse is no AuthnRequest".into(),
            );
        }
        SamlBinding::Post {
            saml_request,
            relay_state,
        } => {
            let read = authn_request::decode_post(saml_request)
                .and_then(|xml| Ok((authn_request::parse(&xml)?, xml)));
            match read {
                Ok((ar, xml)) => {
                    resend = Some(xml);
                    (ar, relay_state.clone())
                }
                Err(e) => return Parsed::Page("error_400_message", e.to_string()),
            }
        }
    };
    let app = match idp.app(&ar.issuer) {
        Ok(Some(app)) => app,
        Ok(None) => {
            return Parsed::Page(
                "error_authorize_client",
                format!("unknown SP `{}`", ar.issuer),
            );
        }
        Err(e) => return Parsed::Failed(e),
    };
    // An IdP that wants every request signed has no SP without a certificate (checked at
    // start and at `saml-apps add`); one stored before that was set is refused here.
    if idp.want_signed_requests && app.signing_certs.is_empty() {
        return Parsed::Page(
            "error_authorize_client",
            format!(
                "`{}` has no signing certificate and this IdP wants signed requests",
                app.entity_id
            ),
        );
    }
    // An SP with registered certificates signs its requests: what the signature covers is
    // what counts.
    let ar = if app.signing_certs.is_empty() {
        ar
    } else {
        let certs: Vec<CertificateDer> = app
            .signing_certs
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let verified = match (&binding, &resend) {
            (SamlBinding::Redirect(q), _) => authn_request::verify_redirect(q, &certs),
            (SamlBinding::Post { .. }, Some(xml)) => {
                authn_request::verify_post(xml, &ar.id, &certs)
            }
            (SamlBinding::Post { .. } | SamlBinding::PostAnswer { .. }, None) => {
                Err(SamlError::Malformed("no document".into()))
            }
            (SamlBinding::PostAnswer { .. }, Some(_)) => {
                Err(SamlError::Malformed("not a request".into()))
            }
        };
        match verified {
            Ok(v) if v.issuer == ar.issuer => v,
            Ok(_) => return Parsed::Page("error_400_message", "the signed Issuer differs".into()),
            Err(e) => {
                return Parsed::Page("error_400_message", format!("`{}`: {e}", app.entity_id));
            }
        }
    };
    let acs = match (&ar.acs_url, ar.acs_index) {
        (Some(u), _) => app
            .acs_urls
            .iter()
            .find(|r| url::Url::parse(u).is_ok_and(|u| u == **r)),
        (None, Some(i)) => app.acs_urls.get(i),
        (None, None) => app.acs_urls.first(),
    };
    let Some(acs) = acs else {
        return Parsed::Page(
            "error_authorize_redirect",
            format!("ACS not registered for `{}`", app.entity_id),
        );
    };
    // From here the SP and its ACS are known (and the request is the SP's when it signs): a
    // refusal is an error Response to that ACS, as SAML Profiles 4.1.3.5 wants, never an
    // assertion. An over-long RelayState is not sent back.
    let refuse = |second: &'static str, why: String, relay: Option<String>| {
        Parsed::Refuse(
            Box::new(SamlRequest {
                sp: app.entity_id.clone(),
                acs: acs.to_string(),
                request_id: Some(ar.id.clone()),
                relay_state: relay,
                name_id_format: None,
                acr_values: None,
            }),
            second,
            why,
        )
    };
    if relay_state
        .as_ref()
        .is_some_and(|r| r.len() > MAX_RELAY_STATE)
    {
        return refuse(REQUEST_DENIED, "RelayState too long".into(), None);
    }
    if ar
        .destination
        .as_deref()
        .is_some_and(|d| d != idp.sso_url.as_str())
    {
        return refuse(
            REQUEST_DENIED,
            "Destination is not this IdP".into(),
            relay_state,
        );
    }
    if ar
        .protocol_binding
        .as_deref()
        .is_some_and(|b| b != POST_BINDING)
    {
        return refuse(
            UNSUPPORTED_BINDING,
            "only the HTTP-POST binding answers".into(),
            relay_state,
        );
    }
    if let Err(e) = check_issued(ar.issue_instant, idp.clock.now()) {
        let why = format!("`{}`: {e}", app.entity_id);
        return refuse(REQUEST_DENIED, why, relay_state);
    }
    let Some(issued) = ar.issue_instant else {
        return refuse(REQUEST_DENIED, "no IssueInstant".into(), relay_state);
    };
    if let Some(xml) = resend.filter(|_| !has_session_cookie) {
        return match redirect_query("SAMLRequest", &xml, relay_state.as_deref(), None) {
            Ok(q) => Parsed::AsRedirect(format!("{}?{q}", idp.sso_url)),
            Err(e) => Parsed::Page("error_400_message", e.to_string()),
        };
    }
    // The SP's entry gives one format: asking for it, or for none in particular, is fine.
    let wanted = name_id_format(app.name_id_format);
    let name_id_ok = ar
        .name_id_format
        .as_deref()
        .is_none_or(|f| f == NAMEID_UNSPECIFIED || f == wanted);
    let request = SamlRequest {
        sp: app.entity_id.clone(),
        acs: acs.to_string(),
        request_id: Some(ar.id.clone()),
        relay_state,
        name_id_format: ar.name_id_format.clone(),
        acr_values: saml::acr_values_of(&ar.class_refs),
    };
    Parsed::Ok(Box::new(Checked {
        request,
        id: ar.id.clone(),
        issued,
        force_authn: ar.force_authn,
        is_passive: ar.is_passive,
        name_id_ok,
    }))
}

impl SignIn {
    /// The SAML single sign-on endpoint: the AuthnRequest is read and checked once. With a
    /// good-enough session the SP gets its Response (after a step-up when its MFA policy or its
    /// RequestedAuthnContext want more); else a journey starts at the sign-in page.
    pub async fn saml_sso(
        &self,
        browser: &Browser,
        binding: SamlBinding,
    ) -> Result<Outcome, SignInError> {
        let (idp, sessions) = (Arc::clone(&self.saml), Arc::clone(&self.sessions));
        let cookie = browser.session.as_ref().map(|s| s.expose().to_owned());
        let (parsed, session) = blocking(move || {
            let mut parsed = check(&idp, binding, cookie.is_some());
            // The request's ID is used once, here, where the sign-in is made of it (not when a
            // POST is sent back as HTTP-Redirect, the same request again).
            if let Parsed::Ok(c) = &parsed
                && !idp.use_request_id(&c.request.sp, "AuthnRequest", &c.id, c.issued)?
            {
                let why = format!("`{}`: {}", c.request.sp, SamlError::Replayed);
                parsed = Parsed::Refuse(Box::new(c.request.clone()), REQUEST_DENIED, why);
            }
            let session = match (&parsed, cookie) {
                (Parsed::Ok(..), Some(c)) => sessions.check(&c)?.map(|a| a.record),
                _ => None,
            };
            Ok((parsed, session))
        })
        .await?;
        let c = match parsed {
            Parsed::Ok(c) => *c,
            Parsed::Page(key, why) => {
                tracing::info!(reason = %why, "SAML AuthnRequest refused");
                return Ok(Outcome::message(400, key));
            }
            Parsed::AsRedirect(to) => return Ok(Outcome::redirect(to)),
            Parsed::Failed(e) => return Err(e.into()),
            Parsed::Refuse(request, second, why) => {
                tracing::info!(reason = %why, sp = %request.sp, "SAML AuthnRequest refused");
                let idp = Arc::clone(&self.saml);
                let Some(ready) = blocking(move || Ok(request.ready(&idp)?)).await? else {
                    return Ok(Outcome::message(400, "error_authorize_client"));
                };
                let env = self.answer_env();
                return blocking(move || {
                    Ok(ready.status_answer(&env, REQUESTER, Some(second), Some("request refused")))
                })
                .await;
            }
        };
        let (idp, request) = (Arc::clone(&self.saml), c.request.clone());
        let Some(ready) = blocking(move || Ok(request.ready(&idp)?)).await? else {
            return Ok(Outcome::message(400, "error_authorize_client"));
        };
        if !c.name_id_ok {
            let env = self.answer_env();
            return blocking(move || {
                Ok(ready.status_answer(
                    &env,
                    REQUESTER,
                    Some(INVALID_NAME_ID_POLICY),
                    Some("this NameID format is not configured for this SP"),
                ))
            })
            .await;
        }
        let arrival = Arrival {
            request: Request::Saml(c.request),
            party: Box::new(ready),
            session,
            needs_login: c.force_authn,
            passive: c.is_passive,
            login_hint: None,
            idp_hint: None,
        };
        self.arrive(browser, arrival).await
    }
}
