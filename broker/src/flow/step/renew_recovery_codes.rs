//! Owns renewing the recovery codes (`POST /login/mfa/recovery-codes`), a step of a journey that
//! manages factors: only after a factor was proven here within `policy::REPROOF_SECS` and while
//! the user has a factor set up; the old codes stop working at once, the new ones are shown once
//! (the same page as after a first enrolment), and the renewal is audited.

use std::sync::Arc;

use crate::audit::EventKind;
use crate::domain::UserId;
use crate::flow::contract::{Browser, Next, Notice, Outcome, View};
use crate::flow::machine::Event;
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::flow::step::Managing;

impl SignIn {
    /// `POST /login/mfa/recovery-codes`: new recovery codes for the journey's user, shown once.
    pub async fn mfa_renew_codes(
        &self,
        browser: &Browser,
        raw: &str,
    ) -> Result<Outcome, SignInError> {
        let Managing {
            id,
            mut loaded,
            who,
            facts,
            ..
        } = match self
            .managing(browser, raw, Event::RenewRecoveryCodes)
            .await?
        {
            Ok(m) => m,
            Err(page) => return Ok(page),
        };
        // Recovery codes stand in for a factor: without one set up they would be the only
        // second step, and anyone holding them could add one.
        if !facts.usable_enrolled {
            let notice = Some(Notice::Key("mfa_codes_need_factor"));
            return self
                .choice(browser, &id, &mut loaded, &who, 409, notice)
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
