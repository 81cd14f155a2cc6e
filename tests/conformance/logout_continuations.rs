//! Logout continuations (issue #13): where a logout through an upstream continues once the
//! upstream sends the browser back. Single use under real concurrency (two stores on one
//! database, sixteen threads), never returned once expired, swept with the other expired rows,
//! and apart from pending upstream logins; on both backends.

use std::sync::Arc;

use concierge::storage::{LogoutContinuation, StorageError, Store, UpstreamRequest};

use crate::support::{Backend, fresh_db, open_store};
use crate::with_store;

fn continuation(n: u8, expires_at: i64) -> LogoutContinuation {
    LogoutContinuation {
        relay_hash: [n; 32],
        upstream: "corp-saml".into(),
        request_id: format!("_req{n}"),
        then: "https://app.example/bye?x=1&y=한국어".into(),
        expires_at,
    }
}

fn logout_continuations_round_trip_once(b: Backend) {
    with_store(b, |s| {
        s.insert_logout_continuation(&continuation(1, 1_000))
            .unwrap();
        assert!(
            matches!(
                s.insert_logout_continuation(&continuation(1, 2_000)),
                Err(StorageError::Conflict(_))
            ),
            "relay hashes are unique"
        );
        // OIDC logouts have no request id.
        let oidc = LogoutContinuation {
            request_id: String::new(),
            upstream: "corp-oidc".into(),
            ..continuation(2, 1_000)
        };
        s.insert_logout_continuation(&oidc).unwrap();

        assert!(s.take_logout_continuation(&[9; 32], 100).unwrap().is_none());
        assert_eq!(
            s.take_logout_continuation(&[1; 32], 100).unwrap(),
            Some(continuation(1, 1_000))
        );
        assert!(
            s.take_logout_continuation(&[1; 32], 100).unwrap().is_none(),
            "single use"
        );
        assert_eq!(
            s.take_logout_continuation(&[2; 32], 999).unwrap(),
            Some(oidc)
        );
    });
}

fn expired_logout_continuations_are_never_returned_and_are_swept(b: Backend) {
    with_store(b, |s| {
        // Expired at its expiry time, and taken all the same (a relay is not tried again).
        s.insert_logout_continuation(&continuation(1, 100)).unwrap();
        assert!(s.take_logout_continuation(&[1; 32], 100).unwrap().is_none());
        assert!(s.take_logout_continuation(&[1; 32], 50).unwrap().is_none());

        // The sweep of expired grants removes expired continuations, and only those.
        s.insert_logout_continuation(&continuation(2, 100)).unwrap();
        s.insert_logout_continuation(&continuation(3, 101)).unwrap();
        assert_eq!(s.delete_expired_grants(100).unwrap(), 1);
        assert!(
            s.take_logout_continuation(&[2; 32], 0).unwrap().is_none(),
            "swept"
        );
        assert_eq!(
            s.take_logout_continuation(&[3; 32], 100).unwrap(),
            Some(continuation(3, 101))
        );
    });
}

fn logout_continuations_and_pending_logins_are_apart(b: Backend) {
    with_store(b, |s| {
        // The same hash in both tables: a relay never finds a pending login, a state never a
        // logout continuation.
        let pending = UpstreamRequest {
            state_hash: [5; 32],
            upstream: "corp-saml".into(),
            binding_hash: [6; 32],
            journey_hash: [7; 32],
            pending: "{\"state\":\"x\"}".into(),
            expires_at: 1_000,
        };
        s.insert_upstream_request(&pending).unwrap();
        assert!(s.take_logout_continuation(&[5; 32], 100).unwrap().is_none());
        s.insert_logout_continuation(&continuation(5, 1_000))
            .unwrap();
        assert_eq!(
            s.take_upstream_request(&[5; 32], 100).unwrap(),
            Some(pending)
        );
        assert!(s.take_upstream_request(&[5; 32], 100).unwrap().is_none());
        assert_eq!(
            s.take_logout_continuation(&[5; 32], 100).unwrap(),
            Some(continuation(5, 1_000))
        );
    });
}

fn logout_continuations_are_taken_once_under_concurrency(b: Backend) {
    let Some(db) = fresh_db(b) else {
        return;
    };
    // Two stores on one database: two broker instances.
    let stores = [open_store(&db), open_store(&db)];
    // Forty rounds: a take that is not atomic loses a round only now and then on SQLite.
    for round in 0..40u8 {
        stores[0]
            .insert_logout_continuation(&continuation(round, 1_000))
            .unwrap();
        // Sixteen returns with the same relay at once: exactly one continues the logout.
        let barrier = std::sync::Barrier::new(16);
        let taken: Vec<Option<LogoutContinuation>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let (s, barrier) = (Arc::clone(&stores[i % 2]), &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        s.take_logout_continuation(&[round; 32], 100).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<_> = taken.into_iter().flatten().collect();
        assert_eq!(winners, vec![continuation(round, 1_000)], "round {round}");
        assert!(
            stores[1]
                .take_logout_continuation(&[round; 32], 100)
                .unwrap()
                .is_none()
        );
    }
}

crate::per_backend!(
    logout_continuations_round_trip_once,
    expired_logout_continuations_are_never_returned_and_are_swept,
    logout_continuations_and_pending_logins_are_apart,
    logout_continuations_are_taken_once_under_concurrency,
);
