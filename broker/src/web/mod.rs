//! Owns the HTTP surface: shared application state, route table, and the thin handlers that
//! parse requests into domain types, call one flow function and map the result to a page.

mod account;
mod admin_api;
pub mod cookies;
pub mod csrf;
mod form;
mod form_targets;
mod login;
pub mod metrics;
mod mfa;
mod middleware;
mod oidc;
mod ops;
mod outcome;
mod saml_idp;
mod upstream;
mod views;

/// The request parsers of this layer, for the fuzz targets in fuzz/ only (not an API).
#[doc(hidden)]
pub mod fuzzing {
    pub use super::form::{StrictForm, multi_params, oauth_form, well_formed};
}

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Serialize;

pub(crate) use form_targets::routed_upstreams;
pub use middleware::observe;

use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::Settings;
use crate::domain::Locale;
use crate::error::WebError;
use crate::pages::Pages;
use crate::provider::Provider;
use crate::ratelimit::{Lockout, RateLimiter};
use crate::session::{ActiveSession, SessionManager};
use crate::storage::Store;
use crate::upstream::Upstreams;
use cookies::CookieNames;
use csrf::Csrf;
use metrics::Metrics;

pub struct AppState {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub sessions: Arc<SessionManager>,
    pub pages: Arc<Pages>,
    pub upstreams: Upstreams,
    pub csrf: Csrf,
    pub cookies: CookieNames,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub metrics: Metrics,
    pub provider: Arc<Provider>,
    pub limiter: Arc<RateLimiter>,
    /// Brute-force lockout of sign-ins, per account.
    pub login_lockout: Arc<Lockout>,
    /// Second factors (plugins, policy, lockout).
    pub mfa: Arc<crate::mfa::Mfa>,
    /// The sign-in journey.
    pub signin: Arc<crate::flow::signin::SignIn>,
    /// The routed upstreams' sign-in endpoints (refreshed in the background).
    pub routed: crate::upstream::RoutedEndpoints,
}

/// Per-request facts set by the middleware.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub id: String,
    pub locale: Locale,
}

/// Marks a request that carries a live session (for the header of error pages).
#[derive(Debug, Clone, Copy)]
pub struct SignedIn;

pub fn routes(cfg: &mut web::ServiceConfig, max_form_bytes: usize) {
    cfg.app_data(web::QueryConfig::default().error_handler(|_, _| WebError::BadRequest.into()))
        .app_data(web::PayloadConfig::default().limit(max_form_bytes))
        .service(web::resource("/").route(web::get().to(account::home)))
        .service(
            web::resource("/login")
                .route(web::get().to(login::show))
                .route(web::post().to(login::submit)),
        )
        .service(
            web::resource("/login/session-limit")
                .route(web::post().to(login::end_one_and_continue)),
        )
        .service(web::resource("/login/continue").route(web::post().to(login::continue_as)))
        .service(web::resource("/login/passkey").route(web::post().to(login::passkey)))
        .service(web::resource("/login/mfa/remove").route(web::post().to(mfa::remove)))
        .service(web::resource("/login/mfa/recovery-codes").route(web::post().to(mfa::renew_codes)))
        .service(web::resource("/account/factors").route(web::get().to(mfa::manage)))
        .service(web::resource("/login/mfa/choose").route(web::post().to(mfa::choose)))
        .service(web::resource("/login/mfa/answer").route(web::post().to(mfa::answer)))
        .service(web::resource("/login/mfa/wait").route(web::get().to(mfa::wait)))
        .service(web::resource("/login/mfa/recovery").route(web::post().to(mfa::recovery)))
        .service(
            web::resource("/login/mfa/continue").route(web::post().to(mfa::continue_after_codes)),
        )
        .service(web::resource("/login/mfa/step-up").route(web::get().to(mfa::step_up)))
        .service(web::resource("/logout").route(web::post().to(login::logout)))
        .service(web::resource("/signed-out").route(web::get().to(login::signed_out)))
        .service(web::resource("/account").route(web::get().to(account::show)))
        .service(web::resource("/account/sessions/end").route(web::post().to(account::end_one)))
        .service(
            web::resource("/account/passkeys/rename")
                .route(web::post().to(account::rename_passkey)),
        )
        .service(
            web::resource("/account/sessions/end-others")
                .route(web::post().to(account::end_others)),
        )
        .configure(admin_api::routes)
        .service(web::resource("/upstream/{id}/start").route(web::get().to(upstream::start)))
        .service(web::resource("/upstream/{id}/callback").route(web::get().to(upstream::callback)))
        .service(
            web::resource("/upstream/{id}/logged-out").route(web::get().to(upstream::logged_out)),
        )
        .service(web::resource("/upstream/{id}/saml/slo").route(web::get().to(upstream::saml_slo)))
        .service(
            web::resource("/upstream/{id}/saml/metadata")
                .route(web::get().to(upstream::saml_metadata)),
        )
        .service(web::resource("/saml/idp/metadata").route(web::get().to(saml_idp::metadata)))
        .service(web::resource("/saml/idp/init").route(web::get().to(saml_idp::init)))
        .service(
            web::resource("/saml/idp/sso")
                .app_data(web::PayloadConfig::default().limit(saml_idp::MAX_SAML_FORM))
                .route(web::get().to(saml_idp::sso_redirect))
                .route(web::post().to(saml_idp::sso_post)),
        )
        .service(
            web::resource("/saml/idp/slo")
                .app_data(web::PayloadConfig::default().limit(saml_idp::MAX_SAML_FORM))
                .route(web::get().to(saml_idp::slo_redirect))
                .route(web::post().to(saml_idp::slo_post)),
        )
        .service(
            web::resource("/upstream/{id}/saml/acs")
                .app_data(web::PayloadConfig::default().limit(upstream::MAX_SAML_FORM))
                .route(web::post().to(upstream::saml_acs)),
        )
        .service(
            web::resource("/.well-known/openid-configuration")
                .route(web::get().to(oidc::discovery))
                .route(web::head().to(oidc::discovery)),
        )
        .service(
            web::resource("/jwks")
                .route(web::get().to(oidc::jwks))
                .route(web::head().to(oidc::jwks)),
        )
        .service(
            web::resource("/authorize")
                .route(web::get().to(oidc::authorize))
                .route(web::post().to(oidc::authorize)),
        )
        .service(web::resource("/token").route(web::post().to(oidc::token)))
        .service(
            web::resource("/userinfo")
                .route(web::get().to(oidc::userinfo))
                .route(web::post().to(oidc::userinfo)),
        )
        .service(web::resource("/introspect").route(web::post().to(oidc::introspect)))
        .service(web::resource("/revoke").route(web::post().to(oidc::revoke)))
        .service(
            web::resource("/oidc/logout")
                .route(web::get().to(oidc::end_session))
                .route(web::post().to(oidc::end_session)),
        )
        .service(web::resource("/healthz").route(web::get().to(ops::healthz)))
        .service(web::resource("/readyz").route(web::get().to(ops::readyz)))
        .service(web::resource("/metrics").route(web::get().to(ops::metrics)))
        .service(web::resource("/static/{name}").route(web::get().to(ops::asset)))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(WebError::NotFound)
        }));
}

pub(crate) fn request_info(req: &HttpRequest, state: &AppState) -> RequestInfo {
    req.extensions()
        .get::<RequestInfo>()
        .cloned()
        .unwrap_or(RequestInfo {
            id: String::new(),
            locale: state.settings.ui.default_locale,
        })
}

/// The client's address: the peer's, or from `X-Forwarded-For` when the peer is a trusted proxy.
pub(crate) fn client_ip(req: &HttpRequest, state: &AppState) -> String {
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    crate::ratelimit::client_ip(
        req.peer_addr().map(|a| a.ip()),
        &forwarded,
        &state.limiter.limits().trusted_proxies,
    )
    .map(|ip| ip.to_string())
    .unwrap_or_default()
}

pub(crate) fn user_agent(req: &HttpRequest) -> String {
    req.headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The live session of this request, if any (its activity is recorded).
pub(crate) async fn current_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<Option<ActiveSession>, WebError> {
    let Some(cookie) = req.cookie(&state.cookies.session) else {
        return Ok(None);
    };
    let sessions = Arc::clone(&state.sessions);
    let value = cookie.value().to_owned();
    let session = web::block(move || sessions.check(&value)).await??;
    if session.is_some() {
        req.extensions_mut().insert(SignedIn);
    }
    Ok(session)
}

/// Gives a page its own policy (see [`middleware::csp`]); the middleware keeps it.
pub(crate) fn set_csp(res: &mut HttpResponse, form_action: &[&str], scripts: bool) {
    if let Ok(v) =
        actix_web::http::header::HeaderValue::from_str(&middleware::csp(form_action, scripts))
    {
        res.headers_mut()
            .insert(actix_web::http::header::CONTENT_SECURITY_POLICY, v);
    }
}

/// A CSP source expression for a URL (see [`form_targets::source_of`]).
pub(crate) fn origin_source(uri: &url::Url) -> Option<String> {
    form_targets::source_of(uri)
}

pub(crate) fn render<T: Serialize>(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    page: &str,
    signed_in: bool,
    vm: &T,
) -> Result<HttpResponse, WebError> {
    let info = request_info(req, state);
    let html = state.pages.render(page, info.locale, signed_in, vm)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// An error page with this message: the middleware renders it in the request's language.
pub(crate) fn message_page(status: StatusCode, key: &'static str) -> HttpResponse {
    let mut res = HttpResponse::build(status).finish();
    res.extensions_mut().insert(crate::error::ErrorMessage(key));
    res
}

pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, location))
        .finish()
}

/// One session as "your devices" and the session-limit page show it.
#[derive(Serialize)]
pub(crate) struct DeviceView {
    sid: String,
    current: bool,
    channel: String,
    user_agent: String,
    ip: String,
    auth_time: String,
    last_seen: String,
}

impl DeviceView {
    pub(crate) fn of(
        state: &AppState,
        locale: Locale,
        s: &crate::storage::SessionRecord,
        current: bool,
        last_seen: UnixTime,
    ) -> Self {
        Self {
            sid: s.sid.clone(),
            current,
            channel: state
                .pages
                .text(locale, &format!("channel_{}", s.channel.as_str())),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            auth_time: format_time(s.auth_time),
            last_seen: format_time(last_seen),
        }
    }
}

/// How the pages show a point in time (RFC 3339, UTC).
pub fn format_time(t: UnixTime) -> String {
    let secs = u64::try_from(t).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}
