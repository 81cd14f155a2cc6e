//! Bad input gets a clear error page, never a panic or an internal message, and stores nothing.

use crate::helpers::{Browser, assert_error_page, spawn};
use crate::per_backend_async;
use crate::support::Backend;

async fn unknown_routes_and_methods_get_error_pages(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    assert_error_page(&br.get("/no/such/page").await, 404);
    assert_error_page(&br.get("/static/nope.css").await, 404);
    assert_error_page(&br.get("/static/..%2F..%2Fetc%2Fpasswd").await, 404);
    let res = br
        .client
        .delete(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert!(res.text().await.unwrap().contains("data-status=\"405\""));
}

async fn malformed_and_oversized_forms_are_refused(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let token = br.get("/login").await.field("csrf_token");
    let big = format!(
        "csrf_token={token}&email=demo%40example.com&password={}",
        "a".repeat(100_000)
    );
    assert_error_page(
        &br.post_raw("/login", "application/x-www-form-urlencoded", big)
            .await,
        413,
    );
    let garbage: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    let res = br
        .post_raw("/login", "application/x-www-form-urlencoded", garbage)
        .await;
    assert!(res.status == 400 || res.status == 403, "{}", res.status);
    assert_error_page(&res, res.status);
    let res = br
        .post_raw(
            "/login",
            "application/json",
            "{\"email\":\"demo@example.com\"}",
        )
        .await;
    assert_error_page(&res, 400);
    let res = br
        .post_raw(
            "/login",
            "application/x-www-form-urlencoded",
            "email=%ZZ&password=%",
        )
        .await;
    assert!(res.status == 400 || res.status == 403, "{}", res.status);
    assert_error_page(&res, res.status);
    let res = br.get("/login?return_to=%ZZ%").await;
    assert!(res.status == 200 || res.status == 400, "{}", res.status);
    assert!(br.session_cookie().is_none());
    // Nothing was stored or broken: the demo account still signs in.
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
}

async fn weird_cookies_are_just_no_session(b: Backend) {
    let Some(app) = spawn(b, &[]).await else {
        return;
    };
    let mut br = Browser::new(&app);
    for v in ["", "x", "%%%%", &"A".repeat(43), &"Z".repeat(5000)] {
        br.cookies.insert("concierge_session".into(), v.to_owned());
        let res = br.get("/account").await;
        assert!(
            res.status == 303 || res.status == 400 || res.status == 431,
            "{v}: {}",
            res.status
        );
    }
}

per_backend_async!(
    unknown_routes_and_methods_get_error_pages,
    malformed_and_oversized_forms_are_refused,
    weird_cookies_are_just_no_session,
);
