//! Owns the oracle of the compact JWS target: `jwt::verify` never panics on any token, refuses
//! anything over its size limit without work, returns claims only under a valid signature by
//! the key its `kid` names with that key's own algorithm, and answers the same twice.
//!
//! The input's first byte picks how it is read: as a whole token, or as a header and a payload
//! that the harness signs with a fixed Ed25519 key first (so that claims parsing is reached).

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use concierge::domain::jose::Alg;
use concierge::jwt::{JwtError, Verifier, verify};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The fixed key the harness signs with (its seeds are signed by it too).
pub fn signing_key() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("an Ed25519 seed of 32 bytes")
    })
}

fn lookup(kid: &str) -> Option<(Alg, Verifier)> {
    match kid {
        "ed" => Some((
            Alg::EdDSA,
            Verifier::Ed {
                public: signing_key().public_key().as_ref().to_vec(),
            },
        )),
        // Keys no input can sign for: algorithm confusion and the RSA and EC paths.
        "rs" => Some((
            Alg::RS256,
            Verifier::Rsa {
                n: [0xc5; 256].to_vec(),
                e: vec![1, 0, 1],
            },
        )),
        "ec" => Some((
            Alg::ES256,
            Verifier::Ec {
                point: [4; 65].to_vec(),
            },
        )),
        _ => None,
    }
}

/// `header || 0xff || payload`, signed as a compact JWS.
pub fn signed(data: &[u8]) -> String {
    let mut parts = data.splitn(2, |b| *b == 0xff);
    let (h, p) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(h),
        URL_SAFE_NO_PAD.encode(p)
    );
    let sig = signing_key().sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return Ok(()),
        }
    } else {
        signed(rest)
    };
    let first = verify(&token, lookup);
    if token.len() > 16 * 1024 && !matches!(first, Err(JwtError::Malformed)) {
        return Err(format!("a token of {} bytes was read", token.len()));
    }
    if let Ok((header, _)) = &first {
        let alg = Alg::parse(&header.alg);
        let key = header.kid.as_deref().and_then(lookup).map(|(a, _)| a);
        if alg.is_none() || alg != key {
            return Err(format!(
                "accepted alg {:?} for the key {:?}",
                header.alg, header.kid
            ));
        }
    }
    let again = verify(&token, lookup);
    if first.is_ok() != again.is_ok() || first.as_ref().err() != again.as_ref().err() {
        return Err("two answers for one token".into());
    }
    Ok(())
}
