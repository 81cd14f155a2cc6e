//! Owns the authorization request: raw query parameters become an [`AuthorizeRequest`], or an
//! error that is either shown as a page (client or redirect URI cannot be trusted, RFC 6749
//! 4.1.2.1) or sent back to the client's redirect URI.

use std::collections::BTreeMap;
use std::sync::Arc;

use url::Url;

use super::OAuthError;
use super::clients::ClientRegistry;
use crate::clock::UnixTime;
use crate::domain::client::{Client, Grant};
use crate::storage::StorageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    FormPost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Default,
    None,
    Login,
}

/// A parsed, authorized-to-ask request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub client: Arc<Client>,
    pub redirect_uri: Url,
    /// Whether the request named it (else it is the client's only registered one).
    pub redirect_uri_given: bool,
    /// The redirect URI as the request wrote it (the token request must repeat it exactly).
    pub redirect_uri_presented: String,
    pub response_mode: ResponseMode,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub scope: Vec<String>,
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    pub acr_values: Option<String>,
    /// The upstream the app asks the user to sign in at (`idp_hint`, a broker extension).
    pub idp_hint: Option<String>,
    /// The app's preferred languages, carried to the sign-in pages.
    pub ui_locales: Option<String>,
}

/// What of an authorization request a sign-in journey keeps to answer it at the end (issue
/// #13: parsed once, at `/authorize`). The client is looked up again by id when the code is
/// issued: a client removed meanwhile gets no code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRequest {
    pub client_id: String,
    /// The redirect URI the request resolved to (where the answer goes; its origin is where the
    /// sign-in pages' forms may lead).
    pub redirect_uri: String,
    /// The redirect URI as the request wrote it; empty when it named none (the client's only one).
    pub redirect_uri_presented: String,
    pub form_post: bool,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub scope: Vec<String>,
    pub code_challenge: Option<String>,
    pub acr_values: Option<String>,
}

impl AuthorizeRequest {
    /// What a journey stores of this request.
    pub fn stored(&self) -> StoredRequest {
        StoredRequest {
            client_id: self.client.id.clone(),
            redirect_uri: self.redirect_uri.to_string(),
            redirect_uri_presented: if self.redirect_uri_given {
                self.redirect_uri_presented.clone()
            } else {
                String::new()
            },
            form_post: self.response_mode == ResponseMode::FormPost,
            state: self.state.clone(),
            nonce: self.nonce.clone(),
            scope: self.scope.clone(),
            code_challenge: self.code_challenge.clone(),
            acr_values: self.acr_values.clone(),
        }
    }
}

impl StoredRequest {
    /// The request again, with its client as registered now (`None`: the client or its redirect
    /// URI is gone). Blocking for clients stored in the database.
    pub fn resume(
        &self,
        clients: &ClientRegistry,
    ) -> Result<Option<AuthorizeRequest>, StorageError> {
        let Some(client) = clients.get(&self.client_id)? else {
            return Ok(None);
        };
        let given = !self.redirect_uri_presented.is_empty();
        let redirect_uri = if given {
            client.redirect_uri(&self.redirect_uri_presented)
        } else if client.redirect_uris.len() == 1 {
            client.redirect_uris.first().cloned()
        } else {
            None
        };
        let Some(redirect_uri) = redirect_uri else {
            return Ok(None);
        };
        Ok(Some(AuthorizeRequest {
            client,
            redirect_uri,
            redirect_uri_given: given,
            redirect_uri_presented: self.redirect_uri_presented.clone(),
            response_mode: if self.form_post {
                ResponseMode::FormPost
            } else {
                ResponseMode::Query
            },
            state: self.state.clone(),
            nonce: self.nonce.clone(),
            scope: self.scope.clone(),
            code_challenge: self.code_challenge.clone(),
            prompt: Prompt::Default,
            max_age: None,
            login_hint: None,
            acr_values: self.acr_values.clone(),
            idp_hint: None,
            ui_locales: None,
        }))
    }
}

/// An error to send back to the client.
#[derive(Debug)]
pub struct RedirectError {
    pub redirect_uri: Url,
    pub response_mode: ResponseMode,
    pub state: Option<String>,
    pub error: OAuthError,
}

/// Why a request was refused.
#[derive(Debug)]
pub enum AuthorizeError {
    /// Shown to the user: there is no trustworthy place to send the error.
    Page(&'static str),
    /// Sent to the client's redirect URI.
    Redirect(Box<RedirectError>),
    Storage(StorageError),
}

fn single<'a>(q: &'a BTreeMap<String, Vec<String>>, k: &str) -> Result<Option<&'a str>, ()> {
    match q.get(k).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([v]) if v.is_empty() => Ok(None),
        Some([v]) => Ok(Some(v.as_str())),
        Some(_) => Err(()),
    }
}

/// Parses an authorization request. `q` holds every value of every parameter (repeats refused).
pub fn parse(
    q: &BTreeMap<String, Vec<String>>,
    clients: &ClientRegistry,
) -> Result<AuthorizeRequest, AuthorizeError> {
    let page = AuthorizeError::Page;
    let client_id = single(q, "client_id")
        .map_err(|_| page("error_authorize_client"))?
        .ok_or(page("error_authorize_client"))?;
    let client = clients
        .get(client_id)
        .map_err(AuthorizeError::Storage)?
        .ok_or(page("error_authorize_client"))?;
    let presented = single(q, "redirect_uri").map_err(|_| page("error_authorize_redirect"))?;
    let redirect_uri = match presented {
        Some(r) => client
            .redirect_uri(r)
            .ok_or(page("error_authorize_redirect"))?,
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return Err(page("error_authorize_redirect")),
    };
    let redirect_uri_presented = presented.unwrap_or_default().to_owned();
    // From here on the redirect URI is trusted: errors go back to the client.
    let state = single(q, "state").ok().flatten().map(str::to_owned);
    let response_mode = match single(q, "response_mode") {
        Ok(None) | Ok(Some("query")) => ResponseMode::Query,
        Ok(Some("form_post")) => ResponseMode::FormPost,
        _ => ResponseMode::Query,
    };
    let fail = |error: OAuthError| {
        AuthorizeError::Redirect(Box::new(RedirectError {
            redirect_uri: redirect_uri.clone(),
            response_mode,
            state: state.clone(),
            error,
        }))
    };
    for k in q.keys() {
        if single(q, k).is_err() {
            return Err(fail(OAuthError::InvalidRequest(format!(
                "`{k}` given more than once"
            ))));
        }
    }
    let get = |k: &str| single(q, k).ok().flatten();
    if !matches!(
        get("response_mode"),
        None | Some("query") | Some("form_post")
    ) {
        return Err(fail(OAuthError::InvalidRequest(
            "response_mode must be query or form_post".into(),
        )));
    }
    match get("response_type") {
        Some("code") => {}
        None => {
            return Err(fail(OAuthError::InvalidRequest(
                "response_type is required".into(),
            )));
        }
        Some(_) => return Err(fail(OAuthError::UnsupportedResponseType)),
    }
    if !client.allows(Grant::AuthorizationCode) {
        return Err(fail(OAuthError::UnauthorizedClient(
            "this client may not use the code flow".into(),
        )));
    }
    // OIDC Core 6.1 / 6.2: request objects are not supported, each with its own error code.
    if get("request").is_some() {
        return Err(fail(OAuthError::RequestNotSupported));
    }
    if get("request_uri").is_some() {
        return Err(fail(OAuthError::RequestUriNotSupported));
    }
    let scope: Vec<String> = get("scope")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if let Some(bad) = scope.iter().find(|s| !client.scopes.contains(s)) {
        return Err(fail(OAuthError::InvalidScope(format!(
            "`{bad}` is not allowed for this client"
        ))));
    }
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(c), Some("S256")) => {
            let ok = c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(fail(OAuthError::InvalidRequest(
                    "code_challenge must be a base64url SHA-256".into(),
                )));
            }
            Some(c.to_owned())
        }
        (Some(_), None) | (Some(_), Some("plain")) => {
            return Err(fail(OAuthError::InvalidRequest(
                "code_challenge_method must be S256".into(),
            )));
        }
        (Some(_), Some(_)) => {
            return Err(fail(OAuthError::InvalidRequest(
                "code_challenge_method must be S256".into(),
            )));
        }
        (None, Some(_)) => {
            return Err(fail(OAuthError::InvalidRequest(
                "code_challenge is missing".into(),
            )));
        }
        (None, None) => None,
    };
    if client.is_public() && code_challenge.is_none() {
        return Err(fail(OAuthError::InvalidRequest(
            "PKCE (S256) is required for public clients".into(),
        )));
    }
    let prompts: Vec<&str> = get("prompt").unwrap_or("").split_whitespace().collect();
    let prompt = if prompts.contains(&"none") {
        if prompts.len() > 1 {
            return Err(fail(OAuthError::InvalidRequest(
                "prompt=none cannot be combined".into(),
            )));
        }
        Prompt::None
    } else if prompts.contains(&"login") {
        Prompt::Login
    } else {
        Prompt::Default
    };
    let max_age = match get("max_age") {
        None => None,
        Some(m) => Some(m.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
            fail(OAuthError::InvalidRequest(
                "max_age must be a non-negative integer".into(),
            ))
        })?),
    };
    let nonce = get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.len() > 512)
        || state.as_ref().is_some_and(|s| s.len() > 2048)
    {
        return Err(fail(OAuthError::InvalidRequest(
            "nonce or state too long".into(),
        )));
    }
    Ok(AuthorizeRequest {
        client,
        redirect_uri_given: q.contains_key("redirect_uri"),
        redirect_uri_presented,
        redirect_uri,
        response_mode,
        state,
        nonce,
        scope,
        code_challenge,
        prompt,
        max_age,
        login_hint: get("login_hint").map(str::to_owned),
        acr_values: get("acr_values").map(str::to_owned),
        idp_hint: get("idp_hint").map(str::to_owned),
        ui_locales: get("ui_locales").map(str::to_owned),
    })
}

impl AuthorizeRequest {
    /// Whether the session at hand is good enough, or the user must sign in (again).
    pub fn needs_login(&self, auth_time: Option<UnixTime>, now: UnixTime) -> bool {
        match auth_time {
            None => true,
            Some(t) => {
                self.prompt == Prompt::Login
                    || self.max_age.is_some_and(|m| now.saturating_sub(t) > m)
            }
        }
    }
}

/// Appends the response parameters to a redirect URI (query mode).
pub fn with_params(mut uri: Url, params: &[(&str, &str)]) -> Url {
    if params.is_empty() {
        return uri;
    }
    {
        let mut pairs = uri.query_pairs_mut();
        for (k, v) in params {
            pairs.append_pair(k, v);
        }
    }
    uri
}
