//! Owns the sign-in, session-limit, sign-out and signed-out handlers of the hosted pages. Each
//! extracts the form, makes one call into the sign-in journey (`flow::signin`) and renders its
//! outcome.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::form::StrictForm;
use super::outcome::{browser, posted_browser, respond};
use super::{AppState, render};
use crate::domain::SecretString;
use crate::error::WebError;
use crate::flow::signin::LoginQuery;
use crate::flow::signin::retrying;

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    journey: Option<String>,
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    login_hint: Option<String>,
    /// Show the form even to a signed-in user.
    #[serde(default)]
    force: Option<String>,
    /// Skip the choice: sign in at this upstream.
    #[serde(default)]
    idp_hint: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    journey: String,
    /// Only for a form without a journey: where to go once signed in (a local path).
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnlyForm {
    #[serde(default)]
    csrf_token: String,
}

/// `GET /login`: the page of a journey, or a new one.
pub async fn show(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ShowQuery>,
) -> Result<HttpResponse, WebError> {
    let q = q.into_inner();
    let query = LoginQuery {
        journey: q.journey,
        return_to: q.return_to,
        login_hint: q.login_hint,
        idp_hint: q.idp_hint,
        force: q.force.is_some(),
    };
    let out = state.signin.show(&browser(&state, &req), query).await?;
    respond(&state, &req, out).await
}

/// `POST /login`: an email (routed to its upstream) or an email and password.
pub async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| {
        state.signin.password(
            &browser,
            &form.journey,
            form.return_to.as_deref(),
            &form.email,
            form.password.clone(),
        )
    })
    .await?;
    respond(&state, &req, out).await
}

#[derive(Debug, Deserialize)]
pub struct PasskeyForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    journey: String,
    #[serde(default)]
    credential: String,
}

/// `POST /login/passkey`: a passkey's answer to the sign-in page's challenge (no password).
pub async fn passkey(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<PasskeyForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| {
        state
            .signin
            .passkey(&browser, &form.journey, &form.credential)
    })
    .await?;
    respond(&state, &req, out).await
}

#[derive(Debug, Deserialize)]
pub struct EndOneForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    journey: String,
    #[serde(default)]
    sid: String,
}

/// `POST /login/session-limit`: ends the session the user picked, then the sign-in goes on.
pub async fn end_one_and_continue(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<EndOneForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| state.signin.end_one(&browser, &form.journey, &form.sid)).await?;
    respond(&state, &req, out).await
}

#[derive(Debug, Deserialize)]
pub struct JourneyForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    journey: String,
}

/// `POST /login/continue`: "continue as X" confirmed for an unsolicited sign-in.
pub async fn continue_as(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<JourneyForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let browser = posted_browser(&state, &req);
    let out = retrying(|| state.signin.continue_as(&browser, &form.journey)).await?;
    respond(&state, &req, out).await
}

/// `POST /logout`: ends the session, through the upstream's logout when it came from one.
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: StrictForm<CsrfOnlyForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    state.csrf.verify(&req, &state.cookies, &form.csrf_token)?;
    let out = state
        .signin
        .sign_out(
            &posted_browser(&state, &req),
            "logout",
            "/signed-out".into(),
        )
        .await?;
    respond(&state, &req, out).await
}

/// `GET /signed-out`; `partial=1`: some SAML SP may not have signed out (only what this page
/// says: the sign-out is over either way).
pub async fn signed_out(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let partial = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "partial" && v == "1");
    render(
        &state,
        &req,
        StatusCode::OK,
        "signed_out",
        false,
        &serde_json::json!({ "partial": partial }),
    )
}
