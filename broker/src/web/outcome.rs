//! Owns turning a sign-in journey's [`Outcome`] into the HTTP answer: the step's page in the
//! browser's language (with a CSRF token, the journey id and a `form-action` computed from the
//! journey's next hops), a redirect, or the authorization response to the app; and the cookies.
//! Every journey handler ends here, so no handler renders another's pages. The step pages
//! themselves (their view-models) are in `views.rs`.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::form_targets::form_targets;
use super::views::{FormField, page};
use super::{AppState, message_page, render, request_info, see_other};
use crate::domain::SecretString;
use crate::error::WebError;
use crate::flow::contract::{AppAnswer, Browser, CookieOp, Next, Outcome, View};
use crate::flow::signin::SignInError;

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
            let scripts = matches!(
                view,
                View::MfaNative { .. }
                    | View::MfaWait { .. }
                    | View::Login {
                        passkey: Some(_),
                        ..
                    }
            );
            let mut res = page(state, req, status(code), &journey, view)?;
            form_targets(state, &out.hops)
                .await?
                .apply(&mut res, scripts);
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
