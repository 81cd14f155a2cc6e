//! Owns the factor choice page of the second-factor steps and what it is built from: the
//! journey's user as a factor sees them ([`SignIn::factor_user`]), their factors and the facts the
//! policy reads ([`SignIn::facts`]), and the choice itself (straight to the only factor when there
//! is nothing to choose).

use std::sync::Arc;

use crate::domain::{Locale, UserId};
use crate::flow::contract::{Browser, Next, Notice, Outcome, View};
use crate::flow::journey::{JourneyId, Loaded};
use crate::flow::machine::{Journey, Proven, Stage};
use crate::flow::policy::{self, FactorFacts};
use crate::flow::signin::{SignIn, SignInError, blocking};
use crate::mfa::passkey_list;
use crate::mfa::{FactorStatus, FactorUser};

impl SignIn {
    /// The account a factor call is about, for a journey that must reach `level` (4: only a
    /// hardware key counts), with what its upstream kept; none when it is disabled or gone.
    pub(crate) async fn factor_user(
        &self,
        who: &Proven,
        locale: Locale,
        level: u8,
    ) -> Result<Option<FactorUser>, SignInError> {
        let store = Arc::clone(&self.store);
        let uid = UserId::from_stored(who.user_id.clone());
        let upstream = who.upstream.clone();
        let reads_claims = self.mfa.reads_claims();
        blocking(move || {
            let Some(u) = store.user_by_id(&uid)?.filter(|u| !u.disabled) else {
                return Ok(None);
            };
            // What the upstream of this sign-in kept for the user, from their link with it (a
            // password sign-in has none), read only when some plugin may read claims.
            let claims = if !reads_claims || upstream == crate::upstream::local::LOCAL_UPSTREAM_ID {
                Default::default()
            } else {
                store.upstream_claims(&upstream, &u.id)?.kept
            };
            Ok(Some(FactorUser {
                id: u.id,
                email: u.email.as_str().to_owned(),
                locale,
                hardware_only: level >= 4,
                claims,
            }))
        })
        .await
    }

    /// The user's factors as the policy needs them (`None`: no such user, or disabled).
    pub(crate) async fn facts(
        &self,
        j: &Journey,
        locale: Locale,
    ) -> Result<Option<(FactorFacts, Vec<FactorStatus>)>, SignInError> {
        let Some(who) = &j.who else {
            return Ok(None);
        };
        let Some(user) = self.factor_user(who, locale, j.mfa.level).await? else {
            return Ok(None);
        };
        let mfa = Arc::clone(&self.mfa);
        let (j, who, now) = (j.clone(), who.clone(), self.clock.now());
        blocking(move || {
            let mut factors = mfa.factors(&user)?;
            if j.mfa.level >= 3 {
                // Only a phishing-resistant factor ends this step. The user passes one they
                // have, or sets one up when allowed now; else they first pass a factor they
                // have (reaching multi-factor allows setting one up) and the policy asks again.
                let any_enrolled = factors.iter().any(|f| f.enrolled);
                let phr: Vec<FactorStatus> = factors
                    .iter()
                    .filter(|f| f.phishing_resistant)
                    .cloned()
                    .collect();
                let usable_phr = phr.iter().any(|f| f.enrolled && f.available);
                if phr.is_empty() || usable_phr || policy::may_add(&j, &who, any_enrolled, now) {
                    factors = phr;
                }
            }
            let recovery_left = mfa.recovery_codes_left(&user.id)?;
            Ok(Some((
                FactorFacts {
                    usable: factors.iter().any(|f| f.enrolled && f.available),
                    usable_enrolled: factors
                        .iter()
                        .any(|f| f.enrolled && f.available && f.needs_enrollment),
                    enrollable: factors.iter().any(|f| f.available && !f.enrolled),
                    recovery_left,
                },
                factors,
            )))
        })
        .await
    }

    /// The choice of factors (one usable factor and nothing to set up: straight to it).
    pub(crate) async fn choice(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        who: &Proven,
        status: u16,
        error: Option<Notice>,
    ) -> Result<Outcome, SignInError> {
        self.choice_or_only(browser, id, loaded, who, status, error, false)
            .await
    }

    /// The choice; with `auto`, straight to the only usable factor when nothing can be set up.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn choice_or_only(
        &self,
        browser: &Browser,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
        who: &Proven,
        status: u16,
        error: Option<Notice>,
        auto: bool,
    ) -> Result<Outcome, SignInError> {
        let Some((facts, factors)) = self.facts(&loaded.state, browser.locale).await? else {
            return Ok(Outcome::expired());
        };
        let any_enrolled = factors.iter().any(|f| f.enrolled);
        let may_enroll = policy::may_add(&loaded.state, who, any_enrolled, self.clock.now());
        let usable: Vec<&FactorStatus> = factors
            .iter()
            .filter(|f| f.enrolled && f.available)
            .collect();
        // Straight to the only factor, unless it would send something on a request that is not
        // a POST from the broker's page (a GET never sends: no code bombing, no push bombing).
        if auto
            && !may_enroll
            && let [only] = usable.as_slice()
            && (browser.posted || !only.sends)
        {
            let only = only.id.clone();
            return self
                .begin_factor(browser, id, loaded, who, &only, false)
                .await;
        }
        let phishing_resistant =
            (loaded.state.mfa.level >= 3).then(|| factors.iter().all(|f| f.phishing_resistant));
        let passkeys = if loaded.state.manage {
            let (store, uid) = (
                Arc::clone(&self.store),
                UserId::from_stored(who.user_id.clone()),
            );
            blocking(move || Ok(passkey_list::list(store.as_ref(), &uid)?)).await?
        } else {
            Vec::new()
        };
        loaded.state.stage = Stage::Mfa;
        loaded.state.mfa.factor = None;
        loaded.state.mfa.prompt = None;
        loaded.state.mfa.enrolling = false;
        self.save(id, loaded).await?;
        Ok(self.page_outcome(
            &loaded.state,
            Next::Page {
                status,
                journey: Some(id.clone()),
                view: View::MfaChoose {
                    factors,
                    may_enroll,
                    recovery: facts.recovery_left > 0,
                    error,
                    step_up: loaded.state.step_up.is_some(),
                    manage: loaded.state.manage,
                    phishing_resistant,
                    passkeys,
                },
            },
        ))
    }
}
