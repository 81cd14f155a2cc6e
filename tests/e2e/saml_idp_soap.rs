//! SAML Single Logout over the SOAP binding, the broker's back channel to an SP, against the real
//! pysaml2 SP (tests/peers/saml_sp.py `/soap-sls`: pysaml2 checks the LogoutRequest's enveloped
//! signature against the broker's metadata, its Destination and NameID, and answers with its own
//! LogoutResponse in a SOAP envelope): a session that ends with no browser (an administrator's
//! revocation) reaches the SP, whose signed Success is checked; a browser's sign-out still goes
//! through the front channel of an SP that has one, and by back channel to one that has only
//! SOAP (no partial logout said); an answer unsigned, badly signed or not from the SP is refused,
//! audited and not retried; a SOAP Fault is retried.

use std::time::Duration;

use serde_json::Value;

use crate::control::{OPS_CLIENTS, admin_token, api};
use crate::helpers::{Browser, TestApp};
use crate::oidc::Http;
use crate::per_backend_async;
use crate::saml_idp::{Sp, broker_with, password_sign_in, signing_sp};
use crate::saml_idp_slo::{refused_answers, sign_out_through};
use crate::support::Backend;

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

impl Sp {
    fn soap_sls(&self) -> String {
        format!("{}/soap-sls", self.base)
    }

    /// What the SP's `/soap-sls` was sent and answered.
    async fn soap_seen(&self) -> Value {
        let res = self
            .http
            .get(format!("{}/soap-seen", self.base))
            .send()
            .await
            .unwrap();
        serde_json::from_str(&res.text().await.unwrap()).unwrap()
    }

    /// Waits (up to 20 s) until the SP answered `n` SOAP LogoutRequests or had `errors` errors.
    async fn soap_wait(&self, n: u64, errors: usize) -> Value {
        for _ in 0..100 {
            let seen = self.soap_seen().await;
            if seen["count"].as_u64().unwrap() >= n
                && seen["errors"].as_array().unwrap().len() >= errors
            {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the SP did not get it: {}", self.soap_seen().await);
    }

    /// How the SP answers the broker's LogoutRequests from now on (its `/answer`).
    pub(crate) async fn answer(&self, mode: &str) {
        let res = self
            .http
            .get(format!("{}/answer?mode={mode}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
    }
}

/// A broker with the signing SP registered with its SOAP SingleLogoutService, and with its
/// front channel (`slo_url`) when `front`.
async fn broker(b: Backend, sp: &Sp, cert: &std::path::Path, front: bool) -> Option<TestApp> {
    let mut keys = format!(
        "signing_cert_file = {cert:?}\nslo_soap_url = \"{}\"\n",
        sp.soap_sls()
    );
    if front {
        keys.push_str(&format!("slo_url = \"{}/sls\"\n", sp.base));
    }
    broker_with(b, sp, &keys, OPS_CLIENTS).await
}

/// A new browser signs in at the SP: the browser and the session index (`sid`) the SP got.
async fn signed_in(app: &TestApp, sp: &Sp) -> (Browser, String) {
    let mut br = Browser::new(app);
    let (path, _) = sp.login(app, "").await;
    let got = password_sign_in(&mut br, sp, &path).await;
    let sid = got["session_index"].as_str().unwrap().to_owned();
    (br, sid)
}

/// An administrator ends the session `sid` (no browser takes part).
async fn revoke(app: &TestApp, sid: &str) {
    let admin = admin_token(&Http::new(app), "concierge:admin").await;
    let (status, _, body) = api(
        app,
        "DELETE",
        &format!("/admin/v1/sessions/{sid}"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn a_revoked_session_is_ended_at_the_sp_by_back_channel(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let Some(app) = broker(b, &sp, &cert, true).await else {
        return;
    };
    let (mut br, sid) = signed_in(&app, &sp).await;
    assert_eq!(sp.soap_seen().await["count"], 0);
    revoke(&app, &sid).await;
    let seen = sp.soap_wait(1, 0).await;
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    let told = &seen["requests"][0];
    assert_eq!(told["name_id"], concierge::startup::DEMO_EMAIL, "{seen}");
    assert_eq!(told["session_index"], serde_json::json!([sid]), "{seen}");
    assert_eq!(told["status"], SUCCESS, "{seen}");
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
    // The SP's signed Success was accepted: nothing refused.
    assert!(refused_answers(&app).await.is_empty());

    // With a browser, an SP that has a front channel is signed out through it, not by SOAP.
    let (mut br, _) = signed_in(&app, &sp).await;
    assert_eq!(sign_out_through(&mut br, &sp).await, "/signed-out");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sp.soap_seen().await["count"], 1, "no SOAP LogoutRequest");
}

async fn a_browser_sign_out_reaches_an_sp_without_a_front_channel(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let Some(app) = broker(b, &sp, &cert, false).await else {
        return;
    };
    let (mut br, sid) = signed_in(&app, &sp).await;
    let token = br.get("/account").await.field("csrf_token");
    let out = br.post_form("/logout", &[("csrf_token", &token)]).await;
    // No front channel to go through, and no partial logout: the SP is told by back channel.
    assert_eq!(out.location.as_deref(), Some("/signed-out"), "{}", out.body);
    let seen = sp.soap_wait(1, 0).await;
    assert_eq!(
        seen["requests"][0]["session_index"],
        serde_json::json!([sid])
    );
    assert_eq!(seen["requests"][0]["status"], SUCCESS, "{seen}");
}

async fn a_refused_answer_is_audited_and_not_retried(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let Some(app) = broker(b, &sp, &cert, true).await else {
        return;
    };
    for (i, mode) in ["unsigned", "badsig"].into_iter().enumerate() {
        sp.answer(mode).await;
        let (_, sid) = signed_in(&app, &sp).await;
        revoke(&app, &sid).await;
        let n = u64::try_from(i).unwrap() + 1;
        sp.soap_wait(n, 0).await;
        let mut refused = Vec::new();
        for _ in 0..50 {
            refused = refused_answers(&app).await;
            if refused.len() > i {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(refused.len(), i + 1, "{mode}: {refused:?}");
        assert_eq!(refused[i]["client_id"], sp.entity_id(), "{mode}");
        assert_eq!(refused[i]["sid"], sid.as_str(), "{mode}");
        // Past every retry delay, the SP is not asked again.
        app.clock.advance(3600);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(sp.soap_seen().await["count"], n, "{mode}: retried");
        // Back to the SP's time, for its next AuthnRequest.
        app.clock.advance(-3600);
    }
}

async fn a_soap_fault_is_tried_again(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sp, cert) = signing_sp(dir.path());
    let Some(app) = broker(b, &sp, &cert, true).await else {
        return;
    };
    sp.answer("fault").await;
    let (_, sid) = signed_in(&app, &sp).await;
    revoke(&app, &sid).await;
    let seen = sp.soap_wait(0, 1).await;
    assert_eq!(seen["count"], 0, "{seen}");
    // The SP is back; the retry is due 5 s later on the broker's clock.
    sp.answer("signed").await;
    app.clock.advance(6);
    let seen = sp.soap_wait(1, 1).await;
    assert_eq!(seen["requests"][0]["status"], SUCCESS, "{seen}");
    assert!(refused_answers(&app).await.is_empty());
}

per_backend_async!(
    a_revoked_session_is_ended_at_the_sp_by_back_channel,
    a_browser_sign_out_reaches_an_sp_without_a_front_channel,
    a_refused_answer_is_audited_and_not_retried,
    a_soap_fault_is_tried_again,
);
