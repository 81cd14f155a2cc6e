//! SPs registered from their metadata (issue #20), against the real pysaml2 SP
//! (tests/peers/saml_sp.py serves its own metadata at `/metadata`): a `[[saml_apps]]` table
//! with `metadata_file` signs in and refuses an ACS URL the metadata does not list; `concierge
//! saml-apps add --metadata-url` on a running broker is seen without a restart, `list` shows
//! it, `remove` ends it; a metadata URL that later serves garbage keeps the last good copy,
//! and a good one replaces it; metadata past its `validUntil` is not used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::Store;

use crate::helpers::{Browser, TestApp, assert_error_page, spawn_provider_with};
use crate::per_backend_async;
use crate::saml_idp::{Sp, answer_form, saml_sp};
use crate::support::Backend;

async fn at_wall_clock(app: Option<TestApp>) -> Option<TestApp> {
    let app = app?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    app.clock.set(i64::try_from(now.as_secs()).unwrap());
    Some(app)
}

async fn sp_metadata(sp: &Sp) -> String {
    let res = sp
        .http
        .get(format!("{}/metadata", sp.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The SP's sign-in through the broker, the password typed: the SP's verdict on the Response.
async fn sign_in(sp: &Sp, app: &TestApp) -> (u16, serde_json::Value) {
    let mut br = Browser::new(app);
    let (path, _) = sp.login(app, "").await;
    let page = br.get(&path).await;
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    let page = br
        .submit(
            &page,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (_, page) = br.follow(page).await;
    sp.post(&answer_form(sp, &page)).await
}

/// An unsigned AuthnRequest `id` of `issuer` naming `acs`, issued now, over HTTP-Redirect.
fn request(id: &str, issuer: &str, acs: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let xml = format!(
        concat!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
            r#"ID="{id}" Version="2.0" IssueInstant="{now}" AssertionConsumerServiceURL="{acs}">"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"#
        ),
        id = id,
        now = now,
        issuer = issuer,
        acs = acs
    );
    let q =
        concierge::upstream::saml::crypto::redirect_query("SAMLRequest", &xml, Some("rs"), None)
            .unwrap();
    format!("/saml/idp/sso?{q}")
}

fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn a_metadata_file_signs_in_and_only_its_acs_urls_are_answered(b: Backend) {
    let sp = saml_sp();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sp.xml");
    std::fs::write(&file, sp_metadata(&sp).await).unwrap();
    let toml = format!(
        "[[saml_apps]]\nmetadata_file = {:?}\nname = \"pysaml2 SP\"\n",
        file.display().to_string()
    );
    let Some(app) = at_wall_clock(spawn_provider_with(b, &[], &toml).await).await else {
        return;
    };
    let (status, got) = sign_in(&sp, &app).await;
    assert_eq!(status, 200, "the SP refused the Response: {got}");
    assert_eq!(got["name_id"], DEMO_EMAIL, "{got}");
    let mut br = Browser::new(&app);
    br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    // The metadata's ACS URL is answered; one of the SP's own origin that its metadata does
    // not list gets a page, no Response.
    let page = br.get(&request("_reg1", &sp.entity_id(), &sp.acs())).await;
    answer_form(&sp, &page);
    let page = br
        .get(&request(
            "_reg2",
            &sp.entity_id(),
            &format!("{}/other-acs", sp.base),
        ))
        .await;
    assert_error_page(&page, 400);
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
    assert!(page.location.is_none());

    // The config file wins: the CLI does not register its entity ID again, and lists it.
    let (ok, out) = run(app
        .cli()
        .args(["saml-apps", "add", "--metadata-file"])
        .arg(&file));
    assert!(!ok && out.contains("config file"), "{out}");
    let (ok, out) = run(app.cli().args(["saml-apps", "list"]));
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&sp.entity_id()) && l.contains("config")),
        "{out}"
    );
    assert!(app.store.saml_app(&sp.entity_id()).unwrap().is_none());
}

async fn saml_apps_add_from_a_url_on_a_running_broker_then_list_and_remove(b: Backend) {
    let sp = saml_sp();
    let Some(app) = at_wall_clock(spawn_provider_with(b, &[], "").await).await else {
        return;
    };
    // Not registered yet: a page.
    let mut br = Browser::new(&app);
    let (path, _) = sp.login(&app, "").await;
    assert_error_page(&br.get(&path).await, 400);

    let url = format!("{}/metadata", sp.base);
    let (ok, out) = run(app.cli().args([
        "saml-apps",
        "add",
        "--metadata-url",
        &url,
        "--name",
        "Registered SP",
    ]));
    assert!(ok, "{out}");
    assert!(out.contains(&sp.entity_id()), "{out}");
    // The running broker sees it at once.
    let (status, got) = sign_in(&sp, &app).await;
    assert_eq!(status, 200, "the SP refused the Response: {got}");
    assert_eq!(got["name_id"], DEMO_EMAIL, "{got}");

    let (ok, out) = run(app.cli().args(["saml-apps", "list"]));
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&sp.entity_id())
            && l.contains("database")
            && l.contains("Registered SP")
            && l.contains(&url)),
        "{out}"
    );
    // Once only.
    let (ok, out) = run(app.cli().args(["saml-apps", "add", "--metadata-url", &url]));
    assert!(!ok && out.contains("registered already"), "{out}");

    let (ok, out) = run(app.cli().args(["saml-apps", "remove", &sp.entity_id()]));
    assert!(ok, "{out}");
    let (path, _) = sp.login(&app, "").await;
    assert_error_page(&Browser::new(&app).get(&path).await, 400);
    let (ok, out) = run(app.cli().args(["saml-apps", "list"]));
    assert!(ok && !out.contains(&sp.entity_id()), "{out}");
    let (ok, _) = run(app.cli().args(["saml-apps", "remove", &sp.entity_id()]));
    assert!(!ok, "removed twice");
}

async fn a_metadata_url_serving_garbage_keeps_the_last_good_copy(b: Backend) {
    let sp = saml_sp();
    let Some(app) = at_wall_clock(
        spawn_provider_with(b, &[("CONCIERGE__SAML_APPS_METADATA_REFRESH", "1s")], "").await,
    )
    .await
    else {
        return;
    };
    let url = format!("{}/metadata", sp.base);
    let (ok, out) = run(app.cli().args(["saml-apps", "add", "--metadata-url", &url]));
    assert!(ok, "{out}");
    let stored = || app.store.saml_app(&sp.entity_id()).unwrap().unwrap();
    let good = stored();
    let mode = |m: &'static str| {
        let (http, base) = (sp.http.clone(), sp.base.clone());
        async move {
            let text = http
                .get(format!("{base}/metadata-mode?mode={m}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let r: serde_json::Value = serde_json::from_str(&text).unwrap();
            r["garbage_served"].as_u64().unwrap()
        }
    };
    // The URL now serves garbage; the copy is due (the broker's clock moves on).
    assert_eq!(mode("garbage").await, 0);
    app.clock.advance(2);
    let mut served = 0;
    for _ in 0..100 {
        served = mode("garbage").await;
        if served > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served > 0, "the broker never fetched the metadata again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored(), good, "the last good copy is kept");
    let (status, got) = sign_in(&sp, &app).await;
    assert_eq!(status, 200, "the SP refused the Response: {got}");

    // A good answer replaces the copy.
    mode("good").await;
    app.clock.advance(2);
    let mut replaced = false;
    for _ in 0..100 {
        if stored().fetched_at > good.fetched_at {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replaced, "a good refresh did not replace the copy");
    assert_eq!(stored().metadata_url.as_deref(), Some(url.as_str()));
}

/// `md` with `validUntil` at `t` on its EntityDescriptor.
fn valid_until(md: &str, t: i64) -> String {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let i = md.find("EntityDescriptor ").unwrap() + "EntityDescriptor ".len();
    format!("{}validUntil=\"{at}\" {}", &md[..i], &md[i..])
}

/// Metadata past its `validUntil` (SAML Metadata 2.2.1) is not used: an SP whose file expires is
/// refused from then on (a page, no Response), and `saml-apps add` refuses expired metadata.
async fn metadata_past_its_valid_until_is_not_used(b: Backend) {
    let sp = saml_sp();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sp.xml");
    let now = chrono::Utc::now().timestamp();
    std::fs::write(&file, valid_until(&sp_metadata(&sp).await, now + 3600)).unwrap();
    let toml = format!(
        "[[saml_apps]]\nmetadata_file = {:?}\n",
        file.display().to_string()
    );
    let Some(app) = at_wall_clock(spawn_provider_with(b, &[], &toml).await).await else {
        return;
    };
    let (status, got) = sign_in(&sp, &app).await;
    assert_eq!(status, 200, "valid for an hour yet: {got}");
    // Two hours later on the broker's clock (the SP's request is still in its skew).
    app.clock.advance(2 * 3600);
    let mut br = Browser::new(&app);
    let page = br
        .get(&request(&format!("_exp{now}"), &sp.entity_id(), &sp.acs()))
        .await;
    app.clock.advance(-2 * 3600);
    assert_error_page(&page, 400);
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);

    // Expired already: `saml-apps add` refuses it and stores nothing.
    let other = saml_sp();
    let expired = dir.path().join("expired.xml");
    std::fs::write(&expired, valid_until(&sp_metadata(&other).await, now - 60)).unwrap();
    let (ok, out) = run(app
        .cli()
        .args(["saml-apps", "add", "--metadata-file"])
        .arg(&expired));
    assert!(!ok && out.contains("validUntil"), "{out}");
    assert!(app.store.saml_app(&other.entity_id()).unwrap().is_none());
}

per_backend_async!(
    a_metadata_file_signs_in_and_only_its_acs_urls_are_answered,
    saml_apps_add_from_a_url_on_a_running_broker_then_list_and_remove,
    a_metadata_url_serving_garbage_keeps_the_last_good_copy,
    metadata_past_its_valid_until_is_not_used,
);
