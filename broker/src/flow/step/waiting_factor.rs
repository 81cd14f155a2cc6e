//! Owns the waiting page of a waiting factor (contract 0.2 `waiting`, issue #18 item 3):
//! `GET /login/mfa/wait` polls the plugin while the user approves elsewhere. The page refreshes
//! itself (works without JavaScript); a poll that finds the wait approved writes that into the
//! journey once, and the page's form goes on with a POST (`/login/mfa/answer`: a GET never
//! finishes a journey). Polls count against `mfa_poll_per_account`, not the answer limits; an
//! expired or denied wait offers the factor again and the other factors.

use crate::audit::EventKind;
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Notice, Outcome};
use crate::flow::machine::Stage;
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::flow::step::second_factor::StepError;
use crate::mfa::VerifyOutcome;
use crate::mfa::factor::Prompt;
use crate::ratelimit::Scope;

impl SignIn {
    /// `GET /login/mfa/wait?journey=`: the waiting page, after one poll.
    pub async fn mfa_wait(&self, browser: &Browser, raw: &str) -> Result<Outcome, SignInError> {
        let (id, mut loaded) = match self.resume(browser, raw).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(*out),
            Resumed::Gone => return Ok(Outcome::expired()),
        };
        let j = &loaded.state;
        let (Some(who), Some(factor), Some(Prompt::Waiting(wait))) =
            (j.who.clone(), j.mfa.factor.clone(), j.mfa.prompt.clone())
        else {
            return Ok(Outcome::expired());
        };
        if j.stage != Stage::Mfa || j.mfa.enrolling {
            return Ok(Outcome::expired());
        }
        // Already approved, or over: the page as it stands, no call.
        if wait.approved.is_some() || self.clock.now() >= wait.expires_at {
            return Ok(self.form_page(&id, j, 200, None));
        }
        if let Err(l) = self.rate_checked(
            browser,
            &who,
            Scope::MfaPollPerAccount,
            who.user_id.as_str(),
        ) {
            return Ok(Outcome::message(429, "error_429_message").slow(l));
        }
        let Some(user) = self.factor_user(&who, browser.locale, j.mfa.level).await? else {
            return Ok(Outcome::expired());
        };
        let Some(f) = self.mfa.factor(&factor) else {
            return Ok(Outcome::expired());
        };
        let prompt = Prompt::Waiting(wait.clone());
        let polled = blocking(move || Ok(f.verify(&user, &prompt, Vec::new()))).await?;
        match polled {
            Ok(VerifyOutcome::Pending) => Ok(self.form_page(&id, &loaded.state, 200, None)),
            Ok(VerifyOutcome::Accepted { amr }) => {
                let mut approved = wait;
                approved.approved = Some(amr);
                loaded.state.mfa.prompt = Some(Prompt::Waiting(approved));
                self.save(&id, &mut loaded).await?;
                Ok(self.form_page(&id, &loaded.state, 200, None))
            }
            Ok(VerifyOutcome::Rejected { message }) => {
                self.audit_mfa(
                    browser,
                    &loaded.state,
                    EventKind::MfaFailed,
                    &factor,
                    Some("rejected"),
                );
                let error = message
                    .map(Notice::Plugin)
                    .unwrap_or(Notice::Key("mfa_wait_denied"));
                Ok(self.form_page(&id, &loaded.state, 401, Some(error)))
            }
            Ok(VerifyOutcome::Expired) => Ok(self.form_page(&id, &loaded.state, 200, None)),
            Ok(VerifyOutcome::Locked(l)) => {
                let err = StepError::Locked(l.retry_after_secs);
                self.step_failed(browser, &id, &mut loaded, &who, &factor, err)
                    .await
            }
            Err(e) => {
                self.step_failed(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    &factor,
                    StepError::Plugin(e),
                )
                .await
            }
        }
    }
}
