//! Owns the checks of our access tokens: verification (cached), introspection (RFC 7662) and
//! UserInfo.

use super::{OAuthError, Provider, VERIFIED_CACHE, sha256};
use crate::domain::UserId;
use crate::domain::client::Client;
use crate::jwt;
use serde_json::{Map, Value, json};

impl Provider {
    /// Verifies one of our access tokens and that nothing has ended it since.
    pub fn active_access_token(&self, token: &str) -> Result<Map<String, Value>, OAuthError> {
        let claims = self.verified_access_token(token)?;
        let now = self.now();
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(OAuthError::InvalidToken)?;
        if now >= exp
            || claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str())
        {
            return Err(OAuthError::InvalidToken);
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or(OAuthError::InvalidToken)?;
        let sid = claims.get("sid").and_then(Value::as_str);
        // A user token's jti starts with its grant's id: a revoked grant ends it too.
        let grant = jti
            .split_once('.')
            .filter(|_| sid.is_some())
            .map(|(g, _)| Self::grant_key(g));
        let state = self.store.token_state(jti, grant.as_deref(), sid)?;
        if state.revoked {
            return Err(OAuthError::InvalidToken);
        }
        // A user's token lives only as long as its session (idle allowance: unflushed activity)
        // and only if issued since the user's last revoke-all (the token epoch).
        let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
        let live = |s: crate::storage::SessionLiveness| {
            now < s.expires_at
                && now.saturating_sub(s.last_seen) < s.idle_timeout.saturating_add(60)
                && iat >= s.tokens_valid_after
        };
        if sid.is_some() && !state.session.is_some_and(live) {
            return Err(OAuthError::InvalidToken);
        }
        Ok(claims)
    }

    /// The claims of a correctly signed `at+jwt` of ours (cached); nothing else is checked here.
    fn verified_access_token(&self, token: &str) -> Result<Map<String, Value>, OAuthError> {
        let key = sha256(token);
        let cache = || match self.verified.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(claims) = cache().get(&key) {
            return Ok(claims.clone());
        }
        let (header, claims) = jwt::verify(token, |kid| self.keys.verifier(kid))
            .map_err(|_| OAuthError::InvalidToken)?;
        if !header.typ.is_some_and(|t| t.eq_ignore_ascii_case("at+jwt")) {
            return Err(OAuthError::InvalidToken);
        }
        let mut c = cache();
        if c.len() >= VERIFIED_CACHE {
            c.clear();
        }
        c.insert(key, claims.clone());
        Ok(claims)
    }

    /// RFC 7662. Anything not active is just `{"active": false}`.
    pub fn introspect(&self, client: &Client, token: &str) -> Result<Value, OAuthError> {
        let inactive = json!({"active": false});
        if token.matches('.').count() == 2 {
            return match self.active_access_token(token) {
                Ok(mut c) => {
                    c.insert("active".into(), json!(true));
                    c.insert("token_type".into(), json!("Bearer"));
                    Ok(Value::Object(c))
                }
                Err(OAuthError::InvalidToken) => Ok(inactive),
                Err(e) => Err(e),
            };
        }
        let now = self.now();
        let Some(rec) = self.store.refresh_token(&sha256(token))? else {
            return Ok(inactive);
        };
        let session_live = self
            .store
            .session_by_sid(&rec.sid)?
            .is_some_and(|s| now < s.expires_at);
        let active = rec.client_id == client.id
            && rec.used_at_ms.is_none()
            && now < rec.expires_at
            && now < rec.idle_expires_at
            && session_live;
        if !active {
            return Ok(inactive);
        }
        Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": rec.client_id,
            "sub": rec.user_id.as_str(),
            "scope": rec.scope,
            "sid": rec.sid,
            "iat": rec.created_at,
            "exp": rec.expires_at.min(rec.idle_expires_at),
            "iss": self.settings.issuer,
        }))
    }

    /// What the upstream of session `sid` said at its last sign-in, for tokens with the
    /// `groups` or `email` scope: its groups, and whether it verified the user's current email
    /// (only an upstream trusted for verified email records one). Local accounts: none, false.
    pub(super) fn federated_claims(
        &self,
        sid: &str,
        user: &crate::storage::User,
        scopes: &[&str],
    ) -> Result<(Vec<String>, bool), OAuthError> {
        if !scopes.contains(&"groups") && !scopes.contains(&"email") {
            return Ok((Vec::new(), false));
        }
        let Some(session) = self.store.session_by_sid(sid)? else {
            return Ok((Vec::new(), false));
        };
        let c = self.store.upstream_claims(&session.upstream, &user.id)?;
        let verified = c.verified_email.as_deref() == Some(user.email.as_str());
        Ok((c.groups, verified))
    }

    /// OIDC UserInfo for a bearer access token.
    pub fn userinfo(&self, token: &str) -> Result<Value, OAuthError> {
        let claims = self.active_access_token(token)?;
        let scope = claims.get("scope").and_then(Value::as_str).unwrap_or("");
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        if !scopes.contains(&"openid") || !claims.contains_key("sid") {
            return Err(OAuthError::InsufficientScope);
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(OAuthError::InvalidToken)?;
        let user = self
            .store
            .user_by_id(&UserId::from_stored(sub.to_owned()))?
            .filter(|u| !u.disabled)
            .ok_or(OAuthError::InvalidToken)?;
        let sid = claims
            .get("sid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (groups, email_verified) = self.federated_claims(sid, &user, &scopes)?;
        let mut out = Map::new();
        out.insert("sub".into(), json!(sub));
        if scopes.contains(&"email") {
            out.insert("email".into(), json!(user.email.as_str()));
            out.insert("email_verified".into(), json!(email_verified));
        }
        if scopes.contains(&"groups") {
            out.insert("groups".into(), json!(groups));
        }
        if scopes.contains(&"profile") && !user.name.is_empty() {
            out.insert("name".into(), json!(user.name));
        }
        Ok(Value::Object(out))
    }
}
