//! Owns revocation: RFC 7009 token revocation, revoke-all for a user, and ending a stored
//! session everywhere.

use super::{OAuthError, Provider, sha256};
use crate::audit::{Event, EventKind};
use crate::domain::UserId;
use crate::domain::client::Client;
use crate::jwt;
use crate::storage::SessionRecord;
use serde_json::Value;

impl Provider {
    /// Revoke-all on a security event: the user's token epoch moves to now (every user token
    /// issued before is inactive at introspection and userinfo, even unexpired), and every
    /// session ends with its refresh tokens, each app that took part being told by back-channel
    /// logout. Returns the number of sessions ended.
    pub fn revoke_user(&self, user: &UserId, reason: &str) -> Result<usize, OAuthError> {
        let now = self.now();
        self.store.set_tokens_valid_after(user, now)?;
        let sessions = self.store.sessions_of_user(user)?;
        for s in &sessions {
            self.end_session_record(s, reason)?;
        }
        tracing::warn!(user_id = %user, reason, sessions = sessions.len(), "all sessions and tokens of the user revoked");
        self.audit.record(
            Event::new(EventKind::UserRevoked)
                .user(user.as_str())
                .reason(reason),
        );
        Ok(sessions.len())
    }

    /// Ends one stored session everywhere, with no browser in it: the record, its refresh
    /// tokens, and back-channel logout to its apps.
    pub fn end_session_record(
        &self,
        s: &SessionRecord,
        reason: &str,
    ) -> Result<super::logout::SessionEnded, OAuthError> {
        self.end_session_record_as(s, reason, super::logout::Ending::Elsewhere)
    }

    /// [`Self::end_session_record`], the session ending as `ending` says (at the request of
    /// one of its parties: that one is not told).
    pub fn end_session_record_as(
        &self,
        s: &SessionRecord,
        reason: &str,
        ending: super::logout::Ending,
    ) -> Result<super::logout::SessionEnded, OAuthError> {
        self.store.delete_session(&s.key)?;
        self.store.delete_refresh_for_sid(&s.sid)?;
        self.session_ended(s, reason, ending)
    }

    /// RFC 7009: a refresh token ends its grant (its family and the grant's access tokens);
    /// an access token is denied until it expires.
    /// Unknown or foreign tokens are ignored (the answer is the same).
    pub fn revoke(&self, client: &Client, token: &str) -> Result<(), OAuthError> {
        if token.matches('.').count() == 2 {
            if let Ok((_, claims)) = jwt::verify(token, |kid| self.keys.verifier(kid))
                && claims.get("client_id").and_then(Value::as_str) == Some(client.id.as_str())
                && let (Some(jti), Some(exp)) = (
                    claims.get("jti").and_then(Value::as_str),
                    claims.get("exp").and_then(Value::as_i64),
                )
            {
                self.store.revoke_jti(jti, exp)?;
                let mut e = Event::new(EventKind::TokenRevoked)
                    .client(client.id.as_str())
                    .reason("access_token");
                e.user_id = claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .filter(|s| *s != client.id)
                    .map(str::to_owned);
                self.audit.record(e);
            }
            return Ok(());
        }
        if let Some(rec) = self.store.refresh_token(&sha256(token))?
            && rec.client_id == client.id
        {
            self.revoke_grant(&rec.family_id)?;
            self.audit.record(
                Event::new(EventKind::TokenRevoked)
                    .client(client.id.as_str())
                    .user(rec.user_id.as_str())
                    .sid(rec.sid.as_str())
                    .reason("refresh_token"),
            );
        }
        Ok(())
    }
}
