//! Owns the step-up start (`GET /login/mfa/step-up`): raise this browser's session to a second factor, then go on to a local page. It shows the factor choice; nothing is sent until the user presses a button (a POST).

use crate::flow::contract::{Browser, Next, Outcome};
use crate::flow::machine::{Journey, Stage, Target};
use crate::flow::signin::{SignIn, SignInError, local_target, proven_of};

impl SignIn {
    /// `GET /login/mfa/step-up`: raise this browser's session to a second factor, then go on
    /// to `return_to`.
    pub async fn step_up(
        &self,
        browser: &Browser,
        return_to: Option<&str>,
    ) -> Result<Outcome, SignInError> {
        let local = local_target(return_to);
        let Some(session) = self.current_session(browser).await? else {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("return_to", &local);
            return Ok(Outcome::new(Next::Redirect(format!(
                "/login?{}",
                q.finish()
            ))));
        };
        let mut j = Journey::new(Target::Local(local));
        j.who = Some(proven_of(&session));
        j.step_up = Some(session.sid.clone());
        j.stage = Stage::Mfa;
        self.start_and_drive(browser, j).await
    }
}
