//! Owns the password step (`POST /login`): email-first routing to an upstream, or an email and password checked against the local accounts, with the address and account rates and the lockout checked before the hash. Proving a password also answers the account-link proof a pending link asks for.

use std::sync::Arc;

use crate::audit::{Event, EventKind};
use crate::domain::evidence::Proof;
use crate::domain::{Email, SecretString};
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, CookieOp, Next, Outcome, View};
use crate::flow::journey::{JourneyId, Loaded};
use crate::flow::machine::{self, Event as Step, Journey, Proven, Target};
use crate::flow::signin::{
    SignIn, SignInError, blocking, bound_to, local_target, upstream_start_path,
};
use crate::ratelimit::Scope;
use crate::upstream::UpstreamError;
use crate::upstream::local::LOCAL_UPSTREAM_ID;

impl SignIn {
    /// `POST /login`: an email (email-first routing) or an email and password. Rates and the
    /// lockout are checked before the password hash.
    /// A form without a journey (a page cached from before, a plain HTML form elsewhere on the
    /// site) starts one that ends at `return_to` (a local path) or `/account`.
    pub async fn password(
        &self,
        browser: &Browser,
        journey: &str,
        return_to: Option<&str>,
        email: &str,
        password: Option<SecretString>,
    ) -> Result<Outcome, SignInError> {
        let mut new_binding = None;
        let (id, mut loaded) = if journey.is_empty() {
            let local = local_target(return_to);
            let (id, loaded, b) = self
                .begin(browser, Journey::new(Target::Local(local)))
                .await?;
            new_binding = b;
            (id, loaded)
        } else {
            match self.resume(browser, journey).await? {
                Resumed::Live(id, l) => (id, *l),
                Resumed::Answered(out) => return Ok(*out),
                Resumed::Gone => return Ok(Outcome::expired()),
            }
        };
        let browser = &bound_to(browser, new_binding.as_deref());
        if !machine::accept(&loaded.state, Step::Password) {
            return self.stale(browser, &id, &mut loaded).await;
        }
        let mut out = self
            .password_in(browser, id, &mut loaded, email, password)
            .await?;
        if let Some(b) = new_binding {
            out = out.with_cookie(CookieOp::Binding(b));
        }
        Ok(out)
    }

    pub(crate) async fn password_in(
        &self,
        browser: &Browser,
        id: JourneyId,
        loaded: &mut Loaded<Journey>,
        email: &str,
        password: Option<SecretString>,
    ) -> Result<Outcome, SignInError> {
        let Some((_, connector)) = self.upstreams.password() else {
            return Ok(Outcome::message(404, "error_404_message"));
        };
        let connector = Arc::clone(connector);
        let shown: String = email.chars().take(254).collect();
        let account = shown.trim().to_lowercase();
        let ip = browser.ip.clone();
        let refused = |key: &'static str, status: u16, linking: bool| Next::Page {
            status,
            journey: Some(id.clone()),
            view: View::Login {
                email: shown.clone(),
                error: Some(key),
                linking,
                passkey: None,
            },
        };
        let linking = loaded.state.link.is_some();
        let failed = |reason: &'static str| {
            self.provider.audit.record(
                Event::new(EventKind::LoginFailed)
                    .ip(ip.as_str())
                    .upstream(LOCAL_UPSTREAM_ID)
                    .reason(reason),
            );
        };
        for (scope, key) in [
            (Scope::LoginPerIp, ip.as_str()),
            (Scope::LoginPerAccount, account.as_str()),
        ] {
            if let Err(limited) = self.limiter.check(scope, key) {
                self.provider.audit.record(
                    Event::new(EventKind::RateLimited)
                        .ip(ip.as_str())
                        .reason(scope.as_str()),
                );
                return Ok(self
                    .page_outcome(&loaded.state, refused("error_rate_limited", 429, linking))
                    .slow(limited));
            }
        }
        let lockout = Arc::clone(&self.lockout);
        let acct = account.clone();
        let lock = blocking(move || Ok(lockout.check(&acct)?)).await?;
        if let Some(limited) = lock.locked {
            failed("locked_out");
            return Ok(self
                .page_outcome(&loaded.state, refused("error_locked_out", 429, linking))
                .slow(limited));
        }
        // Home-realm discovery: an email of a routed domain signs in at its upstream, unless
        // this journey is proving the account an upstream identity claims.
        if !linking
            && let Ok(parsed) = Email::parse(email)
            && let Some(up) = self.realm_of(parsed.as_str())
        {
            loaded.state.login_hint = Some(parsed.as_str().to_owned());
            self.save(&id, loaded).await?;
            return Ok(Outcome::new(Next::Redirect(upstream_start_path(&up, &id))));
        }
        let (Ok(parsed), Some(password)) = (Email::parse(email), password) else {
            failed("invalid_credentials");
            return Ok(self.page_outcome(
                &loaded.state,
                refused("error_invalid_credentials", 401, linking),
            ));
        };
        let identity = match connector.authenticate(&parsed, &password).await {
            Ok(identity) => identity,
            Err(UpstreamError::InvalidCredentials) => {
                failed("invalid_credentials");
                let lockout = Arc::clone(&self.lockout);
                let acct = account.clone();
                if let Some(limited) = blocking(move || Ok(lockout.failed(&acct)?)).await? {
                    self.provider.audit.record(
                        Event::new(EventKind::LockedOut)
                            .ip(ip.as_str())
                            .reason(format!("{} s", limited.retry_after_secs)),
                    );
                    return Ok(self
                        .page_outcome(&loaded.state, refused("error_locked_out", 429, linking))
                        .slow(limited));
                }
                return Ok(self.page_outcome(
                    &loaded.state,
                    refused("error_invalid_credentials", 401, linking),
                ));
            }
            Err(UpstreamError::AccountDisabled) => {
                failed("account_disabled");
                return Ok(self.page_outcome(
                    &loaded.state,
                    refused("error_account_disabled", 403, linking),
                ));
            }
            Err(UpstreamError::Storage(e)) => return Err(e.into()),
            Err(other) => return Err(SignInError::internal(other)),
        };
        if lock.has_failures {
            let lockout = Arc::clone(&self.lockout);
            blocking(move || Ok(lockout.succeeded(&account)?)).await?;
        }
        let now = self.now();
        let who = Proven {
            user_id: identity.subject.clone(),
            upstream: identity.upstream.clone(),
            evidence: identity
                .amr
                .iter()
                .map(|m| Proof::local(m.clone(), now))
                .collect(),
            acr: identity.acr.clone(),
        };
        // With a pending link for this account, the account is now proven: the link is written
        // when the journey completes (after the second factor).
        loaded
            .state
            .first_factor(who, identity.email.as_ref().map(Email::as_str));
        // The password connector read the account (enabled) just now.
        loaded.state.user_checked = true;
        self.drive(browser, &id, loaded).await
    }
}
