//! Owns the admin REST API under `/admin/v1` (documented in `docs/admin-api.openapi.json`):
//! bearer authentication with this broker's own access tokens carrying the admin scope, and
//! thin handlers over the admin flow (sessions) and the audit trail.

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use crate::audit::EventKind;
use crate::domain::{Email, UserId};
use crate::error::WebError;
use crate::flow::admin::{self, AdminError, Target};
use crate::storage::{AuditQuery, SessionRecord};

/// The API description, served at `/admin/v1/openapi.json`.
const OPENAPI: &str = include_str!("../../../docs/admin-api.openapi.json");

const MAX_LIMIT: i64 = 1_000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/v1/sessions")
            .route(web::get().to(list_sessions))
            .route(web::delete().to(revoke_sessions)),
    )
    .service(web::resource("/admin/v1/sessions/{sid}").route(web::delete().to(revoke_one)))
    .service(web::resource("/admin/v1/users/{user_id}/revoke").route(web::post().to(revoke_user)))
    .service(
        web::resource("/admin/v1/users/{user_id}/passkeys").route(web::get().to(list_passkeys)),
    )
    .service(
        web::resource("/admin/v1/users/{user_id}/passkeys/{credential_id}")
            .route(web::delete().to(remove_passkey)),
    )
    .service(web::resource("/admin/v1/audit").route(web::get().to(audit)))
    .service(web::resource("/admin/v1/openapi.json").route(web::get().to(openapi)));
}

fn bad_request(description: impl Into<String>) -> WebError {
    WebError::api(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn not_found(description: &str) -> WebError {
    WebError::api(StatusCode::NOT_FOUND, "not_found", description)
}

/// Checks the bearer token and the admin scope; returns who is calling (the token's client).
async fn authorize(state: &web::Data<AppState>, req: &HttpRequest) -> Result<String, WebError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
        .map(|v| v[7..].trim().to_owned())
        .ok_or_else(|| {
            WebError::api(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "a bearer token is required",
            )
        })?;
    let provider = Arc::clone(&state.provider);
    let claims = web::block(move || provider.active_access_token(&token))
        .await?
        .map_err(|_| {
            WebError::api(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token is not active",
            )
        })?;
    let scope_ok = claims
        .get("scope")
        .and_then(Value::as_str)
        .is_some_and(|s| s.split(' ').any(|x| x == state.settings.admin.scope));
    if !scope_ok {
        return Err(WebError::api(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the token lacks the `{}` scope", state.settings.admin.scope),
        ));
    }
    // Only a client acting as itself (client_credentials: `sub` is the client, no session) is
    // an admin; a user's token never is, whatever scope its app was allowed.
    let client_id = claims.get("client_id").and_then(Value::as_str);
    let own = client_id.is_some_and(|c| claims.get("sub").and_then(Value::as_str) == Some(c))
        && !claims.contains_key("sid");
    match client_id {
        Some(c) if own => Ok(c.to_owned()),
        _ => Err(WebError::api(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the admin API takes client_credentials tokens only",
        )),
    }
}

fn admin_error(e: AdminError) -> WebError {
    match e {
        AdminError::UnknownSession => not_found("no such session"),
        AdminError::UnknownUser => not_found("no such user"),
        AdminError::UnknownPasskey => not_found("no such passkey"),
        AdminError::Storage(s) => s.into(),
        AdminError::Mfa(crate::mfa::MfaError::Storage(s)) => s.into(),
        AdminError::Mfa(m) => WebError::internal(m),
        AdminError::Provider(p) => WebError::internal(p),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    sid: Option<String>,
    user_id: Option<String>,
    email: Option<String>,
    client_id: Option<String>,
    all: Option<bool>,
    limit: Option<i64>,
}

/// Exactly one selector; `all=true` only where `allow_all`. Blocking (email lookup).
fn target(
    store: &dyn crate::storage::Store,
    q: &SessionQuery,
    allow_all: bool,
) -> Result<Target, WebError> {
    let given = [
        q.sid.is_some(),
        q.user_id.is_some(),
        q.email.is_some(),
        q.client_id.is_some(),
        q.all == Some(true),
    ]
    .into_iter()
    .filter(|x| *x)
    .count();
    if given > 1 {
        return Err(bad_request(
            "give one of sid, user_id, email, client_id, all",
        ));
    }
    if let Some(sid) = &q.sid {
        return Ok(Target::Sid(sid.clone()));
    }
    if let Some(u) = &q.user_id {
        return Ok(Target::User(UserId::from_stored(u.clone())));
    }
    if let Some(e) = &q.email {
        let email = Email::parse(e).map_err(|_| bad_request("email is not an email address"))?;
        let user = store
            .user_by_email(&email)?
            .ok_or_else(|| not_found("no such user"))?;
        return Ok(Target::User(user.id));
    }
    if let Some(c) = &q.client_id {
        return Ok(Target::Client(c.clone()));
    }
    if q.all == Some(true) || allow_all && given == 0 {
        return Ok(Target::All);
    }
    Err(bad_request(
        "give one of sid, user_id, email, client_id, or all=true",
    ))
}

#[derive(Serialize)]
struct SessionJson {
    sid: String,
    user_id: String,
    channel: &'static str,
    user_agent: String,
    ip: String,
    upstream: String,
    amr: Vec<String>,
    auth_time: i64,
    last_seen: i64,
    idle_timeout: i64,
    expires_at: i64,
}

impl SessionJson {
    fn from_record(s: SessionRecord) -> Self {
        Self {
            sid: s.sid,
            user_id: s.user_id.as_str().to_owned(),
            channel: s.channel.as_str(),
            user_agent: s.user_agent,
            ip: s.ip,
            upstream: s.upstream,
            amr: s.amr,
            auth_time: s.auth_time,
            last_seen: s.last_seen,
            idle_timeout: s.idle_timeout,
            expires_at: s.expires_at,
        }
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

fn limit_of(raw: Option<i64>) -> Result<i64, WebError> {
    match raw {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(bad_request(format!("limit must be 1-{MAX_LIMIT}"))),
    }
}

/// The query string, parsed strictly (unknown keys and bad values are a 400 JSON error).
fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, WebError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| bad_request(format!("query string: {e}")))
}

/// `GET /admin/v1/sessions`.
async fn list_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    authorize(&state, &req).await?;
    let q: SessionQuery = query(&req)?;
    let limit = limit_of(q.limit)?;
    let store = Arc::clone(&state.store);
    let sessions = web::block(move || {
        let t = target(store.as_ref(), &q, true)?;
        admin::list(store.as_ref(), &t, limit).map_err(admin_error)
    })
    .await??;
    let sessions: Vec<SessionJson> = sessions.into_iter().map(SessionJson::from_record).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "sessions": sessions }),
    ))
}

async fn run_revoke(
    state: &web::Data<AppState>,
    actor: String,
    select: impl FnOnce(&dyn crate::storage::Store) -> Result<Target, WebError> + Send + 'static,
) -> Result<HttpResponse, WebError> {
    let (store, provider) = (Arc::clone(&state.store), Arc::clone(&state.provider));
    let ended = web::block(move || {
        let t = select(store.as_ref())?;
        admin::revoke(store.as_ref(), &provider, &t, &format!("api:{actor}")).map_err(admin_error)
    })
    .await??;
    state.provider.logout_wakeup.notify_one();
    Ok(json(StatusCode::OK, &serde_json::json!({ "ended": ended })))
}

/// `DELETE /admin/v1/sessions?…`: ends the selected sessions (a user's: revoke-all).
async fn revoke_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let actor = authorize(&state, &req).await?;
    let q: SessionQuery = query(&req)?;
    if q.limit.is_some() {
        return Err(bad_request("limit does not apply to DELETE"));
    }
    run_revoke(&state, actor, move |store| target(store, &q, false)).await
}

/// `DELETE /admin/v1/sessions/{sid}`.
async fn revoke_one(
    state: web::Data<AppState>,
    req: HttpRequest,
    sid: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let actor = authorize(&state, &req).await?;
    let sid = sid.into_inner();
    run_revoke(&state, actor, move |_| Ok(Target::Sid(sid))).await
}

/// `POST /admin/v1/users/{user_id}/revoke`: revoke-all for one user.
async fn revoke_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    user_id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let actor = authorize(&state, &req).await?;
    let user = UserId::from_stored(user_id.into_inner());
    run_revoke(&state, actor, move |_| Ok(Target::User(user))).await
}

/// `GET /admin/v1/users/{user_id}/passkeys`: the user's passkeys, oldest first.
async fn list_passkeys(
    state: web::Data<AppState>,
    req: HttpRequest,
    user_id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    authorize(&state, &req).await?;
    let (store, user) = (
        Arc::clone(&state.store),
        UserId::from_stored(user_id.into_inner()),
    );
    let passkeys =
        web::block(move || admin::passkeys(store.as_ref(), &user).map_err(admin_error)).await??;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "passkeys": passkeys }),
    ))
}

/// `DELETE /admin/v1/users/{user_id}/passkeys/{credential_id}`: removes one (audited).
async fn remove_passkey(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let actor = authorize(&state, &req).await?;
    let (user, id) = path.into_inner();
    let (store, provider) = (Arc::clone(&state.store), Arc::clone(&state.provider));
    let left = web::block(move || {
        admin::remove_passkey(
            store.as_ref(),
            &provider,
            &UserId::from_stored(user),
            &id,
            &format!("api:{actor}"),
        )
        .map_err(admin_error)
    })
    .await??;
    state.provider.logout_wakeup.notify_one();
    Ok(json(StatusCode::OK, &serde_json::json!({ "left": left })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    user_id: Option<String>,
    kind: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

/// `GET /admin/v1/audit`: events newest first, paged by `before_id`.
async fn audit(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, WebError> {
    authorize(&state, &req).await?;
    let p: AuditParams = query(&req)?;
    if let Some(k) = &p.kind
        && EventKind::parse(k).is_none()
    {
        return Err(bad_request(format!("unknown kind `{k}`")));
    }
    let q = AuditQuery {
        user_id: p.user_id,
        kind: p.kind,
        since: p.since,
        until: p.until,
        before_id: p.before_id,
        limit: limit_of(p.limit)?,
    };
    let limit = q.limit;
    let (store, provider) = (Arc::clone(&state.store), Arc::clone(&state.provider));
    let events = web::block(move || {
        // This instance's own buffered events are written first, so a caller sees its writes.
        if let Err(e) = provider.audit.flush() {
            tracing::warn!(error = %e, "audit flush before query failed");
        }
        store.audit_events(&q)
    })
    .await??;
    let next = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "at": e.at,
                "kind": e.kind,
                "user_id": e.user_id,
                "client_id": e.client_id,
                "sid": e.sid,
                "ip": e.ip,
                "upstream": e.upstream,
                "reason": e.reason,
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "events": events, "next_before_id": next }),
    ))
}

/// `GET /admin/v1/openapi.json` (public: it holds no data).
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}
