//! Session check per request: cookie value -> hash -> stored record -> idle and absolute checks
//! -> in-memory last-seen bump, on SQLite (and PostgreSQL when CONCIERGE_BENCH_PG_URL is set).
//! Run pinned to one core: `taskset -c 0 cargo bench -p concierge --bench session_check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use concierge::clock::{OsEntropy, SystemClock};
use concierge::config::{DatabaseUrl, Settings};
use concierge::domain::{Channel, Email, UserId};
use concierge::session::{NewSession, SessionManager, SessionToken};
use concierge::storage::{DieselStore, Store, User};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SESSIONS: usize = 10_000;

fn setup(url: DatabaseUrl) -> (SessionManager, Vec<SessionToken>) {
    let store = Arc::new(DieselStore::open(&url, 4, Duration::from_secs(5)).unwrap());
    store.migrate().unwrap();
    let user = User {
        id: UserId::new_random(&OsEntropy),
        email: Email::parse(&format!("bench-{}@example.com", std::process::id())).unwrap(),
        name: String::new(),
        password_hash: None,
        disabled: false,
        created_at: 0,
        updated_at: 0,
        tokens_valid_after: 0,
    };
    store.insert_user(&user).unwrap();
    let settings = Settings::load(None, Vec::<(String, String)>::new()).unwrap();
    let manager = SessionManager::new(
        store,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        &settings.session,
    );
    let tokens = (0..SESSIONS)
        .map(|_| {
            manager
                .create(NewSession {
                    user_id: user.id.clone(),
                    channel: Channel::Web,
                    user_agent: "Mozilla/5.0 (X11; Linux x86_64) bench".into(),
                    ip: "127.0.0.1".into(),
                    upstream: "local".into(),
                    amr: vec!["pwd".into()],
                    upstream_acr: None,
                })
                .unwrap()
                .0
        })
        .collect();
    (manager, tokens)
}

fn bench_backend(c: &mut Criterion, name: &str, url: DatabaseUrl) {
    let (manager, tokens) = setup(url);
    let mut group = c.benchmark_group("session_check");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 7919) % tokens.len();
            let s = manager.check(tokens[i].as_cookie_value()).unwrap();
            assert!(s.is_some());
        })
    });
    group.finish();
    manager.flush_touches().unwrap();
}

fn session_check(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    bench_backend(
        c,
        "sqlite",
        DatabaseUrl::Sqlite(dir.path().join("bench.db")),
    );
    if let Ok(url) = std::env::var("CONCIERGE_BENCH_PG_URL") {
        bench_backend(c, "postgres", DatabaseUrl::Postgres(url));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = session_check
}
criterion_main!(benches);
