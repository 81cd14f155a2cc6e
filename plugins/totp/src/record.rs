//! Owns a user's TOTP secret as the plugin keeps it in host state (the active one, and a pending
//! one during enrolment) and the check of a typed code against it: one step of skew either way,
//! and no step accepted twice.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Format version of the stored bytes.
const VERSION: u8 = 1;
/// Seconds per time step (RFC 6238's default; what every authenticator app assumes).
pub const PERIOD: u64 = 30;
/// Steps of clock skew accepted either way.
const SKEW: u16 = 1;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;

/// A TOTP secret with the parameters it was enrolled with.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub algorithm: Algorithm,
    pub digits: u8,
    /// The last time step a code was accepted for (0: none yet).
    pub last_step: u64,
    secret: Vec<u8>,
}

impl core::fmt::Debug for Record {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Record")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("last_step", &self.last_step)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What checking a code found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The code is right for this time step (store it as `last_step`).
    Accepted {
        step: u64,
    },
    Wrong,
    /// The code is right but its step, or a later one, was already used.
    Replayed,
}

impl Record {
    /// A record for a fresh secret, or an error if the secret or parameters are unusable.
    pub fn new(algorithm: Algorithm, digits: u8, secret: Vec<u8>) -> Result<Self, String> {
        let record = Self {
            algorithm,
            digits,
            last_step: 0,
            secret,
        };
        record.totp()?;
        Ok(record)
    }

    /// The secret in base32 (RFC 4648, no padding), for typing into an app by hand.
    pub fn secret_base32(&self) -> String {
        Secret::from(self.secret.as_slice()).to_base32()
    }

    /// The bytes kept in state: version, algorithm, digits, last step (big-endian), secret.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(11 + self.secret.len());
        bytes.push(VERSION);
        bytes.push(match self.algorithm {
            Algorithm::SHA256 => 2,
            _ => 1,
        });
        bytes.push(self.digits);
        bytes.extend_from_slice(&self.last_step.to_be_bytes());
        bytes.extend_from_slice(&self.secret);
        bytes
    }

    /// The record stored as `bytes`; `None` if they are not a usable one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let [version, algorithm, digits, rest @ ..] = bytes else {
            return None;
        };
        if *version != VERSION || rest.len() < 8 {
            return None;
        }
        let algorithm = match algorithm {
            1 => Algorithm::SHA1,
            2 => Algorithm::SHA256,
            _ => return None,
        };
        let (last_step, secret) = rest.split_at(8);
        let mut record = Self::new(algorithm, *digits, secret.to_vec()).ok()?;
        record.last_step = u64::from_be_bytes(last_step.try_into().ok()?);
        Some(record)
    }

    /// Checks a code (exactly `digits` ASCII digits) at `now` (Unix seconds).
    pub fn check(&self, code: &str, now: i64) -> Result<Check, String> {
        let now = u64::try_from(now).map_err(|_| "the clock is before 1970".to_string())?;
        Ok(match self.totp()?.check(code, now) {
            None => Check::Wrong,
            Some(step) if step <= self.last_step => Check::Replayed,
            Some(step) => Check::Accepted { step },
        })
    }

    fn totp(&self) -> Result<Totp, String> {
        if !matches!(self.digits, 6 | 8) {
            return Err("digits must be 6 or 8".to_string());
        }
        Builder::new()
            .with_algorithm(self.algorithm)
            .with_digits(self.digits)
            .with_skew(SKEW)
            .with_step_duration(PERIOD)
            .with_secret(self.secret.as_slice())
            .build()
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc(algorithm: Algorithm, secret: &[u8]) -> Record {
        Record::new(algorithm, 8, secret.to_vec()).unwrap()
    }

    #[test]
    fn rfc_6238_test_vectors() {
        let sha1 = rfc(Algorithm::SHA1, b"12345678901234567890");
        assert_eq!(sha1.check("94287082", 59), Ok(Check::Accepted { step: 1 }));
        assert_eq!(
            sha1.check("07081804", 1_111_111_109),
            Ok(Check::Accepted { step: 37_037_036 })
        );
        assert_eq!(
            sha1.check("65353130", 20_000_000_000),
            Ok(Check::Accepted { step: 666_666_666 })
        );
        let sha256 = rfc(Algorithm::SHA256, b"12345678901234567890123456789012");
        assert_eq!(
            sha256.check("46119246", 59),
            Ok(Check::Accepted { step: 1 })
        );
        assert_eq!(
            sha256.check("68084774", 1_111_111_109),
            Ok(Check::Accepted { step: 37_037_036 })
        );
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let sha1 = rfc(Algorithm::SHA1, b"12345678901234567890");
        // "07081804" is the code of step 37_037_036 (T = 1_111_111_109).
        let start = 37_037_036 * 30;
        assert!(matches!(
            sha1.check("07081804", start - 30),
            Ok(Check::Accepted { .. })
        ));
        assert!(matches!(
            sha1.check("07081804", start + 59),
            Ok(Check::Accepted { .. })
        ));
        assert_eq!(sha1.check("07081804", start - 31), Ok(Check::Wrong));
        assert_eq!(sha1.check("07081804", start + 60), Ok(Check::Wrong));
    }

    #[test]
    fn a_used_step_or_an_earlier_one_is_refused() {
        let mut sha1 = rfc(Algorithm::SHA1, b"12345678901234567890");
        sha1.last_step = 37_037_036;
        assert_eq!(sha1.check("07081804", 1_111_111_109), Ok(Check::Replayed));
        sha1.last_step = 37_037_037;
        assert_eq!(
            sha1.check("07081804", 1_111_111_109 + 30),
            Ok(Check::Replayed)
        );
    }

    #[test]
    fn wrong_or_malformed_codes_are_wrong() {
        let sha1 = rfc(Algorithm::SHA1, b"12345678901234567890");
        assert_eq!(sha1.check("94287083", 59), Ok(Check::Wrong));
        assert_eq!(sha1.check("9428708", 59), Ok(Check::Wrong));
        assert_eq!(sha1.check("+4287082", 59), Ok(Check::Wrong));
        assert!(sha1.check("94287082", -1).is_err());
    }

    #[test]
    fn round_trips_through_bytes_and_refuses_garbage() {
        let mut record = Record::new(Algorithm::SHA256, 6, [7u8; SECRET_LEN].to_vec()).unwrap();
        record.last_step = 123_456;
        assert_eq!(Record::decode(&record.encode()), Some(record.clone()));
        let mut bytes = record.encode();
        bytes[1] = 9;
        assert_eq!(Record::decode(&bytes), None, "unknown algorithm");
        assert_eq!(
            Record::decode(&record.encode()[..12]),
            None,
            "secret too short"
        );
        assert_eq!(Record::decode(&[]), None);
        assert_eq!(Record::decode(&[1, 1, 6]), None);
    }

    #[test]
    fn short_secrets_and_odd_digit_counts_are_refused() {
        assert!(Record::new(Algorithm::SHA1, 6, [1u8; 15].to_vec()).is_err());
        assert!(Record::new(Algorithm::SHA1, 7, [1u8; 20].to_vec()).is_err());
    }

    #[test]
    fn base32_of_the_secret_and_a_redacted_debug() {
        let record = Record::new(Algorithm::SHA1, 6, b"12345678901234567890".to_vec()).unwrap();
        assert_eq!(record.secret_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert!(!alloc::format!("{record:?}").contains("GEZD"));
        assert!(!alloc::format!("{record:?}").contains("49, 50"));
    }
}
