//! samael's own verification (the call the broker makes, without the broker's reference
//! pre-check) on signatures whose `ds:Reference` names a file and a local HTTP listener: xmlsec
//! reads and connects before the lockdown and does neither after it. The lockdown is process-wide
//! and irreversible, so "before" and "after" are one test in a test binary of its own. The same
//! holds for transforms: a correctly signed document whose Reference runs an XSLT or XPath
//! transform verifies before and not after (xmlsec no longer knows those transforms).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// samael's own calls, before and after the lockdown, are what is measured here.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoError, CryptoProvider, ReduceMode,
};

const FILE_CONTENT: &str = "the content of a file on the broker's disk";
const HTTP_BODY: &str = "what the listener answered";

fn keypair() -> (PKey<Private>, CertificateDer) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "idp").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let der = cert.build().to_der().unwrap();
    (key, CertificateDer::from(der))
}

/// A document signed by `key` whose one Reference is `uri` (`transforms` inside it).
fn signed(uri: &str, transforms: &str, key: &PKey<Private>) -> String {
    Crypto::sign_xml(
        template(uri, transforms),
        &key.private_key_to_der().unwrap(),
    )
    .unwrap()
}

/// The document `signed` signs, its Signature still a template.
fn template(uri: &str, transforms: &str) -> String {
    format!(
        r#"<doc xmlns="urn:test" ID="_doc"><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="{uri}">{transforms}<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature><v>signed</v></doc>"#
    )
}

/// What the broker calls (`upstream/saml/response.rs`): the bytes xmlsec hashed for the one
/// verified reference.
fn verify(xml: &str, cert: &CertificateDer) -> Result<String, CryptoError> {
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        std::slice::from_ref(cert),
        ReduceMode::PreDigest,
        Some(&[AllowedSignatureAlgorithm::RsaSha256]),
    )
}

/// An HTTP/1.0 server on 127.0.0.1 that counts the connections it accepted, in order.
fn listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{HTTP_BODY}",
                HTTP_BODY.len()
            );
        }
    });
    (port, accepted)
}

/// Connects once and reads the answer, then returns how many connections the listener accepted,
/// this one included: it serves them in order, so every earlier one has been counted.
fn connections_so_far(port: u16, accepted: &AtomicUsize) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /sentinel HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with(HTTP_BODY));
    accepted.load(Ordering::SeqCst)
}

#[test]
fn xmlsec_reads_files_and_urls_before_the_lockdown_and_nothing_after() {
    let (key, cert) = keypair();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("referenced.txt");
    std::fs::write(&path, FILE_CONTENT).unwrap();
    let (port, accepted) = listener();

    // Signed while xmlsec may still open URIs (signing dereferences them too).
    let by_file = signed(&format!("file://{}", path.display()), "", &key);
    let by_url = signed(&format!("http://127.0.0.1:{port}/ref"), "", &key);
    let same_document = signed(
        "#_doc",
        r#"<ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>"#,
        &key,
    );

    // XSLT's document() is the one way to I/O that does not pass through xmlsec's URI handlers
    // (libxslt loads through libxml2): xmlsec's own libxslt security preferences refuse file and
    // network reads even before the lockdown, so a stylesheet that reads either fails to run
    // (it would run, and sign, were the read allowed: the file is XML).
    let xml_file = dir.path().join("referenced.xml");
    std::fs::write(&xml_file, "<secret>on the broker's disk</secret>").unwrap();
    let reading = |uri: &str| {
        let stylesheet = format!(
            r#"<ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:output method="text"/><xsl:template match="/"><xsl:value-of select="document('{uri}')"/></xsl:template></xsl:stylesheet></ds:Transform></ds:Transforms>"#
        );
        Crypto::sign_xml(
            template("#_doc", &stylesheet),
            &key.private_key_to_der().unwrap(),
        )
    };
    let n = connections_so_far(port, &accepted);
    assert!(reading(&format!("file://{}", xml_file.display())).is_err());
    assert!(reading(&format!("http://127.0.0.1:{port}/xslt")).is_err());
    assert_eq!(
        connections_so_far(port, &accepted),
        n + 1,
        "only the sentinel"
    );

    // Nor does samael's parser (libxml2 without NOENT, DTDLOAD or DTDVALID) load an external
    // DTD or entity, before the lockdown as after (the broker refuses a DOCTYPE before parsing).
    let with_dtd = signed("#_doc", "", &key)
        .replacen(
            "<doc ",
            &format!(
                r#"<!DOCTYPE doc SYSTEM "http://127.0.0.1:{port}/dtd" [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/entity">]><doc "#
            ),
            1,
        )
        .replacen("<v>signed</v>", "<v>signed&e;</v>", 1);
    assert!(with_dtd.contains("<v>signed&e;</v>"), "{with_dtd}");
    assert!(verify(&with_dtd, &cert).is_err());
    assert_eq!(
        connections_so_far(port, &accepted),
        n + 2,
        "only the sentinels"
    );

    // Before: xmlsec reads the file and fetches the URL; what it hashed is their content.
    let n = connections_so_far(port, &accepted);
    assert_eq!(verify(&by_file, &cert).unwrap(), FILE_CONTENT);
    assert_eq!(verify(&by_url, &cert).unwrap(), HTTP_BODY);
    let before = connections_so_far(port, &accepted);
    assert_eq!(before, n + 2, "one fetch by the verification, one sentinel");
    assert!(
        verify(&same_document, &cert)
            .unwrap()
            .contains("<v>signed</v>")
    );

    // Signed, and verified, while xmlsec still knows every transform.
    const ENVELOPED: &str =
        r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#;
    const EXC_C14N: &str = r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#;
    let xslt = format!(
        r#"<ds:Transforms>{ENVELOPED}{EXC_C14N}<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template></xsl:stylesheet></ds:Transform></ds:Transforms>"#
    );
    let xpath = format!(
        r#"<ds:Transforms>{ENVELOPED}<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>true()</ds:XPath></ds:Transform>{EXC_C14N}</ds:Transforms>"#
    );
    let by_xslt = signed("#_doc", &xslt, &key);
    let by_xpath = signed("#_doc", &xpath, &key);
    assert!(verify(&by_xslt, &cert).is_ok());
    assert!(verify(&by_xpath, &cert).is_ok());
    assert!(
        xmlsec_lockdown::registered_transforms().len() > xmlsec_lockdown::ALLOWED_TRANSFORMS.len()
    );

    xmlsec_lockdown::lock_down().unwrap();
    xmlsec_lockdown::lock_down().unwrap();

    // Only the allow-list is left: the documents that name XSLT or XPath no longer verify (nor
    // can such a document be signed), while the SAML profile still signs and verifies.
    let mut left = xmlsec_lockdown::registered_transforms();
    left.sort();
    let mut allowed: Vec<String> = xmlsec_lockdown::ALLOWED_TRANSFORMS
        .iter()
        .map(|(href, _)| (*href).to_owned())
        .collect();
    allowed.sort();
    assert_eq!(left, allowed);
    assert!(verify(&by_xslt, &cert).is_err());
    assert!(verify(&by_xpath, &cert).is_err());
    assert!(
        Crypto::sign_xml(template("#_doc", &xslt), &key.private_key_to_der().unwrap()).is_err()
    );
    let profile = format!("<ds:Transforms>{ENVELOPED}{EXC_C14N}</ds:Transforms>");
    let resigned = xmlsec_lockdown::sign(
        &template("#_doc", &profile),
        &key.private_key_to_der().unwrap(),
    )
    .unwrap();
    assert!(
        xmlsec_lockdown::verify(
            &resigned,
            std::slice::from_ref(&cert),
            &[AllowedSignatureAlgorithm::RsaSha256]
        )
        .unwrap()
        .contains("<v>signed</v>")
    );

    // After: the same, correctly signed documents no longer verify, and nothing connected (the
    // sentinel is the only new connection).
    let file_refused = verify(&by_file, &cert).is_err();
    let url_refused = verify(&by_url, &cert).is_err();
    let new_connections = connections_so_far(port, &accepted) - before;
    assert_eq!(
        (file_refused, url_refused, new_connections),
        (true, true, 1)
    );
    // Same-document references verify as before.
    assert!(
        verify(&same_document, &cert)
            .unwrap()
            .contains("<v>signed</v>")
    );
}
