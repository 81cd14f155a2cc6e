//! The signing floor: one JWT sign or verify per algorithm, through the broker's own key ring.
//! `taskset -c 0 cargo bench -p concierge --bench jwt`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use concierge::clock::OsEntropy;
use concierge::config::DatabaseUrl;
use concierge::domain::jose::Alg;
use concierge::domain::kek::KeyEncryptionKey;
use concierge::jwt;
use concierge::provider::keys::KeyRing;
use concierge::storage::{DieselStore, Store};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn jwt_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        DieselStore::open(
            &DatabaseUrl::Sqlite(dir.path().join("k.db")),
            2,
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    store.migrate().unwrap();
    let ring = KeyRing::new(KeyEncryptionKey::new([3; 32]));
    let algs = [Alg::RS256, Alg::ES256, Alg::EdDSA];
    ring.ensure(store.as_ref() as &dyn Store, &OsEntropy, &algs, 0)
        .unwrap();
    let claims = serde_json::json!({"iss": "https://id.example.com", "sub": "u", "aud": "api", "exp": 1, "iat": 0,
        "jti": "abcdefghijklmnopqrstuvwxyz", "client_id": "svc", "scope": "api:read"});
    let mut g = c.benchmark_group("jwt");
    g.throughput(Throughput::Elements(1));
    for alg in algs {
        let token = ring
            .with_signer(alg, 0, |kid, s| jwt::sign(s, alg, kid, "at+jwt", &claims))
            .unwrap()
            .unwrap();
        g.bench_function(format!("sign/{}", alg.as_str()), |b| {
            b.iter(|| {
                ring.with_signer(alg, 0, |kid, s| jwt::sign(s, alg, kid, "at+jwt", &claims))
                    .unwrap()
                    .unwrap()
            })
        });
        g.bench_function(format!("verify/{}", alg.as_str()), |b| {
            b.iter(|| jwt::verify(&token, |kid| ring.verifier(kid)).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = jwt_bench
}
criterion_main!(benches);
