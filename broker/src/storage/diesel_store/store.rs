//! Owns the [`Store`] implementation of [`DieselStore`]: the pool-level methods (backend,
//! migrations, pings, outages) here; every other method forwards to its role file.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel_migrations::MigrationHarness;

use super::super::{
    AuditQuery, AuditRecord, AuthCodeRecord, CappedInsert, CodeUse, LoginLock, LogoutContinuation,
    LogoutDelivery, RefreshRecord, Rotation, SamlAppRecord, SessionCap, SessionKey, SessionRecord,
    SigningKeyRecord, StorageError, Store, TokenState, UpstreamClaims, UpstreamRequest,
    UpstreamSessionRecord, User,
};
use super::{
    DieselStore, MIGRATION_LOCK_ID, POSTGRES_MIGRATIONS, Pools, SQLITE_MIGRATIONS, checkout,
    query_err,
};
use crate::clock::UnixTime;
use crate::domain::{Email, UserId};
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

impl Store for DieselStore {
    fn backend(&self) -> &'static str {
        match self.pools {
            Pools::Sqlite(_) => "sqlite",
            Pools::Postgres(_) => "postgres",
        }
    }

    fn migrate(&self) -> Result<Vec<String>, StorageError> {
        let mig =
            |e: Box<dyn std::error::Error + Send + Sync>| StorageError::Migration(e.to_string());
        match &self.pools {
            Pools::Sqlite(pool) => {
                let mut c = checkout(&self.health, pool, None)?;
                let applied = c.run_pending_migrations(SQLITE_MIGRATIONS).map_err(mig)?;
                Ok(applied.iter().map(|v| v.to_string()).collect())
            }
            Pools::Postgres(pool) => {
                let mut c = checkout(&self.health, pool, None)?;
                // Migrations (and waiting for another instance's) may take longer than a request.
                c.batch_execute("SET statement_timeout = 0")
                    .map_err(query_err)?;
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
                    .map_err(query_err)?;
                let result = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.iter().map(|v| v.to_string()).collect())
                    .map_err(mig);
                let unlock =
                    c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"));
                let reset = c.batch_execute(&format!(
                    "SET statement_timeout = {}",
                    self.statement_timeout_ms
                ));
                let applied = result?;
                unlock.map_err(query_err)?;
                reset.map_err(query_err)?;
                Ok(applied)
            }
        }
    }

    fn ping(&self) -> Result<(), StorageError> {
        with_conn!(self, |c| c.batch_execute("SELECT 1").map_err(query_err))
    }

    fn ping_within(&self, wait: Duration) -> Result<(), StorageError> {
        match &self.pools {
            Pools::Sqlite(pool) => {
                let mut pooled = checkout(&self.health, pool, Some(wait))?;
                pooled.batch_execute("SELECT 1").map_err(query_err)
            }
            Pools::Postgres(pool) => {
                let mut pooled = checkout(&self.health, pool, Some(wait))?;
                pooled.batch_execute("SELECT 1").map_err(query_err)
            }
        }
    }

    fn outages(&self) -> u64 {
        self.health
            .outages
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn outage_ongoing(&self) -> bool {
        self.health.down.load(std::sync::atomic::Ordering::Acquire)
    }

    fn insert_user(&self, user: &User) -> Result<(), StorageError> {
        DieselStore::insert_user(self, user)
    }

    fn user_by_email(&self, email: &Email) -> Result<Option<User>, StorageError> {
        DieselStore::user_by_email(self, email)
    }

    fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StorageError> {
        DieselStore::user_by_id(self, id)
    }

    fn set_password_hash(
        &self,
        id: &UserId,
        hash: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        DieselStore::set_password_hash(self, id, hash, now)
    }

    fn set_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        DieselStore::set_disabled(self, id, disabled, now)
    }

    fn insert_session(&self, session: &SessionRecord) -> Result<(), StorageError> {
        DieselStore::insert_session(self, session)
    }

    fn insert_session_within(
        &self,
        session: &SessionRecord,
        cap: &SessionCap,
    ) -> Result<CappedInsert, StorageError> {
        DieselStore::insert_session_within(self, session, cap)
    }

    fn session(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StorageError> {
        DieselStore::session(self, key)
    }

    fn sessions_of_user(&self, user: &UserId) -> Result<Vec<SessionRecord>, StorageError> {
        DieselStore::sessions_of_user(self, user)
    }

    fn touch_sessions(&self, touches: &[(SessionKey, UnixTime)]) -> Result<(), StorageError> {
        DieselStore::touch_sessions(self, touches)
    }

    fn delete_session(&self, key: &SessionKey) -> Result<bool, StorageError> {
        DieselStore::delete_session(self, key)
    }

    fn delete_user_sessions(&self, user: &UserId) -> Result<u64, StorageError> {
        DieselStore::delete_user_sessions(self, user)
    }

    fn sessions_of_client(&self, client_id: &str) -> Result<Vec<SessionRecord>, StorageError> {
        DieselStore::sessions_of_client(self, client_id)
    }

    fn all_sessions(&self, limit: i64) -> Result<Vec<SessionRecord>, StorageError> {
        DieselStore::all_sessions(self, limit)
    }

    fn set_tokens_valid_after(&self, user: &UserId, at: UnixTime) -> Result<bool, StorageError> {
        DieselStore::set_tokens_valid_after(self, user, at)
    }

    fn delete_expired_sessions(&self, now: UnixTime, grace_secs: i64) -> Result<u64, StorageError> {
        DieselStore::delete_expired_sessions(self, now, grace_secs)
    }

    fn take_expired_sessions(
        &self,
        now: UnixTime,
        grace_secs: i64,
        limit: i64,
    ) -> Result<Vec<SessionRecord>, StorageError> {
        DieselStore::take_expired_sessions(self, now, grace_secs, limit)
    }

    fn session_by_sid(&self, sid: &str) -> Result<Option<SessionRecord>, StorageError> {
        DieselStore::session_by_sid(self, sid)
    }

    fn insert_client(
        &self,
        id: &str,
        config_json: &str,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        DieselStore::insert_client(self, id, config_json, now)
    }

    fn client_config(&self, id: &str) -> Result<Option<String>, StorageError> {
        DieselStore::client_config(self, id)
    }

    fn list_clients(&self) -> Result<Vec<(String, String)>, StorageError> {
        DieselStore::list_clients(self)
    }

    fn delete_client(&self, id: &str) -> Result<bool, StorageError> {
        DieselStore::delete_client(self, id)
    }

    fn insert_saml_app(&self, app: &SamlAppRecord) -> Result<(), StorageError> {
        DieselStore::insert_saml_app(self, app)
    }

    fn saml_app(&self, entity_id: &str) -> Result<Option<SamlAppRecord>, StorageError> {
        DieselStore::saml_app(self, entity_id)
    }

    fn list_saml_apps(&self) -> Result<Vec<SamlAppRecord>, StorageError> {
        DieselStore::list_saml_apps(self)
    }

    fn delete_saml_app(&self, entity_id: &str) -> Result<bool, StorageError> {
        DieselStore::delete_saml_app(self, entity_id)
    }

    fn update_saml_app_metadata(
        &self,
        entity_id: &str,
        metadata: &str,
        fetched_at: UnixTime,
    ) -> Result<bool, StorageError> {
        DieselStore::update_saml_app_metadata(self, entity_id, metadata, fetched_at)
    }

    fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StorageError> {
        DieselStore::insert_first_signing_key(self, key)
    }

    fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StorageError> {
        DieselStore::insert_signing_key(self, key)
    }

    fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StorageError> {
        DieselStore::signing_keys(self)
    }

    fn retire_signing_keys(
        &self,
        alg: &str,
        except_kid: &str,
        at: UnixTime,
    ) -> Result<u64, StorageError> {
        DieselStore::retire_signing_keys(self, alg, except_kid, at)
    }

    fn delete_signing_keys_retired_before(&self, before: UnixTime) -> Result<u64, StorageError> {
        DieselStore::delete_signing_keys_retired_before(self, before)
    }

    fn insert_code(&self, code: &AuthCodeRecord) -> Result<(), StorageError> {
        DieselStore::insert_code(self, code)
    }

    fn consume_code(&self, code_hash: &[u8; 32], now: UnixTime) -> Result<CodeUse, StorageError> {
        DieselStore::consume_code(self, code_hash, now)
    }

    fn code(&self, code_hash: &[u8; 32]) -> Result<Option<AuthCodeRecord>, StorageError> {
        DieselStore::code(self, code_hash)
    }

    fn redeem_code(
        &self,
        code_hash: &[u8; 32],
        now: UnixTime,
        refresh: Option<&RefreshRecord>,
    ) -> Result<CodeUse, StorageError> {
        DieselStore::redeem_code(self, code_hash, now, refresh)
    }

    fn insert_refresh(&self, token: &RefreshRecord) -> Result<(), StorageError> {
        DieselStore::insert_refresh(self, token)
    }

    fn refresh_token(&self, token_hash: &[u8; 32]) -> Result<Option<RefreshRecord>, StorageError> {
        DieselStore::refresh_token(self, token_hash)
    }

    fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError> {
        DieselStore::delete_refresh_family(self, family_id)
    }

    fn rotate_refresh(
        &self,
        old: &[u8; 32],
        now_ms: i64,
        reuse_cutoff_ms: i64,
        new: &RefreshRecord,
        touch: SessionKey,
    ) -> Result<Rotation, StorageError> {
        DieselStore::rotate_refresh(self, old, now_ms, reuse_cutoff_ms, new, touch)
    }

    fn delete_refresh_for_sid(&self, sid: &str) -> Result<u64, StorageError> {
        DieselStore::delete_refresh_for_sid(self, sid)
    }

    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> Result<(), StorageError> {
        DieselStore::revoke_jti(self, jti, expires_at)
    }

    fn token_state(
        &self,
        jti: &str,
        grant: Option<&str>,
        sid: Option<&str>,
    ) -> Result<TokenState, StorageError> {
        DieselStore::token_state(self, jti, grant, sid)
    }

    fn add_session_client(&self, sid: &str, client_id: &str) -> Result<(), StorageError> {
        DieselStore::add_session_client(self, sid, client_id)
    }

    fn session_clients(&self, sid: &str) -> Result<Vec<String>, StorageError> {
        DieselStore::session_clients(self, sid)
    }

    fn take_session_clients(&self, sid: &str) -> Result<Vec<String>, StorageError> {
        DieselStore::take_session_clients(self, sid)
    }

    fn enqueue_logout(&self, delivery: &LogoutDelivery) -> Result<(), StorageError> {
        DieselStore::enqueue_logout(self, delivery)
    }

    fn due_logouts(&self, now: UnixTime, limit: i64) -> Result<Vec<LogoutDelivery>, StorageError> {
        DieselStore::due_logouts(self, now, limit)
    }

    fn claim_logout(
        &self,
        id: &str,
        seen: UnixTime,
        lease_until: UnixTime,
    ) -> Result<bool, StorageError> {
        DieselStore::claim_logout(self, id, seen, lease_until)
    }

    fn delete_logout(&self, id: &str) -> Result<(), StorageError> {
        DieselStore::delete_logout(self, id)
    }

    fn reschedule_logout(
        &self,
        id: &str,
        attempts: i64,
        next_attempt_at: UnixTime,
    ) -> Result<(), StorageError> {
        DieselStore::reschedule_logout(self, id, attempts, next_attempt_at)
    }

    fn delete_expired_grants(&self, now: UnixTime) -> Result<u64, StorageError> {
        DieselStore::delete_expired_grants(self, now)
    }

    fn secret_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: UnixTime,
    ) -> Result<Vec<u8>, StorageError> {
        DieselStore::secret_or_insert(self, name, candidate, now)
    }

    fn replace_secret(&self, name: &str, value: &[u8], now: UnixTime) -> Result<(), StorageError> {
        DieselStore::replace_secret(self, name, value, now)
    }

    fn secret(&self, name: &str) -> Result<Option<(Vec<u8>, UnixTime)>, StorageError> {
        DieselStore::secret(self, name)
    }

    fn sealed_values(&self) -> Result<Vec<crate::storage::SealedValue>, StorageError> {
        DieselStore::sealed_values(self)
    }

    fn reseal_value(
        &self,
        at: &crate::storage::SealedRef,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StorageError> {
        DieselStore::reseal_value(self, at, expected, value)
    }

    fn insert_audit_events(&self, events: &[AuditRecord]) -> Result<(), StorageError> {
        DieselStore::insert_audit_events(self, events)
    }

    fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        DieselStore::audit_events(self, q)
    }

    fn delete_audit_events_before(&self, before: UnixTime) -> Result<u64, StorageError> {
        DieselStore::delete_audit_events_before(self, before)
    }

    fn login_lock(&self, account: &str) -> Result<Option<LoginLock>, StorageError> {
        DieselStore::login_lock(self, account)
    }

    fn record_login_failure(
        &self,
        account: &str,
        now: UnixTime,
        window_start: UnixTime,
        lock_until: &dyn Fn(i64) -> UnixTime,
    ) -> Result<LoginLock, StorageError> {
        DieselStore::record_login_failure(self, account, now, window_start, lock_until)
    }

    fn clear_login_failures(&self, account: &str) -> Result<(), StorageError> {
        DieselStore::clear_login_failures(self, account)
    }

    fn delete_login_failures_before(&self, before: UnixTime) -> Result<u64, StorageError> {
        DieselStore::delete_login_failures_before(self, before)
    }

    fn upstream_link(&self, upstream: &str, subject: &str) -> Result<Option<UserId>, StorageError> {
        DieselStore::upstream_link(self, upstream, subject)
    }

    fn set_upstream_claims(
        &self,
        upstream: &str,
        subject: &str,
        claims: &UpstreamClaims,
    ) -> Result<(), StorageError> {
        DieselStore::set_upstream_claims(self, upstream, subject, claims)
    }

    fn upstream_claims(
        &self,
        upstream: &str,
        user: &UserId,
    ) -> Result<UpstreamClaims, StorageError> {
        DieselStore::upstream_claims(self, upstream, user)
    }

    fn insert_upstream_link(
        &self,
        upstream: &str,
        subject: &str,
        user: &UserId,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        DieselStore::insert_upstream_link(self, upstream, subject, user, now)
    }

    fn insert_user_with_link(
        &self,
        user: &User,
        upstream: &str,
        subject: &str,
    ) -> Result<(), StorageError> {
        DieselStore::insert_user_with_link(self, user, upstream, subject)
    }

    fn insert_upstream_request(&self, r: &UpstreamRequest) -> Result<(), StorageError> {
        DieselStore::insert_upstream_request(self, r)
    }

    fn upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError> {
        DieselStore::upstream_request(self, state_hash, now)
    }

    fn take_upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError> {
        DieselStore::take_upstream_request(self, state_hash, now)
    }

    fn insert_logout_continuation(&self, l: &LogoutContinuation) -> Result<(), StorageError> {
        DieselStore::insert_logout_continuation(self, l)
    }

    fn take_logout_continuation(
        &self,
        relay_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<LogoutContinuation>, StorageError> {
        DieselStore::take_logout_continuation(self, relay_hash, now)
    }

    fn use_saml_assertion(
        &self,
        upstream: &str,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        DieselStore::use_saml_assertion(self, upstream, assertion_id, expires_at, now)
    }

    fn insert_upstream_session(&self, s: &UpstreamSessionRecord) -> Result<(), StorageError> {
        DieselStore::insert_upstream_session(self, s)
    }

    fn upstream_session(&self, sid: &str) -> Result<Option<UpstreamSessionRecord>, StorageError> {
        DieselStore::upstream_session(self, sid)
    }

    fn upstream_sessions_by_name_id(
        &self,
        upstream: &str,
        name_id: &str,
    ) -> Result<Vec<UpstreamSessionRecord>, StorageError> {
        DieselStore::upstream_sessions_by_name_id(self, upstream, name_id)
    }
}
