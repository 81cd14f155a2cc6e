//! Owns the account page: who is signed in and the details of the current session.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{AppState, current_session, format_time, render, request_info, see_other};
use crate::error::WebError;
use crate::upstream::local::LOCAL_UPSTREAM_ID;

#[derive(Serialize)]
struct UserView {
    email: String,
    name: String,
}

#[derive(Serialize)]
struct SessionView {
    channel: String,
    user_agent: String,
    ip: String,
    auth_time: String,
    last_seen: String,
    idle_expires_at: String,
    expires_at: String,
    upstream: String,
    amr: String,
}

#[derive(Serialize)]
struct AccountPage {
    csrf_token: String,
    user: UserView,
    session: SessionView,
}

pub async fn home(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, WebError> {
    Ok(match current_session(&state, &req).await? {
        Some(_) => see_other("/account"),
        None => see_other("/login"),
    })
}

pub async fn show(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, WebError> {
    let Some(session) = current_session(&state, &req).await? else {
        return Ok(see_other("/login?return_to=%2Faccount"));
    };
    let store = state.store.clone();
    let user_id = session.record.user_id.clone();
    let Some(user) = web::block(move || store.user_by_id(&user_id)).await?? else {
        return Ok(see_other("/login?return_to=%2Faccount"));
    };
    let locale = request_info(&req, &state).locale;
    let csrf = state
        .csrf
        .issue(&req, &state.cookies, state.entropy.as_ref())?;
    let r = &session.record;
    let upstream = if r.upstream == LOCAL_UPSTREAM_ID {
        state.pages.text(locale, "upstream_local")
    } else {
        state
            .upstreams
            .get(&r.upstream)
            .map(|u| u.display_name.clone())
            .unwrap_or_else(|| r.upstream.clone())
    };
    let vm = AccountPage {
        csrf_token: csrf.token,
        user: UserView {
            email: user.email.to_string(),
            name: user.name.clone(),
        },
        session: SessionView {
            channel: state
                .pages
                .text(locale, &format!("channel_{}", r.channel.as_str())),
            user_agent: r.user_agent.clone(),
            ip: r.ip.clone(),
            auth_time: format_time(r.auth_time),
            last_seen: format_time(r.last_seen),
            idle_expires_at: format_time(session.idle_expires_at()),
            expires_at: format_time(r.expires_at),
            upstream,
            amr: r.amr.join(", "),
        },
    };
    let mut res = render(&state, &req, StatusCode::OK, "account", true, &vm)?;
    if let Some(c) = csrf.new_cookie {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    Ok(res)
}
