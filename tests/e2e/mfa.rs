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
use concierge::clock::Clock;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::{MfaStore, Store};

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

pub(crate) fn plugin(file: &str) -> PathBuf {
    plugin_dir().join(file)
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// One `[[mfa.plugins]]` table pinned to the file as it is now.
pub(crate) fn manifest(id: &str, path: &Path, grants: &[&str], extra: &str) -> String {
    let grants: Vec<String> = grants.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        "[[mfa.plugins]]\nid = \"{id}\"\npath = {:?}\nsha256 = \"{}\"\ngrants = [{}]\n{extra}\n",
        path.display().to_string(),
        sha256_hex(path),
        grants.join(", ")
    )
}

/// The text of the element with this id (up to the next tag).
pub(crate) fn text_of(page: &Page, id: &str) -> String {
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

pub(crate) async fn choose(br: &mut Browser, page: &Page, factor: &str, action: &str) -> Page {
    post_ticket(
        br,
        page,
        "/login/mfa/choose",
        &[("factor", factor), ("action", action)],
    )
    .await
}

pub(crate) async fn answer(br: &mut Browser, page: &Page, fields: &[(&str, &str)]) -> Page {
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
/// `optional` client's `/authorize`: the factor is asked before any code (not a code with amr
/// ["pwd"]), and once it is answered the ID token (signature verified) says `mfa`.
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
    assert_eq!(end.status, 303, "{}", end.body);
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
    assert_eq!(done.status, 303, "{trail:?}: {}", done.body);
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
    assert_eq!(done.status, 303, "{trail:?}: {}", done.body);
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

async fn totp_enrolment_sign_in_lockout_replay_and_recovery(b: Backend) {
    let Some(app) = totp_app(b).await else { return };
    let mut br = Browser::new(&app);
    // First sign-in: the password is right, but a factor must be set up first.
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"mfa-choose\""), "{}", page.body);
    assert!(
        br.session_cookie().is_none(),
        "no session before the second factor"
    );
    let page = choose(&mut br, &page, "totp", "enroll").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg"), "the QR code is on the page");
    let secret = text_of(&page, "mfa-secret");
    // A wrong code does not finish the enrolment.
    let wrong = answer(&mut br, &page, &[("code", "000000")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(br.session_cookie().is_none());
    let page = answer(&mut br, &wrong, &[("code", &oathtool(&secret, START))]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"recovery-codes\""), "{}", page.body);
    let codes: Vec<String> = page
        .body
        .split("<li><code>")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let done = post_ticket(&mut br, &page, "/login/mfa/continue", &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(br.session_cookie().is_some());
    let user = app
        .store
        .user_by_email(&concierge::domain::Email::parse(DEMO_EMAIL).unwrap())
        .unwrap()
        .unwrap();
    let sessions = app.store.sessions_of_user(&user.id).unwrap();
    assert_eq!(sessions.len(), 1);
    for m in ["pwd", "otp", "mfa"] {
        assert!(
            sessions[0].amr.iter().any(|a| a == m),
            "{:?}",
            sessions[0].amr
        );
    }

    // Next sign-in, one step later: straight to the challenge; the code of this step works once.
    app.clock.advance(30);
    let mut br2 = Browser::new(&app);
    let page = br2.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert!(page.body.contains("data-factor=\"totp\""), "{}", page.body);
    let code = oathtool(&secret, START + 30);
    let ok = answer(&mut br2, &page, &[("code", &code)]).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    // A password alone cannot set up another authenticator for an account that has one.
    let mut thief = Browser::new(&app);
    let page = thief.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let refused = choose(&mut thief, &page, "totp", "enroll").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(!refused.body.contains("id=\"mfa-secret\""));
    assert!(thief.session_cookie().is_none());

    let mut br3 = Browser::new(&app);
    let page = br3.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let replay = answer(&mut br3, &page, &[("code", &code)]).await;
    assert_eq!(
        replay.status, 401,
        "a used code is refused: {}",
        replay.body
    );
    assert!(br3.session_cookie().is_none());

    // Wrong codes lock the factor (3 attempts configured; the replay counted as one).
    let w1 = answer(&mut br3, &replay, &[("code", "123456")]).await;
    assert_eq!(w1.status, 401);
    let locked = answer(&mut br3, &w1, &[("code", "654321")]).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.headers.contains_key("retry-after"));
    // Locked: even the right code is refused until the lockout ends.
    app.clock.advance(30);
    let mut br4 = Browser::new(&app);
    let page = br4.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(br4.session_cookie().is_none());
    app.clock.advance(5 * 60);
    let mut br5 = Browser::new(&app);
    let page = br5.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let ok = answer(
        &mut br5,
        &page,
        &[("code", &oathtool(&secret, START + 30 + 30 + 300))],
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);

    // A recovery code works once, from the choice page.
    let mut br6 = Browser::new(&app);
    let page = br6.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let choice = choose(&mut br6, &page, "", "").await;
    assert!(
        choice.body.contains("id=\"mfa-recovery\""),
        "{}",
        choice.body
    );
    let rc = codes[3].to_uppercase().replace('-', " ");
    let ok = post_ticket(&mut br6, &choice, "/login/mfa/recovery", &[("code", &rc)]).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let mut br7 = Browser::new(&app);
    let page = br7.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let choice = choose(&mut br7, &page, "", "").await;
    let again = post_ticket(
        &mut br7,
        &choice,
        "/login/mfa/recovery",
        &[("code", &codes[3])],
    )
    .await;
    assert_eq!(again.status, 401, "{}", again.body);
    assert!(br7.session_cookie().is_none());

    // The audit trail has the MFA events.
    app.store.ping().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = app
        .store
        .audit_events(&concierge::storage::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    for kind in [
        "mfa_enrolled",
        "mfa_challenged",
        "mfa_succeeded",
        "mfa_failed",
        "mfa_locked_out",
    ] {
        assert!(events.iter().any(|e| e.kind == kind), "no {kind} event");
    }
}

/// Starts aiosmtpd (tests/peers/smtp_sink.py); messages land in the returned folder.
pub(crate) struct SmtpSink {
    child: std::process::Child,
    pub(crate) port: u16,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn python() -> String {
    std::env::var("CONCIERGE_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = dirs_cache().join("concierge/pyvenv/bin/python");
        if venv.is_file() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    })
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache"))
}

fn smtp_sink() -> SmtpSink {
    smtp_sink_on(None)
}

/// The SMTP sink, on `port` when given (a server restarted where the broker expects it).
pub(crate) fn smtp_sink_on(port: Option<u16>) -> SmtpSink {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/smtp_sink.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script).arg(dir.path());
    if let Some(p) = port {
        cmd.arg(p.to_string());
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python with aiosmtpd (scripts/test.sh installs tests/peers/requirements.txt)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("smtp sink said {line:?}"));
    SmtpSink { child, port, dir }
}

impl SmtpSink {
    /// The n-th message received (1-based), waiting for it.
    pub(crate) async fn message(&self, n: usize) -> String {
        let path = self.dir.path().join(format!("{n}.eml"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(m) = std::fs::read_to_string(&path) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no message {n} at the SMTP server");
    }
}

/// The header fields of a message as received (RFC 5322 2.2: unfolded), in order.
fn headers(mail: &str) -> Vec<(String, String)> {
    let head = mail.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// The one value of a header field (names are case-insensitive); None if absent or repeated.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() { None } else { first }
}

pub(crate) fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in {text}"))
        .to_owned()
}

async fn email_codes_through_a_real_smtp_server(b: Backend) {
    let smtp = smtp_sink();
    let email = manifest(
        "email-otp",
        &plugin("email-otp.wasm"),
        &["clock", "random", "state", "email"],
        "",
    );
    let more = format!(
        "step_ttl = \"30m\"\n[mfa.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Concierge <no-reply@concierge.test>\"\n",
        smtp.port
    );
    // `[ui] product_name` reaches the plugin's text through the host's `config`.
    let config = format!(
        "[ui]\nproduct_name = \"Acme Sign-in\"\n{}",
        mfa_config("required", &email, &more)
    );
    let Some(app) = spawn_provider_with(b, &[], &config).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("data-factor=\"email-otp\""),
        "{}",
        page.body
    );
    let mail = smtp.message(1).await;
    assert!(
        mail.contains(&format!("X-Envelope-To: {DEMO_EMAIL}")),
        "{mail}"
    );
    // RFC 2045 4: MIME-Version is a MUST for a message with Content-Type; RFC 5322 3.6.4: a
    // Message-ID, unique per message.
    let head = headers(&mail);
    assert_eq!(header(&head, "MIME-Version"), Some("1.0"), "{mail}");
    assert!(
        header(&head, "Content-Type").is_some_and(|t| t.starts_with("text/plain")),
        "{mail}"
    );
    let id1 = header(&head, "Message-ID").unwrap_or_else(|| panic!("no Message-ID: {mail}"));
    assert!(
        id1.starts_with('<') && id1.ends_with("@concierge.test>") && id1.len() > 20,
        "{id1}"
    );
    assert_eq!(
        header(&head, "Subject"),
        Some("Your Acme Sign-in sign-in code"),
        "{mail}"
    );
    let body = mail.split("\r\n\r\n").nth(1).unwrap_or(&mail);
    assert!(body.contains("Your Acme Sign-in sign-in code is"), "{body}");
    assert!(!body.contains("Concierge"), "{body}");
    let code = six_digits(body);
    // Wrong first, then right; the code is single use.
    let wrong = answer(&mut br, &page, &[("code", "000000")]).await;
    assert_eq!(wrong.status, 401);
    let ok = answer(&mut br, &wrong, &[("code", &code)]).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(br.session_cookie().is_some());
    let mut br2 = Browser::new(&app);
    let page = br2.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let reused = answer(&mut br2, &page, &[("code", &code)]).await;
    assert_eq!(reused.status, 401, "{}", reused.body);
    // Expired after 10 minutes.
    let mail = smtp.message(2).await;
    let id2 = header(&headers(&mail), "Message-ID").map(str::to_owned);
    assert!(
        id2.is_some_and(|id2| id2 != id1),
        "each message has its own id: {mail}"
    );
    let code2 = six_digits(mail.split("\r\n\r\n").nth(1).unwrap_or(&mail));
    app.clock.advance(601);
    let late = answer(&mut br2, &reused, &[("code", &code2)]).await;
    assert_eq!(late.status, 401, "{}", late.body);
}

impl SmtpSink {
    /// How many messages arrived (after a pause for one in flight to land).
    async fn count(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .count()
    }
}

/// Issue #17, hole 5: a GET never sends a second-factor challenge. A signed-in user (MFA off,
/// the email plugin on) is navigated cross-site to `/authorize` with `acr_values` for the second
/// level, and to the step-up route: the inbox of the real SMTP server stays empty and each page
/// offers a "send the code" button; the POST of that button sends one code, which steps up.
async fn a_get_never_sends_a_challenge(b: Backend) {
    let smtp = smtp_sink();
    let email = manifest(
        "email-otp",
        &plugin("email-otp.wasm"),
        &["clock", "random", "state", "email"],
        "",
    );
    let more = format!(
        "[mfa.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Concierge <no-reply@concierge.test>\"\n",
        smtp.port
    );
    let Some(app) = spawn_provider_with(b, &[], &mfa_config("off", &email, &more)).await else {
        return;
    };
    let redirect = "https://webapp.example/cb";
    let mut br = Browser::new(&app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 303, "MFA off: signed in: {}", page.body);
    assert_eq!(smtp.count().await, 0);
    // A bare navigation to /authorize asking for the second level.
    let path = crate::oidc::authorize_path_with(
        "webapp",
        redirect,
        &[("acr_values", "urn:concierge:loa:2")],
    );
    let page = br.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(smtp.count().await, 0, "a GET to /authorize sent a code");
    assert!(page.has_form("/login/mfa/choose"), "{}", page.body);
    // Again, and the step-up route: still nothing.
    let again = br.get(&path).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let step_up = br.get("/login/mfa/step-up?return_to=/account").await;
    assert_eq!(step_up.status, 200, "{}", step_up.body);
    assert_eq!(smtp.count().await, 0, "a GET sent a code");
    // The button (a POST with the CSRF token) sends one code; it steps the session up.
    let sent = choose(&mut br, &page, "email-otp", "challenge").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let mail = smtp.message(1).await;
    assert_eq!(smtp.count().await, 1);
    let code = six_digits(mail.split("\r\n\r\n").nth(1).unwrap_or(&mail));
    let done = answer(&mut br, &sent, &[("code", &code)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = done.location.as_deref().unwrap();
    assert!(
        back.starts_with(redirect) && back.contains("code="),
        "{back}"
    );
}

/// Issue #17, item 11 (and the newcomer's report): a user who signed in with an email code
/// (MFA required, email and TOTP plugins) manages factors from the account page: with that
/// fresh second factor they add a TOTP authenticator (its secret checked with oathtool), which
/// raises nothing they did not prove and lands back on the account page; the next sign-in offers
/// it. Later (the proof no longer fresh) the page asks to prove a factor again before anything
/// can be added or removed; after the proof the TOTP factor is removed (audited), the email
/// factor, needed by the policy, stays, and the user's session keeps working.
async fn factors_are_managed_from_the_account_page(b: Backend) {
    let smtp = smtp_sink();
    let email = manifest(
        "email-otp",
        &plugin("email-otp.wasm"),
        &["clock", "random", "state", "email"],
        "",
    );
    let more = format!(
        "step_ttl = \"30m\"\n[mfa.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Concierge <no-reply@concierge.test>\"\n",
        smtp.port
    );
    let plugins = format!("{email}\n{}", totp_manifest());
    let config = format!(
        "{}\n{}",
        mfa_config("required", &plugins, &more),
        crate::control::OPS_CLIENTS
    );
    let Some(app) = spawn_provider_with(b, &[], &config).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // The email code (the only usable factor: pressed, sent, answered).
    let page = if page.has_form("/login/mfa/answer") {
        page
    } else {
        choose(&mut br, &page, "email-otp", "challenge").await
    };
    let mail = smtp.message(1).await;
    let code = six_digits(mail.split("\r\n\r\n").nth(1).unwrap_or(&mail));
    let done = answer(&mut br, &page, &[("code", &code)]).await;
    let (_, account) = br.follow(done).await;
    assert_eq!(account.status, 200, "{}", account.body);
    assert!(
        account.body.contains("href=\"/account/factors\""),
        "{}",
        account.body
    );

    // From the account page: TOTP can be added at once (the email code was just proven).
    let manage = br.get("/account/factors").await;
    assert_eq!(manage.status, 200, "{}", manage.body);
    assert!(
        manage
            .body
            .contains("class=\"button enroll\" data-factor=\"totp\""),
        "the account page offers to add TOTP: {}",
        manage.body
    );
    assert_eq!(smtp.count().await, 1, "opening the page sent nothing");
    let page = choose(&mut br, &manage, "totp", "enroll").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let secret = text_of(&page, "mfa-secret");
    let at = app.clock.now();
    let page = answer(&mut br, &page, &[("code", &oathtool(&secret, at))]).await;
    let page = if page.has_form("/login/mfa/continue") {
        br.submit(&page, "/login/mfa/continue", &[]).await
    } else {
        page
    };
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/account"));
    let enrolments = |app: &TestApp| {
        let demo = app
            .store
            .user_by_email(&concierge::domain::Email::parse(DEMO_EMAIL).unwrap())
            .unwrap()
            .unwrap();
        app.store
            .mfa_enrollments(&demo.id)
            .unwrap()
            .into_iter()
            .map(|e| e.plugin_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(enrolments(&app), ["totp"]);
    // The next sign-in offers it.
    app.clock.advance(60);
    let mut next = Browser::new(&app);
    let page = next.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert!(
        page.body.contains("data-factor=\"totp\""),
        "the next sign-in offers TOTP: {}",
        page.body
    );

    // Ten minutes later the proof is old: nothing can be added or removed before a new one.
    app.clock.advance(600);
    let manage = br.get("/account/factors").await;
    assert_eq!(manage.status, 200, "{}", manage.body);
    assert!(
        !manage.body.contains("class=\"button enroll\""),
        "{}",
        manage.body
    );
    assert!(
        !manage.body.contains("/login/mfa/remove"),
        "{}",
        manage.body
    );
    let forced = br
        .submit(
            &manage,
            "/login/mfa/choose",
            &[("factor", "sms-otp"), ("action", "enroll")],
        )
        .await;
    assert_ne!(forced.status, 200, "{}", forced.body);
    let page = totp_challenge(&mut br, manage).await;
    let page = answer(
        &mut br,
        &page,
        &[("code", &oathtool(&secret, app.clock.now()))],
    )
    .await;
    assert_eq!(page.status, 200, "back at the choice: {}", page.body);
    assert!(page.body.contains("/login/mfa/remove"), "{}", page.body);
    let removed = br
        .submit(&page, "/login/mfa/remove", &[("factor", "totp")])
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert!(
        removed
            .body
            .contains("class=\"alert alert-success\" role=\"status\" id=\"mfa-done\""),
        "the removal is told as a success, not an error: {}",
        removed.body
    );
    assert!(enrolments(&app).is_empty());
    let events = crate::control::audit_events(&app, "mfa_removed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "totp");
    assert_eq!(br.get("/account").await.status, 200, "still signed in");
    assert_eq!(next.get("/login").await.status, 200);
}

/// A small SMS gateway: records each request's JSON body and Authorization header.
pub(crate) async fn sms_gateway() -> (String, Arc<Mutex<Vec<(Value, String)>>>) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let got: Arc<Mutex<Vec<(Value, String)>>> = Arc::default();
    let seen = Arc::clone(&got);
    let server = HttpServer::new(move || {
        let seen = Arc::clone(&seen);
        App::new().route(
            "/sms",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let seen = Arc::clone(&seen);
                async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().unwrap().push((v, auth));
                    HttpResponse::Accepted().finish()
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    (format!("http://127.0.0.1:{port}/sms"), got)
}

async fn sms_enrolment_and_codes_through_the_gateway(b: Backend) {
    let (url, got) = sms_gateway().await;
    let sms = manifest(
        "sms-otp",
        &plugin("sms-otp.wasm"),
        &["clock", "random", "state", "sms"],
        "",
    );
    let more = format!("[mfa.sms]\nurl = \"{url}\"\ntoken = \"gw-secret\"\n");
    let Some(app) = spawn_provider_with(b, &[], &mfa_config("required", &sms, &more)).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let page = choose(&mut br, &page, "sms-otp", "enroll").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("type=\"tel\""), "{}", page.body);
    let bad = answer(&mut br, &page, &[("phone", "010-1234")]).await;
    assert_eq!(
        bad.status, 401,
        "a malformed number is refused: {}",
        bad.body
    );
    assert!(got.lock().unwrap().is_empty());
    let page = answer(&mut br, &bad, &[("phone", "+821012345678")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (msg, auth) = got.lock().unwrap()[0].clone();
    assert_eq!(auth, "Bearer gw-secret");
    assert_eq!(msg["to"], "+821012345678");
    let code = six_digits(msg["body"].as_str().unwrap());
    let page = answer(&mut br, &page, &[("code", &code)]).await;
    assert_eq!(page.status, 200, "recovery codes: {}", page.body);
    let done = post_ticket(&mut br, &page, "/login/mfa/continue", &[]).await;
    assert_eq!(done.status, 303);
    // The next sign-in sends a code to the enrolled number.
    let mut br2 = Browser::new(&app);
    let page = br2.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (msg, _) = got.lock().unwrap()[1].clone();
    assert_eq!(msg["to"], "+821012345678");
    let ok = answer(
        &mut br2,
        &page,
        &[("code", &six_digits(msg["body"].as_str().unwrap()))],
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
}

/// Every hostile plugin fails closed within its budget and the broker keeps answering; the
/// ones that must not load are refused at load with a clear reason.
async fn hostile_plugins_fail_closed(b: Backend) {
    let tdir = plugin_dir().join("test");
    let budget = "timeout = \"200ms\"\nfuel = 20000000\nmemory = \"2MiB\"";
    let mut plugins = String::new();
    for id in ["hostile-loop", "hostile-memhog", "hostile-trap"] {
        plugins += &manifest(
            id,
            &tdir.join(format!("{id}.wasm")),
            &["clock", "random", "state"],
            budget,
        );
    }
    // Imports `sms`, which is not granted.
    plugins += &manifest(
        "hostile-ungranted",
        &tdir.join("hostile-ungranted.wasm"),
        &["clock"],
        budget,
    );
    plugins += &manifest(
        "hostile-malformed",
        &tdir.join("hostile-malformed.wasm"),
        &["clock", "random", "state", "log", "email", "sms"],
        budget,
    );
    // Pinned to another file's digest.
    let wrong_pin = manifest(
        "test-factor",
        &tdir.join("test-factor-v1.wasm"),
        &["clock"],
        "",
    )
    .replace(
        &sha256_hex(&tdir.join("test-factor-v1.wasm")),
        &sha256_hex(&plugin("totp.wasm")),
    );
    plugins += &wrong_pin;
    let Some(app) = spawn_provider_with(b, &[], &mfa_config("required", &plugins, "")).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for refused in ["hostile-ungranted", "hostile-malformed", "test-factor"] {
        assert!(
            !page.body.contains(&format!("data-factor=\"{refused}\"")),
            "{refused} must not load"
        );
    }
    for id in ["hostile-loop", "hostile-memhog", "hostile-trap"] {
        assert!(
            page.body.contains(&format!("data-factor=\"{id}\"")),
            "{id}: {}",
            page.body
        );
        let form = choose(&mut br, &page, id, "challenge").await;
        assert_eq!(form.status, 200, "{id}: {}", form.body);
        // While the plugin burns its budget, the broker answers other requests.
        let base = app.base.clone();
        let probe = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let t = Instant::now();
            let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
            (r.status().as_u16(), t.elapsed())
        });
        let t = Instant::now();
        let failed = answer(&mut br, &form, &[("code", "111111")]).await;
        let took = t.elapsed();
        assert_eq!(failed.status, 503, "{id} fails closed: {}", failed.body);
        assert!(
            failed.body.contains("id=\"mfa-error\""),
            "{id}: {}",
            failed.body
        );
        assert!(br.session_cookie().is_none(), "{id} never passes");
        assert!(took < Duration::from_secs(3), "{id} took {took:?}");
        let (status, probe_took) = probe.await.unwrap();
        assert_eq!(status, 200);
        assert!(probe_took < Duration::from_secs(2), "{probe_took:?}");
    }
    // The CLI names why each refused plugin did not load.
    let out = app.cli().args(["plugins", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("does not grant"), "{text}");
    assert!(text.contains("malformed"), "{text}");
    assert!(text.contains("the manifest pins"), "{text}");
}

async fn hot_reload_serves_the_new_version(b: Backend) {
    let tdir = plugin_dir().join("test");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test-factor.wasm");
    std::fs::copy(tdir.join("test-factor-v1.wasm"), &file).unwrap();
    let entry = manifest("test-factor", &file, &["clock"], "");
    // The test signs in repeatedly while it waits for the reload.
    let rates = [
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_IP", "off"),
        ("CONCIERGE__RATE_LIMIT__LOGIN_PER_ACCOUNT", "off"),
    ];
    let Some(app) = spawn_provider_with(
        b,
        &rates,
        &mfa_config("required", &entry, "reload_interval = \"200ms\""),
    )
    .await
    else {
        return;
    };
    let mut br = Browser::new(&app);
    let v1 = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert!(
        text_of(&v1, "mfa-intro").contains("version 1"),
        "{}",
        v1.body
    );

    // Deploy v2: new file, new pin in the config, `concierge plugins reload`.
    let config = app.config.clone().unwrap();
    std::fs::copy(tdir.join("test-factor-v2.wasm"), &file).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &sha256_hex(&tdir.join("test-factor-v1.wasm")),
        &sha256_hex(&file),
    );
    std::fs::write(&config, text).unwrap();
    let out = app.cli().args(["plugins", "reload"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reloading compiles the component; a debug broker on a busy 2-core machine (the e2e tests
    // run two at a time) has taken 15 s for it. The loop ends as soon as v2 answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut br2;
    let v2 = loop {
        br2 = Browser::new(&app);
        let page = br2.login(DEMO_EMAIL, DEMO_PASSWORD).await;
        if text_of(&page, "mfa-intro").contains("version 2") {
            break page;
        }
        assert!(Instant::now() < deadline, "v2 never served: {}", page.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The challenge begun on v1 meets v2: its answer is v1's, so it fails closed (no session).
    let stale = answer(&mut br, &v1, &[("code", "111111")]).await;
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(br.session_cookie().is_none());
    let ok = answer(&mut br2, &v2, &[("code", "222222")]).await;
    assert_eq!(ok.status, 303, "{}", ok.body);

    // A file that no longer matches its pin makes the factor unavailable (fail closed).
    std::fs::copy(tdir.join("test-factor-v1.wasm"), &file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut br3 = Browser::new(&app);
        let page = br3.login(DEMO_EMAIL, DEMO_PASSWORD).await;
        if page.status == 503 {
            assert!(br3.session_cookie().is_none());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mismatched file still served: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn step_up_via_acr_values_puts_the_factor_in_amr(b: Backend) {
    let tdir = plugin_dir().join("test");
    let entry = manifest(
        "test-factor",
        &tdir.join("test-factor-v1.wasm"),
        &["clock"],
        "",
    );
    let Some(app) = spawn_provider_with(b, &[], &mfa_config("off", &entry, "")).await else {
        return;
    };
    let http = Http::new(&app);
    let redirect = "https://webapp.example/cb";
    let mut br = Browser::new(&app);
    // MFA off: the password alone signs in; tokens say loa:1.
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let code = code_for_with(&mut br, "webapp", redirect, &[]).await;
    let (_, t) = http.exchange("webapp", &code, redirect).await;
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], "urn:concierge:loa:1");
    assert!(!id["amr"].as_array().unwrap().iter().any(|m| m == "mfa"));

    // prompt=none cannot step up.
    let path = crate::oidc::authorize_path_with(
        "webapp",
        redirect,
        &[("acr_values", "urn:concierge:loa:2"), ("prompt", "none")],
    );
    let res = br.get(&path).await;
    assert_eq!(res.status, 302);
    assert!(res.location.unwrap().contains("error=interaction_required"));

    // acr_values asks for more: the session is stepped up through the factor's challenge.
    let path = crate::oidc::authorize_path_with(
        "webapp",
        redirect,
        &[("acr_values", "urn:concierge:loa:2")],
    );
    // The step-up page of the journey, at /authorize itself.
    let page = br.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let wrong = answer(&mut br, &page, &[("code", "999999")]).await;
    assert_eq!(wrong.status, 401);
    let done = answer(&mut br, &wrong, &[("code", "111111")]).await;
    // The journey ends at the app: the code of the request that asked for the step-up.
    assert_eq!(done.status, 303, "{}", done.body);
    let back = done.location.as_deref().unwrap();
    assert!(
        back.starts_with(redirect) && back.contains("code="),
        "{back}"
    );
    let code = code_for_with(
        &mut br,
        "webapp",
        redirect,
        &[("acr_values", "urn:concierge:loa:2")],
    )
    .await;
    let (_, t) = http.exchange("webapp", &code, redirect).await;
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], "urn:concierge:loa:2");
    let amr: Vec<&str> = id["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        amr.contains(&"pwd") && amr.contains(&"otp") && amr.contains(&"mfa"),
        "{amr:?}"
    );
    let at = claims(t["access_token"].as_str().unwrap());
    assert_eq!(at["acr"], "urn:concierge:loa:2");
}

/// A `concierge serve` process on its own config and database, its log (stderr) captured in a
/// file; killed when dropped.
struct Served {
    child: std::process::Child,
    base: String,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _db: crate::support::TestDb,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `concierge` binary without the test process's CONCIERGE__* settings.
fn concierge_bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONCIERGE__") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `cmd` to the end, killing it (and failing) if it takes longer than `limit`.
fn run_within(mut cmd: std::process::Command, limit: Duration) -> (std::process::Output, Duration) {
    use std::process::Stdio;
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    (child.wait_with_output().unwrap(), took)
}

impl Served {
    /// Writes a config (data folder, database of `b`, `extra` TOML), creates the database and
    /// `users` (email, password), and starts `concierge serve` on a free port.
    fn start(b: Backend, extra: &str, users: &[(&str, &str)]) -> Option<Self> {
        use std::io::Write;
        let db = crate::support::fresh_db(b)?;
        let url = match &db.url {
            concierge::config::DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            concierge::config::DatabaseUrl::Postgres(u) => u.clone(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("concierge.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n\
                 [database]\nurl = \"{url}\"\n[provider]\nkey_encryption_key = \
                 \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n{extra}",
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let cli = |args: &[&str], stdin: &str| {
            let mut child = concierge_bin()
                .env("CONCIERGE_CONFIG", &config)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if !users.is_empty() {
            cli(&["migrate"], "");
        }
        for (email, password) in users {
            cli(&["users", "add", email], &format!("{password}\n"));
        }
        let log = dir.path().join("broker.log");
        let child = concierge_bin()
            .env("CONCIERGE_CONFIG", &config)
            .arg("serve")
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Some(Self {
            child,
            base,
            config,
            log,
            _dir: dir,
            _db: db,
        })
    }

    /// Waits for `/healthz` to answer 200; fails after `limit`. Returns how long it took.
    async fn healthy_within(&self, limit: Duration) -> Duration {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(r) = reqwest::get(format!("{}/healthz", self.base)).await
                && r.status().is_success()
            {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the broker did not answer /healthz within {limit:?}: {}",
            self.log_text()
        );
    }

    /// Everything the broker logged so far (stdout and stderr).
    fn log_text(&self) -> String {
        let out =
            std::fs::read_to_string(self.log.with_file_name("stdout.log")).unwrap_or_default();
        format!(
            "{}{out}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn cli(&self) -> std::process::Command {
        let mut c = concierge_bin();
        c.env("CONCIERGE_CONFIG", &self.config);
        c
    }
}

/// A `describe()` that never returns is bounded by the manifest's timeout wherever the host
/// asks it: the broker boots and answers at once with the plugin listed as unavailable (and
/// why), and `concierge plugins list` and `plugins check` return. The fuel budget is large on
/// purpose: it alone would hold each of them for far longer than the bounds here.
async fn a_looping_describe_is_bounded_at_boot_and_in_the_cli(b: Backend) {
    let file = plugin_dir().join("test/hostile-describe-loop.wasm");
    let plugins = manifest(
        "hostile-describe-loop",
        &file,
        &[],
        "timeout = \"200ms\"\nfuel = 1000000000000",
    );
    let Some(broker) = Served::start(b, &mfa_config("optional", &plugins, ""), &[]) else {
        return;
    };
    // Process start, migrations, two compilations of the plugin in a debug build, and the
    // 200 ms deadline: seconds, not the minute or more the fuel alone would allow.
    let took = broker.healthy_within(Duration::from_secs(30)).await;
    eprintln!("broker with a looping describe() answered /healthz after {took:?}");
    let log = broker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("MFA plugin unavailable") && l.contains("hostile-describe-loop"))
        .unwrap_or_else(|| panic!("the plugin is not marked unavailable: {log}"));
    assert!(
        line.contains("describe() did not return within its timeout (200ms)"),
        "{line}"
    );

    let (out, took) = run_within(
        {
            let mut c = broker.cli();
            c.args(["plugins", "list"]);
            c
        },
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("plugins list took {took:?}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("UNAVAILABLE")
            && text.contains("describe() did not return within its timeout (200ms)"),
        "{text}"
    );

    // No manifest: the default budget (500 ms, 50,000,000 fuel); whichever ends first.
    let (out, took) = run_within(
        {
            let mut c = concierge_bin();
            c.args(["plugins", "check"]).arg(&file);
            c
        },
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("plugins check took {took:?}");
    assert!(!out.status.success());
    assert!(
        err.contains("describe() did not return within its timeout (500ms)")
            || err.contains("describe() ran out of fuel"),
        "{err}"
    );
}

/// What `hostile-logger` logs: a line break, then what looks like an audit event
/// (tests/plugins/hostile-logger/src/lib.rs).
const FORGED_AUDIT: &str =
    "INFO audit: audit event kind=\"mfa_succeeded\" user_id=\"forged-admin\"";

/// A plugin's log text (and its error text, which the broker logs) stays on one escaped line:
/// the broker's own log, read from the process's stderr, has no line the plugin started.
async fn plugin_log_text_cannot_forge_log_lines(b: Backend) {
    let plugins = manifest(
        "hostile-logger",
        &plugin_dir().join("test/hostile-logger.wasm"),
        &["log"],
        "",
    );
    let users = [("ana@example.com", "correct horse battery staple")];
    let Some(broker) = Served::start(b, &mfa_config("required", &plugins, ""), &users) else {
        return;
    };
    broker.healthy_within(Duration::from_secs(30)).await;
    // describe() logged at load; challenge-begin and verify log, and 999999 makes verify fail
    // with the same text as its internal error.
    let mut br = Browser::at(&broker.base);
    let page = br.login(users[0].0, users[0].1).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let page = if page.body.contains("name=\"code\"") {
        page
    } else {
        choose(&mut br, &page, "hostile-logger", "challenge").await
    };
    assert_eq!(page.status, 200, "{}", page.body);
    let failed = answer(&mut br, &page, &[("code", "999999")]).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert!(br.session_cookie().is_none());

    let log = broker.log_text();
    let escaped =
        "hostile-logger says hello\\n1999-01-01T00:00:00.000000Z  INFO audit: audit event";
    let plugin_lines: Vec<&str> = log.lines().filter(|l| l.contains(escaped)).collect();
    // describe, challenge-begin, verify (log), and the failed factor's error.
    assert!(plugin_lines.len() >= 4, "{log}");
    assert!(
        plugin_lines
            .iter()
            .any(|l| l.contains("\\r\\n\\u{1b}[2K\\u{2028}1999-01-01T00:00:01.000000Z")),
        "{log}"
    );
    assert!(
        plugin_lines.iter().any(|l| l.contains("MFA factor failed")),
        "the factor's error is logged, escaped too: {log}"
    );
    for line in log.lines().filter(|l| l.contains("forged-admin")) {
        assert!(
            line.contains("hostile-logger says hello\\n"),
            "a line the plugin started: {line:?}\n{log}"
        );
    }
    assert!(
        !log.contains('\u{1b}'),
        "no raw escape sequence reaches the log"
    );
    assert!(
        !log.contains('\u{2028}'),
        "no raw line separator reaches the log"
    );
    assert!(
        !log.lines().any(
            |l| l.starts_with("1999-01-01T00:00:0") || l.trim_start().starts_with(FORGED_AUDIT)
        ),
        "{log}"
    );
}

/// SMTP credentials over `tls = "none"`, and an SMS bearer token over plain http, are refused
/// at config load unless the server is on a loopback address (as `server.public_url` is):
/// `concierge config check` exits 2 naming the key.
#[test]
fn config_check_refuses_secrets_sent_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = |host: &str, tls: &str, creds: bool| {
        format!(
            "[mfa.smtp]\nhost = \"{host}\"\nport = 25\ntls = \"{tls}\"\nfrom = \"Concierge <no-reply@example.com>\"\n{}",
            if creds {
                "username = \"mailer\"\npassword = \"hunter2\"\n"
            } else {
                ""
            }
        )
    };
    let sms = |url: &str, token: bool| {
        format!(
            "[mfa.sms]\nurl = \"{url}\"\n{}",
            if token { "token = \"gw-secret\"\n" } else { "" }
        )
    };
    let refused = [
        (
            "smtp-none.toml",
            smtp("smtp.example.com", "none", true),
            "mfa.smtp.tls",
        ),
        (
            "smtp-none-ip.toml",
            smtp("192.0.2.25", "none", true),
            "mfa.smtp.tls",
        ),
        (
            "sms-http.toml",
            sms("http://sms.example.com/send", true),
            "mfa.sms.url",
        ),
    ];
    for (name, body, key) in refused {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let out = concierge_bin()
            .args(["config", "check"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(key), "{name}: names `{key}`: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("gw-secret"),
            "{err}"
        );
    }
    let accepted = [
        ("smtp-local.toml", smtp("127.0.0.1", "none", true)),
        ("smtp-localhost.toml", smtp("localhost", "none", true)),
        (
            "smtp-starttls.toml",
            smtp("smtp.example.com", "starttls", true),
        ),
        ("smtp-relay.toml", smtp("smtp.example.com", "none", false)),
        ("sms-https.toml", sms("https://sms.example.com/send", true)),
        ("sms-local.toml", sms("http://127.0.0.1:9000/send", true)),
    ];
    for (name, body) in accepted {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let out = concierge_bin()
            .args(["config", "check"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The recovery codes shown on one page, in order.
fn codes_on(page: &Page) -> Vec<String> {
    page.body
        .split("<li><code>")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].to_owned())
        .collect()
}

/// Issue #17 item 11: new recovery codes from the account page, right after a factor was proven
/// there; the old ones stop working, the new ones work once; audited; never without a recent
/// proof.
async fn recovery_codes_are_renewed_from_the_account_page(b: Backend) {
    let config = format!(
        "{}\n{}",
        mfa_config("required", &totp_manifest(), ""),
        crate::control::OPS_CLIENTS
    );
    let Some(app) = spawn_provider_with(b, &[], &config).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let page = choose(&mut br, &page, "totp", "enroll").await;
    let secret = text_of(&page, "mfa-secret");
    let page = answer(&mut br, &page, &[("code", &oathtool(&secret, START))]).await;
    let old = codes_on(&page);
    assert_eq!(old.len(), 10, "{}", page.body);
    let done = br.submit(&page, "/login/mfa/continue", &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);

    // Managing factors ten minutes later: prove TOTP again, then new codes.
    app.clock.advance(600);
    let manage = br.get("/account/factors").await;
    assert_eq!(manage.status, 200, "{}", manage.body);
    assert!(
        !manage.body.contains("id=\"mfa-codes-renew\""),
        "the last proof is ten minutes old: {}",
        manage.body
    );
    let forced = br
        .post_form(
            "/login/mfa/recovery-codes",
            &[
                ("csrf_token", &manage.field("csrf_token")),
                ("journey", &manage.field("journey")),
            ],
        )
        .await;
    assert_eq!(forced.status, 403, "{}", forced.body);
    assert!(forced.body.contains("id=\"mfa-error\""), "{}", forced.body);
    // The factor list says when TOTP was added and last used (set up at the first sign-in, not
    // used since).
    let times = |p: &Page| {
        let at = p
            .body
            .find("class=\"hint factor-times\" data-factor=\"totp\"")?;
        Some(p.body[at..at + p.body[at..].find("</p>")?].to_owned())
    };
    let listed = times(&forced).unwrap_or_else(|| panic!("{}", forced.body));
    assert!(listed.contains("2027-01-15T08:00:00Z"), "{listed}");
    assert!(listed.contains("not yet"), "{listed}");
    let page = totp_challenge(&mut br, forced).await;
    let page = answer(&mut br, &page, &[("code", &oathtool(&secret, START + 600))]).await;
    let listed = times(&page).unwrap_or_else(|| panic!("{}", page.body));
    assert!(
        listed.contains("2027-01-15T08:10:00Z"),
        "proving it here counts as a use: {listed}"
    );
    assert_eq!(page.status, 200, "back at the choice: {}", page.body);
    assert!(
        page.body.contains("id=\"mfa-codes-renew\""),
        "{}",
        page.body
    );
    let page = br.submit(&page, "/login/mfa/recovery-codes", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let new = codes_on(&page);
    assert_eq!(new.len(), 10, "{}", page.body);
    assert!(new.iter().all(|c| !old.contains(c)), "{old:?} {new:?}");
    let done = br.submit(&page, "/login/mfa/continue", &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/account"));
    let events = crate::control::audit_events(&app, "recovery_codes_renewed").await;
    assert_eq!(events.len(), 1, "{events:?}");

    // The next sign-ins: an old code is refused, a new one works.
    let mut other = Browser::new(&app);
    let page = other.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let choice = choose(&mut other, &page, "", "").await;
    let refused = other
        .submit(&choice, "/login/mfa/recovery", &[("code", &old[0])])
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(other.session_cookie().is_none());
    let ok = other
        .submit(&refused, "/login/mfa/recovery", &[("code", &new[0])])
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(other.session_cookie().is_some());
}

per_backend_async!(
    recovery_codes_are_renewed_from_the_account_page,
    factors_are_managed_from_the_account_page,
    a_get_never_sends_a_challenge,
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
