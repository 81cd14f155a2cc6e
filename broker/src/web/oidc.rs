//! Owns the OpenID provider's HTTP surface: discovery, JWKS, /authorize, /token, /userinfo,
//! /introspect and /revoke. Parses requests into provider types and maps results to redirects,
//! pages or RFC-shaped JSON.

use crate::audit::{Event, EventKind};
use crate::ratelimit::Scope;
use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use super::AppState;
use super::form::{multi_params, oauth_form, well_formed};
use super::outcome::{browser, respond};
use crate::error::WebError;
use crate::flow::signout::RpLogout;
use crate::provider::{ClientCredentials, OAuthError, Provider};

fn json_no_store<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

pub async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(state.provider.discovery())
}

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let max_age = state.provider.settings.jwks_max_age.as_secs();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, format!("public, max-age={max_age}")))
        .json(state.provider.jwks())
}

fn credentials(
    req: &HttpRequest,
    form: &BTreeMap<String, String>,
) -> Result<ClientCredentials, OAuthError> {
    let basic = match req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") => {
            let decoded = STANDARD
                .decode(v[6..].trim())
                .map_err(|_| OAuthError::InvalidClient)?;
            let text = String::from_utf8(decoded).map_err(|_| OAuthError::InvalidClient)?;
            let (id, secret) = text.split_once(':').ok_or(OAuthError::InvalidClient)?;
            // RFC 6749 2.3.1: both parts are form-urlencoded.
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((
                dec(id).ok_or(OAuthError::InvalidClient)?,
                dec(secret).ok_or(OAuthError::InvalidClient)?,
            ))
        }
        _ => None,
    };
    Ok(ClientCredentials {
        basic,
        form_id: form.get("client_id").cloned(),
        form_secret: form.get("client_secret").cloned(),
    })
}

/// The form and client credentials of a client-authenticated OAuth request.
fn oauth_request(
    req: &HttpRequest,
    body: &[u8],
) -> Result<(BTreeMap<String, String>, ClientCredentials), WebError> {
    let form = oauth_form(req, body).map_err(WebError::OAuth)?;
    let creds = credentials(req, &form).map_err(WebError::OAuth)?;
    Ok((form, creds))
}

async fn blocking<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&Provider) -> Result<T, OAuthError> + Send + 'static,
) -> Result<T, OAuthError> {
    let provider = Arc::clone(&state.provider);
    web::block(move || f(&provider))
        .await
        .map_err(|e| OAuthError::ServerError(e.to_string()))?
}

pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let (form, creds) = oauth_request(&req, &body)?;
    // Counted per presented client id, before authentication: guessing secrets is limited too.
    let presented: String = creds
        .basic
        .as_ref()
        .map(|(id, _)| id.as_str())
        .or(creds.form_id.as_deref())
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    if let Err(limited) = state.limiter.check(Scope::TokenPerClient, &presented) {
        state.provider.audit.record(
            Event::new(EventKind::RateLimited)
                .client(presented)
                .ip(super::client_ip(&req, &state))
                .reason(Scope::TokenPerClient.as_str()),
        );
        return Err(WebError::OAuthTooManyRequests(limited.retry_after_secs));
    }
    let result = blocking(&state, move |p| {
        let client = p.authenticate_client(&creds)?;
        let get = |k: &str| form.get(k).map(String::as_str);
        match get("grant_type") {
            Some("authorization_code") => {
                let code = get("code")
                    .ok_or_else(|| OAuthError::InvalidRequest("code is required".into()))?;
                p.exchange_code(&client, code, get("redirect_uri"), get("code_verifier"))
            }
            Some("refresh_token") => {
                let rt = get("refresh_token").ok_or_else(|| {
                    OAuthError::InvalidRequest("refresh_token is required".into())
                })?;
                p.refresh(&client, rt, get("scope"))
            }
            Some("client_credentials") => p.client_credentials(&client, get("scope")),
            Some(_) => Err(OAuthError::UnsupportedGrantType),
            None => Err(OAuthError::InvalidRequest("grant_type is required".into())),
        }
    })
    .await;
    match result {
        Ok(tokens) => Ok(json_no_store(StatusCode::OK, &tokens)),
        Err(e) => {
            tracing::info!(
                error = e.code(),
                description = e.description().unwrap_or_default(),
                "token request refused"
            );
            Err(WebError::OAuth(e))
        }
    }
}

pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let (form, creds) = oauth_request(&req, &body)?;
    let answer = blocking(&state, move |p| {
        let client = p.authenticate_client(&creds)?;
        if client.is_public() {
            return Err(OAuthError::InvalidClient);
        }
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
        p.introspect(&client, token)
    })
    .await
    .map_err(WebError::OAuth)?;
    Ok(json_no_store(StatusCode::OK, &answer))
}

pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let (form, creds) = oauth_request(&req, &body)?;
    blocking(&state, move |p| {
        let client = p.authenticate_client(&creds)?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
        p.revoke(&client, token)
    })
    .await
    .map_err(WebError::OAuth)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

pub async fn userinfo(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
        .map(|v| v[7..].trim().to_owned());
    let body_token = if req.method() == actix_web::http::Method::POST && !body.is_empty() {
        oauth_form(&req, &body)
            .ok()
            .and_then(|f| f.get("access_token").cloned())
    } else {
        None
    };
    let token = match (header_token, body_token) {
        (Some(t), None) | (None, Some(t)) => t,
        (Some(_), Some(_)) => {
            return Err(WebError::Bearer(OAuthError::InvalidRequest(
                "one token only".into(),
            )));
        }
        // No credentials at all: 401 with a bare challenge (RFC 6750 3.1).
        (None, None) => return Err(WebError::Bearer(OAuthError::InvalidRequest(String::new()))),
    };
    let claims = blocking(&state, move |p| p.userinfo(&token))
        .await
        .map_err(WebError::Bearer)?;
    Ok(json_no_store(StatusCode::OK, &claims))
}

/// `/authorize`: the request is parsed once and handed to the sign-in journey, which answers
/// with the code (single sign-on), a step-up, or the sign-in page.
pub async fn authorize(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let raw = if req.method() == actix_web::http::Method::POST {
        if !well_formed(&body) {
            return Err(WebError::BadRequest);
        }
        multi_params(&body)
    } else {
        multi_params(req.query_string().as_bytes())
    };
    let out = state.signin.authorize(&browser(&state, &req), raw).await?;
    respond(&state, &req, out).await
}

/// RP-Initiated Logout 1.0. With a valid `id_token_hint` for the current session (or no session
/// at all) it signs out at once; otherwise it asks the user first (a CSRF-protected form).
pub async fn end_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let is_post = req.method() == actix_web::http::Method::POST;
    let raw = if is_post {
        if !well_formed(&body) {
            return Err(WebError::BadRequest);
        }
        multi_params(&body)
    } else {
        multi_params(req.query_string().as_bytes())
    };
    let get = |k: &str| {
        raw.get(k)
            .and_then(|v| v.first())
            .filter(|s| !s.is_empty())
            .cloned()
    };
    // Only a confirmation posted from the broker's own page (CSRF-checked) skips the question.
    let confirmed = is_post && get("confirm").as_deref() == Some("1");
    if confirmed {
        let token = get("csrf_token").unwrap_or_default();
        state.csrf.verify(&req, &state.cookies, &token)?;
    }
    let request = RpLogout {
        id_token_hint: get("id_token_hint"),
        client_id: get("client_id"),
        post_logout_redirect_uri: get("post_logout_redirect_uri"),
        state: get("state"),
        confirmed,
    };
    let out = state
        .signin
        .rp_logout(&browser(&state, &req), request)
        .await?;
    respond(&state, &req, out).await
}
