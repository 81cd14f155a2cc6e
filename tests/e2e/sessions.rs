//! Idle and absolute timeouts under a manual clock, batched last-seen, and the sweep.

use concierge::clock::OsEntropy;
use concierge::domain::Channel;
use concierge::session::{NewSession, SessionManager, SessionToken};
use concierge::storage::Store;

use crate::helpers::{Browser, START, spawn};
use crate::per_backend_async;
use crate::support::Backend;

const SHORT: &[(&str, &str)] = &[
    ("CONCIERGE__SESSION__IDLE_TIMEOUT", "10m"),
    ("CONCIERGE__SESSION__ABSOLUTE_TIMEOUT", "1h"),
    ("CONCIERGE__SESSION__TOUCH_INTERVAL", "1h"),
];

async fn idle_sessions_expire_and_activity_keeps_them(b: Backend) {
    let Some(app) = spawn(b, SHORT).await else {
        return;
    };
    let mut active = Browser::new(&app);
    active.login("demo@example.com", "demo").await;
    let mut idle = Browser::new(&app);
    idle.login("demo@example.com", "demo").await;
    // Active: a request every 9 minutes for 36 minutes.
    for _ in 0..4 {
        app.clock.advance(9 * 60);
        assert_eq!(active.get("/account").await.status, 200);
    }
    // Idle since START: long gone.
    let res = idle.get("/account").await;
    assert_eq!(res.status, 303);
    let key = SessionToken::key_of(&idle.session_cookie().unwrap()).unwrap();
    assert!(
        app.store.session(&key).unwrap().is_none(),
        "an expired session found is deleted"
    );
    // Exactly at the idle limit the session is over.
    app.clock.advance(10 * 60);
    assert_eq!(active.get("/account").await.status, 303);
}

async fn absolute_timeout_ends_even_active_sessions(b: Backend) {
    let Some(app) = spawn(b, SHORT).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    for _ in 0..6 {
        app.clock.advance(9 * 60);
        assert_eq!(br.get("/account").await.status, 200);
    }
    app.clock.advance(6 * 60 + 1); // 60 min 1 s after sign-in
    assert_eq!(br.get("/account").await.status, 303);
}

async fn last_seen_is_batched_not_written_per_request(b: Backend) {
    let Some(app) = spawn(b, SHORT).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    let key = SessionToken::key_of(&br.session_cookie().unwrap()).unwrap();
    app.clock.advance(60);
    for _ in 0..5 {
        assert_eq!(br.get("/account").await.status, 200);
    }
    // The touch interval is an hour in this test: nothing written yet...
    assert_eq!(app.store.session(&key).unwrap().unwrap().last_seen, START);
    // ...yet the page shows the in-memory last-seen time.
    let page = br.get("/account").await;
    let shown = concierge::web::format_time(START + 60);
    assert!(page.body.contains(&shown), "{shown}");
}

async fn the_sweep_flushes_then_deletes_only_expired_sessions(b: Backend) {
    let Some(app) = spawn(b, SHORT).await else {
        return;
    };
    // This instance flushes every 5 s, so its sweep allows other instances 10 s of grace.
    let env = [
        ("CONCIERGE__SESSION__IDLE_TIMEOUT", "10m"),
        ("CONCIERGE__SESSION__ABSOLUTE_TIMEOUT", "1h"),
    ];
    let settings = concierge::config::Settings::load(
        None,
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .unwrap();
    let sessions = SessionManager::new(
        app.store.clone(),
        app.clock.clone(),
        std::sync::Arc::new(OsEntropy),
        &settings.session,
    );
    let user = app
        .store
        .user_by_email(&concierge::domain::Email::parse("demo@example.com").unwrap())
        .unwrap()
        .unwrap()
        .id;
    let new = || NewSession {
        user_id: user.clone(),
        channel: Channel::Web,
        user_agent: "ua".into(),
        ip: "127.0.0.1".into(),
        upstream: "local".into(),
        amr: vec!["pwd".into()],
        upstream_acr: None,
    };
    let (keep, _) = sessions.create(new()).unwrap();
    let (gone, _) = sessions.create(new()).unwrap();
    app.clock.advance(9 * 60);
    assert!(sessions.check(keep.as_cookie_value()).unwrap().is_some());
    app.clock.advance(9 * 60);
    // keep's last-seen (+9 min) is only in memory; the sweep must write it before deleting.
    assert_eq!(sessions.sweep().unwrap(), 1);
    assert!(sessions.check(keep.as_cookie_value()).unwrap().is_some());
    assert!(sessions.check(gone.as_cookie_value()).unwrap().is_none());
    assert_eq!(app.store.sessions_of_user(&user).unwrap().len(), 1);
}

async fn the_oldest_session_ends_when_a_user_is_over_the_limit(b: Backend) {
    let Some(app) = spawn(b, &[("CONCIERGE__SESSION__MAX_PER_USER", "2")]).await else {
        return;
    };
    let mut first = Browser::new(&app);
    first.login("demo@example.com", "demo").await;
    app.clock.advance(1);
    let mut second = Browser::new(&app);
    second.login("demo@example.com", "demo").await;
    app.clock.advance(1);
    let mut third = Browser::new(&app);
    third.login("demo@example.com", "demo").await;
    assert_eq!(
        first.get("/account").await.status,
        303,
        "the oldest session ended"
    );
    assert_eq!(second.get("/account").await.status, 200);
    assert_eq!(third.get("/account").await.status, 200);
}

async fn concurrent_sign_ins_stay_within_the_session_limit(b: Backend) {
    let Some(app) = spawn(b, &[("CONCIERGE__SESSION__MAX_PER_USER", "2")]).await else {
        return;
    };
    // Eight browsers open the sign-in page, then all submit at once.
    let mut browsers = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..8 {
        let mut br = Browser::new(&app);
        tokens.push(br.get("/login").await.field("csrf_token"));
        browsers.push(br);
    }
    let pages = futures_util::future::join_all(browsers.iter_mut().zip(&tokens).map(
        |(br, t)| async move {
            br.post_form(
                "/login",
                &[
                    ("csrf_token", t.as_str()),
                    ("email", "demo@example.com"),
                    ("password", "demo"),
                ],
            )
            .await
        },
    ))
    .await;
    for p in &pages {
        assert_eq!(p.status, 303, "every sign-in succeeds: {}", p.body);
    }
    let user = app
        .store
        .user_by_email(&concierge::domain::Email::parse("demo@example.com").unwrap())
        .unwrap()
        .unwrap();
    let live = app.store.sessions_of_user(&user.id).unwrap();
    assert_eq!(
        live.len(),
        2,
        "at most the limit survives concurrent sign-ins"
    );
    let mut signed_in = 0;
    for br in &mut browsers {
        if br.get("/account").await.status == 200 {
            signed_in += 1;
        }
    }
    assert_eq!(signed_in, 2, "exactly two browsers are still signed in");
}

/// Signs in through the login page an `/authorize` of the public mobile client `native` leads to.
async fn mobile_sign_in(br: &mut Browser) -> String {
    use base64::Engine;
    let verifier = "mobile-verifier-0123456789-0123456789-abcdefgh";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    let authorize = format!(
        "/authorize?response_type=code&client_id=native&redirect_uri=http%3A%2F%2F127.0.0.1%3A40111%2Fcallback&scope=openid&code_challenge={challenge}&code_challenge_method=S256"
    );
    let page = br.get(&authorize).await;
    let res = br
        .post_form(
            "/login",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("journey", &page.field("journey")),
                ("email", "demo@example.com"),
                ("password", "demo"),
            ],
        )
        .await;
    // The journey ends at the app: the code comes with the answer to the form.
    assert_eq!(res.status, 303);
    let back = res.location.unwrap();
    assert!(
        back.starts_with("http://127.0.0.1:40111/callback?code="),
        "{back}"
    );
    br.session_cookie().unwrap()
}

async fn each_channel_has_its_own_lifetimes_and_limit(b: Backend) {
    let env = [
        ("CONCIERGE__SESSION__MOBILE__IDLE_TIMEOUT", "7d"),
        ("CONCIERGE__SESSION__MOBILE__ABSOLUTE_TIMEOUT", "30d"),
        ("CONCIERGE__SESSION__MOBILE__MAX_PER_USER", "1"),
    ];
    let Some(app) = crate::helpers::spawn_provider(b, &env).await else {
        return;
    };
    let mut web = Browser::new(&app);
    web.login("demo@example.com", "demo").await;
    let mut phone1 = Browser::new(&app);
    let c1 = mobile_sign_in(&mut phone1).await;
    let rec = app
        .store
        .session(&SessionToken::key_of(&c1).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(rec.channel, Channel::Mobile);
    assert_eq!(rec.idle_timeout, 7 * 86_400);
    assert_eq!(rec.expires_at, rec.auth_time + 30 * 86_400);
    app.clock.advance(1);
    let mut phone2 = Browser::new(&app);
    mobile_sign_in(&mut phone2).await;
    assert!(
        app.store
            .session(&SessionToken::key_of(&c1).unwrap())
            .unwrap()
            .is_none(),
        "the older mobile session ended"
    );
    assert_eq!(phone2.get("/account").await.status, 200);
    assert_eq!(
        web.get("/account").await.status,
        200,
        "the web session is not counted by the mobile limit"
    );
    let web_rec = app
        .store
        .session(&SessionToken::key_of(&web.session_cookie().unwrap()).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        web_rec.idle_timeout,
        30 * 60,
        "web keeps the [session] default"
    );
}

/// The `session_ended` audit rows: (sid, reason), oldest first (through the admin API, which
/// writes the pending rows first).
async fn ended(app: &crate::helpers::TestApp) -> Vec<(String, String)> {
    crate::control::audit_events(app, "session_ended")
        .await
        .iter()
        .map(|e| {
            (
                e["sid"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sid_of(app: &crate::helpers::TestApp, br: &Browser) -> String {
    let key = SessionToken::key_of(&br.session_cookie().unwrap()).unwrap();
    app.store.session(&key).unwrap().unwrap().sid
}

async fn a_session_found_expired_is_audited_once_with_its_timeout(b: Backend) {
    let Some(app) =
        crate::helpers::spawn_provider_with(b, SHORT, crate::control::OPS_CLIENTS).await
    else {
        return;
    };
    let mut idle = Browser::new(&app);
    idle.login("demo@example.com", "demo").await;
    let idle_sid = sid_of(&app, &idle);
    let mut active = Browser::new(&app);
    active.login("demo@example.com", "demo").await;
    let active_sid = sid_of(&app, &active);
    for _ in 0..2 {
        app.clock.advance(9 * 60);
        assert_eq!(active.get("/account").await.status, 200);
    }
    // Idle for 18 minutes (10 allowed): found expired, ended, recorded; not twice.
    assert_eq!(idle.get("/account").await.status, 303);
    assert_eq!(idle.get("/account").await.status, 303);
    assert_eq!(
        ended(&app).await,
        [(idle_sid.clone(), "idle_timeout".into())]
    );
    // Active until its absolute end (1 h).
    for _ in 0..4 {
        app.clock.advance(9 * 60);
        assert_eq!(active.get("/account").await.status, 200);
    }
    app.clock.advance(6 * 60);
    assert_eq!(active.get("/account").await.status, 303);
    assert_eq!(
        ended(&app).await,
        [
            (idle_sid, "idle_timeout".into()),
            (active_sid, "absolute_timeout".into())
        ]
    );
}

async fn swept_sessions_are_audited_once_by_one_of_several_instances(b: Backend) {
    // The broker's own sweeper runs at its start only (the interval is a day).
    let env = [
        ("CONCIERGE__SESSION__IDLE_TIMEOUT", "10m"),
        ("CONCIERGE__SESSION__ABSOLUTE_TIMEOUT", "1h"),
        ("CONCIERGE__SESSION__SWEEP_INTERVAL", "24h"),
    ];
    let Some(app) = spawn(b, &env).await else {
        return;
    };
    let settings = concierge::config::Settings::load(
        None,
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .unwrap();
    // Four instances, each with its own audit writer, on the broker's database.
    let instances: Vec<_> = (0..4)
        .map(|_| {
            let audit = std::sync::Arc::new(
                concierge::audit::Auditor::new(app.store.clone(), app.clock.clone()).unwrap(),
            );
            let sessions = SessionManager::new(
                app.store.clone(),
                app.clock.clone(),
                std::sync::Arc::new(OsEntropy),
                &settings.session,
            )
            .with_audit(audit.clone());
            (sessions, audit)
        })
        .collect();
    let user = app
        .store
        .user_by_email(&concierge::domain::Email::parse("demo@example.com").unwrap())
        .unwrap()
        .unwrap()
        .id;
    let new = || NewSession {
        user_id: user.clone(),
        channel: Channel::Web,
        user_agent: "ua".into(),
        ip: "127.0.0.1".into(),
        upstream: "local".into(),
        amr: vec!["pwd".into()],
        upstream_acr: None,
    };
    let mut idle = Vec::new();
    for i in 0..12 {
        idle.push(instances[i % 4].0.create(new()).unwrap().1.sid);
    }
    app.clock.advance(55 * 60);
    let (keep, _) = instances[0].0.create(new()).unwrap();
    // Past the absolute end of the first twelve; `keep` is live (and active)...
    app.clock.advance(6 * 60);
    assert!(
        instances[0]
            .0
            .check(keep.as_cookie_value())
            .unwrap()
            .is_some()
    );
    // ...all four sweep at once.
    let swept: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = instances
            .iter()
            .map(|(s, _)| scope.spawn(move || s.sweep().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(swept, 12, "each session swept once");
    for (_, audit) in &instances {
        audit.flush().unwrap();
    }
    let rows = app
        .store
        .audit_events(&concierge::storage::AuditQuery {
            kind: Some("session_ended".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let mut got: Vec<(String, String)> = rows
        .into_iter()
        .map(|r| (r.sid.unwrap(), r.reason.unwrap()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = idle
        .into_iter()
        .map(|sid| (sid, "absolute_timeout".to_owned()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Idle now (11 minutes after its last activity, within its absolute end): swept as idle.
    app.clock.advance(11 * 60);
    assert_eq!(instances[1].0.sweep().unwrap(), 1);
    instances[1].1.flush().unwrap();
    let rows = app
        .store
        .audit_events(&concierge::storage::AuditQuery {
            kind: Some("session_ended".into()),
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows[0].reason.as_deref(), Some("idle_timeout"));
}

per_backend_async!(
    concurrent_sign_ins_stay_within_the_session_limit,
    a_session_found_expired_is_audited_once_with_its_timeout,
    swept_sessions_are_audited_once_by_one_of_several_instances,
    the_oldest_session_ends_when_a_user_is_over_the_limit,
    each_channel_has_its_own_lifetimes_and_limit,
    idle_sessions_expire_and_activity_keeps_them,
    absolute_timeout_ends_even_active_sessions,
    last_seen_is_batched_not_written_per_request,
    the_sweep_flushes_then_deletes_only_expired_sessions,
);
