//! Session control at scale over HTTP: the session-limit page, "your devices", rate limits and
//! lockout (manual clock, no sleeps), the audit trail and the admin REST API, on both backends.

use serde_json::Value;

use crate::helpers::{Browser, SECRET, TestApp, spawn, spawn_provider_with};
use crate::oidc::{Http, code_for};
use crate::per_backend_async;
use crate::support::Backend;

/// A client allowed the admin scope, and one that is not.
pub(crate) const OPS_CLIENTS: &str = r#"
[[clients]]
id = "ops"
channel = "api"
secret_sha256 = "SECRET_HASH"
grant_types = ["client_credentials"]
scopes = ["concierge:admin", "orders.read"]
"#;

pub(crate) async fn admin_token(http: &Http, scope: &str) -> String {
    let (s, v) = http
        .token(
            "ops",
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

/// The audit events of `kind`, oldest first, read through the admin API (which writes the
/// pending rows first).
pub(crate) async fn audit_events(app: &TestApp, kind: &str) -> Vec<Value> {
    let http = Http::new(app);
    let admin = admin_token(&http, "concierge:admin").await;
    let path = format!("/admin/v1/audit?kind={kind}&limit=100");
    let (s, _, v) = api(app, "GET", &path, Some(&admin)).await;
    assert_eq!(s, 200, "{v}");
    let mut events = v["events"].as_array().cloned().unwrap_or_default();
    events.reverse();
    events
}

/// An admin API call: status, headers, JSON body.
pub(crate) async fn api(
    app: &TestApp,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    Http::new(app).call(method, path, bearer).await
}

async fn signed_in(app: &TestApp) -> Browser {
    let mut br = Browser::new(app);
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
    br
}

/// The `sid` attributes of the device rows on a page, in page order.
fn sids(body: &str) -> Vec<String> {
    body.split("data-sid=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_owned())
        .collect()
}

async fn refuse_mode_lists_sessions_and_ending_one_continues(b: Backend) {
    let env = [
        ("CONCIERGE__SESSION__MAX_PER_USER", "2"),
        ("CONCIERGE__SESSION__ON_LIMIT", "refuse"),
    ];
    let Some(app) = spawn(b, &env).await else {
        return;
    };
    let mut first = signed_in(&app).await;
    app.clock.advance(1);
    let mut second = signed_in(&app).await;
    app.clock.advance(1);
    let mut third = Browser::new(&app);
    let page = third.login("demo@example.com", "demo").await;
    assert_eq!(page.status, 200, "the limit page, not a sign-in");
    assert!(page.body.contains("id=\"session-limit\""), "{}", page.body);
    assert!(third.session_cookie().is_none(), "no session yet");
    let listed = sids(&page.body);
    assert_eq!(listed.len(), 2);
    // Nobody was signed out by the attempt.
    assert_eq!(first.get("/account").await.status, 200);
    assert_eq!(second.get("/account").await.status, 200);

    // The journey is bound to this browser: another browser cannot continue it.
    let mut thief = Browser::new(&app);
    let thief_page = thief.get("/login").await;
    let stolen = thief
        .post_form(
            "/login/session-limit",
            &[
                ("csrf_token", &thief_page.field("csrf_token")),
                ("journey", &page.field("journey")),
                ("sid", &listed[0]),
            ],
        )
        .await;
    assert_eq!(stolen.status, 400);
    assert!(thief.session_cookie().is_none());
    assert_eq!(first.get("/account").await.status, 200);

    // The user ends the oldest and is signed in.
    let res = third
        .post_form(
            "/login/session-limit",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("journey", &page.field("journey")),
                ("sid", &listed[0]),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert!(third.session_cookie().is_some());
    assert_eq!(third.get("/account").await.status, 200);
    assert_eq!(
        first.get("/account").await.status,
        303,
        "the chosen one ended"
    );
    assert_eq!(second.get("/account").await.status, 200);

    // An expired journey (its lifetime is `[mfa] step_ttl`, ten minutes) starts over.
    let mut fourth = Browser::new(&app);
    let page = fourth.login("demo@example.com", "demo").await;
    app.clock.advance(601);
    let res = fourth
        .post_form(
            "/login/session-limit",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("journey", &page.field("journey")),
                ("sid", &sids(&page.body)[0]),
            ],
        )
        .await;
    assert_eq!(res.status, 400);
    assert!(res.body.contains("Please sign in again"), "{}", res.body);
    assert!(fourth.session_cookie().is_none());
}

async fn devices_page_lists_sessions_and_ends_them(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut laptop = signed_in(&app).await;
    app.clock.advance(1);
    let mut phone = signed_in(&app).await;
    app.clock.advance(1);
    let mut tablet = signed_in(&app).await;
    let page = laptop.get("/account").await;
    let listed = sids(&page.body);
    assert_eq!(listed.len(), 3, "{}", page.body);
    assert!(page.body.contains("data-field=\"current\""));
    assert!(page.body.contains("concierge-e2e/1.0"), "user agent shown");
    // Newest first: the tablet, the phone, then this laptop (marked current).
    let (tablet_sid, phone_sid) = (listed[0].clone(), listed[1].clone());

    // Someone else's sid (or garbage) ends nothing.
    let csrf = page.field("csrf_token");
    let res = laptop
        .post_form(
            "/account/sessions/end",
            &[("csrf_token", &csrf), ("sid", "not-a-session")],
        )
        .await;
    assert_eq!(res.status, 404);
    let res = laptop
        .post_form(
            "/account/sessions/end",
            &[("csrf_token", &csrf), ("sid", &phone_sid)],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(phone.get("/account").await.status, 303, "the phone is out");
    assert_eq!(tablet.get("/account").await.status, 200);
    let page = laptop.get("/account").await;
    assert_eq!(sids(&page.body), vec![tablet_sid, listed[2].clone()]);

    // A forged form (no CSRF token) does nothing.
    let res = laptop
        .post_form("/account/sessions/end-others", &[("csrf_token", "x")])
        .await;
    assert_eq!(res.status, 403);
    assert_eq!(tablet.get("/account").await.status, 200);
    let res = laptop
        .post_form("/account/sessions/end-others", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(tablet.get("/account").await.status, 303);
    let page = laptop.get("/account").await;
    assert_eq!(page.status, 200);
    assert_eq!(sids(&page.body).len(), 1);
    assert!(!page.body.contains("end-others-form"));
}

async fn login_rates_answer_429_with_retry_after(b: Backend) {
    let env = [
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_IP", "3/1m"),
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_ACCOUNT", "off"),
        ("CONCIERGE__RATE_LIMIT__LOCKOUT_AFTER", "0"),
    ];
    let Some(app) = spawn(b, &env).await else {
        return;
    };
    let mut br = Browser::new(&app);
    for _ in 0..3 {
        assert_eq!(br.login("demo@example.com", "wrong").await.status, 401);
    }
    let page = br.login("demo@example.com", "demo").await;
    assert_eq!(page.status, 429);
    assert_eq!(page.headers["retry-after"], "20");
    assert!(
        page.body.contains("login-error"),
        "the form, with the reason"
    );
    assert!(br.session_cookie().is_none());
    app.clock.advance(20);
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
}

/// Each sign-in journey is a stored row: the journeys one address starts are limited
/// (`journey_per_ip`), before the row is written; single sign-on with a live session starts
/// none and is not counted.
async fn journeys_started_per_address_are_limited(b: Backend) {
    let env = [
        ("CONCIERGE__RATE_LIMIT__JOURNEY_PER_IP", "3/1m"),
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_IP", "off"),
    ];
    let Some(app) = spawn_provider_with(b, &env, OPS_CLIENTS).await else {
        return;
    };
    let authorize = crate::oidc::authorize_path_with("webapp", "https://webapp.example/cb", &[]);
    let mut br = Browser::new(&app);
    // One journey for the sign-in, two more pages: three.
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
    let mut other = Browser::new(&app);
    for _ in 0..2 {
        assert_eq!(other.get("/login").await.status, 200);
    }
    let refused = other.get("/login").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "20");
    assert!(
        !refused.body.contains("name=\"journey\""),
        "no journey was started"
    );
    let refused = other.get(&authorize).await;
    assert_eq!(refused.status, 429, "an app's sign-in is a journey too");
    // Single sign-on starts no journey: not counted.
    let sso = br.get(&authorize).await;
    assert_eq!(sso.status, 302, "{}", sso.body);
    assert!(sso.location.unwrap().contains("code="));
    // Audited with the scope; after the interval a journey starts again.
    let reasons = audit_events(&app, "rate_limited").await;
    assert!(
        reasons.iter().any(|e| e["reason"] == "journey_per_ip"),
        "{reasons:?}"
    );
    app.clock.advance(20);
    assert_eq!(other.get("/login").await.status, 200);
}

async fn forwarded_for_counts_only_behind_trusted_proxies(b: Backend) {
    let limited = [
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_IP", "1/1m"),
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_ACCOUNT", "off"),
    ];
    // Untrusted: the header is ignored, every request is the peer 127.0.0.1.
    let Some(app) = spawn(b, &limited).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.get("/login").await;
    let post = |br: &mut Browser, ip: &'static str, csrf: String| {
        let body = format!("csrf_token={csrf}&email=a%40example.com&password=x");
        let req = br
            .client
            .post(format!("{}/login", br.base))
            .header(
                "cookie",
                format!("concierge_csrf={}", br.cookies["concierge_csrf"]),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", ip)
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let csrf = page.field("csrf_token");
    assert_eq!(post(&mut br, "203.0.113.1", csrf.clone()).await, 401);
    assert_eq!(post(&mut br, "203.0.113.2", csrf.clone()).await, 429);
    drop(app);

    let mut env = limited.to_vec();
    env.push((
        "CONCIERGE__RATE_LIMIT__TRUSTED_PROXIES",
        "[\"127.0.0.0/8\"]",
    ));
    let Some(app) = spawn(b, &env).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let csrf = br.get("/login").await.field("csrf_token");
    assert_eq!(post(&mut br, "203.0.113.1", csrf.clone()).await, 401);
    assert_eq!(post(&mut br, "203.0.113.2", csrf.clone()).await, 401);
    assert_eq!(post(&mut br, "203.0.113.1", csrf.clone()).await, 429);
    // A client cannot dodge the limit by prepending addresses of its own.
    assert_eq!(
        post(&mut br, "198.51.100.1, 203.0.113.2", csrf.clone()).await,
        429
    );
}

async fn lockout_grows_and_even_the_right_password_waits(b: Backend) {
    let env = [
        ("CONCIERGE__RATE_LIMIT__LOCKOUT_AFTER", "3"),
        ("CONCIERGE__RATE_LIMIT__LOCKOUT_DELAY", "10s"),
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_ACCOUNT", "off"),
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_IP", "off"),
    ];
    let Some(app) = spawn(b, &env).await else {
        return;
    };
    let mut br = Browser::new(&app);
    assert_eq!(br.login("demo@example.com", "wrong").await.status, 401);
    assert_eq!(br.login("DEMO@example.com", "wrong").await.status, 401);
    let page = br.login("demo@example.com", "wrong").await;
    assert_eq!(page.status, 429, "the third failure locks");
    assert_eq!(page.headers["retry-after"], "10");
    // Locked: the right password is not even checked.
    let page = br.login("demo@example.com", "demo").await;
    assert_eq!(page.status, 429);
    assert!(br.session_cookie().is_none());
    // Other accounts are not affected.
    assert_eq!(br.login("other@example.com", "x").await.status, 401);
    app.clock.advance(10);
    // One more failure after the lock: twice as long.
    let page = br.login("demo@example.com", "wrong").await;
    assert_eq!(page.status, 429);
    assert_eq!(page.headers["retry-after"], "20");
    app.clock.advance(20);
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
    // Success forgets the failures: two more are not a lock.
    let mut again = Browser::new(&app);
    assert_eq!(again.login("demo@example.com", "wrong").await.status, 401);
    assert_eq!(again.login("demo@example.com", "wrong").await.status, 401);
}

async fn token_endpoint_is_limited_per_client(b: Backend) {
    let env = [("CONCIERGE__RATE_LIMIT__TOKEN_PER_CLIENT", "2/1s")];
    let Some(app) = spawn_provider_with(b, &env, "").await else {
        return;
    };
    let http = Http::new(&app);
    let form = [("grant_type", "client_credentials")];
    assert_eq!(http.token("service", &form).await.0, 200);
    assert_eq!(http.token("service", &form).await.0, 200);
    let (s, headers, v) = http.post("/token", Some(("service", SECRET)), &form).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"], "slow_down");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["cache-control"], "no-store");
    // Another client has its own budget; the first one's refills.
    assert_eq!(
        http.token("webapp", &form).await.0,
        400,
        "not its grant, but answered"
    );
    app.clock.advance(1);
    assert_eq!(http.token("service", &form).await.0, 200);
}

async fn admin_api_needs_an_admin_token_and_ends_sessions_and_tokens(b: Backend) {
    let Some(app) = spawn_provider_with(b, &[], OPS_CLIENTS).await else {
        return;
    };
    let http = Http::new(&app);
    // No token, a token without the scope, a forged token.
    let (s, h, v) = api(&app, "GET", "/admin/v1/sessions", None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_token")));
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let weak = admin_token(&http, "orders.read").await;
    let (s, _, v) = api(&app, "GET", "/admin/v1/sessions", Some(&weak)).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("insufficient_scope")));
    let (s, _, _) = api(&app, "GET", "/admin/v1/sessions", Some("e30.e30.sig")).await;
    assert_eq!(s, 401);
    let admin = admin_token(&http, "concierge:admin").await;

    // A user with a session and an access token.
    let mut br = signed_in(&app).await;
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (_, tokens) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    let at = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(http.introspect(&at).await["active"], true);

    let (s, _, v) = api(
        &app,
        "GET",
        "/admin/v1/sessions?email=demo%40example.com",
        Some(&admin),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    let user_id = sessions[0]["user_id"].as_str().unwrap().to_owned();
    assert_eq!(sessions[0]["channel"], "web");
    let (_, _, v) = api(
        &app,
        "GET",
        "/admin/v1/sessions?client_id=webapp",
        Some(&admin),
    )
    .await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);

    // Bad requests are JSON errors.
    for bad in [
        "/admin/v1/sessions?bogus=1",
        "/admin/v1/sessions?limit=0",
        "/admin/v1/sessions?user_id=a&client_id=b",
        "/admin/v1/audit?kind=nope",
        "/admin/v1/audit?since=yesterday",
    ] {
        let (s, _, v) = api(&app, "GET", bad, Some(&admin)).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
    let (s, _, _) = api(&app, "DELETE", "/admin/v1/sessions", Some(&admin)).await;
    assert_eq!(s, 400, "DELETE needs a selector");
    let (s, _, v) = api(&app, "DELETE", "/admin/v1/sessions/unknown", Some(&admin)).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
    let (s, _, _) = api(&app, "POST", "/admin/v1/users/nobody/revoke", Some(&admin)).await;
    assert_eq!(s, 404);

    // Revoke-all: the session ends and the unexpired access token is inactive.
    let path = format!("/admin/v1/users/{user_id}/revoke");
    let (s, _, v) = api(&app, "POST", &path, Some(&admin)).await;
    assert_eq!((s, v["ended"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(http.introspect(&at).await["active"], false);
    assert_eq!(br.get("/account").await.status, 303);

    // One session by sid.
    app.clock.advance(1);
    let mut br = signed_in(&app).await;
    let (_, _, v) = api(&app, "GET", "/admin/v1/sessions", Some(&admin)).await;
    let sid = v["sessions"][0]["sid"].as_str().unwrap().to_owned();
    let (s, _, v) = api(
        &app,
        "DELETE",
        &format!("/admin/v1/sessions?sid={sid}"),
        Some(&admin),
    )
    .await;
    assert_eq!((s, v["ended"].as_u64()), (200, Some(1)));
    assert_eq!(br.get("/account").await.status, 303);

    // Each action is in the audit trail with who did it.
    let (s, _, v) = api(
        &app,
        "GET",
        "/admin/v1/audit?kind=admin_action",
        Some(&admin),
    )
    .await;
    assert_eq!(s, 200);
    let reasons: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        vec!["revoke_session by api:ops", "revoke_user by api:ops"],
        "newest first"
    );
}

/// Every operation the OpenAPI file documents is routed, and protected unless it says not.
async fn the_openapi_file_matches_the_routes(b: Backend) {
    let Some(app) = spawn_provider_with(b, &[], OPS_CLIENTS).await else {
        return;
    };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/admin-api.openapi.json"
    ))
    .unwrap();
    let spec: Value = serde_json::from_str(&text).unwrap();
    let (s, _, served) = api(&app, "GET", "/admin/v1/openapi.json", None).await;
    assert_eq!(
        (s, &served),
        (200, &spec),
        "the served file is the documented one"
    );
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let concrete = path
                .replace("{sid}", "x")
                .replace("{user_id}", "x")
                .replace("{credential_id}", "x");
            let public = op
                .get("security")
                .is_some_and(|s| s.as_array().unwrap().is_empty());
            let (s, _, _) = api(&app, &method.to_uppercase(), &concrete, None).await;
            assert_eq!(s, if public { 200 } else { 401 }, "{method} {path}");
        }
    }
    assert_eq!(operations, 8);
}

async fn audit_trail_records_auth_events_and_counts_them(b: Backend) {
    let Some(app) = spawn_provider_with(b, &[], OPS_CLIENTS).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = Browser::new(&app);
    assert_eq!(br.login("demo@example.com", "nope").await.status, 401);
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
    let csrf = br.get("/account").await.field("csrf_token");
    assert_eq!(
        br.post_form("/logout", &[("csrf_token", &csrf)])
            .await
            .status,
        303
    );
    let admin = admin_token(&http, "concierge:admin").await;
    let (s, _, v) = api(&app, "GET", "/admin/v1/audit?limit=20", Some(&admin)).await;
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    let kinds: Vec<(&str, Option<&str>)> = events
        .iter()
        .rev()
        .map(|e| (e["kind"].as_str().unwrap(), e["reason"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("login_failed", Some("invalid_credentials")),
            ("login_succeeded", None),
            ("session_created", Some("web")),
            ("session_ended", Some("logout")),
            ("token_issued", Some("client_credentials")),
        ]
    );
    let created = &events[2];
    assert_eq!(created["ip"], "127.0.0.1");
    assert_eq!(created["upstream"], "local");
    assert!(created["user_id"].is_string() && created["sid"].is_string());
    // Paging: two at a time, newest first, then the rest.
    let (_, _, p1) = api(&app, "GET", "/admin/v1/audit?limit=2", Some(&admin)).await;
    let next = p1["next_before_id"].as_i64().unwrap();
    let (_, _, p2) = api(
        &app,
        "GET",
        &format!("/admin/v1/audit?limit=20&before_id={next}"),
        Some(&admin),
    )
    .await;
    assert_eq!(p2["events"].as_array().unwrap().len(), 3);
    assert!(p2["next_before_id"].is_null());
    // Filters by user.
    let user = created["user_id"].as_str().unwrap();
    let (_, _, by_user) = api(
        &app,
        "GET",
        &format!("/admin/v1/audit?user_id={user}"),
        Some(&admin),
    )
    .await;
    assert_eq!(by_user["events"].as_array().unwrap().len(), 3);
    // And counted per kind.
    let metrics = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "concierge_audit_events_total{kind=\"login_failed\"} 1",
        "concierge_audit_events_total{kind=\"session_ended\"} 1",
        "concierge_audit_events_total{kind=\"refresh_reuse_detected\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// A code-flow client allowed the admin scope, stored as a run-time client (as one registered
/// before such clients were refused would be).
const LEGACY_ADMIN_CLIENT: &str = r#"{"id": "legacy", "secret_sha256": "SECRET_HASH",
    "redirect_uris": ["https://legacy.example/cb"], "scopes": ["openid", "concierge:admin"]}"#;

async fn admin_api_refuses_user_tokens_whatever_their_scope(b: Backend) {
    let Some(app) = spawn_provider_with(b, &[], OPS_CLIENTS).await else {
        return;
    };
    let http = Http::new(&app);
    let json = LEGACY_ADMIN_CLIENT.replace(
        "SECRET_HASH",
        &concierge::domain::client::hash_secret(SECRET),
    );
    concierge::storage::Store::insert_client(app.store.as_ref(), "legacy", &json, 1).unwrap();
    // A user signs in at that app and consents to the admin scope.
    let verifier = "a-verifier-of-at-least-forty-three-characters-0123456789";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let mut br = signed_in(&app).await;
    let res = br
        .get(&format!(
            "/authorize?response_type=code&client_id=legacy&redirect_uri=https%3A%2F%2Flegacy.example%2Fcb\
             &scope=openid%20concierge%3Aadmin&state=s&code_challenge={challenge}&code_challenge_method=S256"
        ))
        .await;
    let loc = res.location.unwrap();
    let code = url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {loc}"));
    let (s, t) = http
        .token(
            "legacy",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://legacy.example/cb"),
                ("code_verifier", verifier),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["scope"], "openid concierge:admin");
    let user_token = t["access_token"].as_str().unwrap();
    assert_eq!(http.introspect(user_token).await["active"], true);
    // The user's token carries the scope, but is no admin token.
    for (method, path) in [
        ("GET", "/admin/v1/sessions?all=true"),
        ("GET", "/admin/v1/audit"),
        ("DELETE", "/admin/v1/sessions?all=true"),
    ] {
        let (s, _, v) = api(&app, method, path, Some(user_token)).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("insufficient_scope")),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(
        http.introspect(user_token).await["active"],
        true,
        "nothing was ended"
    );
    // The client's own token (client_credentials) still is.
    let admin = admin_token(&http, "concierge:admin").await;
    let (s, _, v) = api(&app, "GET", "/admin/v1/sessions?all=true", Some(&admin)).await;
    assert_eq!(s, 200, "{v}");

    // `concierge clients add` refuses the admin scope with a user grant.
    let out = app
        .cli()
        .args([
            "clients",
            "add",
            "dash",
            "--redirect-uri",
            "https://dash.example/cb",
            "--scope",
            "openid",
            "--scope",
            "concierge:admin",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("dash") && err.contains("concierge:admin"),
        "{err}"
    );
    assert!(
        concierge::storage::Store::client_config(app.store.as_ref(), "dash")
            .unwrap()
            .is_none()
    );
}

/// `config check` refuses the admin scope on a client with a user grant, naming the client.
#[test]
fn config_refuses_the_admin_scope_on_user_clients() {
    let dir = tempfile::tempdir().unwrap();
    let client = |id: &str, grants: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\nsecret_sha256 = \"{}\"\n\
             redirect_uris = [\"https://{id}.example/cb\"]\n{grants}\
             scopes = [\"openid\", \"concierge:admin\"]\n",
            "ab".repeat(32)
        )
    };
    let check = |body: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, body).unwrap();
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CONCIERGE__") {
                c.env_remove(k);
            }
        }
        c.args(["config", "check"]).arg(&p).output().unwrap()
    };
    for (id, grants) in [
        ("dashboard", ""),
        (
            "refresher",
            "grant_types = [\"refresh_token\", \"client_credentials\"]\n",
        ),
    ] {
        let out = check(&client(id, grants));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id}: {err}");
        assert!(
            err.contains(&format!("client `{id}`")) && err.contains("concierge:admin"),
            "{err}"
        );
    }
    let out = check(&client("ops", "grant_types = [\"client_credentials\"]\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue #17, hole 4: a journey does not outlive a revocation. A sign-in parked at the session
/// limit (its password proven), then the user's revoke-all (what `users passwd` and a disable
/// do: the token epoch moves to now and every session ends): continuing that journey (the
/// session-limit form, or the journey's page again) opens no session and issues nothing; it is
/// audited. The control: a fresh sign-in after the revocation works. Then the same with the
/// account disabled in between.
async fn a_journey_parked_before_a_revocation_opens_nothing(b: Backend) {
    let env = [
        ("CONCIERGE__SESSION__MAX_PER_USER", "1"),
        ("CONCIERGE__SESSION__ON_LIMIT", "refuse"),
    ];
    let Some(app) = spawn_provider_with(b, &env, OPS_CLIENTS).await else {
        return;
    };
    let http = Http::new(&app);
    let admin = admin_token(&http, "concierge:admin").await;
    let mut first = signed_in(&app).await;
    app.clock.advance(1);
    let mut parked = Browser::new(&app);
    let page = parked.login("demo@example.com", "demo").await;
    assert!(page.body.contains("id=\"session-limit\""), "{}", page.body);
    let listed = sids(&page.body);
    let journey = page.field("journey");

    // The password is reset / everything revoked (the admin API's revoke-all, on the broker's
    // clock), a second later.
    app.clock.advance(1);
    let (_, _, v) = api(&app, "GET", "/admin/v1/sessions", Some(&admin)).await;
    let user_id = v["sessions"][0]["user_id"].as_str().unwrap().to_owned();
    let (s, _, v) = api(
        &app,
        "POST",
        &format!("/admin/v1/users/{user_id}/revoke"),
        Some(&admin),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(first.get("/account").await.status, 303);

    // The parked journey, continued both ways: nothing opens.
    let res = parked
        .post_form(
            "/login/session-limit",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("journey", &journey),
                ("sid", &listed[0]),
            ],
        )
        .await;
    assert!(parked.session_cookie().is_none(), "{}", res.body);
    assert_ne!(res.status, 303, "{}", res.body);
    let again = parked.get(&format!("/login?journey={journey}")).await;
    assert!(
        parked.session_cookie().is_none(),
        "a journey proven before the revocation opened a session: {} {}",
        again.status,
        again.body
    );
    assert_ne!(again.status, 303, "{}", again.body);
    // A GET stops at a page; the POST from it finishes nothing either.
    assert!(
        again.body.contains("id=\"continue-ready\""),
        "{}",
        again.body
    );
    {
        let res = parked
            .post_form(
                "/login/continue",
                &[
                    ("csrf_token", &again.field("csrf_token")),
                    ("journey", &again.field("journey")),
                ],
            )
            .await;
        assert!(parked.session_cookie().is_none(), "{}", res.body);
        assert_ne!(res.status, 303, "{}", res.body);
    }
    let (_, _, v) = api(&app, "GET", "/admin/v1/sessions", Some(&admin)).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 0, "{v}");
    let (_, _, v) = api(
        &app,
        "GET",
        "/admin/v1/audit?kind=login_failed",
        Some(&admin),
    )
    .await;
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "proof_outdated"),
        "{v}"
    );

    // Control: a sign-in after the revocation works.
    app.clock.advance(1);
    let mut fresh = signed_in(&app).await;
    assert_eq!(fresh.get("/account").await.status, 200);

    // Disabled in between: the parked journey opens nothing either.
    app.clock.advance(1);
    let mut parked = Browser::new(&app);
    let page = parked.login("demo@example.com", "demo").await;
    assert!(page.body.contains("id=\"session-limit\""), "{}", page.body);
    let journey = page.field("journey");
    let out = app
        .cli()
        .args(["users", "disable", "demo@example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = parked.get(&format!("/login?journey={journey}")).await;
    assert!(parked.session_cookie().is_none(), "{}", again.body);
    assert_ne!(again.status, 303, "{}", again.body);
}

/// A GET never finishes a journey: a sign-in parked at the session limit, whose other session
/// ended meanwhile, reached again by `GET /login?journey=` shows a page to continue from (no
/// session, nothing changed); the POST from that page finishes it.
async fn a_get_never_finishes_a_journey(b: Backend) {
    let env = [
        ("CONCIERGE__SESSION__MAX_PER_USER", "1"),
        ("CONCIERGE__SESSION__ON_LIMIT", "refuse"),
    ];
    let Some(app) = spawn(b, &env).await else {
        return;
    };
    let mut first = signed_in(&app).await;
    let mut parked = Browser::new(&app);
    let page = parked.login("demo@example.com", "demo").await;
    assert!(page.body.contains("id=\"session-limit\""), "{}", page.body);
    let journey = page.field("journey");
    // The other session ends elsewhere: the limit no longer stands in the way.
    let account = first.get("/account").await;
    let out = first
        .post_form("/logout", &[("csrf_token", &account.field("csrf_token"))])
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(first.get("/account").await.status, 303);

    let again = parked.get(&format!("/login?journey={journey}")).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(
        again.body.contains("id=\"continue-ready\""),
        "{}",
        again.body
    );
    assert!(
        parked.session_cookie().is_none(),
        "a GET opened a session: {}",
        again.body
    );
    // Reloading changes nothing either.
    let reload = parked.get(&format!("/login?journey={journey}")).await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    assert!(parked.session_cookie().is_none());

    let done = parked
        .post_form(
            "/login/continue",
            &[
                ("csrf_token", &again.field("csrf_token")),
                ("journey", &again.field("journey")),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(parked.session_cookie().is_some());
    assert_eq!(parked.get("/account").await.status, 200);
}

per_backend_async!(
    a_get_never_finishes_a_journey,
    a_journey_parked_before_a_revocation_opens_nothing,
    admin_api_refuses_user_tokens_whatever_their_scope,
    refuse_mode_lists_sessions_and_ending_one_continues,
    devices_page_lists_sessions_and_ends_them,
    login_rates_answer_429_with_retry_after,
    journeys_started_per_address_are_limited,
    forwarded_for_counts_only_behind_trusted_proxies,
    lockout_grows_and_even_the_right_password_waits,
    token_endpoint_is_limited_per_client,
    admin_api_needs_an_admin_token_and_ends_sessions_and_tokens,
    the_openapi_file_matches_the_routes,
    audit_trail_records_auth_events_and_counts_them,
);
