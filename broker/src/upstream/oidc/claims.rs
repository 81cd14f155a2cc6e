//! Owns what the broker takes from an upstream's claims: the userinfo endpoint's (its `sub` must
//! be the ID token's) and the per-upstream claim mapping into an [`Identity`].

use openidconnect::core::CoreProviderMetadata;
use serde_json::{Map, Value};

use super::{OidcConnector, rejected, unavailable};
use crate::config::MAX_KEPT_VALUE;
use crate::domain::Email;
use crate::http;
use crate::upstream::{Identity, UpstreamError};

impl OidcConnector {
    /// Claims from the userinfo endpoint, if it has one; its `sub` must be the ID token's.
    pub(super) async fn userinfo(
        &self,
        m: &CoreProviderMetadata,
        access_token: &str,
        sub: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let Some(url) = m.userinfo_endpoint() else {
            return Ok(Map::new());
        };
        let res = self
            .http
            .get(url.url().clone())
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable(format!("userinfo: {}", http::describe(&e))))?;
        if !res.status().is_success() {
            return Err(unavailable(format!("userinfo answered {}", res.status())));
        }
        let body = http::read_capped(res, http::MAX_RESPONSE)
            .await
            .map_err(|e| rejected(format!("userinfo: {e}")))?;
        let claims: Map<String, Value> = serde_json::from_slice(&body).map_err(rejected)?;
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(rejected("userinfo `sub` differs from the ID token's"));
        }
        Ok(claims)
    }

    pub(super) fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, UpstreamError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .filter(|s| !s.is_empty())
        };
        let subject = text(&self.mapping.subject)
            .ok_or_else(|| rejected(format!("no `{}` claim", self.mapping.subject)))?;
        let email = text(&self.mapping.email).and_then(|e| Email::parse(&e).ok());
        // OIDC Core 5.1: a boolean. Anything else (e.g. the string "true") is not a verification.
        let email_verified = claims.get("email_verified") == Some(&Value::Bool(true));
        let groups = match claims.get(&self.mapping.groups) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let amr = match claims.get("amr") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        // Kept as text: a string as it is, a number or boolean as JSON writes it; anything else,
        // an empty or an over-long value is not kept.
        let kept = self
            .mapping
            .keep
            .iter()
            .filter_map(|name| {
                let value = match claims.get(name)? {
                    Value::String(s) => s.clone(),
                    v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
                    _ => return None,
                };
                (!value.is_empty() && value.len() <= MAX_KEPT_VALUE).then(|| (name.clone(), value))
            })
            .collect();
        Ok(Identity {
            upstream: self.id.clone(),
            subject,
            email,
            email_verified,
            name: text(&self.mapping.name),
            groups,
            kept,
            amr,
            acr: text("acr"),
        })
    }
}
