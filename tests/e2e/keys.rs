//! Signing keys: rotation publishes a key before it signs and keeps the old one published while
//! its tokens live; a client registered at run time gets a key for its algorithm on first use.

use concierge::clock::OsEntropy;
use concierge::domain::jose::Alg;
use concierge::domain::kek::KeyEncryptionKey;
use concierge::jwt;
use concierge::provider::keys::KeyRing;
use serde_json::{Value, json};

use crate::helpers::{SECRET, START, spawn_provider};
use crate::per_backend_async;
use crate::support::{Backend, fresh_db, open_store};

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn signer_kid(ring: &KeyRing, now: i64) -> String {
    ring.with_signer(Alg::ES256, now, |kid, _| kid.to_owned())
        .unwrap()
}

async fn rotation_publishes_first_and_retires_late(b: Backend) {
    let Some(db) = fresh_db(b) else { return };
    let store = open_store(&db);
    let ring = KeyRing::new(KeyEncryptionKey::new([9; 32]));
    ring.ensure(store.as_ref(), &OsEntropy, &[Alg::ES256], START)
        .unwrap();
    let old = signer_kid(&ring, START);
    let token = ring
        .with_signer(Alg::ES256, START, |kid, s| {
            jwt::sign(s, Alg::ES256, kid, "JWT", &json!({"a": 1}))
        })
        .unwrap()
        .unwrap();

    let new = ring
        .rotate(store.as_ref(), &OsEntropy, Alg::ES256, START + 10, 600)
        .unwrap();
    let max_ttl = 960;
    // Published at once, but the old key keeps signing until the publish delay is over.
    assert!(kids(&ring.jwks(START + 10, max_ttl)).contains(&new));
    assert_eq!(signer_kid(&ring, START + 10), old);
    assert_eq!(signer_kid(&ring, START + 610), new);
    // The old key stays published while its tokens may live, then goes.
    assert!(kids(&ring.jwks(START + 610, max_ttl)).contains(&old));
    jwt::verify(&token, |kid| ring.verifier(kid)).unwrap();
    assert!(!kids(&ring.jwks(START + 610 + max_ttl, max_ttl)).contains(&old));

    // Another instance (a fresh ring on the same database) serves the same set.
    let other = KeyRing::new(KeyEncryptionKey::new([9; 32]));
    other.reload(store.as_ref()).unwrap();
    assert_eq!(
        kids(&other.jwks(START + 10, max_ttl)),
        kids(&ring.jwks(START + 10, max_ttl))
    );
    // A wrong key-encryption key fails before writing anything.
    let wrong = KeyRing::new(KeyEncryptionKey::new([1; 32]));
    let before = concierge::storage::Store::signing_keys(store.as_ref())
        .unwrap()
        .len();
    assert!(
        wrong
            .rotate(store.as_ref(), &OsEntropy, Alg::ES256, START + 20, 600)
            .is_err()
    );
    assert_eq!(
        concierge::storage::Store::signing_keys(store.as_ref())
            .unwrap()
            .len(),
        before
    );
}

async fn a_client_registered_at_run_time_gets_a_key_for_its_algorithm(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let cfg: concierge::domain::client::ClientConfig = serde_json::from_value(json!({
        "id": "late", "channel": "api", "secret_sha256": concierge::domain::client::hash_secret(SECRET),
        "grant_types": ["client_credentials"], "scopes": ["x"], "signing_alg": "EdDSA"
    }))
    .unwrap();
    concierge::provider::clients::register(app.store.as_ref(), &cfg, START).unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/token", app.base))
        .basic_auth("late", Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    let header = v["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let jwks: Value = serde_json::from_str(
        &reqwest::get(format!("{}/jwks", app.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(kids(&jwks).contains(&header["kid"].as_str().unwrap().to_owned()));
}

per_backend_async!(
    rotation_publishes_first_and_retires_late,
    a_client_registered_at_run_time_gets_a_key_for_its_algorithm
);
