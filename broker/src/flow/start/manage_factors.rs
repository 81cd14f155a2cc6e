//! Owns the account page's start for managing second factors (`GET /account/factors`): whatever
//! level the session already has, the user sees their factors, proves one again (unless none is
//! set up, or one was proven here within `policy::REPROOF_SECS`), then adds or removes one. The
//! journey raises the session when a factor is added and ends at `/account`.

use crate::flow::contract::{Browser, Next, Outcome};
use crate::flow::machine::{Journey, Stage, Target};
use crate::flow::signin::{SignIn, SignInError, proven_of};

impl SignIn {
    /// `GET /account/factors`: the factor choice of a journey that manages factors (nothing is
    /// sent until the user presses a button).
    pub async fn manage_factors(&self, browser: &Browser) -> Result<Outcome, SignInError> {
        let Some(session) = self.current_session(browser).await? else {
            return Ok(Outcome::new(Next::Redirect(
                "/login?return_to=%2Faccount%2Ffactors".into(),
            )));
        };
        let mut j = Journey::new(Target::Local("/account".into()));
        j.who = Some(proven_of(&session));
        j.step_up = Some(session.sid.clone());
        j.manage = true;
        j.stage = Stage::Mfa;
        self.start_and_drive(browser, j).await
    }
}
