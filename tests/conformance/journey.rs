//! Login transactions (issue #13): compare-and-swap updates that lose no write under real
//! concurrency, a finish that succeeds exactly once, expiry and sweeping; on both backends.

use std::sync::Arc;

use concierge::clock::{ManualClock, OsEntropy};
use concierge::domain::kek::KeyEncryptionKey;
use concierge::flow::journey::{JourneyError, JourneyId, Journeys};
use concierge::storage::{DieselStore, JourneyStore, LoginTransactionRow, Store};
use serde::{Deserialize, Serialize};

use crate::support::Backend;
use crate::with_store;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Counter {
    n: u32,
    steps: Vec<String>,
}

fn journeys(s: &Arc<DieselStore>, clock: &Arc<ManualClock>) -> Journeys {
    let store: Arc<dyn Store> = s.clone();
    Journeys::new(
        store,
        clock.clone(),
        Arc::new(OsEntropy),
        600,
        KeyEncryptionKey::new([9; 32]),
    )
}

fn rows_update_only_at_their_version_and_finish_once(b: Backend) {
    with_store(b, |s| {
        let row = LoginTransactionRow {
            id_hash: [7; 32],
            version: 1,
            state: "{}".into(),
            created_at: 10,
            updated_at: 10,
            expires_at: 100,
            finished_at: None,
            binding_hash: None,
        };
        s.insert_login_transaction(&row).unwrap();
        assert!(s.insert_login_transaction(&row).is_err(), "ids are unique");
        assert_eq!(s.login_transaction(&[7; 32]).unwrap().unwrap(), row);
        assert!(s.login_transaction(&[8; 32]).unwrap().is_none());

        assert!(
            !s.update_login_transaction(&[7; 32], 2, "{\"a\":1}", 200, 11)
                .unwrap()
        );
        assert!(
            s.update_login_transaction(&[7; 32], 1, "{\"a\":1}", 200, 11)
                .unwrap()
        );
        assert!(
            !s.update_login_transaction(&[7; 32], 1, "{\"a\":2}", 200, 12)
                .unwrap(),
            "a stale version writes nothing"
        );
        let now = s.login_transaction(&[7; 32]).unwrap().unwrap();
        assert_eq!(
            (now.version, now.state.as_str(), now.expires_at),
            (2, "{\"a\":1}", 200)
        );

        assert!(
            !s.finish_login_transaction(&[7; 32], 1, None, 13).unwrap(),
            "stale finish"
        );
        assert!(
            s.finish_login_transaction(&[7; 32], 2, Some("{\"done\":1}"), 13)
                .unwrap()
        );
        assert!(
            !s.finish_login_transaction(&[7; 32], 3, None, 14).unwrap(),
            "finished once"
        );
        assert!(
            !s.update_login_transaction(&[7; 32], 3, "{}", 300, 14)
                .unwrap(),
            "a finished journey does not change"
        );
        assert_eq!(
            s.login_transaction(&[7; 32]).unwrap().unwrap().finished_at,
            Some(13)
        );
        // Swept once expired.
        s.delete_expired_grants(199).unwrap();
        assert!(s.login_transaction(&[7; 32]).unwrap().is_some());
        s.delete_expired_grants(200).unwrap();
        assert!(s.login_transaction(&[7; 32]).unwrap().is_none());
    });
}

fn concurrent_updates_lose_nothing_and_one_finish_wins(b: Backend) {
    with_store(b, |s| {
        let clock = Arc::new(ManualClock::new(1_000));
        let j = journeys(s, &clock);
        let id = j.start(&Counter::default()).unwrap();
        // Eight writers at once, each adding one step: every accepted step is in the state.
        let accepted: u32 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (j, id) = (&j, &id);
                    scope.spawn(move || {
                        match j.update(id, |c: &mut Counter| {
                            c.n += 1;
                            c.steps.push(format!("w{i}"));
                            Ok::<_, ()>(())
                        }) {
                            Ok(Ok(())) => 1,
                            Err(JourneyError::Conflict) => 0,
                            other => panic!("{other:?}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let state = j.load::<Counter>(&id).unwrap();
        assert!(accepted >= 1);
        assert_eq!(state.state.n, accepted, "no update lost");
        assert_eq!(state.state.steps.len() as u32, accepted);
        assert_eq!(state.version, 1 + i64::from(accepted));

        // A step that refuses writes nothing.
        let refused = j
            .update(&id, |c: &mut Counter| {
                c.n = 999;
                Err::<(), _>("no")
            })
            .unwrap();
        assert_eq!(refused, Err("no"));
        assert_eq!(j.load::<Counter>(&id).unwrap().state.n, accepted);

        // Sixteen finishers at once (two tabs, a replayed post): exactly one gets the state.
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (j, id) = (&j, &id);
                    scope.spawn(move || match j.finish::<Counter>(id) {
                        Ok(c) => {
                            assert_eq!(c.n, accepted);
                            1
                        }
                        Err(JourneyError::Finished | JourneyError::Conflict) => 0,
                        Err(e) => panic!("{e:?}"),
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
        // A replay of the finished journey is recognised as one, and changes nothing.
        assert!(matches!(
            j.finish::<Counter>(&id),
            Err(JourneyError::Finished)
        ));
        assert!(matches!(
            j.update(&id, |_: &mut Counter| Ok::<_, ()>(())),
            Err(JourneyError::Finished)
        ));
    });
}

fn journeys_expire_and_ids_are_opaque(b: Backend) {
    with_store(b, |s| {
        let clock = Arc::new(ManualClock::new(1_000));
        let j = journeys(s, &clock);
        let id = j.start(&Counter::default()).unwrap();
        // Each update extends the life from now.
        clock.advance(500);
        j.update(&id, |c: &mut Counter| {
            c.n = 1;
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        clock.advance(599);
        assert_eq!(j.load::<Counter>(&id).unwrap().state.n, 1);
        clock.advance(1);
        assert!(matches!(j.load::<Counter>(&id), Err(JourneyError::Expired)));
        assert!(matches!(
            j.update(&id, |_: &mut Counter| Ok::<_, ()>(())),
            Err(JourneyError::Expired)
        ));
        // Ids are exactly 43 base64url characters; an unknown one finds nothing.
        let other = j.start(&Counter::default()).unwrap();
        let raw = other.as_cookie_value().to_owned();
        assert!(JourneyId::parse(&raw[..42]).is_none());
        assert_eq!(JourneyId::parse(&raw), Some(other));
        let unknown = JourneyId::parse(&"A".repeat(43)).unwrap();
        assert!(matches!(
            j.load::<Counter>(&unknown),
            Err(JourneyError::Unknown)
        ));
        assert!(JourneyId::parse("not an id").is_none());
    });
}

/// `save` is a compare-and-swap for steps that did I/O between read and write (a stale version
/// writes nothing); `rekey` moves a journey to a fresh id once (the old id, and a second rekey
/// from the same read, find nothing), which is how a journey resumed from an upstream's answer
/// continues: of two callbacks racing, one continues.
fn saves_are_compare_and_swap_and_a_rekey_happens_once(b: Backend) {
    with_store(b, |s| {
        let clock = Arc::new(ManualClock::new(1_000));
        let j = journeys(s, &clock);
        let id = j.start(&Counter::default()).unwrap();
        let read = j.load::<Counter>(&id).unwrap();
        let mut changed = read.clone();
        changed.state.n = 1;
        let v = j.save(&id, &changed).unwrap();
        assert_eq!(v, read.version + 1);
        assert!(matches!(j.save(&id, &read), Err(JourneyError::Conflict)));
        assert_eq!(j.load::<Counter>(&id).unwrap().state.n, 1);

        // Sixteen threads rekey from the same read: exactly one gets the new id.
        let key = id.key();
        let read = j.load::<Counter>(&id).unwrap();
        let barrier = std::sync::Barrier::new(16);
        let won: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (j, barrier, read) = (&j, &barrier, &read);
                    scope.spawn(move || {
                        barrier.wait();
                        j.rekey(&key, read).ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(won.len(), 1, "one rekey wins");
        let (new_id, new_version) = won.into_iter().next().unwrap();
        assert!(matches!(j.load::<Counter>(&id), Err(JourneyError::Unknown)));
        let moved = j.load::<Counter>(&new_id).unwrap();
        assert_eq!((moved.state.n, moved.version), (1, new_version));
        // Finished: neither a save nor a rekey revives it.
        j.finish::<Counter>(&new_id).unwrap();
        let mut later = moved.clone();
        later.version = new_version + 1;
        assert!(matches!(
            j.rekey(&new_id.key(), &later),
            Err(JourneyError::Conflict)
        ));
        assert!(matches!(
            j.finish::<Counter>(&new_id),
            Err(JourneyError::Finished)
        ));
    });
}

/// The stored state is sealed to its row (a database reader sees no secret, a state copied to
/// another row does not open), carries its shape's version (a row of another shape is
/// `Outdated`, never a panic or a 500), and a journey ends at its absolute lifetime however
/// often it is stepped.
fn states_are_sealed_versioned_and_capped(b: Backend) {
    with_store(b, |s| {
        let clock = Arc::new(ManualClock::new(1_000));
        let j = journeys(s, &clock).with_max_age(1_000);
        let secret = "JBSWY3DPEHPK3PXP-totp-seed";
        let id = j
            .start(&Counter {
                n: 1,
                steps: vec![secret.into()],
            })
            .unwrap();
        let row = s.login_transaction(&id.key().0).unwrap().unwrap();
        assert!(!row.state.contains(secret), "sealed: {}", row.state);
        assert!(!row.state.contains("steps"));
        // Another key (a rotated root secret) opens nothing: outdated, not corrupt.
        let store: Arc<dyn Store> = s.clone();
        let other = Journeys::new(
            store,
            clock.clone(),
            Arc::new(OsEntropy),
            600,
            KeyEncryptionKey::new([8; 32]),
        );
        assert!(matches!(
            other.load::<Counter>(&id),
            Err(JourneyError::Outdated)
        ));
        // The sealed state copied into another row does not open there.
        let copy = LoginTransactionRow {
            id_hash: [5; 32],
            ..row.clone()
        };
        s.insert_login_transaction(&copy).unwrap();
        let copied = concierge::flow::journey::JourneyKey([5; 32]);
        assert!(matches!(
            j.load_key::<Counter>(&copied),
            Err(JourneyError::Outdated)
        ));
        // A row of the previous release's shape (plain JSON) is outdated.
        let old = LoginTransactionRow {
            id_hash: [6; 32],
            state: r#"{"n":1,"steps":[]}"#.into(),
            ..row.clone()
        };
        s.insert_login_transaction(&old).unwrap();
        assert!(matches!(
            j.load_key::<Counter>(&concierge::flow::journey::JourneyKey([6; 32])),
            Err(JourneyError::Outdated)
        ));
        // Stepped every 500 s (inside the sliding 600 s): still ends 1,000 s after it began.
        for _ in 0..1 {
            clock.advance(500);
            let read = j.load::<Counter>(&id).unwrap();
            j.save(&id, &read).unwrap();
        }
        clock.advance(499);
        assert!(j.load::<Counter>(&id).is_ok());
        clock.advance(1);
        assert!(matches!(j.load::<Counter>(&id), Err(JourneyError::Expired)));
    });
}

/// A browser's journeys end together (sign-out): every unfinished one bound to its binding, and
/// no other browser's.
fn a_browsers_journeys_end_together(b: Backend) {
    with_store(b, |s| {
        let clock = Arc::new(ManualClock::new(1_000));
        let j = journeys(s, &clock);
        let mine = [
            j.start_bound(&Counter::default(), Some([1; 32])).unwrap(),
            j.start_bound(&Counter::default(), Some([1; 32])).unwrap(),
        ];
        let theirs = j.start_bound(&Counter::default(), Some([2; 32])).unwrap();
        let unbound = j.start(&Counter::default()).unwrap();
        j.finish::<Counter>(&mine[1]).unwrap();
        assert_eq!(j.end_browser(&[1; 32]).unwrap(), 1, "the one still live");
        assert!(matches!(
            j.load::<Counter>(&mine[0]),
            Err(JourneyError::Finished)
        ));
        assert!(j.load::<Counter>(&theirs).is_ok());
        assert!(j.load::<Counter>(&unbound).is_ok());
        assert_eq!(j.end_browser(&[1; 32]).unwrap(), 0);
    });
}

crate::per_backend!(
    a_browsers_journeys_end_together,
    states_are_sealed_versioned_and_capped,
    saves_are_compare_and_swap_and_a_rekey_happens_once,
    rows_update_only_at_their_version_and_finish_once,
    concurrent_updates_lose_nothing_and_one_finish_wins,
    journeys_expire_and_ids_are_opaque,
);
