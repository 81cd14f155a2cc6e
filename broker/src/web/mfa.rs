//! Owns the second-factor handlers: choosing a factor, answering its challenge or enrolment,
//! a recovery code, going on after the recovery codes, and the step-up of an existing session.
//! The step's state is the server-side journey; the forms carry only its id.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::form::StrictForm;
use super::outcome::{browser, posted_browser, respond};
use crate::error::WebError;
use crate::flow::signin::retrying;

#[derive(Debug, Deserialize)]
pub struct ChooseForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    journey: String,
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
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| {
        state.signin.mfa_choose(
            &browser,
            &form.journey,
            &form.factor,
            form.action == "enroll",
        )
    })
    .await?;
    respond(&state, &req, out).await
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
    state
        .csrf
        .verify(&req, &state.cookies, &get("csrf_token"))?;
    let journey = get("journey");
    let browser = posted_browser(&state, &req);
    let out = retrying(|| state.signin.mfa_answer(&browser, &journey, pairs.clone())).await?;
    respond(&state, &req, out).await
}

#[derive(Debug, Deserialize)]
pub struct StepForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    journey: String,
    #[serde(default)]
    code: String,
}

/// `POST /login/mfa/continue`: after the recovery codes were shown.
pub async fn continue_after_codes(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<StepForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| state.signin.mfa_continue(&browser, &form.journey)).await?;
    respond(&state, &req, out).await
}

/// `POST /login/mfa/recovery`: a recovery code instead of a factor.
pub async fn recovery(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<StepForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| {
        state
            .signin
            .mfa_recovery(&browser, &form.journey, &form.code)
    })
    .await?;
    respond(&state, &req, out).await
}

#[derive(Debug, Deserialize)]
pub struct StepUpQuery {
    #[serde(default)]
    return_to: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    journey: String,
}

/// `GET /login/mfa/wait?journey=`: a waiting factor's page, after one poll.
pub async fn wait(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<WaitQuery>,
) -> Result<HttpResponse, WebError> {
    let browser = browser(&state, &req);
    let out = retrying(|| state.signin.mfa_wait(&browser, &q.journey)).await?;
    respond(&state, &req, out).await
}

/// `GET /login/mfa/step-up?return_to=`: raise this browser's session to a second factor.
pub async fn step_up(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<StepUpQuery>,
) -> Result<HttpResponse, WebError> {
    let out = state
        .signin
        .step_up(&browser(&state, &req), q.return_to.as_deref())
        .await?;
    respond(&state, &req, out).await
}

#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    journey: String,
    #[serde(default)]
    factor: String,
    /// One passkey of several (its id), instead of the whole factor.
    #[serde(default)]
    credential: String,
}

/// `POST /login/mfa/remove`: remove a factor (a journey that manages factors).
pub async fn remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<RemoveForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| {
        state
            .signin
            .mfa_remove(&browser, &form.journey, &form.factor, &form.credential)
    })
    .await?;
    respond(&state, &req, out).await
}

/// `POST /login/mfa/recovery-codes`: new recovery codes (a journey that manages factors).
pub async fn renew_codes(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<StepForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| state.signin.mfa_renew_codes(&browser, &form.journey)).await?;
    respond(&state, &req, out).await
}

/// `GET /account/factors`: manage second factors (list, prove one again, add, remove).
pub async fn manage(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let out = state.signin.manage_factors(&browser(&state, &req)).await?;
    respond(&state, &req, out).await
}
