//! RP-initiated logout and back-channel logout to a real receiver.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::helpers::{Browser, SECRET, assert_error_page, spawn_provider_with};
use crate::per_backend_async;
use crate::support::Backend;

/// An HTTP endpoint that records the bodies POSTed to it.
pub(crate) async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    receiver_failing_first(0).await
}

/// Like `receiver`, answering 503 to the first `failures` requests (still recording them).
async fn receiver_failing_first(failures: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    receiver_with(failures, false).await
}

/// Like `receiver`, recording each request and then never answering it (an app that hangs).
async fn receiver_hanging() -> (String, Arc<Mutex<Vec<String>>>) {
    receiver_with(0, true).await
}

async fn receiver_with(failures: usize, hang: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = actix_web::HttpServer::new(move || {
        let g = g.clone();
        actix_web::App::new().route(
            "/backchannel",
            actix_web::web::post().to(move |body: String| {
                let g = g.clone();
                async move {
                    let n = {
                        let mut got = g.lock().unwrap();
                        got.push(body);
                        got.len()
                    };
                    if hang {
                        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                    }
                    if n <= failures {
                        actix_web::HttpResponse::ServiceUnavailable().finish()
                    } else {
                        actix_web::HttpResponse::Ok().finish()
                    }
                }
            }),
        )
    })
    .listen(listener)
    .unwrap()
    .workers(1)
    .disable_signals()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}/backchannel"), got)
}

const VERIFIER: &str = "logout-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

async fn id_token_for(app: &crate::helpers::TestApp, br: &mut Browser) -> String {
    tokens_for(app, br).await["id_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Code flow for the client `bcl` in this browser's session: the token response.
async fn tokens_for(app: &crate::helpers::TestApp, br: &mut Browser) -> Value {
    tokens_for_client(app, br, "bcl").await
}

/// Code flow for `client` (secret `SECRET`, redirect URI `https://<client>.example/cb`).
pub(crate) async fn tokens_for_client(
    app: &crate::helpers::TestApp,
    br: &mut Browser,
    client: &str,
) -> Value {
    let challenge =
        URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(VERIFIER.as_bytes()));
    let res = br
        .get(&format!(
            "/authorize?response_type=code&client_id={client}&redirect_uri=https%3A%2F%2F{client}.example%2Fcb&scope=openid&code_challenge={challenge}&code_challenge_method=S256"
        ))
        .await;
    let loc = url::Url::parse(&res.location.unwrap()).unwrap();
    let code = loc
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let redirect_uri = format!("https://{client}.example/cb");
    let res = reqwest::Client::new()
        .post(format!("{}/token", app.base))
        .basic_auth(client, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    serde_json::from_str(&res.text().await.unwrap()).unwrap()
}

fn claims(jwt: &str) -> (Value, Value) {
    let p: Vec<&str> = jwt.split('.').collect();
    let d = |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (d(p[0]), d(p[1]))
}

async fn rp_initiated_logout_reaches_every_app(b: Backend) {
    let (url, got) = receiver().await;
    let extra = format!(
        "[[clients]]\nid = \"bcl\"\nsecret_sha256 = \"SECRET_HASH\"\nredirect_uris = [\"https://bcl.example/cb\"]\n\
         post_logout_redirect_uris = [\"https://bcl.example/bye\"]\nbackchannel_logout_uri = \"{url}\"\n"
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    let id_token = id_token_for(&app, &mut br).await;
    let sid = claims(&id_token).1["sid"].as_str().unwrap().to_owned();

    // An unregistered post-logout redirect: an error page, nothing ended.
    let bad = br
        .get(&format!("/oidc/logout?id_token_hint={id_token}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"))
        .await;
    assert_error_page(&bad, 400);
    assert_eq!(br.get("/account").await.status, 200);
    // A forged hint: the same.
    let forged = format!("{}x", &id_token[..id_token.len() - 1]);
    assert_error_page(
        &br.get(&format!("/oidc/logout?id_token_hint={forged}"))
            .await,
        400,
    );

    let res = br
        .get(&format!("/oidc/logout?id_token_hint={id_token}&post_logout_redirect_uri=https%3A%2F%2Fbcl.example%2Fbye&state=s-1"))
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        res.location.as_deref(),
        Some("https://bcl.example/bye?state=s-1")
    );
    assert_eq!(
        br.get("/account").await.status,
        303,
        "the broker session ended"
    );

    // The app's back-channel endpoint receives a valid logout token, without the user waiting.
    let mut body = None;
    for _ in 0..50 {
        if let Some(b) = got.lock().unwrap().first().cloned() {
            body = Some(b);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = body.expect("no back-channel logout arrived");
    let token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .unwrap()
        .1
        .into_owned();
    let (header, c) = claims(&token);
    assert_eq!(header["typ"], "logout+jwt");
    assert_eq!(c["aud"], "bcl");
    assert_eq!(c["sid"], sid.as_str());
    assert!(c["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(c.get("nonce").is_none());
    let keys = reqwest::get(format!("{}/jwks", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys: Value = serde_json::from_str(&keys).unwrap();
    let kid = header["kid"].as_str().unwrap();
    assert!(
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid),
        "signed by a published key"
    );
    assert_eq!(got.lock().unwrap().len(), 1, "sent once");
}

async fn logout_without_a_hint_asks_first(b: Backend) {
    let Some(app) = spawn_provider_with(b, &[], "").await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    let page = br.get("/oidc/logout?client_id=webapp&post_logout_redirect_uri=https%3A%2F%2Fwebapp.example%2Fbye").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"logout-confirm-form\""));
    assert_eq!(
        br.get("/account").await.status,
        200,
        "nothing ended by a bare GET"
    );
    // Without the CSRF token the confirmation is refused.
    let res = br
        .post_form("/oidc/logout", &[("confirm", "1"), ("client_id", "webapp")])
        .await;
    assert_error_page(&res, 403);
    let res = br
        .post_form(
            "/oidc/logout",
            &[
                ("confirm", "1"),
                ("csrf_token", &page.field("csrf_token")),
                ("client_id", "webapp"),
                ("post_logout_redirect_uri", "https://webapp.example/bye"),
            ],
        )
        .await;
    assert_eq!(res.location.as_deref(), Some("https://webapp.example/bye"));
    assert_eq!(br.get("/account").await.status, 303);
}

async fn admin_revoke_all_ends_every_session_and_token_and_tells_the_apps(b: Backend) {
    let (url, got) = receiver().await;
    let extra = format!(
        "[[clients]]\nid = \"bcl\"\nsecret_sha256 = \"SECRET_HASH\"\nredirect_uris = [\"https://bcl.example/cb\"]\n\
         backchannel_logout_uri = \"{url}\"\n"
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    let id_token = id_token_for(&app, &mut br).await;
    let sid = claims(&id_token).1["sid"].as_str().unwrap().to_owned();
    // A second token set for the same session, to check it dies with it.
    let at = tokens_for(&app, &mut br).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let introspect = |token: String| {
        let base = app.base.clone();
        async move {
            let res = reqwest::Client::new()
                .post(format!("{base}/introspect"))
                .basic_auth("bcl", Some(SECRET))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            serde_json::from_str::<Value>(&res.text().await.unwrap()).unwrap()["active"].clone()
        }
    };
    assert_eq!(introspect(at.clone()).await, true);

    let list = app
        .cli()
        .args(["sessions", "list", "--user", "demo@example.com"])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&sid),
        "the session is listed"
    );
    let by_client = app
        .cli()
        .args(["sessions", "list", "--client", "bcl"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&by_client.stdout).contains(&sid));

    let out = app
        .cli()
        .args(["sessions", "revoke", "--user", "demo@example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 session(s) ended"));

    // A still-unexpired JWT access token is refused from now on; the session is gone.
    assert_eq!(introspect(at).await, false);
    assert_eq!(br.get("/account").await.status, 303);
    // The running broker delivers the back-channel logout the CLI queued.
    assert!(wait_for(&got, 1).await, "back-channel logout delivered");
    let token = url::form_urlencoded::parse(got.lock().unwrap()[0].as_bytes())
        .find(|(k, _)| k == "logout_token")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(claims(&token).1["sid"], sid.as_str());

    let none = app
        .cli()
        .args(["sessions", "revoke", "--sid", "no-such-sid"])
        .output()
        .unwrap();
    assert!(!none.status.success());
    let no_target = app.cli().args(["sessions", "revoke"]).output().unwrap();
    assert!(!no_target.status.success(), "a target is required");
}

pub(crate) async fn wait_for(got: &Arc<Mutex<Vec<String>>>, n: usize) -> bool {
    for _ in 0..60 {
        if got.lock().unwrap().len() >= n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// The logout token in a back-channel POST body.
fn logout_token_of(body: &str) -> String {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .unwrap()
        .1
        .into_owned()
}

/// Ends the browser's broker session from the account page.
async fn log_out(br: &mut Browser) {
    let token = br.get("/account").await.field("csrf_token");
    let res = br.post_form("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(res.status, 303);
}

async fn a_failed_back_channel_delivery_is_retried_with_a_fresh_token(b: Backend) {
    let (url, got) = receiver_failing_first(1).await;
    let extra = format!(
        "[[clients]]\nid = \"bcl\"\nsecret_sha256 = \"SECRET_HASH\"\nredirect_uris = [\"https://bcl.example/cb\"]\n\
         backchannel_logout_uri = \"{url}\"\n"
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let mut br = Browser::new(&app);
    br.login("demo@example.com", "demo").await;
    id_token_for(&app, &mut br).await;
    log_out(&mut br).await;
    assert!(wait_for(&got, 1).await, "first attempt");
    // The retry waits for its backoff (5 s on the broker's clock), not for wall time.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "no retry before the backoff");
    // The retry comes long after the first token's `exp` (a retry 5 minutes later is within
    // the ~10 minutes of retries): the app must still receive a token it can accept
    // (Back-Channel Logout 1.0 2.6: reject an expired one; 2.4: a fresh jti for each).
    app.clock.advance(300);
    assert!(wait_for(&got, 2).await, "retried after the backoff");
    let received_at = concierge::clock::Clock::now(app.clock.as_ref());
    let bodies = got.lock().unwrap().clone();
    let (_, first) = claims(&logout_token_of(&bodies[0]));
    let (header, retry) = claims(&logout_token_of(&bodies[1]));
    assert_eq!(header["typ"], "logout+jwt");
    assert!(
        retry["iat"].as_i64().unwrap() > first["iat"].as_i64().unwrap(),
        "signed at the retry: {first} then {retry}"
    );
    assert_ne!(retry["jti"], first["jti"], "a fresh jti");
    assert!(
        retry["exp"].as_i64().unwrap() > received_at,
        "unexpired when received at {received_at}: {retry}"
    );
    assert!(
        first["exp"].as_i64().unwrap() < received_at,
        "the old one would have been refused"
    );
    for k in ["iss", "aud", "sub", "sid", "events"] {
        assert_eq!(retry[k], first[k], "{k}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(got.lock().unwrap().len(), 2, "delivered: no more attempts");
}

async fn an_app_that_hangs_does_not_delay_another(b: Backend) {
    let (slow_url, slow_got) = receiver_hanging().await;
    let (fast_url, fast_got) = receiver().await;
    let client = |id: &str, url: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\nsecret_sha256 = \"SECRET_HASH\"\nredirect_uris = [\"https://{id}.example/cb\"]\n\
             backchannel_logout_uri = \"{url}\"\n"
        )
    };
    let extra = format!(
        "{}\n{}",
        client("slow", &slow_url),
        client("fast", &fast_url)
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let mut one = Browser::new(&app);
    one.login("demo@example.com", "demo").await;
    tokens_for_client(&app, &mut one, "slow").await;
    let mut two = Browser::new(&app);
    two.login("demo@example.com", "demo").await;
    tokens_for_client(&app, &mut two, "fast").await;

    log_out(&mut one).await;
    assert!(
        wait_for(&slow_got, 1).await,
        "the slow app received its request (and hangs)"
    );
    // While that delivery waits for its 5 s timeout, another app's logout goes out at once.
    let started = std::time::Instant::now();
    log_out(&mut two).await;
    assert!(
        wait_for(&fast_got, 1).await,
        "the fast app's logout arrived"
    );
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(3000),
        "the fast app waited {took:?} behind the slow one (its timeout is 5 s)"
    );
    assert!(
        slow_got.lock().unwrap().len() == 1,
        "the slow one is not retried yet"
    );
}

per_backend_async!(
    admin_revoke_all_ends_every_session_and_token_and_tells_the_apps,
    rp_initiated_logout_reaches_every_app,
    logout_without_a_hint_asks_first,
    a_failed_back_channel_delivery_is_retried_with_a_fresh_token,
    an_app_that_hangs_does_not_delay_another
);
