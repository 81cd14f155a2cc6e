//! Waiting factors (plugin contract 0.2 `waiting`, issue #18 item 3) with the test plugin
//! `approve` (plugins/approve, the reference waiting factor on the SDK): a push approval with number matching against a
//! real HTTP approval service (tests/peers/approval_service.py); the test plays the approver's
//! phone. The push starts only from a POST, within the per-user send limit; the page waits by
//! refreshing itself (`GET /login/mfa/wait`, its own poll limit, changing nothing), a GET never
//! signs in or counts, the right
//! number approves, a wrong number or a denial is refused and counted, an expired wait ends
//! cleanly, and the user can always ask again or go back to the factor choice.

use std::io::BufRead;
use std::process::{Child, Stdio};

use serde_json::Value;

use crate::helpers::{Browser, Page, TestApp, spawn_provider_with};
use crate::mfa::{answer, choose, manifest, plugin, python};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::{AuditQuery, Store};

/// The approval service, killed when dropped.
struct Service {
    child: Child,
    origin: String,
    http: reqwest::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn service() -> Service {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/approval_service.py");
    let mut child = std::process::Command::new(python())
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python (scripts/test.sh installs it)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("approval service said {line:?}"));
    Service {
        child,
        origin: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    }
}

impl Service {
    /// The approvals waiting on the user's phone: (id, the numbers offered).
    async fn inbox(&self) -> Vec<(String, Vec<String>)> {
        let v: Value = self
            .http
            .get(format!("{}/inbox?user={DEMO_EMAIL}", self.origin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let choices = a["choices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect();
                (a["id"].as_str().unwrap().to_owned(), choices)
            })
            .collect()
    }

    async fn act(&self, id: &str, action: &str, number: &str) {
        let res = self
            .http
            .post(format!("{}/approvals/{id}/{action}", self.origin))
            .form(&[("number", number)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
    }

    async fn started(&self) -> usize {
        let t = self
            .http
            .get(format!("{}/count", self.origin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        t.parse().unwrap()
    }
}

/// The broker with `approve` (granted `random` and `http` to the service) as the only
/// factor, MFA required; `limits` sets the send and poll limits.
async fn broker(b: Backend, s: &Service, limits: &str) -> Option<TestApp> {
    let extra = format!(
        "[mfa.plugins.http]\norigins = [{:?}]\n[mfa.plugins.config]\nservice = {:?}\n",
        s.origin, s.origin
    );
    let plugins = manifest(
        "approve",
        &plugin("approve.wasm"),
        &["random", "http"],
        &extra,
    );
    let config = format!(
        "[rate_limit]\nlogin_per_account = \"100/1m\"\nmfa_per_account = \"100/1m\"\n{limits}\n\
         [mfa]\nrequired = \"required\"\nmax_attempts = 5\nlockout = \"5m\"\n{plugins}"
    );
    spawn_provider_with(b, &[], &config).await
}

/// Signs in with the password: the only factor starts on that POST (the push is sent from the
/// user's own request); the waiting page.
async fn waiting_page(br: &mut Browser) -> Page {
    let wait = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(wait.status, 200, "{}", wait.body);
    assert!(wait.body.contains("id=\"mfa-wait\""), "{}", wait.body);
    wait
}

/// The number the page shows.
fn number(page: &Page) -> String {
    crate::mfa::text_of(page, "mfa-number")
}

/// Where the page refreshes to (its `<meta http-equiv="refresh">`), if it does.
fn refresh_url(page: &Page) -> Option<String> {
    let start = page.body.find("http-equiv=\"refresh\"")?;
    let rest = &page.body[start..];
    let url = rest.split("url=").nth(1)?.split('"').next()?;
    Some(url.replace("&amp;", "&").replace("&#x3D;", "="))
}

async fn poll(br: &mut Browser, page: &Page) -> Page {
    let url = refresh_url(page).unwrap_or_else(|| panic!("the page waits: {}", page.body));
    br.get(&url).await
}

/// The reasons of the `mfa_failed` events, once one contains `want` (they are written in
/// batches) or after 5 s.
async fn failures(app: &TestApp, want: &str) -> Vec<String> {
    let t = std::time::Instant::now();
    loop {
        let reasons: Vec<String> = app
            .store
            .audit_events(&AuditQuery {
                kind: Some("mfa_failed".into()),
                limit: 100,
                ..AuditQuery::default()
            })
            .unwrap()
            .into_iter()
            .filter_map(|r| r.reason)
            .collect();
        if reasons.iter().any(|r| r.contains(want)) || t.elapsed().as_secs() >= 5 {
            return reasons;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn the_right_number_approves_and_only_a_post_signs_in(b: Backend) {
    let s = service();
    let Some(app) = broker(b, &s, "").await else {
        return;
    };
    let mut br = Browser::new(&app);
    let wait = waiting_page(&mut br).await;
    let shown = number(&wait);
    let inbox = s.inbox().await;
    assert_eq!(inbox.len(), 1, "one push");
    let (id, choices) = &inbox[0];
    assert_eq!(choices.len(), 3, "{choices:?}");
    assert!(choices.contains(&shown), "{shown} among {choices:?}");
    assert!(
        !wait.body.contains(id.as_str()),
        "the correlation is never shown"
    );
    assert!(br.session_cookie().is_none());

    // Nothing approved yet: the page polls and waits on.
    let still = poll(&mut br, &wait).await;
    assert_eq!(still.status, 200, "{}", still.body);
    assert!(refresh_url(&still).is_some(), "{}", still.body);
    // "Continue" before the approval: still waiting, nothing counted.
    let early = answer(&mut br, &still, &[]).await;
    assert_eq!(early.status, 200, "{}", early.body);
    assert!(early.body.contains("Not approved yet"), "{}", early.body);

    // The approver picks the number shown: the next poll finds it approved, but a GET does not
    // sign in; the page's POST does.
    s.act(id, "pick", &shown).await;
    let approved = poll(&mut br, &early).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(
        approved.body.contains("data-approved=\"true\""),
        "{}",
        approved.body
    );
    assert!(refresh_url(&approved).is_none(), "no more polling");
    assert!(
        br.session_cookie().is_none(),
        "a GET never finishes a journey"
    );
    assert!(
        approved.body.contains("/static/mfa_wait.js"),
        "the script that goes on by itself"
    );
    let done = answer(&mut br, &approved, &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let (_, account) = br.follow(done).await;
    assert_eq!(account.status, 200, "{}", account.body);
    assert!(br.session_cookie().is_some(), "signed in");
    let amr = crate::passkey::amr_of(&account);
    assert!(amr.contains("swk") && amr.contains("mfa"), "{amr}");
    assert!(failures(&app, "-").await.is_empty(), "nothing failed");
}

async fn a_wrong_number_a_denial_and_an_expiry_are_refused_and_the_user_can_go_back(b: Backend) {
    let s = service();
    let Some(app) = broker(b, &s, "").await else {
        return;
    };
    // The approver picks another number than the page shows (someone else's sign-in, approved
    // blindly): refused, counted, no session.
    let mut br = Browser::new(&app);
    let wait = waiting_page(&mut br).await;
    let shown = number(&wait);
    let (id, choices) = s.inbox().await.remove(0);
    let other = choices.iter().find(|c| **c != shown).unwrap().clone();
    s.act(&id, "pick", &other).await;
    // The page's refresh (a GET) says so and counts nothing.
    let seen = poll(&mut br, &wait).await;
    assert_eq!(seen.status, 401, "{}", seen.body);
    assert!(seen.body.contains("wrong number"), "{}", seen.body);
    assert!(refresh_url(&seen).is_none(), "the wait is over");
    assert!(failures(&app, "-").await.is_empty(), "a GET counts nothing");
    // The page's POST (the form it had before the refresh) is refused and counted.
    let refused = answer(&mut br, &wait, &[]).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("wrong number"), "{}", refused.body);
    assert!(refresh_url(&refused).is_none(), "the wait is over");
    assert!(br.session_cookie().is_none());
    assert!(
        failures(&app, "rejected")
            .await
            .iter()
            .any(|r| r.contains("rejected"))
    );

    // A new request from the same page: a new push; denied this time.
    let again = choose(&mut br, &refused, "approve", "challenge").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(s.started().await, 2);
    let (id, _) = s.inbox().await.remove(0);
    s.act(&id, "deny", "").await;
    let denied = answer(&mut br, &again, &[]).await;
    assert_eq!(denied.status, 401, "{}", denied.body);
    assert!(denied.body.contains("denied"), "{}", denied.body);
    assert!(br.session_cookie().is_none());

    // Back to the factor choice from the waiting page.
    let back = choose(&mut br, &denied, "", "").await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert!(back.body.contains("id=\"mfa-choose\""), "{}", back.body);

    // A wait nobody answers expires: no poll reaches the plugin, the page says so, "Continue"
    // is refused (audited), and a new request works.
    let wait = choose(&mut br, &back, "approve", "challenge").await;
    assert_eq!(wait.status, 200, "{}", wait.body);
    app.clock.advance(61);
    let expired = poll(&mut br, &wait).await;
    assert_eq!(expired.status, 200, "{}", expired.body);
    assert!(refresh_url(&expired).is_none(), "{}", expired.body);
    assert!(
        expired.body.contains("id=\"mfa-resend\""),
        "{}",
        expired.body
    );
    let late = answer(&mut br, &wait, &[]).await;
    assert_eq!(late.status, 401, "{}", late.body);
    assert!(late.body.contains("expired"), "{}", late.body);
    assert!(
        failures(&app, "expired")
            .await
            .iter()
            .any(|r| r.contains("expired"))
    );
    let fresh = choose(&mut br, &late, "approve", "challenge").await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let shown = number(&fresh);
    let (id, _) = s.inbox().await.pop().unwrap();
    s.act(&id, "pick", &shown).await;
    let done = answer(&mut br, &fresh, &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(br.session_cookie().is_some(), "the fresh request signs in");
}

async fn pushes_and_polls_are_limited_per_user(b: Backend) {
    let s = service();
    let limits = "mfa_send_per_account = \"2/10m\"\nmfa_poll_per_account = \"3/1m\"";
    let Some(app) = broker(b, &s, limits).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let wait = waiting_page(&mut br).await;
    // Polls beyond the limit are refused (429) without calling the service.
    for _ in 0..3 {
        assert_eq!(poll(&mut br, &wait).await.status, 200);
    }
    let limited = poll(&mut br, &wait).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    // A second push is allowed, a third is not: the choice says so, nothing is sent.
    let again = choose(&mut br, &wait, "approve", "challenge").await;
    assert_eq!(again.status, 200, "{}", again.body);
    let third = choose(&mut br, &again, "approve", "challenge").await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(s.started().await, 2, "two pushes, not three");
    assert!(br.session_cookie().is_none());
}

per_backend_async!(
    the_right_number_approves_and_only_a_post_signs_in,
    a_wrong_number_a_denial_and_an_expiry_are_refused_and_the_user_can_go_back,
    pushes_and_polls_are_limited_per_user,
);
