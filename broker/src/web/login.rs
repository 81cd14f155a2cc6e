//! Owns the sign-in, sign-out and signed-out handlers of the hosted pages.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::form::StrictForm;
use super::{AppState, client_ip, current_session, render, request_info, see_other, user_agent};
use crate::domain::{Channel, Email, ReturnTo, SecretString};
use crate::error::WebError;
use crate::flow::login::{ClientContext, FlowError, sign_in};
use crate::upstream::UpstreamError;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    login_hint: Option<String>,
    /// Show the form even to a signed-in user (prompt=login, max_age exceeded).
    #[serde(default)]
    force: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    return_to: String,
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnlyForm {
    #[serde(default)]
    csrf_token: String,
}

#[derive(Serialize)]
struct UpstreamButton {
    id: String,
    name: String,
    url: String,
}

#[derive(Serialize)]
struct LoginPage {
    csrf_token: String,
    return_to: String,
    email: String,
    error: Option<String>,
    upstreams: Vec<UpstreamButton>,
}

/// A return path if it is a local one; anything else is dropped rather than followed.
fn return_to(raw: Option<&str>) -> Option<ReturnTo> {
    raw.filter(|s| !s.is_empty())
        .and_then(|s| ReturnTo::parse(s).ok())
}

async fn login_page(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    status: StatusCode,
    return_to: Option<&ReturnTo>,
    email: &str,
    error_key: Option<&str>,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let csrf = state
        .csrf
        .issue(req, &state.cookies, state.entropy.as_ref())?;
    let rt = return_to.map(ReturnTo::as_str).unwrap_or("");
    let vm = LoginPage {
        csrf_token: csrf.token,
        return_to: rt.to_owned(),
        email: email.to_owned(),
        error: error_key.map(|k| state.pages.text(locale, k)),
        upstreams: state
            .upstreams
            .buttons()
            .map(|u| UpstreamButton {
                id: u.id.clone(),
                name: u.display_name.clone(),
                url: format!("/upstream/{}/start?return_to={}", u.id, urlencode(rt)),
            })
            .collect(),
    };
    let mut res = render(state, req, status, "login", false, &vm)?;
    if let Some(c) = csrf.new_cookie {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    // Signing in ends, through redirects, at the app's redirect URI: allow that form target.
    if rt.starts_with("/authorize?") {
        let (provider, rt) = (Arc::clone(&state.provider), rt.to_owned());
        if let Some(origin) = web::block(move || super::redirect_origin_of(&provider, &rt)).await? {
            super::set_csp(&mut res, &["'self'", &origin], false);
        }
    }
    Ok(res)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn show(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let rt = return_to(q.return_to.as_deref());
    if q.force.is_none() && current_session(&state, &req).await?.is_some() {
        return Ok(see_other(
            rt.as_ref().map(ReturnTo::as_str).unwrap_or("/account"),
        ));
    }
    let hint = q.login_hint.as_deref().and_then(|h| Email::parse(h).ok());
    let hint = hint.as_ref().map(Email::as_str).unwrap_or("");
    login_page(&state, &req, StatusCode::OK, rt.as_ref(), hint, None).await
}

pub async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let rt = return_to(Some(&form.return_to));
    let Some((_, connector)) = state.upstreams.password() else {
        return Err(WebError::NotFound);
    };
    let shown_email = form.email.chars().take(254).collect::<String>();
    let refused = |key: &'static str, status: StatusCode| {
        login_page(&state, &req, status, rt.as_ref(), &shown_email, Some(key))
    };

    // A malformed email is just a failed sign-in: no hint about which part was wrong.
    let (Ok(email), Some(password)) = (Email::parse(&form.email), form.password) else {
        return refused("error_invalid_credentials", StatusCode::UNAUTHORIZED).await;
    };
    let identity = match connector.authenticate(&email, &password).await {
        Ok(identity) => identity,
        Err(UpstreamError::InvalidCredentials) => {
            tracing::info!(reason = "invalid_credentials", "login failed");
            return refused("error_invalid_credentials", StatusCode::UNAUTHORIZED).await;
        }
        Err(UpstreamError::AccountDisabled) => {
            tracing::info!(reason = "account_disabled", "login failed");
            return refused("error_account_disabled", StatusCode::FORBIDDEN).await;
        }
        Err(UpstreamError::Storage(e)) => return Err(e.into()),
        Err(other) => return Err(WebError::internal(other)),
    };
    let mut ctx = ClientContext {
        channel: Channel::Web,
        limit: state.settings.session.web.limit,
        user_agent: user_agent(&req),
        ip: client_ip(&req),
    };
    let policies = state.settings.session.clone();
    let return_path = rt.as_ref().map(|r| r.as_str().to_owned());
    let (store, sessions, provider) = (
        Arc::clone(&state.store),
        Arc::clone(&state.sessions),
        Arc::clone(&state.provider),
    );
    // A sign-in replaces the session this browser had (re-authentication); its apps are told.
    let previous = req
        .cookie(&state.cookies.session)
        .map(|c| c.value().to_owned());
    let outcome = web::block(move || {
        // Signing in for an app: the session belongs to that app's channel and its limits.
        if let Some((client, _)) = return_path
            .as_deref()
            .and_then(|r| super::authorize_target(&provider, r))
        {
            ctx.channel = client.channel;
            ctx.limit = match client.max_sessions_per_user {
                Some(0) => crate::config::SessionLimit::None,
                Some(n) => crate::config::SessionLimit::ThisChannel(n),
                None => policies.channel(client.channel).limit,
            };
        }
        if let Some(old) = previous
            && let Err(e) = crate::flow::logout::end_session(&sessions, &provider, &old)
        {
            tracing::warn!(error = %e, "ending the replaced session failed");
        }
        sign_in(store.as_ref(), &sessions, &provider, identity, ctx)
    })
    .await?;
    let (token, record) = match outcome {
        Ok(ok) => ok,
        Err(FlowError::Disabled) => {
            return refused("error_account_disabled", StatusCode::FORBIDDEN).await;
        }
        Err(FlowError::UnknownUser) => {
            return refused("error_invalid_credentials", StatusCode::UNAUTHORIZED).await;
        }
        Err(FlowError::Storage(e)) => return Err(e.into()),
        Err(FlowError::Session(e)) => return Err(e.into()),
        Err(FlowError::Provider(e)) => return Err(WebError::internal(e)),
        Err(e @ FlowError::UnsupportedUpstream(_)) => return Err(WebError::internal(e)),
    };
    tracing::info!(user_id = %record.user_id, upstream = %record.upstream, "login succeeded");
    let mut res = see_other(rt.as_ref().map(ReturnTo::as_str).unwrap_or("/account"));
    let cookie = state.cookies.build(
        state.cookies.session.clone(),
        token.as_cookie_value().to_owned(),
    );
    res.add_cookie(&cookie).map_err(WebError::internal)?;
    Ok(res)
}

pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<CsrfOnlyForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let removal = super::end_current_session(&state, &req).await?;
    let mut res = see_other("/signed-out");
    res.add_cookie(&removal).map_err(WebError::internal)?;
    Ok(res)
}

pub async fn signed_out(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    render(
        &state,
        &req,
        StatusCode::OK,
        "signed_out",
        false,
        &serde_json::json!({}),
    )
}
