//! Shared test support: a fresh, migrated database per test on either backend.
//! PostgreSQL comes from `CONCIERGE_TEST_PG_URL` (an admin URL; `scripts/test.sh` starts a real
//! server and sets it). Without it the PostgreSQL tests fail, unless
//! `CONCIERGE_TEST_SKIP_POSTGRES=1` says to skip them on purpose.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use concierge::config::DatabaseUrl;
use concierge::storage::{DieselStore, Store};
use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test: on drop the SQLite folder is removed and the
/// PostgreSQL database dropped (`WITH (FORCE)`: pool connections still open are closed).
pub struct TestDb {
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name) of a PostgreSQL test database.
    pg: Option<(String, String)>,
}

impl TestDb {
    /// The PostgreSQL database's name (`None` for SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, name)| name.as_str())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = &self.pg else {
            return;
        };
        let dropped = PgConnection::establish(admin)
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = dropped {
            eprintln!("warning: could not drop test database {name}: {e}");
        }
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    concierge::clock::Entropy::fill(&concierge::clock::OsEntropy, &mut b);
    hex::encode(b)
}

/// None when PostgreSQL is skipped on purpose.
pub fn fresh_db(backend: Backend) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = DatabaseUrl::Sqlite(dir.path().join("concierge.db"));
            Some(TestDb {
                url,
                _dir: Some(dir),
                pg: None,
            })
        }
        Backend::Postgres => {
            let Ok(admin) = std::env::var("CONCIERGE_TEST_PG_URL") else {
                if std::env::var("CONCIERGE_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
                    eprintln!("PostgreSQL test skipped: CONCIERGE_TEST_SKIP_POSTGRES=1");
                    return None;
                }
                panic!(
                    "CONCIERGE_TEST_PG_URL is not set: run scripts/test.sh (it starts PostgreSQL), \
                     or set CONCIERGE_TEST_SKIP_POSTGRES=1 to skip PostgreSQL on purpose"
                );
            };
            let name = format!("concierge_test_{}", random_suffix());
            let mut conn =
                PgConnection::establish(&admin).expect("connect to CONCIERGE_TEST_PG_URL");
            conn.batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&name);
            Some(TestDb {
                url: DatabaseUrl::Postgres(url.to_string()),
                _dir: None,
                pg: Some((admin, name)),
            })
        }
    }
}

pub fn open_store(db: &TestDb) -> Arc<DieselStore> {
    let store = DieselStore::open(&db.url, 4, Duration::from_secs(5)).unwrap();
    store.migrate().unwrap();
    Arc::new(store)
}

/// Generates one `#[test]` per backend for each listed function `fn(Backend)`.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::support::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::support::Backend::Postgres) } )*
        }
    };
}

/// Like `per_backend!` for `async fn(Backend)` tests.
#[macro_export]
macro_rules! per_backend_async {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::support::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::support::Backend::Postgres).await } )*
        }
    };
}
