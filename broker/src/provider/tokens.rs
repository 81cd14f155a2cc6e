//! Owns the issuing of a user grant's tokens (access, ID and refresh token) and the grant id
//! that ties them together for revocation.

use super::{Grantee, OAuthError, Provider, TokenResponse, secs, sha256};
use crate::clock::UnixTime;
use crate::domain::client::{Client, Grant};
use crate::jwt;
use crate::storage::RefreshRecord;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

impl Provider {
    /// The public id of a grant (one code and the refresh token family it started), derived
    /// from the family id. Every user access token of the grant carries it in its `jti`
    /// (`<grant id>.<random>`), so revoking the grant ends them all.
    fn grant_id(family_id: &str) -> String {
        let d = Sha256::new()
            .chain_update(b"concierge-grant:")
            .chain_update(family_id.as_bytes())
            .finalize();
        URL_SAFE_NO_PAD.encode(&d[..18])
    }

    /// The revoked-list key that ends every access token of the grant `grant_id`.
    pub(super) fn grant_key(grant_id: &str) -> String {
        format!("grant:{grant_id}")
    }

    /// A fresh jti for a user access token of the grant of `family_id`.
    pub(super) fn grant_jti(&self, family_id: &str) -> String {
        format!("{}.{}", Self::grant_id(family_id), self.random_token())
    }

    /// Ends a grant: its refresh tokens are deleted and its access tokens inactive (RFC 7009
    /// 2.1). Returns the number of refresh tokens deleted.
    pub(super) fn revoke_grant(&self, family_id: &str) -> Result<u64, OAuthError> {
        let n = self.store.delete_refresh_family(family_id)?;
        // With the family gone no new access token of the grant can be issued: the key need
        // outlive only those issued so far.
        let until = self.now().saturating_add(self.max_token_ttl());
        self.store
            .revoke_jti(&Self::grant_key(&Self::grant_id(family_id)), until)?;
        Ok(n)
    }

    /// Signs the access token (and, for `openid`, the ID token) and stores a refresh token.
    pub(super) fn user_tokens(
        &self,
        client: &Client,
        g: &Grantee,
        jti: String,
        refresh_family: Option<(String, UnixTime)>,
        with_id_token: bool,
    ) -> Result<(TokenResponse, Option<RefreshRecord>), OAuthError> {
        let now = self.now();
        let ttl = self.access_ttl(client);
        let user = self
            .store
            .user_by_id(&g.user_id)?
            .ok_or_else(|| OAuthError::InvalidGrant("the user no longer exists".into()))?;
        if user.disabled {
            return Err(OAuthError::InvalidGrant("the account is disabled".into()));
        }
        let mut at = Map::new();
        at.insert("iss".into(), json!(self.settings.issuer));
        at.insert("sub".into(), json!(g.user_id.as_str()));
        at.insert(
            "aud".into(),
            json!(client.audience.clone().unwrap_or_else(|| client.id.clone())),
        );
        at.insert("exp".into(), json!(now + ttl));
        at.insert("iat".into(), json!(now));
        at.insert("jti".into(), json!(jti));
        at.insert("client_id".into(), json!(client.id));
        at.insert("scope".into(), json!(g.scope));
        at.insert("sid".into(), json!(g.sid));
        at.insert("auth_time".into(), json!(g.auth_time));
        if let Some(acr) = &g.acr {
            at.insert("acr".into(), json!(acr));
        }
        at.insert("amr".into(), json!(g.amr));
        let scopes: Vec<&str> = g.scope.split_whitespace().collect();
        let (groups, email_verified) = self.federated_claims(&g.sid, &user, &scopes)?;
        if scopes.contains(&"groups") {
            at.insert("groups".into(), json!(groups));
        }
        let access_token = self.sign_for(client, "at+jwt", &Value::Object(at))?;

        let id_token = if with_id_token && scopes.contains(&"openid") {
            let mut id = Map::new();
            id.insert("iss".into(), json!(self.settings.issuer));
            id.insert("sub".into(), json!(g.user_id.as_str()));
            id.insert("aud".into(), json!(client.id));
            id.insert("azp".into(), json!(client.id));
            id.insert("exp".into(), json!(now + secs(self.settings.id_token_ttl)));
            id.insert("iat".into(), json!(now));
            id.insert("auth_time".into(), json!(g.auth_time));
            if let Some(n) = &g.nonce {
                id.insert("nonce".into(), json!(n));
            }
            id.insert("at_hash".into(), json!(jwt::half_hash(&access_token)));
            id.insert("sid".into(), json!(g.sid));
            if let Some(acr) = &g.acr {
                id.insert("acr".into(), json!(acr));
            }
            id.insert("amr".into(), json!(g.amr));
            if scopes.contains(&"email") {
                id.insert("email".into(), json!(user.email.as_str()));
                id.insert("email_verified".into(), json!(email_verified));
            }
            if scopes.contains(&"groups") {
                id.insert("groups".into(), json!(groups));
            }
            if scopes.contains(&"profile") && !user.name.is_empty() {
                id.insert("name".into(), json!(user.name));
            }
            Some(self.sign_for(client, "JWT", &Value::Object(id))?)
        } else {
            None
        };

        // The refresh token's record is returned, not stored: the caller stores it in the
        // same transaction as whatever it spends (a code, or the previous refresh token).
        let (refresh_token, refresh_record) = match refresh_family {
            Some((family_id, absolute)) if client.allows(Grant::RefreshToken) => {
                let token = self.random_token();
                let idle = now.saturating_add(secs(
                    client
                        .refresh_idle_ttl
                        .unwrap_or(self.settings.refresh_idle_ttl),
                ));
                let record = RefreshRecord {
                    token_hash: sha256(&token),
                    family_id,
                    client_id: client.id.clone(),
                    user_id: g.user_id.clone(),
                    sid: g.sid.clone(),
                    scope: g.scope.clone(),
                    auth_time: g.auth_time,
                    acr: g.acr.clone(),
                    amr: g.amr.clone(),
                    created_at: now,
                    idle_expires_at: idle.min(absolute),
                    expires_at: absolute,
                    used_at_ms: None,
                };
                (Some(token), Some(record))
            }
            _ => (None, None),
        };
        let response = TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: g.scope.clone(),
            id_token,
            refresh_token,
        };
        Ok((response, refresh_record))
    }
}
