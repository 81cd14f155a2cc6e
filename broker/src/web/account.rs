//! Owns the account page: who is signed in, the details of the current session, the user's
//! passkeys (renamed here; added and removed in the factors journey), and "your devices": every
//! session of the user, with end-this and end-all-others.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::form::StrictForm;

use super::{AppState, DeviceView, current_session, format_time, render, request_info, see_other};
use crate::error::WebError;
use crate::mfa::passkey_list;
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
struct PasskeyView {
    id: String,
    name: String,
    added: String,
    last_used: Option<String>,
    synced: bool,
    /// The attested hardware model, when there is one.
    authenticator: Option<String>,
}

#[derive(Serialize)]
struct AccountPage {
    csrf_token: String,
    user: UserView,
    session: SessionView,
    devices: Vec<super::DeviceView>,
    others: bool,
    /// Second factors can be set up here (plugins are configured).
    mfa: bool,
    passkeys: Vec<PasskeyView>,
    passkey_name_max: usize,
}

#[derive(Debug, Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
pub struct EndForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    sid: String,
}

#[derive(Debug, Deserialize)]
pub struct EndOthersForm {
    #[serde(default)]
    csrf_token: String,
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
    let (user, mut all, passkeys) = web::block(move || {
        Ok::<_, WebError>((
            store.user_by_id(&user_id)?,
            store.sessions_of_user(&user_id)?,
            passkey_list::list(store.as_ref(), &user_id).map_err(WebError::internal)?,
        ))
    })
    .await??;
    let Some(user) = user else {
        return Ok(see_other("/login?return_to=%2Faccount"));
    };
    // Newest first; the stored last-seen may lag by the touch interval, this one's does not.
    all.sort_by_key(|s| std::cmp::Reverse(s.auth_time));
    let now = state.clock.now();
    all.retain(|s| s.is_live(now) || s.sid == session.record.sid);
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
        others: all.iter().any(|s| s.sid != r.sid),
        mfa: state.mfa.configured(),
        passkeys: passkeys
            .into_iter()
            .map(|p| PasskeyView {
                id: p.id,
                name: p.name,
                added: format_time(p.created_at),
                last_used: p.last_used_at.map(format_time),
                synced: p.backup_eligible,
                authenticator: p.authenticator,
            })
            .collect(),
        passkey_name_max: passkey_list::MAX_NAME,
        devices: all
            .iter()
            .map(|s| {
                // This session's last-seen is the in-memory one; others' may lag a little.
                let current = s.sid == r.sid;
                let seen = if current { r.last_seen } else { s.last_seen };
                DeviceView::of(&state, locale, s, current, seen)
            })
            .collect(),
    };
    let mut res = render(&state, &req, StatusCode::OK, "account", true, &vm)?;
    if let Some(c) = csrf.new_cookie {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    // Signing out goes on, through redirects, to the upstream's logout: allow that form target.
    use super::form_targets::form_targets;
    form_targets(
        &state,
        &[crate::flow::contract::Hop::UpstreamLogout(r.sid.clone())],
    )
    .await?
    .apply(&mut res, false);
    Ok(res)
}

/// `POST /account/sessions/end`: ends one of the signed-in user's other sessions.
pub async fn end_one(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<EndForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let Some(session) = current_session(&state, &req).await? else {
        return Ok(see_other("/login?return_to=%2Faccount"));
    };
    if form.sid == session.record.sid {
        // Ending this very session is signing out, as `/logout` does (through the upstream).
        let browser = super::outcome::browser(&state, &req);
        let out = state
            .signin
            .sign_out(&browser, "logout", "/signed-out".into())
            .await?;
        return super::outcome::respond(&state, &req, out).await;
    }
    let (store, provider) = (state.store.clone(), state.provider.clone());
    let owner = session.record.user_id.clone();
    let ended = web::block(move || match store.session_by_sid(&form.sid)? {
        Some(s) if s.user_id == owner => {
            provider
                .end_session_record(&s, "ended_from_devices_page")
                .map_err(WebError::internal)?;
            Ok(true)
        }
        _ => Ok::<_, WebError>(false),
    })
    .await??;
    if !ended {
        // Not one of this user's sessions (or already gone): nothing to say about it.
        return Err(WebError::NotFound);
    }
    Ok(see_other("/account#devices"))
}

/// `POST /account/sessions/end-others`: ends every session of the user but this one.
pub async fn end_others(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<EndOthersForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let Some(session) = current_session(&state, &req).await? else {
        return Ok(see_other("/login?return_to=%2Faccount"));
    };
    let (store, provider) = (state.store.clone(), state.provider.clone());
    web::block(move || {
        for s in store.sessions_of_user(&session.record.user_id)? {
            if s.sid != session.record.sid {
                provider
                    .end_session_record(&s, "ended_others_from_devices_page")
                    .map_err(WebError::internal)?;
            }
        }
        Ok::<_, WebError>(())
    })
    .await??;
    Ok(see_other("/account#devices"))
}

/// `POST /account/passkeys/rename`: names one of the signed-in user's passkeys.
pub async fn rename_passkey(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<RenameForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let Some(session) = current_session(&state, &req).await? else {
        return Ok(see_other("/login?return_to=%2Faccount"));
    };
    let Some(name) = passkey_list::parse_name(&form.name) else {
        return Ok(super::message_page(
            StatusCode::BAD_REQUEST,
            "passkey_name_invalid",
        ));
    };
    let store = state.store.clone();
    let renamed = web::block(move || {
        passkey_list::rename(store.as_ref(), &session.record.user_id, &form.id, &name)
    })
    .await?
    .map_err(WebError::internal)?;
    if !renamed {
        // Not one of this user's passkeys: nothing to say about it.
        return Err(WebError::NotFound);
    }
    Ok(see_other("/account#passkeys"))
}
