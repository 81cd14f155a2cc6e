//! Passkeys without a password (issue #19) over HTTP with the independent software authenticator
//! (tests/peers/soft_authenticator.py): the sign-in page's challenge answered by a discoverable
//! credential signs in with `hwk user phr mfa` and no `pwd`; then the hostile corpus of the
//! second-factor ceremony (passkey.rs) against this entry point, plus what only it has (the user
//! handle names the account; no password was checked before): each refused with the sign-in page
//! (never a 500, nothing internal), audited (`login_failed`, `passkey:<reason>`), nothing stored
//! changed, no session; then the refused page's fresh challenge, answered honestly, signs in.

use serde_json::{Value, json};

use crate::control::{admin_token, api, audit_events};
use crate::helpers::{Browser, Page, TestApp};
use crate::oidc::Http;
use crate::passkey::{
    BOB, BOB_PASSWORD, PUBLIC, add_user, amr_of, authenticator, create, enrol, options,
    passkey_app, registered, registration_page, sessions, sign_in_cases, stored, user,
};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::Store;

/// The sign-in page of a new journey, with its passkey challenge.
async fn login_page(br: &mut Browser) -> Page {
    let page = br.get("/login").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"passkey-login-form\"")
            && page.body.contains("autocomplete=\"username webauthn\""),
        "the sign-in page offers passkeys: {}",
        page.body
    );
    page
}

/// An assertion for the sign-in page's challenge with `key`: (credential JSON, key after).
fn assert_with(page: &Page, key: &Value, extra: &Value) -> (Value, Value) {
    let mut req = json!({ "op": "get", "origin": PUBLIC, "options": options(page), "key": key });
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    let out = authenticator(&req);
    assert_eq!(
        options(page)["publicKey"]["allowCredentials"],
        json!([]),
        "a discoverable request names no credential"
    );
    (out["credential"].clone(), out["key"].clone())
}

async fn post(br: &mut Browser, page: &Page, credential: &Value) -> Page {
    br.submit(
        page,
        "/login/passkey",
        &[("credential", &credential.to_string())],
    )
    .await
}

/// The reasons of the `login_failed` events so far, oldest first.
async fn failures(app: &TestApp) -> Vec<String> {
    audit_events(app, "login_failed")
        .await
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// An accepted answer: the account, signed in by the passkey alone.
async fn signed_in(br: &mut Browser, page: &Page, credential: &Value) {
    let done = post(br, page, credential).await;
    assert_eq!(done.status, 303, "passkey accepted: {}", done.body);
    let (trail, account) = br.follow(done).await;
    assert_eq!(account.status, 200, "{trail:?}: {}", account.body);
    assert!(br.session_cookie().is_some(), "signed in");
    let amr = amr_of(&account);
    let has = |m: &str| amr.split([' ', ',']).any(|a| a == m);
    for m in ["hwk", "user", "phr", "mfa"] {
        assert!(has(m), "amr {amr} has {m}");
    }
    assert!(!has("pwd"), "no password in {amr}");
}

/// A refusal: the sign-in page with its message and a fresh challenge, audited with `reason`,
/// nothing stored changed, no session.
/// What a refusal must leave as it was.
struct Before {
    audited: usize,
    stored: Vec<concierge::storage::WebAuthnCredential>,
    sessions: usize,
}

async fn before(app: &TestApp) -> Before {
    Before {
        audited: failures(app).await.len(),
        stored: stored(app, DEMO_EMAIL),
        sessions: sessions(app, DEMO_EMAIL),
    }
}

/// A hostile case: its name, the authenticator's knobs, an edit of the answer, the reason.
type Case = (String, Value, Box<dyn Fn(&mut Value)>, String);

async fn check_refused(
    app: &TestApp,
    br: &Browser,
    page: &Page,
    (case, reason, status): (&str, &str, u16),
    was: &Before,
) {
    let (audited_before, stored_before, sessions_before) = (was.audited, &was.stored, was.sessions);
    assert_eq!(page.status, status, "{case}: {}", page.body);
    assert!(
        page.body.contains("id=\"login-error\"") && page.body.contains("id=\"passkey-login-form\""),
        "{case}: the sign-in page says why and offers a new challenge: {}",
        page.body
    );
    // (`webauthn` itself is in the page: the email field's `autocomplete="username webauthn"`.)
    for leak in [
        "panicked",
        "diesel",
        "src/",
        "actix",
        "Error {",
        "serde",
        "webauthn_rs",
        "Webauthn",
    ] {
        assert!(!page.body.contains(leak), "{case}: leaks `{leak}`");
    }
    assert!(br.session_cookie().is_none(), "{case}: not signed in");
    let reasons = failures(app).await;
    let want = format!("passkey:{reason}");
    assert!(
        reasons[audited_before..].contains(&want),
        "{case}: audited with {want}: {:?}",
        &reasons[audited_before..]
    );
    assert_eq!(
        &stored(app, DEMO_EMAIL),
        stored_before,
        "{case}: nothing stored changed"
    );
    assert_eq!(
        sessions(app, DEMO_EMAIL),
        sessions_before,
        "{case}: no session"
    );
}

async fn a_passkey_signs_in_without_a_password(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let key = enrol(&app, DEMO_EMAIL, DEMO_PASSWORD, &json!({})).await;
    let mut br = Browser::new(&app);
    let page = login_page(&mut br).await;
    let (credential, key) = assert_with(&page, &key, &json!({}));
    signed_in(&mut br, &page, &credential).await;
    let rows = stored(&app, DEMO_EMAIL);
    assert_eq!(rows[0].sign_count, key["counter"].as_i64().unwrap());
    assert!(rows[0].last_used_at.is_some(), "its use recorded");

    // The accepted answer again, to a new sign-in page: its challenge is not this one.
    let mut other = Browser::new(&app);
    let page = login_page(&mut other).await;
    let was = before(&app).await;
    let live = was.sessions;
    let replayed = post(&mut other, &page, &credential).await;
    check_refused(
        &app,
        &other,
        &replayed,
        ("a replayed assertion", "challenge", 401),
        &was,
    )
    .await;
    // And the refused page's own challenge, answered once, cannot be answered twice.
    let (fresh, _) = assert_with(&replayed, &key, &json!({}));
    signed_in(&mut other, &replayed, &fresh).await;
    let again = post(&mut other, &replayed, &fresh).await;
    assert_ne!(again.status, 500, "{}", again.body);
    assert_eq!(
        sessions(&app, DEMO_EMAIL),
        live + 1,
        "one session for one answer"
    );
}

async fn hostile_passwordless_answers_are_refused_audited_and_change_nothing(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let mut key = enrol(&app, DEMO_EMAIL, DEMO_PASSWORD, &json!({})).await;
    let user_handle = |h: &str| -> Box<dyn Fn(&mut Value)> {
        let h = h.to_owned();
        Box::new(move |c: &mut Value| c["response"]["userHandle"] = json!(h))
    };
    // The second factor's corpus, and what only a passwordless answer has: the user handle.
    let mut cases: Vec<Case> = sign_in_cases()
        .into_iter()
        .map(|c| {
            let edit: Box<dyn Fn(&mut Value)> = Box::new(|_| {});
            (c.name.to_owned(), c.knobs, edit, c.reason.to_owned())
        })
        .collect();
    cases.push((
        "the user handle of another account".into(),
        json!({}),
        user_handle("AAECAwQFBgcICQoLDA0ODw"),
        "user_handle_mismatch".into(),
    ));
    cases.push((
        "no user handle".into(),
        json!({}),
        Box::new(|c: &mut Value| c["response"]["userHandle"] = Value::Null),
        "no_user_handle".into(),
    ));
    cases.push((
        "not a credential".into(),
        json!({}),
        Box::new(|c: &mut Value| *c = json!({"id": "AAAA", "type": "public-key"})),
        "malformed".into(),
    ));
    for (name, knobs, edit, reason) in cases {
        let mut br = Browser::new(&app);
        let page = login_page(&mut br).await;
        let was = before(&app).await;
        let (mut hostile, _) = assert_with(&page, &key, &knobs);
        edit(&mut hostile);
        let refused = post(&mut br, &page, &hostile).await;
        check_refused(&app, &br, &refused, (&name, &reason, 401), &was).await;
        // The fresh challenge of the refused page, answered without the tampering: accepted.
        let (honest, next) = assert_with(&refused, &key, &json!({}));
        signed_in(&mut br, &refused, &honest).await;
        key = next;
    }

    // Another user's passkey signs in that user, never the demo user (the handle names it).
    add_user(&app, BOB, BOB_PASSWORD);
    let bob_key = enrol(&app, BOB, BOB_PASSWORD, &json!({})).await;
    let mut br = Browser::new(&app);
    let page = login_page(&mut br).await;
    let (credential, _) = assert_with(&page, &bob_key, &json!({}));
    let done = post(&mut br, &page, &credential).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let (_, account) = br.follow(done).await;
    assert!(account.body.contains(BOB), "signed in as bob");
    assert!(!account.body.contains(DEMO_EMAIL), "not as the demo user");

    // A disabled account: refused once the key proved itself, audited, nothing recorded.
    let id = user(&app, DEMO_EMAIL);
    assert!(
        app.store
            .set_disabled(&id, true, crate::helpers::START)
            .unwrap()
    );
    let mut br = Browser::new(&app);
    let page = login_page(&mut br).await;
    let was = before(&app).await;
    let (valid, _) = assert_with(&page, &key, &json!({}));
    let refused = post(&mut br, &page, &valid).await;
    check_refused(
        &app,
        &br,
        &refused,
        ("a disabled account", "account_disabled", 403),
        &was,
    )
    .await;
}

/// The admin API and the CLI list a user's passkeys and remove one; a removed passkey signs in
/// no more, the removal is audited with who did it, and the last one takes the factor with it.
async fn admins_list_and_remove_a_users_passkeys(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let key = enrol(&app, DEMO_EMAIL, DEMO_PASSWORD, &json!({})).await;
    let uid = user(&app, DEMO_EMAIL);
    let http = Http::new(&app);
    let admin = admin_token(&http, "concierge:admin").await;
    let path = format!("/admin/v1/users/{}/passkeys", uid.as_str());
    let (s, _, listed) = api(&app, "GET", &path, Some(&admin)).await;
    assert_eq!(s, 200, "{listed}");
    let passkeys = listed["passkeys"].as_array().unwrap();
    assert_eq!(passkeys.len(), 1, "{listed}");
    let id = passkeys[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(passkeys[0]["name"], "Passkey 1");
    assert!(passkeys[0]["last_used_at"].is_null());
    // The CLI lists the same one.
    let out = app
        .cli()
        .args(["users", "passkeys", DEMO_EMAIL])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("{id}\tPasskey 1\t")), "{text}");
    // Unknown user, unknown passkey, no token: refused; nothing removed.
    let (s, _, _) = api(&app, "GET", "/admin/v1/users/nobody/passkeys", Some(&admin)).await;
    assert_eq!(s, 404);
    let (s, _, v) = api(&app, "DELETE", &format!("{path}/AAAA"), Some(&admin)).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")), "{v}");
    let (s, _, _) = api(&app, "DELETE", &format!("{path}/{id}"), None).await;
    assert_eq!(s, 401);
    assert_eq!(stored(&app, DEMO_EMAIL).len(), 1, "nothing removed yet");
    // Removed through the API: the key signs in no more, and what it may have opened ends (as
    // a password change: revoke-all).
    assert!(sessions(&app, DEMO_EMAIL) > 0, "signed in before");
    let (s, _, v) = api(&app, "DELETE", &format!("{path}/{id}"), Some(&admin)).await;
    assert_eq!((s, v["left"].as_u64()), (200, Some(0)), "{v}");
    assert!(stored(&app, DEMO_EMAIL).is_empty());
    assert_eq!(sessions(&app, DEMO_EMAIL), 0, "the user's sessions ended");
    let removed = audit_events(&app, "mfa_removed").await;
    assert!(
        removed.iter().any(|e| e["user_id"] == uid.as_str()
            && e["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("passkey by admin:api:ops")),
        "{removed:?}"
    );
    let mut br = Browser::new(&app);
    let page = login_page(&mut br).await;
    let (credential, _) = assert_with(&page, &key, &json!({}));
    let refused = post(&mut br, &page, &credential).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(br.session_cookie().is_none());
    // The factor went with the last passkey: the account page offers to add one again.
    let mut br = Browser::new(&app);
    assert_eq!(
        br.login(DEMO_EMAIL, DEMO_PASSWORD).await.status,
        303,
        "no factor left to ask"
    );
    // Removed through the CLI.
    enrol(&app, DEMO_EMAIL, DEMO_PASSWORD, &json!({})).await;
    let (_, _, listed) = api(&app, "GET", &path, Some(&admin)).await;
    let id = listed["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let out = app
        .cli()
        .args(["users", "remove-passkey", DEMO_EMAIL, &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored(&app, DEMO_EMAIL).is_empty());
    let out = app
        .cli()
        .args(["users", "remove-passkey", DEMO_EMAIL, &id])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second removal fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such passkey"));
}

/// The account page lists the user's passkeys and renames one of theirs; a name that is empty,
/// too long or carries control or bidirectional-override characters is refused, and another
/// user's passkey cannot be renamed (its id is not a secret).
async fn a_user_renames_only_their_own_passkeys(b: Backend) {
    use base64::Engine;
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let key = enrol(&app, DEMO_EMAIL, DEMO_PASSWORD, &json!({})).await;
    add_user(&app, BOB, BOB_PASSWORD);
    enrol(&app, BOB, BOB_PASSWORD, &json!({})).await;
    let bobs = stored(&app, BOB);
    let mut br = Browser::new(&app);
    let page = login_page(&mut br).await;
    let (credential, _) = assert_with(&page, &key, &json!({}));
    signed_in(&mut br, &page, &credential).await;
    let account = br.get("/account").await;
    assert!(
        account.body.contains("id=\"passkey-list\"") && account.body.contains("Passkey 1"),
        "{}",
        account.body
    );
    let b64 = |raw: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let mine = b64(&stored(&app, DEMO_EMAIL)[0].credential_id);
    let long = "a".repeat(65);
    for (id, name, want) in [
        (&mine, "  Work laptop ", 303),
        (&mine, "   ", 400),
        (&mine, "evil\u{202e}eman", 400),
        (&mine, "line\nbreak", 400),
        (&mine, long.as_str(), 400),
        (&b64(&bobs[0].credential_id), "Mine now", 404),
        (&"not base64!".to_owned(), "x", 404),
    ] {
        let done = br
            .submit(
                &account,
                "/account/passkeys/rename",
                &[("id", id.as_str()), ("name", name)],
            )
            .await;
        assert_eq!(done.status, want, "{name:?}: {}", done.body);
    }
    assert_eq!(stored(&app, DEMO_EMAIL)[0].name, "Work laptop");
    assert_eq!(stored(&app, BOB), bobs, "bob's passkey untouched");
    // Without the CSRF token: refused, nothing renamed.
    let forged = br
        .post_form(
            "/account/passkeys/rename",
            &[("id", mine.as_str()), ("name", "x")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(stored(&app, DEMO_EMAIL)[0].name, "Work laptop");
}

/// A second passkey (another device) is added from the account page after a recent proof; both
/// sign in without a password, each recorded on its own.
async fn a_user_adds_a_second_passkey(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let first = enrol(&app, DEMO_EMAIL, DEMO_PASSWORD, &json!({})).await;
    let mut br = Browser::new(&app);
    let page = login_page(&mut br).await;
    let (credential, first) = assert_with(&page, &first, &json!({}));
    signed_in(&mut br, &page, &credential).await;
    let page = registration_page(&mut br).await;
    let (credential, second) = create(&page, &json!({}));
    registered(&mut br, &page, &credential).await;
    let rows = stored(&app, DEMO_EMAIL);
    assert_eq!(rows.len(), 2, "two passkeys");
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["Passkey 1", "Passkey 2"]);
    let row_of = |key: &Value| {
        use base64::Engine;
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key["id"].as_str().unwrap())
            .unwrap();
        stored(&app, DEMO_EMAIL)
            .into_iter()
            .find(|r| r.credential_id == id)
            .unwrap()
    };
    assert!(row_of(&second).last_used_at.is_none(), "not used yet");
    let mut used = Vec::new();
    for key in [&first, &second] {
        let mut br = Browser::new(&app);
        let page = login_page(&mut br).await;
        let (credential, after) = assert_with(&page, key, &json!({}));
        signed_in(&mut br, &page, &credential).await;
        assert!(row_of(key).last_used_at.is_some());
        used.push(after);
    }
    let (first, second) = (used[0].clone(), used[1].clone());
    // The same authenticator's credential again: the registration page excludes it.
    let page = registration_page(&mut br).await;
    let excluded = options(&page)["publicKey"]["excludeCredentials"].clone();
    assert_eq!(excluded.as_array().map(Vec::len), Some(2), "{excluded}");

    // One lost device: its passkey is removed alone, from the factors page (after the recent
    // proof above); the other one still signs in.
    let factors = br.get("/account/factors").await;
    assert_eq!(factors.status, 200, "{}", factors.body);
    assert_eq!(
        factors.body.matches("data-credential=\"").count(),
        2,
        "each passkey has its own remove button: {}",
        factors.body
    );
    let lost = first["id"].as_str().unwrap();
    let done = br
        .submit(
            &factors,
            "/login/mfa/remove",
            &[("factor", "passkey"), ("credential", lost)],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(stored(&app, DEMO_EMAIL).len(), 1, "one passkey left");
    assert!(
        !done.body.contains("data-credential=\""),
        "the last one is removed with the factor: {}",
        done.body
    );
    let removed = audit_events(&app, "mfa_removed").await;
    assert!(
        removed.iter().any(|e| e["reason"] == "passkey by user"),
        "{removed:?}"
    );
    let mut gone = Browser::new(&app);
    let page = login_page(&mut gone).await;
    let (credential, _) = assert_with(&page, &first, &json!({}));
    assert_eq!(post(&mut gone, &page, &credential).await.status, 401);
    let mut kept = Browser::new(&app);
    let page = login_page(&mut kept).await;
    let (credential, _) = assert_with(&page, &second, &json!({}));
    signed_in(&mut kept, &page, &credential).await;
}

per_backend_async!(
    a_user_adds_a_second_passkey,
    a_user_renames_only_their_own_passkeys,
    admins_list_and_remove_a_users_passkeys,
    a_passkey_signs_in_without_a_password,
    hostile_passwordless_answers_are_refused_audited_and_change_nothing,
);
