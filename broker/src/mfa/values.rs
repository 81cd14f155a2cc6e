//! Owns the values the MFA service takes and gives: who a call is about ([`FactorUser`]), a
//! factor as the pages list it ([`FactorStatus`]) and what verifying or enrolling came to.

use super::host::{self, Form, Localized};
use crate::ratelimit::Limited;

/// Who a plugin call is about.
#[derive(Debug, Clone)]
pub struct FactorUser {
    pub id: crate::domain::UserId,
    pub email: String,
    pub locale: crate::domain::Locale,
    /// The journey needs a hardware key the operator trusts (`mfa = "hardware_key"`): a passkey
    /// factor counts, offers and registers only such keys. Plugins never see it.
    pub hardware_only: bool,
    /// What the user's upstream kept at their last sign-in through it (`keep`): a plugin sees
    /// only the names it is granted (`claims`). Empty for a password sign-in.
    pub claims: std::collections::BTreeMap<String, String>,
}

impl FactorUser {
    pub(super) fn wit(&self) -> host::User {
        host::User {
            id: self.id.as_str().to_owned(),
            email: self.email.clone(),
            locale: self.locale.as_str().to_owned(),
        }
    }
}

/// A factor as the pages list it for one user.
#[derive(Clone)]
pub struct FactorStatus {
    pub id: String,
    pub name: Localized,
    pub kind: host::FactorKind,
    pub needs_enrollment: bool,
    pub enrolled: bool,
    /// Configured and enrolled, but its plugin cannot run now.
    pub available: bool,
    /// When the user set it up, and when it last proved a sign-in (factors that need an
    /// enrolment).
    pub added: Option<crate::clock::UnixTime>,
    pub last_used: Option<crate::clock::UnixTime>,
    /// Its challenge may send something (an email, an SMS; later a push): it starts only on a
    /// POST from the broker's own page, never on a GET.
    pub sends: bool,
    /// Its pass proves phishing resistance (`phr`: a built-in WebAuthn factor), the only kind
    /// that reaches `urn:concierge:loa:3`.
    pub phishing_resistant: bool,
    /// The user may set up more than one (passkeys: one per device), from the account page.
    pub repeatable: bool,
}

/// What checking an answer found.
#[derive(Debug, Clone)]
pub enum VerifyOutcome {
    /// The factor is proven; these amr values go into the session.
    Accepted { amr: Vec<String> },
    /// Wrong, expired or reused (the message, if the plugin gave one).
    Rejected { message: Option<Localized> },
    /// Too many wrong answers: the factor is locked for the user.
    Locked(Limited),
    /// A waiting factor has no answer yet.
    Pending,
    /// A waiting factor's wait ended unanswered.
    Expired,
}

/// The result of one enrolment step.
#[derive(Debug, Clone)]
pub enum EnrollOutcome {
    Done {
        /// The methods the session gains: setting the factor up proved it.
        amr: Vec<String>,
        /// Recovery codes handed out now (first enrolment only), to show once.
        recovery_codes: Vec<String>,
    },
    Next(Form),
    /// The answer was not accepted; the message is shown on the same page.
    Retry(Localized),
}
