//! Owns a pending one-time-code challenge as the plugin keeps it in host state: the code, when it
//! expires, how many wrong answers it has had; and the rules for checking an answer against it.

use alloc::string::String;
use alloc::vec::Vec;

use crate::otp::codes_match;

/// Format version of the stored bytes.
const VERSION: u8 = 1;

/// A code sent to the user and not used yet.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    pub code: String,
    /// Unix seconds when the code was made (and sent).
    pub issued_at: i64,
    /// Unix seconds at and after which the code no longer works.
    pub expires_at: i64,
    /// Wrong answers so far.
    pub attempts: u8,
}

impl core::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Challenge")
            .field("code", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// What checking an answer found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Wrong,
    Expired,
    /// The last allowed wrong answer, or an answer after it: the code is gone.
    TooManyAttempts,
}

impl Challenge {
    /// A fresh challenge for `code`, valid for `ttl_seconds` from `now`.
    pub fn new(code: String, now: i64, ttl_seconds: i64) -> Self {
        Self {
            code,
            issued_at: now,
            expires_at: now.saturating_add(ttl_seconds),
            attempts: 0,
        }
    }

    /// Whether a new code may be sent at `now`, `cooldown` seconds after this one was. Until
    /// then the page is shown again without sending, so reloading it cannot flood the user.
    pub fn may_resend(&self, now: i64, cooldown: i64) -> bool {
        now >= self.expires_at
            || now >= self.issued_at.saturating_add(cooldown)
            || now < self.issued_at
    }

    /// The bytes kept in state: version, issue time and expiry (big-endian), attempts, code.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(18 + self.code.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.issued_at.to_be_bytes());
        bytes.extend_from_slice(&self.expires_at.to_be_bytes());
        bytes.push(self.attempts);
        bytes.extend_from_slice(self.code.as_bytes());
        bytes
    }

    /// The challenge stored as `bytes`; `None` if they are not one (treat as no challenge).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || rest.len() < 17 {
            return None;
        }
        let (issued, rest) = rest.split_at(8);
        let (expiry, rest) = rest.split_at(8);
        let issued_at = i64::from_be_bytes(issued.try_into().ok()?);
        let expires_at = i64::from_be_bytes(expiry.try_into().ok()?);
        let (&attempts, code) = rest.split_first()?;
        let code = core::str::from_utf8(code).ok()?;
        if code.is_empty() {
            return None;
        }
        Some(Self {
            code: code.into(),
            issued_at,
            expires_at,
            attempts,
        })
    }

    /// Checks a typed (normalised) code at `now`. Returns the outcome and what to keep in state
    /// afterwards: `None` means delete it. A code works once, never after `expires_at`, and not
    /// after `max_attempts` wrong answers.
    pub fn check(mut self, typed: &str, now: i64, max_attempts: u8) -> (Outcome, Option<Self>) {
        if now >= self.expires_at {
            return (Outcome::Expired, None);
        }
        if self.attempts >= max_attempts {
            return (Outcome::TooManyAttempts, None);
        }
        if codes_match(&self.code, typed) {
            return (Outcome::Accepted, None);
        }
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts >= max_attempts {
            (Outcome::TooManyAttempts, None)
        } else {
            (Outcome::Wrong, Some(self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;

    fn challenge() -> Challenge {
        Challenge::new("042117".to_owned(), 1_000, 600)
    }

    #[test]
    fn round_trips_through_bytes() {
        let mut c = challenge();
        c.attempts = 3;
        assert_eq!(Challenge::decode(&c.encode()), Some(c));
    }

    #[test]
    fn garbage_is_no_challenge() {
        assert_eq!(Challenge::decode(&[]), None);
        assert_eq!(
            Challenge::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'1']),
            None
        );
        assert_eq!(
            Challenge::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None,
            "empty code"
        );
        assert_eq!(Challenge::decode(&[1, 0, 0]), None);
        assert_eq!(
            Challenge::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            None
        );
    }

    #[test]
    fn the_right_code_before_expiry_is_accepted_once() {
        let (outcome, keep) = challenge().check("042117", 1_599, 5);
        assert_eq!(outcome, Outcome::Accepted);
        assert_eq!(keep, None, "single use: the challenge is deleted");
    }

    #[test]
    fn expiry_is_exclusive() {
        let (outcome, keep) = challenge().check("042117", 1_600, 5);
        assert_eq!(outcome, Outcome::Expired);
        assert_eq!(keep, None);
    }

    #[test]
    fn wrong_answers_count_and_the_last_one_burns_the_code() {
        let (outcome, keep) = challenge().check("000000", 1_001, 3);
        assert_eq!(outcome, Outcome::Wrong);
        let keep = keep.map(|c| (c.attempts, c.code));
        assert_eq!(keep, Some((1, "042117".to_owned())));
        let mut c = challenge();
        c.attempts = 2;
        let (outcome, keep) = c.check("000000", 1_001, 3);
        assert_eq!(outcome, Outcome::TooManyAttempts);
        assert_eq!(keep, None);
        let mut c = challenge();
        c.attempts = 3;
        let (outcome, _) = c.check("042117", 1_001, 3);
        assert_eq!(
            outcome,
            Outcome::TooManyAttempts,
            "even the right code, once burnt"
        );
    }

    #[test]
    fn resending_waits_for_the_cooldown_unless_the_code_expired() {
        let c = challenge();
        assert!(!c.may_resend(1_000, 30));
        assert!(!c.may_resend(1_029, 30));
        assert!(c.may_resend(1_030, 30));
        assert!(c.may_resend(1_600, 10_000), "expired");
        assert!(c.may_resend(999, 30), "clock went back");
    }

    #[test]
    fn debug_does_not_show_the_code() {
        let shown = alloc::format!("{:?}", challenge());
        assert!(!shown.contains("042117"), "{shown}");
    }
}
