//! Owns the SAML cryptography that is not XML-DSig: the HTTP-Redirect binding (DEFLATE, base64,
//! the RSA-SHA256 query signature, both ways) and XML-Encryption of an assertion both ways:
//! decrypting an EncryptedAssertion (RSA-OAEP key transport, AES-GCM content, or AES-CBC inside a
//! Response whose signature verified), with every length checked, and encrypting one to a
//! service provider's RSA key (ADR 22).

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Padding;
use openssl::sign::{Signer, Verifier};
use openssl::symm::{Cipher, Crypter, Mode};
use samael::crypto::CertificateDer;

use super::SamlError;
use crate::clock::Entropy;

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

/// RSA-OAEP key transport of XML-Encryption 1.0 (SHA-1 digest and MGF1-SHA1 when no
/// `DigestMethod` says otherwise): what the broker writes, the one xmlsec1 1.2 reads.
pub const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
/// RSA-OAEP of XML-Encryption 1.1 (read only, with its default digests).
pub const RSA_OAEP_11: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";
const XENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";
const XENC_ELEMENT: &str = "http://www.w3.org/2001/04/xmlenc#Element";

/// The content encryption of an `xenc:EncryptedData`: the AES modes read (all six) and
/// written (what an SP's `encryption` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncryption {
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes192Gcm,
    Aes256Gcm,
}

impl ContentEncryption {
    const ALL: [Self; 6] = [
        Self::Aes128Cbc,
        Self::Aes192Cbc,
        Self::Aes256Cbc,
        Self::Aes128Gcm,
        Self::Aes192Gcm,
        Self::Aes256Gcm,
    ];

    /// The algorithm URI of its `xenc:EncryptionMethod`.
    pub fn uri(self) -> &'static str {
        match self {
            Self::Aes128Cbc => "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            Self::Aes192Cbc => "http://www.w3.org/2001/04/xmlenc#aes192-cbc",
            Self::Aes256Cbc => "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
            Self::Aes128Gcm => "http://www.w3.org/2009/xmlenc11#aes128-gcm",
            Self::Aes192Gcm => "http://www.w3.org/2009/xmlenc11#aes192-gcm",
            Self::Aes256Gcm => "http://www.w3.org/2009/xmlenc11#aes256-gcm",
        }
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.uri() == uri)
    }

    fn cipher(self) -> Cipher {
        match self {
            Self::Aes128Cbc => Cipher::aes_128_cbc(),
            Self::Aes192Cbc => Cipher::aes_192_cbc(),
            Self::Aes256Cbc => Cipher::aes_256_cbc(),
            Self::Aes128Gcm => Cipher::aes_128_gcm(),
            Self::Aes192Gcm => Cipher::aes_192_gcm(),
            Self::Aes256Gcm => Cipher::aes_256_gcm(),
        }
    }

    /// Authenticated (GCM), or not (CBC: only inside a signature that covers the cipher text).
    pub fn is_gcm(self) -> bool {
        matches!(self, Self::Aes128Gcm | Self::Aes192Gcm | Self::Aes256Gcm)
    }

    /// The IV before the cipher text: 96 bits for GCM, a block for CBC.
    fn iv_len(self) -> usize {
        if self.is_gcm() { 12 } else { 16 }
    }

    /// The GCM tag after the cipher text (128 bits, the XML-Encryption 1.1 size).
    fn tag_len(self) -> usize {
        if self.is_gcm() { 16 } else { 0 }
    }
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
    let content = ContentEncryption::from_uri(&method)
        .ok_or_else(|| fail(&format!("content encryption {method} refused")))?;
    let (cipher, gcm) = (content.cipher(), content.is_gcm());
    if !gcm && !cbc_allowed {
        return Err(SamlError::CbcUnsigned);
    }
    // RSA PKCS#1 v1.5 key transport is refused: it is a decryption oracle (Bleichenbacher).
    if !matches!(key_method.as_str(), RSA_OAEP_MGF1P | RSA_OAEP_11) {
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
    let (iv_len, tag_len) = (content.iv_len(), content.tag_len());
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

/// `assertion` (a whole `saml:Assertion` element, signed already: SAML Core 6.2) encrypted for
/// the RSA key `recipient`, as a `saml:EncryptedAssertion`: a fresh content key and IV from
/// `entropy`; the content with `content` (GCM: IV, cipher text, 128-bit tag; CBC: IV, then the
/// cipher text with PKCS#7 padding, which is XML-Encryption's padding with its free bytes
/// fixed); the content key wrapped with RSA-OAEP (`rsa-oaep-mgf1p`, SHA-1 and MGF1-SHA1) in an
/// `xenc:EncryptedKey` inside the `EncryptedData`'s `ds:KeyInfo`. Never PKCS#1 v1.5. The
/// inverse of [`decrypt_assertion`].
pub fn encrypt_assertion<T: HasPublic>(
    assertion: &str,
    content: ContentEncryption,
    recipient: &PKeyRef<T>,
    entropy: &dyn Entropy,
) -> Result<String, SamlError> {
    let fail = |m: &str| SamlError::Encryption(m.to_owned());
    let rsa = recipient
        .rsa()
        .map_err(|_| fail("the recipient's key is not RSA"))?;
    let cipher = content.cipher();
    let mut key = vec![0u8; cipher.key_len()];
    entropy.fill(&mut key);
    let mut data = vec![0u8; content.iv_len()];
    entropy.fill(&mut data);
    let iv = data.clone();
    if content.is_gcm() {
        let mut tag = vec![0u8; content.tag_len()];
        let body = openssl::symm::encrypt_aead(
            cipher,
            &key,
            Some(&iv),
            &[],
            assertion.as_bytes(),
            &mut tag,
        )
        .map_err(|_| fail("the content does not encrypt"))?;
        data.extend(body);
        data.extend(tag);
    } else {
        let body = openssl::symm::encrypt(cipher, &key, Some(&iv), assertion.as_bytes())
            .map_err(|_| fail("the content does not encrypt"))?;
        data.extend(body);
    }
    let mut wrapped = vec![0u8; rsa.size() as usize];
    let n = rsa
        .public_encrypt(&key, &mut wrapped, Padding::PKCS1_OAEP)
        .map_err(|_| fail("the content key does not wrap"))?;
    wrapped.truncate(n);
    Ok(format!(
        concat!(
            r#"<saml:EncryptedAssertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">"#,
            r#"<xenc:EncryptedData xmlns:xenc="{xenc}" Type="{element}">"#,
            r#"<xenc:EncryptionMethod Algorithm="{content}"/>"#,
            r#"<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey>"#,
            r#"<xenc:EncryptionMethod Algorithm="{transport}"/>"#,
            r#"<xenc:CipherData><xenc:CipherValue>{key}</xenc:CipherValue></xenc:CipherData>"#,
            r#"</xenc:EncryptedKey></ds:KeyInfo>"#,
            r#"<xenc:CipherData><xenc:CipherValue>{data}</xenc:CipherValue></xenc:CipherData>"#,
            r#"</xenc:EncryptedData></saml:EncryptedAssertion>"#
        ),
        xenc = XENC_NS,
        element = XENC_ELEMENT,
        content = content.uri(),
        transport = RSA_OAEP_MGF1P,
        key = STANDARD.encode(wrapped),
        data = STANDARD.encode(data),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{OsEntropy, SeededEntropy};
    use openssl::rsa::Rsa;

    fn cert_for(key: &PKey<Private>) -> CertificateDer {
        CertificateDer::from(
            crate::domain::test_certs::self_signed(key)
                .to_der()
                .unwrap(),
        )
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

    const ASSERTION: &str = r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a" Version="2.0"><saml:Issuer>https://idp.example</saml:Issuer><saml:Subject><saml:NameID>alice@example.com</saml:NameID></saml:Subject></saml:Assertion>"#;

    /// The base64 text of the `n`-th `CipherValue` (0: the wrapped key, 1: the content).
    fn cipher_text(xml: &str, n: usize) -> &str {
        xml.split("<xenc:CipherValue>")
            .nth(n + 1)
            .and_then(|s| s.split('<').next())
            .unwrap()
    }

    #[test]
    fn encrypted_assertions_decrypt_with_the_sp_key_only() {
        let sp = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        // The public half is all the encryption sees (the SP's certificate).
        let public = PKey::public_key_from_der(&sp.public_key_to_der().unwrap()).unwrap();
        for content in ContentEncryption::ALL {
            let xml = encrypt_assertion(ASSERTION, content, &public, &OsEntropy).unwrap();
            assert!(!xml.contains("alice"), "{xml}");
            assert!(xml.starts_with("<saml:EncryptedAssertion"), "{xml}");
            assert!(
                xml.contains(content.uri()) && xml.contains(RSA_OAEP_MGF1P),
                "{xml}"
            );
            assert!(xml.contains(r#"Type="http://www.w3.org/2001/04/xmlenc#Element""#));
            let cbc = !content.is_gcm();
            assert_eq!(decrypt_assertion(&xml, &sp, cbc).unwrap(), ASSERTION);
            // Another key does not open it.
            assert!(
                matches!(
                    decrypt_assertion(&xml, &other, cbc),
                    Err(SamlError::Decryption(_))
                ),
                "{content:?}"
            );
            if cbc {
                // CBC is opened only inside a verified signature.
                assert!(matches!(
                    decrypt_assertion(&xml, &sp, false),
                    Err(SamlError::CbcUnsigned)
                ));
            } else {
                // A changed cipher text fails the GCM tag.
                let data = STANDARD.decode(cipher_text(&xml, 1)).unwrap();
                let mut changed = data.clone();
                changed[20] ^= 1;
                let tampered = xml.replace(cipher_text(&xml, 1), &STANDARD.encode(changed));
                assert!(decrypt_assertion(&tampered, &sp, false).is_err());
            }
        }
    }

    #[test]
    fn every_encryption_has_a_fresh_content_key_and_iv() {
        let sp = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let one = encrypt_assertion(ASSERTION, ContentEncryption::Aes256Gcm, &sp, &OsEntropy);
        let two = encrypt_assertion(ASSERTION, ContentEncryption::Aes256Gcm, &sp, &OsEntropy);
        let (one, two) = (one.unwrap(), two.unwrap());
        let iv = |xml: &str| STANDARD.decode(cipher_text(xml, 1)).unwrap()[..12].to_vec();
        assert_ne!(iv(&one), iv(&two));
        assert_ne!(cipher_text(&one, 1), cipher_text(&two, 1));
        // The key and IV are the injected entropy's: the same seed, the same content key and
        // IV (the OAEP wrapping's own seed still differs).
        let seeded = |seed| {
            let xml = encrypt_assertion(
                ASSERTION,
                ContentEncryption::Aes128Gcm,
                &sp,
                &SeededEntropy::new(seed),
            )
            .unwrap();
            cipher_text(&xml, 1).to_owned()
        };
        assert_eq!(seeded(1), seeded(1));
        assert_ne!(seeded(1), seeded(2));
        // A key that is not RSA cannot be encrypted to.
        let ec = PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            encrypt_assertion(ASSERTION, ContentEncryption::Aes256Gcm, &ec, &OsEntropy),
            Err(SamlError::Encryption(_))
        ));
    }

    #[test]
    fn inflate_refuses_bombs() {
        let big = "a".repeat(super::super::xml::MAX_DOCUMENT + 10);
        let b64 = deflate_b64(&big).unwrap();
        assert!(matches!(inflate_b64(&b64), Err(SamlError::TooLarge)));
    }
}
