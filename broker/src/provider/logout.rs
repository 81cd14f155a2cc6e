//! Owns logout towards the apps: validating RP-initiated logout requests (id_token_hint,
//! registered post_logout_redirect_uri), and OpenID Back-Channel Logout 1.0: a signed logout
//! token for every client that took part in an ended session, queued durably and delivered
//! with retries in the background so the user never waits on an app. The same outbox carries
//! the back-channel logouts of the session's other parties (SAML SPs, SOAP binding), whose
//! message and answer are [`OtherParties`]'s.

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

/// How a session ends: in a browser, which then goes through the parties that have a front
/// channel (the sign-out chain), or elsewhere (a revocation, a session limit), where only a
/// back channel reaches them; or at the request of one of its parties (a LogoutRequest naming
/// other sessions), which is not told of what it asked for (SAML Profiles 4.4.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Browser,
    Elsewhere,
    RequestedBy(String),
}

/// One attempt's request to a party that is not an OpenID client.
#[derive(Debug, Clone)]
pub struct PartyMessage {
    pub content_type: &'static str,
    /// Extra headers (a SOAPAction).
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: String,
    /// What its answer is checked against (a request ID).
    pub answers: String,
}

/// Why one attempt of a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// Try again later (no answer, an HTTP error).
    Retry(String),
    /// The party answered, and the answer was refused or said no: trying again changes nothing.
    Refused(String),
}

/// The parties of a session that are not OpenID clients (`saml:<entity id>`), known above the
/// provider, which tell the outbox where and what to send. Blocking (storage, signatures).
pub trait OtherParties: Send + Sync {
    /// `party` is one of these (never an OpenID client id).
    fn owns(&self, party: &str) -> bool;
    /// Where `party` is told by back channel when the session ends as `ending`; `None`: it is
    /// left to the caller (a front channel, or untold).
    fn back_channel(&self, party: &str, ending: &Ending) -> Option<String>;
    /// The message of one attempt of `d`; `None` when the party or the user is gone.
    fn message(&self, d: &LogoutDelivery) -> Result<Option<PartyMessage>, String>;
    /// The party's HTTP answer (`status`, the body read up to a limit) to `sent`.
    fn answered(
        &self,
        d: &LogoutDelivery,
        sent: &PartyMessage,
        status: u16,
        body: &str,
    ) -> Result<(), DeliveryFailure>;
}

/// The largest answer of a party read.
const MAX_ANSWER: usize = 256 * 1024;

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
    /// has a back-channel logout URI, and for every other party (a SAML SP) that
    /// [`OtherParties`] reaches by back channel when the session ends as `ending`. Returns how
    /// many were queued, and the parties that took part but were not told (no back channel,
    /// or a SAML SP left to the browser's front channel). The messages are made when sent
    /// (`deliver_logouts`), so that every attempt carries a fresh, unexpired one.
    pub fn session_ended(
        &self,
        session: &SessionRecord,
        reason: &str,
        ending: Ending,
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
            let uri = match self.other_parties.get().filter(|o| o.owns(&client_id)) {
                Some(other) => other.back_channel(&client_id, &ending),
                None => self
                    .clients
                    .get(&client_id)?
                    .and_then(|c| c.backchannel_logout_uri.as_ref().map(|u| u.to_string())),
            };
            let Some(uri) = uri else {
                untold.push(client_id);
                continue;
            };
            let mut id = [0u8; 12];
            self.entropy.fill(&mut id);
            self.store.enqueue_logout(&LogoutDelivery {
                id: URL_SAFE_NO_PAD.encode(id),
                client_id,
                uri,
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
        let other = self.other_parties.get().map(Arc::clone);
        let failure = match other {
            Some(other) if other.owns(&d.client_id) => self.deliver_to_party(other, http, &d).await,
            _ => self.deliver_token(http, &d).await,
        };
        let this = Arc::clone(&self);
        let now = self.now();
        let attempts = d.attempts + 1;
        let result = match failure {
            None => tokio::task::spawn_blocking(move || this.store.delete_logout(&d.id)).await,
            Some(DeliveryFailure::Refused(error)) => {
                tracing::warn!(party = %d.client_id, %error, "back-channel logout refused by the party; not retried");
                tokio::task::spawn_blocking(move || this.store.delete_logout(&d.id)).await
            }
            Some(DeliveryFailure::Retry(_)) if attempts >= MAX_ATTEMPTS => {
                tracing::warn!(client_id = %d.client_id, attempts, "back-channel logout given up");
                tokio::task::spawn_blocking(move || this.store.delete_logout(&d.id)).await
            }
            Some(DeliveryFailure::Retry(error)) => {
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

    /// An OpenID client's attempt: its logout token, signed now, posted as a form. `None`:
    /// nothing left to do (delivered, or the client is gone).
    async fn deliver_token(
        self: &Arc<Self>,
        http: &reqwest::Client,
        d: &LogoutDelivery,
    ) -> Option<DeliveryFailure> {
        let (this, row) = (Arc::clone(self), d.clone());
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
        failure.map(DeliveryFailure::Retry)
    }

    /// Another party's attempt: the message [`OtherParties`] makes for it, posted, and its
    /// answer (read up to [`MAX_ANSWER`]) judged by it.
    async fn deliver_to_party(
        &self,
        other: Arc<dyn OtherParties>,
        http: &reqwest::Client,
        d: &LogoutDelivery,
    ) -> Option<DeliveryFailure> {
        let (o, row) = (Arc::clone(&other), d.clone());
        let message = match tokio::task::spawn_blocking(move || o.message(&row)).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => {
                tracing::info!(party = %d.client_id, "back-channel logout dropped: the party or the user is gone");
                return None;
            }
            Ok(Err(e)) => return Some(DeliveryFailure::Retry(e)),
            Err(e) => return Some(DeliveryFailure::Retry(e.to_string())),
        };
        let mut request = http
            .post(&d.uri)
            .timeout(DELIVERY_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, message.content_type);
        for (name, value) in &message.headers {
            request = request.header(*name, *value);
        }
        let mut answer = match request.body(message.body.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Some(DeliveryFailure::Retry(e.to_string())),
        };
        let status = answer.status().as_u16();
        let mut body = Vec::new();
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return Some(DeliveryFailure::Refused("the answer is too large".into()));
                }
                Ok(None) => break,
                Err(e) => return Some(DeliveryFailure::Retry(e.to_string())),
            }
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let row = d.clone();
        match tokio::task::spawn_blocking(move || other.answered(&row, &message, status, &body))
            .await
        {
            Ok(Ok(())) => {
                tracing::info!(party = %d.client_id, "back-channel logout delivered");
                None
            }
            Ok(Err(f)) => Some(f),
            Err(e) => Some(DeliveryFailure::Retry(e.to_string())),
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
