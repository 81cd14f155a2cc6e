//! Owns the upstream step: leaving for an upstream with a pending login that points at the journey, and its answer (OIDC callback, SAML ACS) taken once, checked to be this browser's and this upstream's, mapped to a broker user (or a pending link) and recorded as evidence judged by the upstream's trust. An unsolicited answer never links or creates an account.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use url::Url;

use crate::audit::{Event, EventKind};
use crate::domain::evidence::Proof;
use crate::flow::answer::Refusal;
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, CookieOp, Next, Outcome, View};
use crate::flow::journey::{JourneyId, JourneyKey, Loaded};
use crate::flow::login::{FlowError, federated_user};
use crate::flow::machine::{self, Event as Step, Journey, PendingLink, Proven, Stage, Target};
use crate::flow::signin::{Party, SignIn, SignInError, blocking, local_target};
use crate::storage::{StorageError, UpstreamRequest};
use crate::upstream::{Connector, Federated, PendingUpstream, UpstreamError};

/// How long a login may wait at the upstream.
pub(crate) const PENDING_TTL: i64 = 600;

/// An upstream's answer, as it arrived.
#[derive(Debug, Clone)]
pub enum UpstreamAnswer {
    /// OIDC: the callback's query.
    Redirect(BTreeMap<String, String>),
    /// SAML HTTP-POST: the form.
    Post(BTreeMap<String, String>),
}

/// Why an answer matched no pending login of this browser (the audit reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPending {
    Missing,
    Unknown,
    OtherUpstream,
    OtherBrowser,
}

impl NoPending {
    fn reason(self) -> &'static str {
        match self {
            Self::Missing => "state_missing",
            Self::Unknown => "state_unknown",
            Self::OtherUpstream => "upstream_mismatch",
            Self::OtherBrowser => "browser_mismatch",
        }
    }
}

/// The refusal a relying party receives for an upstream failure, if it is one to pass on
/// (each protocol words it: an OAuth error, a SAML status).
pub(crate) fn refusal(e: &UpstreamError) -> Option<Refusal> {
    match e {
        UpstreamError::Refused { code, .. } => Some(match code.as_str() {
            "login_required" => Refusal::LoginRequired,
            "temporarily_unavailable" => Refusal::Unavailable,
            "server_error" => Refusal::UpstreamFailed("upstream server_error".into()),
            "access_denied"
            | "interaction_required"
            | "consent_required"
            | "account_selection_required" => Refusal::AccessDenied,
            _ => Refusal::UpstreamFailed(format!("upstream error {code}")),
        }),
        UpstreamError::Unavailable(_) => Some(Refusal::Unavailable),
        _ => None,
    }
}

impl SignIn {
    pub(crate) fn callback_url(&self, id: &str) -> Result<Url, SignInError> {
        self.settings
            .public_url
            .join(&format!("/upstream/{id}/callback"))
            .map_err(SignInError::internal)
    }

    /// `GET /upstream/{id}/start`: leaves for the upstream with a pending login that points at
    /// the journey (a new one if the browser came without).
    pub async fn upstream_start(
        &self,
        browser: &Browser,
        journey: Option<&str>,
        upstream: &str,
        return_to: Option<&str>,
    ) -> Result<Outcome, SignInError> {
        let mut new_binding = None;
        let (id, mut loaded) = match journey {
            Some(raw) => match self.resume(browser, raw).await? {
                Resumed::Live(id, l) => (id, *l),
                Resumed::Answered(out) => return Ok(*out),
                Resumed::Gone => return Ok(Outcome::expired()),
            },
            None => {
                let local = local_target(return_to);
                let (id, loaded, b) = self
                    .begin(browser, Journey::new(Target::Local(local)))
                    .await?;
                new_binding = b;
                (id, loaded)
            }
        };
        let binding = match (&new_binding, &browser.binding) {
            (Some(b), _) => b.clone(),
            (None, Some(b)) => b.expose().to_owned(),
            (None, None) => return Ok(Outcome::expired()),
        };
        if !machine::accept(&loaded.state, Step::UpstreamStart(upstream)) {
            return self.stale(browser, &id, &mut loaded).await;
        }
        let hint = loaded.state.login_hint.clone();
        let callback = self.callback_url(upstream)?;
        let started = match self.upstreams.get(upstream).map(|u| &u.connector) {
            Some(Connector::Redirect(c)) => c.start(&callback, hint.as_deref()).await,
            Some(Connector::Post(c)) => c.start(hint.as_deref()).await,
            _ => return Ok(Outcome::message(404, "error_404_message")),
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                return self
                    .upstream_failed(browser, Some((&id, loaded)), upstream, e)
                    .await;
            }
        };
        let Some(state_value) = started.pending.values.get("state").cloned() else {
            return Err(SignInError::Internal("connector returned no state".into()));
        };
        let record = UpstreamRequest {
            state_hash: Sha256::digest(state_value.as_bytes()).into(),
            upstream: upstream.to_owned(),
            binding_hash: Sha256::digest(binding.as_bytes()).into(),
            pending: serde_json::to_string(&started.pending.values)
                .map_err(SignInError::internal)?,
            journey_hash: id.key().0,
            expires_at: self.now().saturating_add(PENDING_TTL),
        };
        let store = Arc::clone(&self.store);
        blocking(move || Ok(store.insert_upstream_request(&record)?)).await?;
        loaded.state.stage = Stage::AtUpstream {
            upstream: upstream.to_owned(),
        };
        // An app's hint is used once: coming back to the page must not bounce again.
        loaded.state.idp_hint = None;
        self.save(&id, &mut loaded).await?;
        let mut out = Outcome::new(Next::Redirect(started.redirect_to.to_string()));
        // The binding must travel with the SAML IdP's cross-site POST: set it (again) as such.
        out = out.with_cookie(CookieOp::Binding(binding));
        Ok(out)
    }

    /// The upstream's answer (OIDC callback, SAML ACS): the pending login it names is taken
    /// (single use), must be this browser's and this upstream's; the identity the upstream
    /// vouches for becomes the journey's first factor (or asks for the account-link proof).
    pub async fn upstream_answer(
        &self,
        browser: &Browser,
        upstream: &str,
        answer: UpstreamAnswer,
    ) -> Result<Outcome, SignInError> {
        let state_value = match &answer {
            UpstreamAnswer::Redirect(q) => q.get("state").cloned(),
            UpstreamAnswer::Post(f) => f.get("RelayState").filter(|s| !s.is_empty()).cloned(),
        };
        let pending = match (&answer, state_value) {
            (UpstreamAnswer::Redirect(_), None) => {
                return Ok(self.refused_answer(browser, upstream, NoPending::Missing));
            }
            // SAML without RelayState: unsolicited (IdP-initiated), which the connector refuses
            // unless configured.
            (UpstreamAnswer::Post(_), None) => None,
            (_, Some(s)) => match self.take_pending(browser, upstream, &s).await? {
                Ok(p) => Some(p),
                Err(why) => return Ok(self.refused_answer(browser, upstream, why)),
            },
        };
        // The journey the pending login points at continues under a fresh id (the old one, and
        // a second answer with the same state, find nothing).
        let (journey, values) = match pending {
            Some((key, values)) => {
                let journeys = self.journeys.clone();
                let loaded = blocking(move || Ok(journeys.load_key::<Journey>(&key)?)).await;
                let mut loaded = match loaded {
                    Ok(l) if self.bound(browser, &l.state) => l,
                    Ok(_) => {
                        return Ok(self.refused_answer(browser, upstream, NoPending::OtherBrowser));
                    }
                    Err(SignInError::Journey(_)) => return Ok(Outcome::expired()),
                    Err(e) => return Err(e),
                };
                if !machine::accept(&loaded.state, Step::UpstreamAnswer(upstream)) {
                    return Ok(self.refused_answer(browser, upstream, NoPending::Unknown));
                }
                let (journeys, copy) = (self.journeys.clone(), loaded.clone());
                let rekeyed = blocking(move || Ok(journeys.rekey(&key, &copy)?)).await;
                let id = match rekeyed {
                    Ok((id, v)) => {
                        loaded.version = v;
                        id
                    }
                    Err(SignInError::Journey(_)) => {
                        return Ok(self.refused_answer(browser, upstream, NoPending::Unknown));
                    }
                    Err(e) => return Err(e),
                };
                (Some((loaded, id)), Some(values))
            }
            None => (None, None),
        };
        let federated = match (self.upstreams.get(upstream).map(|u| &u.connector), &answer) {
            (Some(Connector::Redirect(c)), UpstreamAnswer::Redirect(q)) => {
                let callback = self.callback_url(upstream)?;
                let pending = PendingUpstream {
                    values: values.unwrap_or_default(),
                };
                c.callback(&callback, &pending, q).await
            }
            (Some(Connector::Post(c)), UpstreamAnswer::Post(f)) => {
                let pending = values.map(|values| PendingUpstream { values });
                c.handle_post(pending.as_ref(), f).await
            }
            _ => return Ok(Outcome::message(404, "error_404_message")),
        };
        let (id, mut loaded, new_binding) = match journey {
            Some((l, id)) => (id, l, None),
            None => {
                // An unsolicited login (configured to be accepted) starts its own journey, which
                // never links nor creates an account and asks before replacing a session.
                let mut j = Journey::new(Target::Local("/account".into()));
                j.unsolicited = true;
                let (id, l, b) = self.begin(browser, j).await?;
                (id, l, b)
            }
        };
        let federated = match federated {
            Ok(f) => f,
            Err(e) => {
                return self
                    .upstream_failed(browser, Some((&id, loaded)), upstream, e)
                    .await;
            }
        };
        let mut out = self
            .federated(browser, &id, &mut loaded, upstream, federated)
            .await?;
        if let Some(b) = new_binding {
            out = out.with_cookie(CookieOp::Binding(b));
        }
        Ok(out)
    }

    pub(crate) async fn take_pending(
        &self,
        browser: &Browser,
        upstream: &str,
        state_value: &str,
    ) -> Result<Result<(JourneyKey, BTreeMap<String, String>), NoPending>, SignInError> {
        let store = Arc::clone(&self.store);
        let now = self.now();
        let hash: [u8; 32] = Sha256::digest(state_value.as_bytes()).into();
        let binding = browser
            .binding
            .as_ref()
            .map(|b| -> [u8; 32] { Sha256::digest(b.expose().as_bytes()).into() });
        // Checked before it is spent: an answer from another browser (a leaked or forged
        // state) or for another upstream takes nothing from the browser it belongs to.
        let up = upstream.to_owned();
        let pending = blocking(move || {
            Ok(match store.upstream_request(&hash, now)? {
                None => Err(NoPending::Unknown),
                Some(p) if p.upstream != up => Err(NoPending::OtherUpstream),
                Some(p) if Some(p.binding_hash) != binding => Err(NoPending::OtherBrowser),
                Some(_) => store
                    .take_upstream_request(&hash, now)?
                    .ok_or(NoPending::Unknown),
            })
        })
        .await?;
        let p = match pending {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        let values: BTreeMap<String, String> =
            serde_json::from_str(&p.pending).map_err(SignInError::internal)?;
        Ok(Ok((JourneyKey(p.journey_hash), values)))
    }

    /// An answer that matches no pending login of this browser: a page, audited.
    pub(crate) fn refused_answer(
        &self,
        browser: &Browser,
        upstream: &str,
        why: NoPending,
    ) -> Outcome {
        tracing::warn!(upstream, reason = why.reason(), "upstream answer refused");
        self.provider.audit.record(
            Event::new(EventKind::LoginFailed)
                .upstream(upstream)
                .ip(browser.ip.as_str())
                .reason(why.reason()),
        );
        Outcome::new(Next::Page {
            status: 400,
            journey: None,
            view: View::Login {
                email: String::new(),
                error: Some("error_upstream_expired"),
                linking: false,
                passkey: None,
            },
        })
    }

    /// An identity the upstream vouched for: mapped to a broker user (or a pending link), then
    /// on through the journey.
    pub(crate) async fn federated(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        upstream: &str,
        federated: Federated,
    ) -> Result<Outcome, SignInError> {
        let identity = federated.identity;
        if let Some(session) = federated.session {
            loaded.state.upstream_session = Some((upstream.to_owned(), session));
        }
        let config = self.upstream_config(upstream);
        let link_by_email = config.is_some_and(|u| u.link_by_verified_email);
        // The upstream's own methods are evidence of what it says; they count as the broker's
        // second factor only where the operator trusts this upstream for that.
        let trusted_for_mfa = crate::flow::policy::upstream_mfa_trusted(
            config,
            &identity.amr,
            identity.acr.as_deref(),
        );
        let unsolicited = loaded.state.unsolicited;
        let (store, entropy, now) = (
            Arc::clone(&self.store),
            Arc::clone(&self.entropy),
            self.now(),
        );
        let ident = identity.clone();
        let mapped = blocking(move || {
            Ok(federated_user(
                store.as_ref(),
                entropy.as_ref(),
                now,
                &ident,
                link_by_email && !unsolicited,
                unsolicited,
            ))
        })
        .await?;
        match mapped {
            Ok(mapped) => {
                loaded.state.first_factor(
                    Proven {
                        user_id: mapped.user_id.as_str().to_owned(),
                        upstream: identity.upstream.clone(),
                        evidence: Proof::from_upstream(
                            &identity.upstream,
                            &identity.amr,
                            trusted_for_mfa,
                            now,
                        ),
                        acr: identity.acr.clone(),
                    },
                    None,
                );
                loaded.state.link = mapped.link;
                self.drive(browser, id, loaded).await
            }
            Err(FlowError::NotLinked) => {
                // Unsolicited: only an identity already linked here signs in; nothing is linked
                // or created on an answer nobody here asked for.
                self.provider.audit.record(
                    Event::new(EventKind::LoginFailed)
                        .upstream(upstream)
                        .ip(browser.ip.as_str())
                        .reason("unsolicited_not_linked"),
                );
                let _ = self.finish(id, loaded.version).await;
                Ok(Outcome::message(403, "error_unsolicited_not_linked"))
            }
            Err(FlowError::LinkRequired {
                email,
                upstream,
                subject,
            }) => {
                self.audit_not_linked(browser, &upstream);
                loaded.state.needs_link_proof(PendingLink {
                    upstream,
                    subject,
                    email: email.as_str().to_owned(),
                    user_id: None,
                    groups: identity.groups.clone(),
                    verified_email: None,
                    kept: identity.kept.clone(),
                });
                self.save(id, loaded).await?;
                Ok(self.page_outcome(
                    &loaded.state,
                    Next::Page {
                        status: 409,
                        journey: Some(id.clone()),
                        view: View::Login {
                            email: email.as_str().to_owned(),
                            error: Some("error_link_required"),
                            linking: true,
                            passkey: None,
                        },
                    },
                ))
            }
            Err(FlowError::NoEmail) => {
                self.audit_not_linked(browser, upstream);
                Ok(self.login_error(&loaded.state, id, "error_upstream_no_email", 403))
            }
            Err(FlowError::Disabled) => {
                Ok(self.login_error(&loaded.state, id, "error_account_disabled", 403))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn audit_not_linked(&self, browser: &Browser, upstream: &str) {
        self.provider.audit.record(
            Event::new(EventKind::LoginFailed)
                .upstream(upstream)
                .ip(browser.ip.as_str())
                .reason("upstream_account_not_linked"),
        );
    }

    /// The upstream refused, could not be reached, or its answer failed validation: the app
    /// gets the OAuth error it is (when there is one to pass on), else the sign-in page with the
    /// reason; audited; nothing stored.
    pub(crate) async fn upstream_failed(
        &self,
        browser: &Browser,
        journey: Option<(&JourneyId, Loaded<Journey>)>,
        upstream: &str,
        e: UpstreamError,
    ) -> Result<Outcome, SignInError> {
        let (key, status, reason) = match &e {
            UpstreamError::Refused { code, .. } => {
                ("error_upstream_refused", 403, format!("refused:{code}"))
            }
            UpstreamError::Unavailable(_) => {
                ("error_upstream_unavailable", 502, "unavailable".to_owned())
            }
            UpstreamError::Storage(StorageError::Unavailable(_)) => {
                return Err(SignInError::Unavailable);
            }
            UpstreamError::Storage(_) => return Err(SignInError::internal(e)),
            UpstreamError::Invalid { check, .. } => {
                ("error_upstream_failed", 400, format!("rejected:{check}"))
            }
            _ => ("error_upstream_failed", 400, "rejected".to_owned()),
        };
        tracing::warn!(upstream, error = %e, "upstream sign-in failed");
        self.provider.audit.record(
            Event::new(EventKind::LoginFailed)
                .upstream(upstream)
                .ip(browser.ip.as_str())
                .reason(reason),
        );
        let Some((id, mut loaded)) = journey else {
            return Ok(Outcome::message(status, key));
        };
        if let Some(why) = refusal(&e)
            && let Party::Found(party) = self.party(&loaded.state).await?
        {
            self.finish_quietly(id, loaded.version).await;
            let env = self.answer_env();
            return blocking(move || Ok(party.refuse(&env, &why))).await;
        }
        loaded.state.stage = Stage::FirstFactor;
        self.save(id, &mut loaded).await?;
        Ok(self.login_error(&loaded.state, id, key, status))
    }
}
