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
                    let mut got = g.lock().unwrap();
                    got.push(body);
                    if got.len() <= failures {
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
    let challenge =
        URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(VERIFIER.as_bytes()));
    let res = br
        .get(&format!(
            "/authorize?response_type=code&client_id=bcl&redirect_uri=https%3A%2F%2Fbcl.example%2Fcb&scope=openid&code_challenge={challenge}&code_challenge_method=S256"
        ))
        .await;
    let loc = url::Url::parse(&res.location.unwrap()).unwrap();
    let code = loc
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let res = reqwest::Client::new()
        .post(format!("{}/token", app.base))
        .basic_auth("bcl", Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://bcl.example/cb"),
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

async fn a_failed_back_channel_delivery_is_retried(b: Backend) {
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
    let token = br.get("/account").await.field("csrf_token");
    br.post_form("/logout", &[("csrf_token", &token)]).await;
    assert!(wait_for(&got, 1).await, "first attempt");
    // The retry waits for its backoff (5 s on the broker's clock), not for wall time.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "no retry before the backoff");
    app.clock.advance(6);
    assert!(wait_for(&got, 2).await, "retried after the backoff");
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies[0], bodies[1], "the same logout token");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(got.lock().unwrap().len(), 2, "delivered: no more attempts");
}

per_backend_async!(
    admin_revoke_all_ends_every_session_and_token_and_tells_the_apps,
    rp_initiated_logout_reaches_every_app,
    logout_without_a_hint_asks_first,
    a_failed_back_channel_delivery_is_retried
);
