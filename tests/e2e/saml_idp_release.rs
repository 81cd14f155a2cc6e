//! What the broker's SAML IdP releases, through the real pysaml2 SP (tests/peers/saml_sp.py):
//! the attributes configured per SP (`[[saml_apps.attributes]]`: Name, FriendlyName,
//! NameFormat, values from the account, the pairwise id, the session upstream's groups and
//! verified email; empty ones left out) and the default release without a list; transient
//! NameIDs (per session and per SP; an SP's LogoutRequest naming one ends the session, and the
//! broker's own LogoutRequest carries it); IdP-initiated sign-in, opt-in per SP (an unsolicited
//! Response pysaml2 accepts with `allow_unsolicited`; with a session, the Response only after a
//! POST, the session kept, or raised when the SP's policy wants a second factor; refused for an
//! SP without the opt-in and for an unknown SP).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};

use crate::helpers::{Browser, Page, TestApp, assert_error_page};
use crate::per_backend_async;
use crate::saml_idp::{
    Sp, answer_form, broker_with, idp_metadata, saml_sp, saml_sp_with, signing_sp,
};
use crate::saml_idp_slo::{sign_out_through, urlencoding};
use crate::support::Backend;

const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const BASIC: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";
const URI: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
const UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified";
const MAIL_OID: &str = "urn:oid:0.9.2342.19200300.100.1.3";

/// The Response document an answer form carries.
fn response_xml(fields: &[(String, String)]) -> String {
    let response = &fields.iter().find(|(k, _)| k == "SAMLResponse").unwrap().1;
    String::from_utf8(STANDARD.decode(response).unwrap()).unwrap()
}

/// The `saml:Attribute` elements of a Response: (Name, NameFormat, FriendlyName, values).
fn attributes_of(xml: &str) -> Vec<(String, String, Option<String>, Vec<String>)> {
    let attr = |tag: &str, name: &str| {
        let key = format!(" {name}=\"");
        tag.find(&key).map(|at| {
            let rest = &tag[at + key.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
    };
    xml.split("<saml:Attribute ")
        .skip(1)
        .map(|chunk| {
            let body = &chunk[..chunk.find("</saml:Attribute>").unwrap()];
            let tag = format!(" {}", &body[..body.find('>').unwrap()]);
            let tag = tag.as_str();
            let values = body
                .split("<saml:AttributeValue>")
                .skip(1)
                .map(|v| v[..v.find("</saml:AttributeValue>").unwrap()].to_owned())
                .collect();
            (
                attr(tag, "Name").unwrap(),
                attr(tag, "NameFormat").unwrap(),
                attr(tag, "FriendlyName"),
                values,
            )
        })
        .collect()
}

/// Signs in with the demo password from `page` (the sign-in page) and returns the answer form.
async fn password(br: &mut Browser, sp: &Sp, page: Page) -> Vec<(String, String)> {
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    let page = br
        .submit(
            &page,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (_, page) = br.follow(page).await;
    answer_form(sp, &page)
}

/// The SP's request (`extra`: more of its `/login` parameters) answered at once from the
/// browser's session: the answer form.
async fn single_sign_on(
    br: &mut Browser,
    app: &TestApp,
    sp: &Sp,
    extra: &str,
) -> Vec<(String, String)> {
    let (path, _) = sp.login(app, extra).await;
    let page = br.get(&path).await;
    answer_form(sp, &page)
}

fn attribute_table(name: &str, more: &str) -> String {
    format!("[[saml_apps.attributes]]\nname = \"{name}\"\n{more}")
}

async fn configured_attributes_arrive_with_their_name_formats(b: Backend) {
    let sp = saml_sp();
    let app_keys = format!(
        "name_id_format = \"persistent\"\n{}{}{}{}{}",
        attribute_table(
            MAIL_OID,
            "friendly_name = \"mail\"\nname_format = \"uri\"\nfrom = \"email\"\n"
        ),
        attribute_table("displayName", "from = \"name\"\n"),
        attribute_table(
            "urn:example:uid",
            "name_format = \"unspecified\"\nfrom = \"user_id\"\n"
        ),
        attribute_table("memberOf", "from = \"groups\"\n"),
        attribute_table(
            "emailVerified",
            "friendly_name = \"<v&>\"\nfrom = \"email_verified\"\n"
        ),
    );
    let Some(app) = broker_with(b, &sp, &app_keys, "").await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, _) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    let fields = password(&mut br, &sp, page).await;
    let xml = response_xml(&fields);
    let got = attributes_of(&xml);
    let (status, seen) = sp.post(&fields).await;
    assert_eq!(status, 200, "the SP refused the Response: {seen}");
    let uid = seen["name_id"].as_str().unwrap().to_owned();
    assert_eq!(seen["name_id_format"], PERSISTENT);

    // In the order configured, with their Name, NameFormat and FriendlyName (escaped); the
    // groups of a local sign-in are none: that attribute is left out, not sent empty.
    let expected = vec![
        (
            MAIL_OID.to_owned(),
            URI.to_owned(),
            Some("mail".to_owned()),
            vec![DEMO_EMAIL.to_owned()],
        ),
        (
            "displayName".to_owned(),
            BASIC.to_owned(),
            None,
            vec!["Demo User".to_owned()],
        ),
        (
            "urn:example:uid".to_owned(),
            UNSPECIFIED.to_owned(),
            None,
            vec![uid.clone()],
        ),
        (
            "emailVerified".to_owned(),
            BASIC.to_owned(),
            Some("&lt;v&amp;&gt;".to_owned()),
            vec!["false".to_owned()],
        ),
    ];
    assert_eq!(got, expected, "{xml}");
    assert!(
        !xml.contains("<saml:AttributeValue></saml:AttributeValue>"),
        "{xml}"
    );
    assert!(!xml.contains("<saml:AttributeValue/>"), "{xml}");
    // pysaml2 read them: the OID by its friendly name (its URI attribute map), the others by
    // their Name.
    let ava = &seen["ava"];
    assert_eq!(ava["mail"], serde_json::json!([DEMO_EMAIL]), "{seen}");
    assert_eq!(
        ava["displayName"],
        serde_json::json!(["Demo User"]),
        "{seen}"
    );
    assert_eq!(ava["urn:example:uid"], serde_json::json!([uid]), "{seen}");
    assert_eq!(ava["emailVerified"], serde_json::json!(["false"]), "{seen}");
    assert!(ava.get("memberOf").is_none(), "{seen}");
    // Not the default release: no `email` / `name` of their own.
    assert!(
        ava.get("email").is_none() && ava.get("name").is_none(),
        "{seen}"
    );
}

async fn without_a_list_the_default_release_is_unchanged(b: Backend) {
    let sp = saml_sp();
    let Some(app) = broker_with(b, &sp, "", "").await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, _) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    let fields = password(&mut br, &sp, page).await;
    let xml = response_xml(&fields);
    assert_eq!(
        attributes_of(&xml),
        vec![
            (
                "email".to_owned(),
                BASIC.to_owned(),
                None,
                vec![DEMO_EMAIL.to_owned()]
            ),
            (
                "name".to_owned(),
                BASIC.to_owned(),
                None,
                vec!["Demo User".to_owned()]
            ),
        ],
        "{xml}"
    );
    let (status, seen) = sp.post(&fields).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(
        seen["ava"]["email"],
        serde_json::json!([DEMO_EMAIL]),
        "{seen}"
    );
    assert_eq!(
        seen["ava"]["name"],
        serde_json::json!(["Demo User"]),
        "{seen}"
    );
}

/// An upstream's groups (multi-valued), its verified email and a claim the upstream keeps
/// (`claim:department`; a claim it does not keep is left out) reach the SP: signed in through
/// the fake OpenID provider of `upstream_oidc.rs` (trusted for verified email; its tokens are
/// made at the tests' start time), then the SP asks with the broker's clock at the wall clock
/// (pysaml2 checks times against its own).
async fn the_session_upstreams_groups_are_released(b: Backend) {
    use concierge::clock::Clock;
    let sp = saml_sp();
    let op = crate::upstream_oidc::start_fake_op().await;
    let app_keys = format!(
        "{}{}{}{}",
        attribute_table("memberOf", "from = \"groups\"\n"),
        attribute_table("emailVerified", "from = \"email_verified\"\n"),
        attribute_table("department", "from = \"claim:department\"\n"),
        attribute_table("subject", "from = \"claim:sub\"\n"),
    );
    let upstream = format!(
        "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\nlink_by_verified_email = true\n\
         [upstreams.claims]\nkeep = [\"department\"]\n",
        op.issuer
    );
    let Some(app) = broker_with(b, &sp, &app_keys, &upstream).await else {
        return;
    };
    let wall = app.clock.now();
    app.clock.set(crate::helpers::START);
    let (mut br, back) = crate::upstream_oidc::sign_in_through(&app, &op, "corp", None).await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert!(br.session_cookie().is_some());
    app.clock.set(wall);
    let fields = single_sign_on(&mut br, &app, &sp, "").await;
    let xml = response_xml(&fields);
    assert_eq!(
        attributes_of(&xml),
        vec![
            (
                "memberOf".to_owned(),
                BASIC.to_owned(),
                None,
                vec!["staff".to_owned(), "admins".to_owned()]
            ),
            (
                "emailVerified".to_owned(),
                BASIC.to_owned(),
                None,
                vec!["true".to_owned()]
            ),
            (
                "department".to_owned(),
                BASIC.to_owned(),
                None,
                vec!["research".to_owned()]
            ),
        ],
        "{xml}: `sub` is not kept, so `subject` is left out"
    );
    let (status, seen) = sp.post(&fields).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(
        seen["ava"]["memberOf"],
        serde_json::json!(["staff", "admins"]),
        "{seen}"
    );
    assert_eq!(
        seen["ava"]["emailVerified"],
        serde_json::json!(["true"]),
        "{seen}"
    );
    assert_eq!(
        seen["ava"]["department"],
        serde_json::json!(["research"]),
        "{seen}"
    );
}

/// The NameID pysaml2 read from the Response in `fields` (and that it is transient).
async fn transient_of(sp: &Sp, fields: &[(String, String)]) -> (String, String) {
    let (status, seen) = sp.post(fields).await;
    assert_eq!(status, 200, "the SP refused the Response: {seen}");
    assert_eq!(seen["name_id_format"], TRANSIENT, "{seen}");
    let id = seen["name_id"].as_str().unwrap().to_owned();
    assert!(!id.contains('@') && id.len() >= 32, "{id}");
    (id, seen["session_index"].as_str().unwrap().to_owned())
}

async fn transient_name_ids_differ_per_session_and_per_sp(b: Backend) {
    let (one, two) = (saml_sp(), saml_sp());
    let second = format!(
        "[[saml_apps]]\nentity_id = \"{}\"\nacs_urls = [\"{}\"]\nname_id_format = \"transient\"\n",
        two.entity_id(),
        two.acs()
    );
    let Some(app) = broker_with(b, &one, "name_id_format = \"transient\"", &second).await else {
        return;
    };
    // The metadata offers the format.
    let md = idp_metadata(&app).await;
    assert!(
        md.contains(&format!("<md:NameIDFormat>{TRANSIENT}</md:NameIDFormat>")),
        "{md}"
    );

    let mut br = Browser::new(&app);
    let (path, _) = one.login(&app, &format!("&nameid={TRANSIENT}")).await;
    let page = br.get(&path).await;
    let fields = password(&mut br, &one, page).await;
    let (first, sid) = transient_of(&one, &fields).await;
    // The same SP in the same session: the same value (what logout recomputes).
    let fields = single_sign_on(&mut br, &app, &one, "").await;
    assert_eq!(transient_of(&one, &fields).await.0, first);
    // `unspecified` asks for nothing in particular: the SP's format.
    let fields = single_sign_on(
        &mut br,
        &app,
        &one,
        "&nameid=urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
    )
    .await;
    assert_eq!(transient_of(&one, &fields).await.0, first);
    // Another SP, same session: another value.
    let fields = single_sign_on(&mut br, &app, &two, "").await;
    let (at_two, sid_two) = transient_of(&two, &fields).await;
    assert_eq!(sid_two, sid);
    assert_ne!(at_two, first);
    // Another session (another browser), same SP: another value.
    let mut other = Browser::new(&app);
    let (path, _) = one.login(&app, "").await;
    let page = other.get(&path).await;
    let fields = password(&mut other, &one, page).await;
    let (again, other_sid) = transient_of(&one, &fields).await;
    assert_ne!(other_sid, sid);
    assert_ne!(again, first);
    assert_ne!(again, at_two);
    // A format this SP is not given: InvalidNameIDPolicy, no assertion.
    for wanted in [
        PERSISTENT,
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    ] {
        let fields = single_sign_on(&mut br, &app, &one, &format!("&nameid={wanted}")).await;
        let xml = response_xml(&fields);
        assert!(
            xml.contains("urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy")
                && !xml.contains("Assertion"),
            "{wanted}: {xml}"
        );
    }
}

/// An SP that signs its LogoutRequests, registered with `name_id_format = "transient"` and its
/// SingleLogoutService.
async fn transient_sp(b: Backend, dir: &std::path::Path) -> Option<(Sp, TestApp)> {
    let (sp, cert) = signing_sp(dir);
    let keys = format!(
        "name_id_format = \"transient\"\nsigning_cert_file = {cert:?}\nslo_url = \"{}\"",
        sp.sls()
    );
    let app = broker_with(b, &sp, &keys, "").await?;
    Some((sp, app))
}

async fn sp_initiated_logout_with_the_transient_name_id_ends_the_session(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((sp, app)) = transient_sp(b, dir.path()).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, _) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    let fields = password(&mut br, &sp, page).await;
    let (name_id, sid) = transient_of(&sp, &fields).await;
    // Another session's transient NameID for the same user (another browser) names nothing of
    // this browser's.
    let mut other = Browser::new(&app);
    let (path, _) = sp.login(&app, "").await;
    let page = other.get(&path).await;
    let fields = password(&mut other, &sp, page).await;
    let (other_id, _) = transient_of(&sp, &fields).await;
    let format = format!("&format={}", urlencoding(TRANSIENT));
    let (path, _) = sp.logout(&other_id, &format).await;
    let page = br.get(&path).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (status, answer) = sp.logged_out(page.location.as_deref().unwrap()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "StatusUnknownPrincipal", "{answer}");
    assert_eq!(br.get("/account").await.status, 200, "this session goes on");
    // The persistent-style id of the same user is not this SP's NameID either.
    let (path, _) = sp.logout(DEMO_EMAIL, "").await;
    let page = br.get(&path).await;
    let (status, _) = sp.logged_out(page.location.as_deref().unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(br.get("/account").await.status, 200);

    // This session's transient NameID (with or without its SessionIndex): it ends.
    let (path, id) = sp
        .logout(&name_id, &format!("{format}&session_index={sid}"))
        .await;
    let page = br.get(&path).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (status, answer) = sp.logged_out(page.location.as_deref().unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["in_response_to"], id.as_str());
    assert_eq!(
        answer["status"], "urn:oasis:names:tc:SAML:2.0:status:Success",
        "{answer}"
    );
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
    // The other browser's session was not named: it goes on.
    assert_eq!(other.get("/account").await.status, 200);
}

async fn the_brokers_logout_request_carries_the_transient_name_id(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((sp, app)) = transient_sp(b, dir.path()).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let (path, _) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    let fields = password(&mut br, &sp, page).await;
    let (name_id, _) = transient_of(&sp, &fields).await;
    // The LogoutRequest names it (format and value); pysaml2 answers Success only for the NameID
    // it got at /acs (else UnknownPrincipal, and the sign-out would end as partial).
    let token = br.get("/account").await.field("csrf_token");
    let out = br.post_form("/logout", &[("csrf_token", &token)]).await;
    let to_sp = url::Url::parse(out.location.as_deref().unwrap()).unwrap();
    let request = concierge::upstream::saml::crypto::inflate_b64(
        &to_sp
            .query_pairs()
            .find(|(k, _)| k == "SAMLRequest")
            .unwrap()
            .1,
    )
    .unwrap();
    assert!(
        request.contains(&format!(
            r#"<saml:NameID Format="{TRANSIENT}">{name_id}</saml:NameID>"#
        )),
        "{request}"
    );
    // That sign-out went ahead; sign in again and sign out through the SP.
    let mut br = Browser::new(&app);
    let (path, _) = sp.login(&app, "").await;
    let page = br.get(&path).await;
    let fields = password(&mut br, &sp, page).await;
    let (second, _) = transient_of(&sp, &fields).await;
    assert_ne!(second, name_id);
    assert_eq!(sign_out_through(&mut br, &sp).await, "/signed-out");
    assert_eq!(br.get("/account").await.status, 303, "the session ended");
}

/// `/saml/idp/init` for `sp` (its entity ID URL-encoded) and `more` query parameters.
fn init_path(entity_id: &str, more: &str) -> String {
    format!("/saml/idp/init?sp={}{more}", urlencoding(entity_id))
}

async fn idp_initiated_sign_in_reaches_an_sp_that_accepts_it(b: Backend) {
    let sp = saml_sp_with(&["--allow-unsolicited"]);
    let Some(app) = broker_with(b, &sp, "idp_initiated = true", "").await else {
        return;
    };
    // pysaml2 reads the broker's metadata before any Response comes (no request sent).
    sp.setup(&app).await;

    // No session: the sign-in page, then the unsolicited Response to the first ACS URL.
    let mut br = Browser::new(&app);
    let page = br
        .get(&init_path(&sp.entity_id(), "&RelayState=%2Fwiki%2Fhome"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let fields = password(&mut br, &sp, page).await;
    let xml = response_xml(&fields);
    assert!(!xml.contains("InResponseTo"), "{xml}");
    assert!(
        xml.contains(&format!("Recipient=\"{}\"", sp.acs())),
        "{xml}"
    );
    let (status, seen) = sp.post(&fields).await;
    assert_eq!(
        status, 200,
        "the SP refused the unsolicited Response: {seen}"
    );
    assert_eq!(seen["name_id"], DEMO_EMAIL);
    assert_eq!(seen["in_response_to"], Value::Null, "{seen}");
    assert_eq!(seen["relay_state"], "/wiki/home");
    let sid = seen["session_index"].as_str().unwrap().to_owned();

    // With a session: the GET makes no Response; the page's POST does, in the same session.
    let page = br.get(&init_path(&sp.entity_id(), "")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("SAMLResponse"), "{}", page.body);
    assert!(!page.body.contains("name=\"password\""), "{}", page.body);
    assert!(page.has_form("/login/continue"), "{}", page.body);
    let page = br.submit(&page, "/login/continue", &[]).await;
    let (_, page) = br.follow(page).await;
    let fields = answer_form(&sp, &page);
    assert!(!response_xml(&fields).contains("InResponseTo"));
    let (status, seen) = sp.post(&fields).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["session_index"], sid.as_str(), "the session is kept");
    assert_eq!(seen["relay_state"], Value::Null, "{seen}");
    assert_eq!(br.get("/account").await.status, 200);

    // A RelayState longer than SAML's 80 bytes: a page.
    let long = "r".repeat(81);
    let page = br
        .get(&init_path(&sp.entity_id(), &format!("&RelayState={long}")))
        .await;
    assert_error_page(&page, 400);
    let page = br
        .get(&init_path(
            &sp.entity_id(),
            &format!("&RelayState={}", &long[1..]),
        ))
        .await;
    assert!(page.has_form("/login/continue"), "{}", page.body);
}

/// An SP whose policy asks for a second factor the session does not have: the GET shows the
/// factor choice (nothing sent, no Response); the factor proven by POSTs, the session is raised
/// (not replaced) and the SP gets the unsolicited Response with the MFA class.
async fn idp_initiated_sign_in_steps_the_session_up_for_an_sp_that_wants_mfa(b: Backend) {
    use crate::mfa::{mfa_config, oathtool, text_of, totp_manifest};
    use concierge::clock::Clock;
    let sp = saml_sp_with(&["--allow-unsolicited"]);
    let more = mfa_config("optional", &totp_manifest(), "");
    let Some(app) = broker_with(b, &sp, "idp_initiated = true\nmfa = \"required\"", &more).await
    else {
        return;
    };
    sp.setup(&app).await;
    let mut br = Browser::new(&app);
    br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let before = br.session_cookie().unwrap();
    let page = br.get(&init_path(&sp.entity_id(), "&RelayState=rs")).await;
    assert_eq!(page.status, 200, "{}", page.body);
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
    let fields = answer_form(&sp, &page);
    assert!(!response_xml(&fields).contains("InResponseTo"));
    let (status, seen) = sp.post(&fields).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(
        seen["class_ref"], "https://refeds.org/profile/mfa",
        "{seen}"
    );
    assert_eq!(seen["relay_state"], "rs");
    // The same session, raised: the browser's cookie is the one it had.
    assert_eq!(br.session_cookie().unwrap(), before);
}

async fn idp_initiated_sign_in_is_refused_without_the_opt_in(b: Backend) {
    let sp = saml_sp_with(&["--allow-unsolicited"]);
    let Some(app) = broker_with(b, &sp, "", "").await else {
        return;
    };
    let refused = |page: &Page, what: &str| {
        assert_error_page(page, 400);
        assert!(page.location.is_none(), "{what}");
        assert!(!page.body.contains("SAMLResponse"), "{what}: {}", page.body);
        assert!(
            !page.body.contains("name=\"password\""),
            "{what}: {}",
            page.body
        );
    };
    for signed_in in [false, true] {
        let mut br = Browser::new(&app);
        if signed_in {
            br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
            assert!(br.session_cookie().is_some());
        }
        // Registered, without `idp_initiated = true`: the page says so.
        let page = br.get(&init_path(&sp.entity_id(), "")).await;
        refused(&page, "no opt-in");
        assert!(
            page.body.contains("does not accept sign-ins started here"),
            "{}",
            page.body
        );
        // Unknown, or not named at all.
        let page = br.get(&init_path("https://unknown.example/sp", "")).await;
        refused(&page, "unknown");
        assert!(page.body.contains("is not known"), "{}", page.body);
        let page = br.get("/saml/idp/init").await;
        refused(&page, "no sp");
        // Named twice: a bad request.
        let twice = format!("{}&sp=x", init_path(&sp.entity_id(), ""));
        assert_eq!(br.get(&twice).await.status, 400);
    }
}

/// `acs` names which registered ACS URL the unsolicited Response goes to (the first without it);
/// one not registered for the SP gets a page, and nothing is posted anywhere.
async fn idp_initiated_sign_in_goes_to_the_acs_named(b: Backend) {
    let sp = saml_sp_with(&["--allow-unsolicited"]);
    let other = format!("{}/acs-other", sp.base);
    let toml = format!(
        "[[saml_apps]]\nentity_id = \"{}\"\nacs_urls = [\"{other}\", \"{}\"]\nidp_initiated = true\n",
        sp.entity_id(),
        sp.acs()
    );
    let Some(app) = crate::helpers::spawn_provider_with(b, &[], &toml).await else {
        return;
    };
    app.clock.set(chrono::Utc::now().timestamp());
    sp.setup(&app).await;
    let mut br = Browser::new(&app);
    // Not registered for the SP: a page, before any sign-in.
    for bad in ["https://evil.example/acs", "not a url"] {
        let page = br
            .get(&init_path(
                &sp.entity_id(),
                &format!("&acs={}", urlencoding(bad)),
            ))
            .await;
        assert_error_page(&page, 400);
        assert!(
            !page.body.contains("name=\"password\""),
            "{bad}: {}",
            page.body
        );
    }
    // The second registered one, by name: the SP there accepts the Response.
    let page = br
        .get(&init_path(
            &sp.entity_id(),
            &format!("&acs={}", urlencoding(&sp.acs())),
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let fields = password(&mut br, &sp, page).await;
    assert!(
        response_xml(&fields).contains(&format!("Destination=\"{}\"", sp.acs())),
        "{}",
        response_xml(&fields)
    );
    let (status, seen) = sp.post(&fields).await;
    assert_eq!(status, 200, "{seen}");
    // Without `acs`: the first registered one.
    let page = br.get(&init_path(&sp.entity_id(), "")).await;
    let page = br.submit(&page, "/login/continue", &[]).await;
    let (_, page) = br.follow(page).await;
    assert!(page.has_form(&other), "{}", page.body);
}

per_backend_async!(
    configured_attributes_arrive_with_their_name_formats,
    without_a_list_the_default_release_is_unchanged,
    the_session_upstreams_groups_are_released,
    transient_name_ids_differ_per_session_and_per_sp,
    sp_initiated_logout_with_the_transient_name_id_ends_the_session,
    the_brokers_logout_request_carries_the_transient_name_id,
    idp_initiated_sign_in_reaches_an_sp_that_accepts_it,
    idp_initiated_sign_in_steps_the_session_up_for_an_sp_that_wants_mfa,
    idp_initiated_sign_in_is_refused_without_the_opt_in,
    idp_initiated_sign_in_goes_to_the_acs_named,
);
