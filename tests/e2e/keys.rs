//! Signing keys: rotation publishes a key before it signs and keeps the old one published while
//! its tokens live; a client registered at run time gets a key for its algorithm on first use.
//! Key-encryption keys: `keys rewrap` moves every sealed value to a new key, after which the old
//! one can go; without it, removing the old key is a clear startup error. The root secret's
//! rotation keeps forms and sign-ins begun before it working for `provider.root_overlap`.

use concierge::clock::OsEntropy;
use concierge::domain::jose::Alg;
use concierge::domain::kek::KeyEncryptionKey;
use concierge::jwt;
use concierge::provider::keys::KeyRing;
use serde_json::{Value, json};

use crate::helpers::{SECRET, START, spawn_provider};
use crate::per_backend_async;
use crate::support::{Backend, fresh_db, open_store};

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn signer_kid(ring: &KeyRing, now: i64) -> String {
    ring.with_signer(Alg::ES256, now, |kid, _| kid.to_owned())
        .unwrap()
}

async fn rotation_publishes_first_and_retires_late(b: Backend) {
    let Some(db) = fresh_db(b) else { return };
    let store = open_store(&db);
    let ring = KeyRing::new(KeyEncryptionKey::new([9; 32]));
    ring.ensure(store.as_ref(), &OsEntropy, &[Alg::ES256], START)
        .unwrap();
    let old = signer_kid(&ring, START);
    let token = ring
        .with_signer(Alg::ES256, START, |kid, s| {
            jwt::sign(s, Alg::ES256, kid, "JWT", &json!({"a": 1}))
        })
        .unwrap()
        .unwrap();

    let new = ring
        .rotate(store.as_ref(), &OsEntropy, Alg::ES256, START + 10, 600)
        .unwrap();
    let max_ttl = 960;
    // Published at once, but the old key keeps signing until the publish delay is over.
    assert!(kids(&ring.jwks(START + 10, max_ttl)).contains(&new));
    assert_eq!(signer_kid(&ring, START + 10), old);
    assert_eq!(signer_kid(&ring, START + 610), new);
    // The old key stays published while its tokens may live, then goes.
    assert!(kids(&ring.jwks(START + 610, max_ttl)).contains(&old));
    jwt::verify(&token, |kid| ring.verifier(kid)).unwrap();
    assert!(!kids(&ring.jwks(START + 610 + max_ttl, max_ttl)).contains(&old));

    // Another instance (a fresh ring on the same database) serves the same set.
    let other = KeyRing::new(KeyEncryptionKey::new([9; 32]));
    other.reload(store.as_ref()).unwrap();
    assert_eq!(
        kids(&other.jwks(START + 10, max_ttl)),
        kids(&ring.jwks(START + 10, max_ttl))
    );
    // A wrong key-encryption key fails before writing anything.
    let wrong = KeyRing::new(KeyEncryptionKey::new([1; 32]));
    let before = concierge::storage::Store::signing_keys(store.as_ref())
        .unwrap()
        .len();
    assert!(
        wrong
            .rotate(store.as_ref(), &OsEntropy, Alg::ES256, START + 20, 600)
            .is_err()
    );
    assert_eq!(
        concierge::storage::Store::signing_keys(store.as_ref())
            .unwrap()
            .len(),
        before
    );
}

async fn a_client_registered_at_run_time_gets_a_key_for_its_algorithm(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let cfg: concierge::domain::client::ClientConfig = serde_json::from_value(json!({
        "id": "late", "channel": "api", "secret_sha256": concierge::domain::client::hash_secret(SECRET),
        "grant_types": ["client_credentials"], "scopes": ["x"], "signing_alg": "EdDSA"
    }))
    .unwrap();
    concierge::provider::clients::register(app.store.as_ref(), &cfg, START).unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/token", app.base))
        .basic_auth("late", Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    let header = v["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let jwks: Value = serde_json::from_str(
        &reqwest::get(format!("{}/jwks", app.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(kids(&jwks).contains(&header["kid"].as_str().unwrap().to_owned()));
}

/// The config file's key (helpers::spawn_provider_with).
const KEK_A: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

fn b64(key: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Another instance of `app`'s broker (same config file and database) with `env` on top and its
/// own clock at `now`: the build's error, or its base URL.
fn instance(
    app: &crate::helpers::TestApp,
    env: &[(&str, &str)],
    now: i64,
) -> Result<String, String> {
    let mut vars = vec![(
        "CONCIERGE__SERVER__BIND".to_owned(),
        "127.0.0.1:0".to_owned(),
    )];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = concierge::config::Settings::load(app.config.as_deref(), vars).unwrap();
    let deps = concierge::startup::Deps {
        clock: std::sync::Arc::new(concierge::clock::ManualClock::new(now)),
        entropy: std::sync::Arc::new(OsEntropy),
    };
    let store: std::sync::Arc<dyn concierge::storage::Store> = app.store.clone();
    match concierge::startup::Application::build_with_store(settings, deps, store) {
        Ok(built) => {
            let base = format!("http://127.0.0.1:{}", built.port());
            tokio::spawn(built.run_until_stopped());
            Ok(base)
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

async fn jwks_kids(base: &str) -> Vec<String> {
    let jwks: Value = serde_json::from_str(
        &reqwest::get(format!("{base}/jwks"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let mut k = kids(&jwks);
    k.sort();
    k
}

async fn rewrap_moves_every_sealed_value_to_a_new_key(b: Backend) {
    use concierge::domain::kek::{KeyEncryptionKey, KeyEncryptionKeys};
    use concierge::storage::MfaStore;
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let kek_b = [0x42u8; 32];
    let (a64, b64_) = (b64(&KEK_A), b64(&kek_b));
    let before = jwks_kids(&app.base).await;
    assert!(!before.is_empty());
    // A second factor's state (as a plugin stores it), sealed under A.
    let demo = concierge::storage::Store::user_by_email(
        app.store.as_ref(),
        &concierge::domain::Email::parse("demo@example.com").unwrap(),
    )
    .unwrap()
    .unwrap();
    let a = KeyEncryptionKeys::from(KeyEncryptionKey::new(KEK_A));
    let aad = concierge::mfa::state_aad("totp", demo.id.as_str());
    let state = a.seal(&aad, b"seed", &OsEntropy).unwrap();
    assert!(
        app.store
            .put_mfa_state("totp", &demo.id, None, &state, START)
            .unwrap()
    );

    // B alone before any rewrap: refused at startup, naming the key and the setting; no panic.
    let b_only = [("CONCIERGE__PROVIDER__KEY_ENCRYPTION_KEY", b64_.as_str())];
    let err = instance(&app, &b_only, START).unwrap_err();
    assert!(err.contains("previous_key_encryption_keys"), "{err}");
    assert!(
        err.contains(&KeyEncryptionKey::new(KEK_A).kid().to_string()),
        "{err}"
    );

    // B current, A previous: every instance restarted so; it serves the same keys.
    let previous = format!("[\"{a64}\"]");
    let b_then_a = [
        ("CONCIERGE__PROVIDER__KEY_ENCRYPTION_KEY", b64_.as_str()),
        (
            "CONCIERGE__PROVIDER__PREVIOUS_KEY_ENCRYPTION_KEYS",
            previous.as_str(),
        ),
    ];
    let both = instance(&app, &b_then_a, START).unwrap();
    assert_eq!(jwks_kids(&both).await, before);

    // `concierge keys rewrap`, twice: the second run has nothing to do.
    let rewrap = || {
        let mut c = app.cli();
        for (k, v) in b_then_a {
            c.env(k, v);
        }
        c.args(["keys", "rewrap"]).output().unwrap()
    };
    let out = rewrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The root secret, the SAML IdP's first key pair, its key set, its pairwise NameID key and
    // its encryption key pair.
    assert!(stdout.contains("secrets: 5 rewrapped"), "{stdout}");
    assert!(
        stdout.contains(&format!("signing keys: {} rewrapped", before.len())),
        "{stdout}"
    );
    assert!(stdout.contains("mfa states: 1 rewrapped"), "{stdout}");
    let out = rewrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("secrets: 0 rewrapped, 5 already current"),
        "{stdout}"
    );

    // A removed: the broker starts, serves the same JWKS, signs in; the state opens under B.
    let b_alone = instance(&app, &b_only, START).unwrap();
    assert_eq!(jwks_kids(&b_alone).await, before);
    let mut br = crate::helpers::Browser::at(&b_alone);
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
    assert!(br.session_cookie().is_some());
    let row = app.store.mfa_state("totp", &demo.id).unwrap().unwrap();
    let b_ring = KeyEncryptionKeys::from(KeyEncryptionKey::new(kek_b));
    assert!(b_ring.is_current(&row.data));
    assert_eq!(b_ring.open(&aad, &row.data).unwrap(), b"seed");
    assert!(a.open(&aad, &row.data).is_err(), "A no longer opens it");
}

async fn forms_and_sign_ins_begun_before_rotate_root_finish_within_the_overlap(b: Backend) {
    use concierge::domain::kek::{KeyEncryptionKey, KeyEncryptionKeys};
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let authorize = "/authorize?response_type=code&client_id=webapp&scope=openid\
                     &redirect_uri=https%3A%2F%2Fwebapp.example%2Fcb&state=st\
                     &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGjSstw-cM\
                     &code_challenge_method=S256";
    // Two browsers begin signing in before the rotation.
    let mut begun = Vec::new();
    for _ in 0..3 {
        let mut br = crate::helpers::Browser::new(&app);
        let res = br.get(authorize).await;
        let (_, page) = br.follow(res).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.has_form("/login"), "{}", page.body);
        begun.push((br, page));
    }
    let rotated_at = START + 60;
    concierge::secrets::RootSecret::rotate(
        app.store.as_ref(),
        &KeyEncryptionKeys::from(KeyEncryptionKey::new(KEK_A)),
        &OsEntropy,
        rotated_at,
    )
    .unwrap();

    // An instance restarted after the rotation, within the overlap (default 1 h): the sign-in
    // begun before completes, with the form's token of the previous root.
    let within = instance(&app, &[], rotated_at + 60).unwrap();
    let (mut br, page) = begun.remove(0);
    br.base = within.clone();
    let res = br
        .submit(
            &page,
            "/login",
            &[("email", "demo@example.com"), ("password", "demo")],
        )
        .await;
    let (_, end) = br.follow(res).await;
    let to_app = end.location.clone().unwrap_or_default();
    assert!(
        to_app.starts_with("https://webapp.example/cb") && to_app.contains("code="),
        "{} {to_app} {}",
        end.status,
        end.body
    );
    // A CSRF token of the previous root still works there.
    let (mut late, page) = begun.remove(0);
    let token = page.field("csrf_token");
    late.base = within.clone();
    assert_eq!(
        late.post_form("/logout", &[("csrf_token", &token)])
            .await
            .status,
        303
    );

    // After the overlap (an instance whose clock is past it): the previous root is dropped.
    let after = instance(&app, &[], rotated_at + 3600).unwrap();
    late.base = after;
    assert_eq!(
        late.post_form("/logout", &[("csrf_token", &token)])
            .await
            .status,
        403
    );
    // The control: without an overlap the sign-in begun before the rotation does not complete.
    let none = instance(
        &app,
        &[("CONCIERGE__PROVIDER__ROOT_OVERLAP", "0s")],
        rotated_at + 60,
    )
    .unwrap();
    let (mut br, page) = begun.remove(0);
    br.base = none;
    let res = br
        .submit(
            &page,
            "/login",
            &[("email", "demo@example.com"), ("password", "demo")],
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    // New forms work on either instance.
    let mut fresh = crate::helpers::Browser::at(&within);
    assert_eq!(fresh.login("demo@example.com", "demo").await.status, 303);
}

/// A user's TOTP factor, enrolled under KEK A through the pages, still signs in through the real
/// plugin on an instance that has only KEK B after `keys rewrap`.
async fn a_totp_factor_signs_in_after_the_rewrap_to_a_new_key(b: Backend) {
    use crate::mfa::{answer, enrol_totp, mfa_config, oathtool, totp_challenge, totp_manifest};
    let config = mfa_config("required", &totp_manifest(), "");
    let Some(app) = crate::helpers::spawn_provider_with(b, &[], &config).await else {
        return;
    };
    let (secret, _) = enrol_totp(&app, "/login", START).await;
    let (a64, b64_) = (b64(&KEK_A), b64(&[0x42u8; 32]));
    let previous = format!("[\"{a64}\"]");
    let b_then_a = [
        ("CONCIERGE__PROVIDER__KEY_ENCRYPTION_KEY", b64_.as_str()),
        (
            "CONCIERGE__PROVIDER__PREVIOUS_KEY_ENCRYPTION_KEYS",
            previous.as_str(),
        ),
    ];
    let mut c = app.cli();
    for (k, v) in b_then_a {
        c.env(k, v);
    }
    let out = c.args(["keys", "rewrap"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("mfa states: 1 rewrapped"), "{stdout}");

    let at = START + 90;
    let b_alone = instance(
        &app,
        &[("CONCIERGE__PROVIDER__KEY_ENCRYPTION_KEY", b64_.as_str())],
        at,
    )
    .unwrap();
    let mut br = crate::helpers::Browser::at(&b_alone);
    let page = br.login("demo@example.com", "demo").await;
    assert!(br.session_cookie().is_none(), "the factor first");
    let page = totp_challenge(&mut br, page).await;
    let done = answer(&mut br, &page, &[("code", &oathtool(&secret, at))]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(br.session_cookie().is_some());
}

per_backend_async!(
    rotation_publishes_first_and_retires_late,
    a_client_registered_at_run_time_gets_a_key_for_its_algorithm,
    rewrap_moves_every_sealed_value_to_a_new_key,
    forms_and_sign_ins_begun_before_rotate_root_finish_within_the_overlap,
    a_totp_factor_signs_in_after_the_rewrap_to_a_new_key
);
