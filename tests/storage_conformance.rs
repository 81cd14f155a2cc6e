//! The storage conformance suite: every backend of `Store` must pass every test here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "conformance/journey.rs"]
mod journey;
#[path = "conformance/logout_continuations.rs"]
mod logout_continuations;
#[path = "conformance/webauthn.rs"]
mod webauthn;

use std::sync::Arc;

use concierge::domain::{Channel, Email, UserId};
use concierge::storage::{
    AuditQuery, AuditRecord, AuthCodeRecord, CappedInsert, CodeUse, DieselStore, LogoutDelivery,
    MfaStore, RefreshRecord, Rotation, SamlAppRecord, SessionCap, SessionRecord, SigningKeyRecord,
    StorageError, Store, User,
};
use support::{Backend, TestDb, fresh_db, open_store};

fn with_store(backend: Backend, f: impl FnOnce(&Arc<DieselStore>)) {
    let Some(db): Option<TestDb> = fresh_db(backend) else {
        return;
    };
    let store = open_store(&db);
    f(&store);
}

fn user(id: &str, email: &str) -> User {
    User {
        id: UserId::from_stored(id.into()),
        email: Email::parse(email).unwrap(),
        name: "Some One".into(),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into()),
        disabled: false,
        created_at: 1_000,
        updated_at: 1_000,
        tokens_valid_after: 0,
    }
}

fn session(key: u8, user: &str, last_seen: i64, idle: i64, expires_at: i64) -> SessionRecord {
    SessionRecord {
        key: [key; 32],
        sid: format!("sid-{key}"),
        user_id: UserId::from_stored(user.into()),
        channel: Channel::Mobile,
        user_agent: "Agent/1.0 (한국어)".into(),
        ip: "192.0.2.7".into(),
        upstream: "local".into(),
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: last_seen,
        last_seen,
        idle_timeout: idle,
        expires_at,
        upstream_acr: Some("urn:upstream:mfa".into()),
    }
}

fn migrations_are_idempotent(b: Backend) {
    with_store(b, |s| {
        assert!(
            s.migrate().unwrap().is_empty(),
            "second migrate applies nothing"
        );
        s.ping().unwrap();
        assert_eq!(
            s.backend(),
            match b {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            }
        );
    });
}

fn users_round_trip_and_emails_are_unique(b: Backend) {
    with_store(b, |s| {
        let u = user("u1", "a@example.com");
        s.insert_user(&u).unwrap();
        assert_eq!(s.user_by_email(&u.email).unwrap(), Some(u.clone()));
        assert_eq!(s.user_by_id(&u.id).unwrap(), Some(u.clone()));
        let dup = user("u2", "A@example.com");
        assert!(matches!(
            s.insert_user(&dup),
            Err(StorageError::Conflict(_))
        ));
        assert_eq!(
            s.user_by_email(&Email::parse("nobody@example.com").unwrap())
                .unwrap(),
            None
        );
        assert_eq!(
            s.user_by_id(&UserId::from_stored("nope".into())).unwrap(),
            None
        );
    });
}

fn password_and_disabled_updates(b: Backend) {
    with_store(b, |s| {
        let u = user("u1", "a@example.com");
        s.insert_user(&u).unwrap();
        assert!(s.set_password_hash(&u.id, "$argon2id$new", 2_000).unwrap());
        assert!(s.set_disabled(&u.id, true, 2_001).unwrap());
        let got = s.user_by_id(&u.id).unwrap().unwrap();
        assert_eq!(got.password_hash.as_deref(), Some("$argon2id$new"));
        assert!(got.disabled);
        assert_eq!(got.updated_at, 2_001);
        let ghost = UserId::from_stored("ghost".into());
        assert!(!s.set_password_hash(&ghost, "x", 1).unwrap());
        assert!(!s.set_disabled(&ghost, true, 1).unwrap());
    });
}

fn sessions_round_trip_with_binary_keys(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        let mut rec = session(0, "u1", 100, 60, 1_000);
        for (i, byte) in rec.key.iter_mut().enumerate() {
            *byte = (i * 8) as u8 ^ 0xff;
        }
        s.insert_session(&rec).unwrap();
        assert_eq!(s.session(&rec.key).unwrap(), Some(rec.clone()));
        assert_eq!(s.session(&[9; 32]).unwrap(), None);
        assert!(
            s.insert_session(&rec).is_err(),
            "the same key twice is refused"
        );
    });
}

fn touches_only_move_forward(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_session(&session(1, "u1", 100, 60, 1_000)).unwrap();
        s.insert_session(&session(2, "u1", 100, 60, 1_000)).unwrap();
        s.touch_sessions(&[([1; 32], 150), ([2; 32], 50), ([3; 32], 999)])
            .unwrap();
        assert_eq!(s.session(&[1; 32]).unwrap().unwrap().last_seen, 150);
        assert_eq!(s.session(&[2; 32]).unwrap().unwrap().last_seen, 100);
        assert_eq!(
            s.session(&[3; 32]).unwrap(),
            None,
            "touching a missing session creates nothing"
        );
        s.touch_sessions(&[]).unwrap();
    });
}

fn sessions_of_a_user_are_listed_and_ended_together(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_user(&user("u2", "b@example.com")).unwrap();
        s.insert_session(&session(1, "u1", 200, 60, 1_000)).unwrap();
        s.insert_session(&session(2, "u1", 100, 60, 1_000)).unwrap();
        s.insert_session(&session(3, "u2", 100, 60, 1_000)).unwrap();
        let mine = s
            .sessions_of_user(&UserId::from_stored("u1".into()))
            .unwrap();
        assert_eq!(
            mine.iter().map(|r| r.key[0]).collect::<Vec<_>>(),
            vec![2, 1],
            "oldest first"
        );
        assert!(s.delete_session(&[1; 32]).unwrap());
        assert!(!s.delete_session(&[1; 32]).unwrap());
        assert_eq!(
            s.delete_user_sessions(&UserId::from_stored("u1".into()))
                .unwrap(),
            1
        );
        assert!(
            s.session(&[3; 32]).unwrap().is_some(),
            "other users keep theirs"
        );
    });
}

fn expired_sessions_are_swept_with_grace(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_session(&session(1, "u1", 100, 60, 10_000))
            .unwrap(); // idle until 160
        s.insert_session(&session(2, "u1", 100, 600, 150)).unwrap(); // absolute end 150
        s.insert_session(&session(3, "u1", 100, 600, 10_000))
            .unwrap(); // live
        // At 165 with 10 s grace: session 1 is idle by 5 s, within grace: kept; 2 is past its end.
        assert_eq!(s.delete_expired_sessions(165, 10).unwrap(), 1);
        assert!(s.session(&[2; 32]).unwrap().is_none());
        assert!(s.session(&[1; 32]).unwrap().is_some());
        assert_eq!(s.delete_expired_sessions(171, 10).unwrap(), 1);
        assert!(s.session(&[1; 32]).unwrap().is_none());
        assert!(s.session(&[3; 32]).unwrap().is_some());
    });
}

fn expired_sessions_are_taken_once_by_concurrent_sweeps(b: Backend) {
    let Some(db) = fresh_db(b) else {
        return;
    };
    // Two stores on one database: two instances sweeping.
    let stores = [open_store(&db), open_store(&db)];
    stores[0].insert_user(&user("u1", "a@example.com")).unwrap();
    for k in 1..=40u8 {
        // Half past their absolute end, half idle (at 1_000 with 10 s of grace); one live.
        let (last_seen, expires_at) = if k % 2 == 0 {
            (900, 950)
        } else {
            (100, 10_000)
        };
        stores[0]
            .insert_session(&session(k, "u1", last_seen, 600, expires_at))
            .unwrap();
    }
    stores[0]
        .insert_session(&session(99, "u1", 900, 600, 10_000))
        .unwrap();
    let barrier = std::sync::Barrier::new(8);
    let taken: Vec<SessionRecord> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (s, barrier) = (Arc::clone(&stores[i % 2]), &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    // Small batches, repeated, as the sweep does.
                    let mut mine = Vec::new();
                    loop {
                        let batch = s.take_expired_sessions(1_000, 10, 7).unwrap();
                        let done = batch.len() < 7;
                        mine.extend(batch);
                        if done {
                            return mine;
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut keys: Vec<u8> = taken.iter().map(|r| r.key[0]).collect();
    keys.sort_unstable();
    assert_eq!(keys, (1..=40).collect::<Vec<u8>>(), "each exactly once");
    let k2 = taken.iter().find(|r| r.key[0] == 2).unwrap();
    assert_eq!(k2, &session(2, "u1", 900, 600, 950), "returned whole");
    assert!(stores[1].session(&[99; 32]).unwrap().is_some(), "live kept");
    assert!(
        stores[1]
            .take_expired_sessions(1_000, 10, 100)
            .unwrap()
            .is_empty()
    );
}

fn first_secret_wins(b: Backend) {
    with_store(b, |s| {
        assert_eq!(s.secret_or_insert("k", b"first", 1).unwrap(), b"first");
        assert_eq!(s.secret_or_insert("k", b"second", 2).unwrap(), b"first");
        assert_eq!(
            s.secret_or_insert("other", &[0, 255, 7], 3).unwrap(),
            vec![0, 255, 7]
        );
    });
}

fn sealed_values_are_listed_and_resealed_compare_and_set(b: Backend) {
    use concierge::storage::{SealedRef, SealedValue};
    with_store(b, |s| {
        assert!(s.sealed_values().unwrap().is_empty());
        assert_eq!(s.secret("root").unwrap(), None);
        s.replace_secret("root", b"r1", 5).unwrap();
        assert_eq!(s.secret("root").unwrap(), Some((b"r1".to_vec(), 5)));
        s.insert_signing_key(&SigningKeyRecord {
            kid: "k1".into(),
            alg: "ES256".into(),
            private_key_enc: vec![0, 1, 255],
            public_jwk: "{}".into(),
            created_at: 1,
            active_at: 1,
            retired_at: None,
        })
        .unwrap();
        s.insert_user(&user("u1", "u1@example.com")).unwrap();
        let u = UserId::from_stored("u1".into());
        assert!(s.put_mfa_state("totp", &u, None, b"seed", 10).unwrap());
        let secret = SealedRef::Secret {
            name: "root".into(),
        };
        let key = SealedRef::SigningKey { kid: "k1".into() };
        let state = SealedRef::MfaState {
            plugin: "totp".into(),
            user: "u1".into(),
        };
        let all = s.sealed_values().unwrap();
        assert_eq!(
            all,
            vec![
                SealedValue {
                    at: secret.clone(),
                    value: b"r1".to_vec()
                },
                SealedValue {
                    at: key.clone(),
                    value: vec![0, 1, 255]
                },
                SealedValue {
                    at: state.clone(),
                    value: b"seed".to_vec()
                },
            ]
        );
        // Replaced only while the value is still the one read.
        assert!(s.reseal_value(&secret, b"r1", b"r1'").unwrap());
        assert!(!s.reseal_value(&secret, b"r1", b"lost").unwrap());
        assert_eq!(s.secret("root").unwrap(), Some((b"r1'".to_vec(), 5)));
        assert!(s.reseal_value(&key, &[0, 1, 255], &[9]).unwrap());
        assert!(!s.reseal_value(&key, &[0, 1, 255], &[8]).unwrap());
        assert_eq!(s.signing_keys().unwrap()[0].private_key_enc, vec![9]);
        assert!(s.reseal_value(&state, b"seed", b"seed'").unwrap());
        assert!(!s.reseal_value(&state, b"seed", b"x").unwrap());
        // A plugin state keeps its version: a writer that read it may still write.
        let row = s.mfa_state("totp", &u).unwrap().unwrap();
        assert_eq!((row.version, row.data.as_slice()), (1, &b"seed'"[..]));
        assert!(s.put_mfa_state("totp", &u, Some(1), b"next", 11).unwrap());
        // A record that does not exist is not replaced.
        let gone = SealedRef::SigningKey { kid: "k2".into() };
        assert!(!s.reseal_value(&gone, &[9], &[7]).unwrap());
    });
}

fn sessions_require_an_existing_user(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_session(&session(1, "u1", 100, 60, 1_000)).unwrap();
        // A session for a user that does not exist violates the foreign key.
        assert!(
            s.insert_session(&session(2, "nobody", 100, 60, 1_000))
                .is_err()
        );
    });
}

fn code(hash: u8) -> AuthCodeRecord {
    AuthCodeRecord {
        code_hash: [hash; 32],
        client_id: "app".into(),
        redirect_uri: "https://app.example/cb".into(),
        user_id: UserId::from_stored("u1".into()),
        sid: "sid-1".into(),
        scope: "openid email".into(),
        nonce: Some("n".into()),
        code_challenge: "c".repeat(43),
        auth_time: 100,
        acr: None,
        amr: vec!["pwd".into()],
        expires_at: 160,
        consumed_at: None,
    }
}

fn codes_are_consumed_exactly_once(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_code(&code(1)).unwrap();
        let CodeUse::First(c) = s.consume_code(&[1; 32], 110).unwrap() else {
            panic!("first use")
        };
        assert_eq!(c.nonce.as_deref(), Some("n"));
        assert_eq!(c.amr, vec!["pwd".to_owned()]);
        let CodeUse::Replayed(c) = s.consume_code(&[1; 32], 111).unwrap() else {
            panic!("replay")
        };
        assert_eq!(c.consumed_at, Some(110), "the first use is kept");
        assert_eq!(s.consume_code(&[2; 32], 111).unwrap(), CodeUse::Unknown);
        assert_eq!(s.delete_expired_grants(160).unwrap(), 1);
        assert_eq!(s.consume_code(&[1; 32], 161).unwrap(), CodeUse::Unknown);
    });
}

fn a_code_is_redeemed_with_its_refresh_token_in_one_transaction(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_code(&code(1)).unwrap();
        // Reading a code spends nothing.
        assert_eq!(s.code(&[1; 32]).unwrap().unwrap().consumed_at, None);
        assert_eq!(s.code(&[2; 32]).unwrap(), None);
        // The refresh token cannot be stored (its key is taken): the code stays unspent.
        s.insert_refresh(&refresh(5, "other", "sid-1")).unwrap();
        assert!(matches!(
            s.redeem_code(&[1; 32], 110, Some(&refresh(5, "f1", "sid-1"))),
            Err(StorageError::Conflict(_))
        ));
        assert_eq!(
            s.code(&[1; 32]).unwrap().unwrap().consumed_at,
            None,
            "rolled back with the failed insert"
        );
        // Spent and stored together.
        let CodeUse::First(c) = s
            .redeem_code(&[1; 32], 111, Some(&refresh(6, "f1", "sid-1")))
            .unwrap()
        else {
            panic!("first use")
        };
        assert_eq!(c.consumed_at, Some(111));
        assert_eq!(s.refresh_token(&[6; 32]).unwrap().unwrap().family_id, "f1");
        // A second redemption stores nothing.
        let CodeUse::Replayed(c) = s
            .redeem_code(&[1; 32], 112, Some(&refresh(7, "f1", "sid-1")))
            .unwrap()
        else {
            panic!("replay")
        };
        assert_eq!(c.consumed_at, Some(111), "the first use is kept");
        assert!(s.refresh_token(&[7; 32]).unwrap().is_none());
        assert_eq!(
            s.redeem_code(&[3; 32], 112, Some(&refresh(8, "f3", "sid-1")))
                .unwrap(),
            CodeUse::Unknown
        );
        assert!(s.refresh_token(&[8; 32]).unwrap().is_none());
        // Without a refresh token (a client without the refresh grant).
        s.insert_code(&code(4)).unwrap();
        assert!(matches!(
            s.redeem_code(&[4; 32], 113, None).unwrap(),
            CodeUse::First(_)
        ));
    });
}

fn refresh(hash: u8, family: &str, sid: &str) -> RefreshRecord {
    RefreshRecord {
        token_hash: [hash; 32],
        family_id: family.into(),
        client_id: "app".into(),
        user_id: UserId::from_stored("u1".into()),
        sid: sid.into(),
        scope: "openid".into(),
        auth_time: 100,
        acr: Some("urn:concierge:loa:1".into()),
        amr: vec!["pwd".into()],
        created_at: 100,
        idle_expires_at: 1_000,
        expires_at: 2_000,
        used_at_ms: None,
    }
}

fn refresh_rotation_spends_once_and_reuse_revokes_the_family(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_refresh(&refresh(1, "f1", "sid-a")).unwrap();
        s.insert_refresh(&refresh(2, "f1", "sid-a")).unwrap();
        s.insert_refresh(&refresh(3, "f2", "sid-b")).unwrap();
        s.insert_session(&session(9, "u1", 100, 600, 10_000))
            .unwrap();
        // Rotation spends the old token, stores the new one and touches the session at once.
        let r = s
            .rotate_refresh(
                &[1; 32],
                150_000,
                145_000,
                &refresh(5, "f1", "sid-a"),
                [9; 32],
            )
            .unwrap();
        assert_eq!(r, Rotation::Rotated);
        assert_eq!(
            s.refresh_token(&[1; 32]).unwrap().unwrap().used_at_ms,
            Some(150_000)
        );
        assert!(s.refresh_token(&[5; 32]).unwrap().is_some());
        assert_eq!(s.session(&[9; 32]).unwrap().unwrap().last_seen, 150);
        // Spent at 150 s: presented again with a cut-off 1 ms before (inside the grace) it
        // rotates...
        let r = s
            .rotate_refresh(
                &[1; 32],
                150_400,
                149_999,
                &refresh(6, "f1", "sid-a"),
                [9; 32],
            )
            .unwrap();
        assert_eq!(r, Rotation::Rotated);
        assert_eq!(
            s.refresh_token(&[1; 32]).unwrap().unwrap().used_at_ms,
            Some(150_000),
            "first spend kept"
        );
        // ...with a cut-off at the spend itself (no grace, same millisecond) it is reuse: the
        // family goes and nothing is stored.
        let r = s
            .rotate_refresh(
                &[1; 32],
                150_000,
                150_000,
                &refresh(7, "f1", "sid-a"),
                [9; 32],
            )
            .unwrap();
        assert_eq!(r, Rotation::ReuseDetected);
        for gone in [1u8, 2, 5, 6, 7] {
            assert!(s.refresh_token(&[gone; 32]).unwrap().is_none(), "{gone}");
        }
        // A request that read the token before its family went (a concurrent reuse, a
        // revocation) finds it gone: nothing is stored, no error.
        let r = s
            .rotate_refresh(
                &[2; 32],
                150_500,
                150_000,
                &refresh(8, "f1", "sid-a"),
                [9; 32],
            )
            .unwrap();
        assert_eq!(r, Rotation::Gone);
        assert!(s.refresh_token(&[8; 32]).unwrap().is_none());
        assert!(
            s.refresh_token(&[3; 32]).unwrap().is_some(),
            "other families stay"
        );
        assert_eq!(s.delete_refresh_for_sid("sid-b").unwrap(), 1);
        s.insert_refresh(&refresh(4, "f3", "sid-c")).unwrap();
        assert_eq!(s.delete_expired_grants(1_000).unwrap(), 1, "idle expiry");
    });
}

fn access_token_revocations_are_remembered_until_expiry(b: Backend) {
    with_store(b, |s| {
        assert!(!s.token_state("j1", None, None).unwrap().revoked);
        s.revoke_jti("j1", 500).unwrap();
        s.revoke_jti("j1", 500).unwrap();
        assert!(s.token_state("j1", None, None).unwrap().revoked);
        assert_eq!(s.delete_expired_grants(500).unwrap(), 1);
        assert!(!s.token_state("j1", None, None).unwrap().revoked);
        // A grant's key revokes every token of the grant.
        s.revoke_jti("grant:g1", 700).unwrap();
        assert!(s.token_state("j2", Some("grant:g1"), None).unwrap().revoked);
        assert!(!s.token_state("j2", Some("grant:g2"), None).unwrap().revoked);
        assert!(!s.token_state("grant:g2", None, None).unwrap().revoked);
    });
}

fn signing_keys_are_stored_and_retired(b: Backend) {
    with_store(b, |s| {
        let key = |kid: &str, active_at| SigningKeyRecord {
            kid: kid.into(),
            alg: "ES256".into(),
            private_key_enc: vec![0, 1, 2, 255],
            public_jwk: "{}".into(),
            created_at: 1,
            active_at,
            retired_at: None,
        };
        s.insert_signing_key(&key("k1", 10)).unwrap();
        s.insert_signing_key(&key("k2", 20)).unwrap();
        assert_eq!(s.retire_signing_keys("ES256", "k2", 20).unwrap(), 1);
        assert_eq!(s.retire_signing_keys("RS256", "k2", 20).unwrap(), 0);
        let keys = s.signing_keys().unwrap();
        assert_eq!(
            keys.iter()
                .map(|k| (k.kid.as_str(), k.retired_at))
                .collect::<Vec<_>>(),
            vec![("k1", Some(20)), ("k2", None)]
        );
        assert_eq!(keys[0].private_key_enc, vec![0, 1, 2, 255]);
        assert_eq!(s.delete_signing_keys_retired_before(21).unwrap(), 1);
        assert_eq!(s.signing_keys().unwrap().len(), 1);
    });
}

fn only_one_first_signing_key_per_algorithm_wins(b: Backend) {
    with_store(b, |s| {
        let key = |kid: &str, alg: &str| SigningKeyRecord {
            kid: kid.into(),
            alg: alg.into(),
            private_key_enc: vec![1],
            public_jwk: "{}".into(),
            created_at: 1,
            active_at: 1,
            retired_at: None,
        };
        // Eight instances starting at once: exactly one first key.
        let s2 = Arc::clone(s);
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let s = Arc::clone(&s2);
                    scope.spawn(move || {
                        s.insert_first_signing_key(&key(&format!("k{i}"), "ES256"))
                            .unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
        assert!(
            s.insert_first_signing_key(&key("r1", "RS256")).unwrap(),
            "per algorithm"
        );
        assert_eq!(s.signing_keys().unwrap().len(), 2);
        // A key that only becomes active later does not count (another process's clock).
        let mut early = key("r0", "RS256");
        early.active_at = 0;
        assert!(s.insert_first_signing_key(&early).unwrap());
        // Once every key of the algorithm is retired, a new first key may be stored.
        s.retire_signing_keys("RS256", "none", 5).unwrap();
        assert!(s.insert_first_signing_key(&key("r2", "RS256")).unwrap());
    });
}

fn clients_are_stored_by_id(b: Backend) {
    with_store(b, |s| {
        s.insert_client("app", "{\"id\":\"app\"}", 1).unwrap();
        assert!(matches!(
            s.insert_client("app", "{}", 2),
            Err(StorageError::Conflict(_))
        ));
        assert_eq!(
            s.client_config("app").unwrap().as_deref(),
            Some("{\"id\":\"app\"}")
        );
        assert_eq!(s.list_clients().unwrap().len(), 1);
        assert!(s.delete_client("app").unwrap());
        assert!(!s.delete_client("app").unwrap());
        assert_eq!(s.client_config("app").unwrap(), None);
    });
}

fn saml_apps_are_stored_by_entity_id_and_one_concurrent_add_wins(b: Backend) {
    with_store(b, |s| {
        let app = |config: &str| SamlAppRecord {
            entity_id: "https://sp.example/meta".into(),
            config: config.into(),
            metadata: "<md:EntityDescriptor/>".into(),
            metadata_url: Some("https://sp.example/metadata".into()),
            fetched_at: 10,
            created_at: 10,
        };
        // Eight `saml-apps add` of one entity ID at once: exactly one is stored.
        let s2 = Arc::clone(s);
        let results: Vec<Result<(), StorageError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let s = Arc::clone(&s2);
                    scope.spawn(move || s.insert_saml_app(&app(&format!("{{\"n\":{i}}}"))))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(StorageError::Conflict(_)))),
            "{results:?}"
        );
        let winner = s.saml_app("https://sp.example/meta").unwrap().unwrap();
        assert_eq!(
            winner.metadata_url.as_deref(),
            Some("https://sp.example/metadata")
        );
        assert_eq!(winner.fetched_at, 10);
        assert!(winner.config.starts_with("{\"n\":"));
        // A file-registered one has no URL.
        let mut other = app("{}");
        other.entity_id = "https://a.example".into();
        other.metadata_url = None;
        s.insert_saml_app(&other).unwrap();
        let listed = s.list_saml_apps().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|r| r.entity_id.as_str())
                .collect::<Vec<_>>(),
            ["https://a.example", "https://sp.example/meta"]
        );
        assert_eq!(listed[0], other);
        // A good refresh replaces the copy.
        assert!(
            s.update_saml_app_metadata("https://sp.example/meta", "<new/>", 20)
                .unwrap()
        );
        let r = s.saml_app("https://sp.example/meta").unwrap().unwrap();
        assert_eq!((r.metadata.as_str(), r.fetched_at), ("<new/>", 20));
        assert_eq!(r.config, winner.config, "the options stay");
        assert!(s.delete_saml_app("https://sp.example/meta").unwrap());
        assert!(!s.delete_saml_app("https://sp.example/meta").unwrap());
        assert!(
            !s.update_saml_app_metadata("https://sp.example/meta", "<x/>", 30)
                .unwrap()
        );
        assert_eq!(s.saml_app("https://sp.example/meta").unwrap(), None);
    });
}

fn logout_outbox_and_session_participants(b: Backend) {
    with_store(b, |s| {
        s.add_session_client("sid-1", "a").unwrap();
        s.add_session_client("sid-1", "a").unwrap();
        s.add_session_client("sid-1", "saml:https://sp.example")
            .unwrap();
        s.add_session_client("sid-1", "b").unwrap();
        s.add_session_client("sid-2", "c").unwrap();
        // Read as often as wanted, in order; only this session's.
        for _ in 0..2 {
            assert_eq!(
                s.session_clients("sid-1").unwrap(),
                ["a", "b", "saml:https://sp.example"]
            );
        }
        let mut got = s.take_session_clients("sid-1").unwrap();
        got.sort();
        assert_eq!(got, ["a", "b", "saml:https://sp.example"]);
        assert!(
            s.take_session_clients("sid-1").unwrap().is_empty(),
            "taken once"
        );
        assert!(s.session_clients("sid-1").unwrap().is_empty());
        assert_eq!(s.session_clients("sid-2").unwrap(), ["c"]);
        let d = LogoutDelivery {
            id: "d1".into(),
            client_id: "a".into(),
            uri: "https://a.example/bcl".into(),
            sub: "u-1".into(),
            sid: "sid-1".into(),
            attempts: 0,
            next_attempt_at: 100,
            created_at: 100,
        };
        s.enqueue_logout(&d).unwrap();
        assert!(s.due_logouts(99, 10).unwrap().is_empty());
        assert_eq!(s.due_logouts(100, 10).unwrap(), vec![d.clone()]);
        assert!(s.claim_logout("d1", 100, 130).unwrap(), "first claim wins");
        assert!(
            !s.claim_logout("d1", 100, 130).unwrap(),
            "a second instance loses"
        );
        assert!(s.due_logouts(129, 10).unwrap().is_empty(), "leased");
        s.reschedule_logout("d1", 1, 200).unwrap();
        assert!(s.due_logouts(150, 10).unwrap().is_empty());
        assert_eq!(s.due_logouts(200, 10).unwrap()[0].attempts, 1);
        s.delete_logout("d1").unwrap();
        assert!(s.due_logouts(1_000, 10).unwrap().is_empty());
    });
}

fn sessions_are_found_by_their_public_id(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_session(&session(5, "u1", 100, 60, 1_000)).unwrap();
        assert_eq!(s.session_by_sid("sid-5").unwrap().unwrap().key, [5; 32]);
        let state = s.token_state("nope", None, Some("sid-5")).unwrap();
        assert_eq!(
            state,
            concierge::storage::TokenState {
                revoked: false,
                session: Some(concierge::storage::SessionLiveness {
                    expires_at: 1_000,
                    last_seen: 100,
                    idle_timeout: 60,
                    tokens_valid_after: 0,
                })
            }
        );
        assert_eq!(
            s.token_state("nope", None, Some("sid-6")).unwrap().session,
            None
        );
        assert!(s.session_by_sid("sid-6").unwrap().is_none());
    });
}

fn token_epochs_only_move_forward_and_sessions_are_found_by_client(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_session(&session(5, "u1", 100, 60, 1_000)).unwrap();
        s.insert_session(&session(6, "u1", 200, 60, 1_000)).unwrap();
        let u1 = UserId::from_stored("u1".into());
        assert!(s.set_tokens_valid_after(&u1, 500).unwrap());
        assert!(
            s.set_tokens_valid_after(&u1, 400).unwrap(),
            "exists, but the epoch stays"
        );
        assert_eq!(
            s.token_state("j", None, Some("sid-5"))
                .unwrap()
                .session
                .unwrap()
                .tokens_valid_after,
            500
        );
        assert!(
            !s.set_tokens_valid_after(&UserId::from_stored("ghost".into()), 1)
                .unwrap()
        );
        s.add_session_client("sid-6", "app").unwrap();
        let of_app = s.sessions_of_client("app").unwrap();
        assert_eq!(
            of_app.iter().map(|r| r.sid.as_str()).collect::<Vec<_>>(),
            vec!["sid-6"]
        );
        assert!(s.sessions_of_client("other").unwrap().is_empty());
        assert_eq!(s.all_sessions(10).unwrap().len(), 2);
        assert_eq!(s.all_sessions(1).unwrap()[0].sid, "sid-5", "oldest first");
    });
}

fn audit(at: i64, kind: &str, user: Option<&str>) -> AuditRecord {
    AuditRecord {
        id: 0,
        at,
        kind: kind.into(),
        user_id: user.map(str::to_owned),
        client_id: Some("webapp".into()),
        sid: None,
        ip: Some("2001:db8::1".into()),
        upstream: None,
        reason: Some("이유 / reason".into()),
    }
}

fn audit_events_are_queried_newest_first_and_expire(b: Backend) {
    with_store(b, |s| {
        s.insert_audit_events(&[]).unwrap();
        let batch: Vec<AuditRecord> = (0..1200)
            .map(|i| {
                audit(
                    1_000 + i,
                    if i % 2 == 0 { "a" } else { "b" },
                    (i % 3 == 0).then_some("u1"),
                )
            })
            .collect();
        s.insert_audit_events(&batch).unwrap();
        let q = |f: &dyn Fn(&mut AuditQuery)| {
            let mut q = AuditQuery {
                limit: 5000,
                ..AuditQuery::default()
            };
            f(&mut q);
            s.audit_events(&q).unwrap()
        };
        let all = q(&|_| {});
        assert_eq!(all.len(), 1200, "inserted in chunks, all of them");
        assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        assert_eq!(all[0].at, 2_199);
        assert_eq!(all[0].reason.as_deref(), Some("이유 / reason"));
        assert_eq!(all[0].sid, None);
        assert_eq!(q(&|q| q.kind = Some("a".into())).len(), 600);
        assert_eq!(q(&|q| q.user_id = Some("u1".into())).len(), 400);
        assert_eq!(
            q(&|q| {
                q.since = Some(2_100);
                q.until = Some(2_110)
            })
            .len(),
            10
        );
        let page = q(&|q| q.limit = 7);
        assert_eq!(page.len(), 7);
        let rest = q(&|q| q.before_id = Some(page[6].id));
        assert_eq!(rest.len(), 1193);
        assert_eq!(s.delete_audit_events_before(1_100).unwrap(), 100);
        assert_eq!(q(&|_| {}).len(), 1100);
    });
}

fn login_failures_count_in_a_window_and_lock(b: Backend) {
    with_store(b, |s| {
        let lock_at_3 = |n: i64| if n >= 3 { 5_000 + n } else { 0 };
        assert_eq!(s.login_lock("login:a").unwrap(), None);
        for n in 1..=2 {
            let l = s
                .record_login_failure("login:a", 100 + n, 0, &lock_at_3)
                .unwrap();
            assert_eq!((l.failures, l.locked_until), (n, 0));
        }
        let l = s
            .record_login_failure("login:a", 103, 0, &lock_at_3)
            .unwrap();
        assert_eq!((l.failures, l.locked_until), (3, 5_003));
        assert_eq!(s.login_lock("login:a").unwrap(), Some(l));
        // A lock never shortens; a failure after the window starts the count over.
        let l = s
            .record_login_failure("login:a", 200, 150, &lock_at_3)
            .unwrap();
        assert_eq!((l.failures, l.locked_until), (1, 5_003));
        assert_eq!(s.login_lock("login:b").unwrap(), None, "per account");
        s.record_login_failure("login:b", 100, 0, &lock_at_3)
            .unwrap();
        // The sweep keeps locked and recent accounts.
        assert_eq!(s.delete_login_failures_before(150).unwrap(), 1);
        assert!(s.login_lock("login:b").unwrap().is_none());
        assert!(s.login_lock("login:a").unwrap().is_some());
        s.clear_login_failures("login:a").unwrap();
        assert_eq!(s.login_lock("login:a").unwrap(), None);
    });
}

fn mfa_state_is_written_compare_and_swap(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "u1@example.com")).unwrap();
        let u = UserId::from_stored("u1".into());
        assert_eq!(s.mfa_state("totp", &u).unwrap(), None);
        // First write: only when nothing is there yet.
        assert!(s.put_mfa_state("totp", &u, None, b"one", 10).unwrap());
        assert!(!s.put_mfa_state("totp", &u, None, b"other", 10).unwrap());
        let row = s.mfa_state("totp", &u).unwrap().unwrap();
        assert_eq!((row.version, row.data.as_slice()), (1, &b"one"[..]));
        // Two writers from version 1: the first wins, the second changes nothing.
        assert!(s.put_mfa_state("totp", &u, Some(1), b"two", 11).unwrap());
        assert!(!s.put_mfa_state("totp", &u, Some(1), b"lost", 11).unwrap());
        let row = s.mfa_state("totp", &u).unwrap().unwrap();
        assert_eq!((row.version, row.data.as_slice()), (2, &b"two"[..]));
        // State is per plugin.
        assert_eq!(s.mfa_state("sms-otp", &u).unwrap(), None);
    });
}

fn mfa_enrolments_and_recovery_codes(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "u1@example.com")).unwrap();
        let u = UserId::from_stored("u1".into());
        s.insert_mfa_enrollment(&u, "totp", 10).unwrap();
        s.insert_mfa_enrollment(&u, "totp", 20).unwrap();
        s.insert_mfa_enrollment(&u, "email-otp", 30).unwrap();
        let e = s.mfa_enrollments(&u).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].plugin_id, "email-otp");
        assert_eq!(e[1].created_at, 10, "enrolling again keeps the first time");
        assert_eq!(e[1].last_used_at, None);
        s.touch_mfa_enrollment(&u, "totp", 40).unwrap();
        s.touch_mfa_enrollment(&u, "sms-otp", 40).unwrap();
        let e = s.mfa_enrollments(&u).unwrap();
        assert_eq!(
            e.len(),
            2,
            "touching a factor that is not enrolled adds nothing"
        );
        assert_eq!((e[0].last_used_at, e[1].last_used_at), (None, Some(40)));
        s.put_mfa_state("totp", &u, None, b"x", 10).unwrap();
        assert!(s.delete_mfa_enrollment(&u, "totp").unwrap());
        assert_eq!(
            s.mfa_state("totp", &u).unwrap(),
            None,
            "state goes with the factor"
        );
        assert!(!s.delete_mfa_enrollment(&u, "totp").unwrap());

        s.replace_recovery_codes(&u, &[[1; 32], [2; 32]], 10)
            .unwrap();
        assert_eq!(s.recovery_codes_left(&u).unwrap(), 2);
        assert!(s.use_recovery_code(&u, &[1; 32], 11).unwrap());
        assert!(
            !s.use_recovery_code(&u, &[1; 32], 12).unwrap(),
            "single use"
        );
        assert!(!s.use_recovery_code(&u, &[9; 32], 12).unwrap());
        assert_eq!(s.recovery_codes_left(&u).unwrap(), 1);
        s.replace_recovery_codes(&u, &[[3; 32]], 20).unwrap();
        assert!(
            !s.use_recovery_code(&u, &[2; 32], 21).unwrap(),
            "replaced codes are gone"
        );
        assert_eq!(s.recovery_codes_left(&u).unwrap(), 1);
    });
}

fn step_up_and_signals(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "u1@example.com")).unwrap();
        let rec = session(7, "u1", 100, 1000, 10_000);
        s.insert_session(&rec).unwrap();
        let amr = vec!["pwd".to_owned(), "otp".to_owned(), "mfa".to_owned()];
        assert!(s.set_session_amr(&rec.sid, &amr).unwrap());
        let back = s.session(&rec.key).unwrap().unwrap();
        assert_eq!(back.amr, amr);
        assert_eq!(back.upstream_acr.as_deref(), Some("urn:upstream:mfa"));
        assert!(!s.set_session_amr("no-such-sid", &amr).unwrap());

        assert_eq!(s.signal_generation("reload").unwrap(), 0);
        assert_eq!(s.raise_signal("reload", 5).unwrap(), 1);
        assert_eq!(s.raise_signal("reload", 6).unwrap(), 2);
        assert_eq!(s.signal_generation("reload").unwrap(), 2);
        assert_eq!(s.signal_generation("other").unwrap(), 0);
    });
}

fn saml_assertion_ids_are_used_once_until_they_expire(b: Backend) {
    with_store(b, |s| {
        assert!(s.use_saml_assertion("idp", "_a1", 1_000, 100).unwrap());
        assert!(
            !s.use_saml_assertion("idp", "_a1", 1_000, 200).unwrap(),
            "replay"
        );
        assert!(
            s.use_saml_assertion("other-idp", "_a1", 1_000, 200)
                .unwrap(),
            "IDs are per upstream"
        );
        // Past its expiry the record no longer blocks, swept or not.
        assert!(s.use_saml_assertion("idp", "_a1", 2_000, 1_000).unwrap());
        assert!(!s.use_saml_assertion("idp", "_a1", 2_000, 1_500).unwrap());
        assert!(s.use_saml_assertion("idp", "_a2", 1_200, 1_100).unwrap());
        assert!(s.delete_expired_grants(1_300).unwrap() >= 2);
        assert!(
            !s.use_saml_assertion("idp", "_a1", 2_000, 1_400).unwrap(),
            "not swept yet"
        );
        assert!(
            s.use_saml_assertion("idp", "_a2", 1_500, 1_400).unwrap(),
            "swept"
        );
    });
}

fn upstream_sessions_go_with_their_session(b: Backend) {
    use concierge::storage::UpstreamSessionRecord;
    with_store(b, |s| {
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        s.insert_session(&session(5, "u1", 100, 60, 1_000)).unwrap();
        s.insert_session(&session(6, "u1", 100, 60, 1_000)).unwrap();
        let saml = |sid: &str, index: &str| UpstreamSessionRecord {
            sid: sid.into(),
            upstream: "corp".into(),
            id_token: None,
            name_id: Some("pat".into()),
            name_id_format: Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into()),
            session_index: Some(index.into()),
            created_at: 100,
        };
        s.insert_upstream_session(&saml("sid-5", "s1")).unwrap();
        s.insert_upstream_session(&saml("sid-6", "s2")).unwrap();
        assert_eq!(
            s.upstream_session("sid-5").unwrap(),
            Some(saml("sid-5", "s1"))
        );
        assert!(s.upstream_session("sid-7").unwrap().is_none());
        let mut found = s.upstream_sessions_by_name_id("corp", "pat").unwrap();
        found.sort_by(|a, b| a.sid.cmp(&b.sid));
        assert_eq!(found, vec![saml("sid-5", "s1"), saml("sid-6", "s2")]);
        assert!(
            s.upstream_sessions_by_name_id("other", "pat")
                .unwrap()
                .is_empty()
        );
        assert!(
            matches!(
                s.insert_upstream_session(&saml("sid-9", "s3")),
                Err(StorageError::Query(_) | StorageError::Conflict(_))
            ),
            "only for an existing session"
        );
        // Ending the session forgets it.
        assert!(s.delete_session(&[5; 32]).unwrap());
        assert!(s.upstream_session("sid-5").unwrap().is_none());
        assert_eq!(
            s.upstream_sessions_by_name_id("corp", "pat").unwrap().len(),
            1
        );
    });
}

fn what_an_upstream_said_is_kept_per_link_and_replaced(b: Backend) {
    use concierge::storage::UpstreamClaims;
    with_store(b, |s| {
        let u = user("u1", "a@example.com");
        s.insert_user_with_link(&u, "corp", "sub-1").unwrap();
        let uid = UserId::from_stored("u1".into());
        // A link no sign-in said anything about yet: empty.
        assert_eq!(
            s.upstream_claims("corp", &uid).unwrap(),
            UpstreamClaims::default()
        );
        let first = UpstreamClaims {
            groups: vec!["staff".into(), "admins".into()],
            verified_email: Some("a@example.com".into()),
            kept: [
                ("employee_id".to_owned(), "e-1 \"quoted\" 한".to_owned()),
                ("level".to_owned(), "7".to_owned()),
            ]
            .into(),
        };
        s.set_upstream_claims("corp", "sub-1", &first).unwrap();
        assert_eq!(s.upstream_claims("corp", &uid).unwrap(), first);
        assert_eq!(
            s.upstream_claims("other", &uid).unwrap(),
            UpstreamClaims::default(),
            "per upstream"
        );
        // The next sign-in's replaces it whole: a claim no longer sent is gone.
        let next = UpstreamClaims {
            kept: [("level".to_owned(), "8".to_owned())].into(),
            ..UpstreamClaims::default()
        };
        s.set_upstream_claims("corp", "sub-1", &next).unwrap();
        assert_eq!(s.upstream_claims("corp", &uid).unwrap(), next);
    });
}

/// 16 sign-ins of one user at once, each through its own connection: one inserted session
/// per thread, and what each saw (evicted, or refused with the live list).
fn sixteen_at_once(s: &Arc<DieselStore>, cap: SessionCap) -> Vec<(u8, CappedInsert)> {
    let barrier = Arc::new(std::sync::Barrier::new(16));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=16u8)
            .map(|k| {
                let (s, barrier) = (Arc::clone(s), Arc::clone(&barrier));
                scope.spawn(move || {
                    let mut rec = session(k, "u1", 500, 600, 10_000);
                    rec.channel = Channel::Web;
                    barrier.wait();
                    (k, s.insert_session_within(&rec, &cap).unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn concurrent_sign_ins_never_exceed_the_session_limit(b: Backend) {
    with_store(b, |s| {
        let u1 = UserId::from_stored("u1".into());
        s.insert_user(&user("u1", "a@example.com")).unwrap();
        // An older web session with a refresh token, an expired one (does not count) and a
        // mobile one (another channel: does not count, and stays).
        let mut old = session(100, "u1", 400, 600, 10_000);
        old.channel = Channel::Web;
        s.insert_session(&old).unwrap();
        s.insert_refresh(&refresh(1, "f1", "sid-100")).unwrap();
        let mut expired = session(101, "u1", 400, 600, 450);
        expired.channel = Channel::Web;
        s.insert_session(&expired).unwrap();
        s.insert_session(&session(102, "u1", 400, 600, 10_000))
            .unwrap();
        let cap = SessionCap {
            max: 3,
            channel: Some(Channel::Web),
            evict_oldest: true,
            now: 500,
        };
        let results = sixteen_at_once(s, cap);
        let live_web: Vec<u8> = s
            .sessions_of_user(&u1)
            .unwrap()
            .into_iter()
            .filter(|r| r.channel == Channel::Web && r.is_live(500))
            .map(|r| r.key[0])
            .collect();
        assert_eq!(live_web.len(), 3, "exactly the limit is live: {live_web:?}");
        // Every session that was ever live is either still live or reported evicted, once.
        let mut evicted: Vec<u8> = results
            .iter()
            .flat_map(|(_, r)| -> Vec<u8> {
                match r {
                    CappedInsert::Inserted { evicted } => {
                        evicted.iter().map(|e| e.key[0]).collect()
                    }
                    CappedInsert::Full(_) => panic!("end_oldest never refuses"),
                }
            })
            .collect();
        evicted.sort_unstable();
        let mut all: Vec<u8> = evicted.iter().chain(&live_web).copied().collect();
        all.sort_unstable();
        let mut expected: Vec<u8> = (1..=16).chain([100]).collect();
        expected.sort_unstable();
        assert_eq!(all, expected, "evicted once each, none lost");
        assert!(evicted.contains(&100), "the oldest went first");
        assert!(s.session(&[100; 32]).unwrap().is_none());
        assert!(
            s.refresh_token(&[1; 32]).unwrap().is_none(),
            "with its refresh tokens"
        );
        assert!(
            s.session(&[102; 32]).unwrap().is_some(),
            "other channel kept"
        );

        // Refuse: three get in, thirteen see the full list and store nothing.
        s.delete_user_sessions(&u1).unwrap();
        let refuse = SessionCap {
            evict_oldest: false,
            channel: None,
            ..cap
        };
        let results = sixteen_at_once(s, refuse);
        let inserted = results
            .iter()
            .filter(|(_, r)| matches!(r, CappedInsert::Inserted { evicted } if evicted.is_empty()))
            .count();
        assert_eq!(inserted, 3);
        for (_, r) in &results {
            if let CappedInsert::Full(live) = r {
                assert_eq!(live.len(), 3, "refused with the live sessions");
            }
        }
        assert_eq!(s.sessions_of_user(&u1).unwrap().len(), 3);
    });
}

fn pending_upstream_logins_are_taken_once_under_concurrency(b: Backend) {
    use concierge::storage::UpstreamRequest;
    let Some(db) = fresh_db(b) else {
        return;
    };
    // Two stores on one database: two broker instances.
    let stores = [open_store(&db), open_store(&db)];
    let pending = |n: u8, expires_at: i64| UpstreamRequest {
        state_hash: [n; 32],
        upstream: "corp".into(),
        binding_hash: [200; 32],
        journey_hash: [201; 32],
        pending: "{\"state\":\"x\"}".into(),
        expires_at,
    };
    for round in 0..12u8 {
        stores[0]
            .insert_upstream_request(&pending(round, 1_000))
            .unwrap();
        // Sixteen callbacks with the same state at once: exactly one gets the pending login.
        let barrier = std::sync::Barrier::new(16);
        let taken: Vec<Option<UpstreamRequest>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let (s, barrier) = (Arc::clone(&stores[i % 2]), &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        s.take_upstream_request(&[round; 32], 100).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<_> = taken.into_iter().flatten().collect();
        assert_eq!(winners, vec![pending(round, 1_000)], "round {round}");
        assert!(
            stores[1]
                .take_upstream_request(&[round; 32], 100)
                .unwrap()
                .is_none()
        );
    }
    // Unknown, and expired (taken all the same: an expired state is not tried again).
    assert!(
        stores[0]
            .take_upstream_request(&[99; 32], 100)
            .unwrap()
            .is_none()
    );
    stores[0]
        .insert_upstream_request(&pending(50, 100))
        .unwrap();
    assert!(
        stores[0]
            .take_upstream_request(&[50; 32], 100)
            .unwrap()
            .is_none()
    );
    stores[0]
        .insert_upstream_request(&pending(50, 200))
        .unwrap();
    // Reading does not spend it (the broker checks the browser and upstream first).
    let read = stores[0].upstream_request(&[50; 32], 100).unwrap();
    assert_eq!(read, Some(pending(50, 200)));
    assert!(
        stores[0]
            .upstream_request(&[50; 32], 200)
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(
        stores[0]
            .upstream_request(&[98; 32], 100)
            .unwrap()
            .is_none()
    );
    assert!(
        stores[0]
            .take_upstream_request(&[50; 32], 100)
            .unwrap()
            .is_some()
    );
    assert!(
        stores[0]
            .upstream_request(&[50; 32], 100)
            .unwrap()
            .is_none(),
        "taken"
    );
}

per_backend!(
    concurrent_sign_ins_never_exceed_the_session_limit,
    expired_sessions_are_taken_once_by_concurrent_sweeps,
    pending_upstream_logins_are_taken_once_under_concurrency,
    mfa_state_is_written_compare_and_swap,
    mfa_enrolments_and_recovery_codes,
    step_up_and_signals,
    saml_assertion_ids_are_used_once_until_they_expire,
    upstream_sessions_go_with_their_session,
    what_an_upstream_said_is_kept_per_link_and_replaced,
    only_one_first_signing_key_per_algorithm_wins,
    audit_events_are_queried_newest_first_and_expire,
    login_failures_count_in_a_window_and_lock,
    token_epochs_only_move_forward_and_sessions_are_found_by_client,
    codes_are_consumed_exactly_once,
    a_code_is_redeemed_with_its_refresh_token_in_one_transaction,
    refresh_rotation_spends_once_and_reuse_revokes_the_family,
    access_token_revocations_are_remembered_until_expiry,
    signing_keys_are_stored_and_retired,
    clients_are_stored_by_id,
    saml_apps_are_stored_by_entity_id_and_one_concurrent_add_wins,
    logout_outbox_and_session_participants,
    sessions_are_found_by_their_public_id,
    migrations_are_idempotent,
    users_round_trip_and_emails_are_unique,
    password_and_disabled_updates,
    sessions_round_trip_with_binary_keys,
    touches_only_move_forward,
    sessions_of_a_user_are_listed_and_ended_together,
    expired_sessions_are_swept_with_grace,
    first_secret_wins,
    sealed_values_are_listed_and_resealed_compare_and_set,
    sessions_require_an_existing_user,
);

/// A PostgreSQL test database is dropped with its guard, even while a pool still holds
/// connections to it (`WITH (FORCE)`), so test runs leave no databases behind.
#[test]
fn postgres_test_databases_are_dropped_with_their_guard() {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let Some(db) = fresh_db(Backend::Postgres) else {
        return;
    };
    let admin = std::env::var("CONCIERGE_TEST_PG_URL").unwrap();
    let name = db.pg_name().unwrap().to_owned();
    let count = || {
        let mut conn = diesel::pg::PgConnection::establish(&admin).unwrap();
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result::<Count>(&mut conn)
            .unwrap()
            .n
    };
    let store = open_store(&db);
    store.ping().unwrap();
    assert_eq!(count(), 1);
    drop(db);
    assert_eq!(count(), 0, "{name} is left behind");
    drop(store);
}
