//! Owns persistence: the [`Store`] trait the domain depends on, its records and errors, and the
//! diesel backends (SQLite, PostgreSQL) that implement it. Every backend passes the same
//! conformance suite (`tests/storage_conformance.rs`).

mod diesel_store;
mod journey;
mod mfa;
pub mod schema;

pub use diesel_store::{DieselStore, PoolSettings};
pub use journey::{JourneyStore, LoginTransactionRow};
pub use mfa::{
    AttestedModel, CredentialUse, MfaEnrollment, MfaStateRow, MfaStore, WebAuthnCredential,
};

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

/// What an upstream said about a linked user at their last sign-in through it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamClaims {
    /// Its groups, for the tokens of that session.
    pub groups: Vec<String>,
    /// The email it verified (`None` unless the upstream is trusted for verified email).
    pub verified_email: Option<String>,
    /// The claims or attributes the operator keeps (`keep`), as text, for MFA plugins granted
    /// `claims`.
    pub kept: std::collections::BTreeMap<String, String>,
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
    /// The token epoch: tokens issued, and proofs made, before it count for nothing (a password
    /// change, a revoke-all or a disable moves it to now). Set by the store, 0 for a new user.
    pub tokens_valid_after: UnixTime,
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
    /// The public session id (the `sid` claim of tokens); not a secret.
    pub sid: String,
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
    /// The upstream's own authentication context (OIDC `acr`, SAML AuthnContextClassRef).
    pub upstream_acr: Option<String>,
}

impl SessionRecord {
    /// Live at `now` by its own record: before its absolute end and not idle for its idle
    /// timeout (the record's `last_seen` may lag other instances' unwritten activity).
    pub fn is_live(&self, now: UnixTime) -> bool {
        now < self.expires_at && now.saturating_sub(self.last_seen) < self.idle_timeout
    }
}

/// A SAML service provider registered at run time: its options (JSON of a `[[saml_apps]]`
/// table without endpoints), its metadata (the last good copy), where it is refreshed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAppRecord {
    pub entity_id: String,
    pub config: String,
    pub metadata: String,
    /// `None`: registered from a file, never refreshed.
    pub metadata_url: Option<String>,
    pub fetched_at: UnixTime,
    pub created_at: UnixTime,
}

/// A signing key as stored; the private key is encrypted under the key-encryption key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_key_enc: Vec<u8>,
    pub public_jwk: String,
    pub created_at: UnixTime,
    pub active_at: UnixTime,
    pub retired_at: Option<UnixTime>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("active_at", &self.active_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// An authorization code as stored (keyed by the SHA-256 of the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCodeRecord {
    pub code_hash: [u8; 32],
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: UserId,
    pub sid: String,
    pub scope: String,
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    pub auth_time: UnixTime,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub expires_at: UnixTime,
    pub consumed_at: Option<UnixTime>,
}

/// What consuming a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUse {
    /// First use: the code is now consumed.
    First(AuthCodeRecord),
    /// The code had been used before: a replay.
    Replayed(AuthCodeRecord),
    Unknown,
}

/// A refresh token as stored (keyed by the SHA-256 of the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub token_hash: [u8; 32],
    pub family_id: String,
    pub client_id: String,
    pub user_id: UserId,
    pub sid: String,
    pub scope: String,
    pub auth_time: UnixTime,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub created_at: UnixTime,
    pub idle_expires_at: UnixTime,
    pub expires_at: UnixTime,
    /// When it was spent, in milliseconds since the Unix epoch (the reuse grace is sub-second).
    pub used_at_ms: Option<i64>,
}

/// A back-channel logout waiting to be delivered: what its token is made of. The token is
/// signed at each attempt, so a retry carries a fresh `iat`, `exp` and `jti`.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Insertable)]
#[diesel(table_name = schema::logout_deliveries)]
pub struct LogoutDelivery {
    pub id: String,
    pub client_id: String,
    pub uri: String,
    /// The `sub` and `sid` claims of the logout token.
    pub sub: String,
    pub sid: String,
    pub attempts: i64,
    pub next_attempt_at: UnixTime,
    pub created_at: UnixTime,
}

/// What the checks on a presented access token need, read in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    pub revoked: bool,
    /// The token's session, if asked and it exists.
    pub session: Option<SessionLiveness>,
}

/// What decides whether a session (and the user tokens issued in it) is still good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLiveness {
    pub expires_at: UnixTime,
    pub last_seen: UnixTime,
    pub idle_timeout: i64,
    /// The user's token epoch: user tokens issued before it are revoked.
    pub tokens_valid_after: UnixTime,
}

/// One audit event as stored (`id` is assigned by the database; 0 before that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: UnixTime,
    pub kind: String,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub sid: Option<String>,
    pub ip: Option<String>,
    pub upstream: Option<String>,
    pub reason: Option<String>,
}

/// A filter over the audit trail; results come newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    pub kind: Option<String>,
    /// Events at or after this time.
    pub since: Option<UnixTime>,
    /// Events before this time.
    pub until: Option<UnixTime>,
    /// Paging cursor: events with a smaller id than this.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// The brute-force state of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLock {
    /// Failures in the current window.
    pub failures: i64,
    pub last_failure_at: UnixTime,
    /// No sign-in attempt is checked before this time (0: not locked).
    pub locked_until: UnixTime,
}

/// A login waiting for an upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// SHA-256 of the `state` (OIDC) or request id (SAML) sent upstream.
    pub state_hash: [u8; 32],
    pub upstream: String,
    /// SHA-256 of the random value in this browser's binding cookie.
    pub binding_hash: [u8; 32],
    /// SHA-256 of the id of the sign-in journey this login belongs to.
    pub journey_hash: [u8; 32],
    /// The connector's pending values (JSON object of strings).
    pub pending: String,
    pub expires_at: UnixTime,
}

/// Where a logout continues once the upstream's own logout sends the browser back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutContinuation {
    /// SHA-256 of the relay state (OIDC `state`, SAML `RelayState`) sent upstream.
    pub relay_hash: [u8; 32],
    pub upstream: String,
    /// The ID of the SAML LogoutRequest sent (its LogoutResponse must answer it); '' for OIDC.
    pub request_id: String,
    /// Where the browser goes after the upstream logout.
    pub then: String,
    pub expires_at: UnixTime,
}

/// What ending a session at its upstream needs (logout propagation), kept per session.
#[derive(Clone, PartialEq, Eq, diesel::Queryable, diesel::Insertable)]
#[diesel(table_name = schema::upstream_sessions)]
pub struct UpstreamSessionRecord {
    pub sid: String,
    pub upstream: String,
    /// OIDC: the upstream's ID token (the `id_token_hint` of RP-initiated logout).
    pub id_token: Option<String>,
    /// SAML: the NameID and SessionIndex of the assertion (a LogoutRequest names them).
    pub name_id: Option<String>,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    pub created_at: UnixTime,
}

impl std::fmt::Debug for UpstreamSessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSessionRecord")
            .field("sid", &self.sid)
            .field("upstream", &self.upstream)
            .field("session_index", &self.session_index)
            .finish_non_exhaustive()
    }
}

/// What rotating a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is spent, the new one stored, the session touched.
    Rotated,
    /// The old token had been spent before the reuse cut-off: its whole family is deleted.
    ReuseDetected,
    /// The old token is no longer stored (its family was deleted meanwhile: a reuse detected by
    /// a concurrent request, a revocation, the session's end): nothing is stored.
    Gone,
}

/// A concurrent-session limit as [`Store::insert_session_within`] applies it: at most `max`
/// live sessions of the user (in `channel` only, when set) once the new one is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCap {
    pub max: usize,
    pub channel: Option<Channel>,
    /// End the oldest live sessions to make room (else refuse, inserting nothing).
    pub evict_oldest: bool,
    /// What counts as live.
    pub now: UnixTime,
}

/// The outcome of [`Store::insert_session_within`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CappedInsert {
    /// Stored; these sessions (with their refresh tokens) were deleted to make room, oldest
    /// first: the caller records them ended and tells their apps.
    Inserted { evicted: Vec<SessionRecord> },
    /// Not stored: the limit is reached and eviction is off. The live sessions in scope.
    Full(Vec<SessionRecord>),
}

/// Where a value sealed under the key-encryption key lives (what `concierge keys rewrap`
/// re-seals).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SealedRef {
    /// A row of `secrets` (the root secret), by name.
    Secret { name: String },
    /// A signing key's private key, by kid.
    SigningKey { kid: String },
    /// A plugin's state for a user.
    MfaState { plugin: String, user: String },
}

impl SealedRef {
    /// The kind, as `concierge keys rewrap` counts them.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "secrets",
            Self::SigningKey { .. } => "signing keys",
            Self::MfaState { .. } => "mfa states",
        }
    }
}

/// A sealed value and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub at: SealedRef,
    pub value: Vec<u8>,
}

/// The persistence the broker needs. Synchronous: call it from a blocking thread.
pub trait Store: MfaStore + JourneyStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations; returns the versions applied.
    fn migrate(&self) -> Result<Vec<String>, StorageError>;
    /// Cheap round trip for readiness checks.
    fn ping(&self) -> Result<(), StorageError>;
    /// A round trip that waits at most `wait` for a connection (readiness probes).
    fn ping_within(&self, wait: std::time::Duration) -> Result<(), StorageError> {
        let _ = wait;
        self.ping()
    }
    /// How many database outages this process has seen (each counted once, when the first
    /// request fails to get a connection after a good one).
    fn outages(&self) -> u64 {
        0
    }
    /// Whether the last attempt to reach the database failed.
    fn outage_ongoing(&self) -> bool {
        false
    }

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
    /// Counts the user's live sessions in the cap's scope, ends the oldest (with their refresh
    /// tokens) or refuses, and inserts `session`: all in one transaction serialised per user
    /// (row lock on PostgreSQL, the write lock on SQLite), so concurrent sign-ins never exceed it.
    fn insert_session_within(
        &self,
        session: &SessionRecord,
        cap: &SessionCap,
    ) -> Result<CappedInsert, StorageError>;
    fn session(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StorageError>;
    fn sessions_of_user(&self, user: &UserId) -> Result<Vec<SessionRecord>, StorageError>;
    /// Moves `last_seen` forward (never back) for each session, in one transaction.
    fn touch_sessions(&self, touches: &[(SessionKey, UnixTime)]) -> Result<(), StorageError>;
    /// Returns false when there was no such session.
    fn delete_session(&self, key: &SessionKey) -> Result<bool, StorageError>;
    fn delete_user_sessions(&self, user: &UserId) -> Result<u64, StorageError>;
    /// Sessions in which `client_id` took part (received a code).
    fn sessions_of_client(&self, client_id: &str) -> Result<Vec<SessionRecord>, StorageError>;
    /// Every session, oldest first, at most `limit`.
    fn all_sessions(&self, limit: i64) -> Result<Vec<SessionRecord>, StorageError>;
    /// Moves the user's token epoch to `at` (never back). Returns false if there is no such user.
    fn set_tokens_valid_after(&self, user: &UserId, at: UnixTime) -> Result<bool, StorageError>;
    /// Deletes sessions past their absolute end, or idle for longer than their idle timeout
    /// plus `grace_secs` (the bound on not-yet-flushed last-seen updates of other instances).
    fn delete_expired_sessions(&self, now: UnixTime, grace_secs: i64) -> Result<u64, StorageError>;
    /// Deletes what `delete_expired_sessions` would (at most `limit` sessions) and returns the
    /// sessions this call deleted: each expired session is returned once, by exactly one call,
    /// however many instances sweep at once (so its end is recorded once).
    fn take_expired_sessions(
        &self,
        now: UnixTime,
        grace_secs: i64,
        limit: i64,
    ) -> Result<Vec<SessionRecord>, StorageError>;

    fn session_by_sid(&self, sid: &str) -> Result<Option<SessionRecord>, StorageError>;

    /// Records what upstream `upstream` said about `subject` at this sign-in (replacing what it
    /// said the time before).
    fn set_upstream_claims(
        &self,
        upstream: &str,
        subject: &str,
        claims: &UpstreamClaims,
    ) -> Result<(), StorageError>;

    /// What `upstream` last said about `user` (empty if unknown).
    fn upstream_claims(
        &self,
        upstream: &str,
        user: &UserId,
    ) -> Result<UpstreamClaims, StorageError>;

    // Clients registered at run time (JSON documents owned by the provider module).
    fn insert_client(&self, id: &str, config_json: &str, now: UnixTime)
    -> Result<(), StorageError>;
    fn client_config(&self, id: &str) -> Result<Option<String>, StorageError>;
    fn list_clients(&self) -> Result<Vec<(String, String)>, StorageError>;
    fn delete_client(&self, id: &str) -> Result<bool, StorageError>;

    // SAML service providers registered at run time.
    /// `Conflict` when the entity ID is registered already (one of two concurrent adds wins).
    fn insert_saml_app(&self, app: &SamlAppRecord) -> Result<(), StorageError>;
    fn saml_app(&self, entity_id: &str) -> Result<Option<SamlAppRecord>, StorageError>;
    fn list_saml_apps(&self) -> Result<Vec<SamlAppRecord>, StorageError>;
    fn delete_saml_app(&self, entity_id: &str) -> Result<bool, StorageError>;
    /// Replaces the metadata of a registered SP (a good refresh); false when it is gone.
    fn update_saml_app_metadata(
        &self,
        entity_id: &str,
        metadata: &str,
        fetched_at: UnixTime,
    ) -> Result<bool, StorageError>;

    // Signing keys.
    fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StorageError>;
    /// Stores `key` only if no unretired key of its algorithm that is active by `key.active_at`
    /// exists, atomically across instances (several starting at once on an empty database agree
    /// on one first key). True if it was stored.
    fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StorageError>;
    fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StorageError>;
    /// Sets `retired_at` on every unretired key of `alg` other than `except_kid`.
    fn retire_signing_keys(
        &self,
        alg: &str,
        except_kid: &str,
        at: UnixTime,
    ) -> Result<u64, StorageError>;
    /// Deletes keys retired before `before` (no token they signed can still be valid).
    fn delete_signing_keys_retired_before(&self, before: UnixTime) -> Result<u64, StorageError>;

    // Authorization codes.
    fn insert_code(&self, code: &AuthCodeRecord) -> Result<(), StorageError>;
    /// Atomically marks the code consumed; says whether this was its first use.
    fn consume_code(&self, code_hash: &[u8; 32], now: UnixTime) -> Result<CodeUse, StorageError>;
    /// The code as stored, spent or not, without spending it (the checks on who presents it
    /// come first: a wrong presentation must change nothing).
    fn code(&self, code_hash: &[u8; 32]) -> Result<Option<AuthCodeRecord>, StorageError>;
    /// In one transaction: marks the code consumed and stores the grant's first refresh token.
    /// If the code had been consumed before, stores nothing and says `Replayed`.
    fn redeem_code(
        &self,
        code_hash: &[u8; 32],
        now: UnixTime,
        refresh: Option<&RefreshRecord>,
    ) -> Result<CodeUse, StorageError>;

    // Refresh tokens.
    fn insert_refresh(&self, token: &RefreshRecord) -> Result<(), StorageError>;
    fn refresh_token(&self, token_hash: &[u8; 32]) -> Result<Option<RefreshRecord>, StorageError>;
    fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError>;
    /// In one transaction: spends `old` (if unspent) at `now_ms`, stores `new` and records
    /// activity on the session `touch`. If `old` was already spent at or before
    /// `reuse_cutoff_ms`, deletes its family instead and stores nothing (a spend after the
    /// cut-off is a concurrent refresh). Both in milliseconds since the Unix epoch.
    fn rotate_refresh(
        &self,
        old: &[u8; 32],
        now_ms: i64,
        reuse_cutoff_ms: i64,
        new: &RefreshRecord,
        touch: SessionKey,
    ) -> Result<Rotation, StorageError>;
    fn delete_refresh_for_sid(&self, sid: &str) -> Result<u64, StorageError>;

    // Access tokens revoked before expiry.
    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> Result<(), StorageError>;
    /// Whether `jti` or the token's `grant` key is revoked (both are entries of the revoked
    /// list) and, for `sid`, the session's liveness fields (one checkout).
    fn token_state(
        &self,
        jti: &str,
        grant: Option<&str>,
        sid: Option<&str>,
    ) -> Result<TokenState, StorageError>;

    // Back-channel logout.
    fn add_session_client(&self, sid: &str, client_id: &str) -> Result<(), StorageError>;
    /// The clients (and `saml:` SPs) that took part in a session so far, without forgetting them.
    fn session_clients(&self, sid: &str) -> Result<Vec<String>, StorageError>;
    /// Returns and forgets the clients that took part in a session.
    fn take_session_clients(&self, sid: &str) -> Result<Vec<String>, StorageError>;
    fn enqueue_logout(&self, delivery: &LogoutDelivery) -> Result<(), StorageError>;
    fn due_logouts(&self, now: UnixTime, limit: i64) -> Result<Vec<LogoutDelivery>, StorageError>;
    /// Takes a due delivery for this instance: moves `next_attempt_at` from `seen` to
    /// `lease_until` only if no other instance did first. True if this call won.
    fn claim_logout(
        &self,
        id: &str,
        seen: UnixTime,
        lease_until: UnixTime,
    ) -> Result<bool, StorageError>;
    fn delete_logout(&self, id: &str) -> Result<(), StorageError>;
    fn reschedule_logout(
        &self,
        id: &str,
        attempts: i64,
        next_attempt_at: UnixTime,
    ) -> Result<(), StorageError>;

    /// Deletes expired codes, refresh tokens and revoked-token entries (and the other expired
    /// short-lived rows: pending upstream logins, logout continuations, SAML assertion ids,
    /// login transactions).
    fn delete_expired_grants(&self, now: UnixTime) -> Result<u64, StorageError>;

    // Audit trail.
    fn insert_audit_events(&self, events: &[AuditRecord]) -> Result<(), StorageError>;
    /// Events matching `q`, newest first, at most `q.limit`.
    fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError>;
    fn delete_audit_events_before(&self, before: UnixTime) -> Result<u64, StorageError>;

    // Brute-force lockout.
    fn login_lock(&self, account: &str) -> Result<Option<LoginLock>, StorageError>;
    /// Counts one failed sign-in of `account` atomically: the count starts over if the last
    /// failure was before `window_start`; `locked_until` becomes at least `lock_until(failures)`.
    fn record_login_failure(
        &self,
        account: &str,
        now: UnixTime,
        window_start: UnixTime,
        lock_until: &dyn Fn(i64) -> UnixTime,
    ) -> Result<LoginLock, StorageError>;
    fn clear_login_failures(&self, account: &str) -> Result<(), StorageError>;
    /// Forgets accounts whose last failure is before `before` and that are not locked.
    fn delete_login_failures_before(&self, before: UnixTime) -> Result<u64, StorageError>;

    // Federation.
    fn upstream_link(&self, upstream: &str, subject: &str) -> Result<Option<UserId>, StorageError>;
    fn insert_upstream_link(
        &self,
        upstream: &str,
        subject: &str,
        user: &UserId,
        now: UnixTime,
    ) -> Result<(), StorageError>;
    /// Creates a user and links it in one transaction (just-in-time provisioning).
    fn insert_user_with_link(
        &self,
        user: &User,
        upstream: &str,
        subject: &str,
    ) -> Result<(), StorageError>;
    fn insert_upstream_request(&self, r: &UpstreamRequest) -> Result<(), StorageError>;
    /// The pending login, without spending it (`None`: unknown or expired): read first so that an
    /// answer from another browser or for another upstream spends nothing.
    fn upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError>;
    /// Removes and returns the pending login (single use), if it exists and has not expired.
    fn take_upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError>;
    fn insert_logout_continuation(&self, l: &LogoutContinuation) -> Result<(), StorageError>;
    /// Removes and returns the logout continuation (single use: of concurrent takers exactly
    /// one gets it), if it exists and has not expired.
    fn take_logout_continuation(
        &self,
        relay_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<LogoutContinuation>, StorageError>;

    // SAML replay cache and upstream sessions (logout propagation).
    /// Records that `assertion_id` from `upstream` was consumed, atomically across instances:
    /// false if it was consumed before (and that record has not expired by `now`).
    fn use_saml_assertion(
        &self,
        upstream: &str,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError>;
    /// Stores what logging out at the upstream needs; it goes when the session does.
    fn insert_upstream_session(&self, s: &UpstreamSessionRecord) -> Result<(), StorageError>;
    fn upstream_session(&self, sid: &str) -> Result<Option<UpstreamSessionRecord>, StorageError>;
    /// The sessions of `upstream` opened with this NameID (for an IdP's LogoutRequest).
    fn upstream_sessions_by_name_id(
        &self,
        upstream: &str,
        name_id: &str,
    ) -> Result<Vec<UpstreamSessionRecord>, StorageError>;

    /// Returns the broker-wide secret `name`, storing `candidate` first if there is none yet;
    /// every instance thus agrees on one value.
    fn secret_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: UnixTime,
    ) -> Result<Vec<u8>, StorageError>;

    /// Stores `value` as the broker-wide secret `name`, replacing any earlier one.
    fn replace_secret(&self, name: &str, value: &[u8], now: UnixTime) -> Result<(), StorageError>;

    /// The broker-wide secret `name` and when it was stored, if there is one.
    fn secret(&self, name: &str) -> Result<Option<(Vec<u8>, UnixTime)>, StorageError>;

    /// Every value sealed under the key-encryption key: secrets, signing keys' private keys,
    /// plugin states.
    fn sealed_values(&self) -> Result<Vec<SealedValue>, StorageError>;

    /// Replaces a sealed value if it still is `expected` (compare-and-set: a value another
    /// writer changed meanwhile is left alone). Changes nothing else of the row (a plugin
    /// state keeps its version: its content is the same). False if not replaced.
    fn reseal_value(
        &self,
        at: &SealedRef,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StorageError>;
}
