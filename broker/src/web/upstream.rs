//! Owns the HTTP side of upstream logins: leaving for the upstream with a pending login stored
//! server-side (single use, bound to this browser by a cookie), the OIDC callback and the SAML
//! ACS that turn the upstream's answer into a first-party session, and the SAML SP metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
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
use crate::storage::UpstreamRequest;
use crate::upstream::{Connector, PendingUpstream, UpstreamError};

/// How long a login may wait at the upstream.
const PENDING_TTL: i64 = 600;

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
    let record = UpstreamRequest {
        state_hash: Sha256::digest(state_value.as_bytes()).into(),
        upstream: id,
        binding_hash: Sha256::digest(binding.as_bytes()).into(),
        pending: serde_json::to_string(&started.pending.values).map_err(WebError::internal)?,
        return_to: rt.as_ref().map(ReturnTo::as_str).unwrap_or("").to_owned(),
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

/// The pending login behind `state_value`: taken (single use), unexpired, for upstream `id`
/// and for this browser.
async fn take_pending(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    id: &str,
    state_value: &str,
) -> Result<Option<(Option<ReturnTo>, PendingUpstream)>, WebError> {
    let store = Arc::clone(&state.store);
    let now = state.clock.now();
    let hash: [u8; 32] = Sha256::digest(state_value.as_bytes()).into();
    let pending = web::block(move || store.take_upstream_request(&hash, now)).await??;
    let binding = req
        .cookie(&state.cookies.upstream)
        .map(|c| -> [u8; 32] { Sha256::digest(c.value().as_bytes()).into() });
    let Some(pending) = pending.filter(|p| p.upstream == id && Some(p.binding_hash) == binding)
    else {
        return Ok(None);
    };
    let values: BTreeMap<String, String> =
        serde_json::from_str(&pending.pending).map_err(WebError::internal)?;
    Ok(Some((
        return_to(Some(&pending.return_to)),
        PendingUpstream { values },
    )))
}

/// The page for an answer that matches no pending login of this browser.
async fn expired(state: &web::Data<AppState>, req: &HttpRequest) -> Result<HttpResponse, WebError> {
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
    let connector = connector(&state, &id)?;
    let query = q.into_inner();
    let Some(state_value) = query.get("state").cloned() else {
        return expired(&state, &req).await;
    };
    let Some((rt, pending)) = take_pending(&state, &req, &id, &state_value).await? else {
        return expired(&state, &req).await;
    };
    let callback = callback_url(&state, &id)?;
    match connector.callback(&callback, &pending, &query).await {
        Ok(identity) => finish(&state, &req, rt.as_ref(), &id, identity).await,
        Err(e) => upstream_failed(&state, &req, rt.as_ref(), &id, e).await,
    }
}

/// `POST /upstream/{id}/saml/acs`: the IdP's Response (HTTP-POST binding).
pub async fn saml_acs(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let id = id.into_inner();
    let connector = post_connector(&state, &id)?;
    if !super::form::well_formed(&body) {
        return Err(WebError::BadRequest);
    }
    let form: BTreeMap<String, String> =
        serde_urlencoded::from_bytes(&body).map_err(|_| WebError::BadRequest)?;
    // RelayState names this browser's pending login; without one the response is unsolicited
    // (IdP-initiated), which the connector refuses unless configured.
    let pending = match form.get("RelayState").filter(|s| !s.is_empty()) {
        Some(rs) => match take_pending(&state, &req, &id, rs).await? {
            Some(p) => Some(p),
            None => return expired(&state, &req).await,
        },
        None => None,
    };
    let rt = pending.as_ref().and_then(|(rt, _)| rt.clone());
    match connector
        .handle_post(pending.as_ref().map(|(_, p)| p), &form)
        .await
    {
        Ok(identity) => finish(&state, &req, rt.as_ref(), &id, identity).await,
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
    identity: crate::upstream::Identity,
) -> Result<HttpResponse, WebError> {
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
    res.add_cookie(&state.cookies.removal(state.cookies.upstream.clone()))
        .map_err(WebError::internal)?;
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
