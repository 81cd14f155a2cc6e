//! SP-initiated SAML Single Logout at the broker's IdP, against the real pysaml2 SP
//! (tests/peers/saml_sp.py: it makes the LogoutRequest with pysaml2 and reads the broker's
//! LogoutResponse with pysaml2, its query signature checked against the broker's metadata): the
//! LogoutRequest (HTTP-Redirect and HTTP-POST, signed and not) ends the broker session, the
//! OpenID app of the same session is told by back-channel logout and its refresh token no longer
//! works; hostile requests (unknown issuer, unsigned or tampered when a signature is required,
//! a replayed ID, another Destination, a DTD, a deflate bomb, an oversized query, another user's
//! NameID) each get a page and end nothing. Also a replayed AuthnRequest ID.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::upstream::saml::crypto::{deflate_b64, redirect_query};

use crate::helpers::{Browser, SECRET, TestApp, assert_error_page};
use crate::logout::{receiver, tokens_for_client, wait_for};
use crate::per_backend_async;
use crate::saml_idp::{
    Sp, answer_form, broker_with, idp_metadata, password_sign_in, refs, refused_with, saml_sp,
    signing_sp,
};
use crate::support::Backend;

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

impl Sp {
    pub(crate) fn sls(&self) -> String {
        format!("{}/sls", self.base)
    }

    /// The SP's LogoutRequest over HTTP-Redirect (`extra`: more query parameters of the peer's
    /// `/logout`): the path and query at the broker, and the request's ID.
    pub(crate) async fn logout(&self, name_id: &str, extra: &str) -> (String, String) {
        let (url, id) = self
            .redirected(&format!("/logout?name_id={}{extra}", urlencoding(name_id)))
            .await;
        (format!("{}?{}", url.path(), url.query().unwrap()), id)
    }

    /// The SP's LogoutRequest over HTTP-POST: the form's fields, and the request's ID.
    async fn logout_post(&self, name_id: &str, extra: &str) -> (Vec<(String, String)>, String) {
        let (action, fields, id) = self
            .posting(&format!(
                "/logout?name_id={}&binding=post{extra}",
                urlencoding(name_id)
            ))
            .await;
        assert!(action.path().ends_with("/saml/idp/slo"), "{action}");
        (fields, id)
    }

    /// The SP's reading of the broker's answer (a redirect to its `/sls`): 200 and what it
    /// read, or 400 and why.
    pub(crate) async fn logged_out(&self, location: &str) -> (u16, Value) {
        assert!(location.starts_with(&self.sls()), "{location}");
        let res = self.http.get(location).send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// The single logout endpoint in the IdP's metadata (the broker's public URL).
fn slo_of(md: &str) -> url::Url {
    let at = md.find("SingleLogoutService").unwrap();
    let loc = &md[at..];
    let start = loc.find("Location=\"").unwrap() + "Location=\"".len();
    let end = start + loc[start..].find('"').unwrap();
    url::Url::parse(&loc[start..end]).unwrap()
}

pub(crate) fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A broker with the SP registered (its SingleLogoutService too, and `app` keys more) and an
/// OpenID client `bcl` with back-channel logout to `backchannel`.
async fn broker(b: Backend, sp: &Sp, app: &str, backchannel: &str) -> Option<TestApp> {
    let app_keys = format!("slo_url = \"{}\"\n{app}", sp.sls());
    let clients = format!(
        "[[clients]]\nid = \"bcl\"\nsecret_sha256 = \"SECRET_HASH\"\nredirect_uris = [\"https://bcl.example/cb\"]\n\
         backchannel_logout_uri = \"{backchannel}\"\n{}",
        crate::control::OPS_CLIENTS
    );
    broker_with(b, sp, &app_keys, &clients).await
}

/// Signs in through the SP: the session index (the broker's `sid`) the SP got.
async fn sign_in(app: &TestApp, sp: &Sp, br: &mut Browser) -> String {
    let (path, _) = sp.login(app, "").await;
    let got = password_sign_in(br, sp, &path).await;
    got["session_index"].as_str().unwrap().to_owned()
}

/// The refresh grant of `bcl` with `refresh`: its status.
async fn refresh(app: &TestApp, refresh: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/token", app.base))
        .basic_auth("bcl", Some(SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A hand-made LogoutRequest over HTTP-Redirect (unsigned).
fn handmade(issuer: &str, destination: &str, id: &str, before: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let xml = format!(
        concat!(
            r#"{before}<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
            r#"ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{dest}"><saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<saml:NameID>{email}</saml:NameID></samlp:LogoutRequest>"#
        ),
        before = before,
        id = id,
        now = now,
        dest = destination,
        issuer = issuer,
        email = DEMO_EMAIL,
    );
    let q = redirect_query("SAMLRequest", &xml, Some("rs"), None).unwrap();
    format!("/saml/idp/slo?{q}")
}

/// The request was refused with a page, and the browser's session goes on.
async fn refused(br: &mut Browser, page: crate::helpers::Page, what: &str) {
    assert_eq!(page.status, 400, "{what}: {}", page.body);
    assert_error_page(&page, 400);
    assert!(page.location.is_none(), "{what}");
    assert_eq!(
        br.get("/account").await.status,
        200,
        "{what}: a session ended"
    );
}

/// An SP that cannot sign (no `signing_cert_file`) cannot log anyone out: SAML Profiles 4.4.4.1
/// requires a signed LogoutRequest, and an unsigned one over HTTP-Redirect is a GET any site can
/// send a browser to. Even naming the right user and session, it is refused and ends nothing.
async fn an_unsigned_logout_request_ends_nothing(b: Backend) {
    let (url, got) = receiver().await;
    let sp = saml_sp();
    let Some(app) = broker(b, &sp, "", &url).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let sid = sign_in(&app, &sp, &mut br).await;
    let (path, _) = sp
        .logout(DEMO_EMAIL, &format!("&session_index={sid}"))
        .await;
    let page = br.get(&path).await;
    refused(&mut br, page, "an unsigned LogoutRequest").await;
    let (fields, _) = sp
        .logout_post(DEMO_EMAIL, &format!("&session_index={sid}"))
        .await;
    let page = br.post_form("/saml/idp/slo", &refs(&fields)).await;
    refused(&mut br, page, "an unsigned LogoutRequest over POST").await;
    assert!(got.lock().unwrap().is_empty(), "no back-channel logout");
}

async fn sp_initiated_logout_ends_the_session_everywhere(b: Backend) {
    let (url, got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let Some(app) = broker(b, &sp, &format!("signing_cert_file = {cert:?}"), &url).await else {
        return;
    };
    // The metadata names the endpoint, for both bindings.
    let md = idp_metadata(&app).await;
    assert_eq!(md.matches("SingleLogoutService").count(), 2, "{md}");
    assert_eq!(slo_of(&md).path(), "/saml/idp/slo", "{md}");

    let mut br = Browser::new(&app);
    let sid = sign_in(&app, &sp, &mut br).await;
    let tokens = tokens_for_client(&app, &mut br, "bcl").await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Another user's NameID, or another session's index: nothing of this browser's ends.
    let (path, id) = sp.logout("mallory@example.com", "").await;
    let page = br.get(&path).await;
    assert_eq!(page.status, 303, "{}", page.body);
    // The SP reads it (its signature checked first) as a refusal: UnknownPrincipal.
    let location = page.location.as_deref().unwrap();
    let (status, answer) = sp.logged_out(location).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "StatusUnknownPrincipal", "{answer}");
    let q = url::Url::parse(location).unwrap();
    let xml = concierge::upstream::saml::crypto::inflate_b64(
        &q.query_pairs()
            .find(|(k, _)| k == "SAMLResponse")
            .unwrap()
            .1,
    )
    .unwrap();
    assert!(xml.contains(&format!("InResponseTo=\"{id}\"")), "{xml}");
    assert_eq!(br.get("/account").await.status, 200);
    let (path, _) = sp.logout(DEMO_EMAIL, "&session_index=another-sid").await;
    let page = br.get(&path).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(br.get("/account").await.status, 200);

    // The SP's LogoutRequest for this user and session.
    let (path, id) = sp
        .logout(DEMO_EMAIL, &format!("&session_index={sid}"))
        .await;
    let page = br.get(&path).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (status, answer) = sp.logged_out(page.location.as_deref().unwrap()).await;
    assert_eq!(status, 200, "the SP refused the LogoutResponse: {answer}");
    assert_eq!(answer["in_response_to"], id.as_str());
    assert_eq!(answer["status"], SUCCESS, "{answer}");
    assert_eq!(answer["sub_status"], Value::Null, "{answer}");
    assert_eq!(answer["relay_state"], "rs-lo");
    assert_eq!(answer["signature_ok"], true);
    // The session is over here, and for the OpenID app of the same session.
    assert!(br.session_cookie().is_none());
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
    assert_eq!(refresh(&app, &refresh_token).await, 400);
    assert!(wait_for(&got, 1).await, "no back-channel logout");
    assert!(got.lock().unwrap()[0].contains("logout_token"));

    // The same request again: a replay, refused.
    let mut again = Browser::new(&app);
    let page = again.get(&path).await;
    assert_error_page(&page, 400);
    assert!(page.location.is_none());
}

async fn the_http_post_binding_and_a_signing_sp(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let (url, got) = receiver().await;
    let Some(app) = broker(b, &sp, &format!("signing_cert_file = {cert:?}"), &url).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let sid = sign_in(&app, &sp, &mut br).await;
    let with_sid = format!("&session_index={sid}");
    let tokens = tokens_for_client(&app, &mut br, "bcl").await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Refused, each with a page, ending nothing:
    let (signed, _) = sp.logout(DEMO_EMAIL, &with_sid).await;
    assert!(signed.contains("&Signature="), "{signed}");
    // unsigned (the SP must sign), or with another RelayState than it signed;
    let unsigned: Vec<&str> = signed
        .split('&')
        .filter(|p| !p.starts_with("SigAlg=") && !p.starts_with("Signature="))
        .collect();
    let page = br.get(&unsigned.join("&")).await;
    refused(&mut br, page, "unsigned").await;
    let page = br
        .get(&signed.replace("RelayState=rs-lo", "RelayState=rs-2"))
        .await;
    refused(&mut br, page, "tampered").await;
    // the SP's own request, signed, for another Destination;
    let (elsewhere, _) = sp
        .logout(
            DEMO_EMAIL,
            &format!(
                "{with_sid}&destination={}",
                urlencoding("https://elsewhere.example/slo")
            ),
        )
        .await;
    let q = elsewhere.split_once('?').unwrap().1;
    let page = br.get(&format!("/saml/idp/slo?{q}")).await;
    refused(&mut br, page, "destination").await;
    // an unknown issuer; a DTD; a deflate bomb; an oversized query; not a LogoutRequest.
    let md = idp_metadata(&app).await;
    let slo = slo_of(&md).to_string();
    let page = br
        .get(&handmade("https://unknown.example/sp", &slo, "_u1", ""))
        .await;
    refused(&mut br, page, "unknown issuer").await;
    let dtd = r#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>"#;
    let page = br.get(&handmade(&sp.entity_id(), &slo, "_d1", dtd)).await;
    refused(&mut br, page, "dtd").await;
    let bomb = deflate_b64(&" ".repeat(4 * 1024 * 1024)).unwrap();
    let page = br
        .get(&format!("/saml/idp/slo?SAMLRequest={}", urlencoding(&bomb)))
        .await;
    refused(&mut br, page, "deflate bomb").await;
    let big = "A".repeat(400 * 1024);
    let page = br
        .post_form("/saml/idp/slo", &[("SAMLRequest", big.as_str())])
        .await;
    refused(&mut br, page, "oversized").await;
    let page = br.get("/saml/idp/slo?SAMLRequest=not-deflate").await;
    refused(&mut br, page, "malformed").await;
    assert!(got.lock().unwrap().is_empty());

    // Over HTTP-POST (an enveloped signature): a browser without the session cookie gets the
    // same request back as HTTP-Redirect; with it, the session ends.
    let (fields, id) = sp.logout_post(DEMO_EMAIL, &with_sid).await;
    let xml = String::from_utf8(STANDARD.decode(&fields[0].1).unwrap()).unwrap();
    assert!(xml.contains("SignatureValue"), "{xml}");
    // A forged document (another NameID) no longer verifies.
    let forged = STANDARD.encode(xml.replace(DEMO_EMAIL, "other@example.com"));
    let page = br
        .post_form(
            "/saml/idp/slo",
            &[("SAMLRequest", forged.as_str()), ("RelayState", "rs-lo")],
        )
        .await;
    refused(&mut br, page, "forged post").await;
    let mut fresh = Browser::new(&app);
    let page = fresh.post_form("/saml/idp/slo", &refs(&fields)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let location = url::Url::parse(page.location.as_deref().unwrap()).unwrap();
    assert_eq!(location.path(), "/saml/idp/slo");
    assert_eq!(br.get("/account").await.status, 200);
    let page = br.post_form("/saml/idp/slo", &refs(&fields)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (status, answer) = sp.logged_out(page.location.as_deref().unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["in_response_to"], id.as_str());
    assert_eq!(answer["status"], SUCCESS, "{answer}");
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
    assert_eq!(refresh(&app, &refresh_token).await, 400);
    assert!(wait_for(&got, 1).await, "no back-channel logout");
    // Replayed (sent back as HTTP-Redirect, the browser has no session now): refused.
    let page = br.post_form("/saml/idp/slo", &refs(&fields)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let location = url::Url::parse(page.location.as_deref().unwrap()).unwrap();
    let page = br
        .get(&format!("/saml/idp/slo?{}", location.query().unwrap()))
        .await;
    assert_error_page(&page, 400);
}

async fn a_replayed_authn_request_is_refused(b: Backend) {
    let sp = saml_sp();
    let Some(app) = broker_with(b, &sp, "", "").await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, id) = sp.login(&app, "").await;
    let got = password_sign_in(&mut br, &sp, &path).await;
    assert_eq!(got["in_response_to"], id.as_str());
    // The same AuthnRequest again, from the signed-in browser or another: no sign-in page and
    // no assertion, an error Response (RequestDenied) to the SP's ACS.
    for mut who in [Browser::new(&app), br] {
        let page = who.get(&path).await;
        assert!(!page.body.contains("name=\"password\""), "{}", page.body);
        refused_with(&sp, &page, "RequestDenied").await;
    }
    // A new request signs in as ever.
    let mut br = Browser::new(&app);
    let (path, id) = sp.login(&app, "").await;
    let got = password_sign_in(&mut br, &sp, &path).await;
    assert_eq!(got["in_response_to"], id.as_str());
}

/// The broker's own sign-out (`POST /logout`) through the SP: its signed LogoutRequest to the
/// SP's `/sls`, answered by pysaml2, whose LogoutResponse brings the browser back to the broker;
/// where the broker then sends it.
pub(crate) async fn sign_out_through(br: &mut Browser, sp: &Sp) -> String {
    let token = br.get("/account").await.field("csrf_token");
    let out = br.post_form("/logout", &[("csrf_token", &token)]).await;
    assert!(br.session_cookie().is_none(), "cookie cleared");
    let to_sp = out.location.clone().unwrap();
    assert!(to_sp.starts_with(&format!("{}?", sp.sls())), "{to_sp}");
    assert!(
        to_sp.contains("SAMLRequest=") && to_sp.contains("&Signature="),
        "{to_sp}"
    );
    let res = sp.http.get(&to_sp).send().await.unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let body = res.text().await.unwrap();
    assert_eq!(status, 302, "the SP refused the LogoutRequest: {body}");
    let back = url::Url::parse(&location.unwrap()).unwrap();
    assert_eq!(back.path(), "/saml/idp/slo");
    assert!(back.query().unwrap().contains("SAMLResponse="));
    let page = br
        .get(&format!("{}?{}", back.path(), back.query().unwrap()))
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    page.location.unwrap()
}

async fn the_brokers_sign_out_logs_out_of_the_sp(b: Backend) {
    let (url, got) = receiver().await;
    let sp = saml_sp();
    let Some(app) = broker(b, &sp, "", &url).await else {
        return;
    };
    let mut br = Browser::new(&app);
    sign_in(&app, &sp, &mut br).await;
    let tokens = tokens_for_client(&app, &mut br, "bcl").await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();

    let end = sign_out_through(&mut br, &sp).await;
    assert_eq!(end, "/signed-out");
    let page = br.get(&end).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("partial-logout"), "{}", page.body);
    // The session is over, for the OpenID app of the same session too.
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
    assert_eq!(refresh(&app, &refresh_token).await, 400);
    assert!(wait_for(&got, 1).await, "no back-channel logout");

    // An answer of no logout under way (the same again) gets a page.
    let (path, _) = sp.logout(DEMO_EMAIL, "").await;
    let mut other = Browser::new(&app);
    let stale = path.replace("SAMLRequest", "SAMLResponse");
    assert_error_page(&other.get(&stale).await, 400);
}

/// The SPs' refused LogoutResponses on the audit trail (front or back channel).
pub(crate) async fn refused_answers(app: &TestApp) -> Vec<Value> {
    crate::control::audit_events(app, "login_failed")
        .await
        .into_iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("saml_logout_response_refused:")
        })
        .collect()
}

async fn a_bad_answer_of_a_signing_sp_is_a_partial_logout(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let (url, _got) = receiver().await;
    let Some(app) = broker(b, &sp, &format!("signing_cert_file = {cert:?}"), &url).await else {
        return;
    };
    for (mode, end) in [
        ("signed", "/signed-out"),
        ("unsigned", "/signed-out?partial=1"),
        ("badsig", "/signed-out?partial=1"),
    ] {
        sp.answer(mode).await;
        let mut br = Browser::new(&app);
        sign_in(&app, &sp, &mut br).await;
        assert_eq!(sign_out_through(&mut br, &sp).await, end, "{mode}");
        let page = br.get(end).await;
        assert_eq!(page.status, 200);
        assert_eq!(
            page.body.contains("partial-logout"),
            mode != "signed",
            "{mode}"
        );
        assert_eq!(
            br.get("/account").await.status,
            303,
            "{mode}: the session ended"
        );
    }
    // Each refused answer is on the audit trail, naming the SP and the check that failed.
    let refused = refused_answers(&app).await;
    assert_eq!(refused.len(), 2, "unsigned and badsig: {refused:?}");
    assert!(
        refused.iter().all(|e| e["client_id"] == sp.entity_id()),
        "{refused:?}"
    );
    // A LogoutResponse when no logout is under way: refused, and audited too.
    let mut br = Browser::new(&app);
    assert_error_page(
        &br.get("/saml/idp/slo?SAMLResponse=x&RelayState=nothing")
            .await,
        400,
    );
    assert!(
        crate::control::audit_events(&app, "login_failed")
            .await
            .iter()
            .any(|e| e["reason"] == "saml_logout_response_refused:no_logout_under_way")
    );
}

/// Issue #20, item 4: an SP's LogoutRequest reaches the session's other SAML SPs. The browser
/// signs in at SP A (which signs its requests) and, with the same session, at SP B; A's
/// LogoutRequest ends the session, the browser goes to B with the broker's signed LogoutRequest
/// (B's pysaml2 checks it and answers), and only then A gets its LogoutResponse: Success when B
/// confirmed, PartialLogout when B's answer was refused (a bad signature).
async fn an_sps_logout_reaches_the_sessions_other_sps(b: Backend) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, cert_a) = signing_sp(dir_a.path());
    let (spb, cert_b) = signing_sp(dir_b.path());
    let (url, _got) = receiver().await;
    let second = format!(
        "[[saml_apps]]\nentity_id = \"{}\"\nname = \"SP B\"\nacs_urls = [\"{}/acs\"]\n\
         slo_url = \"{}\"\nsigning_cert_file = {cert_b:?}\n",
        spb.entity_id(),
        spb.base,
        spb.sls()
    );
    let Some(app) = broker(
        b,
        &a,
        &format!("signing_cert_file = {cert_a:?}\n{second}"),
        &url,
    )
    .await
    else {
        return;
    };
    for (mode, sub_status) in [
        ("signed", Value::Null),
        (
            "badsig",
            Value::from("urn:oasis:names:tc:SAML:2.0:status:PartialLogout"),
        ),
    ] {
        let res = spb
            .http
            .get(format!("{}/answer?mode={mode}", spb.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
        let mut br = Browser::new(&app);
        let sid = sign_in(&app, &a, &mut br).await;
        // Single sign-on at B: no page, the Response straight away.
        let (path, _) = spb.login(&app, "").await;
        let page = br.get(&path).await;
        let (status, got) = spb.post(&answer_form(&spb, &page)).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["session_index"], sid.as_str(), "one session, two SPs");

        // A logs out: the browser goes to B first, with the broker's LogoutRequest.
        let (path, id) = a.logout(DEMO_EMAIL, &format!("&session_index={sid}")).await;
        let page = br.get(&path).await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert!(br.session_cookie().is_none(), "the session ended first");
        let to_b = page.location.unwrap();
        assert!(
            to_b.starts_with(&format!("{}?", spb.sls())) && to_b.contains("SAMLRequest="),
            "{mode}: B is told first: {to_b}"
        );
        let res = spb.http.get(&to_b).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 302, "{mode}: B refused the request");
        let back = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(back.path(), "/saml/idp/slo");
        // B's answer comes back: now A gets its LogoutResponse.
        let page = br
            .get(&format!("{}?{}", back.path(), back.query().unwrap()))
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        let (status, answer) = a.logged_out(page.location.as_deref().unwrap()).await;
        assert_eq!(
            status, 200,
            "{mode}: A refused the LogoutResponse: {answer}"
        );
        assert_eq!(answer["in_response_to"], id.as_str());
        assert_eq!(answer["status"], SUCCESS, "{mode}: {answer}");
        assert_eq!(answer["sub_status"], sub_status, "{mode}: {answer}");
        assert_eq!(answer["relay_state"], "rs-lo");
        assert_eq!(answer["signature_ok"], true);
        assert_eq!(br.get("/account").await.status, 303, "the session ended");
    }
}

/// The sign-out confirmation page may send the browser to the SingleLogoutService of the SPs
/// that took part in its session, and to no other SP's (CSP `form-action`; browsers apply it
/// to the redirects after the form).
async fn the_sign_out_page_allows_only_the_sessions_sps(b: Backend) {
    let (a, other) = (saml_sp(), saml_sp());
    let (url, _got) = receiver().await;
    let second = format!(
        "[[saml_apps]]\nentity_id = \"{}\"\nname = \"other\"\nacs_urls = [\"{}/acs\"]\n\
         slo_url = \"{}\"\n",
        other.entity_id(),
        other.base,
        other.sls()
    );
    let Some(app) = broker(b, &a, &second, &url).await else {
        return;
    };
    let form_action = |page: &crate::helpers::Page| -> String {
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        let at = csp.find("form-action").unwrap();
        csp[at..].split(';').next().unwrap().to_owned()
    };
    let confirm = "/oidc/logout?client_id=bcl";
    let mut br = Browser::new(&app);
    br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let page = br.get(confirm).await;
    assert!(
        page.body.contains("id=\"logout-confirm-form\""),
        "{}",
        page.body
    );
    let before = form_action(&page);
    assert!(
        !before.contains(&a.base) && !before.contains(&other.base),
        "no SP took part yet: {before}"
    );
    // Single sign-on at SP A from this session: A's service, still not the other's.
    let (path, _) = a.login(&app, "").await;
    let page = br.get(&path).await;
    let (status, got) = a.post(&answer_form(&a, &page)).await;
    assert_eq!(status, 200, "{got}");
    let after = form_action(&br.get(confirm).await);
    assert!(after.contains(&a.base), "{after}");
    assert!(!after.contains(&other.base), "{after}");
}

/// Issue #20: what the IdP must remember lives in the database. A `concierge serve` process
/// signs the user in to the pysaml2 SP, and is stopped and started again on the same database:
/// the SP's AuthnRequest sent again is still a replay (refused), and the broker's sign-out still
/// reaches the SP the session signed in to before the restart (its LogoutRequest, checked and
/// answered by pysaml2).
async fn request_ids_and_sp_sessions_survive_a_restart(b: Backend) {
    use crate::instances::{concierge, free_port, start_on, wait_ready};
    use std::io::Write;
    let Some(db) = crate::support::fresh_db(b) else {
        return;
    };
    let url = match &db.url {
        concierge::config::DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        concierge::config::DatabaseUrl::Postgres(url) => url.clone(),
    };
    let sp = saml_sp();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("concierge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[server]\npublic_url = \"{base}\"\n[database]\nurl = \"{url}\"\n\
             [provider]\nkey_encryption_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
             [[saml_apps]]\nentity_id = \"{sp_id}\"\nacs_urls = [\"{sp_base}/acs\"]\nslo_url = \"{sls}\"\n",
            data = dir.path().display().to_string(),
            sp_id = sp.entity_id(),
            sp_base = sp.base,
            sls = sp.sls(),
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let first = start_on(&config, &log, port);
    wait_ready(&first, &log).await;
    let mut add = concierge(&config)
        .args(["users", "add", "pat@example.com"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"restart me twice\n")
        .unwrap();
    assert!(add.wait().unwrap().success());

    // Signed in to the SP through the first process.
    let mut br = Browser::at(&base);
    let (to, _) = sp
        .redirected(&format!("/login?idp={base}/saml/idp/metadata"))
        .await;
    let sso = format!("/saml/idp/sso?{}", to.query().unwrap());
    let page = br.get(&sso).await;
    let page = br
        .submit(
            &page,
            "/login",
            &[
                ("email", "pat@example.com"),
                ("password", "restart me twice"),
            ],
        )
        .await;
    let (_, page) = br.follow(page).await;
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");

    // Stopped, and started again on the same database and port.
    drop(first);
    let second = start_on(&config, &log, port);
    wait_ready(&second, &log).await;
    assert_eq!(br.get("/account").await.status, 200, "the session lives on");
    // The same AuthnRequest again: its ID was used before the restart.
    let mut replay = Browser::at(&base);
    refused_with(&sp, &replay.get(&sso).await, "RequestDenied").await;
    // The sign-out reaches the SP the session signed in to before the restart.
    let end = sign_out_through(&mut br, &sp).await;
    assert_eq!(end, "/signed-out", "the SP confirmed");
    drop(second);
}

/// An SP's logout of a session that came from an upstream OpenID provider: the browser goes
/// through the upstream's own logout first (its end-session endpoint), and the SP's
/// LogoutResponse is where the upstream sends it back (the end of the logout chain makes it the
/// place that logout goes on to).
async fn an_sps_logout_goes_through_the_upstreams_logout_first(b: Backend) {
    use concierge::clock::Clock;
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let op = crate::upstream_oidc::start_fake_op().await;
    let (url, _got) = receiver().await;
    let app_keys = format!(
        "signing_cert_file = {cert:?}\n[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\n\
         issuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\n",
        op.issuer
    );
    let Some(app) = broker(b, &sp, &app_keys, &url).await else {
        return;
    };
    // Signed in through the upstream (its tokens are made at the tests' start time), then at
    // the SP with the broker's clock at the wall clock (pysaml2 checks times against its own).
    let wall = app.clock.now();
    app.clock.set(crate::helpers::START);
    let (mut br, back) = crate::upstream_oidc::sign_in_through(&app, &op, "corp", None).await;
    assert_eq!(back.status, 303, "{}", back.body);
    app.clock.set(wall);
    let (path, _) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    let (status, got) = sp.post(&answer_form(&sp, &page)).await;
    assert_eq!(status, 200, "{got}");
    let (name_id, sid) = (
        got["name_id"].as_str().unwrap().to_owned(),
        got["session_index"].as_str().unwrap().to_owned(),
    );

    // The SP's LogoutRequest: the session ends, and the browser goes to the upstream first.
    let (path, id) = sp.logout(&name_id, &format!("&session_index={sid}")).await;
    let page = br.get(&path).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let to = url::Url::parse(page.location.as_deref().unwrap()).unwrap();
    assert_eq!(
        to.as_str().split('?').next().unwrap(),
        format!("{}/session/end", op.issuer),
        "the upstream's logout comes first"
    );
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
    let state = to
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // Back from the upstream: on to the SP, with its LogoutResponse.
    let page = br
        .get(&format!("/upstream/corp/logged-out?state={state}"))
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (status, answer) = sp.logged_out(page.location.as_deref().unwrap()).await;
    assert_eq!(status, 200, "the SP refused the LogoutResponse: {answer}");
    assert_eq!(answer["in_response_to"], id.as_str());
    assert_eq!(answer["status"], SUCCESS, "{answer}");
    assert_eq!(answer["sub_status"], Value::Null, "{answer}");
    assert_eq!(answer["signature_ok"], true);
}

/// Issue #20, item 1: the metadata publishes an encryption certificate (another key than the
/// signing one), and an SP that encrypts the NameID of its LogoutRequest to it (pysaml2's xmlsec1,
/// AES-256-GCM, RSA-OAEP) logs out as with a plain NameID; one encrypted to another key is
/// refused and ends nothing.
async fn an_encrypted_name_id_is_read_from_a_signed_logout_request(b: Backend) {
    let (url, _got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let Some(app) = broker(b, &sp, &format!("signing_cert_file = {cert:?}"), &url).await else {
        return;
    };
    let md = idp_metadata(&app).await;
    let cert_of = |usage: &str| {
        let at = md.find(&format!("use=\"{usage}\"")).unwrap();
        let from = at + md[at..].find("<ds:X509Certificate>").unwrap();
        let to = from + md[from..].find("</ds:X509Certificate>").unwrap();
        md[from..to].to_owned()
    };
    assert_ne!(cert_of("signing"), cert_of("encryption"), "{md}");
    assert!(
        md.contains("http://www.w3.org/2009/xmlenc11#aes256-gcm"),
        "{md}"
    );

    let mut br = Browser::new(&app);
    let sid = sign_in(&app, &sp, &mut br).await;
    // Encrypted to the SP's own certificate: the broker cannot read it; nothing ends.
    let (path, _) = sp
        .logout(DEMO_EMAIL, &format!("&session_index={sid}&encrypt=sp"))
        .await;
    let page = br.get(&path).await;
    refused(&mut br, page, "an EncryptedID the IdP cannot decrypt").await;
    // An EncryptedID in a request without a query signature (AES-CBC, the padding-oracle
    // setting) is never decrypted: the missing signature is what refuses it.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let xml = format!(
        concat!(
            r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
            r#"ID="_enc_unsigned" Version="2.0" IssueInstant="{now}"><saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<saml:EncryptedID><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">"#,
            r#"<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>"#,
            r#"<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey>"#,
            r#"<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"/>"#,
            r#"<xenc:CipherData><xenc:CipherValue>AAAA</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>"#,
            r#"<xenc:CipherData><xenc:CipherValue>AAAA</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedID>"#,
            r#"</samlp:LogoutRequest>"#
        ),
        now = now,
        issuer = sp.entity_id(),
    );
    let q = redirect_query("SAMLRequest", &xml, Some("rs"), None).unwrap();
    let page = br.get(&format!("/saml/idp/slo?{q}")).await;
    refused(&mut br, page, "an unsigned request's EncryptedID").await;
    let reasons: Vec<String> = crate::control::audit_events(&app, "login_failed")
        .await
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        reasons.last().map(String::as_str),
        Some("saml_logout_refused:signature"),
        "{reasons:?}"
    );
    // Encrypted to the IdP's encryption certificate: read, and the session ends.
    let (path, id) = sp
        .logout(DEMO_EMAIL, &format!("&session_index={sid}&encrypt=1"))
        .await;
    let q = url::Url::parse(&format!("{}{path}", app.base)).unwrap();
    let sent = concierge::upstream::saml::crypto::inflate_b64(
        &q.query_pairs().find(|(k, _)| k == "SAMLRequest").unwrap().1,
    )
    .unwrap();
    assert!(sent.contains("EncryptedID"), "{sent}");
    assert!(
        !sent.contains(DEMO_EMAIL),
        "the NameID is not in the clear: {sent}"
    );
    let page = br.get(&path).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (status, answer) = sp.logged_out(page.location.as_deref().unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["in_response_to"], id.as_str());
    assert_eq!(answer["status"], SUCCESS, "{answer}");
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
}

/// An SP may answer the broker's LogoutRequest over HTTP-POST (the metadata offers both
/// bindings at the SLO endpoint): its enveloped-signed LogoutResponse ends the chain as a
/// redirected one does; an unsigned one from an SP with a certificate is refused (partial).
async fn a_logout_response_over_http_post_ends_the_chain(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let (url, _got) = receiver().await;
    let Some(app) = broker(b, &sp, &format!("signing_cert_file = {cert:?}"), &url).await else {
        return;
    };
    for (mode, end) in [
        ("post", "/signed-out"),
        ("post-unsigned", "/signed-out?partial=1"),
    ] {
        sp.answer(mode).await;
        let mut br = Browser::new(&app);
        sign_in(&app, &sp, &mut br).await;
        let token = br.get("/account").await.field("csrf_token");
        let out = br.post_form("/logout", &[("csrf_token", &token)]).await;
        let to_sp = out.location.clone().unwrap();
        assert!(to_sp.starts_with(&format!("{}?", sp.sls())), "{to_sp}");
        let res = sp.http.get(&to_sp).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{mode}");
        let form: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        let action = url::Url::parse(form["action"].as_str().unwrap()).unwrap();
        assert_eq!(action.path(), "/saml/idp/slo", "{mode}");
        let fields = [
            ("SAMLResponse", form["SAMLResponse"].as_str().unwrap()),
            ("RelayState", form["RelayState"].as_str().unwrap()),
        ];
        // A cross-site POST: no session cookie is needed (the chain is kept server-side).
        let mut other = Browser::new(&app);
        let page = other.post_form("/saml/idp/slo", &fields).await;
        assert_eq!(page.status, 303, "{mode}: {}", page.body);
        assert_eq!(page.location.as_deref(), Some(end), "{mode}");
        // The same answer again: no logout under way.
        let again = other.post_form("/saml/idp/slo", &fields).await;
        assert_error_page(&again, 400);
    }
}

per_backend_async!(
    a_logout_response_over_http_post_ends_the_chain,
    an_encrypted_name_id_is_read_from_a_signed_logout_request,
    an_sps_logout_goes_through_the_upstreams_logout_first,
    request_ids_and_sp_sessions_survive_a_restart,
    the_sign_out_page_allows_only_the_sessions_sps,
    an_sps_logout_reaches_the_sessions_other_sps,
    an_unsigned_logout_request_ends_nothing,
    sp_initiated_logout_ends_the_session_everywhere,
    the_http_post_binding_and_a_signing_sp,
    a_replayed_authn_request_is_refused,
    the_brokers_sign_out_logs_out_of_the_sp,
    a_bad_answer_of_a_signing_sp_is_a_partial_logout,
);
