//! Owns what the MFA host stores: each plugin's encrypted per-user state (written
//! compare-and-swap), the factors users enrolled, recovery codes, the step-up of a session's
//! authentication methods, and the control signals instances poll (plugin reload).

use super::StorageError;
use crate::clock::UnixTime;
use crate::domain::UserId;

/// A plugin's state for one user: an opaque (encrypted) blob and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaStateRow {
    pub version: i64,
    pub data: Vec<u8>,
}

/// A factor a user has set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaEnrollment {
    pub plugin_id: String,
    pub created_at: UnixTime,
    /// When it last proved a sign-in (`None`: not since it was set up).
    pub last_used_at: Option<UnixTime>,
}

/// A WebAuthn credential (a passkey or a security key) a user registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebAuthnCredential {
    pub credential_id: Vec<u8>,
    /// The credential as webauthn-rs serialises it (JSON; a public key, no secret).
    pub passkey: String,
    pub name: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    /// The hardware model it was attested as at registration (`[[mfa.passkey.hardware]]`), or
    /// none (synced, unattested or not listed).
    pub attested: Option<AttestedModel>,
}

/// A hardware authenticator model, as attested at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedModel {
    /// Its AAGUID, lower-case hyphenated.
    pub aaguid: String,
    /// Its name as the operator listed it then.
    pub name: String,
}

/// What using a WebAuthn credential came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialUse {
    /// Recorded: the counter moved forward (or the authenticator keeps none).
    Recorded,
    /// The counter did not move forward: possibly a cloned authenticator; nothing written.
    CounterRegressed,
    /// No such credential for this user.
    Unknown,
}

/// The MFA part of the store; every [`super::Store`] implements it.
pub trait MfaStore: Send + Sync {
    fn mfa_state(&self, plugin: &str, user: &UserId) -> Result<Option<MfaStateRow>, StorageError>;
    /// Writes the state if its version is still `expected` (`None`: no state yet). Returns
    /// false when another writer came first (nothing is written then).
    fn put_mfa_state(
        &self,
        plugin: &str,
        user: &UserId,
        expected: Option<i64>,
        data: &[u8],
        now: UnixTime,
    ) -> Result<bool, StorageError>;

    fn mfa_enrollments(&self, user: &UserId) -> Result<Vec<MfaEnrollment>, StorageError>;
    /// Records an enrolment (again: keeps the first `created_at`).
    fn insert_mfa_enrollment(
        &self,
        user: &UserId,
        plugin: &str,
        now: UnixTime,
    ) -> Result<(), StorageError>;
    /// Records that the factor proved a sign-in at `at` (nothing if it is not enrolled).
    fn touch_mfa_enrollment(
        &self,
        user: &UserId,
        plugin: &str,
        at: UnixTime,
    ) -> Result<(), StorageError>;
    /// Removes the enrolment and the plugin's state for the user.
    fn delete_mfa_enrollment(&self, user: &UserId, plugin: &str) -> Result<bool, StorageError>;

    /// The user's WebAuthn credentials, oldest first.
    fn webauthn_credentials(&self, user: &UserId) -> Result<Vec<WebAuthnCredential>, StorageError>;
    /// Registers a credential; false if its id is registered already (to anyone).
    fn insert_webauthn_credential(
        &self,
        user: &UserId,
        credential: &WebAuthnCredential,
    ) -> Result<bool, StorageError>;
    /// Records a use: the new serialised credential, counter and backup state, written only if
    /// the counter moved forward (both zero: an authenticator without a counter), compare-and-set.
    fn use_webauthn_credential(
        &self,
        user: &UserId,
        credential_id: &[u8],
        passkey: &str,
        sign_count: i64,
        backup_state: bool,
        now: UnixTime,
    ) -> Result<CredentialUse, StorageError>;
    /// Whose credential this is (a passwordless sign-in names only the credential).
    fn webauthn_credential_owner(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<UserId>, StorageError>;
    /// Renames one of the user's credentials; whether it was theirs.
    fn rename_webauthn_credential(
        &self,
        user: &UserId,
        credential_id: &[u8],
        name: &str,
    ) -> Result<bool, StorageError>;
    /// Removes one of the user's credentials; how many of theirs are left (`None`: it was not
    /// theirs, nothing removed).
    fn delete_webauthn_credential(
        &self,
        user: &UserId,
        credential_id: &[u8],
    ) -> Result<Option<usize>, StorageError>;
    /// Removes every WebAuthn credential of the user; how many there were.
    fn delete_webauthn_credentials(&self, user: &UserId) -> Result<usize, StorageError>;

    /// Replaces the user's recovery codes (SHA-256 of each).
    fn replace_recovery_codes(
        &self,
        user: &UserId,
        hashes: &[[u8; 32]],
        now: UnixTime,
    ) -> Result<(), StorageError>;
    /// Marks an unused code used; false if there is no such unused code.
    fn use_recovery_code(
        &self,
        user: &UserId,
        hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<bool, StorageError>;
    fn recovery_codes_left(&self, user: &UserId) -> Result<i64, StorageError>;

    /// Replaces a session's authentication methods after a step-up; false if it is gone.
    fn set_session_amr(&self, sid: &str, amr: &[String]) -> Result<bool, StorageError>;

    /// The generation of a named signal (0 if never raised).
    fn signal_generation(&self, name: &str) -> Result<i64, StorageError>;
    /// Raises a signal: its generation goes up by one; returns the new generation.
    fn raise_signal(&self, name: &str, now: UnixTime) -> Result<i64, StorageError>;
}
