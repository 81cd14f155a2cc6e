//! Owns the second-factor pages: after the first factor, choosing a factor, a plugin's
//! challenge or enrolment form (rendered by the host from the plugin's description), recovery
//! codes, the step-up of an existing session an app asked for, and the lockout message.
//! Between pages the step travels in a ticket signed for this browser.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::form::StrictForm;
use super::login::{return_to, sign_in_here, signed_in};
use super::{AppState, client_ip, current_session, render, request_info, see_other};
use crate::audit::{Event, EventKind};
use crate::domain::policy::MfaRequirement;
use crate::domain::{Locale, ReturnTo, UserId};
use crate::error::WebError;
use crate::flow::login::{Authenticated, open_session};
use crate::flow::mfa as policy;
use crate::mfa::host::{FieldKind, Form, Localized};
use crate::mfa::{EnrollOutcome, FactorStatus, FactorUser, MfaError, VerifyOutcome};
use crate::ratelimit::Scope;

const MFA_TICKET: &str = "mfa-step";

/// Where a sign-in (or step-up) stands between the second-factor pages. Signed for the browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MfaTicket {
    user_id: String,
    upstream: String,
    amr: Vec<String>,
    #[serde(default)]
    acr: Option<String>,
    return_to: String,
    /// Raising this session (sid) to a second factor, rather than opening a new one.
    #[serde(default)]
    step_up: Option<String>,
    /// The policy said `required`: a user without a factor must set one up.
    required: bool,
    #[serde(default)]
    factor: Option<String>,
    #[serde(default)]
    enrolling: bool,
    #[serde(default)]
    form: Option<Form>,
    /// The factor is proven (after an enrolment); these methods are added on continue.
    #[serde(default)]
    proven: Option<Vec<String>>,
    /// The CSP source of the app's redirect URI the step ends at (`return_to` an `/authorize`):
    /// the pages' forms may lead there through redirects.
    #[serde(default)]
    app_origin: Option<String>,
    exp: i64,
}

impl MfaTicket {
    fn rt(&self) -> Option<ReturnTo> {
        return_to(Some(&self.return_to))
    }
}

/// What the policy decided for a sign-in that passed its first factor.
enum Decision {
    /// No second factor: sign in with these methods.
    Proceed(Vec<String>),
    /// Ask: the choice of factors (with the ticket to carry).
    Ask {
        ticket: Box<MfaTicket>,
        factors: Vec<FactorStatus>,
        recovery_left: i64,
    },
    /// A factor is required but none can run: fail closed.
    NoFactor,
}

/// After the first factor: a second one when the policy asks, else the session. The return
/// path's app (client `mfa`, `acr_values`) and the upstream decide.
pub(crate) async fn after_first_factor(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    rt: Option<&ReturnTo>,
    who: Authenticated,
) -> Result<HttpResponse, WebError> {
    let s = Arc::clone(state);
    let rt_s = rt.map(|r| r.as_str().to_owned()).unwrap_or_default();
    let locale = request_info(req, state).locale;
    let who2 = who.clone();
    let decision = web::block(move || decide(&s, &rt_s, &who2, None, locale)).await??;
    match decision {
        Decision::Proceed(amr) => {
            let who = Authenticated { amr, ..who };
            finish_sign_in(state, req, rt, who).await
        }
        Decision::Ask {
            ticket,
            factors,
            recovery_left,
        } => choose_or_start(state, req, *ticket, factors, recovery_left).await,
        Decision::NoFactor => Ok(no_factor()),
    }
}

/// Opens the session (after the session-limit policy) and answers with the cookie.
async fn finish_sign_in(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    rt: Option<&ReturnTo>,
    who: Authenticated,
) -> Result<HttpResponse, WebError> {
    let outcome = sign_in_here(state, req, rt, move |d, ctx| {
        open_session(d.store.as_ref(), &d.sessions, &d.provider, who, ctx)
    })
    .await?;
    signed_in(state, req, rt, outcome).await
}

fn acr_values_of(return_path: &str) -> Option<String> {
    let query = return_path.strip_prefix("/authorize?")?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "acr_values")
        .map(|(_, v)| v.into_owned())
}

/// The policy decision for a user who passed the first factor. Blocking.
fn decide(
    state: &AppState,
    return_path: &str,
    who: &Authenticated,
    step_up: Option<String>,
    locale: Locale,
) -> Result<Decision, WebError> {
    let target = super::authorize_target(&state.provider, return_path);
    let app_origin = target
        .as_ref()
        .and_then(|(_, uri)| super::origin_source(uri));
    let client = target.map(|(c, _)| c);
    let upstream = state
        .settings
        .upstreams
        .iter()
        .find(|u| u.id == who.upstream);
    let acr_values = acr_values_of(return_path);
    let mut required = policy::requirement(
        state.settings.mfa.required,
        client.as_ref().and_then(|c| c.mfa),
        upstream,
        acr_values.as_deref(),
    );
    if step_up.is_some() {
        required = MfaRequirement::Required;
    }
    if required == MfaRequirement::Off {
        return Ok(Decision::Proceed(who.amr.clone()));
    }
    if policy::upstream_mfa_trusted(upstream, &who.amr, who.acr.as_deref()) {
        return Ok(Decision::Proceed(policy::merge_amr(
            &who.amr,
            &[crate::domain::auth::AMR_MFA.to_owned()],
        )));
    }
    // A missing or disabled account is refused by the session step, with its own page.
    let Ok(user) = factor_user(state, &who.user_id, locale) else {
        return Ok(Decision::Proceed(who.amr.clone()));
    };
    let factors = state.mfa.factors(&user).map_err(mfa_internal)?;
    let usable = factors.iter().any(|f| f.enrolled && f.available);
    let recovery_left = state
        .mfa
        .recovery_codes_left(&who.user_id)
        .map_err(mfa_internal)?;
    if !usable && required == MfaRequirement::Optional {
        return Ok(Decision::Proceed(who.amr.clone()));
    }
    let enrollable = factors.iter().any(|f| f.available && !f.enrolled);
    if !usable && !enrollable && recovery_left == 0 {
        return Ok(Decision::NoFactor);
    }
    let ticket = MfaTicket {
        user_id: who.user_id.as_str().to_owned(),
        upstream: who.upstream.clone(),
        amr: who.amr.clone(),
        acr: who.acr.clone(),
        return_to: return_path.to_owned(),
        step_up,
        required: required == MfaRequirement::Required,
        factor: None,
        enrolling: false,
        form: None,
        proven: None,
        app_origin,
        exp: state
            .clock
            .now()
            .saturating_add(ttl(&state.settings.mfa.step_ttl)),
    };
    Ok(Decision::Ask {
        ticket: Box::new(ticket),
        factors,
        recovery_left,
    })
}

fn ttl(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(600)
}

fn mfa_internal(e: MfaError) -> WebError {
    match e {
        MfaError::Storage(s) => s.into(),
        other => WebError::internal(other),
    }
}

fn factor_user(state: &AppState, id: &UserId, locale: Locale) -> Result<FactorUser, WebError> {
    let user = state
        .store
        .user_by_id(id)?
        .filter(|u| !u.disabled)
        .ok_or(WebError::NotFound)?;
    Ok(FactorUser {
        id: user.id,
        email: user.email.as_str().to_owned(),
        locale,
    })
}

/// Whether this step may set up a new factor: only a user with no factor yet, or a session that
/// already passed a second factor (adding a method from the account page). Otherwise a stolen
/// password could enrol the thief's own authenticator and pass as MFA.
fn may_enroll(ticket: &MfaTicket, factors: &[FactorStatus]) -> bool {
    ticket.amr.iter().any(|m| m == crate::domain::auth::AMR_MFA)
        || !factors.iter().any(|f| f.enrolled)
}

/// One enrolled factor: straight to its challenge; else the choice.
async fn choose_or_start(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    ticket: MfaTicket,
    factors: Vec<FactorStatus>,
    recovery_left: i64,
) -> Result<HttpResponse, WebError> {
    let usable: Vec<&FactorStatus> = factors
        .iter()
        .filter(|f| f.enrolled && f.available)
        .collect();
    if let [only] = usable.as_slice()
        && !may_enroll(&ticket, &factors)
    {
        let id = only.id.clone();
        return start(state, req, ticket, &id, false).await;
    }
    choose_page(
        state,
        req,
        StatusCode::OK,
        &ticket,
        &factors,
        recovery_left,
        None,
    )
}

#[derive(Serialize)]
struct FactorButton {
    id: String,
    name: String,
    kind: &'static str,
}

#[derive(Serialize)]
struct ChoosePage {
    csrf_token: String,
    ticket: String,
    factors: Vec<FactorButton>,
    unavailable: Vec<FactorButton>,
    enroll: Vec<FactorButton>,
    recovery: bool,
    error: Option<String>,
    step_up: bool,
}

fn localized(l: &Localized, locale: Locale) -> String {
    match locale {
        Locale::Ko if !l.ko.is_empty() => l.ko.clone(),
        _ => l.en.clone(),
    }
}

fn kind_name(k: crate::mfa::host::FactorKind) -> &'static str {
    use crate::mfa::host::FactorKind as K;
    match k {
        K::Totp => "totp",
        K::EmailOtp => "email-otp",
        K::SmsOtp => "sms-otp",
        K::Other => "other",
    }
}

/// Signs the ticket for this browser and renders `page` with it.
fn with_ticket<T: Serialize>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    status: StatusCode,
    page: &str,
    ticket: &MfaTicket,
    build: impl FnOnce(String, String) -> T,
) -> Result<HttpResponse, WebError> {
    let csrf = state
        .csrf
        .issue(req, &state.cookies, state.entropy.as_ref())?;
    let signed = state
        .csrf
        .sign_ticket(req, &state.cookies, &csrf, MFA_TICKET, ticket)?;
    let vm = build(csrf.token.clone(), signed);
    let mut res = render(state, req, status, page, false, &vm)?;
    if let Some(c) = csrf.new_cookie {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    // The last answer ends, through redirects, at the app's redirect URI (browsers apply
    // `form-action` to the whole chain): allow that target, as the login page does.
    let mut targets = super::form_targets::FormTargets::same_site();
    if let Some(origin) = &ticket.app_origin {
        targets.allow_source(origin);
    }
    targets.apply(&mut res);
    Ok(res)
}

fn choose_page(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    status: StatusCode,
    ticket: &MfaTicket,
    factors: &[FactorStatus],
    recovery_left: i64,
    error: Option<String>,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let button = |f: &FactorStatus| FactorButton {
        id: f.id.clone(),
        name: localized(&f.name, locale),
        kind: kind_name(f.kind),
    };
    let enrolling_allowed = may_enroll(ticket, factors);
    let mut clean = ticket.clone();
    clean.factor = None;
    clean.form = None;
    clean.enrolling = false;
    with_ticket(state, req, status, "mfa_choose", &clean, |csrf_token, t| {
        ChoosePage {
            csrf_token,
            ticket: t,
            factors: factors
                .iter()
                .filter(|f| f.enrolled && f.available)
                .map(button)
                .collect(),
            unavailable: factors
                .iter()
                .filter(|f| f.enrolled && !f.available)
                .map(button)
                .collect(),
            enroll: factors
                .iter()
                .filter(|f| enrolling_allowed && f.available && !f.enrolled && f.needs_enrollment)
                .map(button)
                .collect(),
            recovery: recovery_left > 0,
            error,
            step_up: ticket.step_up.is_some(),
        }
    })
}

#[derive(Serialize)]
struct FieldView {
    name: String,
    label: String,
    hint: Option<String>,
    input_type: &'static str,
    inputmode: &'static str,
    autocomplete: &'static str,
    max_length: u32,
}

#[derive(Serialize)]
struct FormPage {
    csrf_token: String,
    ticket: String,
    factor: String,
    factor_name: String,
    intro: String,
    fields: Vec<FieldView>,
    /// Inline SVG of the QR code (generated here, never by the plugin).
    qr_svg: Option<String>,
    secret: Option<String>,
    error: Option<String>,
    enrolling: bool,
}

fn qr_svg(data: &str) -> Option<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

fn form_page(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    status: StatusCode,
    ticket: &MfaTicket,
    error: Option<String>,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let (Some(factor), Some(form)) = (ticket.factor.clone(), ticket.form.clone()) else {
        return Err(WebError::BadRequest);
    };
    let factor_name = match state.mfa.registry().get(&factor) {
        Some(crate::mfa::registry::Slot::Ready(l)) => localized(&l.description.name, locale),
        _ => factor.clone(),
    };
    let fields = form
        .fields
        .iter()
        .map(|f| {
            let (input_type, inputmode, autocomplete) = match f.kind {
                FieldKind::Code => ("text", "numeric", "one-time-code"),
                FieldKind::Phone => ("tel", "tel", "tel"),
                FieldKind::Text => ("text", "text", "off"),
            };
            FieldView {
                name: f.name.clone(),
                label: localized(&f.label, locale),
                hint: f.hint.as_ref().map(|h| localized(h, locale)),
                input_type,
                inputmode,
                autocomplete,
                max_length: f.max_length,
            }
        })
        .collect();
    with_ticket(state, req, status, "mfa_form", ticket, |csrf_token, t| {
        FormPage {
            csrf_token,
            ticket: t,
            factor: factor.clone(),
            factor_name,
            intro: localized(&form.intro, locale),
            fields,
            qr_svg: form.qr.as_deref().and_then(qr_svg),
            secret: form.secret.clone(),
            error,
            enrolling: ticket.enrolling,
        }
    })
}

/// A factor is required but none can run: fail closed, with a page saying so.
fn no_factor() -> HttpResponse {
    super::message_page(StatusCode::SERVICE_UNAVAILABLE, "mfa_unavailable_message")
}

/// Starts a challenge (or an enrolment) of `factor` and shows its form; messages the plugin
/// asked to send are sent first.
async fn start(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    mut ticket: MfaTicket,
    factor: &str,
    enroll: bool,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let s = Arc::clone(state);
    let (uid, f) = (
        UserId::from_stored(ticket.user_id.clone()),
        factor.to_owned(),
    );
    let t = ticket.clone();
    let began = web::block(move || -> Result<_, WebError> {
        let user = factor_user(&s, &uid, locale)?;
        if !enroll && let Some(l) = s.mfa.locked(&f, &user).map_err(mfa_internal)? {
            return Ok((user, Err(MfaStepError::Locked(l.retry_after_secs))));
        }
        if enroll && !may_enroll(&t, &s.mfa.factors(&user).map_err(mfa_internal)?) {
            return Ok((user, Err(MfaStepError::EnrolRefused)));
        }
        let r = if enroll {
            s.mfa.enroll_begin(&f, &user)
        } else {
            s.mfa.challenge_begin(&f, &user)
        };
        Ok((user, r.map_err(MfaStepError::Plugin)))
    })
    .await??;
    let (user, result) = began;
    let (form, outbox) = match result {
        Ok(ok) => ok,
        Err(e) => return step_failed(state, req, &ticket, factor, e).await,
    };
    if !outbox.is_empty()
        && let Err(e) = state.mfa.delivery.send_all(&user.email, outbox).await
    {
        return step_failed(state, req, &ticket, factor, MfaStepError::Plugin(e.into())).await;
    }
    audit(state, req, &ticket, EventKind::MfaChallenged, factor, None);
    ticket.factor = Some(factor.to_owned());
    ticket.form = Some(form);
    ticket.enrolling = enroll;
    ticket.proven = None;
    form_page(state, req, StatusCode::OK, &ticket, None)
}

enum MfaStepError {
    Locked(u64),
    /// Setting up a new factor needs the existing one first.
    EnrolRefused,
    Plugin(MfaError),
}

fn audit(
    state: &AppState,
    req: &HttpRequest,
    ticket: &MfaTicket,
    kind: EventKind,
    factor: &str,
    why: Option<&str>,
) {
    let reason = match why {
        Some(w) => format!("{factor}:{w}"),
        None => factor.to_owned(),
    };
    let mut e = Event::new(kind)
        .user(ticket.user_id.as_str())
        .ip(client_ip(req, state))
        .upstream(ticket.upstream.as_str())
        .reason(reason);
    if let Some(sid) = &ticket.step_up {
        e = e.sid(sid.as_str());
    }
    state.provider.audit.record(e);
}

/// A factor that failed (plugin failure, lockout): back to the choice with the reason. Fails
/// closed: nothing is signed in.
async fn step_failed(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    ticket: &MfaTicket,
    factor: &str,
    e: MfaStepError,
) -> Result<HttpResponse, WebError> {
    let (status, key, retry) = match &e {
        MfaStepError::Locked(secs) => {
            audit(state, req, ticket, EventKind::MfaLockedOut, factor, None);
            (StatusCode::TOO_MANY_REQUESTS, "mfa_locked", Some(*secs))
        }
        MfaStepError::EnrolRefused => {
            audit(
                state,
                req,
                ticket,
                EventKind::MfaFailed,
                factor,
                Some("enrolment_refused"),
            );
            (StatusCode::FORBIDDEN, "mfa_enrol_refused", None)
        }
        MfaStepError::Plugin(MfaError::Delivery(d)) => {
            tracing::warn!(plugin = factor, error = %d, "MFA message not sent");
            audit(
                state,
                req,
                ticket,
                EventKind::MfaFailed,
                factor,
                Some("delivery"),
            );
            (StatusCode::BAD_GATEWAY, "mfa_not_sent", None)
        }
        MfaStepError::Plugin(MfaError::Storage(_)) => {
            return Err(WebError::Unavailable("database".into()));
        }
        MfaStepError::Plugin(err) => {
            tracing::warn!(plugin = factor, error = %err, "MFA factor failed");
            audit(
                state,
                req,
                ticket,
                EventKind::MfaFailed,
                factor,
                Some(err.code()),
            );
            (StatusCode::SERVICE_UNAVAILABLE, "mfa_factor_failed", None)
        }
    };
    let res = back_to_choice(state, req, ticket, status, Some(key)).await;
    match retry {
        Some(retry_after_secs) => {
            super::login::slow_down(res, crate::ratelimit::Limited { retry_after_secs })
        }
        None => res,
    }
}

/// Back to the factor choice (other factors, recovery codes), with a message if any.
async fn back_to_choice(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    ticket: &MfaTicket,
    status: StatusCode,
    key: Option<&str>,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let s = Arc::clone(state);
    let uid = UserId::from_stored(ticket.user_id.clone());
    let (factors, left) = web::block(move || -> Result<_, WebError> {
        let user = factor_user(&s, &uid, locale)?;
        Ok((
            s.mfa.factors(&user).map_err(mfa_internal)?,
            s.mfa.recovery_codes_left(&uid).map_err(mfa_internal)?,
        ))
    })
    .await??;
    choose_page(
        state,
        req,
        status,
        ticket,
        &factors,
        left,
        key.map(|k| state.pages.text(locale, k)),
    )
}

/// A posted step: its CSRF token checked, then its ticket if it is this browser's and
/// unexpired (`None`: show [`expired`]); with `limit`, the MFA attempt rates are counted too.
fn posted(
    state: &AppState,
    req: &HttpRequest,
    csrf_token: &str,
    signed: &str,
    limit: bool,
) -> Result<Option<MfaTicket>, WebError> {
    state.csrf.verify(req, &state.cookies, csrf_token)?;
    let ticket = state
        .csrf
        .open_ticket::<MfaTicket>(req, &state.cookies, MFA_TICKET, signed)
        .filter(|t| t.exp > state.clock.now());
    if let Some(t) = &ticket
        && limit
        && let Some(secs) = rate_limited(state, req, t)
    {
        return Err(WebError::TooManyRequests(secs));
    }
    Ok(ticket)
}

/// An expired or foreign step: start again at the sign-in page.
fn expired() -> HttpResponse {
    super::message_page(StatusCode::BAD_REQUEST, "mfa_expired_message")
}

/// MFA attempts per IP and per account.
fn rate_limited(state: &AppState, req: &HttpRequest, ticket: &MfaTicket) -> Option<u64> {
    let ip = client_ip(req, state);
    for (scope, key) in [
        (Scope::MfaPerIp, ip.as_str()),
        (Scope::MfaPerAccount, ticket.user_id.as_str()),
    ] {
        if let Err(l) = state.limiter.check(scope, key) {
            state.provider.audit.record(
                Event::new(EventKind::RateLimited)
                    .ip(ip.as_str())
                    .user(ticket.user_id.as_str())
                    .reason(scope.as_str()),
            );
            return Some(l.retry_after_secs);
        }
    }
    None
}

#[derive(Debug, Deserialize)]
pub struct ChooseForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    factor: String,
    /// `challenge` (default) or `enroll`.
    #[serde(default)]
    action: String,
}

/// `POST /login/mfa/choose`: start the chosen factor's challenge or enrolment.
pub async fn choose(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<ChooseForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let Some(ticket) = posted(&state, &req, &form.csrf_token, &form.ticket, true)? else {
        return Ok(expired());
    };
    if form.factor.is_empty() {
        // "Other options": back to the choice (other factors, recovery codes).
        return back_to_choice(&state, &req, &ticket, StatusCode::OK, None).await;
    }
    let enroll = form.action == "enroll";
    start(&state, &req, ticket, &form.factor, enroll).await
}

/// `POST /login/mfa/answer`: the answer to a challenge or an enrolment page.
pub async fn answer(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let pairs = form.into_inner();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let Some(ticket) = posted(&state, &req, &get("csrf_token"), &get("ticket"), true)? else {
        return Ok(expired());
    };
    let (Some(factor), Some(plugin_form)) = (ticket.factor.clone(), ticket.form.clone()) else {
        return Ok(expired());
    };
    // Only the fields the plugin asked for, each cut to its length.
    let answer: Vec<(String, String)> = plugin_form
        .fields
        .iter()
        .map(|f| {
            let v = get(&f.name);
            let max = usize::try_from(f.max_length).unwrap_or(256);
            (f.name.clone(), v.trim().chars().take(max).collect())
        })
        .collect();
    let locale = request_info(&req, &state).locale;
    let s = Arc::clone(&state);
    let uid = UserId::from_stored(ticket.user_id.clone());
    let (f2, enrolling) = (factor.clone(), ticket.enrolling);
    let result = web::block(move || -> Result<_, WebError> {
        let user = factor_user(&s, &uid, locale)?;
        let step = if enrolling {
            Step::Enroll(s.mfa.enroll_finish(&f2, &user, answer))
        } else {
            Step::Verify(s.mfa.verify(&f2, &user, answer))
        };
        Ok((user, step))
    })
    .await??;
    let (user, step) = result;
    match step {
        Step::Verify(Ok(VerifyOutcome::Accepted { amr })) => {
            audit(
                &state,
                &req,
                &ticket,
                EventKind::MfaSucceeded,
                &factor,
                None,
            );
            complete(&state, &req, ticket, &amr).await
        }
        Step::Verify(Ok(VerifyOutcome::Rejected { message })) => {
            audit(
                &state,
                &req,
                &ticket,
                EventKind::MfaFailed,
                &factor,
                Some("rejected"),
            );
            let text = message
                .map(|m| localized(&m, locale))
                .unwrap_or_else(|| state.pages.text(locale, "mfa_wrong_code"));
            form_page(&state, &req, StatusCode::UNAUTHORIZED, &ticket, Some(text))
        }
        Step::Verify(Ok(VerifyOutcome::Locked(l))) => {
            step_failed(
                &state,
                &req,
                &ticket,
                &factor,
                MfaStepError::Locked(l.retry_after_secs),
            )
            .await
        }
        Step::Verify(Err(e)) => {
            step_failed(&state, &req, &ticket, &factor, MfaStepError::Plugin(e)).await
        }
        Step::Enroll(Ok((outcome, outbox))) => {
            if !outbox.is_empty()
                && let Err(e) = state.mfa.delivery.send_all(&user.email, outbox).await
            {
                return step_failed(
                    &state,
                    &req,
                    &ticket,
                    &factor,
                    MfaStepError::Plugin(e.into()),
                )
                .await;
            }
            enrolled(&state, &req, ticket, &factor, outcome).await
        }
        Step::Enroll(Err(e)) => {
            step_failed(&state, &req, &ticket, &factor, MfaStepError::Plugin(e)).await
        }
    }
}

enum Step {
    Verify(Result<VerifyOutcome, MfaError>),
    Enroll(Result<(EnrollOutcome, Vec<crate::mfa::host::Outgoing>), MfaError>),
}

#[derive(Serialize)]
struct RecoveryPage {
    csrf_token: String,
    ticket: String,
    codes: Vec<String>,
}

/// An enrolment step's outcome: the next page, the same page with a message, or done (the
/// factor is proven; a first factor shows its recovery codes once).
async fn enrolled(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    mut ticket: MfaTicket,
    factor: &str,
    outcome: EnrollOutcome,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    match outcome {
        EnrollOutcome::Next(form) => {
            ticket.form = Some(form);
            form_page(state, req, StatusCode::OK, &ticket, None)
        }
        EnrollOutcome::Retry(msg) => {
            audit(
                state,
                req,
                &ticket,
                EventKind::MfaFailed,
                factor,
                Some("enrolment_rejected"),
            );
            form_page(
                state,
                req,
                StatusCode::UNAUTHORIZED,
                &ticket,
                Some(localized(&msg, locale)),
            )
        }
        EnrollOutcome::Done {
            amr,
            recovery_codes,
        } => {
            audit(state, req, &ticket, EventKind::MfaEnrolled, factor, None);
            if recovery_codes.is_empty() {
                return complete(state, req, ticket, &amr).await;
            }
            ticket.proven = Some(amr);
            ticket.form = None;
            ticket.exp = state.clock.now().saturating_add(300);
            with_ticket(
                state,
                req,
                StatusCode::OK,
                "mfa_recovery_codes",
                &ticket,
                |c, t| RecoveryPage {
                    csrf_token: c,
                    ticket: t,
                    codes: recovery_codes,
                },
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TicketForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    code: String,
}

/// `POST /login/mfa/continue`: after the recovery codes were shown.
pub async fn continue_after_codes(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<TicketForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let Some(mut ticket) = posted(&state, &req, &form.csrf_token, &form.ticket, false)? else {
        return Ok(expired());
    };
    let Some(amr) = ticket.proven.take() else {
        return Ok(expired());
    };
    complete(&state, &req, ticket, &amr).await
}

/// `POST /login/mfa/recovery`: a recovery code instead of a factor.
pub async fn recovery(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<TicketForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let Some(ticket) = posted(&state, &req, &form.csrf_token, &form.ticket, true)? else {
        return Ok(expired());
    };
    let locale = request_info(&req, &state).locale;
    let s = Arc::clone(&state);
    let uid = UserId::from_stored(ticket.user_id.clone());
    let code: String = form.code.chars().take(32).collect();
    let outcome = web::block(move || -> Result<_, WebError> {
        let user = factor_user(&s, &uid, locale)?;
        s.mfa.verify_recovery(&user, &code).map_err(mfa_internal)
    })
    .await??;
    let id = crate::mfa::RECOVERY_ID;
    match outcome {
        VerifyOutcome::Accepted { amr } => {
            audit(&state, &req, &ticket, EventKind::MfaSucceeded, id, None);
            complete(&state, &req, ticket, &amr).await
        }
        VerifyOutcome::Rejected { .. } => {
            audit(
                &state,
                &req,
                &ticket,
                EventKind::MfaFailed,
                id,
                Some("rejected"),
            );
            back_to_choice(
                &state,
                &req,
                &ticket,
                StatusCode::UNAUTHORIZED,
                Some("mfa_wrong_recovery"),
            )
            .await
        }
        VerifyOutcome::Locked(l) => {
            step_failed(
                &state,
                &req,
                &ticket,
                id,
                MfaStepError::Locked(l.retry_after_secs),
            )
            .await
        }
    }
}

/// The second factor is proven: a new session with both factors' methods, or (step-up) the
/// existing session raised to them.
async fn complete(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    ticket: MfaTicket,
    extra_amr: &[String],
) -> Result<HttpResponse, WebError> {
    let amr = policy::merge_amr(&ticket.amr, extra_amr);
    let rt = ticket.rt();
    if let Some(sid) = ticket.step_up.clone() {
        // Only the session this browser holds, of this user, is raised.
        let current = current_session(state, req).await?;
        let Some(current) =
            current.filter(|c| c.record.sid == sid && c.record.user_id.as_str() == ticket.user_id)
        else {
            return Ok(expired());
        };
        let store = Arc::clone(&state.store);
        let amr2 = policy::merge_amr(&current.record.amr, &amr);
        web::block(move || store.set_session_amr(&sid, &amr2)).await??;
        return Ok(see_other(
            rt.as_ref().map(ReturnTo::as_str).unwrap_or("/account"),
        ));
    }
    let who = Authenticated {
        user_id: UserId::from_stored(ticket.user_id),
        upstream: ticket.upstream,
        amr,
        acr: ticket.acr,
    };
    finish_sign_in(state, req, rt.as_ref(), who).await
}

#[derive(Debug, Deserialize)]
pub struct StepUpQuery {
    #[serde(default)]
    return_to: Option<String>,
}

/// `GET /login/mfa/step-up?return_to=`: raise this browser's session to a second factor (an
/// app asked for it with `acr_values`, or its client requires MFA).
pub async fn step_up(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<StepUpQuery>,
) -> Result<HttpResponse, WebError> {
    let rt = return_to(q.return_to.as_deref());
    let Some(session) = current_session(&state, &req).await? else {
        let mut login = url::form_urlencoded::Serializer::new(String::new());
        if let Some(rt) = &rt {
            login.append_pair("return_to", rt.as_str());
        }
        return Ok(see_other(&format!("/login?{}", login.finish())));
    };
    let r = session.record;
    let who = Authenticated {
        user_id: r.user_id.clone(),
        upstream: r.upstream.clone(),
        amr: r.amr.clone(),
        acr: r.upstream_acr.clone(),
    };
    let s = Arc::clone(&state);
    let rt_s = rt
        .as_ref()
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default();
    let locale = request_info(&req, &state).locale;
    let sid = r.sid.clone();
    let decision = web::block(move || decide(&s, &rt_s, &who, Some(sid), locale)).await??;
    match decision {
        Decision::Proceed(amr) => {
            // Trusted upstream MFA: the session already qualifies.
            let store = Arc::clone(&state.store);
            let sid = r.sid.clone();
            web::block(move || store.set_session_amr(&sid, &amr)).await??;
            Ok(see_other(
                rt.as_ref().map(ReturnTo::as_str).unwrap_or("/account"),
            ))
        }
        Decision::Ask {
            ticket,
            factors,
            recovery_left,
        } => choose_or_start(&state, &req, *ticket, factors, recovery_left).await,
        Decision::NoFactor => Ok(no_factor()),
    }
}

/// Whether an app's authorization on this session needs a step-up first: its client requires
/// MFA or its `acr_values` ask for more than the session has. Blocking (client lookup).
pub(crate) fn needs_step_up(
    default: MfaRequirement,
    client_mfa: Option<MfaRequirement>,
    acr_values: Option<&str>,
    session_amr: &[String],
) -> bool {
    let level = crate::domain::auth::session_level(session_amr);
    if level >= 2 {
        return false;
    }
    client_mfa.unwrap_or(default) == MfaRequirement::Required
        || policy::acr_values_need_more(acr_values, level)
}
