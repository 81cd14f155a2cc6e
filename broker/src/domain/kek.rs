//! Owns the key-encryption key: the 256-bit AES-256-GCM key that seals everything secret the
//! broker stores (signing keys, plugin state, the root secret), redacted in `Debug`; the sealed
//! envelope that names the key by a key id; and the keyring (the current key and the previous
//! ones) that opens values sealed under any of them (ADR 14).

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

use crate::clock::{Entropy, UnixTime};

/// The first bytes of a sealed value that names its key (envelope version 1).
pub const MAGIC: &[u8; 3] = b"CK1";
/// How many bytes of the key id the envelope carries.
pub const KID_LEN: usize = 8;
/// `MAGIC || kid`: the header, bound to the ciphertext as the start of the AAD.
const HEADER_LEN: usize = MAGIC.len() + KID_LEN;
/// The domain-separating label of the key id hash (never reuse it for anything else).
const KID_LABEL: &[u8] = b"concierge/kek-id/v1\0";

/// Why a value was not sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("encryption failed")]
    Seal,
    #[error("{0} cannot be decrypted: wrong key_encryption_key or corrupt data")]
    Unseal(String),
    #[error(
        "{aad} is sealed under key-encryption key {kid}, which is not configured: set it as \
         provider.key_encryption_key or list it in provider.previous_key_encryption_keys"
    )]
    UnknownKey { aad: String, kid: KeyId },
}

/// The public name of a key-encryption key: the first 8 bytes of SHA-256 over a fixed label
/// and the key. It identifies the key without revealing anything of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KID_LEN]);

impl KeyId {
    pub fn bytes(&self) -> &[u8; KID_LEN] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The 256-bit key that encrypts private keys, plugin state and the root secret at rest.
pub struct KeyEncryptionKey {
    key: [u8; 32],
    kid: KeyId,
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyEncryptionKey({}, <redacted>)", self.kid)
    }
}

/// What a sealed value says about its key.
enum Parsed<'a> {
    /// `MAGIC || kid || nonce || ct || tag`.
    Enveloped {
        header: &'a [u8],
        kid: KeyId,
        body: &'a [u8],
    },
    /// `nonce || ct || tag`, sealed before values named their key.
    Legacy,
}

fn parse(sealed: &[u8]) -> Parsed<'_> {
    match sealed.strip_prefix(MAGIC.as_slice()) {
        Some(rest) if rest.len() >= KID_LEN => {
            let (kid, body) = rest.split_at(KID_LEN);
            match <[u8; KID_LEN]>::try_from(kid) {
                Ok(kid) => Parsed::Enveloped {
                    header: &sealed[..HEADER_LEN],
                    kid: KeyId(kid),
                    body,
                },
                Err(_) => Parsed::Legacy,
            }
        }
        _ => Parsed::Legacy,
    }
}

impl KeyEncryptionKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(KID_LABEL);
        h.update(bytes);
        let digest = h.finalize();
        let mut kid = [0u8; KID_LEN];
        kid.copy_from_slice(&digest[..KID_LEN]);
        Self {
            key: bytes,
            kid: KeyId(kid),
        }
    }

    /// This key's id, as sealed values carry it.
    pub fn kid(&self) -> KeyId {
        self.kid
    }

    fn aead(&self) -> Result<LessSafeKey, SealError> {
        UnboundKey::new(&AES_256_GCM, &self.key)
            .map(LessSafeKey::new)
            .map_err(|_| SealError::Seal)
    }

    /// `MAGIC || kid || nonce || ciphertext || tag`, bound to the header and to `aad` (the
    /// record the value belongs to, so a sealed value moved to another record does not open).
    pub fn seal(
        &self,
        aad: &str,
        plain: &[u8],
        entropy: &dyn Entropy,
    ) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.kid.0);
        let mut nonce = [0u8; NONCE_LEN];
        entropy.fill(&mut nonce);
        let mut buf = plain.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bound_aad(&out, aad)),
                &mut buf,
            )
            .map_err(|_| SealError::Seal)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a value this key sealed, in either format (a value of another key fails).
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        KeyEncryptionKeys::from(self.clone_key()).open(aad, sealed)
    }

    fn clone_key(&self) -> Self {
        Self {
            key: self.key,
            kid: self.kid,
        }
    }

    /// `nonce || ct || tag` under `aad_bytes`.
    fn open_body(&self, aad_bytes: &[u8], body: &[u8]) -> Option<Vec<u8>> {
        if body.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self
            .aead()
            .ok()?
            .open_in_place(nonce, Aad::from(aad_bytes), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The AAD of an enveloped value: its header, then the record's AAD (the header has a fixed
/// length, so the two cannot be confused).
fn bound_aad(header: &[u8], aad: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(header.len() + aad.len());
    v.extend_from_slice(header);
    v.extend_from_slice(aad.as_bytes());
    v
}

/// A key that still opens values, and until when (`None`: until it is removed from the
/// configuration).
struct Previous {
    key: KeyEncryptionKey,
    until: Option<UnixTime>,
}

/// The keys that open sealed values: the current one (which seals) and previous ones. A value
/// names its key; a value of the older format (no header) is tried with every key, the current
/// one first.
pub struct KeyEncryptionKeys {
    current: KeyEncryptionKey,
    previous: Vec<Previous>,
}

impl fmt::Debug for KeyEncryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKeys")
            .field("current", &self.current)
            .field(
                "previous",
                &self.previous.iter().map(|p| &p.key).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl From<KeyEncryptionKey> for KeyEncryptionKeys {
    fn from(current: KeyEncryptionKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }
}

impl KeyEncryptionKeys {
    /// `current` seals and opens; each of `previous` only opens.
    pub fn new(current: KeyEncryptionKey, previous: Vec<KeyEncryptionKey>) -> Self {
        let mut ring = Self::from(current);
        for key in previous {
            ring.previous.push(Previous { key, until: None });
        }
        ring
    }

    /// Adds a key that opens values until `until` (for [`Self::open_at`]; [`Self::open`]
    /// ignores the limit).
    pub fn with_previous_until(mut self, key: KeyEncryptionKey, until: UnixTime) -> Self {
        self.previous.push(Previous {
            key,
            until: Some(until),
        });
        self
    }

    /// The key that seals.
    pub fn current(&self) -> &KeyEncryptionKey {
        &self.current
    }

    /// Seals under the current key.
    pub fn seal(
        &self,
        aad: &str,
        plain: &[u8],
        entropy: &dyn Entropy,
    ) -> Result<Vec<u8>, SealError> {
        self.current.seal(aad, plain, entropy)
    }

    /// Opens with whichever configured key the value names (any time limit ignored).
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open_with(aad, sealed, None)
    }

    /// Opens with whichever key the value names that is still valid at `now`.
    pub fn open_at(&self, aad: &str, sealed: &[u8], now: UnixTime) -> Result<Vec<u8>, SealError> {
        self.open_with(aad, sealed, Some(now))
    }

    /// True when the value is sealed in the current format under the current key (rewrapping
    /// it would change nothing).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        matches!(parse(sealed), Parsed::Enveloped { kid, .. } if kid == self.current.kid)
    }

    fn keys(&self, now: Option<UnixTime>) -> impl Iterator<Item = &KeyEncryptionKey> {
        std::iter::once(&self.current).chain(
            self.previous
                .iter()
                .filter(move |p| match (p.until, now) {
                    (Some(until), Some(now)) => now < until,
                    _ => true,
                })
                .map(|p| &p.key),
        )
    }

    fn open_with(
        &self,
        aad: &str,
        sealed: &[u8],
        now: Option<UnixTime>,
    ) -> Result<Vec<u8>, SealError> {
        let fail = || SealError::Unseal(aad.to_owned());
        let legacy = || {
            self.keys(now)
                .find_map(|k| k.open_body(aad.as_bytes(), sealed))
        };
        match parse(sealed) {
            Parsed::Enveloped { header, kid, body } => {
                match self.keys(now).find(|k| k.kid == kid) {
                    Some(key) => key
                        .open_body(&bound_aad(header, aad), body)
                        .ok_or_else(fail),
                    // A legacy value whose random nonce happens to start with MAGIC (odds of
                    // 2^-24) still opens; an enveloped one of a key not configured is named.
                    None => legacy().ok_or_else(|| SealError::UnknownKey {
                        aad: aad.to_owned(),
                        kid,
                    }),
                }
            }
            Parsed::Legacy => legacy().ok_or_else(fail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OsEntropy;

    /// Seals as releases before the envelope did: `nonce || ct || tag` under `aad` alone.
    fn seal_legacy(key: &[u8; 32], aad: &str, plain: &[u8]) -> Vec<u8> {
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let nonce = [3u8; NONCE_LEN];
        let mut buf = plain.to_vec();
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf,
        )
        .unwrap();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    #[test]
    fn sealing_binds_the_record_and_needs_the_key() {
        let kek = KeyEncryptionKey::new([7; 32]);
        let sealed = kek.seal("a", b"plain", &OsEntropy).unwrap();
        assert_eq!(kek.open("a", &sealed).unwrap(), b"plain");
        assert!(kek.open("b", &sealed).is_err());
        assert!(KeyEncryptionKey::new([8; 32]).open("a", &sealed).is_err());
        assert!(kek.open("a", &sealed[..3]).is_err());
        assert!(kek.open("a", &sealed[..HEADER_LEN + 5]).is_err());
        assert!(kek.open("a", b"").is_err());
    }

    #[test]
    fn the_envelope_names_the_key_and_the_kid_reveals_nothing_of_it() {
        let kek = KeyEncryptionKey::new([7; 32]);
        let sealed = kek.seal("a", b"plain", &OsEntropy).unwrap();
        assert_eq!(&sealed[..3], MAGIC);
        assert_eq!(&sealed[3..HEADER_LEN], kek.kid().bytes());
        assert_eq!(sealed.len(), HEADER_LEN + NONCE_LEN + 5 + 16);
        // The kid is a labelled hash, not a prefix of the key nor its plain hash.
        assert_ne!(kek.kid().bytes(), &[7u8; KID_LEN]);
        let plain_hash = Sha256::digest([7u8; 32]);
        assert_ne!(kek.kid().bytes().as_slice(), &plain_hash[..KID_LEN]);
        assert_ne!(kek.kid(), KeyEncryptionKey::new([8; 32]).kid());
        assert_eq!(kek.kid(), KeyEncryptionKey::new([7; 32]).kid(), "stable");
        assert_eq!(kek.kid().to_string().len(), 16);
        let shown = format!("{kek:?} {:?}", KeyEncryptionKeys::from(kek.clone_key()));
        assert!(!shown.contains("7, 7"), "{shown}");
    }

    #[test]
    fn a_keyring_opens_values_of_current_and_previous_keys_and_seals_under_current() {
        let a = KeyEncryptionKey::new([1; 32]);
        let b = KeyEncryptionKey::new([2; 32]);
        let by_a = a.seal("rec", b"one", &OsEntropy).unwrap();
        let ring = KeyEncryptionKeys::new(b, vec![a]);
        assert_eq!(ring.open("rec", &by_a).unwrap(), b"one");
        assert!(!ring.is_current(&by_a));
        let by_b = ring.seal("rec", b"two", &OsEntropy).unwrap();
        assert!(ring.is_current(&by_b));
        assert_eq!(&by_b[3..HEADER_LEN], ring.current().kid().bytes());
        assert_eq!(ring.open("rec", &by_b).unwrap(), b"two");
        assert!(
            ring.open("other", &by_b).is_err(),
            "still bound to the record"
        );
    }

    #[test]
    fn values_of_the_older_format_open_with_any_configured_key() {
        let legacy_a = seal_legacy(&[1; 32], "rec", b"old");
        let a_alone = KeyEncryptionKeys::from(KeyEncryptionKey::new([1; 32]));
        assert!(!a_alone.is_current(&legacy_a));
        assert_eq!(a_alone.open("rec", &legacy_a).unwrap(), b"old");
        let ring = KeyEncryptionKeys::new(
            KeyEncryptionKey::new([2; 32]),
            vec![KeyEncryptionKey::new([1; 32])],
        );
        assert_eq!(ring.open("rec", &legacy_a).unwrap(), b"old");
        assert!(ring.open("other", &legacy_a).is_err());
        let without_a = KeyEncryptionKeys::from(KeyEncryptionKey::new([2; 32]));
        assert!(matches!(
            without_a.open("rec", &legacy_a),
            Err(SealError::Unseal(aad)) if aad == "rec"
        ));
    }

    #[test]
    fn a_value_of_a_key_not_configured_names_its_kid() {
        let a = KeyEncryptionKey::new([1; 32]);
        let kid = a.kid();
        let sealed = a.seal("root_secret.v1", b"x", &OsEntropy).unwrap();
        let err = KeyEncryptionKeys::from(KeyEncryptionKey::new([2; 32]))
            .open("root_secret.v1", &sealed)
            .unwrap_err();
        assert!(matches!(&err, SealError::UnknownKey { kid: k, .. } if *k == kid));
        let message = err.to_string();
        assert!(message.contains(&kid.to_string()), "{message}");
        assert!(message.contains("provider.key_encryption_key"), "{message}");
        assert!(
            message.contains("previous_key_encryption_keys"),
            "{message}"
        );
    }

    #[test]
    fn the_header_is_bound_to_the_ciphertext() {
        let a = KeyEncryptionKey::new([1; 32]);
        let b = KeyEncryptionKey::new([2; 32]);
        let ring = KeyEncryptionKeys::new(a.clone_key(), vec![b.clone_key()]);
        let sealed = a.seal("rec", b"x", &OsEntropy).unwrap();
        // The kid swapped for another configured key's: opened with that key, which fails.
        let mut swapped = sealed.clone();
        swapped[3..HEADER_LEN].copy_from_slice(b.kid().bytes());
        assert!(matches!(
            ring.open("rec", &swapped),
            Err(SealError::Unseal(_))
        ));
        // A flipped kid bit: an unknown key.
        let mut flipped = sealed.clone();
        flipped[4] ^= 1;
        assert!(ring.open("rec", &flipped).is_err());
        // Another magic: read as an older value, whose AAD differs: fails.
        let mut magic = sealed.clone();
        magic[2] = b'2';
        assert!(ring.open("rec", &magic).is_err());
        // The header stripped (a downgrade to the older format): the AAD differs, fails.
        assert!(ring.open("rec", &sealed[HEADER_LEN..]).is_err());
        // Ciphertext tampered.
        let mut ct = sealed.clone();
        let last = ct.len() - 1;
        ct[last] ^= 1;
        assert!(ring.open("rec", &ct).is_err());
        assert_eq!(ring.open("rec", &sealed).unwrap(), b"x");
    }

    #[test]
    fn a_previous_key_with_a_limit_opens_only_until_then_with_open_at() {
        let old = KeyEncryptionKey::new([1; 32]);
        let sealed = old.seal("rec", b"x", &OsEntropy).unwrap();
        let legacy = seal_legacy(&[1; 32], "rec", b"y");
        let ring =
            KeyEncryptionKeys::from(KeyEncryptionKey::new([2; 32])).with_previous_until(old, 1_000);
        assert_eq!(ring.open_at("rec", &sealed, 999).unwrap(), b"x");
        assert_eq!(ring.open_at("rec", &legacy, 999).unwrap(), b"y");
        assert!(ring.open_at("rec", &sealed, 1_000).is_err());
        assert!(ring.open_at("rec", &legacy, 1_000).is_err());
        assert_eq!(ring.open("rec", &sealed).unwrap(), b"x");
    }
}
