//! Owns the IdP-initiated SAML start (`GET /saml/idp/init?sp=<entity id>[&acs=…][&RelayState=…]`):
//! a sign-in begun at the broker for an SP registered with `idp_initiated = true`, answered with
//! an unsolicited Response (no `InResponseTo`) at the registered ACS URL `acs` names, or the SP's
//! default (first) one. An unknown SP, one without the opt-in, or an ACS URL not registered for
//! it gets a page. The request is a GET that anyone can link to, so it
//! writes nothing but the journey: without a session it shows the sign-in page; with one, the
//! page to continue as the signed-in account (or the second-factor choice the SP's policy asks
//! for, which sends nothing on a GET), and the Response is made only by that page's POST.

use std::sync::Arc;

use super::single_sign_on::Arrival;
use crate::flow::answer::Request;
use crate::flow::answer::saml::SamlRequest;
use crate::flow::contract::{Browser, CookieOp, Outcome};
use crate::flow::machine::{self, Journey, Stage, Target};
use crate::flow::signin::{SignIn, SignInError, blocking, proven_of};

/// The longest RelayState accepted (SAML Bindings 3.4.3: 80 bytes).
pub const MAX_RELAY_STATE: usize = 80;

/// What `/saml/idp/init` names.
#[derive(Debug, Clone, Default)]
pub struct IdpInitiated {
    /// The SP's entity ID (`sp`).
    pub sp: Option<String>,
    /// Given to the SP with the Response (`RelayState`).
    pub relay_state: Option<String>,
    /// One of the SP's registered ACS URLs (`acs`, as Shibboleth's `shire`); unset: the first.
    pub acs: Option<String>,
}

impl SignIn {
    /// `GET /saml/idp/init`: an unsolicited sign-in for a registered SP that accepts one.
    pub async fn saml_idp_initiated(
        &self,
        browser: &Browser,
        q: IdpInitiated,
    ) -> Result<Outcome, SignInError> {
        let refused = |key: &'static str, why: String| {
            tracing::info!(reason = %why, "SAML IdP-initiated sign-in refused");
            Ok(Outcome::message(400, key))
        };
        let (idp, sp) = (Arc::clone(&self.saml), q.sp.clone());
        let app = blocking(move || Ok(sp.map(|sp| idp.app(&sp)).transpose()?.flatten())).await?;
        let Some(app) = app else {
            return refused(
                "error_authorize_client",
                format!("unknown SP `{}`", q.sp.unwrap_or_default()),
            );
        };
        if !app.idp_initiated {
            return refused(
                "error_saml_idp_initiated",
                format!("`{}` does not accept IdP-initiated sign-ins", app.entity_id),
            );
        }
        if q.relay_state
            .as_ref()
            .is_some_and(|r| r.len() > MAX_RELAY_STATE)
        {
            return refused(
                "error_400_message",
                "RelayState longer than 80 bytes".into(),
            );
        }
        let acs = match &q.acs {
            Some(u) => app
                .acs_urls
                .iter()
                .find(|r| url::Url::parse(u).is_ok_and(|u| u == **r)),
            None => app.acs_urls.first(),
        };
        let Some(acs) = acs else {
            return refused(
                "error_authorize_redirect",
                format!("ACS not registered for `{}`", app.entity_id),
            );
        };
        let request = SamlRequest {
            sp: app.entity_id.clone(),
            acs: acs.to_string(),
            request_id: None,
            relay_state: q.relay_state,
            name_id_format: None,
            acr_values: None,
        };
        let (idp, req) = (Arc::clone(&self.saml), request.clone());
        let Some(ready) = blocking(move || Ok(req.ready(&idp)?)).await? else {
            return refused("error_authorize_client", "the SP is gone".into());
        };
        let Some(session) = self.current_session(browser).await? else {
            let arrival = Arrival {
                request: Request::Saml(request),
                party: Box::new(ready),
                session: None,
                needs_login: true,
                passive: false,
                login_hint: None,
                idp_hint: None,
            };
            return self.arrive(browser, arrival).await;
        };
        // The SP's MFA policy decides on the session as it is (as `arrive` does); then the
        // journey keeps this session (`step_up`: raised if a factor is asked, answered from
        // otherwise), never replacing it: the session's other SPs and apps stay signed in.
        let mut j = Journey::new(Target::App(Request::Saml(request)));
        j.who = Some(proven_of(&session));
        let party_mfa = crate::flow::answer::Resolved::party(&ready).mfa;
        let needs_factor = self.needs_second_factor(&j, party_mfa).await?;
        j.step_up = Some(session.sid.clone());
        if needs_factor {
            j.stage = Stage::Mfa;
            return self.start_and_drive(browser, j).await;
        }
        machine::second_factor_settled(&mut j);
        // A GET never finishes a journey: the Response comes from the page's POST.
        j.stage = Stage::ContinueAs;
        let (id, mut loaded, new_binding) = self.begin(browser, j).await?;
        let out = self.continue_page(&id, &mut loaded, false).await?;
        Ok(match new_binding {
            Some(b) => out.with_cookie(CookieOp::Binding(b)),
            None => out,
        })
    }
}
