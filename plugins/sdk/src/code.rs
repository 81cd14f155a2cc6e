//! Owns one-time codes for factors that send one (email, SMS, an app of your own): drawing a
//! uniform code from the host's `random`, comparing in constant time, and the pending code kept
//! in state with its expiry and wrong answers (`Pending`, from concierge-plugin-kit, which the
//! first-party plugins use too). Also phone numbers (E.164) and masking for display.

use alloc::string::String;
use alloc::vec::Vec;

pub use concierge_plugin_kit::challenge::{Challenge as Pending, Outcome};
pub use concierge_plugin_kit::email::mask as mask_email;
pub use concierge_plugin_kit::otp::codes_match as matches;
pub use concierge_plugin_kit::phone::{mask as mask_phone, parse_e164 as parse_phone};

use crate::state::Stored;
use crate::{Error, Result};

/// A uniform `digits`-digit code (1 to 9 digits, leading zeros kept) from the host's `random`.
pub fn generate(digits: u32) -> Result<String> {
    concierge_plugin_kit::otp::draw(crate::random::bytes, digits)
        .ok_or_else(|| Error::internal("random: no usable bytes for a code"))
}

/// A fresh pending code of `digits` digits, issued now (grant `clock`) and valid `ttl_seconds`.
/// Check an answer with `pending.check(&typed, clock::now(), max_attempts)`: it works once,
/// never after its expiry, and burns after `max_attempts` wrong answers.
pub fn issue(digits: u32, ttl_seconds: i64) -> Result<Pending> {
    Ok(Pending::new(
        generate(digits)?,
        crate::clock::now(),
        ttl_seconds,
    ))
}

/// Number matching (a push approval): `count` distinct two-digit numbers from the host's
/// `random`, and which of them the sign-in page shows (the approver must pick it). Returns
/// `(shown, all)`, `all` in the order the approver sees them.
pub fn number_match(count: usize) -> (String, Vec<String>) {
    let (right, all) = pick_numbers(&crate::random::bytes(32), count.clamp(2, 9));
    (
        alloc::format!("{right}"),
        all.iter().map(|n| alloc::format!("{n}")).collect(),
    )
}

fn pick_numbers(bytes: &[u8], count: usize) -> (u8, Vec<u8>) {
    let mut all: Vec<u8> = Vec::new();
    for n in bytes.iter().map(|b| 10 + b % 90) {
        if all.len() < count && !all.contains(&n) {
            all.push(n);
        }
    }
    for n in 10u8..100 {
        if all.len() < count && !all.contains(&n) {
            all.push(n);
        }
    }
    let right = all.first().copied().unwrap_or(10);
    let len = all.len().max(1);
    all.rotate_left(usize::from(bytes.last().copied().unwrap_or(0)) % len);
    (right, all)
}

impl Stored for Pending {
    fn put(&self, out: &mut Vec<u8>) {
        self.encode().put(out);
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        Pending::decode(&Vec::take(input)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{decode, encode};

    #[test]
    fn number_matching_draws_distinct_two_digit_numbers_the_shown_one_among_them() {
        for seed in 0u8..=255 {
            let bytes: Vec<u8> = (0..32u8)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7)))
                .collect();
            for count in [2, 3, 5] {
                let (right, all) = pick_numbers(&bytes, count);
                assert_eq!(all.len(), count);
                assert!(all.contains(&right) && all.iter().all(|n| (10..=99).contains(n)));
                let mut unique = all.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), count, "{all:?}");
            }
        }
        // Few distinct bytes still give distinct numbers.
        let (right, all) = pick_numbers(&[0; 32], 3);
        assert_eq!((right, all.len()), (10, 3));
    }

    #[test]
    fn a_pending_code_round_trips_through_state() {
        let mut pending = Pending::new("042117".into(), 1_000, 600);
        pending.attempts = 2;
        assert_eq!(decode(&encode(&pending)), Some(pending));
        assert!(matches("042117", "042117") && !matches("042117", "042118"));
    }
}
