//! Owns the "continue as" step: its page (an unsolicited sign-in that would replace the
//! browser's session, or a proven journey reached by a GET, which never finishes one) and its
//! `POST /login/continue`, the user's confirmation.

use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Next, Outcome, View};
use crate::flow::journey::{JourneyId, Loaded};
use crate::flow::machine::{self, Event as Step, Journey, Stage};
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

    /// The "continue as" page of a proven journey (its form posts `Continue`); `unsolicited`
    /// warns that the browser's session is replaced.
    pub(crate) async fn continue_page(
        &self,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        unsolicited: bool,
    ) -> Result<Outcome, SignInError> {
        let Some(who) = loaded.state.who.clone() else {
            return Ok(Outcome::expired());
        };
        if loaded.state.stage != Stage::ContinueAs {
            loaded.state.stage = Stage::ContinueAs;
            self.save(id, loaded).await?;
        }
        let email = self.email_of(&who.user_id).await?;
        Ok(self.page_outcome(
            &loaded.state,
            Next::Page {
                status: 200,
                journey: Some(id.clone()),
                view: View::ContinueAs {
                    email,
                    upstream: who.upstream,
                    unsolicited,
                },
            },
        ))
    }
}
