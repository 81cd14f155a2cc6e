//! The broker as a SAML 2.0 IdP, against a real service provider (tests/peers/saml_sp.py:
//! pysaml2, signatures checked by xmlsec1 with the certificate of the broker's metadata): an
//! SP-initiated sign-in over HTTP-Redirect ends with a Response the SP accepts (signature,
//! issuer, audience, recipient, InResponseTo, time) naming the user by email; a second sign-in
//! to the same SP is answered from the broker session, and ForceAuthn asks again; an unknown SP
//! or ACS gets a page, never a Response; IsPassive without a session is answered with a
//! NoPassive status. Also the HTTP-POST binding, persistent NameIDs, a requested MFA context,
//! and SPs that sign their requests.

use std::io::BufRead;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};

use crate::helpers::{Browser, Page, TestApp, assert_error_page, spawn_provider_with};
use crate::mfa::{mfa_config, oathtool, python, text_of, totp_manifest};
use crate::per_backend_async;
use crate::support::Backend;

/// The SP peer (pysaml2), on a port of its own.
pub(crate) struct Sp {
    child: std::process::Child,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Drop for Sp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn saml_sp() -> Sp {
    saml_sp_with(&[])
}

/// The SP peer with more arguments (`--key`, `--cert`: it signs its requests).
pub(crate) fn saml_sp_with(args: &[&str]) -> Sp {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/saml_sp.py");
    let mut child = std::process::Command::new(python())
        .arg(script)
        .args(["--port", "0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        // pysaml2 prints each refusal; the JSON answer says why.
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python with pysaml2 (scripts/test.sh installs tests/peers/requirements.txt)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the SP said {line:?}"))
        .to_owned();
    Sp {
        child,
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl Sp {
    pub(crate) fn entity_id(&self) -> String {
        format!("{}/metadata", self.base)
    }

    /// The SP reads the broker's metadata now, without sending a request (for an unsolicited
    /// Response).
    pub(crate) async fn setup(&self, app: &TestApp) {
        let res = self
            .http
            .get(format!(
                "{}/setup?idp={}/saml/idp/metadata",
                self.base, app.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
    }

    pub(crate) fn acs(&self) -> String {
        format!("{}/acs", self.base)
    }

    /// The SP's answer to `GET {base}{path}` that sends the browser on with the Redirect
    /// binding: where to (a URL at the broker), and the ID of the request it carries.
    pub(crate) async fn redirected(&self, path: &str) -> (url::Url, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (Some(id), Some(location)) = (header("x-request-id"), header("location")) else {
            panic!("the SP did not redirect: {}", res.text().await.unwrap());
        };
        (url::Url::parse(&location).unwrap(), id)
    }

    /// The SP's answer to `GET {base}{path}` that sends the browser on with the POST binding:
    /// the form's action, its fields, and the ID of the request it carries.
    pub(crate) async fn posting(&self, path: &str) -> (url::Url, Vec<(String, String)>, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let form: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        let action = url::Url::parse(form["action"].as_str().unwrap()).unwrap();
        let fields = ["SAMLRequest", "RelayState"]
            .iter()
            .map(|k| ((*k).to_owned(), form[*k].as_str().unwrap().to_owned()))
            .collect();
        (action, fields, id)
    }

    /// The SP's AuthnRequest: the path and query it sends the browser to at the broker, and
    /// the request's ID.
    pub(crate) async fn login(&self, app: &TestApp, extra: &str) -> (String, String) {
        let (url, id) = self
            .redirected(&format!("/login?idp={}/saml/idp/metadata{extra}", app.base))
            .await;
        assert_eq!(url.path(), "/saml/idp/sso", "{url}");
        (format!("/saml/idp/sso?{}", url.query().unwrap()), id)
    }

    /// The SP's AuthnRequest over HTTP-POST: the path at the broker, the form's fields, and the
    /// request's ID.
    pub(crate) async fn login_post(
        &self,
        app: &TestApp,
    ) -> (String, Vec<(String, String)>, String) {
        let (action, fields, id) = self
            .posting(&format!(
                "/login?idp={}/saml/idp/metadata&binding=post",
                app.base
            ))
            .await;
        assert_eq!(action.path(), "/saml/idp/sso");
        (action.path().to_owned(), fields, id)
    }

    /// Posts the auto-submitting form of `page` to the SP's ACS, as the browser would: the SP's
    /// verdict (200 and what it read, or 400 and why).
    pub(crate) async fn post(&self, fields: &[(String, String)]) -> (u16, Value) {
        let res = self
            .http
            .post(self.acs())
            .form(fields)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// The fields of the page's auto-posted form to the SP's ACS (and that it is one).
pub(crate) fn answer_form(sp: &Sp, page: &Page) -> Vec<(String, String)> {
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.has_form(&sp.acs()),
        "no form to the ACS: {}",
        page.body
    );
    let fields = page.form_fields(&sp.acs());
    assert!(
        fields.iter().any(|(k, _)| k == "SAMLResponse"),
        "{fields:?}"
    );
    fields
}

/// The demo user signs in with the password at the broker page `path` (the SP's AuthnRequest)
/// in `br`, and the Response is posted to `sp`, which must accept it: what it read.
pub(crate) async fn password_sign_in(br: &mut Browser, sp: &Sp, path: &str) -> Value {
    let page = br.get(path).await;
    let page = br
        .submit(
            &page,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (_, page) = br.follow(page).await;
    let (status, got) = sp.post(&answer_form(sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    got
}

/// The broker refused the SP's request with an error Response to its ACS: `Requester` and the
/// second-level `second` (its last URN segment), no assertion; and the SP refuses it too. The
/// decoded Response.
pub(crate) async fn refused_with(sp: &Sp, page: &Page, second: &str) -> String {
    let fields = answer_form(sp, page);
    let response = &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
    let xml = String::from_utf8(STANDARD.decode(response).unwrap()).unwrap();
    assert!(
        xml.contains("urn:oasis:names:tc:SAML:2.0:status:Requester")
            && xml.contains(&format!("urn:oasis:names:tc:SAML:2.0:status:{second}"))
            && !xml.contains("Assertion"),
        "{xml}"
    );
    let (status, got) = sp.post(&fields).await;
    assert_eq!(status, 400, "the SP takes no refusal as a sign-in: {got}");
    xml
}

pub(crate) fn refs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A broker with the SP registered, its clock at the wall clock (the SP checks times against
/// its own).
async fn broker(b: Backend, sp: &Sp) -> Option<TestApp> {
    broker_with(b, sp, "", "").await
}

/// Same, with more keys for the SP's table (`app`) and more configuration after it (`more`).
pub(crate) async fn broker_with(b: Backend, sp: &Sp, app: &str, more: &str) -> Option<TestApp> {
    let toml = format!(
        "[[saml_apps]]\nentity_id = \"{}\"\nname = \"pysaml2 SP\"\nacs_urls = [\"{}\"]\n{app}\n{more}",
        sp.entity_id(),
        sp.acs()
    );
    let app = spawn_provider_with(b, &[], &toml).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    app.clock.set(i64::try_from(now.as_secs()).unwrap());
    Some(app)
}

async fn sp_initiated_sign_in_and_single_sign_on(b: Backend) {
    let sp = saml_sp();
    let Some(app) = broker_with(b, &sp, "", crate::control::OPS_CLIENTS).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, request_id) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    let page = br
        .submit(
            &page,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (_, page) = br.follow(page).await;
    let fields = answer_form(&sp, &page);

    // The SP really checks the signature: the same Response with another email is refused.
    let response = &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
    let xml = String::from_utf8(STANDARD.decode(response).unwrap()).unwrap();
    assert!(xml.contains(DEMO_EMAIL), "{xml}");
    let forged: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| match k.as_str() {
            "SAMLResponse" => (
                k.clone(),
                STANDARD.encode(xml.replace(DEMO_EMAIL, "mallory@example.com")),
            ),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let (status, why) = sp.post(&forged).await;
    assert_eq!(status, 400, "a forged Response was accepted: {why}");

    let (status, got) = sp.post(&fields).await;
    assert_eq!(status, 200, "the SP refused the Response: {got}");
    assert_eq!(got["name_id"], DEMO_EMAIL, "{got}");
    assert_eq!(
        got["name_id_format"],
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    );
    assert_eq!(got["in_response_to"], request_id.as_str());
    assert_eq!(got["relay_state"], "rs-1");
    assert_eq!(got["ava"]["email"][0], DEMO_EMAIL, "{got}");
    assert_eq!(
        got["class_ref"],
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
    );
    let sid = got["session_index"].as_str().unwrap().to_owned();
    assert!(!sid.is_empty());
    // Audited as a token issued to the SP, for this session.
    let party = format!("saml:{}", sp.entity_id());
    let mut audited = false;
    for _ in 0..30 {
        let events = crate::control::audit_events(&app, "token_issued").await;
        audited = events.iter().any(|e| {
            e["client_id"] == party.as_str()
                && e["reason"] == "saml_response"
                && e["sid"] == sid.as_str()
        });
        if audited {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(audited, "no token_issued event for {party}");

    // Single sign-on: the next request of the SP is answered at once, from the same session.
    let (path, second_id) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    assert!(!page.body.contains("name=\"password\""), "{}", page.body);
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["in_response_to"], second_id.as_str());
    assert_eq!(got["name_id"], DEMO_EMAIL);
    assert_eq!(got["session_index"], sid.as_str());

    // ForceAuthn: the password again, whatever the session; then the Response.
    let (path, third_id) = sp.login(&app, "&force=1").await;
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
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["in_response_to"], third_id.as_str());
}

async fn an_unknown_sp_or_acs_gets_a_page(b: Backend) {
    let sp = saml_sp();
    let Some(app) = broker(b, &sp).await else {
        return;
    };
    let request = |issuer: &str, acs: &str| {
        let xml = format!(
            concat!(
                r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
                r#"ID="_unknown1" Version="2.0" IssueInstant="2026-12-07T00:00:00Z" AssertionConsumerServiceURL="{acs}">"#,
                r#"<saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"#
            ),
            issuer = issuer,
            acs = acs
        );
        let q = concierge::upstream::saml::crypto::redirect_query(
            "SAMLRequest",
            &xml,
            Some("rs"),
            None,
        )
        .unwrap();
        format!("/saml/idp/sso?{q}")
    };
    let mut br = Browser::new(&app);
    // Sign in first: a session changes nothing for a party the broker does not know.
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert!(br.session_cookie().is_some(), "{}", page.body);
    for path in [
        request("https://unknown.example/sp", "https://unknown.example/acs"),
        request(&sp.entity_id(), "https://evil.example/acs"),
    ] {
        let page = br.get(&path).await;
        assert_error_page(&page, 400);
        assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
        assert!(page.location.is_none());
    }
    // Over HTTP-POST, with or without the session cookie: a page, not even a redirect.
    let unknown = STANDARD.encode(format!(
        concat!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
            r#"ID="_unknown2" Version="2.0" IssueInstant="2026-12-07T00:00:00Z">"#,
            r#"<saml:Issuer>{}</saml:Issuer></samlp:AuthnRequest>"#
        ),
        "https://unknown.example/sp"
    ));
    for mut who in [Browser::new(&app), br] {
        let page = who
            .post_form("/saml/idp/sso", &[("SAMLRequest", unknown.as_str())])
            .await;
        assert_error_page(&page, 400);
        assert!(page.location.is_none());
    }
    let mut br = Browser::new(&app);
    // Nor is a broken request answered.
    let page = br.get("/saml/idp/sso?SAMLRequest=not-deflate").await;
    assert_error_page(&page, 400);
}

/// SAML Profiles 4.1.3.5: a request of a registered SP to a registered ACS that the broker
/// refuses is answered there with an error Response, never an assertion: another Destination,
/// a binding other than HTTP-POST for the Response, an IssueInstant an hour old, an over-long
/// RelayState (over 1024 bytes: not sent back). Each from a signed-in browser, so a sign-in would have been
/// possible; pysaml2 refuses each Response too.
async fn refusals_of_a_known_sps_request_are_error_responses(b: Backend) {
    let sp = saml_sp();
    let Some(app) = broker(b, &sp).await else {
        return;
    };
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp(
        concierge::clock::Clock::now(app.clock.as_ref()),
        0,
    )
    .unwrap();
    let request = |id: &str, attrs: &str, issued: chrono::DateTime<chrono::Utc>, relay: &str| {
        let xml = format!(
            concat!(
                r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
                r#"ID="{id}" Version="2.0" IssueInstant="{at}" {attrs}>"#,
                r#"<saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"#
            ),
            id = id,
            at = issued.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            attrs = attrs,
            issuer = sp.entity_id(),
        );
        let q = concierge::upstream::saml::crypto::redirect_query(
            "SAMLRequest",
            &xml,
            Some(relay),
            None,
        )
        .unwrap();
        format!("/saml/idp/sso?{q}")
    };
    let mut br = Browser::new(&app);
    br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert!(br.session_cookie().is_some());
    let long = "r".repeat(1025);
    for (what, path, second, relay) in [
        (
            "another Destination",
            request(
                "_r1",
                r#"Destination="https://other-idp.example/sso""#,
                now,
                "rs",
            ),
            "RequestDenied",
            Some("rs"),
        ),
        (
            "the artifact binding",
            request(
                "_r2",
                r#"ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact""#,
                now,
                "rs",
            ),
            "UnsupportedBinding",
            Some("rs"),
        ),
        (
            "an hour old",
            request("_r3", "", now - chrono::Duration::hours(1), "rs"),
            "RequestDenied",
            Some("rs"),
        ),
        (
            "a RelayState over 1024 bytes",
            request("_r4", "", now, &long),
            "RequestDenied",
            None,
        ),
    ] {
        let page = br.get(&path).await;
        let xml = refused_with(&sp, &page, second).await;
        assert!(
            xml.contains("InResponseTo=\"_r") && !xml.contains("<saml:Subject"),
            "{what}: {xml}"
        );
        let fields = answer_form(&sp, &page);
        let relay_back = fields
            .iter()
            .find(|(k, _)| k == "RelayState")
            .map(|(_, v)| v.as_str());
        assert_eq!(relay_back, relay, "{what}");
    }
}

async fn is_passive_without_a_session_is_no_passive(b: Backend) {
    let sp = saml_sp();
    let Some(app) = broker(b, &sp).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, _) = sp.login(&app, "&passive=1").await;
    let page = br.get(&path).await;
    assert!(!page.body.contains("name=\"password\""), "{}", page.body);
    let fields = answer_form(&sp, &page);
    let response = &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
    let xml = String::from_utf8(STANDARD.decode(response).unwrap()).unwrap();
    assert!(
        xml.contains("urn:oasis:names:tc:SAML:2.0:status:NoPassive") && !xml.contains("Assertion"),
        "{xml}"
    );
    let (status, got) = sp.post(&fields).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(got["error"], "StatusNoPassive", "{got}");
}

async fn the_http_post_binding_signs_in_and_single_signs_on(b: Backend) {
    let sp = saml_sp();
    let Some(app) = broker(b, &sp).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, fields, id) = sp.login_post(&app).await;
    // Without the session cookie (SameSite=Lax: a cross-site POST does not carry it) the
    // request comes back as the same request over HTTP-Redirect, a GET that carries it.
    let page = br.post_form(&path, &refs(&fields)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let location = url::Url::parse(page.location.as_deref().unwrap()).unwrap();
    assert_eq!(location.path(), "/saml/idp/sso");
    let page = br
        .get(&format!("/saml/idp/sso?{}", location.query().unwrap()))
        .await;
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    let page = br
        .submit(
            &page,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (_, page) = br.follow(page).await;
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["in_response_to"], id.as_str());
    assert_eq!(got["relay_state"], "rs-1");
    assert_eq!(got["name_id"], DEMO_EMAIL);

    // With the session cookie, a POST is answered at once.
    let (path, fields, id) = sp.login_post(&app).await;
    let page = br.post_form(&path, &refs(&fields)).await;
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["in_response_to"], id.as_str());
}

async fn persistent_name_ids_are_opaque_and_stable(b: Backend) {
    const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
    let sp = saml_sp();
    let Some(app) = broker_with(b, &sp, "name_id_format = \"persistent\"", "").await else {
        return;
    };
    let mut br = Browser::new(&app);
    let asks = format!("&nameid={PERSISTENT}");
    let (path, _) = sp.login(&app, &asks).await;
    let got = password_sign_in(&mut br, &sp, &path).await;
    assert_eq!(got["name_id_format"], PERSISTENT);
    let name_id = got["name_id"].as_str().unwrap().to_owned();
    assert_eq!(name_id.len(), 43, "{name_id}");
    assert!(
        !name_id.contains('@') && !name_id.contains("demo"),
        "{name_id}"
    );
    // The email is still an attribute; the NameID is the same at the next sign-in.
    assert_eq!(got["ava"]["email"][0], DEMO_EMAIL, "{got}");
    let (path, _) = sp.login(&app, &asks).await;
    let page = br.get(&path).await;
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name_id"], name_id.as_str());

    // Asking for the email format, which this SP does not get: InvalidNameIDPolicy.
    let (path, _) = sp
        .login(
            &app,
            "&nameid=urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        )
        .await;
    let page = br.get(&path).await;
    let fields = answer_form(&sp, &page);
    let response = &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
    let xml = String::from_utf8(STANDARD.decode(response).unwrap()).unwrap();
    assert!(
        xml.contains("urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy")
            && !xml.contains("Assertion"),
        "{xml}"
    );
    let (status, got) = sp.post(&fields).await;
    assert_eq!(status, 400, "{got}");
}

async fn a_requested_mfa_context_steps_the_session_up(b: Backend) {
    use concierge::clock::Clock;
    let sp = saml_sp();
    let more = mfa_config("optional", &totp_manifest(), "");
    let Some(app) = broker_with(b, &sp, "", &more).await else {
        return;
    };
    let mut br = Browser::new(&app);
    // A password is enough for this SP (the demo user has no factor yet).
    let (path, _) = sp.login(&app, "").await;
    let got = password_sign_in(&mut br, &sp, &path).await;
    assert_eq!(
        got["class_ref"],
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
    );
    let sid = got["session_index"].as_str().unwrap().to_owned();

    // The SP asks for MFA: not answered from the session, which is stepped up first (here by
    // setting up a factor), then answered with the MFA class, in the same session.
    let (path, id) = sp.login(&app, "&mfa=1").await;
    let page = br.get(&path).await;
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
    assert!(page.has_form("/login/mfa/choose"), "{}", page.body);
    let page = br
        .submit(
            &page,
            "/login/mfa/choose",
            &[("factor", "totp"), ("action", "enroll")],
        )
        .await;
    let secret = text_of(&page, "mfa-secret");
    let page = br
        .submit(
            &page,
            "/login/mfa/answer",
            &[("code", &oathtool(&secret, app.clock.now()))],
        )
        .await;
    let page = if page.has_form("/login/mfa/continue") {
        br.submit(&page, "/login/mfa/continue", &[]).await
    } else {
        page
    };
    let (_, page) = br.follow(page).await;
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["in_response_to"], id.as_str());
    assert_eq!(got["class_ref"], "https://refeds.org/profile/mfa");
    assert_eq!(got["session_index"], sid.as_str());
}

/// The broker's IdP metadata.
pub(crate) async fn idp_metadata(app: &TestApp) -> String {
    reqwest::get(format!("{}/saml/idp/metadata", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A pysaml2 SP that signs its requests: its key and certificate written in `dir`; the SP and
/// the certificate's path (for the broker's `signing_cert_file`).
pub(crate) fn signing_sp(dir: &std::path::Path) -> (Sp, std::path::PathBuf) {
    let pair = crate::upstream_saml::key_pair("pysaml2 SP");
    let (key, cert) = (dir.join("sp.key"), dir.join("sp.crt"));
    std::fs::write(&key, pair.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    let sp = saml_sp_with(&[
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ]);
    (sp, cert)
}

/// `saml_idp_want_authn_requests_signed = true`: the metadata says `WantAuthnRequestsSigned`,
/// and an SP with its certificate signs in (pysaml2 reads that metadata and signs).
async fn an_idp_that_wants_signed_requests_says_so_in_its_metadata(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let toml = format!(
        "[[saml_apps]]\nentity_id = \"{}\"\nacs_urls = [\"{}\"]\nsigning_cert_file = {cert:?}\n",
        sp.entity_id(),
        sp.acs()
    );
    let want = [("CONCIERGE__SAML_IDP_WANT_AUTHN_REQUESTS_SIGNED", "true")];
    let Some(app) = spawn_provider_with(b, &want, &toml).await else {
        return;
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    app.clock.set(i64::try_from(now.as_secs()).unwrap());
    let md = idp_metadata(&app).await;
    assert!(md.contains(r#"WantAuthnRequestsSigned="true""#), "{md}");
    let mut br = Browser::new(&app);
    let (path, id) = sp.login(&app, "").await;
    assert!(path.contains("&Signature="), "pysaml2 signs: {path}");
    let got = password_sign_in(&mut br, &sp, &path).await;
    assert_eq!(got["in_response_to"], id.as_str());
}

async fn an_sp_with_a_certificate_must_sign_its_requests(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let Some(app) = broker_with(b, &sp, &format!("signing_cert_file = {cert:?}"), "").await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, id) = sp.login(&app, "").await;
    assert!(path.contains("&Signature="), "{path}");
    // Without its signature, or with another RelayState than it signed: a page.
    let unsigned: Vec<&str> = path
        .split('&')
        .filter(|p| !p.starts_with("SigAlg=") && !p.starts_with("Signature="))
        .collect();
    let tampered = path.replace("RelayState=rs-1", "RelayState=rs-2");
    assert_ne!(tampered, path);
    for p in [unsigned.join("&"), tampered] {
        let page = br.get(&p).await;
        assert_error_page(&page, 400);
        assert!(!page.body.contains("name=\"password\""), "{}", page.body);
    }
    // As signed: the sign-in, and the Response.
    let got = password_sign_in(&mut br, &sp, &path).await;
    assert_eq!(got["in_response_to"], id.as_str());

    // Over HTTP-POST (an enveloped signature): from a browser without the session cookie it
    // comes back as HTTP-Redirect, its signature still checked; with it, it is answered.
    let (path, fields, _) = sp.login_post(&app).await;
    let xml = String::from_utf8(STANDARD.decode(&fields[0].1).unwrap()).unwrap();
    assert!(xml.contains("SignatureValue"), "{xml}");
    let mut fresh = Browser::new(&app);
    let page = fresh.post_form(&path, &refs(&fields)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let location = url::Url::parse(page.location.as_deref().unwrap()).unwrap();
    let page = fresh
        .get(&format!("/saml/idp/sso?{}", location.query().unwrap()))
        .await;
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    // That request's ID is used (its sign-in began): the same request again is a replay,
    // answered at the SP's ACS with an error Response.
    let page = br.post_form(&path, &refs(&fields)).await;
    refused_with(&sp, &page, "RequestDenied").await;
    let (path, fields, _) = sp.login_post(&app).await;
    let xml = String::from_utf8(STANDARD.decode(&fields[0].1).unwrap()).unwrap();
    let page = br.post_form(&path, &refs(&fields)).await;
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    // The same document with a changed ACS no longer verifies.
    let forged = STANDARD.encode(xml.replace("/acs", "/acs2"));
    let page = br
        .post_form(
            &path,
            &[("SAMLRequest", forged.as_str()), ("RelayState", "rs-1")],
        )
        .await;
    assert_error_page(&page, 400);
}

/// `sign = "response"` and `sign = "assertion"`, each to an SP that requires exactly that
/// signed (and not the other, which it would otherwise also check).
async fn what_is_signed_follows_the_sp_registration(b: Backend) {
    for (sign, in_the_assertion) in [("response", false), ("assertion", true)] {
        let sp = saml_sp_with(&["--signed", sign]);
        let Some(app) = broker_with(b, &sp, &format!("sign = \"{sign}\""), "").await else {
            return;
        };
        let mut br = Browser::new(&app);
        let (path, id) = sp.login(&app, "").await;
        let page = br.get(&path).await;
        let page = br
            .submit(
                &page,
                "/login",
                &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
            )
            .await;
        let (_, page) = br.follow(page).await;
        let fields = answer_form(&sp, &page);
        let response = &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
        let xml = String::from_utf8(STANDARD.decode(response).unwrap()).unwrap();
        // One signature, in the element named.
        assert_eq!(xml.matches("<ds:SignatureValue>").count(), 1, "{xml}");
        let assertion_at = xml.find("<saml:Assertion").unwrap();
        let signature_at = xml.find("<ds:Signature").unwrap();
        assert_eq!(
            signature_at > assertion_at,
            in_the_assertion,
            "{sign}: {xml}"
        );
        let (status, got) = sp.post(&fields).await;
        assert_eq!(status, 200, "{sign}: {got}");
        assert_eq!(got["in_response_to"], id.as_str());
    }
}

per_backend_async!(
    sp_initiated_sign_in_and_single_sign_on,
    what_is_signed_follows_the_sp_registration,
    an_sp_with_a_certificate_must_sign_its_requests,
    an_idp_that_wants_signed_requests_says_so_in_its_metadata,
    a_requested_mfa_context_steps_the_session_up,
    the_http_post_binding_signs_in_and_single_signs_on,
    persistent_name_ids_are_opaque_and_stable,
    an_unknown_sp_or_acs_gets_a_page,
    refusals_of_a_known_sps_request_are_error_responses,
    is_passive_without_a_session_is_no_passive,
);
