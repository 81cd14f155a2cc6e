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
    fn a_pending_code_round_trips_through_state() {
        let mut pending = Pending::new("042117".into(), 1_000, 600);
        pending.attempts = 2;
        assert_eq!(decode(&encode(&pending)), Some(pending));
        assert!(matches("042117", "042117") && !matches("042117", "042118"));
    }
}
