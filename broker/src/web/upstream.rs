//! Owns the HTTP side of upstream logins: leaving for the upstream, the OIDC callback and the
//! SAML ACS (counted per address before anything is read), SAML Single Logout and the SP
//! metadata. The journey (`flow::signin`) does the rest.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::outcome::{browser, respond};
use crate::audit::{Event, EventKind};
use crate::error::WebError;
use crate::flow::step::upstream::UpstreamAnswer;
use crate::ratelimit::Scope;
use crate::upstream::Connector;

/// The largest form the SAML ACS accepts (a signed, possibly encrypted Response, base64).
pub const MAX_SAML_FORM: usize = 512 * 1024;

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    journey: Option<String>,
    #[serde(default)]
    return_to: Option<String>,
}

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
    let out = state
        .signin
        .upstream_start(
            &browser(&state, &req),
            q.journey.as_deref(),
            &id,
            q.return_to.as_deref(),
        )
        .await?;
    respond(&state, &req, out).await
}

/// `GET /upstream/{id}/callback`: the upstream's answer.
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<BTreeMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    callback_rate(&state, &req, &id)?;
    let out = state
        .signin
        .upstream_answer(
            &browser(&state, &req),
            &id,
            UpstreamAnswer::Redirect(q.into_inner()),
        )
        .await?;
    respond(&state, &req, out).await
}

/// `POST /upstream/{id}/saml/acs`: the IdP's Response (HTTP-POST binding).
pub async fn saml_acs(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, WebError> {
    // Counted before the body is read (the payload is taken as a stream for that).
    callback_rate(&state, &req, &id)?;
    if !matches!(
        state.upstreams.get(&id).map(|u| &u.connector),
        Some(Connector::Post(_))
    ) {
        return Err(WebError::NotFound);
    }
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
    let out = state
        .signin
        .upstream_answer(&browser(&state, &req), &id, UpstreamAnswer::Post(form))
        .await?;
    respond(&state, &req, out).await
}

/// `GET /upstream/{id}/saml/metadata`: the SP metadata for the IdP's administrator.
pub async fn saml_metadata(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let Some(Connector::Post(c)) = state.upstreams.get(&id).map(|u| &u.connector) else {
        return Err(WebError::NotFound);
    };
    let xml = c.metadata().map_err(WebError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/samlmetadata+xml")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "max-age=3600"))
        .body(xml))
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
    let out = state.signin.upstream_logged_out(&id, &q.state).await?;
    respond(&state, &req, out).await
}

/// `GET /upstream/{id}/saml/slo`: SAML Single Logout, HTTP-Redirect binding.
pub async fn saml_slo(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    callback_rate(&state, &req, &id)?;
    let out = state
        .signin
        .saml_slo(&browser(&state, &req), &id, req.query_string())
        .await?
        .ok_or(WebError::NotFound)?;
    respond(&state, &req, out).await
}
