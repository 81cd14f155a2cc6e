//! Owns the diesel implementation of [`Store`] for SQLite and PostgreSQL from one codebase: each
//! query is written once and compiled for both connection types by `with_conn!`.

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::LogoutContinuation;
use super::schema::logout_continuations;
use super::schema::{
    audit_events, auth_codes, clients, login_failures, logout_deliveries, refresh_tokens,
    revoked_tokens, saml_assertions, secrets, session_clients, sessions, signing_keys,
    upstream_links, upstream_requests, upstream_sessions, users,
};
use super::{
    AuditQuery, AuditRecord, AuthCodeRecord, CappedInsert, CodeUse, LoginLock, LogoutDelivery,
    RefreshRecord, Rotation, SessionCap, SessionKey, SessionLiveness, SessionRecord,
    SigningKeyRecord, StorageError, Store, TokenState, UpstreamRequest, UpstreamSessionRecord,
    User,
};
use crate::clock::UnixTime;
use crate::config::DatabaseUrl;
use crate::domain::{Channel, Email, UserId};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
/// Serialises migrations of several instances starting at once on one PostgreSQL.
const MIGRATION_LOCK_ID: i64 = 0x636f_6e63_6965_7267;
/// Serialises the creation of first signing keys by instances starting at once.
const KEYS_LOCK_ID: i64 = 0x636f_6e63_6b65_7973;

enum Pools {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    Postgres(Pool<ConnectionManager<PgConnection>>),
}

/// The diesel-backed store.
pub struct DieselStore {
    pools: Pools,
    /// SQLite only: serialises this process's writers.
    writer: Option<std::sync::Mutex<()>>,
    health: Health,
    /// PostgreSQL: the `statement_timeout` every pooled connection runs with.
    statement_timeout_ms: u128,
}

/// How the pool waits and how long a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub size: u32,
    /// SQLite: `PRAGMA busy_timeout` and the checkout wait (at least 1 s).
    pub busy_timeout: Duration,
    /// PostgreSQL: the longest a request waits for a pooled connection, connecting included.
    pub pool_timeout: Duration,
    /// PostgreSQL: `statement_timeout` of every connection.
    pub statement_timeout: Duration,
}

impl PoolSettings {
    /// The defaults of `[database]`.
    pub fn new(size: u32, busy_timeout: Duration) -> Self {
        Self {
            size,
            busy_timeout,
            pool_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether the database answered last time, and how many outages this process has seen (an
/// outage starts at the first failed checkout after a good one and ends at the next good one).
#[derive(Debug, Default)]
struct Health {
    down: std::sync::atomic::AtomicBool,
    outages: std::sync::atomic::AtomicU64,
}

impl Health {
    fn failed(&self) {
        use std::sync::atomic::Ordering;
        if !self.down.swap(true, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::AcqRel);
            tracing::warn!("database unavailable: answering 503 until it is back");
        }
    }

    fn answered(&self) {
        use std::sync::atomic::Ordering;
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("database available again");
        }
    }
}

/// After an error that means the database went away, this many of the next checkouts test their
/// connection first (`SELECT 1`, one round trip each): a connection a restart or failover broke
/// is replaced, not used. In normal running no checkout pays for the test (a password login
/// stays at 8 round trips).
const PINGS_AFTER_FAULT: u32 = 64;
static PING_AFTER_FAULT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn suspect_connections() {
    PING_AFTER_FAULT.store(PINGS_AFTER_FAULT, std::sync::atomic::Ordering::Relaxed);
}

/// A pooled connection, waiting at most `wait`; tested first while connections are suspect
/// (after a fault), so one broken by a restart is replaced, not used.
fn checkout<C>(
    health: &Health,
    pool: &Pool<ConnectionManager<C>>,
    wait: Option<Duration>,
) -> Result<PooledConnection<ConnectionManager<C>>, StorageError>
where
    C: diesel::r2d2::R2D2Connection + 'static,
{
    use std::sync::atomic::Ordering;
    for _ in 0..3 {
        let got = match wait {
            Some(w) => pool.get_timeout(w),
            None => pool.get(),
        };
        let mut c = match got {
            Ok(c) => c,
            Err(e) => {
                health.failed();
                suspect_connections();
                // The r2d2 text names the last connection error; libpq's never carries a
                // password.
                return Err(StorageError::Unavailable(e.to_string()));
            }
        };
        if PING_AFTER_FAULT.load(Ordering::Relaxed) > 0 {
            if diesel::r2d2::R2D2Connection::ping(&mut *c).is_err() {
                // Broken: r2d2 drops it when it comes back (`has_broken`); take another.
                continue;
            }
            let _ = PING_AFTER_FAULT
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        health.answered();
        return Ok(c);
    }
    health.failed();
    suspect_connections();
    Err(StorageError::Unavailable(
        "no working database connection".into(),
    ))
}

/// Runs `$body` with `$c: &mut Connection` on whichever backend this store uses. `write` marks
/// a body that writes: on SQLite those take the in-process writer lock first (SQLite has one
/// writer; waiting on a mutex wakes at once, its busy handler sleeps for milliseconds).
macro_rules! with_conn {
    (write $self:expr, |$c:ident| $body:expr) => {{
        let _writer = $self.writer.as_ref().map(|m| match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        });
        with_conn!($self, |$c| $body)
    }};
    ($self:expr, |$c:ident| $body:expr) => {
        match &$self.pools {
            Pools::Sqlite(pool) => {
                let mut pooled = checkout(&$self.health, pool, None)?;
                let $c: &mut SqliteConnection = &mut pooled;
                $body
            }
            Pools::Postgres(pool) => {
                let mut pooled = checkout(&$self.health, pool, None)?;
                let $c: &mut PgConnection = &mut pooled;
                $body
            }
        }
    };
}

/// Runs `$body` (an expression over `$c`) in one write transaction that may read before it writes:
/// on SQLite under the in-process writer mutex with `BEGIN IMMEDIATE` (the write lock is taken
/// before the first read, against other processes too), on PostgreSQL in a plain transaction
/// (the body's own `DELETE`/`UPDATE` row counts decide who won). Yields the transaction's result.
macro_rules! write_transaction {
    ($self:expr, |$c:ident| $body:expr) => {
        match &$self.pools {
            Pools::Sqlite(pool) => {
                let _writer = $self.writer.as_ref().map(|m| match m.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                });
                let mut pooled = checkout(&$self.health, pool, None)?;
                let conn: &mut SqliteConnection = &mut pooled;
                conn.immediate_transaction(|$c| $body)
            }
            Pools::Postgres(pool) => {
                let mut pooled = checkout(&$self.health, pool, None)?;
                let conn: &mut PgConnection = &mut pooled;
                conn.transaction(|$c| $body)
            }
        }
    };
}

fn query_err(e: diesel::result::Error) -> StorageError {
    let err = query_err_of(e);
    if matches!(err, StorageError::Unavailable(_)) {
        suspect_connections();
    }
    err
}

fn query_err_of(e: diesel::result::Error) -> StorageError {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            StorageError::Conflict("unique key")
        }
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            info,
        ) => StorageError::Unavailable(info.message().to_owned()),
        Error::DatabaseError(_, info) if is_outage_message(info.message()) => {
            StorageError::Unavailable(info.message().to_owned())
        }
        Error::BrokenTransactionManager => {
            StorageError::Unavailable("the connection was lost in a transaction".into())
        }
        other => StorageError::Query(other.to_string()),
    }
}

/// Server messages that say the database, not the query, is the problem: a shutdown or restart
/// (SQLSTATE 57P01-57P03), a lost connection, too many connections (53300), the statement
/// timeout (57014), and SQLite's busy or locked database. diesel keeps no SQLSTATE, so the
/// messages (stable in PostgreSQL and SQLite, English in the server's default `lc_messages`) decide.
fn is_outage_message(m: &str) -> bool {
    const SIGNS: [&str; 12] = [
        "terminating connection",
        "the database system is",
        "server closed the connection",
        "could not receive data from server",
        "could not send data to server",
        "no connection to the server",
        "connection to server",
        "too many clients",
        "remaining connection slots",
        "canceling statement due to statement timeout",
        "database is locked",
        "database is busy",
    ];
    SIGNS.iter().any(|s| m.contains(s))
}

/// Statement timeout of every PostgreSQL connection of the pool, set when it connects.
#[derive(Debug)]
struct PgSession {
    statement_timeout_ms: u128,
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for PgSession {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "SET statement_timeout = {}",
            self.statement_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The PostgreSQL URL with libpq's `connect_timeout` (whole seconds, at least 2) and
/// `tcp_user_timeout` added unless the operator set them: a server that does not answer (a
/// dropped network, not a refused port) fails a connection attempt or an unacknowledged
/// send in bounded time instead of holding a pool thread for the kernel's minutes.
fn with_timeouts(url: &str, settings: &PoolSettings) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let has = |k: &str| parsed.query_pairs().any(|(name, _)| name == k);
    let (connect, user) = (has("connect_timeout"), has("tcp_user_timeout"));
    {
        let mut q = parsed.query_pairs_mut();
        if !connect {
            let secs = settings.pool_timeout.as_secs_f64().ceil().max(2.0);
            q.append_pair("connect_timeout", &format!("{secs:.0}"));
        }
        if !user {
            let ms = settings
                .statement_timeout
                .max(settings.pool_timeout)
                .as_millis()
                .saturating_add(1000);
            q.append_pair("tcp_user_timeout", &ms.to_string());
        }
    }
    parsed.into()
}

#[derive(Debug)]
struct SqlitePragmas {
    busy_timeout_ms: u64,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            self.busy_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl DieselStore {
    /// Opens a pool to `url` (creating the SQLite file and its folder if needed). Does not migrate.
    pub fn open(
        url: &DatabaseUrl,
        pool_size: u32,
        busy_timeout: Duration,
    ) -> Result<Self, StorageError> {
        Self::open_with(url, &PoolSettings::new(pool_size, busy_timeout))
    }

    /// Opens a pool to `url` with these waits (creating the SQLite file and its folder if
    /// needed). Does not migrate.
    pub fn open_with(url: &DatabaseUrl, settings: &PoolSettings) -> Result<Self, StorageError> {
        let (pool_size, busy_timeout) = (settings.size, settings.busy_timeout);
        let pools = match url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StorageError::Unavailable(format!(
                            "cannot create {}: {e}",
                            parent.display()
                        ))
                    })?;
                }
                // WAL is a property of the file: set it once, before the pool opens connections
                // concurrently (switching modes needs a lock the other connections would hold).
                let mut first = SqliteConnection::establish(&path_str(path)?)
                    .map_err(|e| StorageError::Unavailable(e.to_string()))?;
                first
                    .batch_execute(&format!(
                        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
                        busy_timeout.as_millis()
                    ))
                    .map_err(query_err)?;
                drop(first);
                let manager = ConnectionManager::<SqliteConnection>::new(path_str(path)?);
                let pool = Pool::builder()
                    .max_size(pool_size)
                    .test_on_check_out(false)
                    .connection_timeout(busy_timeout.max(Duration::from_secs(1)))
                    .connection_customizer(Box::new(SqlitePragmas {
                        busy_timeout_ms: u64::try_from(busy_timeout.as_millis())
                            .unwrap_or(u64::MAX),
                    }))
                    .build(manager)
                    .map_err(|e| StorageError::Unavailable(e.to_string()))?;
                Pools::Sqlite(pool)
            }
            DatabaseUrl::Postgres(u) => {
                let manager = ConnectionManager::<PgConnection>::new(with_timeouts(u, settings));
                let pool = Pool::builder()
                    .max_size(pool_size)
                    // Tested on checkout only after a fault (see `checkout`): a round trip per
                    // checkout in normal running doubled a sign-in's round trips.
                    .test_on_check_out(false)
                    .connection_timeout(settings.pool_timeout)
                    .connection_customizer(Box::new(PgSession {
                        statement_timeout_ms: settings.statement_timeout.as_millis(),
                    }))
                    .build(manager)
                    // The r2d2 error text may echo the URL; keep the password out of it.
                    .map_err(|_| {
                        StorageError::Unavailable(format!("cannot connect to {}", url.redacted()))
                    })?;
                Pools::Postgres(pool)
            }
        };
        let writer = matches!(pools, Pools::Sqlite(_)).then(|| std::sync::Mutex::new(()));
        Ok(Self {
            pools,
            writer,
            health: Health::default(),
            statement_timeout_ms: settings.statement_timeout.as_millis(),
        })
    }
}

fn path_str(p: &Path) -> Result<String, StorageError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| StorageError::Unavailable("database path is not UTF-8".into()))
}

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct NewAuditRow<'a> {
    at: i64,
    kind: &'a str,
    user_id: Option<&'a str>,
    client_id: Option<&'a str>,
    sid: Option<&'a str>,
    ip: Option<&'a str>,
    upstream: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> NewAuditRow<'a> {
    fn from_record(r: &'a AuditRecord) -> Self {
        Self {
            at: r.at,
            kind: &r.kind,
            user_id: r.user_id.as_deref(),
            client_id: r.client_id.as_deref(),
            sid: r.sid.as_deref(),
            ip: r.ip.as_deref(),
            upstream: r.upstream.as_deref(),
            reason: r.reason.as_deref(),
        }
    }
}

type AuditTuple = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn audit_from_tuple(t: AuditTuple) -> AuditRecord {
    let (id, at, kind, user_id, client_id, sid, ip, upstream, reason) = t;
    AuditRecord {
        id,
        at,
        kind,
        user_id,
        client_id,
        sid,
        ip,
        upstream,
        reason,
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = users)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    password_hash: Option<String>,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
    tokens_valid_after: i64,
}

impl UserRow {
    fn from_user(u: &User) -> Self {
        Self {
            id: u.id.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
            tokens_valid_after: u.tokens_valid_after,
        }
    }
    fn into_user(self) -> Result<User, StorageError> {
        Ok(User {
            email: Email::parse(&self.email)
                .map_err(|e| StorageError::Corrupt(format!("users.email: {e}")))?,
            id: UserId::from_stored(self.id),
            name: self.name,
            password_hash: self.password_hash,
            disabled: self.disabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
            tokens_valid_after: self.tokens_valid_after,
        })
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = sessions)]
struct SessionRow {
    id_hash: Vec<u8>,
    user_id: String,
    channel: String,
    user_agent: String,
    ip: String,
    upstream: String,
    amr: String,
    auth_time: i64,
    last_seen: i64,
    idle_timeout: i64,
    expires_at: i64,
    sid: String,
    upstream_acr: Option<String>,
}

impl SessionRow {
    /// [`SessionRecord::is_live`] on the stored fields.
    fn is_live(&self, now: UnixTime) -> bool {
        now < self.expires_at && now.saturating_sub(self.last_seen) < self.idle_timeout
    }
    fn from_record(s: &SessionRecord) -> Self {
        Self {
            id_hash: s.key.to_vec(),
            user_id: s.user_id.as_str().to_owned(),
            channel: s.channel.as_str().to_owned(),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            upstream: s.upstream.clone(),
            amr: s.amr.join(" "),
            auth_time: s.auth_time,
            last_seen: s.last_seen,
            idle_timeout: s.idle_timeout,
            expires_at: s.expires_at,
            sid: s.sid.clone(),
            upstream_acr: s.upstream_acr.clone(),
        }
    }
    fn into_record(self) -> Result<SessionRecord, StorageError> {
        let key: SessionKey = self
            .id_hash
            .as_slice()
            .try_into()
            .map_err(|_| StorageError::Corrupt("sessions.id_hash is not 32 bytes".into()))?;
        Ok(SessionRecord {
            key,
            sid: self.sid,
            user_id: UserId::from_stored(self.user_id),
            channel: Channel::parse(&self.channel)
                .map_err(|e| StorageError::Corrupt(format!("sessions.channel: {e}")))?,
            user_agent: self.user_agent,
            ip: self.ip,
            upstream: self.upstream,
            amr: self.amr.split_whitespace().map(str::to_owned).collect(),
            auth_time: self.auth_time,
            last_seen: self.last_seen,
            idle_timeout: self.idle_timeout,
            expires_at: self.expires_at,
            upstream_acr: self.upstream_acr,
        })
    }
}

fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32], StorageError> {
    v.as_slice()
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("{what} is not 32 bytes")))
}

fn split_amr(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = signing_keys)]
struct SigningKeyRow {
    kid: String,
    alg: String,
    private_key_enc: Vec<u8>,
    public_jwk: String,
    created_at: i64,
    active_at: i64,
    retired_at: Option<i64>,
}

impl SigningKeyRow {
    fn from_record(key: &SigningKeyRecord) -> Self {
        Self {
            kid: key.kid.clone(),
            alg: key.alg.clone(),
            private_key_enc: key.private_key_enc.clone(),
            public_jwk: key.public_jwk.clone(),
            created_at: key.created_at,
            active_at: key.active_at,
            retired_at: key.retired_at,
        }
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = auth_codes)]
struct AuthCodeRow {
    code_hash: Vec<u8>,
    client_id: String,
    redirect_uri: String,
    user_id: String,
    sid: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: String,
    auth_time: i64,
    acr: Option<String>,
    amr: String,
    expires_at: i64,
    consumed_at: Option<i64>,
}

impl AuthCodeRow {
    fn from_record(c: &AuthCodeRecord) -> Self {
        Self {
            code_hash: c.code_hash.to_vec(),
            client_id: c.client_id.clone(),
            redirect_uri: c.redirect_uri.clone(),
            user_id: c.user_id.as_str().to_owned(),
            sid: c.sid.clone(),
            scope: c.scope.clone(),
            nonce: c.nonce.clone(),
            code_challenge: c.code_challenge.clone(),
            auth_time: c.auth_time,
            acr: c.acr.clone(),
            amr: c.amr.join(" "),
            expires_at: c.expires_at,
            consumed_at: c.consumed_at,
        }
    }
    fn into_record(self) -> Result<AuthCodeRecord, StorageError> {
        Ok(AuthCodeRecord {
            code_hash: hash32(self.code_hash, "auth_codes.code_hash")?,
            client_id: self.client_id,
            redirect_uri: self.redirect_uri,
            user_id: UserId::from_stored(self.user_id),
            sid: self.sid,
            scope: self.scope,
            nonce: self.nonce,
            code_challenge: self.code_challenge,
            auth_time: self.auth_time,
            acr: self.acr,
            amr: split_amr(&self.amr),
            expires_at: self.expires_at,
            consumed_at: self.consumed_at,
        })
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = refresh_tokens)]
struct RefreshRow {
    token_hash: Vec<u8>,
    family_id: String,
    client_id: String,
    user_id: String,
    sid: String,
    scope: String,
    auth_time: i64,
    acr: Option<String>,
    amr: String,
    created_at: i64,
    idle_expires_at: i64,
    expires_at: i64,
    used_at_ms: Option<i64>,
}

impl RefreshRow {
    fn from_record(r: &RefreshRecord) -> Self {
        Self {
            token_hash: r.token_hash.to_vec(),
            family_id: r.family_id.clone(),
            client_id: r.client_id.clone(),
            user_id: r.user_id.as_str().to_owned(),
            sid: r.sid.clone(),
            scope: r.scope.clone(),
            auth_time: r.auth_time,
            acr: r.acr.clone(),
            amr: r.amr.join(" "),
            created_at: r.created_at,
            idle_expires_at: r.idle_expires_at,
            expires_at: r.expires_at,
            used_at_ms: r.used_at_ms,
        }
    }
    fn into_record(self) -> Result<RefreshRecord, StorageError> {
        Ok(RefreshRecord {
            token_hash: hash32(self.token_hash, "refresh_tokens.token_hash")?,
            family_id: self.family_id,
            client_id: self.client_id,
            user_id: UserId::from_stored(self.user_id),
            sid: self.sid,
            scope: self.scope,
            auth_time: self.auth_time,
            acr: self.acr,
            amr: split_amr(&self.amr),
            created_at: self.created_at,
            idle_expires_at: self.idle_expires_at,
            expires_at: self.expires_at,
            used_at_ms: self.used_at_ms,
        })
    }
}

mod journey;
mod mfa;

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
        let row = UserRow::from_user(user);
        with_conn!(write self, |c| {
            diesel::insert_into(users::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(|e| match query_err(e) {
                    StorageError::Conflict(_) => StorageError::Conflict("a user with this email"),
                    other => other,
                })
        })
    }

    fn user_by_email(&self, email: &Email) -> Result<Option<User>, StorageError> {
        let row: Option<UserRow> = with_conn!(self, |c| {
            users::table
                .filter(users::email.eq(email.as_str()))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(UserRow::into_user).transpose()
    }

    fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StorageError> {
        let row: Option<UserRow> = with_conn!(self, |c| {
            users::table
                .find(id.as_str())
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(UserRow::into_user).transpose()
    }

    fn set_password_hash(
        &self,
        id: &UserId,
        hash: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(users::table.find(id.as_str()))
                .set((
                    users::password_hash.eq(Some(hash)),
                    users::updated_at.eq(now),
                ))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    fn set_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(users::table.find(id.as_str()))
                .set((users::disabled.eq(disabled), users::updated_at.eq(now)))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    fn insert_session(&self, session: &SessionRecord) -> Result<(), StorageError> {
        let row = SessionRow::from_record(session);
        with_conn!(write self, |c| {
            diesel::insert_into(sessions::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn insert_session_within(
        &self,
        session: &SessionRecord,
        cap: &SessionCap,
    ) -> Result<CappedInsert, StorageError> {
        let row = SessionRow::from_record(session);
        let channel = cap.channel.map(|c| c.as_str().to_owned());
        let max = cap.max.max(1);
        // Count, end the oldest and insert under one lock per user: `Ok(None)` is "inserted",
        // `Err` carries the evicted rows (oldest first) or, when full, the live ones.
        macro_rules! capped {
            ($c:expr) => {{
                let live: Vec<SessionRow> = sessions::table
                    .filter(sessions::user_id.eq(&row.user_id))
                    .order((sessions::auth_time.asc(), sessions::sid.asc()))
                    .load::<SessionRow>($c)?
                    .into_iter()
                    .filter(|r| r.is_live(cap.now))
                    .filter(|r| channel.as_ref().is_none_or(|ch| &r.channel == ch))
                    .collect();
                if live.len() < max {
                    diesel::insert_into(sessions::table)
                        .values(&row)
                        .execute($c)?;
                    Ok((true, Vec::new()))
                } else if !cap.evict_oldest {
                    Ok((false, live))
                } else {
                    let excess = live.len() + 1 - max;
                    let evicted: Vec<SessionRow> = live.into_iter().take(excess).collect();
                    let keys: Vec<&[u8]> = evicted.iter().map(|r| r.id_hash.as_slice()).collect();
                    let sids: Vec<&str> = evicted.iter().map(|r| r.sid.as_str()).collect();
                    diesel::delete(sessions::table.filter(sessions::id_hash.eq_any(&keys)))
                        .execute($c)?;
                    diesel::delete(refresh_tokens::table.filter(refresh_tokens::sid.eq_any(&sids)))
                        .execute($c)?;
                    diesel::insert_into(sessions::table)
                        .values(&row)
                        .execute($c)?;
                    Ok((true, evicted))
                }
            }};
        }
        let (inserted, rows): (bool, Vec<SessionRow>) = match &self.pools {
            Pools::Sqlite(pool) => {
                let _writer = self.writer.as_ref().map(|m| match m.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                });
                let mut c = checkout(&self.health, pool, None)?;
                // IMMEDIATE: the write lock is taken before the count (other processes too).
                c.immediate_transaction(|c| capped!(c)).map_err(query_err)?
            }
            Pools::Postgres(pool) => {
                let mut c = checkout(&self.health, pool, None)?;
                c.transaction(|c| {
                    // Sign-ins of one user queue here until this one commits.
                    users::table
                        .find(&row.user_id)
                        .select(users::id)
                        .for_update()
                        .first::<String>(c)
                        .optional()?;
                    capped!(c)
                })
                .map_err(query_err)?
            }
        };
        let records = rows
            .into_iter()
            .map(SessionRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if inserted {
            CappedInsert::Inserted { evicted: records }
        } else {
            CappedInsert::Full(records)
        })
    }

    fn session(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StorageError> {
        let row: Option<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .find(&key[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(SessionRow::into_record).transpose()
    }

    fn sessions_of_user(&self, user: &UserId) -> Result<Vec<SessionRecord>, StorageError> {
        let rows: Vec<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .filter(sessions::user_id.eq(user.as_str()))
                .order(sessions::auth_time.asc())
                .load(c)
                .map_err(query_err)
        })?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    fn touch_sessions(&self, touches: &[(SessionKey, UnixTime)]) -> Result<(), StorageError> {
        if touches.is_empty() {
            return Ok(());
        }
        match &self.pools {
            // One statement per chunk: a round trip per session made a busy instance's flush
            // slower than the touches it records (BENCHMARKS.md, sessions at scale), and held
            // every row lock of the batch for that long. Chunks are their own transactions.
            Pools::Postgres(pool) => {
                use diesel::sql_types::{Array, BigInt, Binary};
                let mut c = checkout(&self.health, pool, None)?;
                for chunk in touches.chunks(1_000) {
                    let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, _)| k.to_vec()).collect();
                    let times: Vec<i64> = chunk.iter().map(|(_, t)| *t).collect();
                    diesel::sql_query(
                        "UPDATE sessions AS s SET last_seen = t.at \
                         FROM unnest($1::bytea[], $2::bigint[]) AS t(key, at) \
                         WHERE s.id_hash = t.key AND s.last_seen < t.at",
                    )
                    .bind::<Array<Binary>, _>(keys)
                    .bind::<Array<BigInt>, _>(times)
                    .execute(&mut c)
                    .map_err(query_err)?;
                }
                Ok(())
            }
            Pools::Sqlite(_) => with_conn!(write self, |c| {
                c.transaction(|c| {
                    for (key, at) in touches {
                        diesel::update(
                            sessions::table
                                .filter(sessions::id_hash.eq(&key[..]))
                                .filter(sessions::last_seen.lt(*at)),
                        )
                        .set(sessions::last_seen.eq(*at))
                        .execute(c)?;
                    }
                    Ok(())
                })
                .map_err(query_err)
            }),
        }
    }

    fn delete_session(&self, key: &SessionKey) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(sessions::table.find(&key[..]))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    fn delete_user_sessions(&self, user: &UserId) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(sessions::table.filter(sessions::user_id.eq(user.as_str())))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    fn sessions_of_client(&self, client_id: &str) -> Result<Vec<SessionRecord>, StorageError> {
        let rows: Vec<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .filter(
                    sessions::sid.eq_any(
                        session_clients::table
                            .filter(session_clients::client_id.eq(client_id))
                            .select(session_clients::sid),
                    ),
                )
                .order(sessions::auth_time.asc())
                .load(c)
                .map_err(query_err)
        })?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    fn all_sessions(&self, limit: i64) -> Result<Vec<SessionRecord>, StorageError> {
        let rows: Vec<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .order(sessions::auth_time.asc())
                .limit(limit)
                .load(c)
                .map_err(query_err)
        })?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    fn set_tokens_valid_after(&self, user: &UserId, at: UnixTime) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            let exists = users::table
                .find(user.as_str())
                .select(users::id)
                .first::<String>(c)
                .optional()
                .map_err(query_err)?
                .is_some();
            diesel::update(users::table.find(user.as_str()).filter(users::tokens_valid_after.lt(at)))
                .set(users::tokens_valid_after.eq(at))
                .execute(c)
                .map_err(query_err)?;
            Ok(exists)
        })
    }

    fn delete_expired_sessions(&self, now: UnixTime, grace_secs: i64) -> Result<u64, StorageError> {
        let idle_cutoff = now.saturating_sub(grace_secs);
        with_conn!(write self, |c| {
            diesel::delete(
                sessions::table.filter(
                    sessions::expires_at
                        .le(now)
                        .or((sessions::last_seen + sessions::idle_timeout).le(idle_cutoff)),
                ),
            )
            .execute(c)
            .map(|n| n as u64)
            .map_err(query_err)
        })
    }

    fn take_expired_sessions(
        &self,
        now: UnixTime,
        grace_secs: i64,
        limit: i64,
    ) -> Result<Vec<SessionRecord>, StorageError> {
        let idle_cutoff = now.saturating_sub(grace_secs);
        // Read the expired ones, then delete each by key under the same condition: a session is
        // this call's only if its delete removed it (another instance's sweep, or the request
        // that found it expired, deletes nothing then). Keys in order: no lock cycles.
        macro_rules! take {
            ($c:expr) => {{
                let expired = || {
                    sessions::expires_at
                        .le(now)
                        .or((sessions::last_seen + sessions::idle_timeout).le(idle_cutoff))
                };
                let rows: Vec<SessionRow> = sessions::table
                    .filter(expired())
                    .order(sessions::id_hash.asc())
                    .limit(limit)
                    .load($c)?;
                let mut taken = Vec::new();
                for row in rows {
                    let deleted = diesel::delete(
                        sessions::table
                            .filter(sessions::id_hash.eq(&row.id_hash))
                            .filter(expired()),
                    )
                    .execute($c)?;
                    if deleted == 1 {
                        taken.push(row);
                    }
                }
                Ok::<_, diesel::result::Error>(taken)
            }};
        }
        let rows: Vec<SessionRow> = write_transaction!(self, |c| take!(c)).map_err(query_err)?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    fn session_by_sid(&self, sid: &str) -> Result<Option<SessionRecord>, StorageError> {
        let row: Option<SessionRow> = with_conn!(self, |c| {
            sessions::table
                .filter(sessions::sid.eq(sid))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(SessionRow::into_record).transpose()
    }

    fn insert_client(
        &self,
        id: &str,
        config_json: &str,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(clients::table)
                .values((
                    clients::id.eq(id),
                    clients::config.eq(config_json),
                    clients::created_at.eq(now),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(|e| match query_err(e) {
                    StorageError::Conflict(_) => StorageError::Conflict("a client with this id"),
                    other => other,
                })
        })
    }

    fn client_config(&self, id: &str) -> Result<Option<String>, StorageError> {
        with_conn!(self, |c| {
            clients::table
                .find(id)
                .select(clients::config)
                .first::<String>(c)
                .optional()
                .map_err(query_err)
        })
    }

    fn list_clients(&self) -> Result<Vec<(String, String)>, StorageError> {
        with_conn!(self, |c| {
            clients::table
                .order(clients::id.asc())
                .select((clients::id, clients::config))
                .load::<(String, String)>(c)
                .map_err(query_err)
        })
    }

    fn delete_client(&self, id: &str) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(clients::table.find(id))
                .execute(c)
                .map(|n| n > 0)
                .map_err(query_err)
        })
    }

    fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StorageError> {
        let row = SigningKeyRow::from_record(key);
        // The check and the insert, for either connection type.
        macro_rules! first_key {
            ($c:expr) => {{
                let active = signing_keys::table
                    .filter(signing_keys::alg.eq(&row.alg))
                    .filter(signing_keys::retired_at.is_null())
                    .filter(signing_keys::active_at.le(row.active_at))
                    .count()
                    .get_result::<i64>($c)?;
                if active > 0 {
                    Ok(false)
                } else {
                    diesel::insert_into(signing_keys::table)
                        .values(&row)
                        .execute($c)
                        .map(|_| true)
                }
            }};
        }
        match &self.pools {
            Pools::Sqlite(pool) => {
                let _writer = self.writer.as_ref().map(|m| match m.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                });
                let mut c = checkout(&self.health, pool, None)?;
                // IMMEDIATE: the write lock is taken before the check (other processes, e.g. the CLI).
                c.immediate_transaction(|c| first_key!(c))
                    .map_err(query_err)
            }
            Pools::Postgres(pool) => {
                let mut c = checkout(&self.health, pool, None)?;
                c.transaction(|c| {
                    c.batch_execute(&format!("SELECT pg_advisory_xact_lock({KEYS_LOCK_ID})"))?;
                    first_key!(c)
                })
                .map_err(query_err)
            }
        }
    }

    fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StorageError> {
        let row = SigningKeyRow::from_record(key);
        with_conn!(write self, |c| {
            diesel::insert_into(signing_keys::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StorageError> {
        let rows: Vec<SigningKeyRow> = with_conn!(self, |c| {
            signing_keys::table
                .order((signing_keys::active_at.asc(), signing_keys::kid.asc()))
                .load(c)
                .map_err(query_err)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| SigningKeyRecord {
                kid: r.kid,
                alg: r.alg,
                private_key_enc: r.private_key_enc,
                public_jwk: r.public_jwk,
                created_at: r.created_at,
                active_at: r.active_at,
                retired_at: r.retired_at,
            })
            .collect())
    }

    fn retire_signing_keys(
        &self,
        alg: &str,
        except_kid: &str,
        at: UnixTime,
    ) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(
                signing_keys::table
                    .filter(signing_keys::alg.eq(alg))
                    .filter(signing_keys::kid.ne(except_kid))
                    .filter(signing_keys::retired_at.is_null()),
            )
            .set(signing_keys::retired_at.eq(Some(at)))
            .execute(c)
            .map(|n| n as u64)
            .map_err(query_err)
        })
    }

    fn delete_signing_keys_retired_before(&self, before: UnixTime) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(signing_keys::table.filter(signing_keys::retired_at.lt(before)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    fn insert_code(&self, code: &AuthCodeRecord) -> Result<(), StorageError> {
        let row = AuthCodeRow::from_record(code);
        with_conn!(write self, |c| {
            diesel::insert_into(auth_codes::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn consume_code(&self, code_hash: &[u8; 32], now: UnixTime) -> Result<CodeUse, StorageError> {
        let (marked, row): (usize, Option<AuthCodeRow>) = with_conn!(write self, |c| {
            let marked = diesel::update(
                auth_codes::table
                    .filter(auth_codes::code_hash.eq(&code_hash[..]))
                    .filter(auth_codes::consumed_at.is_null()),
            )
            .set(auth_codes::consumed_at.eq(Some(now)))
            .execute(c)
            .map_err(query_err)?;
            let row = auth_codes::table
                .find(&code_hash[..])
                .first::<AuthCodeRow>(c)
                .optional()
                .map_err(query_err)?;
            Ok::<_, StorageError>((marked, row))
        })?;
        Ok(match (marked, row) {
            (_, None) => CodeUse::Unknown,
            (1, Some(r)) => CodeUse::First(r.into_record()?),
            (_, Some(r)) => CodeUse::Replayed(r.into_record()?),
        })
    }

    fn code(&self, code_hash: &[u8; 32]) -> Result<Option<AuthCodeRecord>, StorageError> {
        let row: Option<AuthCodeRow> = with_conn!(self, |c| {
            auth_codes::table
                .find(&code_hash[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(AuthCodeRow::into_record).transpose()
    }

    fn redeem_code(
        &self,
        code_hash: &[u8; 32],
        now: UnixTime,
        refresh: Option<&RefreshRecord>,
    ) -> Result<CodeUse, StorageError> {
        let refresh = refresh.map(RefreshRow::from_record);
        let (marked, row): (usize, Option<AuthCodeRow>) = with_conn!(write self, |c| {
            c.transaction(|c| {
                let marked = diesel::update(
                    auth_codes::table
                        .filter(auth_codes::code_hash.eq(&code_hash[..]))
                        .filter(auth_codes::consumed_at.is_null()),
                )
                .set(auth_codes::consumed_at.eq(Some(now)))
                .execute(c)?;
                if marked == 1
                    && let Some(r) = &refresh
                {
                    diesel::insert_into(refresh_tokens::table)
                        .values(r)
                        .execute(c)?;
                }
                let row = auth_codes::table
                    .find(&code_hash[..])
                    .first::<AuthCodeRow>(c)
                    .optional()?;
                Ok::<_, diesel::result::Error>((marked, row))
            })
            .map_err(query_err)
        })?;
        Ok(match (marked, row) {
            (_, None) => CodeUse::Unknown,
            (1, Some(r)) => CodeUse::First(r.into_record()?),
            (_, Some(r)) => CodeUse::Replayed(r.into_record()?),
        })
    }

    fn insert_refresh(&self, token: &RefreshRecord) -> Result<(), StorageError> {
        let row = RefreshRow::from_record(token);
        with_conn!(write self, |c| {
            diesel::insert_into(refresh_tokens::table)
                .values(&row)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn refresh_token(&self, token_hash: &[u8; 32]) -> Result<Option<RefreshRecord>, StorageError> {
        let row: Option<RefreshRow> = with_conn!(self, |c| {
            refresh_tokens::table
                .find(&token_hash[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        row.map(RefreshRow::into_record).transpose()
    }

    fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::family_id.eq(family_id)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    fn rotate_refresh(
        &self,
        old: &[u8; 32],
        now_ms: i64,
        reuse_cutoff_ms: i64,
        new: &RefreshRecord,
        touch: SessionKey,
    ) -> Result<Rotation, StorageError> {
        let row = RefreshRow::from_record(new);
        let now = now_ms.div_euclid(1000);
        with_conn!(write self, |c| {
            c.transaction(|c| {
                let spent_now = diesel::update(
                    refresh_tokens::table
                        .filter(refresh_tokens::token_hash.eq(&old[..]))
                        .filter(refresh_tokens::used_at_ms.is_null()),
                )
                .set(refresh_tokens::used_at_ms.eq(Some(now_ms)))
                .execute(c)?;
                if spent_now == 0 {
                    let (family, used_at) = refresh_tokens::table
                        .find(&old[..])
                        .select((refresh_tokens::family_id, refresh_tokens::used_at_ms))
                        .first::<(String, Option<i64>)>(c)?;
                    if used_at.is_some_and(|t| t <= reuse_cutoff_ms) {
                        diesel::delete(
                            refresh_tokens::table.filter(refresh_tokens::family_id.eq(family)),
                        )
                        .execute(c)?;
                        return Ok(Rotation::ReuseDetected);
                    }
                }
                diesel::insert_into(refresh_tokens::table)
                    .values(&row)
                    .execute(c)?;
                diesel::update(
                    sessions::table
                        .filter(sessions::id_hash.eq(&touch[..]))
                        .filter(sessions::last_seen.lt(now)),
                )
                .set(sessions::last_seen.eq(now))
                .execute(c)?;
                Ok(Rotation::Rotated)
            })
            .map_err(query_err)
        })
    }

    fn delete_refresh_for_sid(&self, sid: &str) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::sid.eq(sid)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(revoked_tokens::table)
                .values((
                    revoked_tokens::jti.eq(jti),
                    revoked_tokens::expires_at.eq(expires_at),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn token_state(
        &self,
        jti: &str,
        grant: Option<&str>,
        sid: Option<&str>,
    ) -> Result<TokenState, StorageError> {
        let keys: Vec<&str> = std::iter::once(jti).chain(grant).collect();
        with_conn!(self, |c| {
            let revoked = revoked_tokens::table
                .filter(revoked_tokens::jti.eq_any(&keys))
                .select(revoked_tokens::jti)
                .first::<String>(c)
                .optional()
                .map_err(query_err)?
                .is_some();
            let session = match sid {
                Some(sid) => sessions::table
                    .inner_join(users::table)
                    .filter(sessions::sid.eq(sid))
                    .select((
                        sessions::expires_at,
                        sessions::last_seen,
                        sessions::idle_timeout,
                        users::tokens_valid_after,
                    ))
                    .first::<(i64, i64, i64, i64)>(c)
                    .optional()
                    .map_err(query_err)?
                    .map(
                        |(expires_at, last_seen, idle_timeout, tokens_valid_after)| {
                            SessionLiveness {
                                expires_at,
                                last_seen,
                                idle_timeout,
                                tokens_valid_after,
                            }
                        },
                    ),
                None => None,
            };
            Ok(TokenState { revoked, session })
        })
    }

    fn add_session_client(&self, sid: &str, client_id: &str) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(session_clients::table)
                .values((
                    session_clients::sid.eq(sid),
                    session_clients::client_id.eq(client_id),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn take_session_clients(&self, sid: &str) -> Result<Vec<String>, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                let ids = session_clients::table
                    .filter(session_clients::sid.eq(sid))
                    .select(session_clients::client_id)
                    .load::<String>(c)?;
                diesel::delete(session_clients::table.filter(session_clients::sid.eq(sid)))
                    .execute(c)?;
                Ok(ids)
            })
            .map_err(query_err)
        })
    }

    fn enqueue_logout(&self, delivery: &LogoutDelivery) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(logout_deliveries::table)
                .values(delivery)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn due_logouts(&self, now: UnixTime, limit: i64) -> Result<Vec<LogoutDelivery>, StorageError> {
        with_conn!(self, |c| {
            logout_deliveries::table
                .filter(logout_deliveries::next_attempt_at.le(now))
                .order(logout_deliveries::next_attempt_at.asc())
                .limit(limit)
                .load::<LogoutDelivery>(c)
                .map_err(query_err)
        })
    }

    fn claim_logout(
        &self,
        id: &str,
        seen: UnixTime,
        lease_until: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            diesel::update(
                logout_deliveries::table
                    .filter(logout_deliveries::id.eq(id))
                    .filter(logout_deliveries::next_attempt_at.eq(seen)),
            )
            .set(logout_deliveries::next_attempt_at.eq(lease_until))
            .execute(c)
            .map(|n| n == 1)
            .map_err(query_err)
        })
    }

    fn delete_logout(&self, id: &str) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(logout_deliveries::table.find(id))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn reschedule_logout(
        &self,
        id: &str,
        attempts: i64,
        next_attempt_at: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::update(logout_deliveries::table.find(id))
                .set((
                    logout_deliveries::attempts.eq(attempts),
                    logout_deliveries::next_attempt_at.eq(next_attempt_at),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn delete_expired_grants(&self, now: UnixTime) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            let codes = diesel::delete(auth_codes::table.filter(auth_codes::expires_at.le(now)))
                .execute(c)
                .map_err(query_err)?;
            let refresh = diesel::delete(
                refresh_tokens::table.filter(
                    refresh_tokens::expires_at
                        .le(now)
                        .or(refresh_tokens::idle_expires_at.le(now)),
                ),
            )
            .execute(c)
            .map_err(query_err)?;
            let revoked =
                diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.le(now)))
                    .execute(c)
                    .map_err(query_err)?;
            let pending = diesel::delete(
                upstream_requests::table.filter(upstream_requests::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            let logouts = diesel::delete(
                logout_continuations::table.filter(logout_continuations::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            let assertions = diesel::delete(
                saml_assertions::table.filter(saml_assertions::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            let journeys = diesel::delete(
                super::schema::login_transactions::table
                    .filter(super::schema::login_transactions::expires_at.le(now)),
            )
            .execute(c)
            .map_err(query_err)?;
            Ok((codes + refresh + revoked + pending + logouts + assertions + journeys) as u64)
        })
    }

    fn secret_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: UnixTime,
    ) -> Result<Vec<u8>, StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(secrets::table)
                .values((
                    secrets::name.eq(name),
                    secrets::value.eq(candidate),
                    secrets::created_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .map_err(query_err)?;
            secrets::table
                .find(name)
                .select(secrets::value)
                .first::<Vec<u8>>(c)
                .map_err(query_err)
        })
    }

    fn replace_secret(&self, name: &str, value: &[u8], now: UnixTime) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(secrets::table)
                .values((
                    secrets::name.eq(name),
                    secrets::value.eq(value),
                    secrets::created_at.eq(now),
                ))
                .on_conflict(secrets::name)
                .do_update()
                .set((secrets::value.eq(value), secrets::created_at.eq(now)))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn insert_audit_events(&self, events: &[AuditRecord]) -> Result<(), StorageError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<NewAuditRow<'_>> = events.iter().map(NewAuditRow::from_record).collect();
        with_conn!(write self, |c| {
            c.transaction(|c| {
                // Bounded statements: SQLite allows at most 32,766 bound values per statement.
                for chunk in rows.chunks(500) {
                    diesel::insert_into(audit_events::table)
                        .values(chunk)
                        .execute(c)?;
                }
                Ok(())
            })
            .map_err(query_err)
        })
    }

    fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        let rows: Vec<AuditTuple> = with_conn!(self, |c| {
            let mut query = audit_events::table.into_boxed();
            if let Some(u) = &q.user_id {
                query = query.filter(audit_events::user_id.eq(u.clone()));
            }
            if let Some(k) = &q.kind {
                query = query.filter(audit_events::kind.eq(k.clone()));
            }
            if let Some(t) = q.since {
                query = query.filter(audit_events::at.ge(t));
            }
            if let Some(t) = q.until {
                query = query.filter(audit_events::at.lt(t));
            }
            if let Some(id) = q.before_id {
                query = query.filter(audit_events::id.lt(id));
            }
            query
                .order(audit_events::id.desc())
                .limit(q.limit)
                .load::<AuditTuple>(c)
                .map_err(query_err)
        })?;
        Ok(rows.into_iter().map(audit_from_tuple).collect())
    }

    fn delete_audit_events_before(&self, before: UnixTime) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(audit_events::table.filter(audit_events::at.lt(before)))
                .execute(c)
                .map(|n| n as u64)
                .map_err(query_err)
        })
    }

    fn login_lock(&self, account: &str) -> Result<Option<LoginLock>, StorageError> {
        let row: Option<(i64, i64, i64)> = with_conn!(self, |c| {
            login_failures::table
                .find(account)
                .select((
                    login_failures::failures,
                    login_failures::last_failure_at,
                    login_failures::locked_until,
                ))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(
            row.map(|(failures, last_failure_at, locked_until)| LoginLock {
                failures,
                last_failure_at,
                locked_until,
            }),
        )
    }

    fn record_login_failure(
        &self,
        account: &str,
        now: UnixTime,
        window_start: UnixTime,
        lock_until: &dyn Fn(i64) -> UnixTime,
    ) -> Result<LoginLock, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                diesel::insert_into(login_failures::table)
                    .values((
                        login_failures::account.eq(account),
                        login_failures::failures.eq(0i64),
                        login_failures::last_failure_at.eq(now),
                        login_failures::locked_until.eq(0i64),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)?;
                // The row lock taken by the first update serialises concurrent failures.
                diesel::update(
                    login_failures::table
                        .find(account)
                        .filter(login_failures::last_failure_at.lt(window_start)),
                )
                .set(login_failures::failures.eq(0i64))
                .execute(c)?;
                diesel::update(login_failures::table.find(account))
                    .set((
                        login_failures::failures.eq(login_failures::failures + 1i64),
                        login_failures::last_failure_at.eq(now),
                    ))
                    .execute(c)?;
                let (failures, locked_until): (i64, i64) = login_failures::table
                    .find(account)
                    .select((login_failures::failures, login_failures::locked_until))
                    .first(c)?;
                let locked_until = locked_until.max(lock_until(failures));
                diesel::update(login_failures::table.find(account))
                    .set(login_failures::locked_until.eq(locked_until))
                    .execute(c)?;
                Ok(LoginLock {
                    failures,
                    last_failure_at: now,
                    locked_until,
                })
            })
            .map_err(query_err)
        })
    }

    fn clear_login_failures(&self, account: &str) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(login_failures::table.find(account))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn delete_login_failures_before(&self, before: UnixTime) -> Result<u64, StorageError> {
        with_conn!(write self, |c| {
            diesel::delete(
                login_failures::table
                    .filter(login_failures::last_failure_at.lt(before))
                    .filter(login_failures::locked_until.lt(before)),
            )
            .execute(c)
            .map(|n| n as u64)
            .map_err(query_err)
        })
    }

    fn upstream_link(&self, upstream: &str, subject: &str) -> Result<Option<UserId>, StorageError> {
        let id: Option<String> = with_conn!(self, |c| {
            upstream_links::table
                .find((upstream, subject))
                .select(upstream_links::user_id)
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(id.map(UserId::from_stored))
    }

    fn set_upstream_claims(
        &self,
        upstream: &str,
        subject: &str,
        groups: &[String],
        verified_email: Option<&str>,
    ) -> Result<(), StorageError> {
        let groups =
            serde_json::to_string(groups).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        with_conn!(write self, |c| {
            diesel::update(upstream_links::table.find((upstream, subject)))
                .set((
                    upstream_links::groups.eq(&groups),
                    upstream_links::verified_email.eq(verified_email),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn upstream_claims(
        &self,
        upstream: &str,
        user: &UserId,
    ) -> Result<(Vec<String>, Option<String>), StorageError> {
        let row: Option<(String, Option<String>)> = with_conn!(self, |c| {
            upstream_links::table
                .filter(upstream_links::upstream.eq(upstream))
                .filter(upstream_links::user_id.eq(user.as_str()))
                .select((upstream_links::groups, upstream_links::verified_email))
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        Ok(row
            .map(|(g, e)| (serde_json::from_str(&g).unwrap_or_default(), e))
            .unwrap_or_default())
    }

    fn insert_upstream_link(
        &self,
        upstream: &str,
        subject: &str,
        user: &UserId,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(upstream_links::table)
                .values((
                    upstream_links::upstream.eq(upstream),
                    upstream_links::subject.eq(subject),
                    upstream_links::user_id.eq(user.as_str()),
                    upstream_links::created_at.eq(now),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn insert_user_with_link(
        &self,
        user: &User,
        upstream: &str,
        subject: &str,
    ) -> Result<(), StorageError> {
        let row = UserRow::from_user(user);
        with_conn!(write self, |c| {
            c.transaction(|c| {
                diesel::insert_into(users::table).values(&row).execute(c)?;
                diesel::insert_into(upstream_links::table)
                    .values((
                        upstream_links::upstream.eq(upstream),
                        upstream_links::subject.eq(subject),
                        upstream_links::user_id.eq(user.id.as_str()),
                        upstream_links::created_at.eq(user.created_at),
                    ))
                    .execute(c)
                    .map(|_| ())
            })
            .map_err(query_err)
        })
    }

    fn insert_upstream_request(&self, r: &UpstreamRequest) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(upstream_requests::table)
                .values((
                    upstream_requests::state_hash.eq(&r.state_hash[..]),
                    upstream_requests::upstream.eq(&r.upstream),
                    upstream_requests::binding_hash.eq(&r.binding_hash[..]),
                    upstream_requests::journey_hash.eq(&r.journey_hash[..]),
                    upstream_requests::pending.eq(&r.pending),
                    upstream_requests::expires_at.eq(r.expires_at),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError> {
        type Row = (Vec<u8>, String, Vec<u8>, Vec<u8>, String, i64);
        let row: Option<Row> = with_conn!(self, |c| {
            upstream_requests::table
                .find(&state_hash[..])
                .first(c)
                .optional()
                .map_err(query_err)
        })?;
        let Some((sh, upstream, bh, jh, pending, expires_at)) = row else {
            return Ok(None);
        };
        if now >= expires_at {
            return Ok(None);
        }
        Ok(Some(UpstreamRequest {
            state_hash: hash32(sh, "upstream_requests.state_hash")?,
            upstream,
            binding_hash: hash32(bh, "upstream_requests.binding_hash")?,
            journey_hash: hash32(jh, "upstream_requests.journey_hash")?,
            pending,
            expires_at,
        }))
    }

    fn take_upstream_request(
        &self,
        state_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<UpstreamRequest>, StorageError> {
        type Row = (Vec<u8>, String, Vec<u8>, Vec<u8>, String, i64);
        // Read, then delete by key: the row is this call's only if its delete removed it (a
        // concurrent taker that read it too deletes nothing: READ COMMITTED waits for the first
        // delete, then finds the row gone).
        macro_rules! take {
            ($c:expr) => {{
                let row: Option<Row> = upstream_requests::table
                    .find(&state_hash[..])
                    .first($c)
                    .optional()?;
                match row {
                    Some(r) => {
                        let deleted =
                            diesel::delete(upstream_requests::table.find(&state_hash[..]))
                                .execute($c)?;
                        Ok((deleted == 1).then_some(r))
                    }
                    None => Ok(None),
                }
            }};
        }
        let row: Option<Row> = write_transaction!(self, |c| take!(c)).map_err(query_err)?;
        let Some((sh, upstream, bh, jh, pending, expires_at)) = row else {
            return Ok(None);
        };
        if now >= expires_at {
            return Ok(None);
        }
        Ok(Some(UpstreamRequest {
            state_hash: hash32(sh, "upstream_requests.state_hash")?,
            upstream,
            binding_hash: hash32(bh, "upstream_requests.binding_hash")?,
            journey_hash: hash32(jh, "upstream_requests.journey_hash")?,
            pending,
            expires_at,
        }))
    }

    fn insert_logout_continuation(&self, l: &LogoutContinuation) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(logout_continuations::table)
                .values((
                    logout_continuations::relay_hash.eq(&l.relay_hash[..]),
                    logout_continuations::upstream.eq(&l.upstream),
                    logout_continuations::request_id.eq(&l.request_id),
                    logout_continuations::then_url.eq(&l.then),
                    logout_continuations::expires_at.eq(l.expires_at),
                ))
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn take_logout_continuation(
        &self,
        relay_hash: &[u8; 32],
        now: UnixTime,
    ) -> Result<Option<LogoutContinuation>, StorageError> {
        type Row = (Vec<u8>, String, String, String, i64);
        // As take_upstream_request: read, then delete by key; the row is this call's only if
        // its delete removed it.
        macro_rules! take {
            ($c:expr) => {{
                let row: Option<Row> = logout_continuations::table
                    .find(&relay_hash[..])
                    .first($c)
                    .optional()?;
                match row {
                    Some(r) => {
                        let deleted =
                            diesel::delete(logout_continuations::table.find(&relay_hash[..]))
                                .execute($c)?;
                        Ok((deleted == 1).then_some(r))
                    }
                    None => Ok(None),
                }
            }};
        }
        let row: Option<Row> = write_transaction!(self, |c| take!(c)).map_err(query_err)?;
        let Some((rh, upstream, request_id, then, expires_at)) = row else {
            return Ok(None);
        };
        if now >= expires_at {
            return Ok(None);
        }
        Ok(Some(LogoutContinuation {
            relay_hash: hash32(rh, "logout_continuations.relay_hash")?,
            upstream,
            request_id,
            then,
            expires_at,
        }))
    }

    fn use_saml_assertion(
        &self,
        upstream: &str,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        with_conn!(write self, |c| {
            c.transaction(|c| {
                // A record past its expiry no longer blocks (the sweeper may not have run yet).
                diesel::delete(
                    saml_assertions::table
                        .find((upstream, assertion_id))
                        .filter(saml_assertions::expires_at.le(now)),
                )
                .execute(c)?;
                diesel::insert_into(saml_assertions::table)
                    .values((
                        saml_assertions::upstream.eq(upstream),
                        saml_assertions::assertion_id.eq(assertion_id),
                        saml_assertions::expires_at.eq(expires_at),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)
                    .map(|n| n == 1)
            })
            .map_err(query_err)
        })
    }

    fn insert_upstream_session(&self, s: &UpstreamSessionRecord) -> Result<(), StorageError> {
        with_conn!(write self, |c| {
            diesel::insert_into(upstream_sessions::table)
                .values(s)
                .execute(c)
                .map(|_| ())
                .map_err(query_err)
        })
    }

    fn upstream_session(&self, sid: &str) -> Result<Option<UpstreamSessionRecord>, StorageError> {
        with_conn!(self, |c| {
            upstream_sessions::table
                .find(sid)
                .first(c)
                .optional()
                .map_err(query_err)
        })
    }

    fn upstream_sessions_by_name_id(
        &self,
        upstream: &str,
        name_id: &str,
    ) -> Result<Vec<UpstreamSessionRecord>, StorageError> {
        with_conn!(self, |c| {
            upstream_sessions::table
                .filter(upstream_sessions::upstream.eq(upstream))
                .filter(upstream_sessions::name_id.eq(name_id))
                .load(c)
                .map_err(query_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{PoolSettings, is_outage_message, query_err, with_timeouts};
    use crate::storage::StorageError;

    #[test]
    fn outage_messages_are_unavailable_not_query_errors() {
        for m in [
            "terminating connection due to administrator command",
            "FATAL:  the database system is starting up",
            "server closed the connection unexpectedly",
            "canceling statement due to statement timeout",
            "sorry, too many clients already",
            "database is locked",
        ] {
            assert!(is_outage_message(m), "{m}");
        }
        for m in [
            "syntax error at or near",
            "duplicate key value",
            "no such table: x",
        ] {
            assert!(!is_outage_message(m), "{m}");
        }
        assert!(matches!(
            query_err(diesel::result::Error::BrokenTransactionManager),
            StorageError::Unavailable(_)
        ));
        assert!(matches!(
            query_err(diesel::result::Error::NotFound),
            StorageError::Query(_)
        ));
    }

    #[test]
    fn postgres_urls_get_bounded_connects_unless_the_operator_chose() {
        let s = PoolSettings::new(4, Duration::from_secs(5));
        let u = with_timeouts("postgres://u:p@db.internal:5432/c?sslmode=require", &s);
        let parsed = url::Url::parse(&u).unwrap();
        let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert!(q.contains(&("sslmode".into(), "require".into())), "{u}");
        assert!(q.contains(&("connect_timeout".into(), "2".into())), "{u}");
        assert!(
            q.contains(&("tcp_user_timeout".into(), "6000".into())),
            "{u}"
        );
        assert_eq!(parsed.password(), Some("p"));
        let own = with_timeouts("postgres://db/c?connect_timeout=9&tcp_user_timeout=1", &s);
        assert_eq!(own, "postgres://db/c?connect_timeout=9&tcp_user_timeout=1");
    }
}
