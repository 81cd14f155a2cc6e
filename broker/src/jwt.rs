//! Owns compact JWS: signing with the broker's keys (RS256, ES256, EdDSA through ring) and
//! verifying its own tokens. `alg: none`, algorithm confusion and unknown keys are refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::jose::Alg;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported or mismatched algorithm")]
    Algorithm,
    #[error("unknown key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("key error: {0}")]
    Key(String),
}

/// A private key able to sign.
pub enum Signer {
    /// RSA signs through OpenSSL: twice as fast as ring here (RS256 is bound by it).
    Rsa(openssl::pkey::PKey<openssl::pkey::Private>),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A public key able to verify.
#[derive(Debug, Clone)]
pub enum Verifier {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { point: Vec<u8> },
    Ed { public: Vec<u8> },
}

impl Signer {
    pub fn from_pkcs8(alg: Alg, der: &[u8]) -> Result<Self, JwtError> {
        let key_err = |e: ring::error::KeyRejected| JwtError::Key(e.to_string());
        Ok(match alg {
            Alg::RS256 => Signer::Rsa(
                openssl::pkey::PKey::private_key_from_pkcs8(der)
                    .map_err(|e| JwtError::Key(e.to_string()))?,
            ),
            Alg::ES256 => Signer::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &SystemRandom::new(),
                )
                .map_err(key_err)?,
            ),
            Alg::EdDSA => Signer::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(key_err)?),
        })
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, JwtError> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k) => {
                let failed = |_| JwtError::Key("RSA signing failed".into());
                let mut signer =
                    openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), k)
                        .map_err(failed)?;
                signer.update(msg).map_err(failed)?;
                signer.sign_to_vec().map_err(failed)
            }
            Signer::Ec(k) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JwtError::Key("ECDSA signing failed".into())),
            Signer::Ed(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }

    /// The public half, for EC and Ed keys (RSA's comes from its JWK).
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            Signer::Rsa(k) => k.public_key_to_der().unwrap_or_default(),
            Signer::Ec(k) => k.public_key().as_ref().to_vec(),
            Signer::Ed(k) => k.public_key().as_ref().to_vec(),
        }
    }
}

impl Verifier {
    fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let ok = match (self, alg) {
            (Verifier::Rsa { n, e }, Alg::RS256) => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            (Verifier::Ec { point }, Alg::ES256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, sig)
                    .is_ok()
            }
            (Verifier::Ed { public }, Alg::EdDSA) => {
                UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(msg, sig)
                    .is_ok()
            }
            _ => return Err(JwtError::Algorithm),
        };
        if ok { Ok(()) } else { Err(JwtError::Signature) }
    }
}

/// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
pub fn sign(
    signer: &Signer,
    alg: Alg,
    kid: &str,
    typ: &str,
    claims: &Value,
) -> Result<String, JwtError> {
    let header = serde_json::json!({"alg": alg.as_str(), "kid": kid, "typ": typ});
    let mut out = String::with_capacity(512);
    out.push_str(
        &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|_| JwtError::Malformed)?),
    );
    out.push('.');
    out.push_str(
        &URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| JwtError::Malformed)?),
    );
    let sig = signer.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(out)
}

/// The parts of a token's header that verification needs.
#[derive(Debug, Deserialize)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// Verifies a compact JWS whose key is found by `lookup(kid) -> (alg of the key, verifier)`.
/// The header's `alg` must equal the key's own algorithm. Returns the header and the claims.
pub fn verify(
    token: &str,
    lookup: impl Fn(&str) -> Option<(Alg, Verifier)>,
) -> Result<(Header, serde_json::Map<String, Value>), JwtError> {
    if token.len() > 16 * 1024 {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let alg = Alg::parse(&header.alg).ok_or(JwtError::Algorithm)?;
    let kid = header.kid.as_deref().ok_or(JwtError::UnknownKey)?;
    let (key_alg, verifier) = lookup(kid).ok_or(JwtError::UnknownKey)?;
    if key_alg != alg {
        return Err(JwtError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    verifier.verify(alg, &token.as_bytes()[..h.len() + 1 + p.len()], &sig)?;
    let claims = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .ok_or(JwtError::Malformed)?;
    Ok((header, claims))
}

/// Left half of the SHA-256 of a token, base64url: OIDC's `at_hash` for RS256/ES256 (and, as
/// most providers do, for EdDSA).
pub fn half_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(token.as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::EcdsaKeyPair;

    fn es256() -> (Signer, Verifier) {
        let der = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        let s = Signer::from_pkcs8(Alg::ES256, der.as_ref()).unwrap();
        let v = Verifier::Ec {
            point: s.public_bytes(),
        };
        (s, v)
    }

    #[test]
    fn round_trip_and_tampering() {
        let (s, v) = es256();
        let t = sign(
            &s,
            Alg::ES256,
            "k1",
            "JWT",
            &serde_json::json!({"sub": "a"}),
        )
        .unwrap();
        let look = |kid: &str| (kid == "k1").then(|| (Alg::ES256, v.clone()));
        let (_, c) = verify(&t, look).unwrap();
        assert_eq!(c["sub"], "a");
        // Payload swapped: signature fails.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), look).unwrap_err(),
            JwtError::Signature
        );
        // alg none and alg confusion are refused before any signature check.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
        let none = format!("{none_header}.{}.", t.split('.').nth(1).unwrap());
        assert_eq!(verify(&none, look).unwrap_err(), JwtError::Algorithm);
        let rs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1"}"#);
        let confused = format!(
            "{rs_header}.{}.{}",
            t.split('.').nth(1).unwrap(),
            t.split('.').nth(2).unwrap()
        );
        assert_eq!(verify(&confused, look).unwrap_err(), JwtError::Algorithm);
        assert_eq!(verify("a.b", look).unwrap_err(), JwtError::Malformed);
        assert_eq!(verify("!!.!!.!!", look).unwrap_err(), JwtError::Malformed);
        let other = sign(&s, Alg::ES256, "k2", "JWT", &serde_json::json!({})).unwrap();
        assert_eq!(verify(&other, look).unwrap_err(), JwtError::UnknownKey);
    }
}
