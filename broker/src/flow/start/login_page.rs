//! Owns the start at the broker's own sign-in page (`GET /login`): the page of the journey named, or a new journey to a local page.

use crate::domain::Email;
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Next, Outcome};
use crate::flow::machine::{self, Journey, Target, Want};
use crate::flow::signin::{LoginQuery, SignIn, SignInError, local_target};

impl SignIn {
    /// `GET /login`: the page of the journey named, or a new journey (a signed-in browser goes
    /// on unless the form is forced).
    pub async fn show(&self, browser: &Browser, q: LoginQuery) -> Result<Outcome, SignInError> {
        if let Some(raw) = &q.journey {
            let (id, mut loaded) = match self.resume(browser, raw).await? {
                Resumed::Live(id, l) => (id, *l),
                Resumed::Answered(out) => return Ok(*out),
                Resumed::Gone => return Ok(Outcome::expired()),
            };
            // A GET never finishes a journey (it would open a session or answer an app without
            // a form posted from this browser): everything proven, the user continues from a
            // page with a POST.
            if machine::next(&loaded.state, |e| self.realm_of(e)) == Want::Session {
                // The warning that a session is replaced, when one is.
                let unsolicited = loaded.state.unsolicited && browser.session.is_some();
                return self.continue_page(&id, &mut loaded, unsolicited).await;
            }
            return self.drive(browser, &id, &mut loaded).await;
        }
        let local = local_target(q.return_to.as_deref());
        if !q.force && self.current_session(browser).await?.is_some() {
            return Ok(Outcome::new(Next::Redirect(local)));
        }
        let mut j = Journey::new(Target::Local(local));
        j.login_hint = q
            .login_hint
            .as_deref()
            .and_then(|h| Email::parse(h).ok())
            .map(|e| e.as_str().to_owned());
        j.idp_hint = q
            .idp_hint
            .filter(|id| self.upstreams.buttons().any(|u| u.id == *id));
        self.start_and_drive(browser, j).await
    }
}
