//! Owns what the journey asks of a factor plugin: list the user's factors, run an enrolment
//! step, start a challenge, and check an answer within the attempt limit (a wrong answer or any
//! plugin failure counts; too many lock the factor).

use wasmtime::Store as WasmStore;

use super::call::Outbox;
use super::checks::{check_form, check_localized};
use super::error::{MfaError, malformed, plugin_error, plugin_result};
use super::host::{
    self, CallState, EnrollStep, FactorPlugin, Form, Localized, PluginError, Verdict,
};
use super::registry::Slot;
use super::values::{EnrollOutcome, FactorStatus, FactorUser, VerifyOutcome};
use super::{Mfa, lock_key};
use crate::config::mfa::Capability;
use crate::ratelimit::Limited;

impl Mfa {
    /// Whether `plugin`'s challenge may send something (it is granted email or SMS): such a
    /// challenge starts only on a POST, within the per-user send rate.
    pub fn sends(&self, plugin: &str) -> bool {
        self.waits(plugin)
            || self.registry.get(plugin).is_some_and(|slot| {
                slot.manifest()
                    .grants
                    .iter()
                    .any(|g| matches!(g, Capability::Email | Capability::Sms))
            })
    }

    /// The factors this user can use or set up, in id order. Blocking.
    pub fn factors(&self, user: &FactorUser) -> Result<Vec<FactorStatus>, MfaError> {
        let enrolled: std::collections::BTreeMap<String, (i64, Option<i64>)> = self
            .store
            .mfa_enrollments(&user.id)?
            .into_iter()
            .map(|e| (e.plugin_id, (e.created_at, e.last_used_at)))
            .collect();
        let times = |id: &str| {
            enrolled
                .get(id)
                .map_or((None, None), |(added, used)| (Some(*added), *used))
        };
        let mut out = Vec::new();
        for (id, slot) in self.registry.snapshot() {
            match slot {
                Slot::Ready(l) => {
                    let d = &l.description;
                    let is_enrolled = if d.needs_enrollment {
                        enrolled.contains_key(&id)
                    } else {
                        // Factors without enrolment (email) say whether they can reach the user.
                        self.call(&l, user, |p, s, u| {
                            p.concierge_mfa_factor().call_is_enrolled(s, u)
                        })
                        .and_then(|(b, outbox)| self.settle(outbox).map(|()| b))
                        .unwrap_or(false)
                    };
                    let (added, last_used) = times(&id);
                    out.push(FactorStatus {
                        added,
                        last_used,
                        id,
                        name: d.name.clone(),
                        kind: d.kind,
                        needs_enrollment: d.needs_enrollment,
                        enrolled: is_enrolled,
                        available: true,
                        sends: l
                            .manifest
                            .grants
                            .iter()
                            .any(|g| matches!(g, Capability::Email | Capability::Sms)),
                        // A plugin may not claim `phr` (refused at load).
                        phishing_resistant: false,
                        repeatable: false,
                    });
                }
                Slot::Failed(_) if enrolled.contains_key(&id) => out.push(FactorStatus {
                    added: times(&id).0,
                    last_used: times(&id).1,
                    name: Localized {
                        en: id.clone(),
                        ko: id.clone(),
                    },
                    id,
                    kind: host::FactorKind::Other,
                    needs_enrollment: true,
                    enrolled: true,
                    available: false,
                    sends: false,
                    phishing_resistant: false,
                    repeatable: false,
                }),
                Slot::Failed(_) => {}
            }
        }
        out.retain(|f| !self.native.iter().any(|n| n.id() == f.id));
        out.extend(self.native_statuses(user, times)?);
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The first enrolment page of a factor. Blocking.
    pub fn enroll_begin(
        &self,
        plugin: &str,
        user: &FactorUser,
    ) -> Result<(Form, Outbox), MfaError> {
        self.form_call(plugin, user, |p, s, u| {
            p.concierge_mfa_factor().call_enroll_begin(s, u)
        })
    }

    /// Starts a challenge: the page to show and the messages to send (with the challenge's
    /// state, written by [`Mfa::deliver`] once they are sent). Blocking.
    pub fn challenge_begin(
        &self,
        plugin: &str,
        user: &FactorUser,
    ) -> Result<(Form, Outbox), MfaError> {
        self.form_call(plugin, user, |p, s, u| {
            p.concierge_mfa_factor().call_challenge_begin(s, u)
        })
    }

    /// A call that answers with a page: the form, checked, and the messages to send.
    fn form_call(
        &self,
        plugin: &str,
        user: &FactorUser,
        f: impl FnOnce(
            &FactorPlugin,
            &mut WasmStore<CallState>,
            &host::User,
        ) -> wasmtime::Result<Result<Form, PluginError>>,
    ) -> Result<(Form, Outbox), MfaError> {
        let l = self.loaded(plugin)?;
        let (r, outbox) = self.call(&l, user, f)?;
        let form = plugin_result(plugin, r)?;
        check_form(&form).map_err(|reason| malformed(plugin, reason))?;
        Ok((form, outbox))
    }

    /// Handles an enrolment answer. When the factor is done it is recorded, and a user's first
    /// factor comes with fresh recovery codes. Blocking.
    pub fn enroll_finish(
        &self,
        plugin: &str,
        user: &FactorUser,
        answer: Vec<(String, String)>,
    ) -> Result<(EnrollOutcome, Outbox), MfaError> {
        let l = self.loaded(plugin)?;
        let (r, outbox) = self.call(&l, user, |p, s, u| {
            p.concierge_mfa_factor().call_enroll_finish(s, u, &answer)
        })?;
        let step = match r {
            Ok(step) => step,
            Err(PluginError::BadInput(msg)) => {
                check_localized(&msg).map_err(|reason| malformed(plugin, reason))?;
                return Ok((EnrollOutcome::Retry(msg), outbox));
            }
            Err(e) => return Err(plugin_error(plugin, e)),
        };
        match step {
            EnrollStep::Next(form) => {
                check_form(&form).map_err(|reason| malformed(plugin, reason))?;
                Ok((EnrollOutcome::Next(form), outbox))
            }
            EnrollStep::Done => {
                let recovery_codes = self.record_enrollment(&user.id, plugin)?;
                let amr = l.proven_amr();
                Ok((
                    EnrollOutcome::Done {
                        amr,
                        recovery_codes,
                    },
                    outbox,
                ))
            }
        }
    }

    /// Records when `factor` proved a sign-in ("last used" on the account's factor list); never
    /// a reason to fail the sign-in. Blocking.
    pub(super) fn record_use(&self, user: &crate::domain::UserId, factor: &str) {
        if let Err(e) = self
            .store
            .touch_mfa_enrollment(user, factor, self.clock.now())
        {
            tracing::warn!(factor, error = %e, "recording when a factor was used failed");
        }
    }

    /// Records that the user set up `factor`; a user's first factor comes with fresh recovery
    /// codes (returned to show once). Blocking.
    pub(super) fn record_enrollment(
        &self,
        user: &crate::domain::UserId,
        factor: &str,
    ) -> Result<Vec<String>, MfaError> {
        let first = self.store.mfa_enrollments(user)?.is_empty();
        self.store
            .insert_mfa_enrollment(user, factor, self.clock.now())?;
        if first {
            self.new_recovery_codes(user)
        } else {
            Ok(Vec::new())
        }
    }

    /// Whether the factor is locked for the user now. Blocking.
    pub fn locked(&self, plugin: &str, user: &FactorUser) -> Result<Option<Limited>, MfaError> {
        Ok(self.lockout.check(&lock_key(plugin, user))?.locked)
    }

    /// Checks an answer, within the attempt limit: a wrong answer or any plugin failure counts
    /// as a failed attempt; too many lock the factor for the user. Blocking.
    pub fn verify(
        &self,
        plugin: &str,
        user: &FactorUser,
        answer: Vec<(String, String)>,
    ) -> Result<VerifyOutcome, MfaError> {
        let key = lock_key(plugin, user);
        let lock = self.lockout.check(&key)?;
        if let Some(l) = lock.locked {
            return Ok(VerifyOutcome::Locked(l));
        }
        let outcome = self.loaded(plugin).and_then(|l| {
            let (r, outbox) = self.call(&l, user, |p, s, u| {
                p.concierge_mfa_factor().call_verify(s, u, &answer)
            })?;
            // Verification sends nothing; its state (a spent code) is written at once.
            self.settle(outbox)?;
            Ok((l, r))
        });
        let rejected = |message: Option<Localized>| -> Result<VerifyOutcome, MfaError> {
            match self.lockout.failed(&key)? {
                Some(l) => Ok(VerifyOutcome::Locked(l)),
                None => Ok(VerifyOutcome::Rejected { message }),
            }
        };
        match outcome {
            Ok((l, Ok(Verdict::Accepted))) => {
                if lock.has_failures {
                    self.lockout.succeeded(&key)?;
                }
                if l.description.needs_enrollment {
                    self.record_use(&user.id, plugin);
                }
                Ok(VerifyOutcome::Accepted {
                    amr: l.proven_amr(),
                })
            }
            Ok((_, Ok(Verdict::Rejected(msg)))) => {
                rejected(check_localized(&msg).ok().map(|()| msg))
            }
            Ok((_, Err(PluginError::BadInput(msg)))) => {
                rejected(check_localized(&msg).ok().map(|()| msg))
            }
            Ok((_, Err(e))) => {
                // Not the user's fault, but still not a pass; it counts against the limit so a
                // plugin that can be made to fail cannot be used to probe for free.
                let _ = rejected(None)?;
                Err(plugin_error(plugin, e))
            }
            Err(e) => {
                let _ = rejected(None)?;
                Err(e)
            }
        }
    }
}
