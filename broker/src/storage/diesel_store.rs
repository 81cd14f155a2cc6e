//! Owns the diesel implementation of [`Store`](super::Store) for SQLite and PostgreSQL: the pool,
//! `with_conn!` (each query written once for both backends), and one file per store role below.

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use super::StorageError;
use crate::config::DatabaseUrl;

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
/// A database that fails again within [`FLAP`] of answering is the same outage: a shutdown
/// that still takes a connection or two while it kills the others, or a restart's first
/// moments, is audited once, not once per flap.
#[derive(Debug)]
struct Health {
    down: std::sync::atomic::AtomicBool,
    outages: std::sync::atomic::AtomicU64,
    /// When the database last answered again after an outage, in milliseconds since `base`
    /// (0: never).
    back_at: std::sync::atomic::AtomicU64,
    base: std::time::Instant,
}

/// How soon after coming back a failure still belongs to the same outage.
const FLAP: Duration = Duration::from_secs(5);

impl Default for Health {
    fn default() -> Self {
        Self {
            down: Default::default(),
            outages: Default::default(),
            back_at: Default::default(),
            base: std::time::Instant::now(),
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn failed(&self) {
        self.failed_at(self.now_ms());
    }

    fn answered(&self) {
        self.answered_at(self.now_ms());
    }

    fn failed_at(&self, now_ms: u64) {
        use std::sync::atomic::Ordering;
        if !self.down.swap(true, Ordering::AcqRel) {
            let back = self.back_at.load(Ordering::Acquire);
            let flap = u64::try_from(FLAP.as_millis()).unwrap_or(u64::MAX);
            if back == 0 || now_ms.saturating_sub(back) >= flap {
                self.outages.fetch_add(1, Ordering::AcqRel);
                tracing::warn!("database unavailable: answering 503 until it is back");
            }
        }
    }

    fn answered_at(&self, now_ms: u64) {
        use std::sync::atomic::Ordering;
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            self.back_at.store(now_ms, Ordering::Release);
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

fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32], StorageError> {
    v.as_slice()
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("{what} is not 32 bytes")))
}

fn split_amr(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

mod audit;
mod clients;
mod grants;
mod journey;
mod keys;
mod lockout;
mod logout;
mod mfa;
mod saml_apps;
mod sessions;
mod store;
mod upstream;
mod users;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Health, PoolSettings, is_outage_message, query_err, with_timeouts};
    use crate::storage::StorageError;

    #[test]
    fn an_outage_is_counted_once_even_if_the_database_flaps() {
        use std::sync::atomic::Ordering;
        let h = Health::default();
        let outages = |h: &Health| h.outages.load(Ordering::Acquire);
        h.answered_at(10);
        assert_eq!(outages(&h), 0, "answering is not an outage");
        h.failed_at(1_000);
        h.failed_at(1_100);
        assert_eq!(outages(&h), 1);
        // Back for a moment (a shutdown still taking a connection), down again: the same one.
        h.answered_at(1_200);
        h.failed_at(1_300);
        assert_eq!(outages(&h), 1, "a flap is the same outage");
        assert!(h.down.load(Ordering::Acquire));
        // Back for longer than the flap window, then down: a new outage.
        h.answered_at(30_000);
        assert!(!h.down.load(Ordering::Acquire));
        h.failed_at(30_000 + 5_000);
        assert_eq!(outages(&h), 2);
    }

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
