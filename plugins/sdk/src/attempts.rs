//! Owns the factor's own limit on wrong answers: after `max` wrong answers in a row the factor
//! refuses to check any answer for `lock_seconds` (so a locked factor is no oracle), then starts
//! counting again; a right answer clears the count. The broker keeps its own attempt limit
//! across factors (`[mfa] max_attempts`); this one is per factor and per user, in `state`.

use alloc::format;
use alloc::vec::Vec;

use concierge_plugin_kit::config::minutes;

use crate::state::{Key, Stored};
use crate::{Result, Text, Verdict};

/// The wrong answers so far and, once they reached the limit, until when the factor is locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub failures: u8,
    /// Unix seconds; checking is refused before it.
    pub locked_until: i64,
}

impl Count {
    /// Whether checking is refused at `now`.
    pub fn is_locked(&self, now: i64) -> bool {
        now < self.locked_until
    }

    /// The count after one more wrong answer at `now` (a lock that ended starts a fresh count).
    pub fn after_failure(self, now: i64, max: u8, lock_seconds: i64) -> Self {
        let failures = if self.locked_until != 0 && now >= self.locked_until {
            1
        } else {
            self.failures.saturating_add(1)
        };
        Self {
            failures,
            locked_until: if failures >= max {
                now.saturating_add(lock_seconds)
            } else {
                0
            },
        }
    }
}

impl Stored for Count {
    fn put(&self, out: &mut Vec<u8>) {
        self.failures.put(out);
        self.locked_until.put(out);
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        Some(Self {
            failures: u8::take(input)?,
            locked_until: i64::take(input)?,
        })
    }
}

/// A limit on wrong answers, kept under one state key (grants `state` and `clock`). Declare it as
/// a constant: `const ATTEMPTS: Attempts = Attempts::new("attempts", 5, 15 * 60);`
pub struct Attempts {
    key: Key<Count>,
    max: u8,
    lock_seconds: i64,
}

impl Attempts {
    /// At most `max` (at least 1) wrong answers in a row, then no checking for `lock_seconds`.
    pub const fn new(key: &'static str, max: u8, lock_seconds: i64) -> Self {
        Self {
            key: Key::new(key),
            max: if max == 0 { 1 } else { max },
            lock_seconds,
        }
    }

    /// The verdict on an answer: refused without calling `check` while locked; else
    /// `Accepted` (and the count cleared) when `check()` is true, or `wrong` (counted; the
    /// answer that reaches the limit says the factor is now locked).
    pub fn verify(&self, check: impl FnOnce() -> bool, wrong: Text) -> Result<Verdict> {
        let now = crate::clock::now();
        let count = self.key.get().unwrap_or_default();
        if count.is_locked(now) {
            return Ok(Verdict::rejected(locked(count.locked_until - now)));
        }
        if check() {
            self.reset();
            return Ok(Verdict::Accepted);
        }
        let count = count.after_failure(now, self.max, self.lock_seconds);
        self.key.set(&count)?;
        Ok(Verdict::rejected(if count.is_locked(now) {
            locked(self.lock_seconds)
        } else {
            wrong
        }))
    }

    /// Forgets the wrong answers (e.g. after a new enrolment).
    pub fn reset(&self) {
        self.key.delete();
    }
}

fn locked(seconds: i64) -> Text {
    let minutes = minutes(seconds).max(1);
    Text::new(
        format!("Too many wrong answers. Try again in {minutes} minutes."),
        format!("잘못된 답을 너무 많이 입력했습니다. {minutes}분 후에 다시 시도하세요."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_locks_and_the_lock_ends() {
        let mut count = Count::default();
        for n in 1..3 {
            count = count.after_failure(1_000, 3, 600);
            assert_eq!(count.failures, n);
            assert!(!count.is_locked(1_000));
        }
        count = count.after_failure(1_000, 3, 600);
        assert!(count.is_locked(1_000) && count.is_locked(1_599));
        assert!(!count.is_locked(1_600), "the lock ends");
        let after = count.after_failure(1_600, 3, 600);
        assert_eq!(
            after,
            Count {
                failures: 1,
                locked_until: 0
            },
            "a fresh count"
        );
    }

    #[test]
    fn locked_texts_round_minutes_up() {
        assert!(locked(61).en.contains("2 minutes"));
        assert!(locked(1).ko.contains("1분"));
    }
}
