//! The SAML IdP (issue #20): signed Responses issued per second on one core, against the
//! RSA-2048 signing limit measured in the same run.
//!
//! The IdP signs through `SamlIdp::sign` (xmlsec through `upstream::saml::dsig::sign_with`, the
//! one door, with the key loaded once): exclusive c14n, SHA-256 digest, RSA-SHA256 signature.
//! The same Responses signed through `dsig::sign`, which decodes the key from DER at every
//! signature (what the IdP did before the key was kept), are timed in the same run. A Response is built as the SAML answer
//! builds it (an assertion with NameID, bearer confirmation, conditions, AuthnStatement and two
//! attributes) and signed as `sign = "assertion"` (one signature, the default) and `"both"`
//! (the assertion, then the Response around it). The floor is one RSA-2048 PKCS#1 v1.5 SHA-256
//! signature through OpenSSL alone (`openssl speed rsa2048` measures the same primitive).
//!
//! ```sh
//! taskset -c 1 cargo bench -p concierge --bench saml_sign
//! taskset -c 1 openssl speed -seconds 3 rsa2048
//! ```
//!
//! Progress goes to stderr, a Markdown table to stdout. `CONCIERGE_BENCH_ITERS` (default 2000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use concierge::saml_idp::SamlIdp;
use concierge::upstream::saml::dsig;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Signer;

const P: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const A: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

fn assertion(id: &str, signed: bool) -> String {
    format!(
        concat!(
            r#"<saml:Assertion xmlns:saml="{a}" ID="{id}" Version="2.0" IssueInstant="2027-01-15T08:00:00Z">"#,
            r#"<saml:Issuer>https://id.example.com/saml/idp/metadata</saml:Issuer>{sig}"#,
            r#"<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">p-3f9a1c2e7b</saml:NameID>"#,
            r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">"#,
            r#"<saml:SubjectConfirmationData InResponseTo="id-4b7e" NotOnOrAfter="2027-01-15T08:05:00Z" Recipient="https://app.example.com/saml/acs"/>"#,
            r#"</saml:SubjectConfirmation></saml:Subject>"#,
            r#"<saml:Conditions NotBefore="2027-01-15T07:59:00Z" NotOnOrAfter="2027-01-15T08:05:00Z"><saml:AudienceRestriction>"#,
            r#"<saml:Audience>https://app.example.com/saml/metadata</saml:Audience></saml:AudienceRestriction></saml:Conditions>"#,
            r#"<saml:AuthnStatement AuthnInstant="2027-01-15T07:58:00Z" SessionIndex="s-9c1d" SessionNotOnOrAfter="2027-01-15T16:00:00Z">"#,
            r#"<saml:AuthnContext><saml:AuthnContextClassRef>urn:concierge:loa:2</saml:AuthnContextClassRef></saml:AuthnContext>"#,
            r#"</saml:AuthnStatement><saml:AttributeStatement>"#,
            r#"<saml:Attribute Name="email" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue>alice@example.com</saml:AttributeValue></saml:Attribute>"#,
            r#"<saml:Attribute Name="name" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue>Alice Kim</saml:AttributeValue></saml:Attribute>"#,
            r#"</saml:AttributeStatement></saml:Assertion>"#
        ),
        a = A,
        id = id,
        sig = if signed {
            SamlIdp::signature_template(id)
        } else {
            String::new()
        },
    )
}

fn response(id: &str, assertion: &str, signed: bool) -> String {
    format!(
        concat!(
            r#"<samlp:Response xmlns:samlp="{p}" xmlns:saml="{a}" ID="{id}" Version="2.0" IssueInstant="2027-01-15T08:00:00Z" Destination="https://app.example.com/saml/acs" InResponseTo="id-4b7e">"#,
            r#"<saml:Issuer>https://id.example.com/saml/idp/metadata</saml:Issuer>{sig}"#,
            r#"<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{assertion}</samlp:Response>"#
        ),
        p = P,
        a = A,
        id = id,
        sig = if signed {
            SamlIdp::signature_template(id)
        } else {
            String::new()
        },
        assertion = assertion,
    )
}

/// The key as a signature is given it.
#[derive(Clone, Copy)]
enum Key<'a> {
    /// Loaded once (`SamlIdp::sign`).
    Loaded(&'a xmlsec_lockdown::SigningKey),
    /// DER, decoded at each signature.
    Der(&'a [u8]),
}

fn sign(doc: &str, id: &str, key: Key<'_>) -> String {
    match key {
        Key::Loaded(k) => dsig::sign_with(doc, id, k).unwrap(),
        Key::Der(der) => dsig::sign(doc, id, der).unwrap(),
    }
}

/// One signed Response as `sign` asks: the assertion signed, and with `both` the Response too.
fn issue(key: Key<'_>, n: usize, both: bool) -> String {
    let (aid, rid) = (format!("_a{n:08x}"), format!("_r{n:08x}"));
    let signed = sign(&assertion(&aid, true), &aid, key);
    let body = signed
        .split_once("?>")
        .map_or(signed.as_str(), |(_, b)| b)
        .trim();
    if both {
        sign(&response(&rid, body, true), &rid, key)
    } else {
        response(&rid, body, false)
    }
}

fn stats(name: &str, mut times: Vec<Duration>) -> f64 {
    times.sort();
    let total: Duration = times.iter().sum();
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    let per_s = times.len() as f64 / total.as_secs_f64();
    println!(
        "| {name} | {:.0} | {:.0} | {per_s:.0} |",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
    per_s
}

fn main() {
    let iters: usize = std::env::var("CONCIERGE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let der = key.private_key_to_der().unwrap();
    let loaded = xmlsec_lockdown::SigningKey::from_der(&der).unwrap();
    let sample = issue(Key::Loaded(&loaded), 0, true);
    assert!(
        sample.matches("<ds:SignatureValue>").count() == 2,
        "{sample}"
    );
    assert_eq!(sample, issue(Key::Der(&der), 0, true));

    eprintln!("timing {iters} RSA-2048 signatures");
    let mut floor = Vec::with_capacity(iters);
    for n in 0..iters {
        let t = Instant::now();
        let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
        s.update(format!("SignedInfo {n}").as_bytes()).unwrap();
        let sig = s.sign_to_vec().unwrap();
        floor.push(t.elapsed());
        assert_eq!(sig.len(), 256);
    }
    let time = |what: &str, key: Key<'_>, both: bool| {
        eprintln!("timing {iters} Responses, {what}");
        let mut times = Vec::with_capacity(iters);
        for n in 0..iters {
            let t = Instant::now();
            let doc = issue(key, n, both);
            times.push(t.elapsed());
            assert!(doc.len() > 2000);
        }
        times
    };
    let one = time("assertion signed", Key::Loaded(&loaded), false);
    let two = time("assertion and Response signed", Key::Loaded(&loaded), true);
    let one_der = time(
        "assertion signed, key decoded each time",
        Key::Der(&der),
        false,
    );
    let two_der = time(
        "assertion and Response signed, key decoded each time",
        Key::Der(&der),
        true,
    );
    println!("| one core, {iters} each | p50 µs | p99 µs | per second |");
    println!("|---|---|---|---|");
    let limit = stats("RSA-2048 signature alone (OpenSSL)", floor);
    let a = stats("Response, assertion signed (`sign = \"assertion\"`)", one);
    let b = stats("Response, both signed (`sign = \"both\"`)", two);
    let a_der = stats(
        "Response, assertion signed, key decoded at each signature (before)",
        one_der,
    );
    let b_der = stats(
        "Response, both signed, key decoded at each signature (before)",
        two_der,
    );
    println!(
        "\nratio to the signing limit: {:.2} (one signature), {:.2} of half the limit (two)",
        a / limit,
        b / (limit / 2.0)
    );
    println!(
        "key decoded at each signature (before): {:.2} (one signature), {:.2} of half the limit (two)",
        a_der / limit,
        b_der / (limit / 2.0)
    );
}
