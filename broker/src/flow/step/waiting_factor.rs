//! Owns the waiting page of a waiting factor (contract 0.2 `waiting`, issue #18 item 3):
//! `GET /login/mfa/wait` asks the plugin while the user approves elsewhere, and changes nothing:
//! no journey write, no attempt counted, no use recorded (`Mfa::peek`). The page refreshes
//! itself (works without JavaScript); once the plugin says approved, the page's form goes on
//! with a POST (`/login/mfa/answer`), whose own poll records the pass (or counts a denial).
//! Polls count against `mfa_poll_per_account`, not the answer limits; an expired or denied wait
//! offers the factor again and the other factors.

use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Notice, Outcome};
use crate::flow::contract::{Next, View};
use crate::flow::journey::JourneyId;
use crate::flow::machine::Journey;
use crate::flow::machine::Stage;
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::flow::step::second_factor::StepError;
use crate::mfa::factor::Prompt;
use crate::mfa::host::waiting::PollState as Poll;
use crate::ratelimit::Scope;

impl SignIn {
    /// `GET /login/mfa/wait?journey=`: the waiting page, after one look at the plugin.
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
        // Over: the page as it stands, no call.
        if self.clock.now() >= wait.expires_at {
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
        let (mfa, plugin) = (std::sync::Arc::clone(&self.mfa), factor.clone());
        let peeked = blocking(move || Ok(mfa.peek(&plugin, &user, &wait))).await?;
        let j = &loaded.state;
        match peeked {
            Ok(Some(Poll::Waiting)) | Ok(None) => Ok(self.form_page(&id, j, 200, None)),
            // Approved: the page's POST goes on, and that POST's own poll records the pass.
            Ok(Some(Poll::Accepted)) => Ok(self.wait_page(&id, j, 200, None, true)),
            Ok(Some(Poll::Rejected(message))) => {
                let error = Some(Notice::Plugin(message));
                Ok(self.wait_page(&id, j, 401, error, false))
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

impl SignIn {
    /// The waiting page of `j`'s open wait: refreshing itself unless it is over (expired, or
    /// refused with `status` 401) or `approved` (then its form goes on by itself).
    pub(crate) fn wait_page(
        &self,
        id: &JourneyId,
        j: &Journey,
        status: u16,
        error: Option<Notice>,
        approved: bool,
    ) -> Outcome {
        let (Some(factor), Some(Prompt::Waiting(w))) = (j.mfa.factor.clone(), j.mfa.prompt.clone())
        else {
            return Outcome::expired();
        };
        let over = status == 401 || self.clock.now() >= w.expires_at;
        self.page_outcome(
            j,
            Next::Page {
                status,
                journey: Some(id.clone()),
                view: View::MfaWait {
                    factor,
                    refresh: (!over && !approved).then_some(w.poll_every),
                    approved,
                    intro: w.intro,
                    number: w.number,
                    error,
                },
            },
        )
    }
}
