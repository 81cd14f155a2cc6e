//! MFA through the hosted pages with the real plugins (built by `plugins/build.sh`): TOTP codes
//! from Debian `oathtool`, email codes read back from a real SMTP server (aiosmtpd), SMS through
//! a gateway receiver started here; lockout, replay, recovery codes, step-up via `acr_values`,
//! the hostile plugin corpus, and hot reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Browser, Page, START, TestApp, spawn_provider_with};
use crate::oidc::{Http, authorize_path_with, code_for_with, verify_with_jwks};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::Store;

/// Where the built plugins are (`plugins/build.sh` writes them).
fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("CONCIERGE_TEST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist"));
    assert!(
        dir.join("totp.wasm").is_file(),
        "no built plugins in {}: run plugins/build.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn plugin(file: &str) -> PathBuf {
    plugin_dir().join(file)
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// One `[[mfa.plugins]]` table pinned to the file as it is now.
fn manifest(id: &str, path: &Path, grants: &[&str], extra: &str) -> String {
    let grants: Vec<String> = grants.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        "[[mfa.plugins]]\nid = \"{id}\"\npath = {:?}\nsha256 = \"{}\"\ngrants = [{}]\n{extra}\n",
        path.display().to_string(),
        sha256_hex(path),
        grants.join(", ")
    )
}

/// The text of the element with this id (up to the next tag).
fn text_of(page: &Page, id: &str) -> String {
    let needle = format!("id=\"{id}\">");
    let start = page
        .body
        .find(&needle)
        .unwrap_or_else(|| panic!("no #{id} in {}", page.body))
        + needle.len();
    let end = page.body[start..].find('<').unwrap() + start;
    page.body[start..end].trim().to_owned()
}

/// A TOTP code from an independent generator (Debian oathtool) at broker time `at`.
pub(crate) fn oathtool(secret: &str, at: i64) -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--totp", "-b", "--now", &format!("@{at}"), secret])
        .output()
        .expect("oathtool is installed (Debian package oathtool; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Submits the page's form for `path` with whatever hidden fields it carries (today a CSRF
/// token and a step ticket), plus `extra`.
async fn post_ticket(br: &mut Browser, page: &Page, path: &str, extra: &[(&str, &str)]) -> Page {
    br.submit(page, path, extra).await
}

async fn choose(br: &mut Browser, page: &Page, factor: &str, action: &str) -> Page {
    post_ticket(
        br,
        page,
        "/login/mfa/choose",
        &[("factor", factor), ("action", action)],
    )
    .await
}

async fn answer(br: &mut Browser, page: &Page, fields: &[(&str, &str)]) -> Page {
    post_ticket(br, page, "/login/mfa/answer", fields).await
}

pub(crate) fn mfa_config(required: &str, plugins: &str, more: &str) -> String {
    format!(
        "[mfa]\nrequired = \"{required}\"\nmax_attempts = 3\nlockout = \"5m\"\n{more}\n{plugins}"
    )
}

/// The `[[mfa.plugins]]` table of the TOTP plugin.
pub(crate) fn totp_manifest() -> String {
    manifest(
        "totp",
        &plugin("totp.wasm"),
        &["clock", "random", "state", "log"],
        "",
    )
}

async fn totp_app(b: Backend) -> Option<TestApp> {
    spawn_provider_with(b, &[], &mfa_config("required", &totp_manifest(), "")).await
}

/// A TOTP code that is none of the codes of the steps around broker time `at`.
pub(crate) fn wrong_totp(secret: &str, at: i64) -> String {
    let near: Vec<String> = (-2..=2).map(|k| oathtool(secret, at + 30 * k)).collect();
    (0..1_000_000u32)
        .step_by(111_111)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

/// Signs the demo user in through the pages of a journey started at `start` (`/login`, or an
/// app's `/authorize`), whose MFA policy makes them set up a factor, and enrols TOTP there at
/// broker time `at`. Every form is submitted with whatever hidden fields it carries. Returns
/// the TOTP secret and where the journey ended (the broker's last answer, redirects on the
/// broker followed).
pub(crate) async fn enrol_totp(app: &TestApp, start: &str, at: i64) -> (String, Page) {
    let mut br = Browser::new(app);
    let first = br.get(start).await;
    let (_, login) = br.follow(first).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let page = br
        .submit(
            &login,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    assert_eq!(page.status, 200, "a factor is set up first: {}", page.body);
    assert!(br.session_cookie().is_none(), "no session before it");
    let page = br
        .submit(
            &page,
            "/login/mfa/choose",
            &[("factor", "totp"), ("action", "enroll")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let secret = text_of(&page, "mfa-secret");
    let page = br
        .submit(
            &page,
            "/login/mfa/answer",
            &[("code", &oathtool(&secret, at))],
        )
        .await;
    // The recovery codes, shown once, then on.
    let page = if page.has_form("/login/mfa/continue") {
        assert!(page.body.contains("id=\"recovery-codes\""), "{}", page.body);
        br.submit(&page, "/login/mfa/continue", &[]).await
    } else {
        page
    };
    let (_, end) = br.follow(page).await;
    assert!(br.session_cookie().is_some(), "enrolled and signed in");
    (secret, end)
}

/// The TOTP challenge of an MFA page: the page itself when it asks for the code, else the
/// challenge chosen from it.
pub(crate) async fn totp_challenge(br: &mut Browser, page: Page) -> Page {
    let page = if page.has_form("/login/mfa/answer") {
        page
    } else {
        br.submit(
            &page,
            "/login/mfa/choose",
            &[("factor", "totp"), ("action", "challenge")],
        )
        .await
    };
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.has_form("/login/mfa/answer") && page.body.contains("data-factor=\"totp\""),
        "the TOTP challenge: {}",
        page.body
    );
    page
}

/// Clients with their own MFA policy: `strict` requires a factor, `opt` asks users who have
/// one, `loose` never asks.
const POLICY_CLIENTS: &str = r#"
[[clients]]
id = "strict"
secret_sha256 = "SECRET_HASH"
redirect_uris = ["https://strict.example/cb"]
mfa = "required"

[[clients]]
id = "opt"
secret_sha256 = "SECRET_HASH"
redirect_uris = ["https://opt.example/cb"]
mfa = "optional"

[[clients]]
id = "loose"
secret_sha256 = "SECRET_HASH"
redirect_uris = ["https://loose.example/cb"]
mfa = "off"
"#;

/// Issue #13, hole 2: the MFA policy is the one of the client that receives the code. A user
/// with an enrolled factor who signed in with the password alone where no factor is asked
/// (`/login` opened directly with `[mfa]` off, or for a client with MFA off) opens an
/// `optional` client's `/authorize`: the
/// factor is asked before any code (not a code with amr ["pwd"]), and once it is answered the
/// ID token (signature verified) says `mfa`.
async fn an_optional_client_asks_the_enrolled_factor_of_a_password_only_session(b: Backend) {
    let config = format!(
        "{POLICY_CLIENTS}\n{}",
        mfa_config("off", &totp_manifest(), "")
    );
    let Some(app) = spawn_provider_with(b, &[], &config).await else {
        return;
    };
    // The user enrols TOTP through the pages, signing in for the client that requires it.
    let strict = "https://strict.example/cb";
    let (secret, end) = enrol_totp(&app, &authorize_path_with("strict", strict, &[]), START).await;
    assert_eq!(end.status, 302, "{}", end.body);
    assert!(
        end.location
            .as_deref()
            .unwrap_or_default()
            .starts_with(strict)
    );

    // The password alone, at /login where nothing asks for a factor: a session with amr pwd.
    app.clock.advance(30);
    let mut br = Browser::new(&app);
    let signed_in = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert!(br.session_cookie().is_some());

    // That session asks the optional client for a code: the enrolled factor first.
    optional_client_asks_the_factor(&app, &mut br, &secret, START + 30).await;

    // The same after a sign-in for a client with MFA off (SSO from there to the optional one).
    app.clock.advance(30);
    let mut br = Browser::new(&app);
    let loose = "https://loose.example/cb";
    let res = br.get(&authorize_path_with("loose", loose, &[])).await;
    let (_, login) = br.follow(res).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let res = br
        .submit(
            &login,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (trail, done) = br.follow(res).await;
    assert_eq!(done.status, 302, "{trail:?}: {}", done.body);
    assert!(
        done.location
            .as_deref()
            .unwrap_or_default()
            .starts_with(loose),
        "the client with MFA off gets its code on the password: {:?}",
        done.location
    );
    optional_client_asks_the_factor(&app, &mut br, &secret, START + 60).await;
}

/// `br`'s session, proven by the password alone, asks the `opt` client for a code: the TOTP
/// factor is asked first (no code), and answered (code at broker time `at`) the code's ID token,
/// signature verified, has amr pwd, otp and mfa.
async fn optional_client_asks_the_factor(app: &TestApp, br: &mut Browser, secret: &str, at: i64) {
    let opt = "https://opt.example/cb";
    let res = br.get(&authorize_path_with("opt", opt, &[])).await;
    let (trail, page) = br.follow(res).await;
    let went = page.location.clone().unwrap_or_default();
    assert!(
        !went.starts_with(opt),
        "a code for the optional client on the password alone: {went} (after {trail:?})"
    );
    assert_eq!(
        page.status, 200,
        "the factor is asked ({trail:?}): {}",
        page.body
    );
    let page = totp_challenge(br, page).await;
    let answered = br
        .submit(
            &page,
            "/login/mfa/answer",
            &[("code", &oathtool(secret, at))],
        )
        .await;
    let (trail, done) = br.follow(answered).await;
    assert_eq!(done.status, 302, "{trail:?}: {}", done.body);
    let to = done.location.unwrap();
    assert!(to.starts_with(opt), "{to}");
    let code = url::Url::parse(&to)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {to}"));
    let http = Http::new(app);
    let (status, t) = http.exchange("opt", &code, opt).await;
    assert_eq!(status, 200, "{t}");
    let id = verify_with_jwks(&http, t["id_token"].as_str().unwrap()).await;
    assert_eq!(id["aud"], "opt");
    assert_eq!(id["nonce"], "n-456");
    let amr: Vec<&str> = id["amr"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        amr.contains(&"pwd") && amr.contains(&"otp") && amr.contains(&"mfa"),
        "{amr:?}"
    );
}

per_backend_async!(
    totp_enrolment_sign_in_lockout_replay_and_recovery,
    email_codes_through_a_real_smtp_server,
    sms_enrolment_and_codes_through_the_gateway,
    hostile_plugins_fail_closed,
    hot_reload_serves_the_new_version,
    step_up_via_acr_values_puts_the_factor_in_amr,
    a_looping_describe_is_bounded_at_boot_and_in_the_cli,
    plugin_log_text_cannot_forge_log_lines,
    an_optional_client_asks_the_enrolled_factor_of_a_password_only_session,
);
