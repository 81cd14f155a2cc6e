//! Owns what the browser proves in a journey: one file per step (password, upstream, second
//! factor, a passkey without a password, recovery codes, removing a factor, renewing the codes, session limit, "continue
//! as"), and what the steps of a journey that manages factors share ([`SignIn::managing`]).

use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Notice, Outcome};
use crate::flow::journey::{JourneyId, Loaded};
use crate::flow::machine::{self, Event, Journey, Proven};
use crate::flow::policy::{self, FactorFacts};
use crate::flow::signin::{SignIn, SignInError};
use crate::mfa::FactorStatus;

pub mod continue_as;
pub mod factor_choice;
pub mod passkey_sign_in;
pub mod password;
pub mod recovery_code;
pub mod remove_factor;
pub mod renew_recovery_codes;
pub mod second_factor;
pub mod session_limit;
pub mod upstream;
pub mod waiting_factor;

/// A step of a journey that manages factors, ready to act: the journey, its user (proven again
/// within the re-proof window) and the user's factors.
pub(crate) struct Managing {
    pub id: JourneyId,
    pub loaded: Loaded<Journey>,
    pub who: Proven,
    pub facts: FactorFacts,
    pub factors: Vec<FactorStatus>,
}

impl SignIn {
    /// Resumes journey `raw` for a step of managing factors (`event`): `Err` is the page to show
    /// instead (the kept answer, the expired page, the current step for a stale form, or the
    /// choice asking for a factor proven again first).
    pub(crate) async fn managing(
        &self,
        browser: &Browser,
        raw: &str,
        event: Event<'_>,
    ) -> Result<Result<Managing, Outcome>, SignInError> {
        let (id, mut loaded) = match self.resume(browser, raw).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(Err(*out)),
            Resumed::Gone => return Ok(Err(Outcome::expired())),
        };
        if !machine::accept(&loaded.state, event) {
            return self.stale(browser, &id, &mut loaded).await.map(Err);
        }
        let Some(who) = loaded.state.who.clone() else {
            return Ok(Err(Outcome::expired()));
        };
        let Some((facts, factors)) = self.facts(&loaded.state, browser.locale).await? else {
            return Ok(Err(Outcome::expired()));
        };
        if !policy::may_manage(&who, true, self.now()) {
            let notice = Some(Notice::Key("mfa_reprove_first"));
            return self
                .choice(browser, &id, &mut loaded, &who, 403, notice)
                .await
                .map(Err);
        }
        Ok(Ok(Managing {
            id,
            loaded,
            who,
            facts,
            factors,
        }))
    }
}
