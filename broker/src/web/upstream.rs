//! Owns the HTTP side of upstream logins: leaving for the upstream with a pending login stored
//! server-side (single use, bound to this browser by a cookie), the OIDC callback and the SAML
//! ACS that turn the upstream's answer into a first-party session, and the SAML SP metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::login::{login_page_linking, return_to, signed_in};
use crate::audit::{Event, EventKind};
use crate::domain::ReturnTo;
use crate::error::WebError;
use crate::flow::login::{Authenticated, FlowError, federated_user};
use crate::provider::OAuthError;
use crate::ratelimit::Scope;
use crate::storage::{LogoutContinuation, UpstreamRequest, UpstreamSessionRecord};
use crate::upstream::{Connector, Federated, PendingUpstream, UpstreamError, UpstreamSession};

/// How long a login may wait at the upstream.
const PENDING_TTL: i64 = 600;
/// The pending login's return path, kept next to the connector's values until the journey
/// carries it. replaced by the journey (#13)
const RETURN_TO_KEY: &str = "return_to";

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    login_hint: Option<String>,
}

fn callback_url(state: &AppState, id: &str) -> Result<url::Url, WebError> {
    state
        .settings
        .public_url
        .join(&format!("/upstream/{id}/callback"))
        .map_err(WebError::internal)
}

fn connector(
    state: &AppState,
    id: &str,
) -> Result<Arc<dyn crate::upstream::RedirectConnector>, WebError> {
    match state.upstreams.get(id).map(|u| &u.connector) {
        Some(Connector::Redirect(c)) => Ok(Arc::clone(c)),
        _ => Err(WebError::NotFound),
    }
}

fn post_connector(
    state: &AppState,
    id: &str,
) -> Result<Arc<dyn crate::upstream::PostConnector>, WebError> {
    match state.upstreams.get(id).map(|u| &u.connector) {
        Some(Connector::Post(c)) => Ok(Arc::clone(c)),
        _ => Err(WebError::NotFound),
    }
}

/// The largest form the SAML ACS accepts (a signed, possibly encrypted Response, base64).
pub const MAX_SAML_FORM: usize = 512 * 1024;

/// Answers from upstreams arrive unauthenticated: each is counted against its address
/// (`rate_limit.callback_per_ip`) before anything of it is read or parsed.
fn callback_rate(state: &AppState, req: &HttpRequest, id: &str) -> Result<(), WebError> {
    let ip = super::client_ip(req, state);
    if let Err(limited) = state.limiter.check(Scope::CallbackPerIp, &ip) {
        state.provider.audit.record(
            Event::new(EventKind::RateLimited)
                .ip(ip)
                .upstream(id)
                .reason(Scope::CallbackPerIp.as_str()),
        );
        return Err(WebError::TooManyRequests(limited.retry_after_secs));
    }
    Ok(())
}

/// `GET /upstream/{id}/start`: sends the browser to the upstream.
pub async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<StartQuery>,
) -> Result<HttpResponse, WebError> {
    let id = id.into_inner();
    let rt = return_to(q.return_to.as_deref());
    let hint = q
        .login_hint
        .as_deref()
        .and_then(|h| crate::domain::Email::parse(h).ok());
    let hint = hint.as_ref().map(|e| e.as_str());
    let (started, cross_site) = match state.upstreams.get(&id).map(|u| &u.connector) {
        Some(Connector::Redirect(c)) => (c.start(&callback_url(&state, &id)?, hint).await, false),
        // The IdP answers with a cross-site POST: the binding cookie must travel with it.
        Some(Connector::Post(c)) => (c.start(hint).await, true),
        _ => return Err(WebError::NotFound),
    };
    let started = match started {
        Ok(s) => s,
        Err(e) => return upstream_failed(&state, &req, rt.as_ref(), &id, e).await,
    };
    let state_value = started
        .pending
        .values
        .get("state")
        .cloned()
        .ok_or_else(|| WebError::internal("connector returned no state"))?;
    let binding = URL_SAFE_NO_PAD.encode(state.entropy.bytes32());
    let mut values = started.pending.values.clone();
    // replaced by the journey (#13)
    values.insert(
        RETURN_TO_KEY.to_owned(),
        rt.as_ref().map(ReturnTo::as_str).unwrap_or("").to_owned(),
    );
    let record = UpstreamRequest {
        state_hash: Sha256::digest(state_value.as_bytes()).into(),
        upstream: id,
        binding_hash: Sha256::digest(binding.as_bytes()).into(),
        journey_hash: [0; 32],
        pending: serde_json::to_string(&values).map_err(WebError::internal)?,
        expires_at: state.clock.now().saturating_add(PENDING_TTL),
    };
    let store = Arc::clone(&state.store);
    web::block(move || store.insert_upstream_request(&record)).await??;
    let mut res = HttpResponse::SeeOther()
        .insert_header((
            actix_web::http::header::LOCATION,
            started.redirect_to.to_string(),
        ))
        .finish();
    let cookie = if cross_site {
        state
            .cookies
            .build_cross_site(state.cookies.upstream.clone(), binding)
    } else {
        state.cookies.build(state.cookies.upstream.clone(), binding)
    };
    res.add_cookie(&cookie).map_err(WebError::internal)?;
    Ok(res)
}

/// Why an answer matched no pending login of this browser (the audit reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoPending {
    /// No `state` (OIDC) in the answer.
    Missing,
    /// Never issued, expired, or already taken (a replay finds nothing: the pending login is
    /// deleted by its first use).
    Unknown,
    /// Issued for another upstream.
    OtherUpstream,
    /// Issued to another browser (the binding cookie is missing or another).
    OtherBrowser,
}

impl NoPending {
    fn reason(self) -> &'static str {
        match self {
            Self::Missing => "state_missing",
            Self::Unknown => "state_unknown",
            Self::OtherUpstream => "upstream_mismatch",
            Self::OtherBrowser => "browser_mismatch",
        }
    }
}

/// The pending login behind `state_value`: taken (single use), unexpired, for upstream `id`
/// and for this browser.
async fn take_pending(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    id: &str,
    state_value: &str,
) -> Result<Result<(Option<ReturnTo>, PendingUpstream), NoPending>, WebError> {
    let store = Arc::clone(&state.store);
    let now = state.clock.now();
    let hash: [u8; 32] = Sha256::digest(state_value.as_bytes()).into();
    let pending = web::block(move || store.take_upstream_request(&hash, now)).await??;
    let binding = req
        .cookie(&state.cookies.upstream)
        .map(|c| -> [u8; 32] { Sha256::digest(c.value().as_bytes()).into() });
    let pending = match pending {
        None => return Ok(Err(NoPending::Unknown)),
        Some(p) if p.upstream != id => return Ok(Err(NoPending::OtherUpstream)),
        Some(p) if Some(p.binding_hash) != binding => return Ok(Err(NoPending::OtherBrowser)),
        Some(p) => p,
    };
    let mut values: BTreeMap<String, String> =
        serde_json::from_str(&pending.pending).map_err(WebError::internal)?;
    // replaced by the journey (#13)
    let rt = values.remove(RETURN_TO_KEY).unwrap_or_default();
    Ok(Ok((return_to(Some(&rt)), PendingUpstream { values })))
}

/// The page for an answer that matches no pending login of this browser; audited.
async fn expired(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    id: &str,
    why: NoPending,
) -> Result<HttpResponse, WebError> {
    tracing::warn!(
        upstream = id,
        reason = why.reason(),
        "upstream answer refused"
    );
    state.provider.audit.record(
        Event::new(EventKind::LoginFailed)
            .upstream(id)
            .ip(super::client_ip(req, state))
            .reason(why.reason()),
    );
    login_page_linking(
        state,
        req,
        StatusCode::BAD_REQUEST,
        None,
        "",
        Some("error_upstream_expired"),
        None,
    )
    .await
}

/// `GET /upstream/{id}/callback`: the upstream's answer.
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<BTreeMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    let id = id.into_inner();
    callback_rate(&state, &req, &id)?;
    let connector = connector(&state, &id)?;
    let query = q.into_inner();
    let Some(state_value) = query.get("state").cloned() else {
        return expired(&state, &req, &id, NoPending::Missing).await;
    };
    let (rt, pending) = match take_pending(&state, &req, &id, &state_value).await? {
        Ok(p) => p,
        Err(why) => return expired(&state, &req, &id, why).await,
    };
    let callback = callback_url(&state, &id)?;
    match connector.callback(&callback, &pending, &query).await {
        Ok(federated) => finish(&state, &req, rt.as_ref(), &id, federated).await,
        Err(e) => upstream_failed(&state, &req, rt.as_ref(), &id, e).await,
    }
}

/// `POST /upstream/{id}/saml/acs`: the IdP's Response (HTTP-POST binding).
pub async fn saml_acs(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, WebError> {
    let id = id.into_inner();
    // Counted before the body is read (the payload is taken as a stream for that).
    callback_rate(&state, &req, &id)?;
    let connector = post_connector(&state, &id)?;
    let body = match payload.to_bytes_limited(MAX_SAML_FORM).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return Err(WebError::BadRequest),
        Err(_) => return Err(WebError::PayloadTooLarge),
    };
    if !super::form::well_formed(&body) {
        return Err(WebError::BadRequest);
    }
    let form: BTreeMap<String, String> =
        serde_urlencoded::from_bytes(&body).map_err(|_| WebError::BadRequest)?;
    // RelayState names this browser's pending login; without one the response is unsolicited
    // (IdP-initiated), which the connector refuses unless configured.
    let pending = match form.get("RelayState").filter(|s| !s.is_empty()) {
        Some(rs) => match take_pending(&state, &req, &id, rs).await? {
            Ok(p) => Some(p),
            Err(why) => return expired(&state, &req, &id, why).await,
        },
        None => None,
    };
    let rt = pending.as_ref().and_then(|(rt, _)| rt.clone());
    match connector
        .handle_post(pending.as_ref().map(|(_, p)| p), &form)
        .await
    {
        Ok(federated) => finish(&state, &req, rt.as_ref(), &id, federated).await,
        Err(e) => upstream_failed(&state, &req, rt.as_ref(), &id, e).await,
    }
}

/// `GET /upstream/{id}/saml/metadata`: the SP metadata for the IdP's administrator.
pub async fn saml_metadata(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let connector = post_connector(&state, &id)?;
    let xml = connector.metadata().map_err(WebError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/samlmetadata+xml")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "max-age=3600"))
        .body(xml))
}

/// An identity the upstream vouched for becomes a session (or the linking page).
async fn finish(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    rt: Option<&ReturnTo>,
    id: &str,
    federated: Federated,
) -> Result<HttpResponse, WebError> {
    let identity = federated.identity;
    if let Some(session) = federated.session {
        remember_upstream_session(state, req, id, &session).await?;
    }
    let link_by_email = state
        .settings
        .upstreams
        .iter()
        .find(|u| u.id == id)
        .is_some_and(|u| u.link_by_verified_email);
    let (store, entropy, now) = (
        Arc::clone(&state.store),
        Arc::clone(&state.entropy),
        state.clock.now(),
    );
    let mapped = web::block(move || {
        federated_user(
            store.as_ref(),
            entropy.as_ref(),
            now,
            &identity,
            link_by_email,
        )
        .map(|user_id| {
            let mut amr = identity.amr.clone();
            if amr.is_empty() {
                amr.push("fed".into());
            }
            Authenticated {
                user_id,
                upstream: identity.upstream.clone(),
                amr,
                acr: identity.acr.clone(),
            }
        })
    })
    .await?;
    let mut res = match mapped {
        Ok(who) => super::mfa::after_first_factor(state, req, rt, who).await?,
        Err(e) => {
            if let FlowError::LinkRequired { .. } | FlowError::NoEmail = &e {
                state.provider.audit.record(
                    Event::new(EventKind::LoginFailed)
                        .upstream(id)
                        .ip(super::client_ip(req, state))
                        .reason("upstream_account_not_linked"),
                );
            }
            signed_in(state, req, rt, Err(e)).await?
        }
    };
    if let Some(c) = req.extensions_mut().remove::<NewBinding>() {
        res.add_cookie(&state.cookies.build(state.cookies.upstream.clone(), c.0))
            .map_err(WebError::internal)?;
    }
    Ok(res)
}

/// A binding value this request created (an unsolicited login had none), to be set as the
/// upstream cookie on the response.
#[derive(Clone)]
struct NewBinding(String);

/// The key of the pending upstream session of the browser with binding `b`.
fn session_key(b: &str) -> [u8; 32] {
    Sha256::digest(format!("session:{b}").as_bytes()).into()
}

/// The browser's upstream binding: made by this request, or from its cookie.
fn binding_of(state: &AppState, req: &HttpRequest) -> Option<String> {
    // (Reading cookies borrows the extensions too: one after the other.)
    let made = req.extensions().get::<NewBinding>().map(|b| b.0.clone());
    made.or_else(|| {
        req.cookie(&state.cookies.upstream)
            .map(|c| c.value().to_owned())
    })
}

/// Keeps what logging out at the upstream needs until the session it opens exists (now, or
/// after a second factor): server-side, single use, ten minutes, bound to this browser.
async fn remember_upstream_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    id: &str,
    session: &UpstreamSession,
) -> Result<(), WebError> {
    let binding = match binding_of(state, req) {
        Some(b) => b,
        None => {
            let b = URL_SAFE_NO_PAD.encode(state.entropy.bytes32());
            req.extensions_mut().insert(NewBinding(b.clone()));
            b
        }
    };
    let record = UpstreamRequest {
        state_hash: session_key(&binding),
        upstream: id.to_owned(),
        binding_hash: Sha256::digest(binding.as_bytes()).into(),
        journey_hash: [0; 32],
        pending: serde_json::to_string(session).map_err(WebError::internal)?,
        expires_at: state.clock.now().saturating_add(PENDING_TTL),
    };
    let store = Arc::clone(&state.store);
    web::block(move || {
        store.take_upstream_request(&record.state_hash, i64::MIN)?;
        store.insert_upstream_request(&record)
    })
    .await??;
    Ok(())
}

/// Called when a session opens in this browser: the upstream session remembered for it (same
/// upstream) is kept with it, for logout. Returns the cookie that ends the binding.
pub(crate) async fn attach_upstream_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    record: &crate::storage::SessionRecord,
) -> Result<Option<actix_web::cookie::Cookie<'static>>, WebError> {
    let Some(binding) = binding_of(state, req) else {
        return Ok(None);
    };
    // The session is open: the binding is done with (a new one is not set on the way out).
    req.extensions_mut().remove::<NewBinding>();
    let (store, now) = (Arc::clone(&state.store), state.clock.now());
    let (sid, upstream) = (record.sid.clone(), record.upstream.clone());
    web::block(move || -> Result<(), crate::storage::StorageError> {
        let Some(p) = store.take_upstream_request(&session_key(&binding), now)? else {
            return Ok(());
        };
        let Ok(session) = serde_json::from_str::<UpstreamSession>(&p.pending) else {
            return Ok(());
        };
        if p.upstream != upstream {
            return Ok(());
        }
        let (id_token, name_id, name_id_format, session_index) = match session {
            UpstreamSession::Oidc { id_token } => (Some(id_token), None, None, None),
            UpstreamSession::Saml {
                name_id,
                name_id_format,
                session_index,
            } => (None, Some(name_id), name_id_format, session_index),
        };
        store.insert_upstream_session(&UpstreamSessionRecord {
            sid,
            upstream,
            id_token,
            name_id,
            name_id_format,
            session_index,
            created_at: now,
        })
    })
    .await??;
    Ok(Some(state.cookies.removal(state.cookies.upstream.clone())))
}

/// What the session behind this request's cookie needs to be ended at its upstream (read
/// before the session ends: the row goes with it).
pub(crate) async fn upstream_session_of(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<Option<UpstreamSessionRecord>, WebError> {
    let Some(key) = req
        .cookie(&state.cookies.session)
        .and_then(|c| crate::session::SessionToken::key_of(c.value()))
    else {
        return Ok(None);
    };
    let store = Arc::clone(&state.store);
    Ok(web::block(move || {
        let Some(s) = store.session(&key)? else {
            return Ok::<_, crate::storage::StorageError>(None);
        };
        store.upstream_session(&s.sid)
    })
    .await??)
}

/// After the broker session ended: where the browser goes. Through the upstream's own logout
/// (OIDC RP-initiated logout, SAML Single Logout) when the session came from one that offers
/// it, coming back to `then`; else straight to `then`. An upstream that cannot be reached is
/// skipped (the broker session is over either way).
pub(crate) async fn logout_location(
    state: &web::Data<AppState>,
    upstream: Option<UpstreamSessionRecord>,
    then: String,
) -> Result<String, WebError> {
    let Some(rec) = upstream else {
        return Ok(then);
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
        (None, None) => return Ok(then),
    };
    let relay = URL_SAFE_NO_PAD.encode(state.entropy.bytes32());
    let id = rec.upstream.as_str();
    let target = match state.upstreams.get(id).map(|u| &u.connector) {
        Some(Connector::Redirect(c)) => {
            let back = state
                .settings
                .public_url
                .join(&format!("/upstream/{id}/logged-out"))
                .map_err(WebError::internal)?;
            c.logout_url(&session, &back, &relay)
                .await
                .map(|u| u.map(|u| (u, String::new())))
        }
        Some(Connector::Post(c)) => c.logout_request(&session, &relay).await,
        _ => Ok(None),
    };
    let (url, request_id) = match target {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(then),
        Err(e) => {
            tracing::warn!(upstream = id, error = %e, "logout at the upstream skipped");
            return Ok(then);
        }
    };
    // Where to continue once the upstream sends the browser back (single use, ten minutes).
    let record = LogoutContinuation {
        relay_hash: Sha256::digest(relay.as_bytes()).into(),
        upstream: id.to_owned(),
        request_id,
        then,
        expires_at: state.clock.now().saturating_add(PENDING_TTL),
    };
    let store = Arc::clone(&state.store);
    web::block(move || store.insert_logout_continuation(&record)).await??;
    Ok(url.to_string())
}

/// The logout continuation behind `relay` for upstream `id`, taken (single use).
async fn take_logout(
    state: &web::Data<AppState>,
    id: &str,
    relay: &str,
) -> Result<Option<(String, String)>, WebError> {
    let store = Arc::clone(&state.store);
    let now = state.clock.now();
    let hash: [u8; 32] = Sha256::digest(relay.as_bytes()).into();
    let l = web::block(move || store.take_logout_continuation(&hash, now)).await??;
    Ok(l.filter(|l| l.upstream == id)
        .map(|l| (l.then, l.request_id)))
}

#[derive(Debug, Deserialize)]
pub struct LoggedOutQuery {
    #[serde(default)]
    state: String,
}

/// `GET /upstream/{id}/logged-out`: back from the upstream's RP-initiated logout.
pub async fn logged_out(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<LoggedOutQuery>,
) -> Result<HttpResponse, WebError> {
    callback_rate(&state, &req, &id)?;
    match take_logout(&state, &id, &q.state).await? {
        Some((then, _)) => Ok(super::see_other(&then)),
        None => Ok(super::see_other("/signed-out")),
    }
}

/// `GET /upstream/{id}/saml/slo`: SAML Single Logout, HTTP-Redirect binding. A LogoutRequest
/// from the IdP ends the broker sessions it names (their apps are told through back-channel
/// logout) and is answered with a signed LogoutResponse; a LogoutResponse answers the broker's
/// own request and the logout continues where it was going.
pub async fn saml_slo(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = id.into_inner();
    callback_rate(&state, &req, &id)?;
    let connector = post_connector(&state, &id)?;
    let raw = req.query_string().to_owned();
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    if params.contains_key("SAMLResponse") {
        let relay = params.get("RelayState").cloned().unwrap_or_default();
        let Some((then, request_id)) = take_logout(&state, &id, &relay).await? else {
            return Ok(super::see_other("/signed-out"));
        };
        if let Err(e) = connector.logout_response(&raw, &request_id).await {
            // The broker session is over either way; the IdP's session may not be.
            tracing::warn!(upstream = %id, error = %e, "SAML LogoutResponse refused");
        }
        return Ok(super::see_other(&then));
    }
    let logout = match connector.idp_logout(&raw).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(upstream = %id, error = %e, "SAML LogoutRequest refused");
            state.provider.audit.record(
                Event::new(EventKind::LoginFailed)
                    .upstream(id.as_str())
                    .ip(super::client_ip(&req, &state))
                    .reason("logout_request_refused"),
            );
            return Err(WebError::BadRequest);
        }
    };
    // The browser carrying the request keeps its cookie unless its own session is one that ends.
    let own_sid = super::current_session(&state, &req)
        .await?
        .map(|s| s.record.sid);
    let (store, provider) = (Arc::clone(&state.store), Arc::clone(&state.provider));
    let (upstream, name_id, indexes) = (id.clone(), logout.name_id, logout.session_indexes);
    let (ended, own_ended) = web::block(move || -> Result<_, crate::flow::login::FlowError> {
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
                provider.end_session_record(&record, "upstream_logout")?;
                ended += 1;
                own_ended |= own_sid.as_deref() == Some(s.sid.as_str());
            }
        }
        Ok((ended, own_ended))
    })
    .await?
    .map_err(WebError::internal)?;
    tracing::info!(upstream = %id, ended, "sessions ended by the IdP's LogoutRequest");
    let mut res = HttpResponse::Found()
        .insert_header((
            actix_web::http::header::LOCATION,
            logout.respond_to.as_str(),
        ))
        .finish();
    if own_ended {
        res.add_cookie(&state.cookies.removal(state.cookies.session.clone()))
            .map_err(WebError::internal)?;
    }
    Ok(res)
}

/// The OAuth error an app receives for an upstream failure, if it is one to pass on.
fn downstream_error(e: &UpstreamError) -> Option<OAuthError> {
    match e {
        UpstreamError::Refused { code, .. } => Some(match code.as_str() {
            "login_required" => OAuthError::LoginRequired,
            "temporarily_unavailable" => OAuthError::TemporarilyUnavailable,
            "server_error" => OAuthError::ServerError("upstream server_error".into()),
            // access_denied, and what only means the user did not go through with it there
            // (interaction_required, consent_required ...).
            "access_denied"
            | "interaction_required"
            | "consent_required"
            | "account_selection_required" => OAuthError::AccessDenied,
            // Anything else (invalid_scope, unauthorized_client ...) is the broker's setup.
            _ => OAuthError::ServerError(format!("upstream error {code}")),
        }),
        UpstreamError::Unavailable(_) => Some(OAuthError::TemporarilyUnavailable),
        _ => None,
    }
}

/// The upstream refused, could not be reached, or its answer failed validation: a clear page
/// (the login page with the reason), nothing stored, and an audit event.
async fn upstream_failed(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    rt: Option<&ReturnTo>,
    id: &str,
    e: UpstreamError,
) -> Result<HttpResponse, WebError> {
    let (key, status, reason) = match &e {
        UpstreamError::Refused { code, .. } => (
            "error_upstream_refused",
            StatusCode::FORBIDDEN,
            format!("refused:{code}"),
        ),
        UpstreamError::Unavailable(_) => (
            "error_upstream_unavailable",
            StatusCode::BAD_GATEWAY,
            "unavailable".to_owned(),
        ),
        UpstreamError::Storage(_) => return Err(WebError::internal(e)),
        UpstreamError::Invalid { check, .. } => (
            "error_upstream_failed",
            StatusCode::BAD_REQUEST,
            format!("rejected:{check}"),
        ),
        _ => (
            "error_upstream_failed",
            StatusCode::BAD_REQUEST,
            "rejected".to_owned(),
        ),
    };
    tracing::warn!(upstream = id, error = %e, "upstream sign-in failed");
    state.provider.audit.record(
        Event::new(EventKind::LoginFailed)
            .upstream(id)
            .ip(super::client_ip(req, state))
            .reason(reason),
    );
    // A login an app asked for: the upstream's refusal (or absence) goes back to the app as the
    // OAuth error it is. A response that failed validation is shown here instead.
    if let (Some(rt), Some(error)) = (rt, downstream_error(&e))
        && let Some(res) = super::oidc::authorization_error(state, req, rt.as_str(), error).await?
    {
        return Ok(res);
    }
    login_page_linking(state, req, status, rt, "", Some(key), None).await
}
