//! Owns the one interface the sign-in journey's second-factor step talks to ([`Factor`]): start a
//! challenge or an enrolment, check the answer, remove it from a user. Today's WebAssembly plugins
//! are one implementation ([`PluginFactor`], through the plugin host); a native factor (passkeys,
//! issue #19) is another, with a [`Prompt`] of its own rendered by its own view.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::host::{Field, Form};
use super::{EnrollOutcome, FactorUser, Mfa, MfaError, Outbox, VerifyOutcome};
use crate::domain::UserId;
use crate::ratelimit::Limited;

/// What a factor shows the user while its challenge or enrolment is open (kept in the journey
/// between the pages).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Prompt {
    /// A plugin's form: fields, a text, a QR code or a secret to copy.
    Form(Form),
}

impl Prompt {
    /// The fields the answer may carry (anything else posted is dropped).
    pub fn fields(&self) -> &[Field] {
        match self {
            Prompt::Form(f) => &f.fields,
        }
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
        _prompt: &Prompt,
        answer: Vec<(String, String)>,
    ) -> Result<VerifyOutcome, MfaError> {
        self.mfa.verify(&self.id, user, answer)
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
        self.registry.get(id).map(|_| {
            Arc::new(PluginFactor {
                mfa: Arc::clone(self),
                id: id.to_owned(),
            }) as Arc<dyn Factor>
        })
    }
}
