//! Owns the passwordless first factor (`POST /login/passkey`, issue #19): the sign-in page
//! carries a passkey challenge kept in the journey ([`SignIn::offer_passkey`]); the page's script
//! answers it from the button or from the browser's autofill (conditional UI), and a user-verified
//! assertion of a registered discoverable credential proves the account, phishing resistant and
//! multi-factor by itself (`hwk`, `user`, `phr`: the MFA policy asks nothing more). A refused
//! answer gets a fresh challenge, is audited and counted against the address's sign-in rate.

use crate::audit::{Event, EventKind};
use crate::domain::evidence::Proof;
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Next, Outcome, View};
use crate::flow::journey::{JourneyId, Loaded};
use crate::flow::machine::{self, Event as Step, Journey, Proven};
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::mfa::factor::Identified;
use crate::ratelimit::Scope;
use crate::upstream::local::LOCAL_UPSTREAM_ID;

impl SignIn {
    /// Puts a passkey challenge in a journey at its sign-in page, when passkeys sign in and it
    /// has none; whether the journey changed (then it must be saved).
    pub(crate) async fn offer_passkey(&self, j: &mut Journey) -> Result<bool, SignInError> {
        let Some(passwordless) = self.mfa.passwordless() else {
            return Ok(false);
        };
        if j.passkey.is_some() || j.link.is_some() || j.unsolicited {
            return Ok(false);
        }
        match blocking(move || Ok(passwordless.challenge())).await? {
            Ok(c) => {
                j.passkey = Some(c);
                Ok(true)
            }
            Err(e) => {
                // The page still offers the password.
                tracing::warn!(error = %e, "no passkey challenge for the sign-in page");
                Ok(false)
            }
        }
    }

    /// `POST /login/passkey`: a passkey's answer to the sign-in page's challenge.
    pub async fn passkey(
        &self,
        browser: &Browser,
        journey: &str,
        credential: &str,
    ) -> Result<Outcome, SignInError> {
        let Some(passwordless) = self.mfa.passwordless() else {
            return Ok(Outcome::message(404, "error_404_message"));
        };
        let (id, mut loaded) = match self.resume(browser, journey).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(*out),
            Resumed::Gone => return Ok(Outcome::expired()),
        };
        let Some(challenge) = loaded.state.passkey.clone() else {
            return self.stale(browser, &id, &mut loaded).await;
        };
        if !machine::accept(&loaded.state, Step::Passkey) {
            return self.stale(browser, &id, &mut loaded).await;
        }
        let ip = browser.ip.clone();
        if let Err(limited) = self.limiter.check(Scope::LoginPerIp, ip.as_str()) {
            self.provider.audit.record(
                Event::new(EventKind::RateLimited)
                    .ip(ip.as_str())
                    .reason(Scope::LoginPerIp.as_str()),
            );
            return Ok(self
                .refused(&id, &mut loaded, "error_rate_limited", 429)
                .await?
                .slow(limited));
        }
        // The challenge answers once, whatever comes of it.
        loaded.state.passkey = None;
        let answer: String = credential.chars().take(16 * 1024).collect();
        let identified = blocking(move || Ok(passwordless.identify(&challenge, &answer)?)).await?;
        let (user, amr) = match identified {
            Identified::User { user, amr } => (user, amr),
            Identified::Refused { reason, .. } => {
                self.provider.audit.record(
                    Event::new(EventKind::LoginFailed)
                        .ip(ip.as_str())
                        .upstream(LOCAL_UPSTREAM_ID)
                        .reason(format!("passkey:{reason}")),
                );
                let (key, status) = if reason == "account_disabled" {
                    ("error_account_disabled", 403)
                } else {
                    ("error_passkey_refused", 401)
                };
                return self.refused(&id, &mut loaded, key, status).await;
            }
        };
        let now = self.now();
        let who = Proven {
            user_id: user.as_str().to_owned(),
            upstream: LOCAL_UPSTREAM_ID.to_owned(),
            evidence: amr.iter().map(|m| Proof::local(m.clone(), now)).collect(),
            acr: None,
        };
        loaded.state.first_factor(who, None);
        // The account was read (enabled) just now, once the key proved itself.
        loaded.state.user_checked = true;
        self.drive(browser, &id, &mut loaded).await
    }

    /// The sign-in page again with `key`, and a fresh challenge.
    async fn refused(
        &self,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        key: &'static str,
        status: u16,
    ) -> Result<Outcome, SignInError> {
        loaded.state.passkey = None;
        self.offer_passkey(&mut loaded.state).await?;
        self.save(id, loaded).await?;
        let email = loaded.state.login_hint.clone().unwrap_or_default();
        Ok(self.page_outcome(
            &loaded.state,
            Next::Page {
                status,
                journey: Some(id.clone()),
                view: View::Login {
                    email,
                    error: Some(key),
                    linking: false,
                    passkey: None,
                },
            },
        ))
    }
}
