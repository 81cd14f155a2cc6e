//! Nothing readable from the database continues anyone's sign-in (issue #13, hole 1): a journey
//! id made from every stored secret and every stored journey opens no session, nor does the real
//! id from another browser; the browser the journey belongs to continues it (the control). And
//! no stored secret makes a CSRF token, while the key derived from the sealed root does.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use concierge::storage::Store;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::{Browser, Page, TestApp, spawn_provider};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::config::DatabaseUrl;
use concierge::domain::kek::KeyEncryptionKey;
use concierge::secrets::{Purpose, RootSecret};
use concierge::startup::DEMO_EMAIL;
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

/// Every row of the `login_transactions` table: the stored form of each journey (the SHA-256 of
/// its id, and its state), as a reader of a backup sees them.
fn stored_journeys(app: &TestApp) -> Vec<(Vec<u8>, String)> {
    use concierge::storage::schema::login_transactions as lt;
    let q = lt::table.select((lt::id_hash, lt::state));
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

/// A browser at the session-limit page of a journey that proved the demo user's password.
async fn at_the_limit(app: &TestApp) -> (Browser, Page) {
    let mut br = Browser::new(app);
    let page = br.login(DEMO_EMAIL, "demo").await;
    assert!(page.body.contains("id=\"session-limit\""), "{}", page.body);
    (br, page)
}

/// Posts "end this session and continue" for journey `journey` from `br` (with its own valid
/// CSRF token); true if that opened a session.
async fn continue_as(br: &mut Browser, journey: &str, sid: &str) -> bool {
    let login = br.get("/login").await;
    let token = login.field("csrf_token");
    let res = br
        .post_form(
            "/login/session-limit",
            &[("csrf_token", &token), ("journey", journey), ("sid", sid)],
        )
        .await;
    br.session_cookie().is_some() && res.status == 303
}

async fn database_secrets_sign_nothing(b: Backend) {
    let env = [
        ("CONCIERGE__SESSION__MAX_PER_USER", "1"),
        ("CONCIERGE__SESSION__ON_LIMIT", "refuse"),
    ];
    let Some(app) = spawn_provider(b, &env).await else {
        return;
    };
    // The demo user has one session; a second sign-in waits at the limit page, its password
    // proven, its state server-side.
    let mut first = Browser::new(&app);
    assert_eq!(first.login(DEMO_EMAIL, "demo").await.status, 303);
    let (mut victim, page) = at_the_limit(&app).await;
    let sid = page.body.split("data-sid=\"").nth(1).unwrap();
    let sid = sid[..sid.find('"').unwrap()].to_owned();
    let journey = page.field("journey");

    // Everything a reader of the database has: the stored secrets (only the sealed root) and
    // the journeys (the hash of each id, and the state).
    let rows = stored_secrets(&app);
    assert!(!rows.is_empty(), "the broker stores its root secret");
    let journeys = stored_journeys(&app);
    assert!(!journeys.is_empty(), "the journey is stored");
    let mut forged: Vec<String> = vec![];
    for (hash, state) in &journeys {
        assert!(
            !state.contains(&journey),
            "the journey id is not stored in the clear"
        );
        forged.push(URL_SAFE_NO_PAD.encode(hash));
        forged.push(hash.iter().map(|b| format!("{b:02x}")).collect());
    }
    for (_, value) in &rows {
        forged.push(URL_SAFE_NO_PAD.encode(mac(value, &[journey.as_bytes()])));
        forged.push(URL_SAFE_NO_PAD.encode(&value[..value.len().min(32)]));
    }
    let mut attacker = Browser::new(&app);
    for f in &forged {
        assert!(
            !continue_as(&mut attacker, f, &sid).await,
            "a journey id made from the database ({f}) opened a session"
        );
    }
    // The real id alone (leaked from a URL or a log) is not enough: it is bound to the
    // browser that started it.
    assert!(!continue_as(&mut attacker, &journey, &sid).await);
    // Nothing was ended on the way.
    assert_eq!(first.get("/account").await.status, 200);

    // The control: the browser the journey belongs to continues it.
    assert!(continue_as(&mut victim, &journey, &sid).await);
    // Finished: the same step again (a double submit from the same browser) opens nothing
    // more: it gets the same answer, the session already opened (issue #17: finishing is
    // idempotent per browser binding); still one session of the user.
    let opened = victim.session_cookie();
    let mut again = Browser::new(&app);
    again.cookies = victim.cookies.clone();
    again.cookies.remove("concierge_session");
    assert!(continue_as(&mut again, &journey, &sid).await);
    assert_eq!(
        again.session_cookie(),
        opened,
        "the same session, not a new one"
    );
    let demo = app
        .store
        .user_by_email(&concierge::domain::Email::parse(DEMO_EMAIL).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(app.store.sessions_of_user(&demo.id).unwrap().len(), 1);
    // Another browser with the id only: nothing.
    assert!(!continue_as(&mut Browser::new(&app), &journey, &sid).await);

    // The CSRF key is derived from the sealed root, which needs the key-encryption key.
    let kek = KeyEncryptionKey::new(STANDARD.decode(KEK_B64).unwrap().try_into().unwrap());
    let root = RootSecret::load_or_create(
        app.store.as_ref(),
        &kek.into(),
        &concierge::clock::OsEntropy,
        crate::helpers::START,
    )
    .unwrap();
    let csrf = root.derive(Purpose::Csrf).unwrap();
    let cookie = URL_SAFE_NO_PAD.encode([42u8; 32]);
    let token_with =
        |key: &[u8]| URL_SAFE_NO_PAD.encode(mac(key, &[b"concierge-csrf-v1:", cookie.as_bytes()]));
    for (name, value) in &rows {
        let mut br = Browser::new(&app);
        br.cookies.insert("concierge_csrf".into(), cookie.clone());
        let res = br
            .post_form("/logout", &[("csrf_token", &token_with(value))])
            .await;
        assert_eq!(
            res.status, 403,
            "a CSRF token made with the stored {name:?}"
        );
    }
    let mut br = Browser::new(&app);
    br.cookies.insert("concierge_csrf".into(), cookie.clone());
    let res = br
        .post_form("/logout", &[("csrf_token", &token_with(csrf.bytes()))])
        .await;
    assert_eq!(
        res.status, 303,
        "the control: the derived key makes a valid token"
    );
}

per_backend_async!(database_secrets_sign_nothing);
