//! Owns the OpenID start: `/authorize` parsed once; with a good-enough session the app gets its code (single sign-on, after a step-up when the client's policy or `acr_values` ask more), else a journey starts and its sign-in page renders at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::Locale;
use crate::domain::policy::MfaRequirement;
use crate::flow::contract::{Browser, CookieOp, Outcome};
use crate::flow::machine::{Journey, Stage, Target};
use crate::flow::policy::{self, MfaDecision, MfaNeed};
use crate::flow::signin::{SignIn, SignInError, blocking, bound_to, proven_of};
use crate::provider::OAuthError;
use crate::provider::authorize::{self, AuthorizeError, Prompt};

impl SignIn {
    /// `/authorize`: the request is parsed once. With a good-enough session the app gets its
    /// code (after a step-up when the client's MFA policy or `acr_values` ask for more); else a
    /// journey starts and the browser goes to its sign-in page.
    pub async fn authorize(
        &self,
        browser: &Browser,
        raw: BTreeMap<String, Vec<String>>,
    ) -> Result<Outcome, SignInError> {
        // One trip to the blocking pool: the request parsed, and the session (if any) checked.
        let (provider, sessions) = (Arc::clone(&self.provider), Arc::clone(&self.sessions));
        let cookie = browser.session.as_ref().map(|s| s.expose().to_owned());
        let (parsed, session) = blocking(move || {
            let parsed = authorize::parse(&raw, &provider.clients);
            let session = match (&parsed, cookie) {
                (Ok(_), Some(c)) => sessions.check(&c)?.map(|a| a.record),
                _ => None,
            };
            Ok((parsed, session))
        })
        .await?;
        let ar = match parsed {
            Ok(ar) => ar,
            Err(AuthorizeError::Page(key)) => return Ok(Outcome::message(400, key)),
            Err(AuthorizeError::Redirect(r)) => {
                let r = *r;
                return Ok(self.app_error(
                    r.redirect_uri,
                    r.response_mode == authorize::ResponseMode::FormPost,
                    r.state,
                    &r.error,
                ));
            }
            Err(AuthorizeError::Storage(e)) => return Err(e.into()),
        };
        let now = self.now();
        let form_post = ar.response_mode == authorize::ResponseMode::FormPost;
        if ar.needs_login(session.as_ref().map(|s| s.auth_time), now) {
            if ar.prompt == Prompt::None {
                return Ok(self.app_error(
                    ar.redirect_uri,
                    form_post,
                    ar.state,
                    &OAuthError::LoginRequired,
                ));
            }
            let mut j = Journey::new(Target::App(ar.stored()));
            j.login_hint = ar.login_hint.clone();
            j.idp_hint = ar
                .idp_hint
                .clone()
                .filter(|id| self.upstreams.buttons().any(|u| u.id == *id));
            return self.start_and_drive(browser, j).await;
        }
        let Some(session) = session else {
            return Err(SignInError::Internal("session vanished".into()));
        };
        // The MFA policy of the client receiving the code, again on single sign-on.
        let mut probe = Journey::new(Target::App(ar.stored()));
        probe.who = Some(proven_of(&session));
        if self.needs_second_factor(&probe, ar.client.mfa).await? {
            if ar.prompt == Prompt::None {
                return Ok(self.app_error(
                    ar.redirect_uri,
                    form_post,
                    ar.state,
                    &OAuthError::InteractionRequired,
                ));
            }
            probe.step_up = Some(session.sid.clone());
            probe.stage = Stage::Mfa;
            return self.start_and_drive(browser, probe).await;
        }
        let provider = Arc::clone(&self.provider);
        let ar2 = ar.clone();
        let code = blocking(move || {
            provider.issue_code(&ar2, &session).map_err(|e| match e {
                OAuthError::TemporarilyUnavailable => SignInError::Unavailable,
                other => SignInError::Internal(other.to_string()),
            })
        })
        .await?;
        tracing::info!(client_id = %ar.client.id, acr_values = ar.acr_values.as_deref().unwrap_or(""), "authorization code issued");
        Ok(self.app_code(ar.redirect_uri, form_post, ar.state, code))
    }

    /// Whether the session `probe.who` describes must pass a second factor for the client of
    /// `probe`, whose own requirement is `client` (required, `acr_values`, or optional with a usable enrolled factor). Blocking
    /// reads only when the client's policy is optional.
    pub(crate) async fn needs_second_factor(
        &self,
        probe: &Journey,
        client: Option<MfaRequirement>,
    ) -> Result<bool, SignInError> {
        let upstream = probe
            .who
            .as_ref()
            .and_then(|w| self.upstream_config(&w.upstream));
        match policy::mfa_need(self.settings.mfa_default, client, upstream, probe) {
            MfaNeed::Met => Ok(false),
            MfaNeed::Facts { required: true } => Ok(true),
            MfaNeed::Facts { required: false } => {
                let facts = self.facts(probe, Locale::En).await?;
                Ok(facts.is_some_and(|(f, _)| {
                    policy::mfa_decision(false, f, self.settings.optional_counts_implicit_factors)
                        == MfaDecision::Ask
                }))
            }
        }
    }

    /// The MFA requirement of the client a journey ends at.
    pub(crate) async fn client_mfa(
        &self,
        j: &Journey,
    ) -> Result<Option<MfaRequirement>, SignInError> {
        let Some(id) = j.client_id().map(str::to_owned) else {
            return Ok(None);
        };
        let provider = Arc::clone(&self.provider);
        blocking(move || Ok(provider.clients.get(&id)?.and_then(|c| c.mfa))).await
    }

    /// Starts a journey and shows its first page right away (the sign-in page at the
    /// `/authorize` URL itself: no extra redirect and read).
    pub(crate) async fn start_and_drive(
        &self,
        browser: &Browser,
        j: Journey,
    ) -> Result<Outcome, SignInError> {
        let (id, mut loaded, new_binding) = self.begin(browser, j).await?;
        let browser = &bound_to(browser, new_binding.as_deref());
        let mut out = self.drive(browser, &id, &mut loaded).await?;
        if let Some(b) = new_binding {
            out = out.with_cookie(CookieOp::Binding(b));
        }
        Ok(out)
    }
}
