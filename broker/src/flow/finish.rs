//! Owns the end of a journey (dex's `finalizeLogin`): everything proven, the session opens (within the limit, refused for evidence older than the user's token epoch) or is raised (step-up), the journey finishes once with its answer kept, and what the journey proved for later (an upstream link, the upstream session) is written.

use std::sync::Arc;

use crate::audit::{Event, EventKind};
use crate::domain::policy::SessionLimit;
use crate::flow::answer::Resolved;
use crate::flow::binding::Resumed;
use crate::flow::contract::{Browser, CookieOp, Next, Outcome, View};
use crate::flow::journey::{JourneyError, JourneyId, Loaded};
use crate::flow::login::{FlowError, open_session};
use crate::flow::machine::{self, Journey, Stage, Target};
use crate::flow::signin::{Party, SignIn, SignInError, blocking};
use crate::session::SessionToken;
use crate::storage::{SessionRecord, UpstreamSessionRecord};

/// What a finished journey keeps of its answer (the app's redirect or the local path, and the
/// session cookie it set), so that a double submit is answered the same.
pub(crate) fn keep_answer(
    out: &Outcome,
    session: Option<&SessionToken>,
) -> Option<machine::Answer> {
    let session = session.map(|t| t.as_cookie_value().to_owned());
    match &out.next {
        Next::App(a) => Some(machine::Answer {
            to: a.redirect_uri.to_string(),
            form_post: a.form_post,
            params: a.params.clone(),
            session,
        }),
        Next::Redirect(path) => Some(machine::Answer {
            to: path.clone(),
            form_post: false,
            params: vec![],
            session,
        }),
        _ => None,
    }
}

impl SignIn {
    /// The end of a journey: the relying party's answer (its protocol's, [`crate::flow::answer`]),
    /// or the local page.
    pub(crate) async fn answer(
        &self,
        j: &Journey,
        app: Option<Box<dyn Resolved>>,
        record: &SessionRecord,
        cookies: Vec<CookieOp>,
    ) -> Result<Outcome, SignInError> {
        let mut out = match (&j.target, app) {
            (_, Some(party)) => {
                let (env, r) = (self.answer_env(), record.clone());
                blocking(move || Ok(party.answer(&env, &r)?)).await?
            }
            (Target::Local(path), None) => Outcome::new(Next::Redirect(path.clone())),
            (Target::App(_), None) => Outcome::message(400, "error_authorize_client"),
        };
        out.cookies.extend(cookies);
        Ok(out)
    }

    /// Everything is proven: the session opens (within the limit) or is raised (step-up), the
    /// journey finishes (single use), the pending link and the upstream session are written,
    /// and the browser goes on to its target.
    pub(crate) async fn complete(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
    ) -> Result<Outcome, SignInError> {
        let Some(who) = loaded.state.who.clone() else {
            return Ok(Outcome::expired());
        };
        // An unsolicited sign-in does not silently replace the session this browser has.
        if loaded.state.unsolicited && !loaded.state.confirmed && browser.session.is_some() {
            let current = self.current_session(browser).await?;
            if current.is_some() {
                return self.continue_page(id, loaded, true).await;
            }
        }
        // The relying party as registered now, read once for the session's channel and limits
        // and for the answer; a party gone meanwhile gets nothing.
        let app = match self.party(&loaded.state).await? {
            Party::Local => None,
            Party::Found(r) => Some(r),
            Party::Gone => return Ok(Outcome::message(400, "error_authorize_client")),
        };
        if let Some(sid) = loaded.state.step_up.clone() {
            let current = self.current_session(browser).await?;
            let Some(current) =
                current.filter(|c| c.sid == sid && c.user_id.as_str() == who.user_id)
            else {
                return Ok(Outcome::expired());
            };
            let store = Arc::clone(&self.store);
            let amr = crate::flow::policy::merge_amr(&current.amr, &who.amr());
            let mut record = current.clone();
            record.amr = amr.clone();
            blocking(move || Ok(store.set_session_amr(&sid, &amr)?)).await?;
            let out = self.answer(&loaded.state, app, &record, vec![]).await?;
            let (out, _) = self
                .finish_answering(browser, id, loaded, out, None)
                .await?;
            return Ok(out);
        }
        let ctx = self.context(browser, app.as_ref().map(|a| a.party()));
        // Under a session limit, the copy that would lose a double submit must not open a
        // session at all (it would end the winner's, or another device's, as the oldest): the
        // journey is claimed first (compare-and-swap), and a copy that finds it claimed waits
        // for the winner's answer. Without a limit an extra session is harmless (the loser ends
        // it), and the claim would cost a write per sign-in.
        if ctx.limit != SessionLimit::None {
            if loaded.state.finishing {
                return self.await_answer(browser, id).await;
            }
            loaded.state.finishing = true;
            match self.save(id, loaded).await {
                Ok(()) => {}
                Err(SignInError::Journey(JourneyError::Conflict)) => {
                    return self.await_answer(browser, id).await;
                }
                Err(e) => return Err(e),
            }
        }
        let user_checked = loaded.state.user_checked;
        let previous = browser.session.as_ref().map(|s| s.expose().to_owned());
        let (store, sessions, provider) = (
            Arc::clone(&self.store),
            Arc::clone(&self.sessions),
            Arc::clone(&self.provider),
        );
        let (who2, now) = (who.clone(), self.now());
        let opened = blocking(move || {
            // Re-authentication replaces the session this browser had (its apps are told).
            if let Some(old) = previous
                && let Err(e) =
                    crate::flow::signout::end_session(&sessions, &provider, &old, "reauthenticated")
            {
                tracing::warn!(error = %e, "ending the replaced session failed");
            }
            Ok(open_session(
                store.as_ref(),
                &sessions,
                &provider,
                &who2,
                ctx,
                user_checked,
                now,
            ))
        })
        .await?;
        let (token, record) = match opened {
            Ok(ok) => ok,
            Err(FlowError::SessionLimit { sessions, .. }) => {
                loaded.state.stage = Stage::SessionLimit;
                loaded.state.finishing = false;
                self.save(id, loaded).await?;
                return Ok(self
                    .page_outcome(
                        &loaded.state,
                        Next::Page {
                            status: 200,
                            journey: Some(id.clone()),
                            view: View::SessionLimit { sessions },
                        },
                    )
                    .with_cookie(CookieOp::ClearSession));
            }
            Err(FlowError::Disabled) => {
                return Ok(self.login_error(&loaded.state, id, "error_account_disabled", 403));
            }
            Err(FlowError::ProofOutdated) => {
                // The password changed, or every session was revoked, after these proofs were
                // made: they open nothing, and the sign-in starts again.
                self.provider.audit.record(
                    Event::new(EventKind::LoginFailed)
                        .user(who.user_id.as_str())
                        .ip(browser.ip.as_str())
                        .reason("proof_outdated"),
                );
                self.finish_quietly(id, loaded.version).await;
                return Ok(Outcome::message(401, "error_proof_outdated"));
            }
            Err(FlowError::UnknownUser) => {
                return Ok(self.login_error(&loaded.state, id, "error_invalid_credentials", 401));
            }
            Err(e) => return Err(e.into()),
        };
        let out = self
            .answer(
                &loaded.state,
                app,
                &record,
                vec![CookieOp::Session(token.clone())],
            )
            .await?;
        let (out, won) = self
            .finish_answering(browser, id, loaded, out, Some((&token, &record)))
            .await?;
        if won {
            self.keep_after_sign_in(&loaded.state, &record).await?;
            tracing::info!(user_id = %record.user_id, upstream = %record.upstream, "login succeeded");
        }
        Ok(out)
    }

    /// A copy of a step that found the journey claimed by another copy: the winner's answer
    /// once it is kept (the same page for both), the page the journey is at if the winner did
    /// not finish (the session limit), or the expired page after a few seconds.
    async fn await_answer(
        &self,
        browser: &Browser,
        id: &JourneyId,
    ) -> Result<Outcome, SignInError> {
        for _ in 0..60 {
            match self.resume(browser, id.as_cookie_value()).await? {
                Resumed::Answered(out) => return Ok(*out),
                Resumed::Live(id, mut l) if !l.state.finishing => {
                    return Box::pin(self.stale(browser, &id, &mut l)).await;
                }
                Resumed::Live(..) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Resumed::Gone => break,
            }
        }
        Ok(Outcome::expired())
    }

    /// Finishes the journey (single use) with `out` kept as its answer. Of two completions
    /// racing (a double submit), one finishes; the other's session (`opened`) ends and it answers
    /// what the winner answered this browser, so the user sees the same page either way.
    /// Also says whether this request finished the journey.
    pub(crate) async fn finish_answering(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        out: Outcome,
        opened: Option<(&SessionToken, &SessionRecord)>,
    ) -> Result<(Outcome, bool), SignInError> {
        let mut done = loaded.clone();
        done.state.answer = keep_answer(&out, opened.map(|(t, _)| t));
        let (journeys, id2, copy) = (self.journeys.clone(), id.clone(), done.clone());
        match blocking(move || Ok(journeys.finish_with(&id2, &copy)?)).await {
            Ok(()) => {
                *loaded = done;
                Ok((out, true))
            }
            Err(e) => {
                if let Some((_, record)) = opened {
                    let (provider, r) = (Arc::clone(&self.provider), record.clone());
                    blocking(move || {
                        provider
                            .end_session_record(&r, "journey_replayed")
                            .map_err(SignInError::internal)
                    })
                    .await?;
                }
                if let Some(same) = self.kept_answer(browser, id).await? {
                    return Ok((same, false));
                }
                match e {
                    SignInError::Journey(_) => Ok((Outcome::expired(), false)),
                    other => Err(other),
                }
            }
        }
    }

    /// What the journey leaves behind once the session exists: the upstream link proven in it,
    /// and what logging out at the upstream needs.
    pub(crate) async fn keep_after_sign_in(
        &self,
        j: &Journey,
        record: &SessionRecord,
    ) -> Result<(), SignInError> {
        let link = j
            .link
            .clone()
            .filter(|l| l.user_id.as_deref() == Some(record.user_id.as_str()));
        let parked = j
            .upstream_session
            .clone()
            .filter(|(up, _)| *up == record.upstream);
        if link.is_none() && parked.is_none() {
            return Ok(());
        }
        let (store, now, r) = (Arc::clone(&self.store), self.now(), record.clone());
        let audit = Arc::clone(&self.provider);
        blocking(move || {
            if let Some(l) = link {
                store.insert_upstream_link(&l.upstream, &l.subject, &r.user_id, now)?;
                store.set_upstream_claims(
                    &l.upstream,
                    &l.subject,
                    &crate::storage::UpstreamClaims {
                        groups: l.groups.clone(),
                        verified_email: l.verified_email.clone(),
                        kept: l.kept.clone(),
                    },
                )?;
                audit.audit.record(
                    Event::new(EventKind::AdminAction)
                        .user(r.user_id.as_str())
                        .upstream(l.upstream.as_str())
                        .reason("upstream_linked_after_proof"),
                );
            }
            if let Some((upstream, session)) = parked {
                let (id_token, name_id, name_id_format, session_index) = match session {
                    crate::upstream::UpstreamSession::Oidc { id_token } => {
                        (Some(id_token), None, None, None)
                    }
                    crate::upstream::UpstreamSession::Saml {
                        name_id,
                        name_id_format,
                        session_index,
                    } => (None, Some(name_id), name_id_format, session_index),
                };
                store.insert_upstream_session(&UpstreamSessionRecord {
                    sid: r.sid.clone(),
                    upstream,
                    id_token,
                    name_id,
                    name_id_format,
                    session_index,
                    created_at: now,
                })?;
            }
            Ok(())
        })
        .await
    }

    /// Finishes the journey as read (`version`): single use.
    pub(crate) async fn finish(&self, id: &JourneyId, version: i64) -> Result<(), SignInError> {
        let (journeys, id) = (self.journeys.clone(), id.clone());
        blocking(move || Ok(journeys.finish_at(&id, version)?)).await
    }

    pub(crate) async fn finish_quietly(&self, id: &JourneyId, version: i64) {
        if let Err(e) = self.finish(id, version).await {
            tracing::debug!(error = %e, "journey already finished");
        }
    }
}
