//! Owns the token endpoint side of an upstream: the broker's client authentication there
//! (`client_secret_basic`, `client_secret_post`, `private_key_jwt` with its assertion key) and the
//! code exchange (RFC 6749 4.1.3), its answer read with a size cap.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use url::Url;

use super::{Discovery, OidcConnector, rejected, unavailable};
use crate::config::UpstreamClientAuth;
use crate::domain::jose::Alg;
use crate::http;
use crate::jwt::{self, Signer};
use crate::upstream::UpstreamError;

/// Lifetime of a `private_key_jwt` client assertion.
const ASSERTION_TTL: i64 = 60;

/// The broker's `private_key_jwt` key for one upstream.
pub(super) struct AssertionKey {
    signer: Signer,
    alg: Alg,
    kid: String,
}

pub(super) enum ClientAuth {
    Basic,
    Post,
    PrivateKeyJwt(Box<AssertionKey>),
}

impl ClientAuth {
    /// The configured client authentication, its key read and its `kid` settled.
    pub(super) fn from_config(auth: &UpstreamClientAuth) -> Result<Self, UpstreamError> {
        Ok(match auth {
            UpstreamClientAuth::ClientSecretBasic => ClientAuth::Basic,
            UpstreamClientAuth::ClientSecretPost => ClientAuth::Post,
            UpstreamClientAuth::PrivateKeyJwt { key_der, kid } => {
                let der = &key_der.0;
                let rsa = openssl::pkey::PKey::private_key_from_pkcs8(der)
                    .map_err(rejected)?
                    .rsa()
                    .is_ok();
                let alg = if rsa { Alg::RS256 } else { Alg::ES256 };
                let kid = match kid {
                    Some(k) => k.clone(),
                    None => thumbprint(der)
                        .ok_or_else(|| rejected("client assertion key: no thumbprint"))?,
                };
                ClientAuth::PrivateKeyJwt(Box::new(AssertionKey {
                    signer: Signer::from_pkcs8(alg, der).map_err(rejected)?,
                    alg,
                    kid,
                }))
            }
        })
    }
}

/// The RFC 7638 thumbprint of the public half of `der` (PKCS#8), the default assertion `kid`.
fn thumbprint(der: &[u8]) -> Option<String> {
    use sha2::{Digest, Sha256};
    let key = openssl::pkey::PKey::private_key_from_pkcs8(der).ok()?;
    let canonical = if let Ok(rsa) = key.rsa() {
        format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
            URL_SAFE_NO_PAD.encode(rsa.n().to_vec())
        )
    } else {
        let ec = key.ec_key().ok()?;
        let mut ctx = openssl::bn::BigNumContext::new().ok()?;
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().ok()?,
            openssl::bn::BigNum::new().ok()?,
        );
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .ok()?;
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x.to_vec_padded(32).ok()?),
            URL_SAFE_NO_PAD.encode(y.to_vec_padded(32).ok()?)
        )
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

impl OidcConnector {
    /// The code exchange (RFC 6749 4.1.3) with this upstream's client authentication; returns
    /// the ID token and the access token.
    pub(super) async fn exchange(
        &self,
        d: &Discovery,
        code: &str,
        verifier: &str,
        callback: &Url,
    ) -> Result<(String, String), UpstreamError> {
        let endpoint = d
            .meta
            .token_endpoint()
            .ok_or_else(|| rejected("the upstream publishes no token_endpoint"))?
            .url()
            .clone();
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.to_owned()),
            ("redirect_uri", callback.to_string()),
            ("code_verifier", verifier.to_owned()),
        ];
        let mut req = self
            .http
            .post(endpoint.clone())
            .header("accept", "application/json");
        match &self.auth {
            // RFC 6749 2.3.1: both halves form-encoded before Basic.
            ClientAuth::Basic => {
                let enc = |s: &str| -> String {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
                };
                req = req.basic_auth(
                    enc(self.client_id.as_str()),
                    Some(enc(self.client_secret.secret())),
                );
            }
            ClientAuth::Post => {
                form.push(("client_id", self.client_id.to_string()));
                form.push(("client_secret", self.client_secret.secret().clone()));
            }
            ClientAuth::PrivateKeyJwt(key) => {
                let now = self.clock.now();
                let claims = serde_json::json!({
                    "iss": self.client_id.as_str(),
                    "sub": self.client_id.as_str(),
                    "aud": endpoint.as_str(),
                    "jti": self.random(),
                    "iat": now,
                    "exp": now + ASSERTION_TTL,
                });
                let assertion = jwt::sign(&key.signer, key.alg, &key.kid, "JWT", &claims)
                    .map_err(|e| rejected(format!("client assertion: {e}")))?;
                form.push(("client_id", self.client_id.to_string()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
            }
        }
        let res = req
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(format!("token request: {}", http::describe(&e))))?;
        let status = res.status();
        let body = http::read_capped(res, http::MAX_RESPONSE)
            .await
            .map_err(|e| rejected(format!("token response: {e}")))?;
        let doc: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| rejected(format!("token response ({status}) is not a JSON object")))?;
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        if !status.is_success() {
            return Err(rejected(format!(
                "token request answered {status}: {}",
                text("error")
                    .unwrap_or_default()
                    .chars()
                    .take(64)
                    .collect::<String>()
            )));
        }
        if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err(rejected("token response: token_type is not Bearer"));
        }
        let access = text("access_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| rejected("token response without access_token"))?;
        let id_token =
            text("id_token").ok_or_else(|| rejected("the token response has no ID token"))?;
        Ok((id_token, access))
    }
}
