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

use super::form::well_formed;
use super::{AppState, current_session, render, request_info};
use crate::error::WebError;
use crate::provider::authorize::{self, AuthorizeError, AuthorizeRequest, Prompt, ResponseMode};
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

/// Every value of every parameter, so that repeated parameters can be refused.
fn multi_params(raw: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        map.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    map
}

/// A urlencoded OAuth request body: well-formed, no repeated parameters.
fn oauth_form(req: &HttpRequest, body: &[u8]) -> Result<BTreeMap<String, String>, OAuthError> {
    let urlencoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !urlencoded || !well_formed(body) {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in multi_params(body) {
        match v.as_slice() {
            [one] => {
                out.insert(k, one.clone());
            }
            _ => {
                return Err(OAuthError::InvalidRequest(format!(
                    "`{k}` given more than once"
                )));
            }
        }
    }
    Ok(out)
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

#[derive(Serialize)]
struct FormField {
    name: String,
    value: String,
}

#[derive(Serialize)]
struct FormPostPage {
    action: String,
    fields: Vec<FormField>,
}

/// Sends the authorization response to the client (query string or auto-submitted form).
fn respond(
    state: &AppState,
    req: &HttpRequest,
    redirect_uri: url::Url,
    mode: ResponseMode,
    params: &[(&str, &str)],
) -> Result<HttpResponse, WebError> {
    match mode {
        ResponseMode::Query => {
            let target = authorize::with_params(redirect_uri, params);
            Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, target.as_str()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish())
        }
        ResponseMode::FormPost => {
            let vm = FormPostPage {
                action: redirect_uri.to_string(),
                fields: params
                    .iter()
                    .map(|(k, v)| FormField {
                        name: (*k).to_owned(),
                        value: (*v).to_owned(),
                    })
                    .collect(),
            };
            let mut res = render(state, req, StatusCode::OK, "form_post", false, &vm)?;
            let target = super::origin_source(&redirect_uri).unwrap_or_else(|| "'none'".into());
            super::set_csp(&mut res, &[&target], true);
            Ok(res)
        }
    }
}

/// Error response parameters, with `iss` (RFC 9207) like every authorization response.
fn error_params(e: &OAuthError, issuer: &str) -> Vec<(&'static str, String)> {
    let mut p = vec![("error", e.code().to_owned())];
    if let Some(d) = e.description() {
        p.push(("error_description", d));
    }
    p.push(("iss", issuer.to_owned()));
    p
}

/// Sends `error` to the app whose authorization request the return path `return_to`
/// (`/authorize?...`) is: an authorization error response with its `state` and `iss`, in its
/// response mode. `None` when the return path is not a valid authorization request (the caller
/// then shows a page).
pub(crate) async fn authorization_error(
    state: &AppState,
    req: &HttpRequest,
    return_to: &str,
    error: OAuthError,
) -> Result<Option<HttpResponse>, WebError> {
    let Some(query) = return_to.strip_prefix("/authorize?") else {
        return Ok(None);
    };
    let raw = multi_params(query.as_bytes());
    let provider = Arc::clone(&state.provider);
    let Ok(ar) = web::block(move || authorize::parse(&raw, &provider.clients)).await? else {
        return Ok(None);
    };
    let mut params = error_params(&error, &state.provider.settings.issuer);
    if let Some(s) = ar.state {
        params.push(("state", s));
    }
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    respond(state, req, ar.redirect_uri, ar.response_mode, &refs).map(Some)
}

/// The query of this request without `prompt`, as the place to come back to after sign-in.
fn return_to_authorize(raw: &BTreeMap<String, Vec<String>>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, vs) in raw {
        if k == "prompt" {
            continue;
        }
        for v in vs {
            ser.append_pair(k, v);
        }
    }
    format!("/authorize?{}", ser.finish())
}

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
    let provider = Arc::clone(&state.provider);
    let raw_for_parse = raw.clone();
    let parsed = web::block(move || authorize::parse(&raw_for_parse, &provider.clients)).await?;
    let ar: AuthorizeRequest = match parsed {
        Ok(ar) => ar,
        Err(AuthorizeError::Page(key)) => {
            return Ok(super::message_page(StatusCode::BAD_REQUEST, key));
        }
        Err(AuthorizeError::Redirect(r)) => {
            let authorize::RedirectError {
                redirect_uri,
                response_mode,
                state: st,
                error,
            } = *r;
            let mut params = error_params(&error, &state.provider.settings.issuer);
            if let Some(s) = st {
                params.push(("state", s));
            }
            let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            return respond(&state, &req, redirect_uri, response_mode, &refs);
        }
        Err(AuthorizeError::Storage(e)) => return Err(e.into()),
    };
    let session = current_session(&state, &req).await?;
    let now = state.clock.now();
    if ar.needs_login(session.as_ref().map(|s| s.record.auth_time), now) {
        if ar.prompt == Prompt::None {
            let mut params =
                error_params(&OAuthError::LoginRequired, &state.provider.settings.issuer);
            if let Some(s) = &ar.state {
                params.push(("state", s.clone()));
            }
            let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            return respond(&state, &req, ar.redirect_uri, ar.response_mode, &refs);
        }
        let mut login = url::form_urlencoded::Serializer::new(String::new());
        login.append_pair("return_to", &return_to_authorize(&raw));
        if session.is_some() {
            login.append_pair("force", "1");
        }
        if let Some(h) = &ar.login_hint {
            login.append_pair("login_hint", h);
        }
        if let Some(h) = raw.get("idp_hint").and_then(|v| v.first()) {
            login.append_pair("idp_hint", h);
        }
        if let Some(l) = raw.get("ui_locales").and_then(|v| v.first()) {
            login.append_pair("ui_locales", l);
        }
        return Ok(super::see_other(&format!("/login?{}", login.finish())));
    }
    let Some(session) = session else {
        return Err(WebError::Internal("session vanished".into()));
    };
    // Step-up: the app's client requires MFA, or its acr_values ask for more than the session has.
    if super::mfa::needs_step_up(
        state.settings.mfa.required,
        ar.client.mfa,
        ar.acr_values.as_deref(),
        &session.record.amr,
    ) {
        if ar.prompt == Prompt::None {
            let mut params = error_params(
                &OAuthError::InteractionRequired,
                &state.provider.settings.issuer,
            );
            if let Some(s) = &ar.state {
                params.push(("state", s.clone()));
            }
            let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            return respond(&state, &req, ar.redirect_uri, ar.response_mode, &refs);
        }
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("return_to", &return_to_authorize(&raw));
        return Ok(super::see_other(&format!(
            "/login/mfa/step-up?{}",
            q.finish()
        )));
    }
    let provider = Arc::clone(&state.provider);
    let ar2 = ar.clone();
    let code = web::block(move || provider.issue_code(&ar2, &session.record)).await?;
    let code = code.map_err(|e| match e {
        OAuthError::TemporarilyUnavailable => WebError::Unavailable("database".into()),
        other => WebError::Internal(other.to_string()),
    })?;
    let locale = request_info(&req, &state).locale;
    tracing::info!(client_id = %ar.client.id, locale = locale.as_str(), acr_values = ar.acr_values.as_deref().unwrap_or(""), "authorization code issued");
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = &ar.state {
        params.push(("state", s.as_str()));
    }
    let iss = state.provider.settings.issuer.clone();
    params.push(("iss", iss.as_str()));
    respond(
        &state,
        &req,
        ar.redirect_uri.clone(),
        ar.response_mode,
        &params,
    )
}

#[derive(Serialize)]
struct LogoutConfirmPage {
    csrf_token: String,
    client_name: String,
    fields: Vec<FormField>,
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
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let (hint, client_id, plru, st) = (
        get("id_token_hint").map(str::to_owned),
        get("client_id").map(str::to_owned),
        get("post_logout_redirect_uri").map(str::to_owned),
        get("state").map(str::to_owned),
    );
    let provider = Arc::clone(&state.provider);
    let checked = web::block(move || {
        provider.end_session_request(
            hint.as_deref(),
            client_id.as_deref(),
            plru.as_deref(),
            st.as_deref(),
        )
    })
    .await?;
    let request = match checked {
        Ok(r) => r,
        Err(key) => {
            return Ok(super::message_page(StatusCode::BAD_REQUEST, key));
        }
    };
    let session = current_session(&state, &req).await?;
    let confirmed = is_post && get("confirm") == Some("1");
    if confirmed {
        state
            .csrf
            .verify(&req, &state.cookies, get("csrf_token").unwrap_or(""))?;
    }
    let hint_matches = match (&session, &request.hint_sid) {
        (None, _) => true,
        (Some(s), Some(sid)) => &s.record.sid == sid,
        (Some(_), None) => false,
    };
    if session.is_some() && !hint_matches && !confirmed {
        let csrf = state
            .csrf
            .issue(&req, &state.cookies, state.entropy.as_ref())?;
        let mut fields = vec![FormField {
            name: "confirm".into(),
            value: "1".into(),
        }];
        for k in ["client_id", "post_logout_redirect_uri", "state"] {
            if let Some(v) = get(k) {
                fields.push(FormField {
                    name: k.into(),
                    value: v.into(),
                });
            }
        }
        if let Some(c) = &request.client
            && get("client_id").is_none()
        {
            fields.push(FormField {
                name: "client_id".into(),
                value: c.id.clone(),
            });
        }
        let vm = LogoutConfirmPage {
            csrf_token: csrf.token,
            client_name: request
                .client
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            fields,
        };
        let mut res = render(&state, &req, StatusCode::OK, "logout_confirm", true, &vm)?;
        if let Some(c) = csrf.new_cookie {
            res.add_cookie(&c).map_err(WebError::internal)?;
        }
        // The confirmation form ends, through redirects, at the upstream's logout (when the
        // session came from one) and then the post-logout redirect URI.
        use super::form_targets::{NextHop, form_targets};
        let mut hops: Vec<NextHop<'_>> = request
            .post_logout_redirect_uri
            .iter()
            .map(NextHop::Url)
            .collect();
        if let Some(s) = &session {
            hops.push(NextHop::UpstreamLogout(&s.record.sid));
        }
        form_targets(&state, &hops).await?.apply(&mut res);
        return Ok(res);
    }
    let upstream = super::upstream::upstream_session_of(&state, &req).await?;
    let removal = super::end_current_session(&state, &req, "rp_logout").await?;
    let target = match request.post_logout_redirect_uri {
        Some(uri) => {
            let params: Vec<(&str, &str)> = request
                .state
                .as_deref()
                .map(|s| vec![("state", s)])
                .unwrap_or_default();
            authorize::with_params(uri, &params).to_string()
        }
        None => "/signed-out".to_owned(),
    };
    // Through the upstream's own logout first, when the session came from one.
    let target = super::upstream::logout_location(&state, upstream, target).await?;
    let mut res = super::see_other(&target);
    res.add_cookie(&removal).map_err(WebError::internal)?;
    Ok(res)
}
