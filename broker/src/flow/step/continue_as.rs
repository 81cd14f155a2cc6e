//! Owns the "continue as" step (`POST /login/continue`): an unsolicited sign-in replaces the session the browser has only once the user confirms.

use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Outcome};
use crate::flow::machine::{self, Event as Step};
use crate::flow::signin::{SignIn, SignInError};

impl SignIn {
    /// `POST /login/continue`: the user confirmed that an unsolicited sign-in replaces the
    /// session this browser had.
    pub async fn continue_as(&self, browser: &Browser, raw: &str) -> Result<Outcome, SignInError> {
        let (id, mut loaded) = match self.resume(browser, raw).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(*out),
            Resumed::Gone => return Ok(Outcome::expired()),
        };
        if !machine::accept(&loaded.state, Step::Continue) {
            return self.stale(browser, &id, &mut loaded).await;
        }
        loaded.state.confirmed = true;
        self.drive(browser, &id, &mut loaded).await
    }
}
