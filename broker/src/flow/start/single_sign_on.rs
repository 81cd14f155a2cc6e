//! Owns the single sign-on decision, whatever protocol the request came in by: a relying party's
//! request has arrived (parsed by its start, e.g. `authorize.rs`); with a good-enough session it
//! is answered at once (after a step-up when the party's MFA policy or the levels it asks for
//! want more), else a journey starts and its sign-in page renders at once.

use crate::domain::Locale;
use crate::flow::answer::{Refusal, Request, Resolved};
use crate::flow::contract::{Browser, CookieOp, Outcome};
use crate::flow::machine::{Journey, Stage, Target};
use crate::flow::policy::{self, MfaDecision, MfaNeed};
use crate::flow::signin::{SignIn, SignInError, blocking, bound_to, proven_of};
use crate::storage::SessionRecord;

/// A relying party's request, parsed by its protocol's start.
pub(crate) struct Arrival {
    /// What the journey keeps of it.
    pub request: Request,
    /// The party as registered now (its policy and its answers).
    pub party: Box<dyn Resolved>,
    /// The browser's session, checked.
    pub session: Option<SessionRecord>,
    /// The request wants a sign-in whatever the session (OpenID `prompt=login`, `max_age`; SAML
    /// `ForceAuthn`), or there is no session.
    pub needs_login: bool,
    /// No page may be shown (OpenID `prompt=none`; SAML `IsPassive`).
    pub passive: bool,
    pub login_hint: Option<String>,
    /// An upstream to go to straight away (offered only when it is one of the buttons).
    pub idp_hint: Option<String>,
}

impl SignIn {
    /// Answers `a` at once from the session when it is good enough for the party, else starts
    /// the journey that will (a sign-in, or a step-up of the session).
    pub(crate) async fn arrive(
        &self,
        browser: &Browser,
        a: Arrival,
    ) -> Result<Outcome, SignInError> {
        let env = self.answer_env();
        let session = match a.session {
            Some(s) if !a.needs_login => s,
            _ => {
                if a.passive {
                    let party = a.party;
                    return blocking(move || Ok(party.refuse(&env, &Refusal::LoginRequired))).await;
                }
                let mut j = Journey::new(Target::App(a.request));
                j.login_hint = a.login_hint;
                j.idp_hint = a
                    .idp_hint
                    .filter(|id| self.upstreams.buttons().any(|u| u.id == *id));
                return self.start_and_drive(browser, j).await;
            }
        };
        // The party's MFA policy, again on single sign-on.
        let mut probe = Journey::new(Target::App(a.request));
        probe.who = Some(proven_of(&session));
        if self
            .needs_second_factor(&probe, a.party.party().mfa)
            .await?
        {
            if a.passive {
                let party = a.party;
                return blocking(move || Ok(party.refuse(&env, &Refusal::InteractionRequired)))
                    .await;
            }
            probe.step_up = Some(session.sid.clone());
            probe.stage = Stage::Mfa;
            return self.start_and_drive(browser, probe).await;
        }
        let party = a.party;
        blocking(move || Ok(party.answer(&env, &session)?)).await
    }

    /// Whether the session `probe.who` describes must pass a second factor for the party of
    /// `probe`, whose own requirement is `party_mfa` (required, `acr_values`, or optional with a
    /// usable enrolled factor). Blocking reads only when the policy is optional.
    pub(crate) async fn needs_second_factor(
        &self,
        probe: &Journey,
        party_mfa: Option<crate::domain::policy::MfaRequirement>,
    ) -> Result<bool, SignInError> {
        let upstream = probe
            .who
            .as_ref()
            .and_then(|w| self.upstream_config(&w.upstream));
        match policy::mfa_need(self.settings.mfa_default, party_mfa, upstream, probe) {
            MfaNeed::Met => Ok(false),
            MfaNeed::Facts { required: true, .. } => Ok(true),
            MfaNeed::Facts {
                required: false, ..
            } => {
                let facts = self.facts(probe, Locale::En).await?;
                Ok(facts.is_some_and(|(f, _)| {
                    policy::mfa_decision(false, f, self.settings.optional_counts_implicit_factors)
                        == MfaDecision::Ask
                }))
            }
        }
    }

    /// Starts a journey and shows its first page right away (the sign-in page at the request's
    /// URL itself: no extra redirect and read).
    pub(crate) async fn start_and_drive(
        &self,
        browser: &Browser,
        mut j: Journey,
    ) -> Result<Outcome, SignInError> {
        // A journey that starts at the sign-in page is stored with its passkey challenge (one
        // write, not an insert and then an update when the page is shown).
        if j.who.is_none() {
            self.offer_passkey(&mut j).await?;
        }
        let (id, mut loaded, new_binding) = self.begin(browser, j).await?;
        let browser = &bound_to(browser, new_binding.as_deref());
        let mut out = self.drive(browser, &id, &mut loaded).await?;
        if let Some(b) = new_binding {
            out = out.with_cookie(CookieOp::Binding(b));
        }
        Ok(out)
    }
}
