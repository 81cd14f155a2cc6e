//! SAML Response validations on one core: the whole check of one posted Response (structure
//! scan, xmlsec signature verification against the IdP's metadata certificate, parsing the
//! verified bytes, every binding and time check), as the ACS runs it before the replay cache.
//! `taskset -c 0 cargo bench -p concierge --bench saml_validate`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use concierge::upstream::saml::response::{Expected, decode, validate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use samael::crypto::CertificateDer;

const NOW: i64 = 1_800_000_000;
const ACS: &str = "https://id.example.com/upstream/corp/saml/acs";
const SP: &str = "https://id.example.com/upstream/corp/saml/metadata";
const IDP: &str = "https://idp.example.com/saml";

fn cert(key: &PKey<Private>) -> CertificateDer {
    let mut b = X509::builder().unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    CertificateDer::from(b.build().to_der().unwrap())
}

fn template(id: &str) -> String {
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature>"##
    )
}

/// A realistic signed Response: the assertion signed, five attributes.
fn signed_response(key: &PKey<Private>) -> String {
    let t = |s: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp(NOW + s, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let attr = |name: &str, v: &str| {
        format!(
            r#"<saml:Attribute Name="{name}"><saml:AttributeValue>{v}</saml:AttributeValue></saml:Attribute>"#
        )
    };
    let assertion = format!(
        concat!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a1" Version="2.0" IssueInstant="{i}">"#,
            r#"<saml:Issuer>{idp}</saml:Issuer>{sig}<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">u-12345</saml:NameID>"#,
            r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData InResponseTo="_req" NotOnOrAfter="{e}" Recipient="{acs}"/></saml:SubjectConfirmation></saml:Subject>"#,
            r#"<saml:Conditions NotBefore="{b}" NotOnOrAfter="{e}"><saml:AudienceRestriction><saml:Audience>{sp}</saml:Audience></saml:AudienceRestriction></saml:Conditions>"#,
            r#"<saml:AuthnStatement AuthnInstant="{i}" SessionIndex="s1"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"#,
            r#"<saml:AttributeStatement>{attrs}</saml:AttributeStatement></saml:Assertion>"#
        ),
        i = t(0),
        b = t(-30),
        e = t(300),
        idp = IDP,
        sig = template("_a1"),
        acs = ACS,
        sp = SP,
        attrs = [
            attr("mail", "pat@corp.example"),
            attr("displayName", "Pat Example"),
            attr("givenName", "Pat"),
            attr("sn", "Example"),
            attr("groups", "staff"),
        ]
        .concat(),
    );
    let signed = concierge::upstream::saml::dsig::sign(
        &assertion,
        "_a1",
        &key.private_key_to_der().unwrap(),
    )
    .unwrap();
    // Without the XML declaration libxml2 adds (`encoding="UTF-8"` included): one inside the
    // Response would not be well-formed.
    let signed = match signed.strip_prefix("<?xml") {
        Some(decl) => decl.split_once("?>").map_or(decl, |(_, rest)| rest),
        None => signed.as_str(),
    }
    .trim();
    format!(
        concat!(
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r1" Version="2.0" IssueInstant="{i}" Destination="{acs}" InResponseTo="_req">"#,
            r#"<saml:Issuer>{idp}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{a}</samlp:Response>"#
        ),
        i = t(0),
        acs = ACS,
        idp = IDP,
        a = signed,
    )
}

fn saml_bench(c: &mut Criterion) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let certs = [cert(&key)];
    let form_value = STANDARD.encode(signed_response(&key));
    let expected = Expected {
        idp_entity_id: IDP,
        sp_entity_id: SP,
        acs_url: ACS,
        certs: &certs,
        request_id: Some("_req"),
        decryption_key: None,
        name_id_format: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        now: NOW,
    };
    // It must pass, or the figure means nothing.
    validate(&decode(&form_value).unwrap(), &expected).unwrap();
    let mut g = c.benchmark_group("saml");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate/rsa2048-sha256-assertion-signed", |b| {
        b.iter(|| validate(&decode(&form_value).unwrap(), &expected).unwrap())
    });
    g.finish();
}

criterion_group!(benches, saml_bench);
criterion_main!(benches);
