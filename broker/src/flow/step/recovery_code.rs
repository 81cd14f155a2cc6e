//! Owns the recovery-code steps of the second factor: a recovery code instead of a factor
//! (`POST /login/mfa/recovery`, single use, counted against the same lockout), and going on once
//! the recovery codes handed out at a first enrolment were seen (`POST /login/mfa/continue`).

use std::sync::Arc;

use crate::audit::EventKind;
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Notice, Outcome};
use crate::flow::machine;
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::flow::step::second_factor::StepError;
use crate::mfa::VerifyOutcome;

impl SignIn {
    /// `POST /login/mfa/continue`: after the recovery codes were shown.
    pub async fn mfa_continue(&self, browser: &Browser, raw: &str) -> Result<Outcome, SignInError> {
        let (id, mut loaded) = match self.resume(browser, raw).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(*out),
            Resumed::Gone => return Ok(Outcome::expired()),
        };
        if !machine::accept(&loaded.state, machine::Event::CodesSeen) {
            return self.stale(browser, &id, &mut loaded).await;
        }
        let Some(amr) = loaded.state.mfa.awaiting_codes_ack.take() else {
            return Ok(Outcome::expired());
        };
        machine::second_factor_proven(&mut loaded.state, &amr, self.clock.now());
        self.drive(browser, &id, &mut loaded).await
    }

    /// `POST /login/mfa/recovery`: a recovery code instead of a factor.
    pub async fn mfa_recovery(
        &self,
        browser: &Browser,
        raw: &str,
        code: &str,
    ) -> Result<Outcome, SignInError> {
        let (id, mut loaded, who) = match self
            .mfa_step(browser, raw, machine::Event::RecoveryCode)
            .await?
        {
            Ok(x) => x,
            Err(out) => return Ok(out),
        };
        let Some(user) = self
            .factor_user(&who, browser.locale, loaded.state.mfa.level)
            .await?
        else {
            return Ok(Outcome::expired());
        };
        let mfa = Arc::clone(&self.mfa);
        let code: String = code.chars().take(32).collect();
        let outcome = blocking(move || Ok(mfa.verify_recovery(&user, &code)?)).await?;
        let rid = crate::mfa::RECOVERY_ID;
        match outcome {
            VerifyOutcome::Accepted { amr } => {
                self.audit_mfa(browser, &loaded.state, EventKind::MfaSucceeded, rid, None);
                if loaded.state.manage {
                    machine::factor_reproven(&mut loaded.state, &amr, self.clock.now());
                    let who = loaded.state.who.clone().unwrap_or(who);
                    return self
                        .choice(browser, &id, &mut loaded, &who, 200, None)
                        .await;
                }
                machine::second_factor_proven(&mut loaded.state, &amr, self.clock.now());
                self.drive(browser, &id, &mut loaded).await
            }
            // A recovery code neither waits nor expires: those are a waiting factor's.
            VerifyOutcome::Rejected { .. } | VerifyOutcome::Pending | VerifyOutcome::Expired => {
                self.audit_mfa(
                    browser,
                    &loaded.state,
                    EventKind::MfaFailed,
                    rid,
                    Some("rejected"),
                );
                self.choice(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    401,
                    Some(Notice::Key("mfa_wrong_recovery")),
                )
                .await
            }
            VerifyOutcome::Locked(l) => {
                self.step_failed(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    rid,
                    StepError::Locked(l.retry_after_secs),
                )
                .await
            }
        }
    }
}
