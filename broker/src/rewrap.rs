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
