//! Encrypted assertions of the broker as a SAML 2.0 IdP (issue #20), against the real service
//! provider (tests/peers/saml_sp.py: pysaml2 decrypting with xmlsec1 under its own key, then
//! checking the signatures with the certificate of the broker's metadata): an SP registered with
//! `encryption_cert_file` gets its signed assertion as an EncryptedAssertion (AES-256-GCM,
//! AES-128-GCM, and the opt-in AES-256-CBC), which it decrypts and accepts; the Response the
//! browser posts shows neither the email nor the NameID; the assertion's signature is inside the
//! encryption and the Response's over it; a changed cipher text is refused, and so is everything
//! when the broker has another certificate for the SP than the SP's own.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use concierge::clock::OsEntropy;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::upstream::saml::crypto::{ContentEncryption, decrypt_assertion, encrypt_assertion};
use openssl::pkey::PKey;

use crate::helpers::{Browser, TestApp};
use crate::per_backend_async;
use crate::saml_idp::{Sp, answer_form, broker_with, saml_sp_with};
use crate::support::Backend;
use crate::upstream_saml::key_pair;

/// A fresh encryption key pair written in `dir` as `{name}.key` and `{name}.crt`.
fn enc_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let pair = key_pair(name);
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    std::fs::write(&key, pair.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    (key, cert)
}

/// The SP peer that decrypts with `key` and requires `signed` signed.
fn decrypting_sp(key: &Path, cert: &Path, signed: &str) -> Sp {
    saml_sp_with(&[
        "--enc-key",
        key.to_str().unwrap(),
        "--enc-cert",
        cert.to_str().unwrap(),
        "--signed",
        signed,
    ])
}

/// Signs in at the broker for `sp` with the password: the fields of the form the browser
/// posts to the SP's ACS, and the AuthnRequest's ID.
async fn sign_in(app: &TestApp, sp: &Sp) -> (Vec<(String, String)>, String) {
    let mut br = Browser::new(app);
    let (path, id) = sp.login(app, "").await;
    let page = br.get(&path).await;
    let page = br
        .submit(
            &page,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (_, page) = br.follow(page).await;
    (answer_form(sp, &page), id)
}

/// The Response XML of the posted form.
fn response_xml(fields: &[(String, String)]) -> String {
    let b64 = &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
    String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
}

/// `fields` with the Response changed by `change`.
fn with_response(
    fields: &[(String, String)],
    change: impl Fn(&str) -> String,
) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| match k.as_str() {
            "SAMLResponse" => (k.clone(), STANDARD.encode(change(&response_xml(fields)))),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

/// The SP read the sign-in of the demo user from an encrypted assertion.
fn assert_accepted(status: u16, got: &Value, request_id: &str) {
    assert_eq!(status, 200, "the SP refused the Response: {got}");
    assert_eq!(got["encrypted"], 1, "{got}");
    assert_eq!(got["name_id"], DEMO_EMAIL, "{got}");
    assert_eq!(
        got["name_id_format"],
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    );
    assert_eq!(got["ava"]["email"][0], DEMO_EMAIL, "{got}");
    assert_eq!(got["in_response_to"], request_id);
    assert_eq!(got["relay_state"], "rs-1");
    assert!(!got["session_index"].as_str().unwrap().is_empty(), "{got}");
}

/// Each `encryption` the broker offers: the SP decrypts the assertion, checks both signatures
/// and reads the user; the browser's form shows nothing of the user, and a changed cipher text
/// is refused.
async fn the_sp_decrypts_each_algorithm(b: Backend) {
    for (encryption, uri) in [
        ("aes256-gcm", "http://www.w3.org/2009/xmlenc11#aes256-gcm"),
        ("aes128-gcm", "http://www.w3.org/2009/xmlenc11#aes128-gcm"),
        ("aes256-cbc", "http://www.w3.org/2001/04/xmlenc#aes256-cbc"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = enc_pair(dir.path(), "sp-enc");
        let sp = decrypting_sp(&key, &cert, "both");
        let keys = format!("encryption_cert_file = {cert:?}\nencryption = \"{encryption}\"");
        let Some(app) = broker_with(b, &sp, &keys, "").await else {
            return;
        };
        let (fields, id) = sign_in(&app, &sp).await;
        let xml = response_xml(&fields);
        // What the browser carries: an EncryptedAssertion, no user in the clear.
        assert!(!xml.contains(DEMO_EMAIL), "{encryption}: {xml}");
        assert!(!xml.contains("<saml:Assertion"), "{encryption}: {xml}");
        assert!(!xml.contains("NameID"), "{encryption}: {xml}");
        assert_eq!(xml.matches("<saml:EncryptedAssertion").count(), 1, "{xml}");
        assert!(xml.contains(&format!(r#"Algorithm="{uri}""#)), "{xml}");
        assert!(
            xml.contains(r#"Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p""#),
            "{xml}"
        );
        // The Response's signature is in the clear, over the EncryptedAssertion; the
        // assertion's is inside the encryption.
        assert_eq!(xml.matches("<ds:SignatureValue>").count(), 1, "{xml}");
        assert!(
            xml.find("<ds:Signature").unwrap() < xml.find("<saml:EncryptedAssertion").unwrap(),
            "{xml}"
        );

        // One bit of the encrypted content changed: the SP refuses it (the Response's
        // signature covers the cipher text; for GCM its tag too).
        let data_at = xml.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
        let forged = with_response(&fields, |x| {
            let b64 = &x[data_at..data_at + x[data_at..].find('<').unwrap()];
            let mut data = STANDARD.decode(b64).unwrap();
            data[20] ^= 1;
            x.replacen(b64, &STANDARD.encode(data), 1)
        });
        let (status, why) = sp.post(&forged).await;
        assert_eq!(
            status, 400,
            "{encryption}: a changed cipher text was accepted: {why}"
        );

        let (status, got) = sp.post(&fields).await;
        assert_accepted(status, &got, &id);
    }
}

/// Signed first, then encrypted: with `sign = "assertion"` the only signature is inside the
/// encryption (the SP checks it after decrypting); with `sign = "response"` the Response's
/// signature covers the EncryptedAssertion, whose assertion is not signed.
async fn what_is_signed_is_signed_before_it_is_encrypted(b: Backend) {
    for sign in ["assertion", "response"] {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = enc_pair(dir.path(), "sp-enc");
        let sp = decrypting_sp(&key, &cert, sign);
        let keys = format!("encryption_cert_file = {cert:?}\nsign = \"{sign}\"");
        let Some(app) = broker_with(b, &sp, &keys, "").await else {
            return;
        };
        let (fields, id) = sign_in(&app, &sp).await;
        let xml = response_xml(&fields);
        assert!(!xml.contains(DEMO_EMAIL), "{sign}: {xml}");
        // The default `encryption`.
        assert!(
            xml.contains(r#"Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm""#),
            "{xml}"
        );
        let visible = usize::from(sign == "response");
        assert_eq!(
            xml.matches("<ds:SignatureValue>").count(),
            visible,
            "{sign}: {xml}"
        );
        // Inside the encryption, the assertion is signed exactly when the Response is not
        // (read here with the SP's key, as the SP does).
        let sp_key = PKey::private_key_from_pem(&std::fs::read(&key).unwrap()).unwrap();
        let assertion = decrypt_assertion(&xml, &sp_key, false).unwrap();
        assert!(assertion.contains(DEMO_EMAIL), "{assertion}");
        assert_eq!(
            assertion.contains("<ds:SignatureValue>"),
            sign == "assertion",
            "{sign}: {assertion}"
        );
        if sign == "assertion" {
            // That signature is what protects it: the assertion changed and encrypted again
            // to the SP (which anyone with its certificate can do) is refused.
            let start = xml.find("<saml:EncryptedAssertion").unwrap();
            let end = xml.find("</saml:EncryptedAssertion>").unwrap()
                + "</saml:EncryptedAssertion>".len();
            let forged = encrypt_assertion(
                &assertion.replace(DEMO_EMAIL, "mallory@example.com"),
                ContentEncryption::Aes256Gcm,
                &sp_key,
                &OsEntropy,
            )
            .unwrap();
            let forged =
                with_response(&fields, |x| format!("{}{forged}{}", &x[..start], &x[end..]));
            let (status, why) = sp.post(&forged).await;
            assert_eq!(status, 400, "a re-encrypted forgery was accepted: {why}");
            assert_eq!(why["error"], "SignatureError", "{why}");
        }
        let (status, got) = sp.post(&fields).await;
        assert_accepted(status, &got, &id);
    }
}

/// The broker has another certificate for the SP than the key the SP decrypts with: the SP
/// cannot read the assertion and refuses the Response (so the tests above can fail).
async fn another_certificate_is_refused_by_the_sp(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = enc_pair(dir.path(), "sp-enc");
    let (_, wrong) = enc_pair(dir.path(), "someone-else");
    let sp = decrypting_sp(&key, &cert, "both");
    let keys = format!("encryption_cert_file = {wrong:?}");
    let Some(app) = broker_with(b, &sp, &keys, "").await else {
        return;
    };
    let (fields, _) = sign_in(&app, &sp).await;
    let xml = response_xml(&fields);
    assert!(xml.contains("<saml:EncryptedAssertion"), "{xml}");
    assert!(!xml.contains(DEMO_EMAIL), "{xml}");
    let (status, why) = sp.post(&fields).await;
    assert_eq!(status, 400, "an assertion to another key was read: {why}");
    assert_eq!(why["error"], "ValueError", "{why}");
    assert!(
        why["detail"].as_str().unwrap().contains("none decrypted"),
        "{why}"
    );
    assert!(why.get("name_id").is_none(), "{why}");
}

per_backend_async!(
    the_sp_decrypts_each_algorithm,
    what_is_signed_is_signed_before_it_is_encrypted,
    another_certificate_is_refused_by_the_sp,
);
