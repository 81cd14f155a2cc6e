//! Owns turning a sign-in journey's [`Outcome`] into the HTTP answer: the step's page in the
//! browser's language (with a CSRF token, the journey id and a `form-action` computed from the
//! journey's next hops), a redirect, or the authorization response to the app; and the cookies.
//! Every journey handler ends here, so no handler renders another's pages.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::form_targets::form_targets;
use super::{AppState, DeviceView, message_page, render, request_info, see_other};
use crate::domain::{Locale, SecretString};
use crate::error::WebError;
use crate::flow::contract::{AppAnswer, Browser, CookieOp, Next, Notice, Outcome, View};
use crate::flow::signin::SignInError;
use crate::mfa::FactorStatus;
use crate::mfa::host::{FieldKind, Localized};

/// What the journey may know about the browser behind `req`.
pub(crate) fn browser(state: &AppState, req: &HttpRequest) -> Browser {
    Browser {
        binding: req
            .cookie(&state.cookies.binding)
            .map(|c| SecretString::new(c.value().to_owned())),
        session: req
            .cookie(&state.cookies.session)
            .map(|c| SecretString::new(c.value().to_owned())),
        ip: super::client_ip(req, state),
        user_agent: super::user_agent(req),
        locale: request_info(req, state).locale,
        posted: false,
    }
}

/// The browser of a POST whose CSRF token the handler has just verified: a request the user
/// made on one of the broker's own pages, so the journey may send a code or a push for it.
pub(crate) fn posted_browser(state: &AppState, req: &HttpRequest) -> Browser {
    Browser {
        posted: true,
        ..browser(state, req)
    }
}

impl From<SignInError> for WebError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Storage(s)
            | SignInError::Journey(crate::flow::journey::JourneyError::Storage(s)) => s.into(),
            SignInError::Unavailable => WebError::Unavailable("database".into()),
            SignInError::RateLimited(secs) => WebError::TooManyRequests(secs),
            other => WebError::internal(other),
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The HTTP answer for a journey's outcome.
pub(crate) async fn respond(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    out: Outcome,
) -> Result<HttpResponse, WebError> {
    let mut res = match out.next {
        Next::Page {
            status: code,
            journey,
            view,
        } => {
            let journey = journey
                .as_ref()
                .map(|j| j.as_cookie_value().to_owned())
                .unwrap_or_default();
            let mut res = page(state, req, status(code), &journey, view)?;
            form_targets(state, &out.hops).await?.apply(&mut res);
            res
        }
        Next::Message { status: code, key } => message_page(status(code), key),
        Next::Redirect(to) => see_other(&to),
        Next::Found(to) => HttpResponse::Found()
            .insert_header((header::LOCATION, to))
            .finish(),
        Next::App(answer) => app_answer(state, req, answer)?,
    };
    for c in out.cookies {
        let cookie = match c {
            CookieOp::Session(token) => state.cookies.build(
                state.cookies.session.clone(),
                token.as_cookie_value().to_owned(),
            ),
            CookieOp::ClearSession => state.cookies.removal(state.cookies.session.clone()),
            CookieOp::Binding(value) => state
                .cookies
                .build_cross_site(state.cookies.binding.clone(), value),
        };
        res.add_cookie(&cookie).map_err(WebError::internal)?;
    }
    if let Some(secs) = out.retry_after
        && let Ok(v) = header::HeaderValue::from_str(&secs.to_string())
    {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Ok(res)
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

/// The authorization response (query string, or an auto-submitted form whose only target is
/// the app's redirect URI).
pub(crate) fn app_answer(
    state: &AppState,
    req: &HttpRequest,
    a: AppAnswer,
) -> Result<HttpResponse, WebError> {
    if !a.form_post {
        let params: Vec<(&str, &str)> = a
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let target = crate::provider::authorize::with_params(a.redirect_uri, &params);
        // After a form post, 303 so that the browser follows with GET (RFC 9700 4.12).
        let mut res = if req.method() == actix_web::http::Method::POST {
            HttpResponse::SeeOther()
        } else {
            HttpResponse::Found()
        };
        return Ok(res
            .insert_header((header::LOCATION, target.as_str()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish());
    }
    let vm = FormPostPage {
        action: a.redirect_uri.to_string(),
        fields: a
            .params
            .iter()
            .map(|(k, v)| FormField {
                name: k.clone(),
                value: v.clone(),
            })
            .collect(),
    };
    let mut res = render(state, req, StatusCode::OK, "form_post", false, &vm)?;
    let target = super::origin_source(&a.redirect_uri).unwrap_or_else(|| "'none'".into());
    super::set_csp(&mut res, &[&target], true);
    Ok(res)
}

fn localized(l: &Localized, locale: Locale) -> String {
    match locale {
        Locale::Ko if !l.ko.is_empty() => l.ko.clone(),
        _ => l.en.clone(),
    }
}

fn notice(state: &AppState, n: Option<Notice>, locale: Locale) -> Option<String> {
    n.map(|n| match n {
        Notice::Key(k) => state.pages.text(locale, k),
        Notice::Plugin(l) => localized(&l, locale),
    })
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
    journey: String,
    email: String,
    error: Option<String>,
    upstreams: Vec<UpstreamButton>,
    email_first: bool,
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
    journey: String,
    factors: Vec<FactorButton>,
    unavailable: Vec<FactorButton>,
    enroll: Vec<FactorButton>,
    recovery: bool,
    error: Option<String>,
    step_up: bool,
    manage: bool,
    removable: Vec<FactorButton>,
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
    journey: String,
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

#[derive(Serialize)]
struct RecoveryPage {
    csrf_token: String,
    journey: String,
    codes: Vec<String>,
}

#[derive(Serialize)]
struct ContinueAsPage {
    csrf_token: String,
    journey: String,
    email: String,
    unsolicited: bool,
}

#[derive(Serialize)]
struct LogoutConfirmPage {
    csrf_token: String,
    client_name: String,
    fields: Vec<FormField>,
}

#[derive(Serialize)]
struct SessionLimitPage {
    csrf_token: String,
    journey: String,
    sessions: Vec<DeviceView>,
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

fn qr_svg(data: &str) -> Option<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// Renders a step's page with a CSRF token for this browser.
fn page(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    journey: &str,
    view: View,
) -> Result<HttpResponse, WebError> {
    let locale = request_info(req, state).locale;
    let csrf = state
        .csrf
        .issue(req, &state.cookies, state.entropy.as_ref())?;
    let token = csrf.token.clone();
    let journey = journey.to_owned();
    let mut res = match view {
        View::Login {
            email,
            error,
            linking: _,
        } => {
            let vm = LoginPage {
                csrf_token: token,
                email,
                error: error.map(|k| state.pages.text(locale, k)),
                upstreams: state
                    .upstreams
                    .buttons()
                    .map(|u| UpstreamButton {
                        id: u.id.clone(),
                        name: u.display_name.clone(),
                        url: if journey.is_empty() {
                            format!("/upstream/{}/start", u.id)
                        } else {
                            format!("/upstream/{}/start?journey={journey}", u.id)
                        },
                    })
                    .collect(),
                email_first: state.signin.email_first(),
                journey,
            };
            render(state, req, status, "login", false, &vm)?
        }
        View::MfaChoose {
            factors,
            may_enroll,
            recovery,
            error,
            step_up,
            manage,
        } => {
            let button = |f: &FactorStatus| FactorButton {
                id: f.id.clone(),
                name: localized(&f.name, locale),
                kind: kind_name(f.kind),
            };
            let vm = ChoosePage {
                csrf_token: token,
                journey,
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
                    .filter(|f| may_enroll && f.available && !f.enrolled && f.needs_enrollment)
                    .map(button)
                    .collect(),
                recovery,
                error: notice(state, error, locale),
                step_up,
                manage,
                removable: factors
                    .iter()
                    .filter(|f| manage && may_enroll && f.enrolled && f.needs_enrollment)
                    .map(button)
                    .collect(),
            };
            render(state, req, status, "mfa_choose", false, &vm)?
        }
        View::MfaForm {
            factor,
            form,
            enrolling,
            error,
        } => {
            let factor_name = match state.mfa.registry().get(&factor) {
                Some(crate::mfa::registry::Slot::Ready(l)) => {
                    localized(&l.description.name, locale)
                }
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
            let vm = FormPage {
                csrf_token: token,
                journey,
                factor,
                factor_name,
                intro: localized(&form.intro, locale),
                fields,
                qr_svg: form.qr.as_deref().and_then(qr_svg),
                secret: form.secret.clone(),
                error: notice(state, error, locale),
                enrolling,
            };
            render(state, req, status, "mfa_form", false, &vm)?
        }
        View::RecoveryCodes { codes } => {
            let vm = RecoveryPage {
                csrf_token: token,
                journey,
                codes,
            };
            render(state, req, status, "mfa_recovery_codes", false, &vm)?
        }
        View::SessionLimit { sessions } => {
            let vm = SessionLimitPage {
                csrf_token: token,
                journey,
                sessions: sessions
                    .iter()
                    .map(|s| DeviceView::of(state, locale, s, false, s.last_seen))
                    .collect(),
            };
            render(state, req, status, "session_limit", false, &vm)?
        }
        View::LogoutConfirm {
            client_name,
            fields,
        } => {
            let vm = LogoutConfirmPage {
                csrf_token: token,
                client_name,
                fields: fields
                    .into_iter()
                    .map(|(name, value)| FormField { name, value })
                    .collect(),
            };
            render(state, req, status, "logout_confirm", true, &vm)?
        }
        View::ContinueAs {
            email, unsolicited, ..
        } => {
            let vm = ContinueAsPage {
                csrf_token: token,
                journey,
                email,
                unsolicited,
            };
            render(state, req, status, "continue_as", false, &vm)?
        }
    };
    if let Some(c) = csrf.new_cookie {
        res.add_cookie(&c).map_err(WebError::internal)?;
    }
    Ok(res)
}
