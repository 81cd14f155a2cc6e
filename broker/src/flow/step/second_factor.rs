//! Owns the second-factor steps of the sign-in journey (`impl SignIn`): the choice of factors,
//! a factor's challenge or enrolment (through `mfa::factor::Factor`), the attempt rates and the
//! audit trail of each (recovery codes: `recovery_code.rs`; the choice page: `factor_choice.rs`). The policy (whether a factor is asked) is `policy::mfa_need` / `mfa_decision`; these
//! steps run once it says so, and a proven factor goes back to `SignIn::drive`.

use std::sync::Arc;

use crate::audit::{Event, EventKind};
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, Next, Notice, Outcome, View};
use crate::flow::journey::{JourneyId, Loaded};
use crate::flow::machine::{self, Journey, Proven, Stage};
use crate::flow::policy;
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::mfa::factor::Prompt;
use crate::mfa::{EnrollOutcome, MfaError, VerifyOutcome};
use crate::ratelimit::Scope;

enum Step {
    Verify(Result<VerifyOutcome, MfaError>),
    Enroll(Result<(EnrollOutcome, crate::mfa::Outbox), MfaError>),
}

pub(crate) enum StepError {
    Locked(u64),
    /// Setting up a new factor needs the existing one first.
    EnrolRefused,
    /// Too many messages sent to this user lately.
    SendLimited(u64),
    Plugin(MfaError),
}

impl SignIn {
    /// A posted MFA step of journey `raw`, with the attempt rates counted: the journey at its
    /// MFA stage, or the answer to give instead.
    pub(crate) async fn mfa_step(
        &self,
        browser: &Browser,
        raw: &str,
        event: machine::Event<'_>,
    ) -> Result<Result<(JourneyId, Loaded<Journey>, Proven), Outcome>, SignInError> {
        let (id, mut loaded) = match self.resume(browser, raw).await? {
            Resumed::Live(id, l) => (id, *l),
            Resumed::Answered(out) => return Ok(Err(*out)),
            Resumed::Gone => return Ok(Err(Outcome::expired())),
        };
        if !machine::accept(&loaded.state, event) {
            return Ok(Err(self.stale(browser, &id, &mut loaded).await?));
        }
        let Some(who) = loaded.state.who.clone() else {
            return Ok(Err(Outcome::expired()));
        };
        for (scope, key) in [
            (Scope::MfaPerIp, browser.ip.as_str()),
            (Scope::MfaPerAccount, who.user_id.as_str()),
        ] {
            if let Err(l) = self.rate_checked(browser, &who, scope, key) {
                return Ok(Err(Outcome::message(429, "error_429_message").slow(l)));
            }
        }
        Ok(Ok((id, loaded, who)))
    }

    /// Counts one request of `who` against `scope` (keyed by `key`); over the limit, the refusal
    /// is audited and the time to wait returned.
    pub(crate) fn rate_checked(
        &self,
        browser: &Browser,
        who: &Proven,
        scope: Scope,
        key: &str,
    ) -> Result<(), crate::ratelimit::Limited> {
        self.limiter.check(scope, key).inspect_err(|_| {
            self.provider.audit.record(
                Event::new(EventKind::RateLimited)
                    .ip(browser.ip.as_str())
                    .user(who.user_id.as_str())
                    .reason(scope.as_str()),
            );
        })
    }

    /// `POST /login/mfa/choose`: the chosen factor's challenge or enrolment (no factor: back to
    /// the choice).
    pub async fn mfa_choose(
        &self,
        browser: &Browser,
        raw: &str,
        factor: &str,
        enroll: bool,
    ) -> Result<Outcome, SignInError> {
        let (id, mut loaded, who) = match self
            .mfa_step(browser, raw, machine::Event::ChooseFactor)
            .await?
        {
            Ok(x) => x,
            Err(out) => return Ok(out),
        };
        if factor.is_empty() {
            loaded.state.mfa.factor = None;
            loaded.state.mfa.prompt = None;
            return self
                .choice(browser, &id, &mut loaded, &who, 200, None)
                .await;
        }
        self.begin_factor(browser, &id, &mut loaded, &who, factor, enroll)
            .await
    }

    /// `POST /login/mfa/answer`: the answer to the open challenge or enrolment form (only the
    /// fields the plugin asked for, each cut to its length).
    pub async fn mfa_answer(
        &self,
        browser: &Browser,
        raw: &str,
        fields: Vec<(String, String)>,
    ) -> Result<Outcome, SignInError> {
        let (id, mut loaded, who) = match self
            .mfa_step(browser, raw, machine::Event::AnswerFactor)
            .await?
        {
            Ok(x) => x,
            Err(out) => return Ok(out),
        };
        let (Some(factor), Some(prompt)) = (
            loaded.state.mfa.factor.clone(),
            loaded.state.mfa.prompt.clone(),
        ) else {
            return Ok(Outcome::expired());
        };
        let answer: Vec<(String, String)> = prompt
            .fields()
            .iter()
            .map(|f| {
                let v = fields
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                let max = usize::try_from(f.max_length).unwrap_or(256);
                (f.name.clone(), v.trim().chars().take(max).collect())
            })
            .collect();
        let enrolling = loaded.state.mfa.enrolling;
        let Some(user) = self
            .factor_user(&who, browser.locale, loaded.state.mfa.level)
            .await?
        else {
            // Disabled (or gone) since the password: the factor does not run, and the refusal
            // is on the audit trail.
            self.audit_mfa(
                browser,
                &loaded.state,
                EventKind::MfaFailed,
                &factor,
                Some("account_disabled"),
            );
            return Ok(Outcome::expired());
        };
        let Some(f) = self.mfa.factor(&factor) else {
            return self
                .step_failed(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    &factor,
                    StepError::Plugin(MfaError::Unavailable(factor.clone())),
                )
                .await;
        };
        let u2 = user.clone();
        let step = blocking(move || {
            Ok(if enrolling {
                Step::Enroll(f.enroll_finish(&u2, &prompt, answer))
            } else {
                Step::Verify(f.verify(&u2, &prompt, answer))
            })
        })
        .await?;
        match step {
            Step::Verify(Ok(VerifyOutcome::Accepted { amr })) => {
                self.audit_mfa(
                    browser,
                    &loaded.state,
                    EventKind::MfaSucceeded,
                    &factor,
                    None,
                );
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
            Step::Verify(Ok(VerifyOutcome::Rejected { message })) => {
                // A double submit whose twin finished the journey (and spent the code): the
                // same answer, not an error.
                if let Some(same) = self.kept_answer(browser, &id).await? {
                    return Ok(same);
                }
                self.audit_mfa(
                    browser,
                    &loaded.state,
                    EventKind::MfaFailed,
                    &factor,
                    Some("rejected"),
                );
                let error = Some(
                    message
                        .map(Notice::Plugin)
                        .unwrap_or(Notice::Key("mfa_wrong_code")),
                );
                Ok(self.form_page(&id, &loaded.state, 401, error))
            }
            Step::Verify(Ok(VerifyOutcome::Pending)) => {
                Ok(self.form_page(&id, &loaded.state, 200, Some(Notice::Key("mfa_wait_still"))))
            }
            Step::Verify(Ok(VerifyOutcome::Expired)) => {
                self.audit_mfa(
                    browser,
                    &loaded.state,
                    EventKind::MfaFailed,
                    &factor,
                    Some("expired"),
                );
                Ok(self.form_page(
                    &id,
                    &loaded.state,
                    401,
                    Some(Notice::Key("mfa_wait_expired")),
                ))
            }
            Step::Verify(Ok(VerifyOutcome::Locked(l))) => {
                self.step_failed(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    &factor,
                    StepError::Locked(l.retry_after_secs),
                )
                .await
            }
            Step::Verify(Err(e)) | Step::Enroll(Err(e)) => {
                self.step_failed(
                    browser,
                    &id,
                    &mut loaded,
                    &who,
                    &factor,
                    StepError::Plugin(e),
                )
                .await
            }
            Step::Enroll(Ok((outcome, outbox))) => {
                if !outbox.is_empty()
                    && let Err(e) = self.mfa.deliver(&user.email, outbox).await
                {
                    return self
                        .step_failed(
                            browser,
                            &id,
                            &mut loaded,
                            &who,
                            &factor,
                            StepError::Plugin(e),
                        )
                        .await;
                }
                self.enrolled(browser, &id, &mut loaded, &factor, outcome)
                    .await
            }
        }
    }

    async fn enrolled(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        factor: &str,
        outcome: EnrollOutcome,
    ) -> Result<Outcome, SignInError> {
        match outcome {
            EnrollOutcome::Next(form) => {
                loaded.state.mfa.prompt = Some(Prompt::Form(form));
                self.save(id, loaded).await?;
                Ok(self.form_page(id, &loaded.state, 200, None))
            }
            EnrollOutcome::Retry(msg) => {
                self.audit_mfa(
                    browser,
                    &loaded.state,
                    EventKind::MfaFailed,
                    factor,
                    Some("enrolment_rejected"),
                );
                Ok(self.form_page(id, &loaded.state, 401, Some(Notice::Plugin(msg))))
            }
            EnrollOutcome::Done {
                amr,
                recovery_codes,
            } => {
                self.audit_mfa(browser, &loaded.state, EventKind::MfaEnrolled, factor, None);
                if recovery_codes.is_empty() {
                    machine::second_factor_proven(&mut loaded.state, &amr, self.clock.now());
                    return self.drive(browser, id, loaded).await;
                }
                loaded.state.mfa.prompt = None;
                loaded.state.mfa.factor = None;
                loaded.state.mfa.awaiting_codes_ack = Some(amr);
                self.save(id, loaded).await?;
                Ok(self.page_outcome(
                    &loaded.state,
                    Next::Page {
                        status: 200,
                        journey: Some(id.clone()),
                        view: View::RecoveryCodes {
                            codes: recovery_codes,
                        },
                    },
                ))
            }
        }
    }

    /// Starts a challenge (or an enrolment) of `factor`; messages the plugin asked to send are
    /// sent first.
    pub(crate) async fn begin_factor(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        who: &Proven,
        factor: &str,
        enroll: bool,
    ) -> Result<Outcome, SignInError> {
        let Some(user) = self
            .factor_user(who, browser.locale, loaded.state.mfa.level)
            .await?
        else {
            return Ok(Outcome::expired());
        };
        let Some(f) = self.mfa.factor(factor) else {
            return self
                .step_failed(
                    browser,
                    id,
                    loaded,
                    who,
                    factor,
                    StepError::Plugin(MfaError::Unavailable(factor.to_owned())),
                )
                .await;
        };
        if f.sends() {
            // Nothing is sent for a request the user did not make on the broker's own page.
            if !browser.posted {
                return Box::pin(self.choice(browser, id, loaded, who, 200, None)).await;
            }
            if let Err(l) =
                self.rate_checked(browser, who, Scope::MfaSendPerAccount, who.user_id.as_str())
            {
                return self
                    .step_failed(
                        browser,
                        id,
                        loaded,
                        who,
                        factor,
                        StepError::SendLimited(l.retry_after_secs),
                    )
                    .await;
            }
        }
        let (mfa, u, w) = (Arc::clone(&self.mfa), user.clone(), who.clone());
        let (j, now) = (loaded.state.clone(), self.clock.now());
        let began = blocking(move || {
            if !enroll && let Some(l) = f.locked(&u)? {
                return Ok(Err(StepError::Locked(l.retry_after_secs)));
            }
            if enroll {
                let any = mfa.factors(&u)?.iter().any(|x| x.enrolled);
                if !policy::may_add(&j, &w, any, now) {
                    return Ok(Err(StepError::EnrolRefused));
                }
            }
            Ok(f.begin(&u, enroll).map_err(StepError::Plugin))
        })
        .await?;
        let (prompt, outbox) = match began {
            Ok(ok) => ok,
            Err(e) => return self.step_failed(browser, id, loaded, who, factor, e).await,
        };
        // The challenge is recorded only once its message was accepted (Mfa::deliver).
        if !outbox.is_empty()
            && let Err(e) = self.mfa.deliver(&user.email, outbox).await
        {
            return self
                .step_failed(browser, id, loaded, who, factor, StepError::Plugin(e))
                .await;
        }
        self.audit_mfa(
            browser,
            &loaded.state,
            EventKind::MfaChallenged,
            factor,
            None,
        );
        loaded.state.stage = Stage::Mfa;
        loaded.state.mfa.factor = Some(factor.to_owned());
        loaded.state.mfa.prompt = Some(prompt);
        loaded.state.mfa.enrolling = enroll;
        loaded.state.mfa.awaiting_codes_ack = None;
        self.save(id, loaded).await?;
        Ok(self.form_page(id, &loaded.state, 200, None))
    }

    pub(crate) fn form_page(
        &self,
        id: &JourneyId,
        j: &Journey,
        status: u16,
        error: Option<Notice>,
    ) -> Outcome {
        let (Some(factor), Some(prompt)) = (j.mfa.factor.clone(), j.mfa.prompt.clone()) else {
            return Outcome::expired();
        };
        let enrolling = j.mfa.enrolling;
        let view = match prompt {
            Prompt::Form(form) => View::MfaForm {
                factor,
                form,
                enrolling,
                error,
            },
            Prompt::Native { page, data, .. } => View::MfaNative {
                factor,
                page,
                data,
                enrolling,
                error,
            },
            Prompt::Waiting(_) => return self.wait_page(id, j, status, error, false),
        };
        self.page_outcome(
            j,
            Next::Page {
                status,
                journey: Some(id.clone()),
                view,
            },
        )
    }

    /// A factor that failed (plugin failure, lockout): back to the choice with the reason.
    /// Fails closed: nothing is signed in.
    pub(crate) async fn step_failed(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        who: &Proven,
        factor: &str,
        e: StepError,
    ) -> Result<Outcome, SignInError> {
        let j = &loaded.state;
        let (status, key, retry) = match &e {
            StepError::Locked(secs) => {
                self.audit_mfa(browser, j, EventKind::MfaLockedOut, factor, None);
                (429, "mfa_locked", Some(*secs))
            }
            StepError::SendLimited(secs) => (429, "mfa_send_limited", Some(*secs)),
            StepError::EnrolRefused => {
                self.audit_mfa(
                    browser,
                    j,
                    EventKind::MfaFailed,
                    factor,
                    Some("enrolment_refused"),
                );
                (403, "mfa_enrol_refused", None)
            }
            StepError::Plugin(MfaError::Delivery(d)) => {
                tracing::warn!(plugin = factor, error = %d, "MFA message not sent");
                self.audit_mfa(browser, j, EventKind::MfaFailed, factor, Some("delivery"));
                (502, "mfa_not_sent", None)
            }
            StepError::Plugin(MfaError::Storage(_)) => return Err(SignInError::Unavailable),
            StepError::Plugin(err) => {
                tracing::warn!(plugin = factor, error = %err, "MFA factor failed");
                self.audit_mfa(browser, j, EventKind::MfaFailed, factor, Some(err.code()));
                (503, "mfa_factor_failed", None)
            }
        };
        let mut out =
            Box::pin(self.choice(browser, id, loaded, who, status, Some(Notice::Key(key)))).await?;
        out.retry_after = retry;
        Ok(out)
    }

    pub(crate) fn audit_mfa(
        &self,
        browser: &Browser,
        j: &Journey,
        kind: EventKind,
        factor: &str,
        why: Option<&str>,
    ) {
        let reason = match why {
            Some(w) => format!("{factor}:{w}"),
            None => factor.to_owned(),
        };
        let (user, upstream) = j
            .who
            .as_ref()
            .map(|w| (w.user_id.as_str(), w.upstream.as_str()))
            .unwrap_or(("", ""));
        let mut e = Event::new(kind)
            .user(user)
            .ip(browser.ip.as_str())
            .upstream(upstream)
            .reason(reason);
        if let Some(sid) = &j.step_up {
            e = e.sid(sid.as_str());
        }
        self.provider.audit.record(e);
    }
}
