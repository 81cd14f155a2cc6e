//! Owns the PIN itself: what a valid PIN is, and how it is kept (salted, iterated SHA-256) and
//! checked (in constant time). Pure: no host calls, so `cargo test` covers it.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of salt per PIN.
pub const SALT_LEN: usize = 16;
/// Hash rounds: slows down guessing from a stolen state a little while costing a few million
/// fuel per check (the manifest's `fuel` budget must cover it). A real knowledge factor would
/// rather rely on the broker's attempt limits than on hashing inside a 100 ms budget.
const ROUNDS: u32 = 1_000;
/// Format version of the stored bytes.
const VERSION: u8 = 1;

/// Whether `typed` is an acceptable PIN: `min_len..=12` ASCII digits.
pub fn is_valid(typed: &str, min_len: usize) -> bool {
    (min_len..=12).contains(&typed.len()) && typed.bytes().all(|b| b.is_ascii_digit())
}

/// A stored PIN: salt and hash.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPin {
    salt: [u8; SALT_LEN],
    hash: [u8; 32],
}

impl StoredPin {
    /// Hashes `pin` with `salt` (random bytes from the host).
    pub fn new(pin: &str, salt: [u8; SALT_LEN]) -> Self {
        Self {
            salt,
            hash: hash(pin, &salt),
        }
    }

    /// Whether `typed` is the PIN, compared in constant time.
    pub fn matches(&self, typed: &str) -> bool {
        hash(typed, &self.salt).ct_eq(&self.hash).into()
    }

    /// The bytes kept in state: version, salt, hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + SALT_LEN + 32);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.salt);
        bytes.extend_from_slice(&self.hash);
        bytes
    }

    /// The PIN stored as `bytes`, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || rest.len() != SALT_LEN + 32 {
            return None;
        }
        let (salt, hash) = rest.split_at(SALT_LEN);
        Some(Self {
            salt: salt.try_into().ok()?,
            hash: hash.try_into().ok()?,
        })
    }
}

fn hash(pin: &str, salt: &[u8]) -> [u8; 32] {
    let mut digest: [u8; 32] = Sha256::new()
        .chain_update(salt)
        .chain_update(pin.as_bytes())
        .finalize()
        .into();
    for _ in 1..ROUNDS {
        digest = Sha256::new()
            .chain_update(digest)
            .chain_update(salt)
            .finalize()
            .into();
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_pins_are_digits_of_the_right_length() {
        assert!(is_valid("123456", 6));
        assert!(is_valid("123456789012", 6));
        assert!(!is_valid("12345", 6));
        assert!(!is_valid("1234567890123", 6));
        assert!(!is_valid("12345a", 6));
        assert!(is_valid("1234", 4));
    }

    #[test]
    fn matches_only_the_pin_it_was_made_from() {
        let stored = StoredPin::new("246810", [7; SALT_LEN]);
        assert!(stored.matches("246810"));
        assert!(!stored.matches("246811"));
        assert!(!stored.matches(""));
        let other_salt = StoredPin::new("246810", [8; SALT_LEN]);
        assert_ne!(stored.encode(), other_salt.encode(), "salted");
    }

    #[test]
    fn round_trips_through_bytes() {
        let stored = StoredPin::new("246810", [7; SALT_LEN]);
        let decoded = StoredPin::decode(&stored.encode());
        assert!(decoded.is_some_and(|pin| pin.matches("246810")));
        assert!(StoredPin::decode(&stored.encode()[..20]).is_none());
        assert!(StoredPin::decode(&[]).is_none());
    }
}
