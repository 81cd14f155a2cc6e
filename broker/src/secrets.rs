//! Owns the broker's own key material: the root secret, one random 256-bit value kept in the
//! database only sealed (under the key-encryption key, `domain::kek`), from which every keyed
//! MAC the broker uses gets its own key (HKDF-SHA256, one `info` label per purpose). Nothing
//! readable from the database alone signs anything.

use std::fmt;

use ring::hkdf;

use crate::clock::{Entropy, UnixTime};
use crate::domain::kek::{KeyEncryptionKey, SealError};
use crate::storage::{StorageError, Store};

/// The name of the sealed root secret in the `secrets` table (also the AAD it is sealed under).
pub const ROOT_SECRET: &str = "root_secret.v1";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("encryption failed")]
    Seal,
    #[error("{0} cannot be decrypted: wrong key_encryption_key or corrupt data")]
    Unseal(String),
    #[error("key derivation failed")]
    Derive,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<SealError> for SecretError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Seal => Self::Seal,
            SealError::Unseal(aad) => Self::Unseal(aad),
        }
    }
}

/// What a derived key is for. Each purpose gets an unrelated key; adding one is adding a
/// variant and its label (never reuse or rename a label: that changes the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The CSRF form token (an HMAC of the browser's CSRF cookie).
    Csrf,
    /// Sealing the sign-in journeys' stored state (AES-256-GCM, the row's id hash as AAD).
    JourneyState,
    /// Retired with the client-held step tickets (ADR 11): its label is never to be reused.
    #[cfg(test)]
    RetiredBrowserBinding,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Csrf => b"concierge/csrf/v1",
            Purpose::JourneyState => b"concierge/journey-state/v1",
            #[cfg(test)]
            Purpose::RetiredBrowserBinding => b"concierge/browser-binding/v1",
        }
    }
}

/// A 256-bit key for one [`Purpose`].
#[derive(Clone)]
pub struct DerivedKey([u8; 32]);

impl DerivedKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKey(<redacted>)")
    }
}

/// The root secret, opened. Lives in memory only.
pub struct RootSecret([u8; 32]);

impl fmt::Debug for RootSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootSecret(<redacted>)")
    }
}

impl RootSecret {
    /// The root secret every instance shares: the sealed row in `secrets`, created (sealed
    /// under `kek`) by whichever instance starts first.
    pub fn load_or_create(
        store: &dyn Store,
        kek: &KeyEncryptionKey,
        entropy: &dyn Entropy,
        now: UnixTime,
    ) -> Result<Self, SecretError> {
        let candidate = kek.seal(ROOT_SECRET, &entropy.bytes32(), entropy)?;
        let sealed = store.secret_or_insert(ROOT_SECRET, &candidate, now)?;
        Self::open(kek, &sealed)
    }

    /// Replaces the stored root secret with a new random one (every derived key changes; pages
    /// and step values issued before stop working once each instance has restarted).
    pub fn rotate(
        store: &dyn Store,
        kek: &KeyEncryptionKey,
        entropy: &dyn Entropy,
        now: UnixTime,
    ) -> Result<Self, SecretError> {
        let sealed = kek.seal(ROOT_SECRET, &entropy.bytes32(), entropy)?;
        store.replace_secret(ROOT_SECRET, &sealed, now)?;
        Self::open(kek, &sealed)
    }

    fn open(kek: &KeyEncryptionKey, sealed: &[u8]) -> Result<Self, SecretError> {
        let plain = kek.open(ROOT_SECRET, sealed)?;
        <[u8; 32]>::try_from(plain.as_slice())
            .map(Self)
            .map_err(|_| SecretError::Unseal(ROOT_SECRET.to_owned()))
    }

    /// HKDF-SHA256 (RFC 5869) of the root secret with the purpose's label as `info`.
    pub fn derive(&self, purpose: Purpose) -> Result<DerivedKey, SecretError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"concierge root secret").extract(&self.0);
        let mut out = [0u8; 32];
        prk.expand(&[purpose.label()], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .map_err(|_| SecretError::Derive)?;
        Ok(DerivedKey(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_unrelated_keys_and_derivation_is_stable() {
        let root = RootSecret([1; 32]);
        let csrf = root.derive(Purpose::Csrf).unwrap();
        let binding = root.derive(Purpose::RetiredBrowserBinding).unwrap();
        assert_ne!(csrf.bytes(), binding.bytes());
        assert_ne!(csrf.bytes(), &[1; 32]);
        assert_eq!(root.derive(Purpose::Csrf).unwrap().bytes(), csrf.bytes());
        assert_ne!(
            RootSecret([2; 32]).derive(Purpose::Csrf).unwrap().bytes(),
            csrf.bytes()
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let root = RootSecret([0xab; 32]);
        let shown = format!(
            "{root:?} {:?} {:?}",
            root.derive(Purpose::Csrf).unwrap(),
            KeyEncryptionKey::new([0xab; 32])
        );
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
    }
}
