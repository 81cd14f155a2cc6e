//! Owns renewing the recovery codes (`POST /login/mfa/recovery-codes`), a step of a journey that
//! manages factors: only after a factor was proven here within `policy::REPROOF_SECS` and while
//! the user has a factor set up; the old codes stop working at once, the new ones are shown once
//! (the same page as after a first enrolment), and the renewal is audited.

use std::sync::Arc;

use crate::audit::EventKind;
use crate::domain::UserId;
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Next, Notice, Outcome, View};
use crate::flow::machine::{self, Event};
use crate::flow::policy;
use crate::flow::signin::{SignIn, SignInError, blocking};

impl SignIn {
    /// `POST /login/mfa/recovery-codes`: new recovery codes for the journey's user, shown once.
    pub async fn mfa_renew_codes(
        &self,
        browser: &Browser,
        raw: &str,
    ) -> Result<Outcome, SignInError> {
        let (id, mut loaded) = match self.resume(browser, raw).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(*out),
            Resumed::Gone => return Ok(Outcome::expired()),
        };
        if !machine::accept(&loaded.state, Event::RenewRecoveryCodes) {
            return self.stale(browser, &id, &mut loaded).await;
        }
        let Some(who) = loaded.state.who.clone() else {
            return Ok(Outcome::expired());
        };
        let Some((facts, _)) = self.facts(&loaded.state, browser.locale).await? else {
            return Ok(Outcome::expired());
        };
        // Recovery codes stand in for a factor: without one set up they would be the only
        // second step, and anyone holding them could add one.
        if !facts.usable_enrolled {
            return self
                .choice(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    409,
                    Some(Notice::Key("mfa_codes_need_factor")),
                )
                .await;
        }
        if !policy::may_manage(&who, true, self.now()) {
            return self
                .choice(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    403,
                    Some(Notice::Key("mfa_reprove_first")),
                )
                .await;
        }
        let (mfa, uid) = (
            Arc::clone(&self.mfa),
            UserId::from_stored(who.user_id.clone()),
        );
        let codes = blocking(move || Ok(mfa.new_recovery_codes(&uid)?)).await?;
        self.audit_mfa(
            browser,
            &loaded.state,
            EventKind::RecoveryCodesRenewed,
            "recovery",
            None,
        );
        // Seen, the journey goes on as after a first enrolment's codes (nothing more proven).
        loaded.state.mfa.awaiting_codes_ack = Some(Vec::new());
        self.save(&id, &mut loaded).await?;
        Ok(self.page_outcome(
            &loaded.state,
            Next::Page {
                status: 200,
                journey: Some(id),
                view: View::RecoveryCodes { codes },
            },
        ))
    }
}
