//! Sign-in, sign-out, account page, CSRF, languages and headers.

use concierge::domain::Email;
use concierge::storage::{JourneyStore, Store};
use concierge::upstream::local::admin;

use crate::helpers::{Browser, assert_error_page, spawn};
use crate::per_backend_async;
use crate::support::Backend;

async fn demo_login_opens_a_session_shown_on_the_account_page(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let res = br.login("Demo@Example.com", "demo").await;
    assert_eq!(res.status, 303);
    assert_eq!(res.location.as_deref(), Some("/account"));
    let cookie = res
        .headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let all: Vec<String> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session_cookie = all
        .iter()
        .find(|c| c.starts_with("concierge_session="))
        .unwrap_or(&cookie);
    assert!(
        session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"),
        "{session_cookie}"
    );

    let account = br.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("demo@example.com"));
    assert!(
        account.body.contains("concierge-e2e/1.0"),
        "user agent shown"
    );
    assert!(account.body.contains("127.0.0.1"), "ip shown");
    assert!(account.body.contains("data-field=\"amr\""));

    // The raw id is only in the cookie; the store has its hash.
    let raw = br.session_cookie().unwrap();
    let key = concierge::session::SessionToken::key_of(&raw).unwrap();
    let rec = app.store.session(&key).unwrap().unwrap();
    assert_eq!(rec.upstream, "local");
    assert_eq!(rec.amr, vec!["pwd".to_owned()]);
    assert_eq!(rec.auth_time, crate::helpers::START);
    assert!(app.store.session(&[0; 32]).unwrap().is_none());
}

async fn wrong_password_and_unknown_user_set_no_session(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    for (email, pw) in [
        ("demo@example.com", "wrong"),
        ("nobody@example.com", "demo"),
        ("not-an-email", "demo"),
    ] {
        let mut br = Browser::new(&app);
        let res = br.login(email, pw).await;
        assert_eq!(res.status, 401, "{email}");
        assert!(res.body.contains("id=\"login-error\""));
        assert!(br.session_cookie().is_none(), "{email}");
        assert_eq!(br.get("/account").await.status, 303);
    }
}

async fn logout_ends_the_session_server_side(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    let old = br.session_cookie().unwrap();
    let account = br.get("/account").await;
    let token = account.field("csrf_token");
    let out = br.post_form("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(out.location.as_deref(), Some("/signed-out"));
    assert!(br.session_cookie().is_none(), "cookie cleared");
    assert_eq!(br.get("/signed-out").await.status, 200);
    // Replaying the old cookie is refused: the record is gone.
    br.cookies.insert("concierge_session".into(), old);
    let replay = br.get("/account").await;
    assert_eq!(replay.status, 303);
    assert_eq!(
        replay.location.as_deref(),
        Some("/login?return_to=%2Faccount")
    );
}

async fn forms_without_a_valid_csrf_token_are_refused(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.get("/login").await; // has a CSRF cookie now
    let res = br
        .post_form(
            "/login",
            &[("email", "demo@example.com"), ("password", "demo")],
        )
        .await;
    assert_error_page(&res, 403);
    assert!(br.session_cookie().is_none());
    let res = br
        .post_form(
            "/login",
            &[
                ("csrf_token", "AAAA"),
                ("email", "demo@example.com"),
                ("password", "demo"),
            ],
        )
        .await;
    assert_error_page(&res, 403);
    // A token from another browser does not fit this browser's cookie.
    let mut other = Browser::new(&app);
    let foreign = other.get("/login").await.field("csrf_token");
    let res = br
        .post_form(
            "/login",
            &[
                ("csrf_token", &foreign),
                ("email", "demo@example.com"),
                ("password", "demo"),
            ],
        )
        .await;
    assert_error_page(&res, 403);
    assert!(br.session_cookie().is_none());
    // Logout too.
    br.login("demo@example.com", "demo").await;
    let res = br.post_form("/logout", &[]).await;
    assert_error_page(&res, 403);
    assert_eq!(br.get("/account").await.status, 200, "still signed in");
}

async fn return_to_only_follows_local_paths(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    // The local path is kept in the journey (server-side), and followed at the end.
    let page = br.get("/login?return_to=%2Faccount%3Fx%3D1").await;
    assert!(!page.body.contains("name=\"return_to\""));
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
    assert_eq!(res.location.as_deref(), Some("/account?x=1"));
    // Another site is not followed (a form without a journey names where it goes).
    let mut other = Browser::new(&app);
    let page = other.get("/login").await;
    let res = other
        .post_form(
            "/login",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("email", "demo@example.com"),
                ("password", "demo"),
                ("return_to", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(res.location.as_deref(), Some("/account"));
    // Signed in: the login page sends the user on.
    assert_eq!(
        br.get("/login?return_to=/signed-out")
            .await
            .location
            .as_deref(),
        Some("/signed-out")
    );
}

async fn disabled_accounts_cannot_sign_in(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    let email = Email::parse("demo@example.com").unwrap();
    // Without a provider at hand, revoke-all here ends the sessions directly.
    let store = app.store.clone();
    let revoke = move |u: &concierge::domain::UserId, _: &str| -> Result<u64, admin::AdminError> {
        Ok(store.delete_user_sessions(u)?)
    };
    let ended = admin::set_disabled(app.store.as_ref(), &revoke, 0, &email, true).unwrap();
    assert_eq!(ended, 1, "disabling ends the live session");
    assert_eq!(br.get("/account").await.status, 303);
    let res = Browser::new(&app).login("demo@example.com", "demo").await;
    assert_eq!(res.status, 403);
    assert!(res.body.contains("id=\"login-error\""));
}

async fn pages_speak_korean_when_asked(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let ko = br
        .get_with("/login", &[("accept-language", "ko-KR,ko;q=0.9,en;q=0.5")])
        .await;
    assert!(ko.body.contains("<html lang=\"ko\">"));
    assert!(ko.body.contains("로그인"));
    let en = br
        .get_with("/login?ui_locales=en", &[("accept-language", "ko")])
        .await;
    assert!(en.body.contains("<html lang=\"en\">"));
    let nf = br.get_with("/nope", &[("accept-language", "ko")]).await;
    assert_error_page(&nf, 404);
    assert!(nf.body.contains("<html lang=\"ko\">"));
}

async fn security_headers_are_sent(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.get("/login").await;
    let h = |n: &str| {
        page.headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(h("content-security-policy").contains("frame-ancestors 'none'"));
    assert!(!h("content-security-policy").contains("unsafe-inline"));
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("cache-control"), "no-store");
    assert!(!h("x-request-id").is_empty());
    assert!(
        h("strict-transport-security").is_empty(),
        "no HSTS over plain http"
    );
    assert!(
        !page.body.contains("<script"),
        "pages work without JavaScript"
    );
}

async fn https_deployments_get_host_prefixed_secure_cookies_and_hsts(b: Backend) {
    let Some(app) = spawn(
        b,
        &[("CONCIERGE__SERVER__PUBLIC_URL", "https://id.example.com")],
    )
    .await
    else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.get("/login").await;
    let sc = page
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        sc.starts_with("__Host-concierge_csrf=") && sc.contains("Secure") && sc.contains("Path=/"),
        "{sc}"
    );
    assert!(page.headers.get("strict-transport-security").is_some());
    let token = page.field("csrf_token");
    let res = br
        .post_form(
            "/login",
            &[
                ("csrf_token", &token),
                ("email", "demo@example.com"),
                ("password", "demo"),
            ],
        )
        .await;
    assert_eq!(res.status, 303);
    assert!(br.cookies.contains_key("__Host-concierge_session"));
}

async fn operations_endpoints_answer(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    assert_eq!(br.get("/healthz").await.status, 200);
    let ready = br.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains(match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }));
    br.get("/login").await;
    let m = br.get("/metrics").await;
    assert!(
        m.body.contains(
            "concierge_http_requests_total{method=\"GET\",route=\"/login\",status=\"200\"}"
        ),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("concierge_http_request_duration_seconds_bucket")
    );
    let css = br.get("/static/style.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

/// Issue #17, races: the last step of a sign-in submitted eight times at once from one browser
/// (a double click, a nervous user) ends with one session and one code, and every answer is the
/// same: the redirect to the app with that code and the session cookie (no "Bad request" page
/// for the copies, never a 500). The code is redeemed once.
async fn a_double_submit_of_the_last_step_signs_in_once(b: Backend) {
    // No session limit; a limit of one (the losing copy must not end the winner's session as
    // the oldest); a limit of two with the user signed in elsewhere (it must not end that one).
    for (limit, elsewhere) in [(None, false), (Some("1"), false), (Some("2"), true)] {
        let env: Vec<(&str, &str)> = limit
            .map(|l| vec![("CONCIERGE__SESSION__MAX_PER_USER", l)])
            .unwrap_or_default();
        let Some(app) = crate::helpers::spawn_provider(b, &env).await else {
            return;
        };
        let mut other = Browser::new(&app);
        if elsewhere {
            assert_eq!(other.login("demo@example.com", "demo").await.status, 303);
        }
        double_submit(&app, limit, elsewhere).await;
        if elsewhere {
            assert_eq!(
                other.get("/account").await.status,
                200,
                "limit {limit:?}: the other device's session was ended"
            );
        }
    }
}

async fn double_submit(app: &crate::helpers::TestApp, limit: Option<&str>, elsewhere: bool) {
    let redirect = "https://webapp.example/cb";
    let mut br = Browser::new(app);
    let page = br
        .get(&crate::oidc::authorize_path_with("webapp", redirect, &[]))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut fields = page.form_fields("/login");
    fields.retain(|(k, _)| k != "email" && k != "password");
    fields.push(("email".into(), "demo@example.com".into()));
    fields.push(("password".into(), "demo".into()));
    let cookie = br
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let to = page.form_action("/login");
    let url = if to.starts_with('/') {
        format!("{}{to}", app.base)
    } else {
        to
    };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let req = client
            .post(&url)
            .header("cookie", &cookie)
            .header("origin", &app.base)
            .form(&fields);
        let barrier = barrier.clone();
        set.spawn(async move {
            barrier.wait().await;
            let res = req.send().await.unwrap();
            let session = res
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|c| c.to_str().ok())
                .find(|c| c.starts_with("concierge_session="))
                .map(|c| c.split(';').next().unwrap().to_owned());
            let location = res
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (res.status().as_u16(), location, session)
        });
    }
    let answers = set.join_all().await;
    let first = answers[0].clone();
    assert_eq!(first.0, 303, "limit {limit:?}: {answers:?}");
    assert!(
        first
            .1
            .as_deref()
            .is_some_and(|l| l.starts_with(redirect) && l.contains("code=")),
        "{answers:?}"
    );
    assert!(first.2.is_some(), "{answers:?}");
    for a in &answers {
        assert_eq!(
            a, &first,
            "limit {limit:?}: every copy gets the same answer: {answers:?}"
        );
    }
    let demo = app
        .store
        .user_by_email(&Email::parse("demo@example.com").unwrap())
        .unwrap()
        .unwrap();
    let live = app.store.sessions_of_user(&demo.id).unwrap().len();
    assert_eq!(
        live,
        1 + usize::from(elsewhere),
        "limit {limit:?}: sessions"
    );
    // The session the answer set is alive, and its code redeems once.
    let (name, value) = first
        .2
        .clone()
        .unwrap()
        .split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .unwrap();
    let mut me = Browser::new(app);
    me.cookies = br.cookies.clone();
    me.cookies.insert(name, value);
    assert_eq!(
        me.get("/account").await.status,
        200,
        "limit {limit:?}: the answer's session"
    );
    let location = first.1.unwrap();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let http = crate::oidc::Http::new(app);
    let (status, t) = http.exchange("webapp", &code, redirect).await;
    assert_eq!(status, 200, "limit {limit:?}: {t}");
    let (status, _) = http.exchange("webapp", &code, redirect).await;
    assert_eq!(status, 400, "the code is single use");
}

/// Issue #17, item 4: signing out ends the browser's sign-ins under way. A signed-in browser
/// opens the sign-in page again (a second tab, `force`), signs out in the first, then submits the
/// password on that page: no session is opened (the journey ended with the sign-out). Another
/// browser's journey is untouched (the control).
async fn signing_out_ends_the_browsers_journeys(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
    let tab = br.get("/login?force=1").await;
    assert_eq!(tab.status, 200, "{}", tab.body);
    let mut other = Browser::new(&app);
    let other_page = other.get("/login").await;
    let account = br.get("/account").await;
    let out = br.submit(&account, "/logout", &[]).await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert!(br.session_cookie().is_none());
    let res = br
        .submit(
            &tab,
            "/login",
            &[("email", "demo@example.com"), ("password", "demo")],
        )
        .await;
    assert!(
        br.session_cookie().is_none(),
        "a sign-in started before the sign-out opened a session: {} {}",
        res.status,
        res.body
    );
    let res = other
        .submit(
            &other_page,
            "/login",
            &[("email", "demo@example.com"), ("password", "demo")],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert!(other.session_cookie().is_some());
}

per_backend_async!(
    a_journey_of_the_previous_shape_restarts_cleanly,
    signing_out_ends_the_browsers_journeys,
    a_double_submit_of_the_last_step_signs_in_once,
    demo_login_opens_a_session_shown_on_the_account_page,
    wrong_password_and_unknown_user_set_no_session,
    logout_ends_the_session_server_side,
    forms_without_a_valid_csrf_token_are_refused,
    return_to_only_follows_local_paths,
    disabled_accounts_cannot_sign_in,
    pages_speak_korean_when_asked,
    security_headers_are_sent,
    https_deployments_get_host_prefixed_secure_cookies_and_hsts,
    operations_endpoints_answer,
);

/// Issue #17: a journey row written by the previous release's shape (plain JSON, no envelope,
/// not sealed) is refused cleanly after an upgrade: its page says to start again (400), never a
/// 500, and nothing is signed in.
async fn a_journey_of_the_previous_shape_restarts_cleanly(b: Backend) {
    use sha2::Digest;
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let id = "B".repeat(43);
    let now = 1_800_000_000;
    app.store
        .insert_login_transaction(&concierge::storage::LoginTransactionRow {
            id_hash: sha2::Sha256::digest(id.as_bytes()).into(),
            version: 1,
            state: r#"{"binding":"","target":{"Local":"/account"},"stage":"FirstFactor","who":{"user_id":"u","upstream":"local","amr":["pwd"],"acr":null},"mfa":{"satisfied":true}}"#.into(),
            created_at: now,
            updated_at: now,
            expires_at: now + 600,
            finished_at: None,
            binding_hash: None,
        })
        .unwrap();
    let mut br = Browser::new(&app);
    let page = br.get(&format!("/login?journey={id}")).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("start signing in again"),
        "{}",
        page.body
    );
    let login = br.get("/login").await;
    let res = br
        .post_form(
            "/login/session-limit",
            &[
                ("csrf_token", &login.field("csrf_token")),
                ("journey", &id),
                ("sid", "x"),
            ],
        )
        .await;
    assert_ne!(res.status, 500, "{}", res.body);
    assert!(br.session_cookie().is_none());
}
