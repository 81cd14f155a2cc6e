//! The `privacyidea` factor (plugins/privacyidea, issue #18) against a real privacyIDEA 3.14
//! (tests/peers/privacyidea, one server per test): the broker pins the plugin, grants it `http`
//! to the server's origin only and holds the service credential (a file), bound to the
//! `Authorization` header. A right code from an independent generator (oathtool) signs in with
//! amr otp and mfa; the same code on a new sign-in is refused as a replay, a wrong code as wrong;
//! without the credential, with a wrong one, or with a secret the manifest does not bind, the
//! factor fails closed (no session, never a 500). Codes are computed for explicit 30 s steps of
//! the real clock (privacyIDEA's, not the broker's manual one); each test stays far below the
//! token's fail counter (10).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::helpers::{Browser, Page, TestApp, spawn_provider_with};
use crate::mfa::{answer, choose, manifest, oathtool, plugin};
use crate::passkey::amr_of;
use crate::per_backend_async;
use crate::plugin_http::http_audit;
use crate::support::Backend;
use crate::upstream_oidc::{Forgery, redeemed, start_fake_op, through_upstream_button};
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::Store;

/// The privacyIDEA peer: started by `tests/peers/privacyidea/start.sh`, stopped with SIGTERM.
struct PrivacyIdea {
    child: Option<Child>,
    info: Value,
    _dir: tempfile::TempDir,
}

impl PrivacyIdea {
    /// Starts a server whose user `demo` (demo@example.com, the broker's demo user) has a TOTP
    /// token, and whose `/validate/check` requires the service credential. Blocks until ready
    /// (5-15 s), so it runs off the test's runtime threads.
    async fn start() -> Self {
        tokio::task::spawn_blocking(|| {
            let dir = tempfile::tempdir().unwrap();
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/privacyidea/start.sh");
            let mut child = Command::new(script)
                .arg("--dir")
                .arg(dir.path().join("pi"))
                .args(["--user", "demo"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("tests/peers/privacyidea/start.sh runs");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let info: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
                let setup = std::fs::read_to_string(dir.path().join("pi/setup.log"));
                panic!("the privacyIDEA peer said {line:?}; setup.log: {setup:?}")
            });
            assert_eq!(info["user"], "demo");
            assert_eq!(info["email"], DEMO_EMAIL);
            Self {
                child: Some(child),
                info,
                _dir: dir,
            }
        })
        .await
        .unwrap()
    }

    fn get(&self, key: &str) -> &str {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {}", self.info))
    }

    fn origin(&self) -> &str {
        self.get("base_url")
    }

    /// SIGTERM, then waits for the server to exit; `true` when it exited 0 within 15 s.
    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Stops the server at the end of a test: it must go on SIGTERM, cleanly.
    fn stop(mut self) {
        assert!(
            self.terminate(),
            "the privacyIDEA peer did not exit 0 on SIGTERM"
        );
    }
}

impl Drop for PrivacyIdea {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// How the broker holds privacyIDEA's service credential for the plugin.
enum Credential {
    /// This file, bound to `Authorization` for the server's origin.
    File(PathBuf),
    /// The plugin names it (`secret` unset: `pi-credential`) but the manifest binds nothing.
    Unbound,
    /// The plugin sends none (`secret = ""`) and the manifest has none.
    Without,
}

/// The rates and `[mfa]` of every broker here: MFA required; one sign-in per case, so the
/// account's rates would stop the test before the cases do.
const MFA: &str = "[rate_limit]\nlogin_per_account = \"100/1m\"\nmfa_per_account = \"100/1m\"\n\
                   [mfa]\nrequired = \"required\"\nmax_attempts = 50\nlockout = \"5m\"\n";

/// A broker whose only factor is `privacyidea` (MFA required), pinned, granted `http` to the
/// server's origin, naming the user by the local part of the email (`demo`).
async fn broker(b: Backend, pi: &PrivacyIdea, credential: Credential) -> Option<TestApp> {
    let config = format!("{MFA}{}", plugin_toml(pi, credential));
    spawn_provider_with(b, &[], &config).await
}

/// The `[[mfa.plugins]]` table of the factor: pinned, granted `http` to the server's origin,
/// with `credential`.
fn plugin_toml(pi: &PrivacyIdea, credential: Credential) -> String {
    plugin_toml_as(pi, credential, "local_part", "")
}

/// The same, naming the user as `user_name` says, with more manifest keys (`more`).
fn plugin_toml_as(pi: &PrivacyIdea, credential: Credential, user_name: &str, more: &str) -> String {
    let origin = pi.origin();
    let (secret, secrets) = match credential {
        Credential::File(file) => (
            String::new(),
            format!(
                "[[mfa.plugins.http.secrets]]\nname = \"pi-credential\"\nfile = {:?}\n\
                 origins = [{origin:?}]\nheader = \"Authorization\"\n",
                file.display().to_string()
            ),
        ),
        Credential::Unbound => (String::new(), String::new()),
        Credential::Without => ("secret = \"\"\n".to_owned(), String::new()),
    };
    let extra = format!(
        "timeout = \"5s\"\n{more}\
         [mfa.plugins.config]\nvalidate_url = {:?}\nuser_name = {user_name:?}\n{secret}\
         [mfa.plugins.http]\norigins = [{origin:?}]\n{secrets}",
        pi.get("validate_url"),
    );
    manifest(
        "privacyidea",
        &plugin("privacyidea.wasm"),
        &["http"],
        &extra,
    )
}

/// PostgreSQL skipped on purpose (as `fresh_db` decides): no server to start either.
fn skipped(b: Backend) -> bool {
    b == Backend::Postgres
        && std::env::var_os("CONCIERGE_TEST_PG_URL").is_none()
        && std::env::var("CONCIERGE_TEST_SKIP_POSTGRES").as_deref() == Ok("1")
}

/// Unix time now (privacyIDEA checks codes against the real clock).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// A code that is none of the codes of the steps privacyIDEA could accept around `at` (its
/// window is 180 s either way; 8 steps either way here).
fn wrong_code(seed: &str, at: i64) -> String {
    let near: Vec<String> = (-8..=8).map(|k| oathtool(seed, at + 30 * k)).collect();
    (0..1_000_000u32)
        .step_by(7_919)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

/// Signs in with the password and answers the privacyIDEA challenge with `code`.
async fn sign_in(app: &TestApp, code: &str) -> (Browser, Page) {
    let mut br = Browser::new(app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let form = if page.has_form("/login/mfa/answer") {
        page
    } else {
        choose(&mut br, &page, "privacyidea", "challenge").await
    };
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(
        form.body.contains("data-factor=\"privacyidea\""),
        "the privacyIDEA challenge: {}",
        form.body
    );
    let done = answer(&mut br, &form, &[("code", code)]).await;
    (br, done)
}

/// Refused with the plugin's message (401), no session.
fn refused(what: &str, br: &Browser, page: &Page, message: &str) {
    assert_eq!(page.status, 401, "{what}: {}", page.body);
    assert!(page.body.contains(message), "{what}: {}", page.body);
    assert!(br.session_cookie().is_none(), "{what} never passes");
}

/// The factor failed closed: the "not working" page (503, never a 500), no session.
fn failed_closed(what: &str, br: &Browser, page: &Page) {
    assert_eq!(page.status, 503, "{what}: {}", page.body);
    assert!(
        page.body.contains("id=\"mfa-error\""),
        "{what}: {}",
        page.body
    );
    assert!(br.session_cookie().is_none(), "{what} never passes");
}

async fn a_right_code_signs_in_once_and_replayed_or_wrong_codes_are_refused(b: Backend) {
    if skipped(b) {
        return;
    }
    let pi = PrivacyIdea::start().await;
    let credential = PathBuf::from(pi.get("credential_file"));
    let Some(app) = broker(b, &pi, Credential::File(credential)).await else {
        return;
    };
    let seed = pi.get("seed_base32").to_owned();
    let at = now();
    let code = oathtool(&seed, at);

    // The code of this step, checked by privacyIDEA: signed in, with the factor's amr.
    let (mut br, done) = sign_in(&app, &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(br.session_cookie().is_some(), "signed in");
    let (_, account) = br.follow(done).await;
    assert_eq!(account.status, 200, "{}", account.body);
    let amr = amr_of(&account);
    assert!(
        amr.contains("pwd") && amr.contains("otp") && amr.contains("mfa"),
        "{amr}"
    );

    // The same code on a new sign-in: privacyIDEA says it was used, and so does the page.
    let (br, page) = sign_in(&app, &code).await;
    refused(
        "the same code again",
        &br,
        &page,
        "That code was already used.",
    );
    // A code of no step near now.
    let (br, page) = sign_in(&app, &wrong_code(&seed, at)).await;
    refused("a wrong code", &br, &page, "That code is not correct.");
    // A malformed one is refused by the plugin without asking privacyIDEA.
    let (br, page) = sign_in(&app, "12345").await;
    refused("a malformed code", &br, &page, "Enter 6 or 8 digits.");

    // The next step's code is unused: privacyIDEA takes it (its window is 180 s), the token was
    // neither locked by the refusals nor left replayable.
    let (br, done) = sign_in(&app, &oathtool(&seed, at + 30)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(br.session_cookie().is_some());

    // Four requests reached privacyIDEA (not the malformed code's), with the credential: 200
    // each. The audit never holds the credential.
    let reasons = http_audit(&app, 4).await;
    let ok = format!("privacyidea POST {} 200 ", pi.origin());
    assert!(
        reasons.len() == 4 && reasons.iter().all(|r| r.starts_with(&ok)),
        "{reasons:?}"
    );
    let secret = std::fs::read_to_string(pi.get("credential_file")).unwrap();
    assert!(!reasons.iter().any(|r| r.contains(secret.trim())));
    pi.stop();
}

async fn without_the_credential_the_factor_fails_closed(b: Backend) {
    if skipped(b) {
        return;
    }
    let pi = PrivacyIdea::start().await;
    let seed = pi.get("seed_base32").to_owned();
    // A JWT of the right shape signed with another key.
    let real = std::fs::read_to_string(pi.get("credential_file")).unwrap();
    let (signed, _) = real.trim().rsplit_once('.').unwrap();
    let keys = tempfile::tempdir().unwrap();
    let forged = keys.path().join("forged-credential");
    std::fs::write(&forged, format!("{signed}.{}", "A".repeat(43))).unwrap();

    // The brokers stay up to the end (a dropped one's config folder goes, and its reload
    // complains).
    let mut brokers = Vec::new();
    // No credential sent, or a forged one: privacyIDEA answers 403, the factor fails closed
    // even with the right code.
    for (what, credential) in [
        ("no credential", Credential::Without),
        ("a forged credential", Credential::File(forged)),
    ] {
        let Some(app) = broker(b, &pi, credential).await else {
            return;
        };
        let (br, page) = sign_in(&app, &oathtool(&seed, now())).await;
        failed_closed(what, &br, &page);
        let reasons = http_audit(&app, 1).await;
        let forbidden = format!("privacyidea POST {} 403 ", pi.origin());
        assert!(
            reasons.iter().any(|r| r.starts_with(&forbidden)),
            "{what}: {reasons:?}"
        );
        brokers.push(app);
    }

    // A secret the manifest does not bind: the host refuses the request, nothing is sent.
    let Some(app) = broker(b, &pi, Credential::Unbound).await else {
        return;
    };
    let (br, page) = sign_in(&app, &oathtool(&seed, now())).await;
    failed_closed("an unbound secret", &br, &page);
    let reasons = http_audit(&app, 1).await;
    assert!(
        reasons.len() == 1 && reasons[0].contains(" refused "),
        "{reasons:?}"
    );
    brokers.push(app);

    // The right code was never spent: with the credential it signs in.
    let credential = PathBuf::from(pi.get("credential_file"));
    let Some(app) = broker(b, &pi, Credential::File(credential)).await else {
        return;
    };
    let (br, done) = sign_in(&app, &oathtool(&seed, now())).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(br.session_cookie().is_some());
    pi.stop();
}

/// The operator's route (issue #18, "done when"): a running broker with no factor gets the
/// factor pinned, granted and configured in its file, and `concierge plugins reload` loads it;
/// the next sign-in is checked by privacyIDEA.
async fn an_operator_hot_loads_the_factor(b: Backend) {
    if skipped(b) {
        return;
    }
    let pi = PrivacyIdea::start().await;
    let Some(app) = spawn_provider_with(b, &[], MFA).await else {
        return;
    };
    // No factor yet: MFA is required and nothing can be asked, so nothing signs in.
    let mut br = Browser::new(&app);
    let before = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert!(!before.body.contains("privacyidea"), "{}", before.body);
    assert!(
        br.session_cookie().is_none(),
        "fails closed without a factor"
    );

    let path = app.config.clone().unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    let credential = PathBuf::from(pi.get("credential_file"));
    text.push_str(&plugin_toml(&pi, Credential::File(credential)));
    std::fs::write(&path, text).unwrap();
    let out = app.cli().args(["plugins", "reload"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Loading compiles the component (seconds on a busy debug build); the loop ends as soon as
    // the factor is asked.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut br, form) = loop {
        let mut br = Browser::new(&app);
        let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
        if page.body.contains("data-factor=\"privacyidea\"") {
            let form = if page.has_form("/login/mfa/answer") {
                page
            } else {
                choose(&mut br, &page, "privacyidea", "challenge").await
            };
            break (br, form);
        }
        assert!(Instant::now() < deadline, "never loaded: {}", page.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let code = oathtool(pi.get("seed_base32"), now());
    let done = answer(&mut br, &form, &[("code", code.as_str())]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        br.session_cookie().is_some(),
        "checked by privacyIDEA, signed in"
    );
    pi.stop();
}

/// Item 5: the user name privacyIDEA gets can be a claim of the user's upstream. The upstream
/// (an OpenID provider) says `pat@corp.example` is employee `demo`; the operator keeps that claim
/// (`[upstreams.claims] keep`) and lets the plugin read it (`claims = ["employee_id"]`), which
/// names the user `claim:employee_id`. privacyIDEA knows `demo`, not `pat`: its check passes
/// and the app's ID token says `otp`. Without the plugin's `claims`, the plugin sees no claim
/// and fails closed, sending nothing. What the broker keeps is only what `keep` lists, as text.
async fn the_user_name_can_be_a_claim_the_upstream_sent(b: Backend) {
    if skipped(b) {
        return;
    }
    let pi = PrivacyIdea::start().await;
    let op = start_fake_op().await;
    let upstream = format!(
        "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\n\
         client_id = \"concierge\"\nclient_secret = \"s3cret\"\n\
         [upstreams.claims]\nkeep = [\"employee_id\", \"level\", \"roles\"]\n",
        op.issuer
    );
    let credential = PathBuf::from(pi.get("credential_file"));
    for granted in [false, true] {
        let more = if granted {
            "claims = [\"employee_id\"]\n"
        } else {
            ""
        };
        let plugin = plugin_toml_as(
            &pi,
            Credential::File(credential.clone()),
            "claim:employee_id",
            more,
        );
        let Some(app) = spawn_provider_with(b, &[], &format!("{MFA}{upstream}{plugin}")).await
        else {
            return;
        };
        let mut br = Browser::new(&app);
        let back = through_upstream_button(&op, &mut br, "corp", Forgery::KeptClaims).await;
        let (trail, page) = br.follow(back).await;
        assert_eq!(page.status, 200, "{trail:?}: {}", page.body);
        let form = if page.has_form("/login/mfa/answer") {
            page
        } else {
            choose(&mut br, &page, "privacyidea", "challenge").await
        };
        let user = app
            .store
            .upstream_link("corp", "kept-claims")
            .unwrap()
            .expect("provisioned from the upstream");
        let kept = app.store.upstream_claims("corp", &user).unwrap().kept;
        let want: std::collections::BTreeMap<String, String> = [
            ("employee_id".to_owned(), "demo".to_owned()),
            ("level".to_owned(), "7".to_owned()),
        ]
        .into();
        assert_eq!(kept, want, "strings and numbers kept as text, not lists");
        let code = oathtool(pi.get("seed_base32"), now());
        let done = answer(&mut br, &form, &[("code", code.as_str())]).await;
        if !granted {
            failed_closed("a claim the plugin may not read", &br, &done);
            assert!(http_audit(&app, 1).await.is_empty(), "nothing was sent");
            continue;
        }
        let (trail, done) = br.follow(done).await;
        let id = redeemed(&app, done, &trail, "https://webapp.example/cb").await;
        let amr: Vec<&str> = id["amr"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(amr.contains(&"otp") && amr.contains(&"mfa"), "{id}");
        assert_eq!(id["email"], "pat@corp.example");
        let reasons = http_audit(&app, 1).await;
        assert!(
            reasons[0].starts_with(&format!("privacyidea POST {} 200 ", pi.origin())),
            "{reasons:?}"
        );
    }
    pi.stop();
}

per_backend_async!(
    the_user_name_can_be_a_claim_the_upstream_sent,
    a_right_code_signs_in_once_and_replayed_or_wrong_codes_are_refused,
    without_the_credential_the_factor_fails_closed,
    an_operator_hot_loads_the_factor,
);
