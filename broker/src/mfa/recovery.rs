//! Owns recovery codes (ADR 0009): handing out a fresh set to show once, stored as hashes, and
//! spending one (single use) under the same attempt limit as a factor.

use sha2::{Digest, Sha256};

use super::error::MfaError;
use super::values::{FactorUser, VerifyOutcome};
use super::{Mfa, RECOVERY_ID, lock_key};
use crate::clock::Entropy;
use crate::domain::auth::AMR_MFA;

impl Mfa {
    /// Hands out fresh recovery codes (replacing any), returning them to show once. Blocking.
    pub fn new_recovery_codes(
        &self,
        user: &crate::domain::UserId,
    ) -> Result<Vec<String>, MfaError> {
        let n = self.settings.recovery_codes;
        let mut codes = Vec::new();
        let mut hashes = Vec::new();
        for _ in 0..n {
            let code = recovery_code(self.entropy.as_ref());
            hashes.push(hash_recovery(&code));
            codes.push(code);
        }
        if n > 0 {
            self.store
                .replace_recovery_codes(user, &hashes, self.clock.now())?;
        }
        Ok(codes)
    }

    pub fn recovery_codes_left(&self, user: &crate::domain::UserId) -> Result<i64, MfaError> {
        Ok(self.store.recovery_codes_left(user)?)
    }

    /// Checks a recovery code (single use), under the same attempt limit as a factor. Blocking.
    pub fn verify_recovery(
        &self,
        user: &FactorUser,
        code: &str,
    ) -> Result<VerifyOutcome, MfaError> {
        let key = lock_key(RECOVERY_ID, user);
        let lock = self.lockout.check(&key)?;
        if let Some(l) = lock.locked {
            return Ok(VerifyOutcome::Locked(l));
        }
        let hash = hash_recovery(&normalize_recovery(code));
        if self
            .store
            .use_recovery_code(&user.id, &hash, self.clock.now())?
        {
            if lock.has_failures {
                self.lockout.succeeded(&key)?;
            }
            return Ok(VerifyOutcome::Accepted {
                amr: vec![AMR_MFA.to_owned()],
            });
        }
        match self.lockout.failed(&key)? {
            Some(l) => Ok(VerifyOutcome::Locked(l)),
            None => Ok(VerifyOutcome::Rejected { message: None }),
        }
    }
}

/// A recovery code: 10 characters of an unambiguous alphabet, shown as `xxxxx-xxxxx`.
fn recovery_code(entropy: &dyn Entropy) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut out = String::with_capacity(11);
    let mut i = 0;
    while i < 10 {
        let mut b = [0u8; 1];
        entropy.fill(&mut b);
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - (256 % ALPHABET.len());
        if usize::from(b[0]) >= limit {
            continue;
        }
        if i == 5 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(b[0]) % ALPHABET.len()]));
        i += 1;
    }
    out
}

fn normalize_recovery(code: &str) -> String {
    let compact: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if compact.len() == 10 {
        format!("{}-{}", &compact[..5], &compact[5..])
    } else {
        compact
    }
}

fn hash_recovery(code: &str) -> [u8; 32] {
    Sha256::digest(format!("concierge-recovery:{code}").as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_normalised_before_hashing() {
        let e = crate::clock::SeededEntropy::new(7);
        let code = recovery_code(&e);
        assert_eq!(code.len(), 11);
        assert_eq!(&code[5..6], "-");
        assert_eq!(
            normalize_recovery(&code.to_uppercase().replace('-', " ")),
            code
        );
        assert_ne!(recovery_code(&e), code);
    }
}
