//! Owns waiting factors (feature `waiting`, contract 0.2 `waiting`): a factor that starts an
//! approval elsewhere (a push to a phone) and is polled until it is approved or refused.
//! Implement [`Waiting`] beside [`crate::Factor`] (whose `challenge` and `verify` then need no
//! code); `export!` exports both. docs/plugins.md, "Waiting factors".

use alloc::string::String;

use crate::{Result, Text, User};

pub use crate::bindings::waiting::{Pending, PollState as Poll};

/// A waiting factor's challenge.
pub trait Waiting {
    /// Starts the approval (send the request) and says what the page shows while it waits.
    fn wait_begin(user: &User) -> Result<Pending>;

    /// Asks whether the approval `correlation` names was answered: `Poll::Waiting`,
    /// `Poll::Accepted`, or `Poll::Rejected(text)` (counts as a wrong answer).
    fn poll(user: &User, correlation: &str) -> Result<Poll>;
}

impl Pending {
    /// A wait whose page says `intro`, polled with `correlation` (at most 512 bytes, never
    /// shown): every 2 s, expiring after 60 s, without a number.
    pub fn new(intro: Text, correlation: impl Into<String>) -> Self {
        Self {
            intro,
            number: None,
            correlation: correlation.into(),
            poll_every: 2,
            expires_in: 60,
        }
    }

    /// Number matching: the page shows `number` (1 to 8 digits); the approver must pick it.
    pub fn number(mut self, number: impl Into<String>) -> Self {
        self.number = Some(number.into());
        self
    }

    /// Seconds between polls (2 to 30) and until the wait expires (10 to 300).
    pub fn timing(mut self, poll_every: u32, expires_in: u32) -> Self {
        self.poll_every = poll_every;
        self.expires_in = expires_in;
        self
    }
}

impl<F: crate::Factor + Waiting> crate::bindings::waiting::Guest for crate::Adapter<F> {
    fn wait_begin(user: User) -> Result<Pending> {
        F::wait_begin(&user)
    }

    fn poll(user: User, correlation: String) -> Result<Poll> {
        F::poll(&user, &correlation)
    }
}
