//! Owns persistence: the [`Store`] trait the domain depends on, its records and errors, and the
//! diesel backends (SQLite, PostgreSQL) that implement it. Every backend passes the same
//! conformance suite (`tests/storage_conformance.rs`).

mod diesel_store;
pub mod schema;

pub use diesel_store::DieselStore;

use crate::clock::UnixTime;
use crate::domain::{Channel, Email, UserId};

/// SHA-256 of a session id: the only form in which the broker stores it.
pub type SessionKey = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("already exists: {0}")]
    Conflict(&'static str),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database query failed: {0}")]
    Query(String),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// A local user account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: String,
    /// argon2id PHC string; `None` for users that only sign in through an upstream.
    pub password_hash: Option<String>,
    pub disabled: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A first-party session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub key: SessionKey,
    pub user_id: UserId,
    pub channel: Channel,
    pub user_agent: String,
    pub ip: String,
    /// The upstream connector that authenticated the user (`local`, an OIDC or SAML upstream id).
    pub upstream: String,
    /// Authentication methods references (RFC 8176), e.g. `pwd`, `otp`.
    pub amr: Vec<String>,
    pub auth_time: UnixTime,
    pub last_seen: UnixTime,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout: i64,
    /// The absolute end of the session.
    pub expires_at: UnixTime,
}

/// The persistence the broker needs. Synchronous: call it from a blocking thread.
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations; returns the versions applied.
    fn migrate(&self) -> Result<Vec<String>, StorageError>;
    /// Cheap round trip for readiness checks.
    fn ping(&self) -> Result<(), StorageError>;

    fn insert_user(&self, user: &User) -> Result<(), StorageError>;
    fn user_by_email(&self, email: &Email) -> Result<Option<User>, StorageError>;
    fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StorageError>;
    /// Returns false when no such user exists.
    fn set_password_hash(
        &self,
        id: &UserId,
        hash: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError>;
    /// Returns false when no such user exists.
    fn set_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        now: UnixTime,
    ) -> Result<bool, StorageError>;

    fn insert_session(&self, session: &SessionRecord) -> Result<(), StorageError>;
    fn session(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StorageError>;
    fn sessions_of_user(&self, user: &UserId) -> Result<Vec<SessionRecord>, StorageError>;
    /// Moves `last_seen` forward (never back) for each session, in one transaction.
    fn touch_sessions(&self, touches: &[(SessionKey, UnixTime)]) -> Result<(), StorageError>;
    /// Returns false when there was no such session.
    fn delete_session(&self, key: &SessionKey) -> Result<bool, StorageError>;
    fn delete_user_sessions(&self, user: &UserId) -> Result<u64, StorageError>;
    /// Deletes sessions past their absolute end, or idle for longer than their idle timeout
    /// plus `grace_secs` (the bound on not-yet-flushed last-seen updates of other instances).
    fn delete_expired_sessions(&self, now: UnixTime, grace_secs: i64) -> Result<u64, StorageError>;

    /// Returns the broker-wide secret `name`, storing `candidate` first if there is none yet;
    /// every instance thus agrees on one value.
    fn secret_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: UnixTime,
    ) -> Result<Vec<u8>, StorageError>;
}
