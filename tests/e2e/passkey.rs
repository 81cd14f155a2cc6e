//! Passkeys (issue #19) over HTTP with an independent software authenticator
//! (tests/peers/soft_authenticator.py, on cbor2 + cryptography): enrolment and sign-in, then the
//! hostile corpus. Every hostile case is refused with the passkey page (never a 500, nothing
//! internal), audited (`mfa_failed`, `passkey:<reason>`), and leaves the stored credentials as
//! they were; then the same ceremony, answered without the tampering, is accepted (so no case
//! passes for a reason other than its tampering). Two instances on one PostgreSQL share the
//! ceremonies.

use std::io::Write;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::control::{OPS_CLIENTS, audit_events};
use crate::helpers::{
    Browser, Page, TestApp, assert_error_page, spawn_provider_with, unescape_html,
};
use crate::per_backend_async;
use crate::support::{Backend, fresh_db};
use concierge::domain::{Email, UserId};
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::{MfaStore, Store, WebAuthnCredential};

/// The broker's public URL, hence the WebAuthn origin and RP id (`localhost`: an IP address
/// cannot be an RP id). The client data carries it; the test client reaches the bound address.
pub(crate) const PUBLIC: &str = "http://localhost:18443";
pub(crate) const BOB: &str = "bob@example.com";
pub(crate) const BOB_PASSWORD: &str = "bob's long passphrase";

fn passkey_toml() -> String {
    format!("{OPS_CLIENTS}\n[mfa]\nrequired = \"optional\"\n\n[mfa.passkey]\nenabled = true\n")
}

pub(crate) async fn passkey_app(b: Backend) -> Option<TestApp> {
    passkey_app_with(b, &passkey_toml()).await
}

/// A broker on [`PUBLIC`] with `toml`, the sign-in and MFA rate limits off.
pub(crate) async fn passkey_app_with(b: Backend, toml: &str) -> Option<TestApp> {
    // Many sign-ins from one address in a minute of a manual clock: the rate limits (tested in
    // control.rs) are off here.
    spawn_provider_with(
        b,
        &[
            ("CONCIERGE__SERVER__PUBLIC_URL", PUBLIC),
            ("CONCIERGE__RATE_LIMIT__LOGIN_PER_IP", "off"),
            ("CONCIERGE__RATE_LIMIT__LOGIN_PER_ACCOUNT", "off"),
            ("CONCIERGE__RATE_LIMIT__JOURNEY_PER_IP", "off"),
            ("CONCIERGE__RATE_LIMIT__MFA_PER_IP", "off"),
            ("CONCIERGE__RATE_LIMIT__MFA_PER_ACCOUNT", "off"),
        ],
        toml,
    )
    .await
}

/// One request to the software authenticator: JSON in, JSON out.
pub(crate) fn authenticator(request: &Value) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers/soft_authenticator.py");
    let mut child = std::process::Command::new(crate::mfa::python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Python test peers (scripts/test.sh installs them)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "soft_authenticator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The WebAuthn options the passkey page carries (the answer form's `data-options`).
pub(crate) fn options(page: &Page) -> Value {
    let needle = "data-options=\"";
    let start = page
        .body
        .find(needle)
        .unwrap_or_else(|| panic!("no passkey options in {}", page.body))
        + needle.len();
    let end = page.body[start..].find('"').unwrap() + start;
    serde_json::from_str(&unescape_html(&page.body[start..end])).unwrap()
}

fn challenge(page: &Page) -> String {
    options(page)["publicKey"]["challenge"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A request to the authenticator for `page`'s ceremony, with `extra` members (knobs) on top.
fn request(op: &str, page: &Page, key: Option<&Value>, extra: &Value) -> Value {
    let mut req = json!({ "op": op, "origin": PUBLIC, "options": options(page) });
    if let Some(k) = key {
        req["key"] = k.clone();
    }
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    req
}

/// A new credential for the registration page: (the credential JSON to post, the key state).
pub(crate) fn create(page: &Page, extra: &Value) -> (String, Value) {
    assert!(
        page.body.contains("data-mode=\"register\""),
        "{}",
        page.body
    );
    let out = authenticator(&request("create", page, None, extra));
    (out["credential"].to_string(), out["key"].clone())
}

/// An assertion for the sign-in page with `key`: (the credential JSON, the key state after).
fn get(page: &Page, key: &Value, extra: &Value) -> (String, Value) {
    assert!(
        page.body.contains("data-mode=\"authenticate\""),
        "{}",
        page.body
    );
    let out = authenticator(&request("get", page, Some(key), extra));
    (out["credential"].to_string(), out["key"].clone())
}

async fn post(br: &mut Browser, page: &Page, credential: &str) -> Page {
    br.submit(page, "/login/mfa/answer", &[("credential", credential)])
        .await
}

pub(crate) fn user(app: &TestApp, email: &str) -> UserId {
    app.store
        .user_by_email(&Email::parse(email).unwrap())
        .unwrap()
        .unwrap()
        .id
}

pub(crate) fn stored(app: &TestApp, email: &str) -> Vec<WebAuthnCredential> {
    app.store.webauthn_credentials(&user(app, email)).unwrap()
}

/// The reasons of the `mfa_failed` events so far, oldest first.
async fn failures(app: &TestApp) -> Vec<String> {
    audit_events(app, "mfa_failed")
        .await
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) fn add_user(app: &TestApp, email: &str, password: &str) {
    let mut child = app
        .cli()
        .args(["users", "add", email])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A page refusing a passkey: the passkey page again with its message, 401, nothing internal,
/// no session.
fn assert_refused(br: &Browser, page: &Page, case: &str) {
    assert_eq!(page.status, 401, "{case}: {}", page.body);
    assert!(
        page.body.contains("data-factor=\"passkey\"") && page.body.contains("id=\"mfa-error\""),
        "{case}: the passkey page says why: {}",
        page.body
    );
    for leak in [
        "panicked", "diesel", "src/", "actix", "Error {", "serde", "webauthn", "Webauthn",
    ] {
        assert!(
            !page.body.contains(leak),
            "{case}: leaks `{leak}`: {}",
            page.body
        );
    }
    assert!(br.session_cookie().is_none(), "{case}: not signed in");
}

/// The passkey registration page of a signed-in browser (the account's factors journey).
pub(crate) async fn registration_page(br: &mut Browser) -> Page {
    let factors = br.get("/account/factors").await;
    assert_eq!(factors.status, 200, "{}", factors.body);
    assert!(
        factors
            .body
            .contains("class=\"button enroll\" data-factor=\"passkey\""),
        "adding a passkey is offered: {}",
        factors.body
    );
    let page = crate::mfa::choose(br, &factors, "passkey", "enroll").await;
    assert_eq!(page.status, 200, "{}", page.body);
    page
}

/// Answers a registration page with `credential`, which must be accepted: through the recovery
/// codes (first factor) back to the account.
pub(crate) async fn registered(br: &mut Browser, page: &Page, credential: &str) {
    let done = post(br, page, credential).await;
    assert!(
        done.status == 303 || done.has_form("/login/mfa/continue"),
        "registration accepted: {} {}",
        done.status,
        done.body
    );
    let done = if done.has_form("/login/mfa/continue") {
        br.submit(&done, "/login/mfa/continue", &[]).await
    } else {
        done
    };
    let (trail, end) = br.follow(done).await;
    assert_eq!(end.status, 200, "{trail:?}: {}", end.body);
}

/// Signs in with the password: the passkey page (straight to it, or chosen).
async fn assertion_page(app: &TestApp, email: &str, password: &str) -> (Browser, Page) {
    let mut br = Browser::new(app);
    let page = br.login(email, password).await;
    assert_eq!(
        page.status, 200,
        "the second factor is asked: {}",
        page.body
    );
    let page = if page.body.contains("data-mode=\"authenticate\"") {
        page
    } else {
        crate::mfa::choose(&mut br, &page, "passkey", "challenge").await
    };
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        br.session_cookie().is_none(),
        "no session before the passkey"
    );
    (br, page)
}

/// Answers a sign-in page with an accepted assertion: the account, signed in with hwk and mfa.
async fn signed_in(br: &mut Browser, page: &Page, credential: &str) {
    let done = post(br, page, credential).await;
    assert_eq!(done.status, 303, "assertion accepted: {}", done.body);
    let (trail, account) = br.follow(done).await;
    assert_eq!(account.status, 200, "{trail:?}: {}", account.body);
    assert!(br.session_cookie().is_some(), "signed in");
    let amr = amr_of(&account);
    for m in ["pwd", "hwk", "mfa"] {
        assert!(amr.split([' ', ',']).any(|a| a == m), "amr {amr} has {m}");
    }
}

/// The session's amr as the account page shows it.
pub(crate) fn amr_of(account: &Page) -> String {
    let needle = "data-field=\"amr\">";
    let start = account
        .body
        .find(needle)
        .unwrap_or_else(|| panic!("no amr on {}", account.body))
        + needle.len();
    let end = account.body[start..].find('<').unwrap() + start;
    account.body[start..end].to_owned()
}

/// `email`, signed in with the password (no factor yet: MFA is optional), adds a passkey from
/// the account page with the authenticator's `knobs` (honest ones). Returns the key state.
pub(crate) async fn enrol(app: &TestApp, email: &str, password: &str, knobs: &Value) -> Value {
    let mut br = Browser::new(app);
    let first = br.login(email, password).await;
    assert_eq!(
        first.status, 303,
        "no factor yet, MFA optional: {}",
        first.body
    );
    let page = registration_page(&mut br).await;
    let (credential, key) = create(&page, knobs);
    registered(&mut br, &page, &credential).await;
    let rows = stored(app, email);
    assert_eq!(rows.len(), 1, "one credential stored");
    assert_eq!(rows[0].last_used_at, None);
    key
}

/// The demo user enrols a passkey, then signs in with the password and the passkey. Returns
/// the key state.
async fn enrol_and_sign_in(app: &TestApp) -> Value {
    let key = enrol(app, DEMO_EMAIL, DEMO_PASSWORD, &json!({})).await;
    let (mut br, page) = assertion_page(app, DEMO_EMAIL, DEMO_PASSWORD).await;
    let (credential, key) = get(&page, &key, &json!({}));
    signed_in(&mut br, &page, &credential).await;
    let rows = stored(app, DEMO_EMAIL);
    assert_eq!(rows[0].sign_count, key["counter"].as_i64().unwrap());
    assert!(rows[0].last_used_at.is_some(), "its use recorded");
    key
}

async fn a_passkey_is_enrolled_and_signs_in_with_hwk(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    enrol_and_sign_in(&app).await;
    assert!(
        audit_events(&app, "mfa_succeeded")
            .await
            .iter()
            .any(|e| e["reason"] == "passkey"),
        "the passkey sign-in is audited"
    );
    // Packed self attestation (WebAuthn §8.2, no x5c) is accepted too, and signs in.
    add_user(&app, BOB, BOB_PASSWORD);
    let key = enrol(&app, BOB, BOB_PASSWORD, &json!({"attestation": "packed"})).await;
    let (mut br, page) = assertion_page(&app, BOB, BOB_PASSWORD).await;
    let (credential, _) = get(&page, &key, &json!({}));
    signed_in(&mut br, &page, &credential).await;
}

/// One hostile case: knobs for the authenticator, the reason the audit must carry.
pub(crate) struct Case {
    pub name: &'static str,
    pub knobs: Value,
    pub reason: &'static str,
}

fn case(name: &'static str, knobs: Value, reason: &'static str) -> Case {
    Case {
        name,
        knobs,
        reason,
    }
}

/// Checks after a refusal: the page, a new `mfa_failed` event with the reason, nothing stored
/// changed.
async fn check_refused(
    app: &TestApp,
    email: &str,
    br: &Browser,
    page: &Page,
    c: &Case,
    audited_before: usize,
    stored_before: &[WebAuthnCredential],
) {
    assert_refused(br, page, c.name);
    let reasons = failures(app).await;
    let new = &reasons[audited_before..];
    let want = format!("passkey:{}", c.reason);
    assert!(
        new.contains(&want),
        "{}: audited with {want}: {new:?}",
        c.name
    );
    assert_eq!(
        stored(app, email),
        stored_before,
        "{}: nothing stored changed",
        c.name
    );
}

pub(crate) fn sign_in_cases() -> Vec<Case> {
    vec![
        case(
            "wrong origin",
            json!({"origin": "https://evil.example"}),
            "origin",
        ),
        case(
            "origin on another port",
            json!({"origin": "http://localhost:18444"}),
            "origin",
        ),
        case(
            "rpIdHash of another RP id",
            json!({"tamper": {"rp_id": "evil.example"}}),
            "rp_id",
        ),
        case(
            "a challenge this ceremony never issued",
            json!({"tamper": {"challenge": "Y2hhbGxlbmdlLW5vdC1pc3N1ZWQtYnktdGhlLWJyb2tlcg"}}),
            "challenge",
        ),
        case(
            "authenticatorData changed after signing",
            json!({"tamper": {"auth_data": true}}),
            "signature",
        ),
        case(
            "clientDataJSON changed after signing",
            json!({"tamper": {"client_data": true}}),
            "signature",
        ),
        case(
            "signed by another key",
            json!({"tamper": {"other_key": true}}),
            "signature",
        ),
        case(
            "user verification missing",
            json!({"tamper": {"uv": false}}),
            "user_not_verified",
        ),
        case(
            "user presence missing",
            json!({"tamper": {"up": false}}),
            "user_not_present",
        ),
        case(
            "a credential id never registered",
            json!({"tamper": {"unknown_credential": true, "ignore_allow": true}}),
            "unknown_credential",
        ),
        case(
            "a cross-origin iframe",
            json!({"tamper": {"cross_origin": true, "top_origin": "https://evil.example"}}),
            "cross_origin",
        ),
        case(
            "crossOrigin without a topOrigin",
            json!({"tamper": {"cross_origin": true}}),
            "cross_origin",
        ),
        case(
            "a topOrigin alone",
            json!({"tamper": {"top_origin": "https://evil.example"}}),
            "cross_origin",
        ),
        case(
            "client data of a registration",
            json!({"tamper": {"type": "webauthn.create"}}),
            "type",
        ),
    ]
}

async fn hostile_assertions_are_refused_audited_and_change_nothing(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let mut key = enrol_and_sign_in(&app).await;
    for c in sign_in_cases() {
        let (mut br, page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
        let (audited, before) = (failures(&app).await.len(), stored(&app, DEMO_EMAIL));
        let (hostile, _) = get(&page, &key, &c.knobs);
        let refused = post(&mut br, &page, &hostile).await;
        check_refused(&app, DEMO_EMAIL, &br, &refused, &c, audited, &before).await;
        // The same ceremony without the tampering: accepted.
        let (honest, next) = get(&refused, &key, &json!({}));
        signed_in(&mut br, &refused, &honest).await;
        key = next;
    }
}

fn registration_cases() -> Vec<Case> {
    vec![
        case(
            "wrong origin",
            json!({"origin": "https://evil.example"}),
            "origin",
        ),
        case(
            "rpIdHash of another RP id",
            json!({"tamper": {"rp_id": "evil.example"}}),
            "rp_id",
        ),
        case(
            "a challenge this ceremony never issued",
            json!({"tamper": {"challenge": "Y2hhbGxlbmdlLW5vdC1pc3N1ZWQtYnktdGhlLWJyb2tlcg"}}),
            "challenge",
        ),
        case(
            "authenticatorData changed after the packed signature",
            json!({"attestation": "packed", "tamper": {"auth_data": true}}),
            "attestation",
        ),
        case(
            "clientDataJSON changed after the packed signature",
            json!({"attestation": "packed", "tamper": {"client_data": true}}),
            "attestation",
        ),
        case(
            "packed self attestation signed by another key",
            json!({"attestation": "packed", "tamper": {"other_key": true}}),
            "attestation",
        ),
        case(
            "packed attestation over other bytes",
            json!({"attestation": "packed", "tamper": {"att_sig": true}}),
            "attestation",
        ),
        case(
            "user verification missing",
            json!({"tamper": {"uv": false}}),
            "user_not_verified",
        ),
        case(
            "a cross-origin iframe",
            json!({"tamper": {"cross_origin": true, "top_origin": "https://evil.example"}}),
            "cross_origin",
        ),
        case(
            "a topOrigin alone",
            json!({"tamper": {"top_origin": "https://evil.example"}}),
            "cross_origin",
        ),
        case("EdDSA, not offered", json!({"alg": -8}), "algorithm"),
        case("RS1, not offered", json!({"alg": -65535}), "algorithm"),
        case(
            "client data of a sign-in",
            json!({"tamper": {"type": "webauthn.get"}}),
            "type",
        ),
    ]
}

async fn hostile_registrations_are_refused_audited_and_change_nothing(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    // One user per case, signed in with the password and no factor yet (a user with a passkey
    // adds none from the account page: the factor is enrolled once).
    for (i, c) in registration_cases().into_iter().enumerate() {
        let email = format!("reg{i}@example.com");
        add_user(&app, &email, BOB_PASSWORD);
        let mut br = Browser::new(&app);
        assert_eq!(br.login(&email, BOB_PASSWORD).await.status, 303);
        let page = registration_page(&mut br).await;
        let (audited, before) = (failures(&app).await.len(), stored(&app, &email));
        let (hostile, _) = create(&page, &c.knobs);
        let refused = post(&mut br, &page, &hostile).await;
        check_refused_registration(&app, &email, &refused, &c, audited, &before).await;
        // The same ceremony without the tampering (same attestation format): accepted.
        let honest_knobs = match c.knobs.get("attestation") {
            Some(f) => json!({ "attestation": f }),
            None => json!({}),
        };
        let (honest, _) = create(&refused, &honest_knobs);
        registered(&mut br, &refused, &honest).await;
        assert_eq!(stored(&app, &email).len(), 1, "{}", c.name);
    }
}

/// Checks after a refused registration: the passkey page says why (401, nothing internal; the
/// password session stays), a new `mfa_failed` event with the reason, nothing stored.
async fn check_refused_registration(
    app: &TestApp,
    email: &str,
    page: &Page,
    c: &Case,
    audited_before: usize,
    stored_before: &[WebAuthnCredential],
) {
    assert_eq!(page.status, 401, "{}: {}", c.name, page.body);
    assert!(
        page.body.contains("data-mode=\"register\"") && page.body.contains("id=\"mfa-error\""),
        "{}: the passkey page says why: {}",
        c.name,
        page.body
    );
    for leak in [
        "panicked", "diesel", "src/", "actix", "Error {", "serde", "webauthn",
    ] {
        assert!(!page.body.contains(leak), "{}: leaks `{leak}`", c.name);
    }
    let reasons = failures(app).await;
    let new = &reasons[audited_before..];
    let want = format!("passkey:{}", c.reason);
    assert!(
        new.contains(&want),
        "{}: audited with {want}: {new:?}",
        c.name
    );
    assert_eq!(
        stored(app, email),
        stored_before,
        "{}: nothing stored",
        c.name
    );
}

pub(crate) fn sessions(app: &TestApp, email: &str) -> usize {
    app.store.sessions_of_user(&user(app, email)).unwrap().len()
}

/// An accepted assertion, posted again: to its own finished ceremony (a double submit: no second
/// use recorded, no second session) and into a new ceremony (refused: not its challenge). A
/// registration answer made for one ceremony, posted to a newer one: refused.
async fn replayed_answers_are_refused(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let key = enrol_and_sign_in(&app).await;
    let (mut br, page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
    let (accepted, key) = get(&page, &key, &json!({}));
    signed_in(&mut br, &page, &accepted).await;
    let (before, live) = (stored(&app, DEMO_EMAIL), sessions(&app, DEMO_EMAIL));

    let again = post(&mut br, &page, &accepted).await;
    assert!(again.status < 500, "{}", again.body);
    assert_eq!(stored(&app, DEMO_EMAIL), before, "no second use recorded");
    assert_eq!(sessions(&app, DEMO_EMAIL), live, "no second session");

    let (mut br, page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
    let c = case(
        "an accepted assertion in a new ceremony",
        json!({}),
        "challenge",
    );
    let audited = failures(&app).await.len();
    let refused = post(&mut br, &page, &accepted).await;
    check_refused(&app, DEMO_EMAIL, &br, &refused, &c, audited, &before).await;
    assert_eq!(sessions(&app, DEMO_EMAIL), live, "no session");
    let (honest, _) = get(&refused, &key, &json!({}));
    signed_in(&mut br, &refused, &honest).await;

    // Registration: the answer to a first ceremony, posted to a second one.
    add_user(&app, BOB, BOB_PASSWORD);
    let mut br = Browser::new(&app);
    assert_eq!(br.login(BOB, BOB_PASSWORD).await.status, 303);
    let first = registration_page(&mut br).await;
    let (made_for_first, _) = create(&first, &json!({}));
    let second = registration_page(&mut br).await;
    assert_ne!(
        challenge(&first),
        challenge(&second),
        "a new challenge per ceremony"
    );
    let c = case(
        "a registration answer in a newer ceremony",
        json!({}),
        "challenge",
    );
    let audited = failures(&app).await.len();
    let refused = post(&mut br, &second, &made_for_first).await;
    check_refused_registration(&app, BOB, &refused, &c, audited, &[]).await;
    let (honest, _) = create(&refused, &json!({}));
    registered(&mut br, &refused, &honest).await;
    assert_eq!(stored(&app, BOB).len(), 1);
}

/// Another user's ceremony: its challenge signed by this user's passkey, or this user's passkey
/// answering the other user's ceremony; the same for registration.
async fn another_users_ceremony_is_refused(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let demo = enrol_and_sign_in(&app).await;
    add_user(&app, BOB, BOB_PASSWORD);
    let bob = enrol(&app, BOB, BOB_PASSWORD, &json!({})).await;

    let (mut on_demo, demo_page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
    let (mut on_bob, bob_page) = assertion_page(&app, BOB, BOB_PASSWORD).await;
    // Demo's passkey signs Bob's challenge, posted in Demo's ceremony.
    let c = case(
        "the challenge of another user's ceremony",
        json!({"tamper": {"challenge": challenge(&bob_page)}}),
        "challenge",
    );
    let (audited, before) = (failures(&app).await.len(), stored(&app, DEMO_EMAIL));
    let (hostile, _) = get(&demo_page, &demo, &c.knobs);
    let refused = post(&mut on_demo, &demo_page, &hostile).await;
    check_refused(&app, DEMO_EMAIL, &on_demo, &refused, &c, audited, &before).await;
    // Demo's passkey answers Bob's ceremony (his challenge, his page).
    let c = case(
        "another user's passkey",
        json!({"tamper": {"ignore_allow": true}}),
        "unknown_credential",
    );
    let (audited, before) = (failures(&app).await.len(), stored(&app, BOB));
    let demo_before = stored(&app, DEMO_EMAIL);
    let (hostile, _) = get(&bob_page, &demo, &c.knobs);
    let refused_bob = post(&mut on_bob, &bob_page, &hostile).await;
    check_refused(&app, BOB, &on_bob, &refused_bob, &c, audited, &before).await;
    assert_eq!(stored(&app, DEMO_EMAIL), demo_before);
    // Both ceremonies, answered honestly: accepted.
    let (honest, _) = get(&refused, &demo, &json!({}));
    signed_in(&mut on_demo, &refused, &honest).await;
    let (honest, _) = get(&refused_bob, &bob, &json!({}));
    signed_in(&mut on_bob, &refused_bob, &honest).await;

    // Registration: Carol's ceremony answered with Dave's challenge.
    let (carol, dave) = ("carol@example.com", "dave@example.com");
    add_user(&app, carol, BOB_PASSWORD);
    add_user(&app, dave, BOB_PASSWORD);
    let (mut on_carol, mut on_dave) = (Browser::new(&app), Browser::new(&app));
    assert_eq!(on_carol.login(carol, BOB_PASSWORD).await.status, 303);
    assert_eq!(on_dave.login(dave, BOB_PASSWORD).await.status, 303);
    let carol_page = registration_page(&mut on_carol).await;
    let dave_page = registration_page(&mut on_dave).await;
    let c = case(
        "the challenge of another user's registration",
        json!({"tamper": {"challenge": challenge(&dave_page)}}),
        "challenge",
    );
    let audited = failures(&app).await.len();
    let (hostile, _) = create(&carol_page, &c.knobs);
    let refused = post(&mut on_carol, &carol_page, &hostile).await;
    check_refused_registration(&app, carol, &refused, &c, audited, &[]).await;
    assert!(stored(&app, dave).is_empty());
    let (honest, _) = create(&refused, &json!({}));
    registered(&mut on_carol, &refused, &honest).await;
    let (honest, _) = create(&dave_page, &json!({}));
    registered(&mut on_dave, &dave_page, &honest).await;
}

/// A counter-keeping authenticator whose counter does not move forward (the same value, or
/// back to zero): a possibly cloned key, refused with its own message and audited.
async fn a_signature_counter_that_goes_back_is_refused(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let key = enrol_and_sign_in(&app).await;
    let reached = key["counter"].as_i64().unwrap();
    assert!(reached >= 1, "the authenticator counts: {key}");
    for (name, counter) in [("the same counter", reached), ("back to zero", 0)] {
        let (mut br, page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
        let c = case(name, json!({ "counter": counter }), "counter_regressed");
        let (audited, before) = (failures(&app).await.len(), stored(&app, DEMO_EMAIL));
        let (hostile, _) = get(&page, &key, &c.knobs);
        let refused = post(&mut br, &page, &hostile).await;
        check_refused(&app, DEMO_EMAIL, &br, &refused, &c, audited, &before).await;
        assert!(refused.body.contains("copied"), "{name}: {}", refused.body);
    }
    let (mut br, page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
    let (honest, key) = get(&page, &key, &json!({}));
    signed_in(&mut br, &page, &honest).await;
    assert_eq!(
        stored(&app, DEMO_EMAIL)[0].sign_count,
        key["counter"].as_i64().unwrap()
    );
}

/// The user is disabled between the password and the passkey: the passkey, however valid, signs
/// nobody in, and its use is not recorded. Through `concierge users disable` (which revokes
/// what the user has: the journey's proofs open nothing), and in the store alone (the factor
/// itself must not accept a disabled user's credential).
async fn a_user_disabled_before_the_passkey_is_not_signed_in(b: Backend) {
    let Some(app) = passkey_app(b).await else {
        return;
    };
    let key = enrol_and_sign_in(&app).await;

    // Disabled in the store alone (no revocation), or through the CLI (which also revokes what
    // the user has): the journey's answer is refused before the factor runs.
    let id = user(&app, DEMO_EMAIL);
    let cli = |app: &TestApp| {
        let out = app
            .cli()
            .args(["users", "disable", DEMO_EMAIL])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for how in ["store", "cli"] {
        let (mut br, page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
        if how == "store" {
            assert!(
                app.store
                    .set_disabled(&id, true, crate::helpers::START)
                    .unwrap()
            );
        } else {
            cli(&app);
        }
        let (audited, before) = (failures(&app).await.len(), stored(&app, DEMO_EMAIL));
        let live = sessions(&app, DEMO_EMAIL);
        let (valid, _) = get(&page, &key, &json!({}));
        let refused = post(&mut br, &page, &valid).await;
        let (trail, end) = br.follow(refused).await;
        assert!(
            br.session_cookie().is_none(),
            "{how} {trail:?}: {}",
            end.body
        );
        assert_eq!(sessions(&app, DEMO_EMAIL), live, "{how}: no new session");
        assert_error_page(&end, 400);
        assert_eq!(
            stored(&app, DEMO_EMAIL),
            before,
            "{how}: nothing stored changed"
        );
        let reasons = failures(&app).await;
        assert!(
            reasons[audited..]
                .iter()
                .any(|r| r == "passkey:account_disabled"),
            "{how}: audited: {:?}",
            &reasons[audited..]
        );
        assert!(
            app.store
                .set_disabled(&id, false, crate::helpers::START)
                .unwrap()
        );
    }
    // Enabled again: the same passkey signs in (the refusals were the account's, not the key's).
    let (mut br, page) = assertion_page(&app, DEMO_EMAIL, DEMO_PASSWORD).await;
    let (valid, _) = get(&page, &key, &json!({}));
    signed_in(&mut br, &page, &valid).await;
}

per_backend_async!(
    a_passkey_is_enrolled_and_signs_in_with_hwk,
    hostile_assertions_are_refused_audited_and_change_nothing,
    hostile_registrations_are_refused_audited_and_change_nothing,
    replayed_answers_are_refused,
    another_users_ceremony_is_refused,
    a_signature_counter_that_goes_back_is_refused,
    a_user_disabled_before_the_passkey_is_not_signed_in,
);

/// Two `concierge serve` instances on one PostgreSQL: the ceremony state lives in the journey
/// (the database), not in an instance's memory. A registration begun on A completes on B; a
/// sign-in begun on B completes on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_ceremonies_cross_instances_on_one_postgres() {
    use crate::instances::{concierge, start, wait_ready};
    let Some(db) = fresh_db(Backend::Postgres) else {
        return;
    };
    let concierge::config::DatabaseUrl::Postgres(url) = &db.url else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("concierge.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[server]
public_url = "{PUBLIC}"
[database]
url = "{url}"
[provider]
key_encryption_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
[mfa]
required = "optional"
[mfa.passkey]
enabled = true
"#,
            data = dir.path().display().to_string(),
        ),
    )
    .unwrap();
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = start(&config, &log_a);
    let b = start(&config, &log_b);
    wait_ready(&a, &log_a).await;
    wait_ready(&b, &log_b).await;
    let mut add = concierge(&config)
        .args(["users", "add", BOB])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{BOB_PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(add.wait().unwrap().success());

    // Registration: the page from A, the answer to B.
    let mut br = Browser::at(&a.base);
    assert_eq!(br.login(BOB, BOB_PASSWORD).await.status, 303);
    let page = registration_page(&mut br).await;
    let (credential, key) = create(&page, &json!({}));
    br.base = b.base.clone();
    registered(&mut br, &page, &credential).await;

    // Sign-in: the password and the passkey page on B, the answer to A.
    let mut br = Browser::at(&b.base);
    let page = br.login(BOB, BOB_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let page = if page.body.contains("data-mode=\"authenticate\"") {
        page
    } else {
        crate::mfa::choose(&mut br, &page, "passkey", "challenge").await
    };
    let (assertion, _) = get(&page, &key, &json!({}));
    br.base = a.base.clone();
    signed_in(&mut br, &page, &assertion).await;
    // The session is one: B knows it.
    br.base = b.base.clone();
    let account = br.get("/account").await;
    assert_eq!(account.status, 200, "{}", account.body);
    assert!(amr_of(&account).contains("hwk"));
    for log in [&log_a, &log_b] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("ERROR"), "{text}");
    }
}
