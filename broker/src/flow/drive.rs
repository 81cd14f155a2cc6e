//! Owns the order of the journey as pages: asks [`super::machine::next`] what comes next and does it (a page, a redirect to an upstream, the second-factor policy, the end), and shows the current step again for an event that is not valid at it.

use crate::flow::contract::{Browser, Next, Outcome, View};
use crate::flow::journey::{JourneyId, Loaded};
use crate::flow::machine::{self, Journey, Stage, Want};
use crate::flow::policy::{self, MfaDecision, MfaNeed};
use crate::flow::signin::{SignIn, SignInError, upstream_start_path};

impl SignIn {
    /// Asks the machine what comes next and does it, until a page or the end.
    pub(crate) async fn drive(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
    ) -> Result<Outcome, SignInError> {
        loop {
            let want = machine::next(&loaded.state, |e| self.realm_of(e));
            match want {
                Want::FirstFactor { route_to: Some(up) } => {
                    return Ok(Outcome::new(Next::Redirect(upstream_start_path(&up, id))));
                }
                Want::FirstFactor { route_to: None } => {
                    let mut changed = loaded.state.stage != Stage::FirstFactor;
                    loaded.state.stage = Stage::FirstFactor;
                    changed |= self.offer_passkey(&mut loaded.state).await?;
                    if changed {
                        self.save(id, loaded).await?;
                    }
                    let email = loaded.state.login_hint.clone().unwrap_or_default();
                    return Ok(self.page_outcome(
                        &loaded.state,
                        Next::Page {
                            status: 200,
                            journey: Some(id.clone()),
                            view: View::Login {
                                email,
                                error: None,
                                linking: false,
                                passkey: None,
                            },
                        },
                    ));
                }
                Want::LinkProof => {
                    let email = loaded
                        .state
                        .link
                        .as_ref()
                        .map(|l| l.email.clone())
                        .unwrap_or_default();
                    return Ok(self.page_outcome(
                        &loaded.state,
                        Next::Page {
                            status: 200,
                            journey: Some(id.clone()),
                            view: View::Login {
                                email,
                                error: Some("error_link_required"),
                                linking: true,
                                passkey: None,
                            },
                        },
                    ));
                }
                Want::SecondFactor => {
                    let Some(who) = loaded.state.who.clone() else {
                        return Ok(Outcome::expired());
                    };
                    // A page already open (GET of the journey again): show it.
                    if loaded.state.stage == Stage::Mfa && loaded.state.mfa.factor.is_some() {
                        return Ok(self.form_page(id, &loaded.state, 200, None));
                    }
                    if loaded.state.mfa.awaiting_codes_ack.is_some() {
                        return Ok(Outcome::expired());
                    }
                    // Managing factors: the choice, whatever the session's level.
                    if loaded.state.manage {
                        return self
                            .choice_or_only(browser, id, loaded, &who, 200, None, false)
                            .await;
                    }
                    let party = self.party(&loaded.state).await?;
                    let party_mfa = party.policy().and_then(|p| p.mfa);
                    let upstream = self.upstream_config(&who.upstream);
                    match policy::mfa_need(
                        self.settings.mfa_default,
                        party_mfa,
                        upstream,
                        &loaded.state,
                    ) {
                        MfaNeed::Met => {
                            machine::second_factor_settled(&mut loaded.state);
                            continue;
                        }
                        MfaNeed::Facts { required, level } => {
                            loaded.state.mfa.level = level;
                            let Some((facts, _)) =
                                self.facts(&loaded.state, browser.locale).await?
                            else {
                                // A missing or disabled account: the session step refuses it.
                                machine::second_factor_settled(&mut loaded.state);
                                continue;
                            };
                            match policy::mfa_decision(
                                required,
                                facts,
                                self.settings.optional_counts_implicit_factors,
                            ) {
                                MfaDecision::Skip => {
                                    machine::second_factor_settled(&mut loaded.state);
                                    continue;
                                }
                                MfaDecision::NoFactor => {
                                    return Ok(Outcome::message(503, "mfa_unavailable_message"));
                                }
                                MfaDecision::Ask => {
                                    loaded.state.mfa.required = required;
                                    return self
                                        .choice_or_only(browser, id, loaded, &who, 200, None, true)
                                        .await;
                                }
                            }
                        }
                    }
                }
                Want::Session => return self.complete(browser, id, loaded).await,
            }
        }
    }

    /// A form of another step than the one the journey is at (a stale page, a second tab, a
    /// forged post): it changes nothing, and the page of the current step is shown again,
    /// without sending anything.
    pub(crate) async fn stale(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
    ) -> Result<Outcome, SignInError> {
        tracing::debug!(stage = ?loaded.state.stage, "event not valid at this stage");
        let quiet = Browser {
            posted: false,
            ..browser.clone()
        };
        self.drive(&quiet, id, loaded).await
    }
}
