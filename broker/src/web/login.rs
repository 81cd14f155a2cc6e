//! Owns the sign-in, sign-out and signed-out handlers of the hosted pages.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::form::StrictForm;
use super::form_targets::{NextHop, form_targets};
use super::{AppState, client_ip, current_session, render, request_info, see_other, user_agent};
use crate::audit::{Event, EventKind};
use crate::domain::{Channel, Email, ReturnTo, SecretString};
use crate::error::WebError;
use crate::flow::login::{Authenticated, ClientContext, FlowError, open_session};
use crate::ratelimit::Scope;
use crate::upstream::UpstreamError;
use crate::upstream::local::LOCAL_UPSTREAM_ID;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    login_hint: Option<String>,
    /// Show the form even to a signed-in user (prompt=login, max_age exceeded).
    #[serde(default)]
    force: Option<String>,
    /// Skip the choice: sign in at this upstream (from `/authorize?idp_hint=`).
    #[serde(default)]
    idp_hint: Option<String>,
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
    #[serde(default)]
    link: String,
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
    /// A signed request to link an upstream identity once this account is proven.
    link: String,
    /// Some domains sign in elsewhere: the email alone may be submitted.
    email_first: bool,
}

/// A return path if it is a local one; anything else is dropped rather than followed.
pub(crate) fn return_to(raw: Option<&str>) -> Option<ReturnTo> {
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
    login_page_linking(state, req, status, return_to, email, error_key, None).await
}

/// The login page; with `link`, signing in with the account links the upstream identity to it.
pub(crate) async fn login_page_linking(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    status: StatusCode,
    return_to: Option<&ReturnTo>,
    email: &str,
    error_key: Option<&str>,
    link: Option<&LinkTicket>,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let csrf = state
        .csrf
        .issue(req, &state.cookies, state.entropy.as_ref())?;
    let rt = return_to.map(ReturnTo::as_str).unwrap_or("");
    let vm = LoginPage {
        csrf_token: csrf.token.clone(),
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
        link: String::new(),
        email_first: state
            .settings
            .upstreams
            .iter()
            .any(|u| !u.domains.is_empty()),
    };
    let mut vm = vm;
    if let Some(link) = link {
        vm.link = state
            .csrf
            .sign_ticket(req, &state.cookies, &csrf, LINK_TICKET, link)?;
    }
    let mut res = render(state, req, status, "login", false, &vm)?;
    if let Some(c) = csrf.new_cookie {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    // Signing in ends, through redirects, at the app's redirect URI; an email of a routed
    // domain leads to its upstream's sign-in.
    let mut hops = vec![NextHop::App(return_to)];
    if vm.email_first {
        hops.push(NextHop::RoutedUpstreams);
    }
    form_targets(state, &hops).await?.apply(&mut res);
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
    // Home-realm discovery: an upstream named by idp_hint, or routed by the hint's domain.
    let routed = q
        .idp_hint
        .as_deref()
        .filter(|id| state.upstreams.buttons().any(|u| u.id == *id))
        .map(str::to_owned)
        .or_else(|| hint.as_ref().and_then(|e| realm_of(&state, e)));
    if let Some(id) = routed {
        return Ok(see_other(&upstream_start(&id, rt.as_ref(), hint.as_ref())));
    }
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
    let ip = client_ip(&req, &state);
    // The account a guess is counted against: the name as typed, normalised like an email.
    let account = shown_email.trim().to_lowercase();
    let refused = |key: &'static str, status: StatusCode| {
        login_page(&state, &req, status, rt.as_ref(), &shown_email, Some(key))
    };
    let failed = |reason: &'static str| {
        state.provider.audit.record(
            Event::new(EventKind::LoginFailed)
                .ip(ip.as_str())
                .upstream(LOCAL_UPSTREAM_ID)
                .reason(reason),
        );
    };

    // Rates first (memory only), then the shared lockout, then the password hash.
    for (scope, key) in [
        (Scope::LoginPerIp, ip.as_str()),
        (Scope::LoginPerAccount, account.as_str()),
    ] {
        if let Err(limited) = state.limiter.check(scope, key) {
            state.provider.audit.record(
                Event::new(EventKind::RateLimited)
                    .ip(ip.as_str())
                    .reason(scope.as_str()),
            );
            return slow_down(
                refused("error_rate_limited", StatusCode::TOO_MANY_REQUESTS).await,
                limited,
            );
        }
    }
    let lockout = Arc::clone(&state.login_lockout);
    let acct = account.clone();
    let lock = web::block(move || lockout.check(&acct)).await??;
    if let Some(limited) = lock.locked {
        failed("locked_out");
        return slow_down(
            refused("error_locked_out", StatusCode::TOO_MANY_REQUESTS).await,
            limited,
        );
    }

    // Home-realm discovery: an email of a routed domain signs in at its upstream.
    if let Ok(email) = Email::parse(&form.email)
        && let Some(id) = realm_of(&state, &email)
    {
        return Ok(see_other(&upstream_start(&id, rt.as_ref(), Some(&email))));
    }
    // A malformed email is just a failed sign-in: no hint about which part was wrong.
    let (Ok(email), Some(password)) = (Email::parse(&form.email), form.password) else {
        failed("invalid_credentials");
        return refused("error_invalid_credentials", StatusCode::UNAUTHORIZED).await;
    };
    let identity = match connector.authenticate(&email, &password).await {
        Ok(identity) => identity,
        Err(UpstreamError::InvalidCredentials) => {
            failed("invalid_credentials");
            let lockout = Arc::clone(&state.login_lockout);
            let acct = account.clone();
            if let Some(limited) = web::block(move || lockout.failed(&acct)).await?? {
                state.provider.audit.record(
                    Event::new(EventKind::LockedOut)
                        .ip(ip.as_str())
                        .reason(format!("{} s", limited.retry_after_secs)),
                );
                return slow_down(
                    refused("error_locked_out", StatusCode::TOO_MANY_REQUESTS).await,
                    limited,
                );
            }
            return refused("error_invalid_credentials", StatusCode::UNAUTHORIZED).await;
        }
        Err(UpstreamError::AccountDisabled) => {
            failed("account_disabled");
            return refused("error_account_disabled", StatusCode::FORBIDDEN).await;
        }
        Err(UpstreamError::Storage(e)) => return Err(e.into()),
        Err(other) => return Err(WebError::internal(other)),
    };
    if lock.has_failures {
        let lockout = Arc::clone(&state.login_lockout);
        web::block(move || lockout.succeeded(&account)).await??;
    }
    // The account is proven: link the upstream identity that asked for it, if any.
    let link = (!form.link.is_empty())
        .then(|| {
            state
                .csrf
                .open_ticket::<LinkTicket>(&req, &state.cookies, LINK_TICKET, &form.link)
        })
        .flatten()
        .filter(|t| t.exp > state.clock.now() && t.email == email.as_str());
    if let Some(t) = link {
        let (store, now) = (Arc::clone(&state.store), state.clock.now());
        let user = crate::domain::UserId::from_stored(identity.subject.clone());
        let (upstream, subject) = (t.upstream.clone(), t.subject.clone());
        web::block(move || store.insert_upstream_link(&upstream, &subject, &user, now)).await??;
        state.provider.audit.record(
            Event::new(EventKind::AdminAction)
                .user(identity.subject.as_str())
                .upstream(t.upstream.as_str())
                .reason("upstream_linked_after_proof"),
        );
    }

    let who = Authenticated {
        user_id: crate::domain::UserId::from_stored(identity.subject),
        upstream: identity.upstream,
        amr: identity.amr,
        acr: identity.acr,
    };
    super::mfa::after_first_factor(&state, &req, rt.as_ref(), who).await
}

/// What a sign-in step may use, on a blocking thread.
pub(crate) struct SignInDeps {
    pub store: Arc<dyn crate::storage::Store>,
    pub sessions: Arc<crate::session::SessionManager>,
    pub provider: Arc<crate::provider::Provider>,
}

/// Runs the last step of every sign-in (password, session-limit page, upstream) on a blocking
/// thread: the session's channel and limits come from the app the return path leads to, and
/// the session this browser had ends first (re-authentication replaces it; its apps are told).
pub(crate) async fn sign_in_here<T: Send + 'static>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    rt: Option<&ReturnTo>,
    step: impl FnOnce(&SignInDeps, ClientContext) -> Result<T, FlowError> + Send + 'static,
) -> Result<Result<T, FlowError>, WebError> {
    let ctx = base_context(state, req);
    let policies = state.settings.session.clone();
    let return_path = rt.map(|r| r.as_str().to_owned());
    let previous = req
        .cookie(&state.cookies.session)
        .map(|c| c.value().to_owned());
    let d = SignInDeps {
        store: Arc::clone(&state.store),
        sessions: Arc::clone(&state.sessions),
        provider: Arc::clone(&state.provider),
    };
    Ok(web::block(move || {
        let ctx = for_client(&d.provider, &policies, return_path.as_deref(), ctx);
        if let Some(old) = previous
            && let Err(e) =
                crate::flow::logout::end_session(&d.sessions, &d.provider, &old, "reauthenticated")
        {
            tracing::warn!(error = %e, "ending the replaced session failed");
        }
        step(&d, ctx)
    })
    .await?)
}

/// The upstream whose `domains` route this email, if any.
fn realm_of(state: &AppState, email: &Email) -> Option<String> {
    let domain = email.domain();
    state
        .settings
        .upstreams
        .iter()
        .find(|u| u.domains.iter().any(|d| d == domain))
        .map(|u| u.id.clone())
}

/// `/upstream/{id}/start` with the way back and the login hint.
fn upstream_start(id: &str, rt: Option<&ReturnTo>, hint: Option<&Email>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(rt) = rt {
        q.append_pair("return_to", rt.as_str());
    }
    if let Some(h) = hint {
        q.append_pair("login_hint", h.as_str());
    }
    format!("/upstream/{id}/start?{}", q.finish())
}

/// Adds `Retry-After` to a refusal.
pub(crate) fn slow_down(
    res: Result<HttpResponse, WebError>,
    limited: crate::ratelimit::Limited,
) -> Result<HttpResponse, WebError> {
    let mut res = res?;
    if let Ok(v) =
        actix_web::http::header::HeaderValue::from_str(&limited.retry_after_secs.to_string())
    {
        res.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    Ok(res)
}

/// Where this browser signs in from, before the app (if any) is known.
fn base_context(state: &AppState, req: &HttpRequest) -> ClientContext {
    ClientContext {
        channel: Channel::Web,
        limit: state.settings.session.web.limit,
        on_limit: state.settings.session.web.on_limit,
        user_agent: user_agent(req),
        ip: client_ip(req, state),
    }
}

/// Signing in for an app: the session belongs to that app's channel and its limits.
/// Blocking (clients stored in the database).
fn for_client(
    provider: &crate::provider::Provider,
    policies: &crate::config::SessionSettings,
    return_path: Option<&str>,
    mut ctx: ClientContext,
) -> ClientContext {
    if let Some((client, _)) = return_path.and_then(|r| super::authorize_target(provider, r)) {
        let policy = policies.channel(client.channel);
        ctx.channel = client.channel;
        ctx.limit = match client.max_sessions_per_user {
            Some(0) => crate::domain::policy::SessionLimit::None,
            Some(n) => crate::domain::policy::SessionLimit::ThisChannel(n),
            None => policy.limit,
        };
        ctx.on_limit = client.on_session_limit.unwrap_or(policy.on_limit);
    }
    ctx
}

/// Turns the outcome of opening a session into the answer: the cookie and the way on, the
/// session-limit page, or a refusal.
pub(crate) async fn signed_in(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    rt: Option<&ReturnTo>,
    outcome: Result<(crate::session::SessionToken, crate::storage::SessionRecord), FlowError>,
) -> Result<HttpResponse, WebError> {
    let refused =
        |key: &'static str, status: StatusCode| login_page(state, req, status, rt, "", Some(key));
    let (token, record) = match outcome {
        Ok(ok) => ok,
        Err(FlowError::Disabled) => {
            return refused("error_account_disabled", StatusCode::FORBIDDEN).await;
        }
        Err(FlowError::UnknownUser) => {
            return refused("error_invalid_credentials", StatusCode::UNAUTHORIZED).await;
        }
        Err(FlowError::SessionLimit { who, sessions }) => {
            return session_limit_page(state, req, rt, &who, &sessions).await;
        }
        Err(FlowError::LinkRequired {
            email,
            upstream,
            subject,
        }) => {
            let ticket = LinkTicket {
                upstream,
                subject,
                email: email.as_str().to_owned(),
                exp: state.clock.now().saturating_add(600),
            };
            return login_page_linking(
                state,
                req,
                StatusCode::CONFLICT,
                rt,
                email.as_str(),
                Some("error_link_required"),
                Some(&ticket),
            )
            .await;
        }
        Err(FlowError::NoEmail) => {
            return refused("error_upstream_no_email", StatusCode::FORBIDDEN).await;
        }
        Err(FlowError::Storage(e)) => return Err(e.into()),
        Err(FlowError::Session(e)) => return Err(e.into()),
        Err(FlowError::Provider(e)) => return Err(WebError::internal(e)),
        Err(e @ FlowError::UnsupportedUpstream(_)) => return Err(WebError::internal(e)),
    };
    tracing::info!(user_id = %record.user_id, upstream = %record.upstream, "login succeeded");
    let mut res = see_other(rt.map(ReturnTo::as_str).unwrap_or("/account"));
    let cookie = state.cookies.build(
        state.cookies.session.clone(),
        token.as_cookie_value().to_owned(),
    );
    res.add_cookie(&cookie).map_err(WebError::internal)?;
    // A session from an upstream keeps what logging out there needs.
    if let Some(c) = super::upstream::attach_upstream_session(state, req, &record).await? {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    Ok(res)
}

/// What the session-limit page carries for the user who proved who they are: signed for this
/// browser, valid for a few minutes.
#[derive(Serialize, Deserialize)]
struct LimitTicket {
    user_id: String,
    upstream: String,
    amr: Vec<String>,
    #[serde(default)]
    acr: Option<String>,
    exp: i64,
}

const LIMIT_TICKET: &str = "session-limit";
const LINK_TICKET: &str = "upstream-link";

/// An upstream identity waiting to be linked to the account it claims, once that account is
/// proven by signing in with it (signed for this browser, valid ten minutes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LinkTicket {
    pub upstream: String,
    pub subject: String,
    pub email: String,
    pub exp: i64,
}
const LIMIT_TICKET_TTL: i64 = 300;

#[derive(Serialize)]
struct SessionLimitPage {
    csrf_token: String,
    ticket: String,
    return_to: String,
    sessions: Vec<super::DeviceView>,
}

async fn session_limit_page(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    rt: Option<&ReturnTo>,
    who: &Authenticated,
    sessions: &[crate::storage::SessionRecord],
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let csrf = state
        .csrf
        .issue(req, &state.cookies, state.entropy.as_ref())?;
    let ticket = LimitTicket {
        user_id: who.user_id.as_str().to_owned(),
        upstream: who.upstream.clone(),
        amr: who.amr.clone(),
        acr: who.acr.clone(),
        exp: state.clock.now().saturating_add(LIMIT_TICKET_TTL),
    };
    let ticket = state
        .csrf
        .sign_ticket(req, &state.cookies, &csrf, LIMIT_TICKET, &ticket)?;
    let vm = SessionLimitPage {
        csrf_token: csrf.token,
        ticket,
        return_to: rt.map(ReturnTo::as_str).unwrap_or("").to_owned(),
        sessions: sessions
            .iter()
            .map(|s| super::DeviceView::of(state, locale, s, false, s.last_seen))
            .collect(),
    };
    let mut res = render(state, req, StatusCode::OK, "session_limit", false, &vm)?;
    if let Some(c) = csrf.new_cookie {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    // Ending a session continues the sign-in: through redirects, to the app.
    form_targets(state, &[NextHop::App(rt)])
        .await?
        .apply(&mut res);
    Ok(res)
}

#[derive(Debug, Deserialize)]
pub struct EndOneForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    sid: String,
    #[serde(default)]
    return_to: String,
}

/// `POST /login/session-limit`: ends the session the user picked on the session-limit page,
/// then signs them in (the limit is checked again).
pub async fn end_one_and_continue(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<EndOneForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let rt = return_to(Some(&form.return_to));
    let ticket = state
        .csrf
        .open_ticket::<LimitTicket>(&req, &state.cookies, LIMIT_TICKET, &form.ticket)
        .filter(|t| t.exp > state.clock.now());
    let Some(ticket) = ticket else {
        // Expired or not this browser's: start over at the sign-in page.
        return login_page(
            &state,
            &req,
            StatusCode::BAD_REQUEST,
            rt.as_ref(),
            "",
            Some("error_session_limit_ticket"),
        )
        .await;
    };
    let who = Authenticated {
        user_id: crate::domain::UserId::from_stored(ticket.user_id),
        upstream: ticket.upstream,
        amr: ticket.amr,
        acr: ticket.acr,
    };
    let sid = form.sid;
    let outcome = sign_in_here(&state, &req, rt.as_ref(), move |d, ctx| {
        // Only one of this user's own sessions can be ended from here.
        match d.store.session_by_sid(&sid)? {
            Some(s) if s.user_id == who.user_id => {
                d.provider
                    .end_session_record(&s, "ended_at_session_limit")?;
            }
            _ => return Ok(None),
        }
        open_session(d.store.as_ref(), &d.sessions, &d.provider, who, ctx).map(Some)
    })
    .await?;
    match outcome {
        Ok(Some(ok)) => signed_in(&state, &req, rt.as_ref(), Ok(ok)).await,
        Ok(None) => Err(WebError::NotFound),
        Err(e) => signed_in(&state, &req, rt.as_ref(), Err(e)).await,
    }
}

pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<CsrfOnlyForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let upstream = super::upstream::upstream_session_of(&state, &req).await?;
    let removal = super::end_current_session(&state, &req, "logout").await?;
    let to = super::upstream::logout_location(&state, upstream, "/signed-out".into()).await?;
    let mut res = see_other(&to);
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
