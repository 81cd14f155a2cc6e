//! Nothing readable from the database signs anything (issue #13, hole 1): a step value forged
//! with every secret stored in the database opens no session, while the same forgery made with
//! the keys derived from the sealed root secret (which needs the key-encryption key) would, so
//! the forging below is the real one.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::{Browser, TestApp, spawn_provider};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::config::DatabaseUrl;
use concierge::domain::kek::KeyEncryptionKey;
use concierge::secrets::{Purpose, RootSecret};
use concierge::startup::DEMO_EMAIL;
use concierge::storage::Store;
use concierge::storage::schema::secrets;

/// The key-encryption key `spawn_provider` configures (not stored in the database).
const KEK_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Every row of the `secrets` table, as a reader of a backup sees them.
fn stored_secrets(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let q = secrets::table.select((secrets::name, secrets::value));
    match app.db_url() {
        DatabaseUrl::Sqlite(p) => {
            let mut c = SqliteConnection::establish(&p.display().to_string()).unwrap();
            q.load(&mut c).unwrap()
        }
        DatabaseUrl::Postgres(u) => {
            let mut c = PgConnection::establish(u).unwrap();
            q.load(&mut c).unwrap()
        }
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Posts a forged "factor proven, continue" step for the demo user, made with `csrf_key` (the
/// form token) and `binding_key` (the step value); true if it opened a session.
async fn forge_continue(app: &TestApp, user_id: &str, csrf_key: &[u8], binding_key: &[u8]) -> bool {
    let mut br = Browser::new(app);
    let cookie = URL_SAFE_NO_PAD.encode([42u8; 32]);
    br.cookies.insert("concierge_csrf".into(), cookie.clone());
    let token = URL_SAFE_NO_PAD.encode(mac(csrf_key, &[b"concierge-csrf-v1:", cookie.as_bytes()]));
    let ticket = serde_json::json!({
        "user_id": user_id, "upstream": "local", "amr": ["pwd"], "return_to": "/account",
        "required": false, "proven": ["otp", "mfa"], "exp": i64::MAX,
    })
    .to_string();
    let sig = mac(
        binding_key,
        &[
            b"concierge-signed-v1:",
            b"mfa-step",
            b":",
            cookie.as_bytes(),
            b":",
            ticket.as_bytes(),
        ],
    );
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(ticket.as_bytes()),
        URL_SAFE_NO_PAD.encode(sig)
    );
    let page = br
        .post_form(
            "/login/mfa/continue",
            &[("csrf_token", &token), ("ticket", &signed)],
        )
        .await;
    br.session_cookie().is_some() && page.status == 303
}

async fn database_secrets_sign_nothing(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let user = app
        .store
        .user_by_email(&concierge::domain::Email::parse(DEMO_EMAIL).unwrap())
        .unwrap()
        .unwrap();
    let uid = user.id.as_str().to_owned();

    let rows = stored_secrets(&app);
    assert!(!rows.is_empty(), "the broker stores its root secret");
    for (name, value) in &rows {
        assert!(
            !forge_continue(&app, &uid, value, value).await,
            "a step forged with the stored secret {name:?} opened a session"
        );
    }

    // The control: with the key-encryption key (which is not in the database) the root opens,
    // and a step signed with its derived keys is accepted. So the refusals above are real.
    let kek = KeyEncryptionKey::new(STANDARD.decode(KEK_B64).unwrap().try_into().unwrap());
    let root = RootSecret::load_or_create(
        app.store.as_ref(),
        &kek,
        &concierge::clock::OsEntropy,
        crate::helpers::START,
    )
    .unwrap();
    let csrf = root.derive(Purpose::Csrf).unwrap();
    let binding = root.derive(Purpose::BrowserBinding).unwrap();
    assert!(
        forge_continue(&app, &uid, csrf.bytes(), binding.bytes()).await,
        "the control forgery with the real derived keys must open a session"
    );
    // Each key for its own purpose only: the CSRF key does not sign step values.
    assert!(!forge_continue(&app, &uid, csrf.bytes(), csrf.bytes()).await);
}

per_backend_async!(database_secrets_sign_nothing);
