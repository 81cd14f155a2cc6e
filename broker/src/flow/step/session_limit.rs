//! Owns the session-limit step (`POST /login/session-limit`): the user ends one of their own sessions, then the journey goes on (the limit is checked again).

use std::sync::Arc;

use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Outcome};
use crate::flow::machine::{self, Event as Step};
use crate::flow::signin::{SignIn, SignInError, blocking};

impl SignIn {
    /// `POST /login/session-limit`: ends the session the user picked (one of their own), then
    /// the journey goes on (the limit is checked again).
    pub async fn end_one(
        &self,
        browser: &Browser,
        raw: &str,
        sid: &str,
    ) -> Result<Outcome, SignInError> {
        let (id, mut loaded) = match self.resume(browser, raw).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(*out),
            Resumed::Gone => return Ok(Outcome::message(400, "error_session_limit_ticket")),
        };
        if !machine::accept(&loaded.state, Step::EndSession) {
            return self.stale(browser, &id, &mut loaded).await;
        }
        let Some(who) = loaded.state.who.clone() else {
            return Ok(Outcome::expired());
        };
        let (store, provider, sid) = (
            Arc::clone(&self.store),
            Arc::clone(&self.provider),
            sid.to_owned(),
        );
        let ended = blocking(move || match store.session_by_sid(&sid)? {
            Some(s) if s.user_id.as_str() == who.user_id => {
                provider
                    .end_session_record(&s, "ended_at_session_limit")
                    .map_err(SignInError::internal)?;
                Ok(true)
            }
            _ => Ok(false),
        })
        .await?;
        if !ended {
            return Ok(Outcome::message(404, "error_404_message"));
        }
        self.drive(browser, &id, &mut loaded).await
    }
}
