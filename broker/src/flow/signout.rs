//! Owns signing out: ending a first-party session ([`end_session`]: the record and its refresh
//! tokens go, every app that took part is told through back-channel logout); signing out through
//! the browser (the broker session ends, then the browser goes through the upstream's own logout,
//! OIDC RP-initiated logout or SAML Single Logout, when the session came from one, coming back to
//! where it was going); and the SAML IdP's own LogoutRequest, which ends the sessions it names.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::contract::{Browser, CookieOp, Hop, Next, Outcome, View};
use super::signin::{SignIn, SignInError, blocking};
use crate::audit::{Event, EventKind};
use crate::provider::logout::{Ending, SessionEnded};
use crate::provider::{OAuthError, Provider};
use crate::session::{SessionError, SessionManager};
use crate::storage::{LogoutContinuation, SessionRecord, UpstreamSessionRecord};
use crate::upstream::{Connector, UpstreamSession};

#[derive(Debug, thiserror::Error)]
pub enum SignOutError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Provider(#[from] OAuthError),
}

/// Ends the session behind a cookie value (if any); `reason` goes to the audit trail.
/// Blocking (storage).
pub fn end_session(
    sessions: &SessionManager,
    provider: &Provider,
    cookie_value: &str,
    reason: &str,
) -> Result<Option<(SessionRecord, SessionEnded)>, SignOutError> {
    let Some(record) = sessions.end(cookie_value)? else {
        return Ok(None);
    };
    let ended = provider.session_ended(&record, reason, Ending::Browser)?;
    tracing::info!(sid = %record.sid, backchannel = ended.queued, untold = ended.untold.len(), "session ended");
    Ok(Some((record, ended)))
}

/// Where the browser goes to end its session at the upstream.
pub enum UpstreamLogout {
    /// Nothing to end there (no upstream session, or the upstream has no logout).
    Nothing,
    /// The upstream has a logout but it could not be started (its session goes on).
    Skipped,
    /// To `url`; the answer comes back with `relay` (and answers `request_id`).
    Go {
        url: String,
        upstream: String,
        request_id: String,
        relay: String,
    },
}

/// How long a logout may wait at the upstream.
const LOGOUT_TTL: i64 = 600;

/// An RP-initiated logout request (OpenID Connect RP-Initiated Logout 1.0), as it arrived.
#[derive(Debug, Clone, Default)]
pub struct RpLogout {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    /// The user confirmed on the broker's own page (its CSRF token checked by the caller).
    pub confirmed: bool,
}

impl SignIn {
    /// `/oidc/logout`: with a valid `id_token_hint` for the current session (or no session at
    /// all) it signs out at once, through the upstream's logout, to the checked post-logout
    /// redirect URI; otherwise it asks the user first.
    pub async fn rp_logout(&self, browser: &Browser, r: RpLogout) -> Result<Outcome, SignInError> {
        let provider = Arc::clone(&self.provider);
        let (hint, client_id, plru, st) = (
            r.id_token_hint.clone(),
            r.client_id.clone(),
            r.post_logout_redirect_uri.clone(),
            r.state.clone(),
        );
        let checked = blocking(move || {
            Ok(provider.end_session_request(
                hint.as_deref(),
                client_id.as_deref(),
                plru.as_deref(),
                st.as_deref(),
            ))
        })
        .await?;
        let request = match checked {
            Ok(req) => req,
            Err(key) => return Ok(Outcome::message(400, key)),
        };
        let sid = self.current_session(browser).await?.map(|s| s.sid);
        let hint_matches = match (&sid, &request.hint_sid) {
            (None, _) => true,
            (Some(s), Some(h)) => s == h,
            (Some(_), None) => false,
        };
        if let Some(sid) = sid.filter(|_| !hint_matches && !r.confirmed) {
            let mut fields = vec![("confirm".to_owned(), "1".to_owned())];
            let client_id = r
                .client_id
                .clone()
                .or_else(|| request.client.as_ref().map(|c| c.id.clone()));
            for (k, v) in [
                ("client_id", client_id),
                (
                    "post_logout_redirect_uri",
                    r.post_logout_redirect_uri.clone(),
                ),
                ("state", r.state.clone()),
            ] {
                if let Some(v) = v {
                    fields.push((k.to_owned(), v));
                }
            }
            // The confirmation ends, through redirects, at the upstream's logout (when the
            // session came from one) and then the post-logout redirect URI.
            let mut hops: Vec<Hop> = request
                .post_logout_redirect_uri
                .iter()
                .cloned()
                .map(Hop::Url)
                .collect();
            hops.push(Hop::UpstreamLogout(sid));
            let mut out = Outcome::new(Next::Page {
                status: 200,
                journey: None,
                view: View::LogoutConfirm {
                    client_name: request
                        .client
                        .as_ref()
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    fields,
                },
            });
            out.hops = hops;
            return Ok(out);
        }
        let target = match request.post_logout_redirect_uri {
            Some(uri) => {
                let params: Vec<(&str, &str)> = request
                    .state
                    .as_deref()
                    .map(|s| vec![("state", s)])
                    .unwrap_or_default();
                crate::provider::authorize::with_params(uri, &params).to_string()
            }
            None => "/signed-out".to_owned(),
        };
        self.sign_out(browser, "rp_logout", target).await
    }

    /// What the browser's session needs to be ended at its upstream (read before the session
    /// ends: the row goes with it).
    pub async fn upstream_session_of(
        &self,
        browser: &Browser,
    ) -> Result<Option<UpstreamSessionRecord>, SignInError> {
        let Some(key) = browser
            .session
            .as_ref()
            .and_then(|c| crate::session::SessionToken::key_of(c.expose()))
        else {
            return Ok(None);
        };
        let store = Arc::clone(&self.store);
        blocking(move || {
            let Some(s) = store.session(&key)? else {
                return Ok(None);
            };
            Ok(store.upstream_session(&s.sid)?)
        })
        .await
    }

    /// Ends this browser's session (`reason` to the audit trail) and sends it through the SAML
    /// SPs of the session (`saml_slo_out.rs`), the upstream's logout, then to `then`.
    pub async fn sign_out(
        &self,
        browser: &Browser,
        reason: &'static str,
        then: String,
    ) -> Result<Outcome, SignInError> {
        let (upstream, ended) = self.end_browser_session(browser, reason).await?;
        let hop = self.upstream_logout(upstream).await?;
        let to = self.logout_chain(ended, hop, then).await?;
        Ok(Outcome::redirect(to).with_cookie(CookieOp::ClearSession))
    }

    /// Ends this browser's session and every sign-in it had under way (`reason` to the audit
    /// trail): what ending it at its upstream needs (read before the session ends: the row goes
    /// with it), and the session with what ending it told its apps (`None`: there was none).
    #[allow(clippy::type_complexity)]
    pub async fn end_browser_session(
        &self,
        browser: &Browser,
        reason: &'static str,
    ) -> Result<
        (
            Option<UpstreamSessionRecord>,
            Option<(SessionRecord, SessionEnded)>,
        ),
        SignInError,
    > {
        let upstream = self.upstream_session_of(browser).await?;
        // Every sign-in this browser had under way ends too: none finishes after the sign-out.
        if let Some(b) = &browser.binding {
            let bound: [u8; 32] = Sha256::digest(b.expose().as_bytes()).into();
            let journeys = self.journeys.clone();
            blocking(move || Ok(journeys.end_browser(&bound)?)).await?;
        }
        let mut ended = None;
        if let Some(cookie) = browser.session.as_ref().map(|c| c.expose().to_owned()) {
            let (sessions, provider) = (Arc::clone(&self.sessions), Arc::clone(&self.provider));
            ended = blocking(move || {
                end_session(&sessions, &provider, &cookie, reason).map_err(SignInError::internal)
            })
            .await?;
        }
        Ok((upstream, ended))
    }

    /// The logout at the upstream of a session (its record read before the session ended).
    pub async fn upstream_logout(
        &self,
        upstream: Option<UpstreamSessionRecord>,
    ) -> Result<UpstreamLogout, SignInError> {
        let Some(rec) = upstream else {
            return Ok(UpstreamLogout::Nothing);
        };
        let session = match (&rec.id_token, &rec.name_id) {
            (Some(t), _) => UpstreamSession::Oidc {
                id_token: t.clone(),
            },
            (None, Some(n)) => UpstreamSession::Saml {
                name_id: n.clone(),
                name_id_format: rec.name_id_format.clone(),
                session_index: rec.session_index.clone(),
            },
            (None, None) => return Ok(UpstreamLogout::Nothing),
        };
        let relay = super::signin::random_token(self.entropy.as_ref());
        let id = rec.upstream.as_str();
        let target = match self.upstreams.get(id).map(|u| &u.connector) {
            Some(Connector::Redirect(c)) => {
                let back = self
                    .settings
                    .public_url
                    .join(&format!("/upstream/{id}/logged-out"))
                    .map_err(SignInError::internal)?;
                c.logout_url(&session, &back, &relay)
                    .await
                    .map(|u| u.map(|u| (u, String::new())))
            }
            Some(Connector::Post(c)) => c.logout_request(&session, &relay).await,
            _ => Ok(None),
        };
        Ok(match target {
            Ok(Some((url, request_id))) => UpstreamLogout::Go {
                url: url.to_string(),
                upstream: id.to_owned(),
                request_id,
                relay,
            },
            Ok(None) => UpstreamLogout::Nothing,
            Err(e) => {
                tracing::warn!(upstream = id, error = %e, "logout at the upstream skipped");
                UpstreamLogout::Skipped
            }
        })
    }

    /// Where the browser goes: through the upstream's logout (when there is one to go to), then
    /// to `then`.
    pub async fn then_upstream(
        &self,
        hop: UpstreamLogout,
        then: String,
    ) -> Result<String, SignInError> {
        let UpstreamLogout::Go {
            url,
            upstream,
            request_id,
            relay,
        } = hop
        else {
            return Ok(then);
        };
        // Where to continue once the upstream sends the browser back (single use).
        let record = LogoutContinuation {
            relay_hash: Sha256::digest(relay.as_bytes()).into(),
            upstream,
            request_id,
            then,
            expires_at: self.clock.now().saturating_add(LOGOUT_TTL),
        };
        let store = Arc::clone(&self.store);
        blocking(move || Ok(store.insert_logout_continuation(&record)?)).await?;
        Ok(url)
    }

    /// The logout continuation behind `relay` for upstream `id`, taken (single use): where to
    /// go, and the SAML request id the answer must match.
    async fn take_logout(
        &self,
        id: &str,
        relay: &str,
    ) -> Result<Option<(String, String)>, SignInError> {
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        let hash: [u8; 32] = Sha256::digest(relay.as_bytes()).into();
        let p = blocking(move || Ok(store.take_logout_continuation(&hash, now)?)).await?;
        Ok(p.filter(|p| p.upstream == id)
            .map(|p| (p.then, p.request_id)))
    }

    /// `GET /upstream/{id}/logged-out`: back from the upstream's RP-initiated logout.
    pub async fn upstream_logged_out(&self, id: &str, relay: &str) -> Result<Outcome, SignInError> {
        let to = match self.take_logout(id, relay).await? {
            Some((then, _)) => then,
            None => "/signed-out".to_owned(),
        };
        Ok(Outcome::redirect(to))
    }

    /// `GET /upstream/{id}/saml/slo`: a LogoutResponse answers the broker's own request (the
    /// logout continues where it was going); a LogoutRequest from the IdP ends the broker
    /// sessions it names and is answered with a signed LogoutResponse. `None`: not a SAML
    /// upstream; `Err(Outcome)` for a refused request.
    pub async fn saml_slo(
        &self,
        browser: &Browser,
        id: &str,
        raw_query: &str,
    ) -> Result<Option<Outcome>, SignInError> {
        let Some(Connector::Post(connector)) = self.upstreams.get(id).map(|u| &u.connector) else {
            return Ok(None);
        };
        let params: std::collections::BTreeMap<String, String> =
            url::form_urlencoded::parse(raw_query.as_bytes())
                .into_owned()
                .collect();
        if params.contains_key("SAMLResponse") {
            let relay = params.get("RelayState").cloned().unwrap_or_default();
            let Some((then, request_id)) = self.take_logout(id, &relay).await? else {
                return Ok(Some(Outcome::redirect("/signed-out".into())));
            };
            if let Err(e) = connector.logout_response(raw_query, &request_id).await {
                // The broker session is over either way; the IdP's session may not be.
                tracing::warn!(upstream = %id, error = %e, "SAML LogoutResponse refused");
            }
            return Ok(Some(Outcome::redirect(then)));
        }
        let logout = match connector.idp_logout(raw_query).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(upstream = %id, error = %e, "SAML LogoutRequest refused");
                self.provider.audit.record(
                    Event::new(EventKind::LoginFailed)
                        .upstream(id)
                        .ip(browser.ip.as_str())
                        .reason("logout_request_refused"),
                );
                return Ok(Some(Outcome::message(400, "error_400_message")));
            }
        };
        // The browser carrying the request keeps its cookie unless its own session ends.
        let own_sid = self.current_session(browser).await?.map(|s| s.sid);
        let (store, provider) = (Arc::clone(&self.store), Arc::clone(&self.provider));
        let (upstream, name_id, indexes) = (id.to_owned(), logout.name_id, logout.session_indexes);
        let (ended, own_ended) = blocking(move || {
            let (mut ended, mut own_ended) = (0, false);
            for s in store.upstream_sessions_by_name_id(&upstream, &name_id)? {
                let named = indexes.is_empty()
                    || s.session_index
                        .as_ref()
                        .is_some_and(|i| indexes.contains(i));
                if !named {
                    continue;
                }
                if let Some(record) = store.session_by_sid(&s.sid)? {
                    provider
                        .end_session_record(&record, "upstream_logout")
                        .map_err(SignInError::internal)?;
                    ended += 1;
                    own_ended |= own_sid.as_deref() == Some(s.sid.as_str());
                }
            }
            Ok((ended, own_ended))
        })
        .await?;
        tracing::info!(upstream = %id, ended, "sessions ended by the IdP's LogoutRequest");
        let mut out = Outcome::new(Next::Found(logout.respond_to.to_string()));
        if own_ended {
            out = out.with_cookie(CookieOp::ClearSession);
        }
        Ok(Some(out))
    }
}
