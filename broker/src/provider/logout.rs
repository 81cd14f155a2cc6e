//! Owns logout towards the apps: validating RP-initiated logout requests (id_token_hint,
//! registered post_logout_redirect_uri), and OpenID Back-Channel Logout 1.0: a signed logout
//! token for every client that took part in an ended session, queued durably and delivered
//! with retries in the background so the user never waits on an app.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{OAuthError, Provider};
use crate::audit::{Event, EventKind};
use crate::domain::client::Client;
use crate::jwt;
use crate::storage::{LogoutDelivery, SessionRecord};

/// Deliveries are given up after this many attempts (retries 5 s apart, doubling: about 10 minutes in all).
const MAX_ATTEMPTS: i64 = 8;

/// Lifetime of a logout token, counted from the attempt that sends it.
const LOGOUT_TOKEN_TTL: i64 = 120;

/// Each attempt's own limit: an app that hangs costs its own slot this long, no other app's time.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many deliveries are in flight at once.
const PARALLEL_DELIVERIES: usize = 16;

/// How long a claimed delivery is hidden from other instances (and later rounds): longer than
/// one attempt.
const LEASE: i64 = 30;

/// What an RP-initiated logout request asked for, once checked.
#[derive(Debug, Clone)]
pub struct EndSession {
    pub client: Option<std::sync::Arc<Client>>,
    /// The `sid` of the ID token hint, if one was given.
    pub hint_sid: Option<String>,
    pub post_logout_redirect_uri: Option<url::Url>,
    pub state: Option<String>,
}

/// What ending a session told its apps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionEnded {
    /// Back-channel logouts queued.
    pub queued: usize,
    /// The parties (client ids, or `saml:<entity id>`) that took part but were not told.
    pub untold: Vec<String>,
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

    /// Queues a back-channel logout for every client that took part in the ended session and
    /// has a back-channel logout URI. Returns how many were queued, and the parties that took
    /// part but were not told (no back-channel logout URI, or not an OpenID client: a SAML SP's
    /// party key). The tokens are signed when sent (`deliver_logouts`), so that every attempt
    /// carries a fresh, unexpired one.
    pub fn session_ended(
        &self,
        session: &SessionRecord,
        reason: &str,
    ) -> Result<SessionEnded, OAuthError> {
        self.audit.record(
            Event::new(EventKind::SessionEnded)
                .user(session.user_id.as_str())
                .sid(session.sid.as_str())
                .reason(reason),
        );
        let now = self.now();
        let (mut queued, mut untold) = (0, Vec::new());
        for client_id in self.store.take_session_clients(&session.sid)? {
            let Some(client) = self.clients.get(&client_id)? else {
                untold.push(client_id);
                continue;
            };
            let Some(uri) = &client.backchannel_logout_uri else {
                untold.push(client_id);
                continue;
            };
            let mut id = [0u8; 12];
            self.entropy.fill(&mut id);
            self.store.enqueue_logout(&LogoutDelivery {
                id: URL_SAFE_NO_PAD.encode(id),
                client_id: client.id.clone(),
                uri: uri.to_string(),
                sub: session.user_id.as_str().to_owned(),
                sid: session.sid.clone(),
                attempts: 0,
                next_attempt_at: now,
                created_at: now,
            })?;
            queued += 1;
        }
        if queued > 0 {
            self.logout_wakeup.notify_one();
        }
        Ok(SessionEnded { queued, untold })
    }

    /// The logout token for one attempt of `d`, signed now: fresh `iat`, `exp` and `jti`.
    /// `None` if the client no longer exists. Blocking (a client registered at run time is
    /// read from storage; a missing key is created).
    fn logout_token(&self, d: &LogoutDelivery) -> Result<Option<String>, OAuthError> {
        let Some(client) = self.clients.get(&d.client_id)? else {
            return Ok(None);
        };
        let now = self.now();
        let mut jti = [0u8; 18];
        self.entropy.fill(&mut jti);
        let claims = json!({
            "iss": self.settings.issuer,
            "aud": client.id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_TTL,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "sub": d.sub,
            "sid": d.sid,
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        self.sign_for(&client, "logout+jwt", &claims).map(Some)
    }

    /// Starts sending the deliveries that are due, each in its own task with its own timeout,
    /// at most `LogoutSender`'s number at once: an app that hangs holds one slot until its
    /// timeout and delays no other app. Failures are retried with exponential backoff.
    pub async fn deliver_logouts(self: &Arc<Self>, sender: &LogoutSender) {
        let this = Arc::clone(self);
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
            // Waits only while every slot is taken.
            let Ok(slot) = Arc::clone(&sender.slots).acquire_owned().await else {
                return;
            };
            // Several instances share the outbox: only the one that claims a row sends it. The
            // lease outlasts the attempt's timeout.
            let this = Arc::clone(self);
            let (id, seen, lease_until) = (d.id.clone(), d.next_attempt_at, self.now() + LEASE);
            let claimed = tokio::task::spawn_blocking(move || {
                this.store.claim_logout(&id, seen, lease_until)
            })
            .await;
            if !matches!(claimed, Ok(Ok(true))) {
                continue;
            }
            let (this, http) = (Arc::clone(self), sender.http.clone());
            tokio::spawn(async move {
                this.deliver_one(&http, d).await;
                drop(slot);
            });
        }
    }

    /// One attempt of one delivery, and what it leaves in the outbox.
    async fn deliver_one(self: Arc<Self>, http: &reqwest::Client, d: LogoutDelivery) {
        let (this, row) = (Arc::clone(&self), d.clone());
        // `None`: nothing left to do (delivered, or the client is gone); else why it failed.
        let failure = match tokio::task::spawn_blocking(move || this.logout_token(&row)).await {
            Ok(Ok(Some(token))) => match http
                .post(&d.uri)
                .timeout(DELIVERY_TIMEOUT)
                .form(&[("logout_token", token.as_str())])
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(client_id = %d.client_id, "back-channel logout delivered");
                    None
                }
                Ok(r) => Some(format!("status {}", r.status().as_u16())),
                Err(e) => Some(e.to_string()),
            },
            Ok(Ok(None)) => {
                tracing::info!(client_id = %d.client_id, "back-channel logout dropped: the client is gone");
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        let this = Arc::clone(&self);
        let now = self.now();
        let attempts = d.attempts + 1;
        let result = match failure {
            None => tokio::task::spawn_blocking(move || this.store.delete_logout(&d.id)).await,
            Some(_) if attempts >= MAX_ATTEMPTS => {
                tracing::warn!(client_id = %d.client_id, attempts, "back-channel logout given up");
                tokio::task::spawn_blocking(move || this.store.delete_logout(&d.id)).await
            }
            Some(error) => {
                let delay = 5i64 << (attempts - 1).clamp(0, 10);
                tracing::info!(client_id = %d.client_id, attempts, retry_in_s = delay, %error, "back-channel logout failed; will retry");
                tokio::task::spawn_blocking(move || {
                    this.store.reschedule_logout(&d.id, attempts, now + delay)
                })
                .await
            }
        };
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "logout outbox update failed");
        }
    }
}

/// What the back-channel logout worker sends with: one HTTP client and the slots that bound
/// how many deliveries are in flight.
pub struct LogoutSender {
    http: reqwest::Client,
    slots: Arc<tokio::sync::Semaphore>,
}

impl LogoutSender {
    pub fn new(trust: &crate::config::http::TrustAnchors) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: http_client(trust)?,
            slots: Arc::new(tokio::sync::Semaphore::new(PARALLEL_DELIVERIES)),
        })
    }
}

/// The HTTP client for back-channel deliveries: short timeouts, no redirects, the broker's
/// trust anchors.
pub fn http_client(
    trust: &crate::config::http::TrustAnchors,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::http::client(DELIVERY_TIMEOUT, trust)
}
