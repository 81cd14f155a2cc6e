//! Owns the SAML IdP's HTTP surface: its metadata, the single sign-on and single logout
//! endpoints of the HTTP-Redirect (GET) and HTTP-POST (POST) bindings, handed to the SAML start
//! and to SP-initiated logout, and the IdP-initiated sign-in (`/saml/idp/init`).

use std::collections::BTreeMap;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::form::well_formed;
use super::outcome::{browser, respond};
use crate::error::WebError;
use crate::flow::start::saml_idp_initiated::IdpInitiated;
use crate::flow::start::saml_sso::SamlBinding;

/// The largest HTTP-POST AuthnRequest form read.
pub const MAX_SAML_FORM: usize = 512 * 1024;

/// `GET /saml/idp/metadata`.
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/samlmetadata+xml")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "max-age=3600"))
        .body(state.signin.saml.metadata())
}

/// `GET /saml/idp/sso`: an AuthnRequest over HTTP-Redirect.
pub async fn sso_redirect(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let binding = SamlBinding::Redirect(req.query_string().to_owned());
    let out = state
        .signin
        .saml_sso(&browser(&state, &req), binding)
        .await?;
    respond(&state, &req, out).await
}

/// The `SAMLRequest` (or `SAMLResponse`) and `RelayState` of an HTTP-POST form, each at most
/// once (as in a query).
fn posted(body: &Bytes) -> Result<SamlBinding, WebError> {
    if !well_formed(body) {
        return Err(WebError::BadRequest);
    }
    let mut form = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(WebError::BadRequest);
        }
    }
    let relay_state = form.remove("RelayState");
    match (form.remove("SAMLRequest"), form.remove("SAMLResponse")) {
        (Some(saml_request), None) => Ok(SamlBinding::Post {
            saml_request,
            relay_state,
        }),
        (None, Some(saml_response)) => Ok(SamlBinding::PostAnswer {
            saml_response,
            relay_state,
        }),
        _ => Err(WebError::BadRequest),
    }
}

/// `GET /saml/idp/slo`: an SP's LogoutRequest over HTTP-Redirect.
pub async fn slo_redirect(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let binding = SamlBinding::Redirect(req.query_string().to_owned());
    let out = state
        .signin
        .saml_idp_slo(&browser(&state, &req), binding)
        .await?;
    respond(&state, &req, out).await
}

/// `POST /saml/idp/slo`: an SP's LogoutRequest, or its LogoutResponse, over HTTP-POST.
pub async fn slo_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let binding = posted(&body)?;
    let out = state
        .signin
        .saml_idp_slo(&browser(&state, &req), binding)
        .await?;
    respond(&state, &req, out).await
}

/// `POST /saml/idp/sso`: an AuthnRequest over HTTP-POST.
pub async fn sso_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, WebError> {
    let binding = posted(&body)?;
    let out = state
        .signin
        .saml_sso(&browser(&state, &req), binding)
        .await?;
    respond(&state, &req, out).await
}

/// The `sp`, `acs` and `RelayState` of `/saml/idp/init` (each at most once).
fn idp_initiated(query: &str) -> Result<IdpInitiated, WebError> {
    let mut q = IdpInitiated::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "sp" => &mut q.sp,
            "RelayState" => &mut q.relay_state,
            "acs" => &mut q.acs,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(WebError::BadRequest);
        }
    }
    Ok(q)
}

/// `GET /saml/idp/init?sp=…[&acs=…][&RelayState=…]`: a sign-in begun here for an SP that accepts
/// IdP-initiated ones.
pub async fn init(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, WebError> {
    let q = idp_initiated(req.query_string())?;
    let out = state
        .signin
        .saml_idp_initiated(&browser(&state, &req), q)
        .await?;
    respond(&state, &req, out).await
}
