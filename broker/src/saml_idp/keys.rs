//! Owns the SAML IdP's signing keys (ADR 23): the stored set (one sealed row of `secrets`, so
//! every instance reads one value and a rotation is one compare-and-set), the rotation state
//! machine (a next key is published before it signs; the replaced key stays published after),
//! and which key signs and which certificates are published at a given time.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::{Entropy, UnixTime};
use crate::domain::kek::KeyEncryptionKeys;
use crate::storage::{SealedRef, Store};

use super::{IdpError, SIGNING_SECRET, key_err, new_key_pair, sealed_secret};

/// The sealed row of `secrets` holding every SAML signing key with its schedule (JSON), also the
/// AAD it is sealed under. Made from `saml_idp.signing.v1` (the first key) at the first start of
/// a version that rotates.
pub const KEYS_SECRET: &str = "saml_idp.signing_keys.v1";

/// One key of the set and its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled<K> {
    pub key: K,
    /// From when it signs (until a later key's `signs_from`).
    pub signs_from: UnixTime,
    /// Until when it is published; None: as long as it is in the set.
    pub published_until: Option<UnixTime>,
}

/// What a key does at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Signs now (and is published).
    Signing,
    /// Published, signs from its `signs_from`.
    Next,
    /// Signed before; still published so messages it signed and SPs that cached the metadata
    /// keep working.
    Previous,
    /// In the set but no longer published (dropped at the next rotation).
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    #[error("a rotation is pending: the next key signs from {signs_from}; rotate again after that")]
    Pending { signs_from: UnixTime },
    #[error("no key signs now")]
    NoSigner,
}

/// The key set and its schedule: a pure state machine, the time passed in.
///
/// States (at `now`): *steady* (one key, signing); *pending* (after `rotate`: the signing key
/// and the next key, both published, the next one signing from `now + publish_for`);
/// *switched* (past that time: the next key signs, the replaced one stays published until
/// `publish_for` after the switch, then is retired). `rotate` is allowed in steady and switched
/// (it drops every key but the signing one), refused while pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule<K> {
    pub keys: Vec<Scheduled<K>>,
}

impl<K> Schedule<K> {
    /// A set of one key, signing from `since`.
    pub fn single(key: K, since: UnixTime) -> Self {
        Self {
            keys: vec![Scheduled {
                key,
                signs_from: since,
                published_until: None,
            }],
        }
    }

    fn signer_index(&self, now: UnixTime) -> Option<usize> {
        // The latest to start signing; of two starting at once, the later added.
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.signs_from <= now)
            .max_by_key(|(i, k)| (k.signs_from, *i))
            .map(|(i, _)| i)
    }

    /// The key that signs at `now`.
    pub fn signer(&self, now: UnixTime) -> Option<&Scheduled<K>> {
        self.signer_index(now).and_then(|i| self.keys.get(i))
    }

    /// What each key does at `now`, in the set's order.
    pub fn roles(&self, now: UnixTime) -> Vec<(Role, &Scheduled<K>)> {
        let signer = self.signer_index(now);
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let role = if Some(i) == signer {
                    Role::Signing
                } else if k.published_until.is_some_and(|u| u <= now) {
                    Role::Retired
                } else if k.signs_from > now {
                    Role::Next
                } else {
                    Role::Previous
                };
                (role, k)
            })
            .collect()
    }

    /// The keys published at `now`: the signing one first, then the next and previous ones.
    pub fn published(&self, now: UnixTime) -> Vec<&Scheduled<K>> {
        let roles = self.roles(now);
        let of = |want: Role| {
            roles
                .iter()
                .filter(move |(r, _)| *r == want)
                .map(|(_, k)| *k)
        };
        of(Role::Signing)
            .chain(of(Role::Next))
            .chain(of(Role::Previous))
            .collect()
    }

    /// A rotation at `now`: `new` is published now and signs from `now + publish_for`; the key
    /// signing now keeps signing until then and stays published `publish_for` after; every
    /// older key leaves the set. Refused while a rotation is pending.
    pub fn rotate(self, now: UnixTime, publish_for: i64, new: K) -> Result<Self, RotateError> {
        if let Some(k) = self.keys.iter().find(|k| k.signs_from > now) {
            return Err(RotateError::Pending {
                signs_from: k.signs_from,
            });
        }
        let signer = self.signer_index(now).ok_or(RotateError::NoSigner)?;
        let switch = now.saturating_add(publish_for.max(0));
        let mut keys: Vec<Scheduled<K>> = self
            .keys
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i == signer)
            .map(|(_, mut k)| {
                k.published_until = Some(switch.saturating_add(publish_for.max(0)));
                k
            })
            .collect();
        keys.push(Scheduled {
            key: new,
            signs_from: switch,
            published_until: None,
        });
        Ok(Self { keys })
    }

    fn map<T, E>(self, mut f: impl FnMut(K) -> Result<T, E>) -> Result<Schedule<T>, E> {
        let keys = self
            .keys
            .into_iter()
            .map(|k| {
                Ok(Scheduled {
                    key: f(k.key)?,
                    signs_from: k.signs_from,
                    published_until: k.published_until,
                })
            })
            .collect::<Result<_, E>>()?;
        Ok(Schedule { keys })
    }
}

/// A key pair as stored: certificate and private key, PEM. Debug redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pem(String);

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pem(<redacted>)")
    }
}

/// A key pair ready to sign and publish.
#[derive(Clone)]
pub struct SigningKey {
    /// The private key, loaded into libxmlsec1 once when the set is loaded or reloaded (not at
    /// each signature: decoding it and setting up its RSA blinding cost as much as the rest of a
    /// signature, BENCHMARKS.md, issue #20). Shared by every worker thread.
    pub(super) loaded: Arc<xmlsec_lockdown::SigningKey>,
    /// The same private key for OpenSSL (HTTP-Redirect query signatures), decoded once too.
    pub(super) pkey: PKey<Private>,
    /// The certificate, DER in base64 (as in metadata).
    pub cert_b64: String,
    /// SHA-256 of the certificate's DER, hex.
    pub fingerprint: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn parse(pem: &Pem) -> Result<Self, IdpError> {
        let cert = X509::from_pem(pem.0.as_bytes()).map_err(key_err)?;
        let key = PKey::private_key_from_pem(pem.0.as_bytes()).map_err(key_err)?;
        let der = cert.to_der().map_err(key_err)?;
        let key_der = key.private_key_to_der().map_err(key_err)?;
        Ok(Self {
            loaded: Arc::new(xmlsec_lockdown::SigningKey::from_der(&key_der).map_err(key_err)?),
            pkey: key,
            cert_b64: STANDARD.encode(&der),
            fingerprint: hex::encode(Sha256::digest(&der)),
        })
    }
}

/// The stored set, as read: its sealed bytes (for compare-and-set) and its schedule.
struct Stored {
    sealed: Vec<u8>,
    schedule: Schedule<Pem>,
}

fn open(kek: &KeyEncryptionKeys, sealed: Vec<u8>) -> Result<Stored, IdpError> {
    let plain = kek.open(KEYS_SECRET, &sealed).map_err(key_err)?;
    let schedule = serde_json::from_slice(&plain).map_err(key_err)?;
    Ok(Stored { sealed, schedule })
}

/// The stored set; at the first start, made from the first key (`saml_idp.signing.v1`, made
/// first if there is none) by whichever instance gets there first.
fn stored(
    store: &dyn Store,
    kek: &KeyEncryptionKeys,
    entropy: &dyn Entropy,
    now: UnixTime,
) -> Result<Stored, IdpError> {
    if let Some((sealed, _)) = store.secret(KEYS_SECRET)? {
        return open(kek, sealed);
    }
    let first = sealed_secret(store, kek, entropy, now, SIGNING_SECRET, || {
        new_key_pair(entropy)
    })?;
    // The first key signs from the beginning of time: an instance whose clock is behind the
    // one that made it must not find no key.
    let pem = String::from_utf8(first).map_err(key_err)?;
    let plain = serde_json::to_vec(&Schedule::single(Pem(pem), 0)).map_err(key_err)?;
    let candidate = kek.seal(KEYS_SECRET, &plain, entropy).map_err(key_err)?;
    let sealed = store.secret_or_insert(KEYS_SECRET, &candidate, now)?;
    open(kek, sealed)
}

/// The key set as every instance reads it, ready to sign.
pub fn load(
    store: &dyn Store,
    kek: &KeyEncryptionKeys,
    entropy: &dyn Entropy,
    now: UnixTime,
) -> Result<Schedule<SigningKey>, IdpError> {
    stored(store, kek, entropy, now)?
        .schedule
        .map(|pem| SigningKey::parse(&pem))
}

/// The key set as stored, without making anything (for `concierge keys list`): the first key
/// alone if the set was not made yet, None before the first start.
pub fn peek(
    store: &dyn Store,
    kek: &KeyEncryptionKeys,
) -> Result<Option<Schedule<SigningKey>>, IdpError> {
    let schedule = match store.secret(KEYS_SECRET)? {
        Some((sealed, _)) => open(kek, sealed)?.schedule,
        None => match store.secret(SIGNING_SECRET)? {
            Some((sealed, _)) => {
                let pem = kek.open(SIGNING_SECRET, &sealed).map_err(key_err)?;
                Schedule::single(Pem(String::from_utf8(pem).map_err(key_err)?), 0)
            }
            None => return Ok(None),
        },
    };
    schedule.map(|pem| SigningKey::parse(&pem)).map(Some)
}

/// `concierge keys rotate-saml`: a new key pair, published from now, signing from
/// `now + publish_for` (ADR 23). Written with compare-and-set: a rotation that raced another
/// one fails and changes nothing. Returns the new schedule.
pub fn rotate(
    store: &dyn Store,
    kek: &KeyEncryptionKeys,
    entropy: &dyn Entropy,
    now: UnixTime,
    publish_for: i64,
) -> Result<Schedule<SigningKey>, IdpError> {
    let current = stored(store, kek, entropy, now)?;
    // Refuse before the (slow) key generation if a rotation is pending.
    if let Some(k) = current.schedule.keys.iter().find(|k| k.signs_from > now) {
        return Err(IdpError::Rotate(RotateError::Pending {
            signs_from: k.signs_from,
        }));
    }
    let pem = String::from_utf8(new_key_pair(entropy)?).map_err(key_err)?;
    let next = current
        .schedule
        .rotate(now, publish_for, Pem(pem))
        .map_err(IdpError::Rotate)?;
    let plain = serde_json::to_vec(&next).map_err(key_err)?;
    let sealed = kek.seal(KEYS_SECRET, &plain, entropy).map_err(key_err)?;
    let at = SealedRef::Secret {
        name: KEYS_SECRET.to_owned(),
    };
    if !store.reseal_value(&at, &current.sealed, &sealed)? {
        return Err(IdpError::Key(
            "the SAML key set changed meanwhile (another rotation?); nothing was changed, run \
             again"
                .into(),
        ));
    }
    next.map(|pem| SigningKey::parse(&pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: UnixTime = 1_800_000_000;
    const WEEK: i64 = 7 * 86_400;

    fn signer(s: &Schedule<&'static str>, now: UnixTime) -> &'static str {
        s.signer(now).unwrap().key
    }

    fn published(s: &Schedule<&'static str>, now: UnixTime) -> Vec<&'static str> {
        s.published(now).iter().map(|k| k.key).collect()
    }

    #[test]
    fn a_rotation_publishes_first_switches_later_and_keeps_the_old_key_published_a_while() {
        let s = Schedule::single("a", T - 100);
        assert_eq!(signer(&s, T), "a");
        assert_eq!(published(&s, T), ["a"]);

        // Pending: both published, the old one signs until the switch.
        let s = s.rotate(T, WEEK, "b").unwrap();
        assert_eq!(published(&s, T), ["a", "b"]);
        assert_eq!(signer(&s, T), "a");
        assert_eq!(signer(&s, T + WEEK - 1), "a");
        assert_eq!(
            s.roles(T).iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [Role::Signing, Role::Next]
        );
        // While pending, another rotation is refused (the next key would never have signed).
        assert_eq!(
            s.clone().rotate(T + 10, WEEK, "x"),
            Err(RotateError::Pending {
                signs_from: T + WEEK
            })
        );

        // Switched: the new key signs, the old one stays published for `publish_for` more.
        assert_eq!(signer(&s, T + WEEK), "b");
        assert_eq!(published(&s, T + WEEK), ["b", "a"]);
        assert_eq!(published(&s, T + 2 * WEEK - 1), ["b", "a"]);
        // Then it is retired.
        assert_eq!(published(&s, T + 2 * WEEK), ["b"]);
        assert_eq!(s.roles(T + 2 * WEEK)[0].0, Role::Retired);

        // A rotation after the switch drops the old key and starts the next cycle.
        let s = s.rotate(T + WEEK + 5, WEEK, "c").unwrap();
        assert_eq!(s.keys.len(), 2);
        assert_eq!(published(&s, T + WEEK + 5), ["b", "c"]);
        assert_eq!(signer(&s, T + 2 * WEEK + 4), "b");
        assert_eq!(signer(&s, T + 2 * WEEK + 5), "c");
    }

    #[test]
    fn a_zero_delay_switches_at_once_and_unpublishes_the_old_key() {
        // The emergency rotation (a leaked key): the new key signs now, the old one is gone.
        let s = Schedule::single("a", T - 100).rotate(T, 0, "b").unwrap();
        assert_eq!(signer(&s, T), "b");
        assert_eq!(published(&s, T), ["b"]);
        // A negative delay is a zero one.
        let s = Schedule::single("a", T - 100).rotate(T, -5, "b").unwrap();
        assert_eq!(s.keys[1].signs_from, T);
    }

    #[test]
    fn nothing_signs_before_the_first_key() {
        let s = Schedule::single("a", T);
        assert!(s.signer(T - 1).is_none());
        assert_eq!(
            s.rotate(T - 1, WEEK, "b"),
            Err(RotateError::Pending { signs_from: T })
        );
        let empty: Schedule<&str> = Schedule { keys: Vec::new() };
        assert_eq!(empty.rotate(T, WEEK, "b"), Err(RotateError::NoSigner));
    }

    #[test]
    fn the_stored_schedule_reads_back() {
        let s = Schedule::single(Pem("-----BEGIN".into()), T)
            .rotate(T, WEEK, Pem("x".into()))
            .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: Schedule<Pem> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(format!("{:?}", back.keys[0].key), "Pem(<redacted>)");
    }
}
