//! Owns the broker's own key material: the root secret, one random 256-bit value kept in the
//! database only sealed (under the key-encryption key, `domain::kek`), from which every keyed
//! MAC the broker uses gets its own key (HKDF-SHA256, one `info` label per purpose). Nothing
//! readable from the database alone signs anything.

use std::fmt;

use ring::hkdf;

use crate::clock::{Entropy, UnixTime};
use crate::domain::kek::{KeyEncryptionKey, KeyEncryptionKeys, SealError};
use crate::storage::{StorageError, Store};

/// The name of the sealed root secret in the `secrets` table (also the AAD it is sealed under).
pub const ROOT_SECRET: &str = "root_secret.v1";
/// The root secret a rotation replaced (its row's `created_at` is the rotation's time): its keys
/// still accept what was made before the rotation for `provider.root_overlap`.
pub const PREVIOUS_ROOT_SECRET: &str = "root_secret.previous.v1";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("encryption failed")]
    Seal,
    #[error("{0} cannot be decrypted: wrong key_encryption_key or corrupt data")]
    Unseal(String),
    #[error(transparent)]
    UnknownKey(SealError),
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
            e @ SealError::UnknownKey { .. } => Self::UnknownKey(e),
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

/// The root secrets in use: the current one, and the one a rotation replaced while its overlap
/// lasts.
pub struct RootSecrets {
    pub current: RootSecret,
    /// The previous root secret and when it stops being accepted.
    pub previous: Option<(RootSecret, UnixTime)>,
}

impl fmt::Debug for RootSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootSecrets")
            .field("previous_until", &self.previous.as_ref().map(|p| p.1))
            .finish_non_exhaustive()
    }
}

impl RootSecrets {
    /// The current root secret (created sealed by whichever instance starts first) and the
    /// previous one if it was replaced less than `overlap_secs` before `now`.
    pub fn load(
        store: &dyn Store,
        kek: &KeyEncryptionKeys,
        entropy: &dyn Entropy,
        now: UnixTime,
        overlap_secs: i64,
    ) -> Result<Self, SecretError> {
        let current = RootSecret::load_or_create(store, kek, entropy, now)?;
        let previous = match store.secret(PREVIOUS_ROOT_SECRET)? {
            Some((sealed, rotated_at)) if now < rotated_at.saturating_add(overlap_secs) => Some((
                RootSecret::open_as(kek, PREVIOUS_ROOT_SECRET, &sealed)?,
                rotated_at.saturating_add(overlap_secs),
            )),
            _ => None,
        };
        Ok(Self { current, previous })
    }

    /// The keys of `purpose`: the current root's, then the previous root's with the end of
    /// its overlap.
    pub fn derive(
        &self,
        purpose: Purpose,
    ) -> Result<(DerivedKey, Option<(DerivedKey, UnixTime)>), SecretError> {
        let current = self.current.derive(purpose)?;
        let previous = match &self.previous {
            Some((root, until)) => Some((root.derive(purpose)?, *until)),
            None => None,
        };
        Ok((current, previous))
    }

    /// The journey-state sealing keys: the current root's, and the previous root's until its
    /// overlap ends.
    pub fn journey_keys(&self) -> Result<KeyEncryptionKeys, SecretError> {
        let (current, previous) = self.derive(Purpose::JourneyState)?;
        let ring = KeyEncryptionKeys::from(KeyEncryptionKey::new(*current.bytes()));
        Ok(match previous {
            Some((key, until)) => {
                ring.with_previous_until(KeyEncryptionKey::new(*key.bytes()), until)
            }
            None => ring,
        })
    }
}

impl RootSecret {
    /// The root secret every instance shares: the sealed row in `secrets`, created (sealed
    /// under `kek`) by whichever instance starts first.
    pub fn load_or_create(
        store: &dyn Store,
        kek: &KeyEncryptionKeys,
        entropy: &dyn Entropy,
        now: UnixTime,
    ) -> Result<Self, SecretError> {
        let candidate = kek.seal(ROOT_SECRET, &entropy.bytes32(), entropy)?;
        let sealed = store.secret_or_insert(ROOT_SECRET, &candidate, now)?;
        Self::open_as(kek, ROOT_SECRET, &sealed)
    }

    /// Replaces the stored root secret with a new random one, keeping the replaced one as
    /// [`PREVIOUS_ROOT_SECRET`] (stored now: its overlap counts from now). Each instance uses
    /// the new one once restarted; pages and journeys made under the previous one keep working
    /// for `provider.root_overlap`.
    pub fn rotate(
        store: &dyn Store,
        kek: &KeyEncryptionKeys,
        entropy: &dyn Entropy,
        now: UnixTime,
    ) -> Result<Self, SecretError> {
        if let Some((sealed, _)) = store.secret(ROOT_SECRET)? {
            let old = Self::open_as(kek, ROOT_SECRET, &sealed)?;
            let resealed = kek.seal(PREVIOUS_ROOT_SECRET, &old.0, entropy)?;
            store.replace_secret(PREVIOUS_ROOT_SECRET, &resealed, now)?;
        }
        let sealed = kek.seal(ROOT_SECRET, &entropy.bytes32(), entropy)?;
        store.replace_secret(ROOT_SECRET, &sealed, now)?;
        Self::open_as(kek, ROOT_SECRET, &sealed)
    }

    fn open_as(kek: &KeyEncryptionKeys, name: &str, sealed: &[u8]) -> Result<Self, SecretError> {
        let plain = kek.open(name, sealed)?;
        <[u8; 32]>::try_from(plain.as_slice())
            .map(Self)
            .map_err(|_| SecretError::Unseal(name.to_owned()))
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

    fn store() -> (tempfile::TempDir, crate::storage::DieselStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::DatabaseUrl::Sqlite(dir.path().join("t.db"));
        let store =
            crate::storage::DieselStore::open(&url, 2, std::time::Duration::from_secs(5)).unwrap();
        store.migrate().unwrap();
        (dir, store)
    }

    #[test]
    fn rotation_keeps_the_previous_root_for_the_overlap_only() {
        use crate::clock::OsEntropy;
        let (_dir, store) = store();
        let kek = KeyEncryptionKeys::from(KeyEncryptionKey::new([5; 32]));
        let first = RootSecrets::load(&store, &kek, &OsEntropy, 100, 3600).unwrap();
        assert!(first.previous.is_none());
        let old_csrf = first.current.derive(Purpose::Csrf).unwrap();
        let old_journeys = first.journey_keys().unwrap();
        let in_flight = old_journeys.seal("row", b"state", &OsEntropy).unwrap();

        RootSecret::rotate(&store, &kek, &OsEntropy, 1_000).unwrap();
        let after = RootSecrets::load(&store, &kek, &OsEntropy, 1_001, 3600).unwrap();
        let (csrf, previous) = after.derive(Purpose::Csrf).unwrap();
        assert_ne!(csrf.bytes(), old_csrf.bytes(), "a new root, new keys");
        let (previous, until) = previous.unwrap();
        assert_eq!(previous.bytes(), old_csrf.bytes());
        assert_eq!(until, 1_000 + 3600, "the overlap counts from the rotation");
        // A journey sealed before the rotation opens within the overlap, not after it.
        let journeys = after.journey_keys().unwrap();
        assert_eq!(
            journeys.open_at("row", &in_flight, 4_599).unwrap(),
            b"state"
        );
        assert!(journeys.open_at("row", &in_flight, 4_600).is_err());
        // New journeys are sealed under the new root's key.
        let fresh = journeys.seal("row", b"new", &OsEntropy).unwrap();
        assert!(old_journeys.open("row", &fresh).is_err());
        // An instance started after the overlap has no previous root at all.
        let late = RootSecrets::load(&store, &kek, &OsEntropy, 4_600, 3600).unwrap();
        assert!(late.previous.is_none());
        assert_eq!(
            late.current.derive(Purpose::Csrf).unwrap().bytes(),
            csrf.bytes()
        );
        // A second rotation makes the first rotation's root the previous one.
        RootSecret::rotate(&store, &kek, &OsEntropy, 5_000).unwrap();
        let again = RootSecrets::load(&store, &kek, &OsEntropy, 5_000, 3600).unwrap();
        let (_, previous) = again.derive(Purpose::Csrf).unwrap();
        assert_eq!(previous.unwrap().0.bytes(), csrf.bytes());
    }

    #[test]
    fn a_root_sealed_under_a_key_no_longer_configured_names_the_setting() {
        use crate::clock::OsEntropy;
        let (_dir, store) = store();
        let a = KeyEncryptionKeys::from(KeyEncryptionKey::new([5; 32]));
        RootSecrets::load(&store, &a, &OsEntropy, 100, 3600).unwrap();
        let b = KeyEncryptionKeys::from(KeyEncryptionKey::new([6; 32]));
        let e = RootSecrets::load(&store, &b, &OsEntropy, 100, 3600).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("previous_key_encryption_keys"), "{m}");
        assert!(
            m.contains(&KeyEncryptionKey::new([5; 32]).kid().to_string()),
            "{m}"
        );
        let both = KeyEncryptionKeys::new(
            KeyEncryptionKey::new([6; 32]),
            vec![KeyEncryptionKey::new([5; 32])],
        );
        RootSecrets::load(&store, &both, &OsEntropy, 100, 3600).unwrap();
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let root = RootSecret([0xab; 32]);
        let shown = format!(
            "{root:?} {:?} {:?}",
            root.derive(Purpose::Csrf).unwrap(),
            KeyEncryptionKey::new([0xab; 32])
        );
        assert!(!shown.contains("171") && !shown.contains("abab"), "{shown}");
    }
}
