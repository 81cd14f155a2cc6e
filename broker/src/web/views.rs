//! Owns the sign-in journey's step pages: one `Serialize` view-model per page (login, factor
//! choice, factor form, recovery codes, session limit, logout confirmation, continue as), and how
//! a step's [`View`] becomes its page, in the browser's language, with a CSRF token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use super::{AppState, DeviceView, render, request_info};
use crate::domain::Locale;
use crate::error::WebError;
use crate::flow::contract::{Notice, View};
use crate::mfa::FactorStatus;
use crate::mfa::host::{FieldKind, Localized};

/// A hidden field of an auto-submitted form.
#[derive(Serialize)]
pub(super) struct FormField {
    pub(super) name: String,
    pub(super) value: String,
}

fn localized(l: &Localized, locale: Locale) -> String {
    match locale {
        Locale::Ko if !l.ko.is_empty() => l.ko.clone(),
        _ => l.en.clone(),
    }
}

/// A plugin factor's name in `locale` (its id when it is not loaded).
fn factor_name(state: &AppState, factor: &str, locale: Locale) -> String {
    match state.mfa.registry().get(factor) {
        Some(crate::mfa::registry::Slot::Ready(l)) => localized(&l.description.name, locale),
        _ => factor.to_owned(),
    }
}

fn notice(state: &AppState, n: Option<Notice>, locale: Locale) -> Option<String> {
    n.map(|n| match n {
        Notice::Key(k) | Notice::Done(k) => state.pages.text(locale, k),
        Notice::Plugin(l) => localized(&l, locale),
    })
}

/// A notice split into what went wrong (`error`) and what worked (`done`).
fn error_or_done(
    state: &AppState,
    n: Option<Notice>,
    locale: Locale,
) -> (Option<String>, Option<String>) {
    match n {
        Some(Notice::Done(k)) => (None, Some(state.pages.text(locale, k))),
        other => (notice(state, other, locale), None),
    }
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
    /// The passkey challenge's options (JSON) for `static/passkey_login.js`, when passkeys sign
    /// in without a password.
    passkey_options: Option<String>,
}

/// A native factor's page: its own `data` under the journey's fields.
#[derive(Serialize)]
struct NativePage {
    csrf_token: String,
    journey: String,
    factor: String,
    enrolling: bool,
    error: Option<String>,
    data: serde_json::Value,
}

#[derive(Serialize)]
struct FactorButton {
    id: String,
    name: String,
    kind: &'static str,
    /// When it was set up and last used (shown while managing factors).
    added: Option<String>,
    last_used: Option<String>,
}

#[derive(Serialize)]
struct PasskeyButton {
    id: String,
    name: String,
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
    /// Only passkeys are offered (the app asks for the phishing-resistant level).
    phr_only: bool,
    /// The app asks for it and the user first passes a factor they have.
    phr_first: bool,
    removable: Vec<FactorButton>,
    /// The user's passkeys one by one, when there are several (each removed alone).
    removable_passkeys: Vec<PasskeyButton>,
    any_removable: bool,
    done: Option<String>,
    /// New recovery codes may be asked for (managing, a factor set up, proven just now).
    renew_codes: bool,
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
struct WaitPage {
    csrf_token: String,
    journey: String,
    factor: String,
    factor_name: String,
    intro: String,
    number: Option<String>,
    refresh: Option<u32>,
    approved: bool,
    error: Option<String>,
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
pub(super) fn page(
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
            passkey,
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
                passkey_options: passkey.filter(|_| !journey.is_empty()),
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
            phishing_resistant,
            passkeys,
        } => {
            let button = |f: &FactorStatus| FactorButton {
                id: f.id.clone(),
                name: localized(&f.name, locale),
                kind: kind_name(f.kind),
                added: f.added.filter(|_| manage).map(super::format_time),
                last_used: f.last_used.filter(|_| manage).map(super::format_time),
            };
            let (error, done) = error_or_done(state, error, locale);
            // Several passkeys: each is removed alone (one lost device), not all at once.
            let one_by_one = manage && may_enroll && passkeys.len() > 1;
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
                    .filter(|f| {
                        may_enroll
                            && f.available
                            && f.needs_enrollment
                            && (!f.enrolled || (manage && f.repeatable))
                    })
                    .map(button)
                    .collect(),
                recovery,
                error,
                done,
                step_up,
                manage,
                phr_only: phishing_resistant == Some(true),
                phr_first: phishing_resistant == Some(false),
                renew_codes: manage
                    && may_enroll
                    && factors
                        .iter()
                        .any(|f| f.enrolled && f.available && f.needs_enrollment),
                removable: factors
                    .iter()
                    .filter(|f| manage && may_enroll && f.enrolled && f.needs_enrollment)
                    .filter(|f| !(one_by_one && f.id == crate::mfa::passkey::ID))
                    .map(button)
                    .collect(),
                removable_passkeys: if one_by_one {
                    passkeys
                        .into_iter()
                        .map(|p| PasskeyButton {
                            id: p.id,
                            name: p.name,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                any_removable: manage
                    && may_enroll
                    && factors.iter().any(|f| f.enrolled && f.needs_enrollment),
            };
            render(state, req, status, "mfa_choose", false, &vm)?
        }
        View::MfaForm {
            factor,
            form,
            enrolling,
            error,
        } => {
            let factor_name = factor_name(state, &factor, locale);
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
        View::MfaWait {
            factor,
            intro,
            number,
            refresh,
            approved,
            error,
        } => {
            let vm = WaitPage {
                csrf_token: token,
                journey,
                factor_name: factor_name(state, &factor, locale),
                factor,
                intro: localized(&intro, locale),
                number,
                refresh,
                approved,
                error: notice(state, error, locale),
            };
            render(state, req, status, "mfa_wait", false, &vm)?
        }
        View::MfaNative {
            factor,
            page,
            data,
            enrolling,
            error,
        } => {
            let vm = NativePage {
                csrf_token: token,
                journey,
                factor,
                enrolling,
                error: notice(state, error, locale),
                data,
            };
            render(state, req, status, &page, false, &vm)?
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
