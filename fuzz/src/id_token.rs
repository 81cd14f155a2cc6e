//! Owns the oracle of the upstream ID-token target: the OIDC connector's ID-token check
//! (`OidcConnector::check_id_token_for_fuzzing`, the very `verify_id_token` a callback runs)
//! never panics, and accepts a token only when what it returns keeps OIDC Core 3.1.3.7: the
//! upstream's `iss`, the broker in `aud` (and as `azp` when there are several), unexpired, not
//! issued in the future, the request's `nonce`, a `sub`.
//!
//! Input as for the `jwt` target: first byte even, a whole token; odd, a header and a payload
//! (split at the first 0xff) that the harness signs with the JWKS's Ed25519 key.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use concierge::clock::{ManualClock, SeededEntropy};
use concierge::config::http::TrustAnchors;
use concierge::config::{ClaimMapping, OidcUpstreamConfig, UpstreamClientAuth};
use concierge::upstream::oidc::OidcConnector;
use ring::signature::KeyPair;
use serde_json::Value;

pub const ISSUER: &str = "https://idp.example.com";
pub const CLIENT: &str = "broker";
pub const NONCE: &str = "n-0S6_WzA2Mj";
pub const NOW: i64 = 1_800_000_000;

struct Fixture {
    connector: OidcConnector,
    metadata: String,
    jwks: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let cfg = OidcUpstreamConfig {
            issuer: ISSUER.into(),
            client_id: CLIENT.into(),
            client_secret: "secret".to_owned().into(),
            scopes: vec!["openid".into()],
            claims: ClaimMapping::default(),
            client_auth: UpstreamClientAuth::ClientSecretBasic,
        };
        let connector = OidcConnector::new(
            "corp",
            &cfg,
            &TrustAnchors::default(),
            Arc::new(ManualClock::new(NOW)),
            Arc::new(SeededEntropy::new(1)),
        )
        .expect("the connector");
        let metadata = serde_json::json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/authorize"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            // Symmetric and `none` advertised too: the connector must refuse them itself.
            "id_token_signing_alg_values_supported": ["EdDSA", "RS256", "ES256", "HS256", "none"],
        })
        .to_string();
        let x = URL_SAFE_NO_PAD.encode(crate::jwt::signing_key().public_key().as_ref());
        let jwks = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "ed", "use": "sig"},
            {"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 256]), "e": "AQAB", "kid": "rs"},
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([9u8; 32]), "kid": "enc", "use": "enc"},
        ]})
        .to_string();
        Fixture {
            connector,
            metadata,
            jwks,
        }
    })
}

fn number(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f.trunc() as i64)))
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
        crate::jwt::signed(rest)
    };
    let f = fixture();
    let claims = match f
        .connector
        .check_id_token_for_fuzzing(&f.metadata, &f.jwks, &token, NONCE)
    {
        Ok(c) => c,
        Err(e) => {
            crate::debug(|| format!("refused: {e}"));
            return Ok(());
        }
    };
    crate::debug(|| "accepted".into());
    let text = |k: &str| claims.get(k).and_then(Value::as_str);
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let exp = number(claims.get("exp"));
    let iat = number(claims.get("iat"));
    let broken = [
        (text("iss") != Some(ISSUER), "iss"),
        (!audiences.contains(&CLIENT), "aud"),
        (
            audiences.len() > 1 && text("azp") != Some(CLIENT)
                || text("azp").is_some_and(|a| a != CLIENT),
            "azp",
        ),
        (exp.is_none_or(|e| e <= NOW - 60), "exp"),
        (iat.is_none_or(|i| i > NOW + 60), "iat"),
        (text("nonce") != Some(NONCE), "nonce"),
        (text("sub").is_none_or(str::is_empty), "sub"),
    ];
    let broken: Vec<&str> = broken.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!("an ID token was accepted that breaks {broken:?}"))
    }
}
