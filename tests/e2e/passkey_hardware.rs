//! Hardware keys by attestation (issue #19 item 4): `[[mfa.passkey.hardware]]` lists a vendor's
//! attestation root and the models (AAGUIDs) it vouches for; a relying party with
//! `mfa = "hardware_key"` accepts only a passkey attested as one of them. The software
//! authenticator (tests/peers/soft_authenticator.py) plays the vendor too: it makes the roots
//! and issues §8.2.1 batch attestation certificates. A synced passkey proves `swk`, a listed
//! model `hwk`; an unlisted root, an unlisted model and self attestation are no hardware key:
//! refused where one is needed (audited, nothing stored), never a 500.

use serde_json::{Value, json};

use crate::control::{OPS_CLIENTS, admin_token, api, audit_events};
use crate::helpers::{Browser, Page, TestApp};
use crate::oidc::{Http, authorize_path_with, verify_with_jwks};
use crate::passkey::{
    PUBLIC, amr_of, authenticator, create, enrol, options, passkey_app_with, stored, user,
};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};

const MODEL: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
const OTHER_MODEL: &str = "ee882879-721c-4913-9775-3dfcce97072a";
const ADMIN_CB: &str = "https://admin.example/cb";

/// A vendor root from the software authenticator: `{cert_pem, key_pem}`.
fn vendor() -> Value {
    authenticator(&json!({"op": "make_ca"}))
}

/// A broker whose hardware list trusts `root` for [`MODEL`], with an `admin` client that needs
/// a hardware key; MFA otherwise optional.
async fn hardware_app(b: Backend, dir: &tempfile::TempDir, root: &Value) -> Option<TestApp> {
    let ca = dir.path().join("vendor-root.pem");
    std::fs::write(&ca, root["cert_pem"].as_str().unwrap()).unwrap();
    let config = format!(
        r#"{OPS_CLIENTS}
[[clients]]
id = "admin"
secret_sha256 = "SECRET_HASH"
redirect_uris = ["{ADMIN_CB}"]
mfa = "hardware_key"

[mfa]
required = "optional"

[mfa.passkey]
enabled = true

[[mfa.passkey.hardware]]
name = "Test Key 5"
aaguids = ["{MODEL}"]
ca_file = {:?}
"#,
        ca.display().to_string()
    );
    passkey_app_with(b, &config).await
}

async fn post(br: &mut Browser, page: &Page, credential: &str) -> Page {
    br.submit(page, "/login/mfa/answer", &[("credential", credential)])
        .await
}

/// The passkey sign-in page of a journey asking for a factor: straight there, or chosen.
async fn authenticate_page(br: &mut Browser, page: Page) -> Page {
    if page.body.contains("data-mode=\"authenticate\"") {
        page
    } else {
        crate::mfa::choose(br, &page, "passkey", "challenge").await
    }
}

/// Answers the passkey page with `key` (the authenticator's `knobs` on top): the next page and
/// the key state after.
async fn answer_with(br: &mut Browser, page: &Page, key: &Value, knobs: &Value) -> (Page, Value) {
    let mut req = json!({"op": "get", "origin": PUBLIC, "options": options(page), "key": key});
    for (k, v) in knobs.as_object().into_iter().flatten() {
        req[k] = v.clone();
    }
    let out = authenticator(&req);
    (
        post(br, page, &out["credential"].to_string()).await,
        out["key"].clone(),
    )
}

/// Signs in with the password and `key`: the browser, the account page, the key state after.
async fn sign_in_with(app: &TestApp, key: &Value) -> (Browser, Page, Value) {
    let mut br = Browser::new(app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let page = authenticate_page(&mut br, page).await;
    let (done, key) = answer_with(&mut br, &page, key, &json!({})).await;
    let (_, account) = br.follow(done).await;
    (br, account, key)
}

/// The registration page of a journey that must set up a passkey: straight there, or chosen.
async fn register_page(br: &mut Browser, page: Page) -> Page {
    let page = if page.body.contains("data-mode=\"register\"") {
        page
    } else {
        crate::mfa::choose(br, &page, "passkey", "enroll").await
    };
    assert!(
        page.body.contains("data-mode=\"register\""),
        "{}",
        page.body
    );
    page
}

fn assert_needs_hardware(page: &Page, case: &str) {
    assert!(
        page.status == 200 || page.status == 401,
        "{case}: {} {}",
        page.status,
        page.body
    );
    assert!(
        page.body
            .contains("security key your organisation approved"),
        "{case}: the page says a listed hardware key is needed: {}",
        page.body
    );
    for leak in [
        "panicked", "diesel", "src/", "webauthn", "Webauthn", "openssl",
    ] {
        assert!(!page.body.contains(leak), "{case}: leaks `{leak}`");
    }
}

async fn not_listed_refusals(app: &TestApp) -> usize {
    audit_events(app, "mfa_failed")
        .await
        .iter()
        .filter(|e| e["reason"] == "passkey:not_listed_hardware")
        .count()
}

/// The code in the redirect to the admin app: its ID token, signature checked.
async fn id_token(app: &TestApp, done: Page) -> serde_json::Map<String, Value> {
    assert!(
        matches!(done.status, 302 | 303),
        "a code for the admin app: {} {}",
        done.status,
        done.body
    );
    let loc = done.location.clone().unwrap_or_default();
    assert!(loc.starts_with(ADMIN_CB), "{loc}");
    let code = url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let http = Http::new(app);
    let (s, tokens) = http.exchange("admin", &code, ADMIN_CB).await;
    assert_eq!(s, 200, "{tokens}");
    verify_with_jwks(&http, tokens["id_token"].as_str().unwrap()).await
}

fn amr_has(claims: &serde_json::Map<String, Value>, m: &str) -> bool {
    claims["amr"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == m))
}

/// Follows redirects until a page that is not one of the broker's own redirects, or the
/// redirect to the app.
async fn settle(br: &mut Browser, page: Page) -> Page {
    let mut page = page;
    for _ in 0..8 {
        let Some(loc) = page.location.clone() else {
            return page;
        };
        if loc.starts_with(ADMIN_CB) {
            return page;
        }
        page = br.get(&loc).await;
    }
    page
}

async fn only_an_attested_listed_key_opens_a_hardware_key_app(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = vendor();
    let Some(app) = hardware_app(b, &dir, &root).await else {
        return;
    };
    // A synced passkey (BE and BS set, no attestation) set up from the account page: `swk`.
    let synced = enrol(
        &app,
        DEMO_EMAIL,
        DEMO_PASSWORD,
        &json!({"backup_eligible": true}),
    )
    .await;
    assert_eq!(stored(&app, DEMO_EMAIL)[0].attested, None);

    // Password and the synced passkey: phishing resistant, not a hardware key.
    let (mut br, account, synced) = sign_in_with(&app, &synced).await;
    let amr = amr_of(&account);
    assert!(amr.contains("swk") && amr.contains("phr"), "{amr}");
    assert!(
        !amr.contains("hwk"),
        "a synced passkey is no hardware key: {amr}"
    );

    // The admin app needs a hardware key: no code; the user has none, so one is set up.
    let res = br.get(&authorize_path_with("admin", ADMIN_CB, &[])).await;
    let page = settle(&mut br, res).await;
    assert_ne!(
        page.status, 302,
        "no code on a synced passkey: {:?}",
        page.location
    );
    let page = register_page(&mut br, page).await;
    let asked = options(&page);
    assert_eq!(asked["publicKey"]["attestation"], "direct", "{asked}");
    assert_eq!(
        asked["publicKey"]["hints"],
        json!(["security-key"]),
        "{asked}"
    );

    // Refused registrations, each audited, nothing stored: another synced passkey, self
    // attestation, a listed model under another root, another model under the listed root.
    let other_root = vendor();
    let cases = [
        ("a synced passkey", json!({"backup_eligible": true})),
        (
            "self attestation",
            json!({"attestation": "packed", "aaguid": MODEL}),
        ),
        (
            "an unlisted root",
            json!({"attestation": "packed", "aaguid": MODEL, "attestation_ca": other_root}),
        ),
        (
            "an unlisted model",
            json!({"attestation": "packed", "aaguid": OTHER_MODEL, "attestation_ca": root}),
        ),
    ];
    let mut page = page;
    for (case, knobs) in cases {
        let before = not_listed_refusals(&app).await;
        let (credential, _) = create(&page, &knobs);
        let refused = post(&mut br, &page, &credential).await;
        assert_needs_hardware(&refused, case);
        assert_eq!(stored(&app, DEMO_EMAIL).len(), 1, "{case}: nothing stored");
        assert_eq!(
            not_listed_refusals(&app).await,
            before + 1,
            "{case}: audited"
        );
        page = register_page(&mut br, refused).await;
    }

    // The listed model, attested by the listed root: stored as that model, and the code comes.
    let (credential, hardware) = create(
        &page,
        &json!({"attestation": "packed", "aaguid": MODEL, "attestation_ca": root}),
    );
    let done = post(&mut br, &page, &credential).await;
    let done = if done.has_form("/login/mfa/continue") {
        br.submit(&done, "/login/mfa/continue", &[]).await
    } else {
        done
    };
    let done = settle(&mut br, done).await;
    let claims = id_token(&app, done).await;
    assert!(
        amr_has(&claims, "hwk") && amr_has(&claims, "phr"),
        "{claims:?}"
    );
    assert_eq!(claims["acr"], "urn:concierge:loa:3");
    let rows = stored(&app, DEMO_EMAIL);
    assert_eq!(rows.len(), 2);
    let attested: Vec<_> = rows
        .iter()
        .filter_map(|r| r.attested.clone().map(|m| (m, r)))
        .collect();
    assert_eq!(attested.len(), 1, "only the new key is attested");
    let (model, row) = &attested[0];
    assert_eq!(
        (model.aaguid.as_str(), model.name.as_str()),
        (MODEL, "Test Key 5")
    );
    assert_eq!(row.name, "Test Key 5");

    // The admin API says which model it is; the synced one has none.
    let http = Http::new(&app);
    let admin = admin_token(&http, "concierge:admin").await;
    let path = format!(
        "/admin/v1/users/{}/passkeys",
        user(&app, DEMO_EMAIL).as_str()
    );
    let (s, _, listed) = api(&app, "GET", &path, Some(&admin)).await;
    assert_eq!(s, 200, "{listed}");
    let mut models: Vec<Value> = listed["passkeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["authenticator"].clone())
        .collect();
    models.sort_by_key(Value::is_null);
    assert_eq!(models, [json!("Test Key 5"), Value::Null], "{listed}");

    // A new sign-in with the synced passkey, then the admin app: only the hardware key is
    // offered, and the synced one, answered anyway, is refused.
    let (mut br, account, synced) = sign_in_with(&app, &synced).await;
    assert!(amr_of(&account).contains("swk"));
    let res = br.get(&authorize_path_with("admin", ADMIN_CB, &[])).await;
    let page = settle(&mut br, res).await;
    let page = authenticate_page(&mut br, page).await;
    let allowed = options(&page)["publicKey"]["allowCredentials"].clone();
    assert_eq!(
        allowed.as_array().map(Vec::len),
        Some(1),
        "only the hardware key: {allowed}"
    );
    assert_eq!(allowed[0]["id"], hardware["id"], "{allowed}");
    // The ceremony was begun for the hardware key alone: webauthn-rs refuses any other.
    let before = audit_events(&app, "mfa_failed").await.len();
    let (refused, _) = answer_with(
        &mut br,
        &page,
        &synced,
        &json!({"tamper": {"ignore_allow": true}}),
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.body.contains("id=\"mfa-error\""),
        "{}",
        refused.body
    );
    let failed = audit_events(&app, "mfa_failed").await;
    assert!(
        failed[before..].iter().any(|e| e["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("passkey:")),
        "audited with the passkey's reason: {:?}",
        &failed[before..]
    );
    let page = authenticate_page(&mut br, refused).await;
    let (done, _) = answer_with(&mut br, &page, &hardware, &json!({})).await;
    let done = settle(&mut br, done).await;
    let claims = id_token(&app, done).await;
    assert!(amr_has(&claims, "hwk"), "{claims:?}");
}

per_backend_async!(only_an_attested_listed_key_opens_a_hardware_key_app);
