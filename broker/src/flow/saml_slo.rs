//! Owns SP-initiated SAML Single Logout at the broker's IdP: an SP's LogoutRequest (read and
//! checked by `saml_idp::logout_request`, its ID used once) ends the broker session it names
//! through the sign-out machinery (`signout.rs`: refresh tokens revoked, back-channel logout to
//! the OpenID apps; the session's other SAML SPs through the chain of `saml_slo_out.rs`; the
//! upstream's logout), and the SP gets a signed LogoutResponse, Success, or with PartialLogout
//! when some participant of the session could not be told. A refused request gets a page and
//! ends nothing.

use std::sync::Arc;

use super::contract::{Browser, CookieOp, Outcome};
use super::saml_slo_out::SpAnswer;
use super::signin::{SignIn, SignInError, blocking};
use super::signout::UpstreamLogout;
use super::start::saml_sso::SamlBinding;
use crate::audit::{Event, EventKind};
use crate::config::saml_apps::SamlApp;
use crate::provider::logout::Ending;
use crate::saml_idp::logout_out::LogoutAnswer;
use crate::saml_idp::logout_request::{Checked, LogoutRequest};
use crate::saml_idp::{LogoutStatus, SamlIdp};
use crate::storage::SessionRecord;
use crate::upstream::saml::SamlError;
use crate::upstream::saml::crypto::redirect_query;

/// What a checked LogoutRequest leads to.
enum Verdict {
    Refused(SamlError),
    /// An HTTP-POST request without the session cookie: the same request again as HTTP-Redirect
    /// (a top-level GET, which carries the SameSite=Lax cookie).
    AsRedirect(String),
    Go(Box<Checked>),
}

/// Whether `session` is the one the request names: the NameID the SP got in it (the user's
/// email or pairwise id, or the session's transient id), and (when the request names any) one
/// of its SessionIndexes.
fn names(
    idp: &SamlIdp,
    app: &SamlApp,
    r: &LogoutRequest,
    session: &SessionRecord,
) -> Result<bool, SignInError> {
    if !r.session_indexes.is_empty() && !r.session_indexes.contains(&session.sid) {
        return Ok(false);
    }
    let Some(user) = idp.store.user_by_id(&session.user_id)? else {
        return Ok(false);
    };
    let (_, name_id) = idp
        .name_id_for(app, user.id.as_str(), user.email.as_str(), &session.sid)
        .map_err(SignInError::internal)?;
    Ok(name_id == r.name_id)
}

impl SignIn {
    /// `/saml/idp/slo`: an SP's LogoutResponse to the broker's own request
    /// (`saml_slo_out.rs`), or its LogoutRequest. The browser's own session ends when it is the
    /// one named (its cookie cleared, then through the upstream's logout); a signed request may
    /// also end the sessions its SessionIndexes name elsewhere. Then the LogoutResponse.
    pub async fn saml_idp_slo(
        &self,
        browser: &Browser,
        binding: SamlBinding,
    ) -> Result<Outcome, SignInError> {
        match &binding {
            SamlBinding::Redirect(q)
                if url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "SAMLResponse") =>
            {
                return self
                    .saml_sp_logged_out(LogoutAnswer::Redirect(q.clone()))
                    .await;
            }
            SamlBinding::PostAnswer {
                saml_response,
                relay_state,
            } => {
                let answer = LogoutAnswer::Post {
                    saml_response: saml_response.clone(),
                    relay_state: relay_state.clone(),
                };
                return self.saml_sp_logged_out(answer).await;
            }
            _ => {}
        }
        let idp = Arc::clone(&self.saml);
        let has_cookie = browser.session.is_some();
        let verdict = blocking(move || {
            let read = match binding {
                SamlBinding::Redirect(q) => idp.logout_request_redirect(&q),
                SamlBinding::Post {
                    saml_request,
                    relay_state,
                } => idp.logout_request_post(&saml_request, relay_state),
                SamlBinding::PostAnswer { .. } => Err(SamlError::Malformed("not a request".into())),
            };
            let c = match read {
                Ok(c) => c,
                Err(e) => return Ok(Verdict::Refused(e)),
            };
            // SAML Profiles 4.4.4.1: a LogoutRequest over a front-channel binding MUST be signed.
            // An unsigned one would let any site end a user's session by sending the browser
            // here (a GET): only an SP with `signing_cert_file` can log users out.
            if !c.signed {
                return Ok(Verdict::Refused(SamlError::Unsigned));
            }
            if let Some(doc) = c.post_document.as_deref().filter(|_| !has_cookie) {
                let q = redirect_query("SAMLRequest", doc, c.relay_state.as_deref(), None)
                    .map_err(SignInError::internal)?;
                return Ok(Verdict::AsRedirect(format!("{}?{q}", idp.slo_url)));
            }
            let issued = c.request.issue_instant.unwrap_or_default();
            if !idp.use_request_id(&c.app.entity_id, "LogoutRequest", &c.request.id, issued)? {
                return Ok(Verdict::Refused(SamlError::Replayed));
            }
            Ok(Verdict::Go(Box::new(c)))
        })
        .await?;
        let c = match verdict {
            Verdict::Go(c) => *c,
            Verdict::AsRedirect(to) => return Ok(Outcome::redirect(to)),
            Verdict::Refused(e) => {
                tracing::info!(reason = %e, "SAML LogoutRequest refused");
                self.provider.audit.record(
                    Event::new(EventKind::LoginFailed)
                        .ip(browser.ip.as_str())
                        .reason(format!("saml_logout_refused:{}", e.check())),
                );
                return Ok(Outcome::message(400, "error_400_message"));
            }
        };
        let party = format!("saml:{}", c.app.entity_id);
        let own = self.current_session(browser).await?;
        let idp = Arc::clone(&self.saml);
        let own_named = match own {
            Some(s) => {
                let (app, r) = (c.app.clone(), c.request.clone());
                blocking(move || names(&idp, &app, &r, &s)).await?
            }
            None => false,
        };
        let (mut ended, mut partial) = (0usize, false);
        let mut hop = UpstreamLogout::Nothing;
        let mut own = None;
        if own_named {
            let (upstream, told) = self.end_browser_session(browser, "saml_logout").await?;
            if let Some((record, t)) = told {
                ended += 1;
                // The session's other SAML SPs are told by the chain below; anyone else not told
                // (an OpenID app without back-channel logout) makes the logout partial.
                partial |= t.untold.iter().any(|p| !p.starts_with("saml:"));
                own = Some((record, t));
            }
            hop = self.upstream_logout(upstream).await?;
            partial |= matches!(hop, UpstreamLogout::Skipped);
        }
        // The request (signed: checked above) also ends the other sessions it names by
        // SessionIndex (not this browser's: their upstreams cannot be reached from here).
        {
            let (idp, provider) = (Arc::clone(&self.saml), Arc::clone(&self.provider));
            let (app, r) = (c.app.clone(), c.request.clone());
            let party = party.clone();
            let (n, p) = blocking(move || {
                let (mut n, mut p) = (0usize, false);
                for sid in &r.session_indexes {
                    let Some(s) = idp.store.session_by_sid(sid)? else {
                        continue;
                    };
                    if !names(&idp, &app, &r, &s)? {
                        continue;
                    }
                    let upstream = idp.store.upstream_session(&s.sid)?;
                    p |= upstream.is_some_and(|u| u.id_token.is_some() || u.name_id.is_some());
                    let ending = Ending::RequestedBy(party.clone());
                    let told = provider
                        .end_session_record_as(&s, "saml_logout", ending)
                        .map_err(SignInError::internal)?;
                    p |= told.untold.iter().any(|x| *x != party);
                    n += 1;
                }
                Ok((n, p))
            })
            .await?;
            ended += n;
            partial |= p;
        }
        if let Some((record, told)) = own {
            // This browser's session ended: through the session's other SAML SPs and the
            // upstream's logout, then the LogoutResponse, its status known at the chain's end.
            let answer = SpAnswer {
                entity_id: c.app.entity_id.clone(),
                in_response_to: c.request.id.clone(),
                relay_state: c.relay_state.clone(),
                partial,
            };
            let to = self
                .logout_chain_answering(&record, &told, hop, answer)
                .await?;
            return Ok(Outcome::redirect(to).with_cookie(CookieOp::ClearSession));
        }
        tracing::info!(sp = %c.app.entity_id, ended, partial, "SAML LogoutRequest answered");
        let status = match (ended, partial) {
            (0, _) => LogoutStatus::UnknownPrincipal,
            (_, true) => LogoutStatus::Partial,
            (_, false) => LogoutStatus::Success,
        };
        let response = self
            .saml
            .logout_response(&c.app, &c.request.id, c.relay_state.as_deref(), status)
            .map_err(SignInError::internal)?;
        let to = self.then_upstream(hop, response.to_string()).await?;
        let out = Outcome::redirect(to);
        Ok(if own_named {
            out.with_cookie(CookieOp::ClearSession)
        } else {
            out
        })
    }
}
