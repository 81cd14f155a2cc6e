//! Owns logout towards the apps: validating RP-initiated logout requests (id_token_hint,
//! registered post_logout_redirect_uri), and OpenID Back-Channel Logout 1.0: a signed logout
//! token for every client that took part in an ended session, queued durably and delivered
//! with retries in the background so the user never waits on an app.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::clients::Client;
use super::jwt;
use super::{OAuthError, Provider};
use crate::audit::{Event, EventKind};
use crate::storage::{LogoutDelivery, SessionRecord};

/// Deliveries are given up after this many attempts (retries 5 s apart, doubling: about 10 minutes in all).
const MAX_ATTEMPTS: i64 = 8;

/// What an RP-initiated logout request asked for, once checked.
#[derive(Debug, Clone)]
pub struct EndSession {
    pub client: Option<std::sync::Arc<Client>>,
    /// The `sid` of the ID token hint, if one was given.
    pub hint_sid: Option<String>,
    pub post_logout_redirect_uri: Option<url::Url>,
    pub state: Option<String>,
}

impl Provider {
    /// Checks an end-session request. Errors are locale keys for the error page: nothing is
    /// redirected to an address that is not registered.
    pub fn end_session_request(
        &self,
        id_token_hint: Option<&str>,
        client_id: Option<&str>,
        post_logout_redirect_uri: Option<&str>,
        state: Option<&str>,
    ) -> Result<EndSession, &'static str> {
        let mut hint_sid = None;
        let mut hint_client = None;
        if let Some(hint) = id_token_hint {
            // Expired hints are fine (the user may come back long after); signature and issuer
            // are not negotiable.
            let (_, claims) = jwt::verify(hint, |kid| self.keys.verifier(kid))
                .map_err(|_| "error_logout_hint")?;
            if claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
                return Err("error_logout_hint");
            }
            hint_client = claims.get("aud").and_then(Value::as_str).map(str::to_owned);
            hint_sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        }
        let client_id = match (hint_client.as_deref(), client_id) {
            (Some(a), Some(b)) if a != b => return Err("error_logout_hint"),
            (Some(a), _) => Some(a.to_owned()),
            (None, b) => b.map(str::to_owned),
        };
        let client = match &client_id {
            Some(id) => Some(
                self.clients
                    .get(id)
                    .map_err(|_| "error_500_message")?
                    .ok_or("error_authorize_client")?,
            ),
            None => None,
        };
        let post_logout_redirect_uri = match post_logout_redirect_uri {
            None => None,
            Some(uri) => {
                let c = client.as_ref().ok_or("error_logout_redirect")?;
                Some(
                    c.post_logout_redirect_uri(uri)
                        .ok_or("error_logout_redirect")?,
                )
            }
        };
        Ok(EndSession {
            client,
            hint_sid,
            post_logout_redirect_uri,
            state: state.map(str::to_owned),
        })
    }

    /// Queues a logout token for every client that took part in the ended session and has a
    /// back-channel logout URI. Returns how many were queued.
    pub fn session_ended(
        &self,
        session: &SessionRecord,
        reason: &str,
    ) -> Result<usize, OAuthError> {
        self.audit.record(
            Event::new(EventKind::SessionEnded)
                .user(session.user_id.as_str())
                .sid(session.sid.as_str())
                .reason(reason),
        );
        let now = self.now();
        let mut queued = 0;
        for client_id in self.store.take_session_clients(&session.sid)? {
            let Some(client) = self.clients.get(&client_id)? else {
                continue;
            };
            let Some(uri) = &client.backchannel_logout_uri else {
                continue;
            };
            let mut jti = [0u8; 18];
            self.entropy.fill(&mut jti);
            let claims = json!({
                "iss": self.settings.issuer,
                "aud": client.id,
                "iat": now,
                "exp": now + 120,
                "jti": URL_SAFE_NO_PAD.encode(jti),
                "sub": session.user_id.as_str(),
                "sid": session.sid,
                "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
            });
            let token = self.sign_for(&client, "logout+jwt", &claims)?;
            let mut id = [0u8; 12];
            self.entropy.fill(&mut id);
            self.store.enqueue_logout(&LogoutDelivery {
                id: URL_SAFE_NO_PAD.encode(id),
                client_id: client.id.clone(),
                uri: uri.to_string(),
                logout_token: token,
                attempts: 0,
                next_attempt_at: now,
                created_at: now,
            })?;
            queued += 1;
        }
        if queued > 0 {
            self.logout_wakeup.notify_one();
        }
        Ok(queued)
    }

    /// Sends the logout tokens that are due; failures are retried with exponential backoff.
    pub async fn deliver_logouts(self: &std::sync::Arc<Self>, http: &reqwest::Client) {
        let this = std::sync::Arc::clone(self);
        let now = self.now();
        let due = match tokio::task::spawn_blocking(move || this.store.due_logouts(now, 50)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the logout outbox");
                return;
            }
            Err(_) => return,
        };
        for d in due {
            // Several instances share the outbox: only the one that claims a row sends it.
            let this = std::sync::Arc::clone(self);
            let (id, seen) = (d.id.clone(), d.next_attempt_at);
            let claimed =
                tokio::task::spawn_blocking(move || this.store.claim_logout(&id, seen, now + 30))
                    .await;
            if !matches!(claimed, Ok(Ok(true))) {
                continue;
            }
            let sent = http
                .post(&d.uri)
                .form(&[("logout_token", d.logout_token.as_str())])
                .send()
                .await
                .map(|r| r.status().is_success());
            let this = std::sync::Arc::clone(self);
            let result = match sent {
                Ok(true) => {
                    tracing::info!(client_id = %d.client_id, "back-channel logout delivered");
                    tokio::task::spawn_blocking(move || this.store.delete_logout(&d.id)).await
                }
                failure => {
                    let attempts = d.attempts + 1;
                    if attempts >= MAX_ATTEMPTS {
                        tracing::warn!(client_id = %d.client_id, attempts, "back-channel logout given up");
                        tokio::task::spawn_blocking(move || this.store.delete_logout(&d.id)).await
                    } else {
                        let delay = 5i64 << (attempts - 1).clamp(0, 10);
                        tracing::info!(client_id = %d.client_id, attempts, retry_in_s = delay, ok = ?failure.as_ref().ok(), "back-channel logout failed; will retry");
                        tokio::task::spawn_blocking(move || {
                            this.store.reschedule_logout(&d.id, attempts, now + delay)
                        })
                        .await
                    }
                }
            };
            if let Ok(Err(e)) = result {
                tracing::warn!(error = %e, "logout outbox update failed");
            }
        }
    }
}

/// The HTTP client for back-channel deliveries: short timeouts, no redirects, the broker's
/// trust anchors.
pub fn http_client(
    trust: &crate::upstream::http::TrustAnchors,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::upstream::http::client(Duration::from_secs(5), trust)
}
