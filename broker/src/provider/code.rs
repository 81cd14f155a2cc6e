//! Owns the authorization code grant: issuing a one-time code on a live session and its
//! exchange (PKCE, redirect and client checks, replay revokes the grant).

use super::authorize;
use super::{Grantee, OAuthError, Provider, TokenResponse, acr_for, secs, sha256};
use crate::audit::{Event, EventKind};
use crate::domain::client::{Client, Grant};
use crate::storage::{AuthCodeRecord, CodeUse, SessionRecord};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

impl Provider {
    /// Issues a one-time code for an authorized request on a live session.
    pub fn issue_code(
        &self,
        req: &authorize::AuthorizeRequest,
        session: &SessionRecord,
    ) -> Result<String, OAuthError> {
        let code = self.random_token();
        let now = self.now();
        self.store.insert_code(&AuthCodeRecord {
            code_hash: sha256(&code),
            client_id: req.client.id.clone(),
            // Empty when /authorize was not given one (the client's single registered URI).
            redirect_uri: if req.redirect_uri_given {
                req.redirect_uri_presented.clone()
            } else {
                String::new()
            },
            user_id: session.user_id.clone(),
            sid: session.sid.clone(),
            scope: req.scope.join(" "),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone().unwrap_or_default(),
            auth_time: session.auth_time,
            acr: Some(acr_for(&session.amr).to_owned()),
            amr: session.amr.clone(),
            expires_at: now.saturating_add(secs(self.settings.code_ttl)),
            consumed_at: None,
        })?;
        // The client takes part in this session: it hears of the session's end.
        self.store
            .add_session_client(&session.sid, &req.client.id)?;
        Ok(code)
    }

    /// `grant_type=authorization_code`.
    pub fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        client.require(Grant::AuthorizationCode)?;
        let now = self.now();
        let hash = sha256(code);
        // Who presents the code is checked before anything is spent: a wrong client, redirect
        // URI or PKCE verifier gets invalid_grant and changes nothing (else anyone holding the
        // code could burn it, or revoke its owner's tokens by replaying it).
        let rec = self
            .store
            .code(&hash)?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown code".into()))?;
        if rec.client_id != client.id {
            return Err(OAuthError::InvalidGrant(
                "code was issued to another client".into(),
            ));
        }
        // RFC 6749 4.1.3: required, and identical, if the authorization request included it.
        let redirect_ok = match (rec.redirect_uri.is_empty(), redirect_uri) {
            (false, given) => given == Some(rec.redirect_uri.as_str()),
            (true, None) => true,
            (true, Some(given)) => {
                matches!(client.redirect_uri_strings(), [only] if only == given)
            }
        };
        if !redirect_ok {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri does not match the authorization request".into(),
            ));
        }
        match (rec.code_challenge.is_empty(), verifier) {
            (true, None) => {}
            (true, Some(_)) => {
                return Err(OAuthError::InvalidGrant(
                    "no PKCE challenge was sent for this code".into(),
                ));
            }
            (false, None) => return Err(OAuthError::InvalidGrant("code_verifier required".into())),
            (false, Some(v)) => {
                let valid_shape = (43..=128).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
                if !valid_shape || computed != rec.code_challenge {
                    return Err(OAuthError::InvalidGrant("PKCE verification failed".into()));
                }
            }
        }
        // The rightful client replaying a redeemed code (RFC 6749 4.1.2, RFC 9700 4.5).
        if rec.consumed_at.is_some() {
            return Err(self.code_replayed(&rec)?);
        }
        if now >= rec.expires_at {
            return Err(OAuthError::InvalidGrant("code expired".into()));
        }
        // The session must still be live.
        let session = self.store.session_by_sid(&rec.sid)?;
        if session.is_none_or(|s| now >= s.expires_at) {
            return Err(OAuthError::InvalidGrant("the session has ended".into()));
        }
        let grantee = Grantee {
            user_id: rec.user_id.clone(),
            sid: rec.sid.clone(),
            scope: rec.scope.clone(),
            auth_time: rec.auth_time,
            acr: rec.acr.clone(),
            amr: rec.amr.clone(),
            nonce: rec.nonce.clone(),
        };
        let family = hex::encode(rec.code_hash);
        let absolute = now.saturating_add(secs(
            client
                .refresh_absolute_ttl
                .unwrap_or(self.settings.refresh_absolute_ttl),
        ));
        let (response, refresh) = self.user_tokens(
            client,
            &grantee,
            self.grant_jti(&family),
            Some((family, absolute)),
            true,
        )?;
        // One transaction spends the code and stores its refresh token: a crash in between
        // cannot leave a spent code without its grant, nor a grant whose code can be redeemed.
        match self.store.redeem_code(&hash, now, refresh.as_ref())? {
            CodeUse::First(_) => {}
            CodeUse::Replayed(rec) => return Err(self.code_replayed(&rec)?),
            CodeUse::Unknown => return Err(OAuthError::InvalidGrant("unknown code".into())),
        }
        self.audit.record(
            Event::new(EventKind::TokenIssued)
                .client(client.id.as_str())
                .user(rec.user_id.as_str())
                .sid(rec.sid.as_str())
                .reason("authorization_code"),
        );
        Ok(response)
    }

    /// A redeemed code came back from its own client: everything it issued is revoked.
    fn code_replayed(&self, rec: &AuthCodeRecord) -> Result<OAuthError, OAuthError> {
        let revoked = self.revoke_grant(&hex::encode(rec.code_hash))?;
        tracing::warn!(client_id = %rec.client_id, refresh_revoked = revoked, "authorization code replayed; its tokens are revoked");
        self.audit.record(
            Event::new(EventKind::CodeReplayed)
                .client(rec.client_id.as_str())
                .user(rec.user_id.as_str())
                .sid(rec.sid.as_str()),
        );
        Ok(OAuthError::InvalidGrant("code already used".into()))
    }
}
