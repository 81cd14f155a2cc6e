//! Owns the OpenID answer: the authorization response an app receives at its redirect URI (a code, or an error with `state` and `iss`, RFC 9207), in its response mode.

use std::sync::Arc;

use url::Url;

use crate::flow::contract::{AppAnswer, CookieOp, Next, Outcome};
use crate::flow::machine::{Journey, Target};
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::provider::OAuthError;
use crate::provider::authorize::{self, AuthorizeRequest};
use crate::storage::SessionRecord;

impl SignIn {
    /// The end of a journey: the app's code (the request stored at `/authorize`, its client as
    /// registered now), or the local page.
    pub(crate) async fn answer(
        &self,
        j: &Journey,
        app: Option<AuthorizeRequest>,
        record: &SessionRecord,
        cookies: Vec<CookieOp>,
    ) -> Result<Outcome, SignInError> {
        let mut out = match (&j.target, app) {
            (_, Some(ar)) => {
                let (provider, r, ar2) = (Arc::clone(&self.provider), record.clone(), ar.clone());
                let code = blocking(move || {
                    provider.issue_code(&ar2, &r).map_err(|e| match e {
                        OAuthError::TemporarilyUnavailable => SignInError::Unavailable,
                        other => SignInError::Internal(other.to_string()),
                    })
                })
                .await?;
                tracing::info!(client_id = %ar.client.id, "authorization code issued");
                let form_post = ar.response_mode == authorize::ResponseMode::FormPost;
                self.app_code(ar.redirect_uri, form_post, ar.state, code)
            }
            (Target::Local(path), None) => Outcome::new(Next::Redirect(path.clone())),
            (Target::App(_), None) => Outcome::message(400, "error_authorize_client"),
        };
        out.cookies.extend(cookies);
        Ok(out)
    }

    pub(crate) fn app_code(
        &self,
        redirect_uri: Url,
        form_post: bool,
        state: Option<String>,
        code: String,
    ) -> Outcome {
        let mut params = vec![("code", code)];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", self.provider.settings.issuer.clone()));
        Outcome::new(Next::App(AppAnswer {
            redirect_uri,
            form_post,
            params,
        }))
    }

    /// An authorization error response with its `state` and `iss` (RFC 9207).
    pub fn app_error(
        &self,
        redirect_uri: Url,
        form_post: bool,
        state: Option<String>,
        e: &OAuthError,
    ) -> Outcome {
        let mut params = vec![("error", e.code().to_owned())];
        if let Some(d) = e.description() {
            params.push(("error_description", d));
        }
        params.push(("iss", self.provider.settings.issuer.clone()));
        if let Some(s) = state {
            params.push(("state", s));
        }
        Outcome::new(Next::App(AppAnswer {
            redirect_uri,
            form_post,
            params,
        }))
    }
}
