//! Owns the OpenID answer: the authorization response an app receives at its redirect URI (a
//! code, or an error with `state` and `iss`, RFC 9207), in its response mode.

use url::Url;

use super::{Answer, AnswerEnv, AnswerError, Refusal, Resolved};
use crate::domain::relying_party::RelyingParty;
use crate::flow::contract::{AppAnswer, Next, Outcome};
use crate::provider::OAuthError;
use crate::provider::authorize::{AuthorizeRequest, ResponseMode, StoredRequest};
use crate::storage::SessionRecord;

impl Answer for StoredRequest {
    fn party_key(&self) -> String {
        format!("openid:{}", self.client_id)
    }

    fn acr_values(&self) -> Option<&str> {
        self.acr_values.as_deref()
    }

    fn destination(&self) -> Option<Url> {
        Url::parse(&self.redirect_uri).ok()
    }

    fn resolve(&self, env: &AnswerEnv) -> Result<Option<Box<dyn Resolved>>, AnswerError> {
        Ok(self
            .resume(&env.provider.clients)?
            .map(|ar| Box::new(ready(ar)) as Box<dyn Resolved>))
    }
}

/// An authorization request with its client as registered now.
pub struct Ready {
    party: RelyingParty,
    ar: AuthorizeRequest,
}

/// `ar` (parsed at `/authorize`, or resumed from a journey) ready to be answered.
pub fn ready(ar: AuthorizeRequest) -> Ready {
    Ready {
        party: RelyingParty::openid(&ar.client),
        ar,
    }
}

impl Resolved for Ready {
    fn party(&self) -> &RelyingParty {
        &self.party
    }

    fn answer(
        self: Box<Self>,
        env: &AnswerEnv,
        session: &SessionRecord,
    ) -> Result<Outcome, AnswerError> {
        let code = env
            .provider
            .issue_code(&self.ar, session)
            .map_err(|e| match e {
                OAuthError::TemporarilyUnavailable => AnswerError::Unavailable,
                other => AnswerError::Internal(other.to_string()),
            })?;
        let ar = self.ar;
        tracing::info!(
            client_id = %ar.client.id,
            acr_values = ar.acr_values.as_deref().unwrap_or(""),
            "authorization code issued"
        );
        let form_post = ar.response_mode == ResponseMode::FormPost;
        let mut params = vec![("code".to_owned(), code)];
        if let Some(s) = ar.state {
            params.push(("state".into(), s));
        }
        params.push(("iss".into(), env.provider.settings.issuer.clone()));
        Ok(Outcome::new(Next::App(AppAnswer {
            redirect_uri: ar.redirect_uri,
            form_post,
            params,
        })))
    }

    fn refuse(self: Box<Self>, env: &AnswerEnv, why: &Refusal) -> Outcome {
        let e = match why {
            Refusal::LoginRequired => OAuthError::LoginRequired,
            Refusal::InteractionRequired => OAuthError::InteractionRequired,
            Refusal::AccessDenied => OAuthError::AccessDenied,
            Refusal::Unavailable => OAuthError::TemporarilyUnavailable,
            Refusal::UpstreamFailed(reason) => OAuthError::ServerError(reason.clone()),
        };
        let ar = self.ar;
        error_answer(
            &env.provider.settings.issuer,
            ar.redirect_uri,
            ar.response_mode == ResponseMode::FormPost,
            ar.state,
            &e,
        )
    }
}

/// An authorization error response with its `state` and `iss` (RFC 9207), for a request that
/// failed before it could be answered otherwise (a bad parameter with a valid redirect URI).
pub fn error_answer(
    issuer: &str,
    redirect_uri: Url,
    form_post: bool,
    state: Option<String>,
    e: &OAuthError,
) -> Outcome {
    let mut params = vec![("error".to_owned(), e.code().to_owned())];
    if let Some(d) = e.description() {
        params.push(("error_description".into(), d));
    }
    params.push(("iss".into(), issuer.to_owned()));
    if let Some(s) = state {
        params.push(("state".into(), s));
    }
    Outcome::new(Next::App(AppAnswer {
        redirect_uri,
        form_post,
        params,
    }))
}
