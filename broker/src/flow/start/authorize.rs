//! Owns the OpenID start: `/authorize` parsed once (an error at the redirect URI, or a page when
//! there is none to trust), then handed to the protocol-neutral arrival
//! (`single_sign_on.rs`) as an [`Arrival`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::single_sign_on::Arrival;
use crate::flow::answer::{Request, openid};
use crate::flow::contract::{Browser, Outcome};
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::provider::authorize::{self, AuthorizeError, Prompt};

impl SignIn {
    /// `/authorize`: the request is parsed once. With a good-enough session the app gets its
    /// code (after a step-up when the client's MFA policy or `acr_values` ask for more); else a
    /// journey starts and the browser goes to its sign-in page.
    pub async fn authorize(
        &self,
        browser: &Browser,
        raw: BTreeMap<String, Vec<String>>,
    ) -> Result<Outcome, SignInError> {
        // One trip to the blocking pool: the request parsed, and the session (if any) checked.
        let (provider, sessions) = (Arc::clone(&self.provider), Arc::clone(&self.sessions));
        let cookie = browser.session.as_ref().map(|s| s.expose().to_owned());
        let (parsed, session) = blocking(move || {
            let parsed = authorize::parse(&raw, &provider.clients);
            let session = match (&parsed, cookie) {
                (Ok(_), Some(c)) => sessions.check(&c)?.map(|a| a.record),
                _ => None,
            };
            Ok((parsed, session))
        })
        .await?;
        let ar = match parsed {
            Ok(ar) => ar,
            Err(AuthorizeError::Page(key)) => return Ok(Outcome::message(400, key)),
            Err(AuthorizeError::Redirect(r)) => {
                let r = *r;
                return Ok(openid::error_answer(
                    &self.provider.settings.issuer,
                    r.redirect_uri,
                    r.response_mode == authorize::ResponseMode::FormPost,
                    r.state,
                    &r.error,
                ));
            }
            Err(AuthorizeError::Storage(e)) => return Err(e.into()),
        };
        let needs_login = ar.needs_login(session.as_ref().map(|s| s.auth_time), self.now());
        let arrival = Arrival {
            request: Request::Openid(ar.stored()),
            passive: ar.prompt == Prompt::None,
            needs_login,
            login_hint: ar.login_hint.clone(),
            idp_hint: ar.idp_hint.clone(),
            party: Box::new(openid::ready(ar)),
            session,
        };
        self.arrive(browser, arrival).await
    }
}
