//! Owns the check of an upstream's ID token (OIDC Core 3.1.3.7, RFC 7519 4.1) under the broker's
//! clock: algorithm, key, `iss`, `aud`/`azp`, `exp`/`iat`/`nbf`, `nonce`, `sub`; and its door for
//! the fuzz targets.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyUse};
use serde_json::{Map, Value};

use super::{Discovery, OidcConnector, rejected};
use crate::upstream::UpstreamError;

/// Bounded clock skew for `exp`, `iat` and `nbf`.
const SKEW: i64 = 60;
/// ID tokens issued longer ago than this are refused (they should be minutes old).
const MAX_AGE: i64 = 600;

/// Why an ID token was not accepted: a key the cached JWKS lacks (worth one re-fetch), or
/// anything else (final).
pub(super) enum IdTokenError {
    UnknownKey,
    Invalid(UpstreamError),
}

impl IdTokenError {
    pub(super) fn into_upstream(self) -> UpstreamError {
        match self {
            Self::UnknownKey => rejected("ID token signed by a key the upstream does not publish"),
            Self::Invalid(e) => e,
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> IdTokenError {
    IdTokenError::Invalid(rejected(format!("ID token: {e}")))
}

/// A NumericDate claim (RFC 7519 2): a JSON number of seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, IdTokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.trunc() as i64)
            })
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` is not a number"))),
    }
}

impl OidcConnector {
    /// Checks the ID token (OIDC Core 3.1.3.7, RFC 7519 4.1) under the broker's clock and
    /// returns its claims: an asymmetric algorithm the upstream advertises, a key of its JWKS,
    /// `iss`, `aud` and `azp`, `exp`, `iat`, `nbf`, `nonce`.
    pub(super) fn verify_id_token(
        &self,
        d: &Discovery,
        token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, IdTokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS"));
        };
        let object = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        };
        let header = object(h).ok_or_else(|| invalid("malformed header"))?;
        let alg: CoreJwsSigningAlgorithm = header
            .get("alg")
            .cloned()
            .and_then(|a| serde_json::from_value(a).ok())
            .ok_or_else(|| invalid("unknown alg"))?;
        let asymmetric = !matches!(
            alg,
            CoreJwsSigningAlgorithm::None
                | CoreJwsSigningAlgorithm::HmacSha256
                | CoreJwsSigningAlgorithm::HmacSha384
                | CoreJwsSigningAlgorithm::HmacSha512
        );
        let advertised = d
            .meta
            .id_token_signing_alg_values_supported()
            .contains(&alg);
        if !asymmetric || !advertised {
            return Err(invalid(format!(
                "alg {} is not allowed",
                header.get("alg").unwrap_or(&Value::Null)
            )));
        }
        if header.contains_key("crit") {
            return Err(invalid("a `crit` header is not understood"));
        }
        if let Some(typ) = header.get("typ") {
            let ok = typ.as_str().is_some_and(|t| {
                t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt")
            });
            if !ok {
                return Err(invalid("typ is not JWT"));
            }
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let keys: Vec<&CoreJsonWebKey> = d
            .jwks
            .keys()
            .iter()
            .filter(|k| kid.is_none() || k.key_id().map(|i| i.as_str()) == kid)
            .filter(|k| k.key_use().is_none_or(|u| u.allows_signature()))
            .collect();
        if keys.is_empty() {
            return Err(IdTokenError::UnknownKey);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| invalid("malformed signature"))?;
        let input = &token.as_bytes()[..h.len() + 1 + p.len()];
        if !keys
            .iter()
            .any(|k| k.verify_signature(&alg, input, &signature).is_ok())
        {
            return Err(invalid("bad signature"));
        }

        let claims = object(p).ok_or_else(|| invalid("payload is not a JSON object"))?;
        let now = self.clock.now();
        let text = |k: &str| claims.get(k).and_then(Value::as_str);
        if text("iss") != Some(self.issuer.as_str()) {
            return Err(invalid("iss is not the upstream"));
        }
        let client_id = self.client_id.as_str();
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.contains(&client_id) {
            return Err(invalid("aud does not name the broker"));
        }
        // OIDC Core 3.1.3.7 (3-5): another audience needs `azp`, and `azp` must be the broker.
        match text("azp") {
            Some(azp) if azp != client_id => {
                return Err(invalid("azp names another client"));
            }
            None if audiences.len() > 1 => {
                return Err(invalid("several audiences and no azp"));
            }
            _ => {}
        }
        let exp = numeric_date(&claims, "exp")?.ok_or_else(|| invalid("no exp"))?;
        if exp <= now - SKEW {
            return Err(invalid(format!("expired at {exp}")));
        }
        let iat = numeric_date(&claims, "iat")?.ok_or_else(|| invalid("no iat"))?;
        if iat > now + SKEW {
            return Err(invalid(format!("issued in the future ({iat})")));
        }
        if iat < now - MAX_AGE {
            return Err(invalid(format!("issued too long ago ({iat})")));
        }
        // RFC 7519 4.1.5: not to be accepted before `nbf`.
        if let Some(nbf) = numeric_date(&claims, "nbf")?
            && nbf > now + SKEW
        {
            return Err(invalid(format!("not valid before {nbf}")));
        }
        if text("nonce") != Some(nonce) {
            return Err(invalid("nonce does not match the request"));
        }
        if text("sub").is_none_or(str::is_empty) {
            return Err(invalid("no sub"));
        }
        Ok(claims)
    }

    /// The ID-token check against a discovery document and a JWKS given as JSON, for the fuzz
    /// targets in fuzz/ only (not an API): `Ok(claims)` when the token is accepted, `Err` with
    /// the reason otherwise.
    #[doc(hidden)]
    pub fn check_id_token_for_fuzzing(
        &self,
        metadata: &str,
        jwks: &str,
        token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, String> {
        let d = Discovery {
            meta: serde_json::from_str(metadata).map_err(|e| e.to_string())?,
            jwks: serde_json::from_str(jwks).map_err(|e| e.to_string())?,
            iss_parameter: false,
            end_session: None,
        };
        self.verify_id_token(&d, token, nonce)
            .map_err(|e| e.into_upstream().to_string())
    }
}
