//! Owns the refresh_token grant: rotation with reuse detection and a grace window.

use super::{Grantee, OAuthError, Provider, TokenResponse, sha256};
use crate::audit::{Event, EventKind};
use crate::domain::client::{Client, Grant};
use crate::storage::{RefreshRecord, Rotation};

impl Provider {
    /// `grant_type=refresh_token`: rotation with reuse detection and a grace window.
    pub fn refresh(
        &self,
        client: &Client,
        token: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        client.require(Grant::RefreshToken)?;
        let now = self.now();
        let hash = sha256(token);
        let rec = self
            .store
            .refresh_token(&hash)?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown refresh token".into()))?;
        if rec.client_id != client.id {
            return Err(OAuthError::InvalidGrant(
                "refresh token was issued to another client".into(),
            ));
        }
        if now >= rec.expires_at || now >= rec.idle_expires_at {
            return Err(OAuthError::InvalidGrant("refresh token expired".into()));
        }
        // A token spent at or before this cut-off is being reused; one spent after it is a
        // concurrent refresh (two tabs) inside the grace window, and is answered too. In
        // milliseconds: a grace of 0 answers no second use at all, even in the same second.
        let now_ms = self.clock.now_millis();
        let grace_ms =
            i64::try_from(self.settings.refresh_reuse_grace.as_millis()).unwrap_or(i64::MAX);
        let reuse_cutoff_ms = now_ms.saturating_sub(grace_ms);
        if rec.used_at_ms.is_some_and(|t| t <= reuse_cutoff_ms) {
            return Err(self.reuse_detected(client, &rec)?);
        }
        let session = self.store.session_by_sid(&rec.sid)?;
        let Some(session) = session.filter(|s| now < s.expires_at) else {
            self.store.delete_refresh_family(&rec.family_id)?;
            return Err(OAuthError::InvalidGrant("the session has ended".into()));
        };
        let granted: Vec<&str> = rec.scope.split_whitespace().collect();
        let scope = match scope {
            Some(s) => {
                let asked: Vec<&str> = s.split_whitespace().collect();
                if asked.iter().any(|a| !granted.contains(a)) {
                    return Err(OAuthError::InvalidScope(
                        "a refresh cannot widen the scope".into(),
                    ));
                }
                asked.join(" ")
            }
            None => rec.scope.clone(),
        };
        let grantee = Grantee {
            user_id: rec.user_id.clone(),
            sid: rec.sid.clone(),
            scope,
            auth_time: rec.auth_time,
            acr: rec.acr.clone(),
            amr: rec.amr.clone(),
            nonce: None,
        };
        let (response, refresh) = self.user_tokens(
            client,
            &grantee,
            self.grant_jti(&rec.family_id),
            Some((rec.family_id.clone(), rec.expires_at)),
            true,
        )?;
        let new = refresh
            .ok_or_else(|| OAuthError::ServerError("refresh grant without refresh token".into()))?;
        // One transaction: spend the old token, store the new one, and count the refresh as
        // activity of the session (an app refreshing for the user keeps it from going idle).
        match self
            .store
            .rotate_refresh(&hash, now_ms, reuse_cutoff_ms, &new, session.key)?
        {
            Rotation::Rotated => {
                self.audit.record(
                    Event::new(EventKind::TokenRefreshed)
                        .client(client.id.as_str())
                        .user(rec.user_id.as_str())
                        .sid(rec.sid.as_str()),
                );
                Ok(response)
            }
            Rotation::ReuseDetected => Err(self.reuse_detected(client, &rec)?),
            // Deleted since it was read (a concurrent reuse detection, a revocation): what that
            // request did stands; this one gets nothing.
            Rotation::Gone => Err(OAuthError::InvalidGrant(
                "the refresh token is no longer valid".into(),
            )),
        }
    }

    /// A spent refresh token came back: its family is gone (the live token too).
    fn reuse_detected(
        &self,
        client: &Client,
        rec: &RefreshRecord,
    ) -> Result<OAuthError, OAuthError> {
        let n = self.store.delete_refresh_family(&rec.family_id)?;
        tracing::warn!(client_id = %client.id, user_id = %rec.user_id, revoked = n, "refresh token reuse detected; family revoked");
        self.audit.record(
            Event::new(EventKind::RefreshReuseDetected)
                .client(client.id.as_str())
                .user(rec.user_id.as_str())
                .sid(rec.sid.as_str()),
        );
        // A stolen token may be in use elsewhere: everything of this user ends (a security event).
        self.revoke_user(&rec.user_id, "refresh_token_reuse")?;
        Ok(OAuthError::InvalidGrant(
            "refresh token already used".into(),
        ))
    }
}
