//! Owns secrets the user types and the factor must recognise later (a PIN, an answer to a
//! question): kept as a salted, iterated SHA-256 hash, never as typed, and compared in constant
//! time.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Result;
use crate::state::Stored;

/// Bytes of salt per hash.
pub const SALT_LEN: usize = 16;
/// Hash rounds: slows down guessing from a stolen state a little; a whole `verify` of the
/// security-question example uses about 9.4 million fuel (the manifest's default is 50 million). Low-entropy secrets rely mostly on the
/// attempt limits (the host's and [`crate::attempts::Attempts`]), not on hashing in 100 ms.
const ROUNDS: u32 = 1_000;

/// The salted hash of a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Hashed {
    salt: [u8; SALT_LEN],
    hash: [u8; 32],
}

impl core::fmt::Debug for Hashed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Hashed(<redacted>)")
    }
}

impl Hashed {
    /// Hashes `secret` with a fresh salt from the host's `random` (grant `random`).
    pub fn new(secret: &str) -> Result<Self> {
        Ok(Self::with_salt(secret, crate::random::array()?))
    }

    /// Hashes `secret` with `salt` (pure: for tests, or a salt of your own).
    pub fn with_salt(secret: &str, salt: [u8; SALT_LEN]) -> Self {
        Self {
            salt,
            hash: hash(secret, &salt),
        }
    }

    /// Whether `typed` is the secret, compared in constant time.
    pub fn matches(&self, typed: &str) -> bool {
        hash(typed, &self.salt).ct_eq(&self.hash).into()
    }
}

impl Stored for Hashed {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.hash);
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        if input.len() < SALT_LEN + 32 {
            return None;
        }
        let (salt, rest) = input.split_at(SALT_LEN);
        let (hash, rest) = rest.split_at(32);
        *input = rest;
        Some(Self {
            salt: salt.try_into().ok()?,
            hash: hash.try_into().ok()?,
        })
    }
}

fn hash(secret: &str, salt: &[u8]) -> [u8; 32] {
    let mut digest: [u8; 32] = Sha256::new()
        .chain_update(salt)
        .chain_update(secret.as_bytes())
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
    use crate::state::{decode, encode};

    #[test]
    fn matches_only_the_secret_it_was_made_from() {
        let stored = Hashed::with_salt("246810", [7; SALT_LEN]);
        assert!(stored.matches("246810"));
        assert!(!stored.matches("246811"));
        assert!(!stored.matches(""));
        let other_salt = Hashed::with_salt("246810", [8; SALT_LEN]);
        assert_ne!(stored, other_salt, "salted");
    }

    #[test]
    fn round_trips_and_does_not_show_itself() {
        let stored = Hashed::with_salt("seoul", [1; SALT_LEN]);
        let decoded: Option<Hashed> = decode(&encode(&stored));
        assert!(decoded.is_some_and(|h| h.matches("seoul")));
        assert!(decode::<Hashed>(&encode(&stored)[..20]).is_none());
        assert_eq!(alloc::format!("{stored:?}"), "Hashed(<redacted>)");
    }
}
