//! Owns the SAML cryptography that is not XML-DSig: the HTTP-Redirect binding (DEFLATE, base64,
//! the RSA-SHA256 query signature, both ways) and decrypting an EncryptedAssertion (RSA-OAEP key
//! transport, AES-GCM content, or AES-CBC inside a Response whose signature verified), with
//! every length checked.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::{Signer, Verifier};
use openssl::symm::{Cipher, Crypter, Mode};
use samael::crypto::CertificateDer;

use super::SamlError;

pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// DEFLATE (raw) then base64: the HTTP-Redirect binding's encoding.
pub fn deflate_b64(xml: &str) -> Result<String, SamlError> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes())
        .map_err(|e| SamlError::Malformed(e.to_string()))?;
    let bytes = e
        .finish()
        .map_err(|e| SamlError::Malformed(e.to_string()))?;
    Ok(STANDARD.encode(bytes))
}

/// The inverse of [`deflate_b64`], refusing output past the document size limit.
pub fn inflate_b64(b64: &str) -> Result<String, SamlError> {
    let raw = STANDARD
        .decode(b64.trim())
        .map_err(|_| SamlError::Malformed("not base64".into()))?;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(raw.as_slice())
        .take(super::xml::MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| SamlError::Malformed("not DEFLATE".into()))?;
    if out.len() > super::xml::MAX_DOCUMENT {
        return Err(SamlError::TooLarge);
    }
    String::from_utf8(out).map_err(|_| SamlError::Malformed("not UTF-8".into()))
}

/// The query string of an HTTP-Redirect message (`param` is SAMLRequest or SAMLResponse),
/// signed with `key` when given.
pub fn redirect_query(
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    key: Option<&PKey<Private>>,
) -> Result<String, SamlError> {
    let mut q = format!("{param}={}", enc(&deflate_b64(xml)?));
    if let Some(rs) = relay_state {
        q.push_str(&format!("&RelayState={}", enc(rs)));
    }
    if let Some(key) = key {
        q.push_str(&format!("&SigAlg={}", enc(RSA_SHA256)));
        let mut s = Signer::new(MessageDigest::sha256(), key)
            .map_err(|e| SamlError::Config(e.to_string()))?;
        s.update(q.as_bytes())
            .map_err(|e| SamlError::Config(e.to_string()))?;
        let sig = s
            .sign_to_vec()
            .map_err(|e| SamlError::Config(e.to_string()))?;
        q.push_str(&format!("&Signature={}", enc(&STANDARD.encode(sig))));
    }
    Ok(q)
}

/// A received HTTP-Redirect message: its decoded parameters, and whether its query signature
/// verifies under one of `certs` (computed over the parameters exactly as they were sent).
pub struct RedirectMessage {
    pub param: String,
    pub xml: String,
    pub relay_state: Option<String>,
    pub signed: bool,
}

/// Reads the raw query string of an HTTP-Redirect message (`SAMLRequest` or `SAMLResponse`).
/// A `Signature` that does not verify under `certs` is an error; no signature gives
/// `signed: false` (the caller decides whether that is acceptable).
pub fn read_redirect(
    raw_query: &str,
    certs: &[CertificateDer],
) -> Result<RedirectMessage, SamlError> {
    let mut raw = std::collections::BTreeMap::new();
    for pair in raw_query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if raw.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(SamlError::Malformed(format!("`{k}` given twice")));
        }
    }
    let decode = |v: &str| -> String {
        url::form_urlencoded::parse(format!("x={v}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (param, value) = ["SAMLRequest", "SAMLResponse"]
        .iter()
        .find_map(|p| raw.get(*p).map(|v| (*p, v.clone())))
        .ok_or(SamlError::Malformed(
            "no SAMLRequest or SAMLResponse".into(),
        ))?;
    let xml = inflate_b64(&decode(&value))?;
    let relay_state = raw.get("RelayState").map(|v| decode(v));
    let signed = match (raw.get("SigAlg"), raw.get("Signature")) {
        (None, None) => false,
        (Some(alg), Some(sig)) => {
            let digest = match decode(alg).as_str() {
                RSA_SHA256 => MessageDigest::sha256(),
                "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => MessageDigest::sha384(),
                "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => MessageDigest::sha512(),
                other => return Err(SamlError::Signature(format!("SigAlg {other} refused"))),
            };
            let mut signed_part = format!("{param}={value}");
            if let Some(rs) = raw.get("RelayState") {
                signed_part.push_str(&format!("&RelayState={rs}"));
            }
            signed_part.push_str(&format!("&SigAlg={alg}"));
            let sig = STANDARD
                .decode(decode(sig))
                .map_err(|_| SamlError::Signature("Signature is not base64".into()))?;
            let ok = certs.iter().any(|c| {
                openssl::x509::X509::from_der(c.der_data())
                    .and_then(|x| x.public_key())
                    .and_then(|k| {
                        let mut v = Verifier::new(digest, &k)?;
                        v.update(signed_part.as_bytes())?;
                        v.verify(&sig)
                    })
                    .unwrap_or(false)
            });
            if !ok {
                return Err(SamlError::Signature(
                    "the query signature does not verify".into(),
                ));
            }
            true
        }
        _ => return Err(SamlError::Signature("SigAlg without Signature".into())),
    };
    Ok(RedirectMessage {
        param: param.to_owned(),
        xml,
        relay_state,
        signed,
    })
}

fn cipher_value(v: &str) -> Result<Vec<u8>, SamlError> {
    let clean: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(clean)
        .map_err(|_| SamlError::Decryption("CipherValue is not base64".into()))
}

/// The parts of the one `xenc:EncryptedData` (and its `xenc:EncryptedKey`) in a document.
#[derive(Debug, Default)]
struct Encrypted {
    data_method: Option<String>,
    data: Option<String>,
    key_method: Option<String>,
    key: Option<String>,
}

fn encrypted_parts(xml: &str) -> Result<Encrypted, SamlError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut out = Encrypted::default();
    let parent_is = |path: &[Vec<u8>], back: usize, name: &[u8]| {
        path.len() > back && path[path.len() - 1 - back] == name
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| SamlError::Malformed(e.to_string()))?;
        let start = matches!(event, Event::Start(_));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                if e.local_name().as_ref() == b"EncryptionMethod" {
                    let alg = e
                        .try_get_attribute("Algorithm")
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                    if parent_is(&path, 0, b"EncryptedData") {
                        out.data_method = alg;
                    } else if parent_is(&path, 0, b"EncryptedKey") {
                        out.key_method = alg;
                    }
                }
                if start {
                    path.push(e.local_name().as_ref().to_vec());
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) if parent_is(&path, 0, b"CipherValue") => {
                let text = String::from_utf8_lossy(&t).into_owned();
                if parent_is(&path, 2, b"EncryptedKey") {
                    out.key = Some(text);
                } else if parent_is(&path, 2, b"EncryptedData") {
                    out.data = Some(text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Decrypts the EncryptedAssertion in `xml` with the SP's key; returns the assertion's XML.
/// `cbc_allowed` only when `xml` is the verified bytes of a signed Response: unauthenticated
/// AES-CBC is the XML-Encryption padding oracle, so otherwise only AES-GCM is decrypted, and the
/// method is checked before any key is used.
pub fn decrypt_assertion(
    xml: &str,
    key: &PKey<Private>,
    cbc_allowed: bool,
) -> Result<String, SamlError> {
    let fail = |m: &str| SamlError::Decryption(m.to_owned());
    let parts = encrypted_parts(xml)?;
    let (Some(key_method), Some(wrapped), Some(method), Some(data)) =
        (parts.key_method, parts.key, parts.data_method, parts.data)
    else {
        return Err(fail("EncryptedData or EncryptedKey incomplete"));
    };
    let (cipher, gcm) = match method.as_str() {
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => (Cipher::aes_128_cbc(), false),
        "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => (Cipher::aes_192_cbc(), false),
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => (Cipher::aes_256_cbc(), false),
        "http://www.w3.org/2009/xmlenc11#aes128-gcm" => (Cipher::aes_128_gcm(), true),
        "http://www.w3.org/2009/xmlenc11#aes192-gcm" => (Cipher::aes_192_gcm(), true),
        "http://www.w3.org/2009/xmlenc11#aes256-gcm" => (Cipher::aes_256_gcm(), true),
        other => return Err(fail(&format!("content encryption {other} refused"))),
    };
    if !gcm && !cbc_allowed {
        return Err(SamlError::CbcUnsigned);
    }
    // RSA PKCS#1 v1.5 key transport is refused: it is a decryption oracle (Bleichenbacher).
    if !matches!(
        key_method.as_str(),
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
            | "http://www.w3.org/2009/xmlenc11#rsa-oaep"
    ) {
        return Err(fail(&format!("key transport {key_method} refused")));
    }
    let wrapped = cipher_value(&wrapped)?;
    let rsa = key
        .rsa()
        .map_err(|_| fail("the decryption key is not RSA"))?;
    let mut cek = vec![0u8; rsa.size() as usize];
    let n = rsa
        .private_decrypt(&wrapped, &mut cek, Padding::PKCS1_OAEP)
        .map_err(|_| fail("the content key does not decrypt"))?;
    cek.truncate(n);
    let data = cipher_value(&data)?;
    if cek.len() != cipher.key_len() {
        return Err(fail("the content key has the wrong length"));
    }
    let iv_len = if gcm { 12 } else { 16 };
    let tag_len = if gcm { 16 } else { 0 };
    if data.len() < iv_len + tag_len + 1 {
        return Err(fail("the cipher text is too short"));
    }
    let (iv, rest) = data.split_at(iv_len);
    let (body, tag) = rest.split_at(rest.len() - tag_len);
    let mut c = Crypter::new(cipher, Mode::Decrypt, &cek, Some(iv))
        .map_err(|_| fail("cipher setup failed"))?;
    c.pad(false);
    if gcm {
        c.set_tag(tag).map_err(|_| fail("bad GCM tag"))?;
    }
    let mut out = vec![0u8; body.len() + cipher.block_size()];
    let mut n = c
        .update(body, &mut out)
        .map_err(|_| fail("the content does not decrypt"))?;
    n += c
        .finalize(&mut out[n..])
        .map_err(|_| fail("the content does not decrypt"))?;
    out.truncate(n);
    if !gcm {
        // XML Encryption padding: the last byte says how many bytes were added (1..=16).
        let pad = out.last().copied().unwrap_or(0) as usize;
        if pad == 0 || pad > 16 || pad > out.len() {
            return Err(fail("bad padding"));
        }
        out.truncate(out.len() - pad);
    }
    String::from_utf8(out).map_err(|_| fail("the assertion is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    fn cert_for(key: &PKey<Private>) -> CertificateDer {
        use openssl::{asn1::Asn1Time, x509::X509};
        let mut b = X509::builder().unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        CertificateDer::from(b.build().to_der().unwrap())
    }

    #[test]
    fn redirect_messages_round_trip_and_signatures_bind_every_parameter() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let xml = "<samlp:LogoutRequest ID=\"x\"/>";
        let q = redirect_query("SAMLRequest", xml, Some("r s&t"), Some(&key)).unwrap();
        let m = read_redirect(&q, &[cert_for(&key)]).unwrap();
        assert!(m.signed);
        assert_eq!(m.xml, xml);
        assert_eq!(m.relay_state.as_deref(), Some("r s&t"));
        assert!(
            read_redirect(&q, &[cert_for(&other)]).is_err(),
            "another key"
        );
        let tampered = q.replace("RelayState=r", "RelayState=R");
        assert!(read_redirect(&tampered, &[cert_for(&key)]).is_err());
        let unsigned = redirect_query("SAMLRequest", xml, None, None).unwrap();
        assert!(!read_redirect(&unsigned, &[cert_for(&key)]).unwrap().signed);
    }

    #[test]
    fn inflate_refuses_bombs() {
        let big = "a".repeat(super::super::xml::MAX_DOCUMENT + 10);
        let b64 = deflate_b64(&big).unwrap();
        assert!(matches!(inflate_b64(&b64), Err(SamlError::TooLarge)));
    }
}
