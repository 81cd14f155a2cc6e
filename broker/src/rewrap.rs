//! Owns `concierge keys rewrap`: re-sealing every value the store keeps sealed under the
//! key-encryption keys (root secrets, signing keys, plugin states) under the current key, one
//! row at a time with compare-and-set, so that a previous key can then be removed (ADR 14).

use std::collections::BTreeMap;

use crate::clock::Entropy;
use crate::domain::kek::{KeyEncryptionKeys, SealError};
use crate::storage::{SealedRef, StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What happened to the values of one kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Re-sealed under the current key now.
    pub rewrapped: u64,
    /// Already sealed under the current key (nothing to do).
    pub current: u64,
    /// Changed by another writer between the read and the write: left as that writer sealed it
    /// (run again to check).
    pub changed: u64,
    /// Not opened by any configured key: left as they are.
    pub failed: u64,
}

/// The counts per kind (`secrets`, `signing keys`, `mfa states`), and the failures by record.
#[derive(Debug, Default)]
pub struct Report {
    pub kinds: BTreeMap<&'static str, Counts>,
    pub failures: Vec<(SealedRef, SealError)>,
}

impl Report {
    /// True when every value is now sealed under the current key.
    pub fn complete(&self) -> bool {
        self.kinds.values().all(|c| c.changed == 0 && c.failed == 0)
    }
}

/// The AAD a value is sealed under: the record it belongs to (as the code that seals it
/// chooses: a secret's name, a signing key's kid, a plugin state's plugin and user).
pub fn aad(at: &SealedRef) -> String {
    match at {
        SealedRef::Secret { name } => name.clone(),
        SealedRef::SigningKey { kid } => kid.clone(),
        SealedRef::MfaState { plugin, user } => crate::mfa::state_aad(plugin, user),
    }
}

/// Re-seals every sealed value of `store` under `keys`' current key. Idempotent: a value already
/// under the current key is left alone. Safe while instances serve: a row is replaced only if it
/// still holds what was read, and the value it replaces opens with the same plain text.
pub fn rewrap(
    store: &dyn Store,
    keys: &KeyEncryptionKeys,
    entropy: &dyn Entropy,
) -> Result<Report, RewrapError> {
    let mut report = Report::default();
    for v in store.sealed_values()? {
        let counts = report.kinds.entry(v.at.kind()).or_default();
        if keys.is_current(&v.value) {
            counts.current += 1;
            continue;
        }
        let aad = aad(&v.at);
        let resealed = keys
            .open(&aad, &v.value)
            .and_then(|plain| keys.seal(&aad, &plain, entropy));
        match resealed {
            Ok(new) => {
                if store.reseal_value(&v.at, &v.value, &new)? {
                    counts.rewrapped += 1;
                } else {
                    counts.changed += 1;
                }
            }
            Err(e) => {
                counts.failed += 1;
                report.failures.push((v.at, e));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OsEntropy;
    use crate::domain::kek::KeyEncryptionKey;
    use crate::domain::{Email, UserId};
    use crate::storage::{DieselStore, MfaStore, SigningKeyRecord, User};

    #[test]
    fn rewrap_reseals_every_kind_under_the_current_key_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::DatabaseUrl::Sqlite(dir.path().join("t.db"));
        let store = DieselStore::open(&url, 2, std::time::Duration::from_secs(5)).unwrap();
        store.migrate().unwrap();
        let a = KeyEncryptionKeys::from(KeyEncryptionKey::new([1; 32]));
        store
            .replace_secret(
                "root_secret.v1",
                &a.seal("root_secret.v1", b"root", &OsEntropy).unwrap(),
                1,
            )
            .unwrap();
        store
            .insert_signing_key(&SigningKeyRecord {
                kid: "k1".into(),
                alg: "ES256".into(),
                private_key_enc: a.seal("k1", b"der", &OsEntropy).unwrap(),
                public_jwk: "{}".into(),
                created_at: 1,
                active_at: 1,
                retired_at: None,
            })
            .unwrap();
        let user = UserId::from_stored("u1".into());
        store
            .insert_user(&User {
                id: user.clone(),
                email: Email::parse("u1@example.com").unwrap(),
                name: "U".into(),
                password_hash: None,
                disabled: false,
                created_at: 1,
                updated_at: 1,
                tokens_valid_after: 0,
            })
            .unwrap();
        let aad_state = crate::mfa::state_aad("totp", "u1");
        let state = a.seal(&aad_state, b"seed", &OsEntropy).unwrap();
        assert!(store.put_mfa_state("totp", &user, None, &state, 1).unwrap());

        // Without the old key nothing opens: every value fails and is left alone.
        let b_only = KeyEncryptionKeys::from(KeyEncryptionKey::new([2; 32]));
        let report = rewrap(&store, &b_only, &OsEntropy).unwrap();
        assert!(!report.complete());
        assert_eq!(report.failures.len(), 3);

        let b_then_a = KeyEncryptionKeys::new(
            KeyEncryptionKey::new([2; 32]),
            vec![KeyEncryptionKey::new([1; 32])],
        );
        let report = rewrap(&store, &b_then_a, &OsEntropy).unwrap();
        assert!(report.complete(), "{report:?}");
        for kind in ["secrets", "signing keys", "mfa states"] {
            assert_eq!(report.kinds[kind].rewrapped, 1, "{kind}");
        }
        // Now B alone opens everything, with the same plain text.
        for v in store.sealed_values().unwrap() {
            assert!(b_only.is_current(&v.value));
            let plain = b_only.open(&aad(&v.at), &v.value).unwrap();
            assert!([&b"root"[..], b"der", b"seed"].contains(&plain.as_slice()));
        }
        // Run again: nothing to do.
        let report = rewrap(&store, &b_then_a, &OsEntropy).unwrap();
        assert!(report.complete());
        assert_eq!(report.kinds["secrets"].current, 1);
        assert_eq!(report.kinds["mfa states"].rewrapped, 0);
    }
}
