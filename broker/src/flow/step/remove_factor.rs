//! Owns removing a second factor (`POST /login/mfa/remove`), a step of a journey that manages
//! factors: only after a factor was proven here within `policy::REPROOF_SECS`, never the last
//! one that can run where the policy requires a second factor; audited. One passkey of several
//! is removed alone (a lost device), the others stay. The user's sessions keep working.

use std::sync::Arc;

use crate::audit::EventKind;
use crate::flow::contract::{Browser, Notice, Outcome};
use crate::flow::machine::Event;
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::flow::step::Managing;
use crate::mfa::passkey;
use crate::mfa::passkey_list::{self, Removed};

impl SignIn {
    /// `POST /login/mfa/remove`: removes `factor` from the journey's user (or, for passkeys,
    /// the one `credential` names), then shows the choice again.
    pub async fn mfa_remove(
        &self,
        browser: &Browser,
        raw: &str,
        factor: &str,
        credential: &str,
    ) -> Result<Outcome, SignInError> {
        let Managing {
            id,
            mut loaded,
            who,
            factors,
            ..
        } = match self.managing(browser, raw, Event::RemoveFactor).await? {
            Ok(m) => m,
            Err(page) => return Ok(page),
        };
        let enrolled = factors
            .iter()
            .any(|f| f.enrolled && f.needs_enrollment && f.id == factor);
        if !enrolled {
            return self
                .choice(browser, &id, &mut loaded, &who, 404, None)
                .await;
        }
        let uid = crate::domain::UserId::from_stored(who.user_id.clone());
        if factor == passkey::ID && !credential.is_empty() {
            let (store, audit, id_of) = (
                Arc::clone(&self.store),
                Arc::clone(&self.provider.audit),
                credential.to_owned(),
            );
            let u = uid.clone();
            // Only one of several: the factor stays (the last one goes with the factor, below).
            let removed = blocking(move || {
                if passkey_list::list(store.as_ref(), &u)?.len() < 2 {
                    return Ok(None);
                }
                Ok(Some(passkey_list::remove(
                    store.as_ref(),
                    &audit,
                    &u,
                    &id_of,
                    "user",
                )?))
            })
            .await?;
            match removed {
                Some(Removed::Left(_)) => {
                    return self
                        .choice(
                            browser,
                            &id,
                            &mut loaded,
                            &who,
                            200,
                            Some(Notice::Done("mfa_removed")),
                        )
                        .await;
                }
                Some(Removed::NotFound) => {
                    return self
                        .choice(browser, &id, &mut loaded, &who, 404, None)
                        .await;
                }
                None => {}
            }
        }
        // Where the policy requires a second factor, one must remain that can run (a factor
        // that needs no enrolment, like an email code, counts).
        let left = factors
            .iter()
            .filter(|f| f.enrolled && f.available && f.id != factor)
            .count();
        if self.settings.mfa_default.always() && left == 0 {
            return self
                .choice(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    409,
                    Some(Notice::Key("mfa_remove_last")),
                )
                .await;
        }
        let Some(f) = self.mfa.factor(factor) else {
            return self
                .choice(browser, &id, &mut loaded, &who, 404, None)
                .await;
        };
        blocking(move || Ok(f.remove(&uid)?)).await?;
        self.audit_mfa(browser, &loaded.state, EventKind::MfaRemoved, factor, None);
        self.choice(
            browser,
            &id,
            &mut loaded,
            &who,
            200,
            Some(Notice::Done("mfa_removed")),
        )
        .await
    }
}
