//! Owns what the sign-in journey stores: one row per login transaction, keyed by the SHA-256 of
//! the opaque id the browser holds, updated only compare-and-swap on its version, finished at
//! most once, swept when expired.

use super::StorageError;
use crate::clock::UnixTime;

/// A login transaction as stored: `state` is the journey's own serialisation (opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTransactionRow {
    pub id_hash: [u8; 32],
    pub version: i64,
    pub state: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub expires_at: UnixTime,
    pub finished_at: Option<UnixTime>,
    /// SHA-256 of the browser binding cookie the journey belongs to (ending a browser's
    /// journeys at sign-out).
    pub binding_hash: Option<[u8; 32]>,
}

/// The journey part of the store; every [`super::Store`] implements it.
pub trait JourneyStore: Send + Sync {
    /// Finishes every unfinished transaction of the browser whose binding hash is
    /// `binding_hash` (sign-out): none of them can open a session afterwards. Returns how many.
    fn finish_login_transactions_of(
        &self,
        binding_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<usize, StorageError>;

    /// Stores a new transaction (version as given, normally 1). A duplicate id is an error.
    fn insert_login_transaction(&self, row: &LoginTransactionRow) -> Result<(), StorageError>;

    /// The transaction, finished or not, expired or not (the caller decides what those mean).
    fn login_transaction(
        &self,
        id_hash: &[u8; 32],
    ) -> Result<Option<LoginTransactionRow>, StorageError>;

    /// Replaces the state if the stored version is still `expected` and the transaction is not
    /// finished; the version becomes `expected + 1`. False when another writer came first (or
    /// it was finished or swept): nothing is written then.
    fn update_login_transaction(
        &self,
        id_hash: &[u8; 32],
        expected: i64,
        state: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError>;

    /// Finishes the transaction if its version is still `expected` and it is not finished yet:
    /// true for exactly one caller, however many race.
    fn finish_login_transaction(
        &self,
        id_hash: &[u8; 32],
        expected: i64,
        state: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StorageError>;

    /// Moves the transaction to a new id (`new_hash`) if its version is still `expected` and it
    /// is not finished: true for exactly one caller. The version goes up by one and the state
    /// becomes `state` (sealed again for the new id).
    fn rekey_login_transaction(
        &self,
        id_hash: &[u8; 32],
        expected: i64,
        new_hash: &[u8; 32],
        state: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError>;
}
