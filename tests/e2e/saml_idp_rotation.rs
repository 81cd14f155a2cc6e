//! Rotating the SAML IdP's signing key (`concierge keys rotate-saml`, ADR 23) against real
//! pysaml2 SPs: the running broker picks the rotation up without a restart and publishes both
//! certificates; the old key signs until the switch (an SP that knows only the old certificate
//! still accepts); past the switch the new key signs (an SP that read the new metadata accepts,
//! one that knows only the old certificate refuses), the old certificate stays published for
//! the overlap and then goes. `keys list` shows the keys, their fingerprints and schedule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::helpers::{Browser, TestApp, spawn_provider_with};
use crate::per_backend_async;
use crate::saml_idp::{Sp, answer_form, idp_metadata, password_sign_in, saml_sp};
use crate::support::Backend;

fn wall() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The signing certificates of the broker's metadata, in its order.
async fn certs(app: &TestApp) -> Vec<String> {
    let md = idp_metadata(app).await;
    // The signing ones (the encryption certificate is another, never rotated).
    md.split(r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>"#)
        .skip(1)
        .filter_map(|s| {
            s.split_once("</ds:X509Certificate>")
                .map(|(c, _)| c.to_owned())
        })
        .collect()
}

fn fingerprint(cert_b64: &str) -> String {
    hex::encode(Sha256::digest(STANDARD.decode(cert_b64).unwrap()))
}

fn run(app: &TestApp, args: &[&str]) -> (bool, String) {
    // The CLI reads the configuration the instances do.
    let out = app
        .cli()
        .env("CONCIERGE__PROVIDER__KEY_RELOAD_INTERVAL", "1s")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A sign-in of `sp` answered from the browser's broker session: the SP's verdict.
async fn sso(app: &TestApp, br: &mut Browser, sp: &Sp) -> (u16, serde_json::Value) {
    let (path, _) = sp.login(app, "").await;
    let page = br.get(&path).await;
    sp.post(&answer_form(sp, &page)).await
}

async fn rotation_publishes_first_then_switches_and_keeps_the_old_cert_a_while(b: Backend) {
    // Two SPs: `old` reads the metadata before the rotation, `new` only after it.
    let (old, new) = (saml_sp(), saml_sp());
    let toml = [&old, &new]
        .iter()
        .map(|sp| {
            format!(
                "[[saml_apps]]\nentity_id = \"{}\"\nname = \"pysaml2\"\nacs_urls = [\"{}\"]\n",
                sp.entity_id(),
                sp.acs()
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let Some(app) = spawn_provider_with(
        b,
        &[("CONCIERGE__PROVIDER__KEY_RELOAD_INTERVAL", "1s")],
        &toml,
    )
    .await
    else {
        return;
    };
    // The broker's clock at the wall clock (the SPs check times against theirs), then held.
    app.clock.set(wall());
    let first = certs(&app).await;
    assert_eq!(first.len(), 1);

    let mut br = Browser::new(&app);
    let (path, _) = old.login(&app, "").await;
    password_sign_in(&mut br, &old, &path).await;

    // Too short a delay for every instance to publish before one signs: refused.
    let (ok, out) = run(&app, &["keys", "rotate-saml", "--publish-for", "1s"]);
    assert!(!ok, "{out}");
    assert!(out.contains("twice provider.key_reload_interval"), "{out}");
    assert_eq!(run(&app, &["keys", "list"]).1.matches("saml\t").count(), 1);

    let (ok, out) = run(&app, &["keys", "rotate-saml", "--publish-for", "60s"]);
    assert!(ok, "{out}");
    let rotated = wall();
    // The running broker reloads within provider.key_reload_interval: both certificates, the
    // signing one first.
    let mut both = Vec::new();
    for _ in 0..100 {
        both = certs(&app).await;
        if both.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(both.len(), 2, "the rotation was not picked up");
    assert_eq!(both[0], first[0]);
    let (ok, list) = run(&app, &["keys", "list"]);
    assert!(ok, "{list}");
    assert!(
        list.contains(&format!("saml\tsigning\tsha256={}", fingerprint(&both[0]))),
        "{list}"
    );
    assert!(
        list.contains(&format!("saml\tnext\tsha256={}", fingerprint(&both[1]))),
        "{list}"
    );
    // Pending: another rotation is refused.
    let (ok, out) = run(&app, &["keys", "rotate-saml", "--publish-for", "60s"]);
    assert!(!ok && out.contains("pending"), "{out}");

    // Before the switch the old key signs: the SP that knows only it accepts, and so does the
    // SP that reads the new metadata (both certificates).
    let (status, got) = sso(&app, &mut br, &old).await;
    assert_eq!(status, 200, "before the switch: {got}");
    let (status, got) = sso(&app, &mut br, &new).await;
    assert_eq!(status, 200, "before the switch: {got}");

    // Past the switch (the broker's clock; the SPs' own clocks must not be far behind it).
    while wall() <= rotated + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.clock.set(rotated + 61);
    assert_eq!(certs(&app).await, [both[1].clone(), both[0].clone()]);
    let (status, got) = sso(&app, &mut br, &new).await;
    assert_eq!(status, 200, "after the switch: {got}");
    // The SP that cached only the old certificate refuses: the new key signed.
    let (status, got) = sso(&app, &mut br, &old).await;
    assert_eq!(
        status, 400,
        "signed with the old key after the switch: {got}"
    );

    // After the overlap the old certificate is no longer published.
    app.clock.set(rotated + 60 + 61);
    assert_eq!(certs(&app).await, [both[1].clone()]);
}

per_backend_async!(rotation_publishes_first_then_switches_and_keeps_the_old_cert_a_while);
