//! Owns the one interface the sign-in journey's second-factor step talks to ([`Factor`]): start a
//! challenge or an enrolment, check the answer, remove it from a user. WebAssembly plugins are one
//! implementation ([`PluginFactor`], through the plugin host); a factor built into the broker
//! ([`NativeFactor`], e.g. `passkey`) is another ([`NativeHost`]), registered once at startup
//! ([`Mfa::with_native`]), with a [`Prompt::Native`] page of its own. Either way the host keeps
//! the attempt limit, the enrolment record and the recovery codes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::host::{Field, Form, Localized};
use super::{EnrollOutcome, FactorStatus, FactorUser, Mfa, MfaError, Outbox, VerifyOutcome};
use super::{lock_key, values};
use crate::domain::UserId;
use crate::domain::auth::AMR_MFA;
use crate::ratelimit::Limited;

/// What a factor shows the user while its challenge or enrolment is open (kept in the journey
/// between the pages).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Prompt {
    /// A plugin's form: fields, a text, a QR code or a secret to copy.
    Form(Form),
    /// A native factor's own page.
    Native {
        /// The page (`templates/pages/{page}.hbs`) that renders it.
        page: String,
        /// What the page shows (its view-model's `data`).
        data: serde_json::Value,
        /// The fields the answer may carry.
        fields: Vec<Field>,
        /// The factor's own state between the page and the answer (a ceremony's challenge):
        /// kept in the sealed journey, never shown.
        state: serde_json::Value,
    },
    /// A waiting factor's open wait (contract 0.2 `waiting`, `mfa::waiting`).
    Waiting(Wait),
}

/// An approval being awaited: what the page shows, and what the plugin polls with. Kept in the
/// sealed journey (one write when it starts, one when a poll finds it approved).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wait {
    pub intro: Localized,
    /// The number the approver must pick (number matching), shown large.
    pub number: Option<String>,
    /// The plugin's handle on the wait; never shown.
    pub correlation: String,
    /// Seconds between the page's polls.
    pub poll_every: u32,
    /// When the wait ends unanswered.
    pub expires_at: crate::clock::UnixTime,
}

impl Prompt {
    /// The fields the answer may carry (anything else posted is dropped).
    pub fn fields(&self) -> &[Field] {
        match self {
            Prompt::Form(f) => &f.fields,
            Prompt::Native { fields, .. } => fields,
            Prompt::Waiting(_) => &[],
        }
    }
}

/// What a native factor made of an answer to its challenge.
#[derive(Debug, Clone)]
pub enum NativeVerdict {
    /// Passed, proving these RFC 8176 methods (among [`NativeFactor::amr`]).
    Accepted { amr: Vec<String> },
    /// Wrong (the message to show, if any); counts against the attempt limit.
    Rejected(Option<Localized>),
}

/// What a native factor made of an answer to its enrolment page.
#[derive(Debug, Clone)]
pub enum NativeEnrolled {
    /// Set up; the ceremony proved these RFC 8176 methods (among [`NativeFactor::amr`]).
    Done { amr: Vec<String> },
    /// Not set up; the message is shown on the same page.
    Retry(Localized),
}

/// A factor built into the broker. It owns its ceremony and what it stores; the host
/// ([`NativeHost`]) adds the attempt limit and lockout, the enrolment record, the first
/// enrolment's recovery codes and `mfa` in the amr. Calls block (storage).
pub trait NativeFactor: Send + Sync {
    /// The factor's id (never a plugin's: the native one wins).
    fn id(&self) -> &str;
    fn name(&self) -> Localized;
    /// The RFC 8176 methods a pass may prove (each pass says which it did; `mfa` is added by
    /// the host).
    fn amr(&self) -> Vec<String>;
    /// Whether the user has set it up (as `user` needs it: e.g. a hardware key).
    fn enrolled(&self, user: &FactorUser) -> Result<bool, MfaError>;
    /// The page of a challenge (`enroll` false) or of an enrolment.
    fn begin(&self, user: &FactorUser, enroll: bool) -> Result<Prompt, MfaError>;
    fn verify(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: &[(String, String)],
    ) -> Result<NativeVerdict, MfaError>;
    fn enroll_finish(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: &[(String, String)],
    ) -> Result<NativeEnrolled, MfaError>;
    /// Removes what it keeps for the user; whether there was anything.
    fn remove(&self, user: &UserId) -> Result<bool, MfaError>;
    /// Whether a user may set up more than one (each enrolment adds one, e.g. a passkey per
    /// device).
    fn repeatable(&self) -> bool {
        false
    }
}

/// A challenge of a first factor without a password: the options the page's script gives the
/// browser, and the state its answer is checked against (kept in the sealed journey).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstFactorChallenge {
    pub options: String,
    pub state: serde_json::Value,
}

/// What a passwordless answer proved.
#[derive(Debug, Clone)]
pub enum Identified {
    /// This user, by these RFC 8176 methods (the broker computes `mfa` from them).
    User { user: UserId, amr: Vec<String> },
    /// Not accepted: a short reason for the audit trail (never a secret), and the page's text.
    Refused {
        reason: &'static str,
        message: Localized,
    },
}

/// A first factor that proves who the user is without a password or an email typed (a passkey:
/// a discoverable WebAuthn credential). Calls block (storage).
pub trait Passwordless: Send + Sync {
    /// A new challenge.
    fn challenge(&self) -> Result<FirstFactorChallenge, MfaError>;
    /// Who answered `challenge` with `answer`, and what it proves.
    fn identify(
        &self,
        challenge: &FirstFactorChallenge,
        answer: &str,
    ) -> Result<Identified, MfaError>;
}

/// A [`NativeFactor`] as a [`Factor`], under the host's limits and records.
pub struct NativeHost {
    mfa: Arc<Mfa>,
    factor: Arc<dyn NativeFactor>,
}

impl NativeHost {
    fn proven_amr(mut amr: Vec<String>) -> Vec<String> {
        if !amr.iter().any(|m| m == AMR_MFA) {
            amr.push(AMR_MFA.to_owned());
        }
        amr
    }
}

impl Factor for NativeHost {
    fn id(&self) -> &str {
        self.factor.id()
    }

    fn sends(&self) -> bool {
        false
    }

    fn locked(&self, user: &FactorUser) -> Result<Option<Limited>, MfaError> {
        self.mfa.locked(self.factor.id(), user)
    }

    fn begin(&self, user: &FactorUser, enroll: bool) -> Result<(Prompt, Outbox), MfaError> {
        Ok((self.factor.begin(user, enroll)?, Outbox::empty()))
    }

    fn verify(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: Vec<(String, String)>,
    ) -> Result<VerifyOutcome, MfaError> {
        let key = lock_key(self.factor.id(), user);
        let lock = self.mfa.lockout.check(&key)?;
        if let Some(l) = lock.locked {
            return Ok(VerifyOutcome::Locked(l));
        }
        let rejected = |message: Option<Localized>| -> Result<VerifyOutcome, MfaError> {
            match self.mfa.lockout.failed(&key)? {
                Some(l) => Ok(VerifyOutcome::Locked(l)),
                None => Ok(VerifyOutcome::Rejected { message }),
            }
        };
        match self.factor.verify(user, prompt, &answer) {
            Ok(NativeVerdict::Accepted { amr }) => {
                if lock.has_failures {
                    self.mfa.lockout.succeeded(&key)?;
                }
                self.mfa.record_use(&user.id, self.factor.id());
                Ok(VerifyOutcome::Accepted {
                    amr: Self::proven_amr(amr),
                })
            }
            Ok(NativeVerdict::Rejected(message)) => rejected(message),
            Err(e) => {
                // Still not a pass, and it counts: a failure cannot be used to probe for free.
                let _ = rejected(None)?;
                Err(e)
            }
        }
    }

    fn enroll_finish(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: Vec<(String, String)>,
    ) -> Result<(EnrollOutcome, Outbox), MfaError> {
        let outcome = match self.factor.enroll_finish(user, prompt, &answer)? {
            NativeEnrolled::Retry(msg) => EnrollOutcome::Retry(msg),
            NativeEnrolled::Done { amr } => EnrollOutcome::Done {
                amr: Self::proven_amr(amr),
                recovery_codes: self.mfa.record_enrollment(&user.id, self.factor.id())?,
            },
        };
        Ok((outcome, Outbox::empty()))
    }

    fn remove(&self, user: &UserId) -> Result<bool, MfaError> {
        let kept = self.factor.remove(user)?;
        Ok(self.mfa.remove(self.factor.id(), user)? || kept)
    }
}

impl Mfa {
    /// Registers factors built into the broker (at startup, before the service is shared).
    pub fn with_native(mut self, factors: impl IntoIterator<Item = Arc<dyn NativeFactor>>) -> Self {
        for f in factors {
            if self.registry.get(f.id()).is_some() {
                tracing::warn!(
                    factor = f.id(),
                    "a plugin has the id of a built-in factor; the built-in one is used"
                );
            }
            self.native.push(f);
        }
        self
    }

    /// Registers the first factor without a password (at startup).
    pub fn with_passwordless(mut self, f: Option<Arc<dyn Passwordless>>) -> Self {
        self.passwordless = f;
        self
    }

    /// The first factor without a password, when one is offered.
    pub fn passwordless(&self) -> Option<Arc<dyn Passwordless>> {
        self.passwordless.clone()
    }

    /// How a native factor stands for this user, as the pages list it.
    /// `times` gives when a factor was set up and last used.
    pub(super) fn native_statuses(
        &self,
        user: &FactorUser,
        times: impl Fn(&str) -> (Option<i64>, Option<i64>),
    ) -> Result<Vec<FactorStatus>, MfaError> {
        self.native
            .iter()
            .map(|f| {
                let (added, last_used) = times(f.id());
                Ok(values::FactorStatus {
                    added,
                    last_used,
                    id: f.id().to_owned(),
                    name: f.name(),
                    kind: super::host::FactorKind::Other,
                    needs_enrollment: true,
                    enrolled: f.enrolled(user)?,
                    available: true,
                    sends: false,
                    phishing_resistant: f.amr().iter().any(|m| m == crate::domain::auth::AMR_PHR),
                    repeatable: f.repeatable(),
                })
            })
            .collect()
    }
}

/// A second factor. Calls block (storage, plugin runs): run them off the async threads.
pub trait Factor: Send + Sync {
    /// The factor's id (a plugin id).
    fn id(&self) -> &str;
    /// Whether starting it may send something (an email, an SMS, a push): the journey starts
    /// such a factor only on a POST from its own page, within the per-user send rate.
    fn sends(&self) -> bool;
    /// Locked for this user after too many wrong answers (then: for how long).
    fn locked(&self, user: &FactorUser) -> Result<Option<Limited>, MfaError>;
    /// Starts a challenge (`enroll` false) or an enrolment: what to show, and what to deliver
    /// before the challenge counts as started.
    fn begin(&self, user: &FactorUser, enroll: bool) -> Result<(Prompt, Outbox), MfaError>;
    /// Checks the answer to an open challenge.
    fn verify(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: Vec<(String, String)>,
    ) -> Result<VerifyOutcome, MfaError>;
    /// Checks the answer to an open enrolment step.
    fn enroll_finish(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: Vec<(String, String)>,
    ) -> Result<(EnrollOutcome, Outbox), MfaError>;
    /// Removes the factor (and what it keeps) from a user.
    fn remove(&self, user: &UserId) -> Result<bool, MfaError>;
}

/// A WebAssembly plugin as a [`Factor`] (the host runs it sandboxed, with its grants).
pub struct PluginFactor {
    mfa: Arc<Mfa>,
    id: String,
}

impl Factor for PluginFactor {
    fn id(&self) -> &str {
        &self.id
    }

    fn sends(&self) -> bool {
        self.mfa.sends(&self.id)
    }

    fn locked(&self, user: &FactorUser) -> Result<Option<Limited>, MfaError> {
        self.mfa.locked(&self.id, user)
    }

    fn begin(&self, user: &FactorUser, enroll: bool) -> Result<(Prompt, Outbox), MfaError> {
        if !enroll && self.mfa.waits(&self.id) {
            let (wait, outbox) = self.mfa.wait_begin(&self.id, user)?;
            return Ok((Prompt::Waiting(wait), outbox));
        }
        let (form, outbox) = if enroll {
            self.mfa.enroll_begin(&self.id, user)?
        } else {
            self.mfa.challenge_begin(&self.id, user)?
        };
        Ok((Prompt::Form(form), outbox))
    }

    fn verify(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: Vec<(String, String)>,
    ) -> Result<VerifyOutcome, MfaError> {
        match prompt {
            Prompt::Waiting(wait) => self.mfa.poll(&self.id, user, wait),
            _ => self.mfa.verify(&self.id, user, answer),
        }
    }

    fn enroll_finish(
        &self,
        user: &FactorUser,
        _prompt: &Prompt,
        answer: Vec<(String, String)>,
    ) -> Result<(EnrollOutcome, Outbox), MfaError> {
        self.mfa.enroll_finish(&self.id, user, answer)
    }

    fn remove(&self, user: &UserId) -> Result<bool, MfaError> {
        self.mfa.remove(&self.id, user)
    }
}

impl Mfa {
    /// The factor `id` (`None`: no such factor is configured).
    pub fn factor(self: &Arc<Self>, id: &str) -> Option<Arc<dyn Factor>> {
        if let Some(f) = self.native.iter().find(|f| f.id() == id) {
            return Some(Arc::new(NativeHost {
                mfa: Arc::clone(self),
                factor: Arc::clone(f),
            }));
        }
        self.registry.get(id).map(|_| {
            Arc::new(PluginFactor {
                mfa: Arc::clone(self),
                id: id.to_owned(),
            }) as Arc<dyn Factor>
        })
    }
}
