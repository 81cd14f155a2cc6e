//! Owns the broker's own SAML Single Logout to its SPs: when a browser's session ends (the
//! broker's sign-out, `signout.rs`, or one SP's LogoutRequest, `saml_slo.rs`), the browser goes
//! through each other SAML SP of the session with a signed LogoutRequest
//! (`saml_idp::logout_out`), one after the other, each SP's LogoutResponse coming back to
//! `/saml/idp/slo`, and then on to where the sign-out was going (the upstream's logout, then the
//! signed-out page, or the LogoutResponse to the SP that asked, whose status is known only now).
//! The chain's state is server-side, in the logout continuation keyed by the RelayState sent to
//! the SP at hand; a LogoutResponse that fails is recorded and the chain goes on, the end then
//! saying that some app may not have signed out (the signed-out page, or `PartialLogout`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::contract::Outcome;
use super::signin::{SignIn, SignInError, blocking};
use super::signout::UpstreamLogout;
use crate::audit::{Event, EventKind};
use crate::provider::logout::SessionEnded;
use crate::saml_idp::LogoutStatus;
use crate::saml_idp::logout_out::LogoutAnswer;
use crate::storage::{LogoutContinuation, SessionRecord};

/// How long the browser may take at one SP.
const SP_LOGOUT_TTL: i64 = 300;
/// The prefix of a continuation's `upstream` for a chain link at an SP (upstream ids are
/// `[a-z0-9_-]`: never one of theirs).
const SP_LINK: &str = "sp:";
/// The signed-out page when some SP may not have signed out.
const PARTIAL_PAGE: &str = "/signed-out?partial=1";

/// An SP still to visit: the NameID it received for the session's user.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stop {
    entity_id: String,
    format: String,
    name_id: String,
}

/// The SP whose LogoutRequest started the sign-out: it is answered at the chain's end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpAnswer {
    pub entity_id: String,
    /// Its LogoutRequest's `ID`.
    pub in_response_to: String,
    pub relay_state: Option<String>,
    /// Some participant outside the chain was not told (an OpenID app without back-channel
    /// logout, an upstream whose logout could not start, another session's SP).
    pub partial: bool,
}

/// The chain's state, kept in the continuation of the link the browser is at.
#[derive(Debug, Serialize, Deserialize)]
struct Chain {
    sid: String,
    rest: Vec<Stop>,
    /// Some SP was not told, or did not answer Success.
    partial: bool,
    /// Where the browser goes after the last SP (the upstream's logout, or where the sign-out
    /// was going).
    after: String,
    /// The relay hash of the upstream logout's continuation, whose `then` is where the sign-out
    /// was going.
    upstream_relay: Option<[u8; 32]>,
    /// The SP that started the sign-out, answered last (its answer is where it was going).
    #[serde(default)]
    answer: Option<SpAnswer>,
}

/// The signed-out page, saying that some app may not have signed out; any other target as it is.
fn partial_page(then: String) -> String {
    if then == "/signed-out" {
        PARTIAL_PAGE.to_owned()
    } else {
        then
    }
}

impl SignIn {
    /// After the browser's session ended (`ended`: its record and what ending it told): where the
    /// browser goes, through the SAML SPs of the session, then the upstream's logout (`hop`),
    /// then `then`.
    pub async fn logout_chain(
        &self,
        ended: Option<(SessionRecord, SessionEnded)>,
        hop: UpstreamLogout,
        then: String,
    ) -> Result<String, SignInError> {
        let Some((record, told)) = ended else {
            return self.then_upstream(hop, then).await;
        };
        self.chain(&record, &told, hop, then, None).await
    }

    /// After an SP's LogoutRequest ended the browser's session (`record`, `told`): through the
    /// session's other SAML SPs and the upstream's logout (`hop`), then to the LogoutResponse
    /// `answer` describes, Success or PartialLogout as the whole chain went.
    pub async fn logout_chain_answering(
        &self,
        record: &SessionRecord,
        told: &SessionEnded,
        hop: UpstreamLogout,
        answer: SpAnswer,
    ) -> Result<String, SignInError> {
        // A placeholder: the chain's end puts the LogoutResponse where the sign-out goes.
        let then = "/signed-out".to_owned();
        self.chain(record, told, hop, then, Some(answer)).await
    }

    async fn chain(
        &self,
        record: &SessionRecord,
        told: &SessionEnded,
        hop: UpstreamLogout,
        then: String,
        answer: Option<SpAnswer>,
    ) -> Result<String, SignInError> {
        let asker = answer.as_ref().map(|a| a.entity_id.clone());
        let sps: Vec<String> = told
            .untold
            .iter()
            .filter_map(|p| p.strip_prefix("saml:").map(str::to_owned))
            .filter(|sp| asker.as_ref() != Some(sp))
            .collect();
        if sps.is_empty() && answer.is_none() {
            return self.then_upstream(hop, then).await;
        }
        let idp = Arc::clone(&self.saml);
        let (user_id, sid) = (record.user_id.clone(), record.sid.clone());
        let (rest, partial) = blocking(move || {
            let user = idp.store.user_by_id(&user_id)?;
            let (mut rest, mut partial) = (Vec::new(), false);
            for entity_id in sps {
                let stop = match (&user, idp.app(&entity_id)?) {
                    (Some(u), Some(app)) if app.slo_url.is_some() => idp
                        .name_id_for(&app, u.id.as_str(), u.email.as_str(), &sid)
                        .ok()
                        .map(|(format, name_id)| Stop {
                            entity_id: entity_id.clone(),
                            format: format.to_owned(),
                            name_id,
                        }),
                    _ => None,
                };
                match stop {
                    Some(s) => rest.push(s),
                    None => partial = true,
                }
            }
            Ok((rest, partial))
        })
        .await?;
        let upstream_relay = match &hop {
            UpstreamLogout::Go { relay, .. } => Some(Sha256::digest(relay.as_bytes()).into()),
            _ => None,
        };
        let after = self.then_upstream(hop, then).await?;
        let chain = Chain {
            sid: record.sid.clone(),
            rest,
            partial,
            after,
            upstream_relay,
            answer,
        };
        self.next_sp(chain).await
    }

    /// The next link of the chain: the LogoutRequest to its next SP (the chain kept under the
    /// request's RelayState), or, after the last, where the sign-out was going.
    async fn next_sp(&self, mut chain: Chain) -> Result<String, SignInError> {
        while !chain.rest.is_empty() {
            let stop = chain.rest.remove(0);
            let relay = super::signin::random_token(self.entropy.as_ref());
            let (idp, sp) = (Arc::clone(&self.saml), stop.entity_id.clone());
            let app = blocking(move || Ok(idp.app(&sp)?))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(sp = %stop.entity_id, error = %e, "SAML SP not read");
                    None
                });
            let request = app.map(|app| {
                self.saml
                    .logout_request(&app, &stop.format, &stop.name_id, &chain.sid, &relay)
            });
            let (url, request_id) = match request {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    tracing::warn!(sp = %stop.entity_id, error = %e, "SAML LogoutRequest not sent");
                    chain.partial = true;
                    continue;
                }
                None => {
                    chain.partial = true;
                    continue;
                }
            };
            let record = LogoutContinuation {
                relay_hash: Sha256::digest(relay.as_bytes()).into(),
                upstream: format!("{SP_LINK}{}", stop.entity_id),
                request_id,
                then: serde_json::to_string(&chain).map_err(SignInError::internal)?,
                expires_at: self.clock.now().saturating_add(SP_LOGOUT_TTL),
            };
            let store = Arc::clone(&self.store);
            blocking(move || Ok(store.insert_logout_continuation(&record)?)).await?;
            return Ok(url.to_string());
        }
        // Where the sign-out was going, now that the chain is over: the LogoutResponse to the SP
        // that asked (its status known only now), or the signed-out page saying partial.
        let end = match &chain.answer {
            Some(a) => Some(self.answer_sp(a, chain.partial).await?),
            None if chain.partial => None,
            None => return Ok(chain.after),
        };
        let Some(hash) = chain.upstream_relay else {
            return Ok(end.unwrap_or_else(|| partial_page(chain.after)));
        };
        // The upstream's logout comes first: where it goes afterwards changes.
        let (store, now) = (Arc::clone(&self.store), self.clock.now());
        blocking(move || {
            if let Some(mut c) = store.take_logout_continuation(&hash, now)? {
                c.then = end.unwrap_or_else(|| partial_page(c.then));
                store.insert_logout_continuation(&c)?;
            }
            Ok(())
        })
        .await?;
        Ok(chain.after)
    }

    /// The signed LogoutResponse to the SP that started the sign-out: Success, or PartialLogout
    /// when some participant (`chain_partial`, or one outside the chain) was not told.
    async fn answer_sp(&self, a: &SpAnswer, chain_partial: bool) -> Result<String, SignInError> {
        let (idp, sp) = (Arc::clone(&self.saml), a.entity_id.clone());
        let app = blocking(move || Ok(idp.app(&sp)?))
            .await?
            .ok_or_else(|| SignInError::internal("the SP that asked is no longer registered"))?;
        let status = if chain_partial || a.partial {
            LogoutStatus::Partial
        } else {
            LogoutStatus::Success
        };
        tracing::info!(sp = %a.entity_id, partial = chain_partial || a.partial, "SAML LogoutRequest answered");
        let url = self
            .saml
            .logout_response(&app, &a.in_response_to, a.relay_state.as_deref(), status)
            .map_err(SignInError::internal)?;
        Ok(url.to_string())
    }

    /// `/saml/idp/slo` with a `SAMLResponse` (GET or POST): an SP's answer to the broker's
    /// LogoutRequest. Checked against the request of the chain link its RelayState names (taken:
    /// single use); a failure is recorded and the chain goes on. A RelayState of no chain gets a
    /// page.
    pub async fn saml_sp_logged_out(&self, answer: LogoutAnswer) -> Result<Outcome, SignInError> {
        let relay = answer.relay_state();
        let (store, now) = (Arc::clone(&self.store), self.clock.now());
        let hash: [u8; 32] = Sha256::digest(relay.as_bytes()).into();
        let link = blocking(move || Ok(store.take_logout_continuation(&hash, now)?)).await?;
        let Some((entity_id, link)) = link.and_then(|l| {
            l.upstream
                .strip_prefix(SP_LINK)
                .map(str::to_owned)
                .map(|e| (e, l))
        }) else {
            tracing::info!("SAML LogoutResponse of no logout under way refused");
            self.audit_logout_response(None, "no_logout_under_way");
            return Ok(Outcome::message(400, "error_400_message"));
        };
        let mut chain: Chain = serde_json::from_str(&link.then).map_err(SignInError::internal)?;
        let idp = Arc::clone(&self.saml);
        let (sp, request_id) = (entity_id.clone(), link.request_id);
        let checked = blocking(move || {
            Ok(match idp.app(&sp)? {
                Some(app) => idp.sp_logout_response(&app, &answer, &request_id),
                None => Err(crate::upstream::saml::SamlError::Issuer),
            })
        })
        .await?;
        match checked {
            Ok(()) => tracing::info!(sp = %entity_id, "signed out at the SAML SP"),
            Err(e) => {
                tracing::warn!(sp = %entity_id, reason = %e, "SAML LogoutResponse refused");
                self.audit_logout_response(Some(&entity_id), e.check());
                chain.partial = true;
            }
        }
        Ok(Outcome::redirect(self.next_sp(chain).await?))
    }

    /// A refused LogoutResponse on the audit trail (`login_failed`, as a refused LogoutRequest
    /// is): the sign-out it answers is reported partial, and an operator can see which SP and
    /// why (`saml_logout_response_refused:<check>`, the SP in `client_id`).
    fn audit_logout_response(&self, sp: Option<&str>, check: &str) {
        let mut event = Event::new(EventKind::LoginFailed)
            .reason(format!("saml_logout_response_refused:{check}"));
        if let Some(sp) = sp {
            event = event.client(sp);
        }
        self.provider.audit.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_signed_out_page_says_partial() {
        assert_eq!(partial_page("/signed-out".into()), PARTIAL_PAGE);
        assert_eq!(
            partial_page("https://app.example/bye".into()),
            "https://app.example/bye"
        );
    }
}
