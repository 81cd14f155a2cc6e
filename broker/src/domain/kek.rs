//! Owns the key-encryption key: the 256-bit AES-256-GCM key that seals everything secret the
//! broker stores (signing keys, plugin state, the root secret), redacted in `Debug`.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::clock::Entropy;

/// Why a value was not sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("encryption failed")]
    Seal,
    #[error("{0} cannot be decrypted: wrong key_encryption_key or corrupt data")]
    Unseal(String),
}

/// The 256-bit key that encrypts private keys, plugin state and the root secret at rest.
pub struct KeyEncryptionKey([u8; 32]);

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

impl KeyEncryptionKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn aead(&self) -> Result<LessSafeKey, SealError> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| SealError::Seal)
    }

    /// `nonce || ciphertext || tag`, bound to `aad` (the record the value belongs to, so a
    /// sealed value moved to another record does not open).
    pub fn seal(
        &self,
        aad: &str,
        plain: &[u8],
        entropy: &dyn Entropy,
    ) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        entropy.fill(&mut nonce);
        let mut buf = plain.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = || SealError::Unseal(aad.to_owned());
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = ct.to_vec();
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OsEntropy;

    #[test]
    fn sealing_binds_the_record_and_needs_the_key() {
        let kek = KeyEncryptionKey::new([7; 32]);
        let sealed = kek.seal("a", b"plain", &OsEntropy).unwrap();
        assert_eq!(kek.open("a", &sealed).unwrap(), b"plain");
        assert!(kek.open("b", &sealed).is_err());
        assert!(KeyEncryptionKey::new([8; 32]).open("a", &sealed).is_err());
        assert!(kek.open("a", &sealed[..3]).is_err());
    }
}
