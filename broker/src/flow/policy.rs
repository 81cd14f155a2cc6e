//! Owns the MFA policy: whether a sign-in (or an app's authorization on an existing session)
//! needs a second factor, from the `[mfa]` default, the relying party's own requirement (an
//! OpenID client's `mfa` today; a SAML service provider's the same way: `domain::RelyingParty`),
//! the upstream (and whether its own MFA is trusted), and the levels the party asked for. Pure.

use crate::clock::UnixTime;
use crate::config::UpstreamConfig;
use crate::domain::auth::{SECOND_FACTOR_AMR, acr_level};
use crate::domain::policy::MfaRequirement;
use crate::flow::machine::{Journey, Proven};

/// Whether `acr_values` (space separated, most preferred first) asks for more than `level`:
/// the session satisfies the request when any value it names that the broker knows is at or
/// below the session's level (OIDC Core 3.1.2.1: the values are preferences).
pub fn acr_values_need_more(acr_values: Option<&str>, level: u8) -> bool {
    let known: Vec<u8> = acr_values
        .unwrap_or("")
        .split_whitespace()
        .filter_map(acr_level)
        .collect();
    !known.is_empty() && known.iter().all(|l| *l > level)
}

/// What the policy asks of this sign-in.
pub fn requirement(
    default: MfaRequirement,
    party: Option<MfaRequirement>,
    upstream: Option<&UpstreamConfig>,
    acr_values: Option<&str>,
) -> MfaRequirement {
    let mut r = party.unwrap_or(default);
    if let Some(u) = upstream.and_then(|u| u.mfa) {
        r = r.max(u);
    }
    if acr_values_need_more(acr_values, 2) {
        r = MfaRequirement::PhishingResistant;
    } else if acr_values_need_more(acr_values, 1) {
        r = r.max(MfaRequirement::Required);
    }
    r
}

/// Whether the upstream already did a second factor the operator trusts (its `amr`, or its
/// `acr` among the configured values).
pub fn upstream_mfa_trusted(
    upstream: Option<&UpstreamConfig>,
    amr: &[String],
    acr: Option<&str>,
) -> bool {
    let Some(u) = upstream.filter(|u| u.trust_upstream_mfa) else {
        return false;
    };
    amr.iter().any(|m| SECOND_FACTOR_AMR.contains(&m.as_str()))
        || acr.is_some_and(|a| u.mfa_acr_values.iter().any(|v| v == a))
}

/// `amr` plus `extra`, without repeats, in order.
pub fn merge_amr(amr: &[String], extra: &[String]) -> Vec<String> {
    let mut out = amr.to_vec();
    for m in extra {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

/// What the policy needs to know about the user's factors (read only when it matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorFacts {
    /// An enrolled factor whose plugin can run (one that needs no enrolment, like an email
    /// code to the account's address, counts when it can reach the user).
    pub usable: bool,
    /// A factor the user set up themselves (enrolled, not implicit) whose plugin can run.
    pub usable_enrolled: bool,
    /// A factor the user could set up now.
    pub enrollable: bool,
    pub recovery_left: i64,
}

/// What the second-factor policy says for this journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaNeed {
    /// Nothing (more) to ask.
    Met,
    /// The user's factors decide: read them, then call [`mfa_decision`]. `level` is the level
    /// the journey must reach (3: only a phishing-resistant factor ends it).
    Facts { required: bool, level: u8 },
}

/// Evaluates the MFA policy for the relying party the journey answers (and the upstream, and
/// the levels the party asked for). Pure.
pub fn mfa_need(
    default: MfaRequirement,
    party: Option<MfaRequirement>,
    upstream: Option<&crate::config::UpstreamConfig>,
    j: &Journey,
) -> MfaNeed {
    let Some(who) = &j.who else {
        return MfaNeed::Facts {
            required: true,
            level: 2,
        };
    };
    let mut required = requirement(default, party, upstream, j.acr_values());
    if j.step_up.is_some() {
        required = required.max(MfaRequirement::Required);
    }
    let level = required.level().max(2);
    // The level counts only what the evidence earns: an upstream's own `mfa` only where that
    // upstream is trusted for it (decided when its answer was recorded).
    if required == MfaRequirement::Off || who.level() >= level {
        return MfaNeed::Met;
    }
    MfaNeed::Facts {
        required: required.always(),
        level,
    }
}

/// What to do once the user's factors are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaDecision {
    /// `optional` and nothing usable: sign in without a second factor.
    Skip,
    /// Ask: the choice (or the only factor's challenge).
    Ask,
    /// Required, and no factor can run or be set up: fail closed.
    NoFactor,
}

/// `optional` with a usable enrolled factor asks for it (a factor that needs no enrolment
/// counts only when `implicit_counts`); `required` asks or fails closed.
pub fn mfa_decision(required: bool, f: FactorFacts, implicit_counts: bool) -> MfaDecision {
    let enrolled = if implicit_counts {
        f.usable
    } else {
        f.usable_enrolled
    };
    if !required && !enrolled {
        return MfaDecision::Skip;
    }
    if !f.usable && !f.enrollable && f.recovery_left == 0 {
        return MfaDecision::NoFactor;
    }
    MfaDecision::Ask
}

/// Whether a user may set up a new factor in this journey: only one with no factor yet, or one
/// who already passed a second factor (adding a method from the account page). Otherwise a
/// stolen password could enrol the thief's own authenticator and pass as MFA.
pub fn may_enroll(who: &Proven, any_enrolled: bool) -> bool {
    who.level() >= 2 || !any_enrolled
}

/// How recent a second factor must be to add or remove one from the account page.
pub const REPROOF_SECS: i64 = 300;

/// Whether the user may add or remove a factor from the account page now: one with no factor
/// yet, or one who proved a factor here within [`REPROOF_SECS`] (a session's old second factor is
/// not enough: a borrowed unlocked browser must not add the borrower's authenticator).
pub fn may_manage(who: &Proven, any_enrolled: bool, now: UnixTime) -> bool {
    !any_enrolled
        || who.evidence.iter().any(|p| {
            p.source == crate::domain::evidence::Source::Local
                && crate::domain::auth::SECOND_FACTOR_AMR.contains(&p.method.as_str())
                && p.at >= now.saturating_sub(REPROOF_SECS)
        })
}

/// Whether a factor may be set up in journey `j` now: [`may_manage`] in a journey started to
/// manage factors, else [`may_enroll`].
pub fn may_add(j: &Journey, who: &Proven, any_enrolled: bool, now: UnixTime) -> bool {
    if j.manage {
        may_manage(who, any_enrolled, now)
    } else {
        may_enroll(who, any_enrolled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::auth::{ACR_LOA1, ACR_LOA2, session_level};
    use MfaRequirement::*;

    use crate::domain::evidence::Proof;
    use crate::flow::machine::tests::{app, pwd};
    use crate::flow::machine::{Target, factor_reproven};

    #[test]
    fn a_session_already_at_the_second_level_needs_nothing_more() {
        let mut k = Journey::new(app(None));
        let mut strong = pwd("u");
        strong.evidence.push(Proof::local("mfa", 100));
        k.first_factor(strong, None);
        assert_eq!(mfa_need(Required, None, None, &k), MfaNeed::Met);
    }

    #[test]
    fn mfa_is_evaluated_for_the_client_receiving_the_code() {
        let mut j = Journey::new(app(None));
        j.first_factor(pwd("u"), None);
        use MfaRequirement::*;
        assert_eq!(mfa_need(Off, None, None, &j), MfaNeed::Met);
        assert_eq!(
            mfa_need(Off, Some(Optional), None, &j),
            MfaNeed::Facts {
                required: false,
                level: 2
            }
        );
        assert_eq!(
            mfa_need(Off, Some(Required), None, &j),
            MfaNeed::Facts {
                required: true,
                level: 2
            }
        );
        // acr_values asking for the second level make it required.
        let mut k = Journey::new(app(Some(crate::domain::auth::ACR_LOA2)));
        k.first_factor(pwd("u"), None);
        assert_eq!(
            mfa_need(Off, Some(Off), None, &k),
            MfaNeed::Facts {
                required: true,
                level: 2
            }
        );
        // A step-up is always required.
        j.step_up = Some("sid".into());
        assert_eq!(
            mfa_need(Off, Some(Off), None, &j),
            MfaNeed::Facts {
                required: true,
                level: 2
            }
        );
    }

    #[test]
    fn the_phishing_resistant_level_is_asked_by_the_party_or_its_acr_values() {
        use crate::domain::auth::{ACR_LOA2, ACR_LOA3};
        use MfaRequirement::*;
        let at_two = {
            let mut w = pwd("u");
            w.evidence.push(Proof::local("otp", 100));
            w
        };
        let at_three = {
            let mut w = at_two.clone();
            w.evidence.push(Proof::local("hwk", 100));
            w.evidence.push(Proof::local("phr", 100));
            w
        };
        let three = MfaNeed::Facts {
            required: true,
            level: 3,
        };
        for (acr, party) in [(Some(ACR_LOA3), None), (None, Some(PhishingResistant))] {
            let mut j = Journey::new(app(acr));
            j.first_factor(pwd("u"), None);
            assert_eq!(mfa_need(Off, party, None, &j), three, "{acr:?} {party:?}");
            j.first_factor(at_two.clone(), None);
            assert_eq!(mfa_need(Off, party, None, &j), three, "{acr:?} {party:?}");
            j.first_factor(at_three.clone(), None);
            assert_eq!(mfa_need(Off, party, None, &j), MfaNeed::Met);
        }
        // Preferences: a list that names a level the session has is met by it.
        let mut j = Journey::new(app(Some(&format!("{ACR_LOA3} {ACR_LOA2}"))));
        j.first_factor(at_two.clone(), None);
        assert_eq!(mfa_need(Off, None, None, &j), MfaNeed::Met);
        // A step-up keeps the party's higher level.
        let mut j = Journey::new(app(None));
        j.first_factor(at_two, None);
        j.step_up = Some("sid".into());
        assert_eq!(mfa_need(Off, Some(PhishingResistant), None, &j), three);
        assert_eq!(
            requirement(Required, None, None, Some(ACR_LOA3)),
            PhishingResistant
        );
    }

    #[test]
    fn optional_with_an_enrolled_factor_asks_for_it() {
        let some = FactorFacts {
            usable: true,
            usable_enrolled: true,
            enrollable: false,
            recovery_left: 0,
        };
        let none = FactorFacts {
            usable: false,
            usable_enrolled: false,
            enrollable: true,
            recovery_left: 0,
        };
        let nothing = FactorFacts {
            usable: false,
            usable_enrolled: false,
            enrollable: false,
            recovery_left: 0,
        };
        // Only an email code, which needs no enrolment.
        let implicit = FactorFacts {
            usable: true,
            usable_enrolled: false,
            enrollable: true,
            recovery_left: 0,
        };
        for counts in [false, true] {
            assert_eq!(mfa_decision(false, some, counts), MfaDecision::Ask);
            assert_eq!(mfa_decision(false, none, counts), MfaDecision::Skip);
            assert_eq!(mfa_decision(true, none, counts), MfaDecision::Ask);
            assert_eq!(mfa_decision(true, nothing, counts), MfaDecision::NoFactor);
            assert_eq!(mfa_decision(false, nothing, counts), MfaDecision::Skip);
            assert_eq!(mfa_decision(true, implicit, counts), MfaDecision::Ask);
        }
        // `optional` asks only users who enrolled a factor, unless implicit factors count.
        assert_eq!(mfa_decision(false, implicit, false), MfaDecision::Skip);
        assert_eq!(mfa_decision(false, implicit, true), MfaDecision::Ask);
    }

    #[test]
    fn an_untrusted_upstream_saying_mfa_is_asked_for_the_broker_factor() {
        use crate::domain::evidence::Proof;
        let claims = vec!["pwd".to_owned(), "mfa".to_owned()];
        let mut j = Journey::new(app(None));
        j.first_factor(
            Proven {
                user_id: "u".into(),
                upstream: "corp".into(),
                evidence: Proof::from_upstream("corp", &claims, false, 100),
                acr: None,
            },
            None,
        );
        assert_eq!(
            mfa_need(
                MfaRequirement::Off,
                Some(MfaRequirement::Required),
                None,
                &j
            ),
            MfaNeed::Facts {
                required: true,
                level: 2
            }
        );
        let mut k = Journey::new(app(None));
        k.first_factor(
            Proven {
                user_id: "u".into(),
                upstream: "corp".into(),
                evidence: Proof::from_upstream("corp", &claims, true, 100),
                acr: None,
            },
            None,
        );
        assert_eq!(
            mfa_need(
                MfaRequirement::Off,
                Some(MfaRequirement::Required),
                None,
                &k
            ),
            MfaNeed::Met
        );
    }

    #[test]
    fn enrolment_needs_the_existing_factor_first() {
        assert!(may_enroll(&pwd("u"), false));
        assert!(!may_enroll(&pwd("u"), true));
        let mut strong = pwd("u");
        strong.evidence.push(Proof::local("mfa", 100));
        assert!(may_enroll(&strong, true));
        // An upstream's word is not enough to add a factor.
        let mut claimed = pwd("u");
        claimed.evidence = Proof::from_upstream("corp", &["mfa".into()], false, 100);
        assert!(!may_enroll(&claimed, true));
    }

    #[test]
    fn managing_factors_needs_a_recent_factor_proven_here() {
        let mut who = pwd("u");
        assert!(may_manage(&who, false, 1_000), "nothing enrolled yet");
        assert!(!may_manage(&who, true, 1_000));
        // The session's second factor, an hour old: not enough.
        who.evidence.push(Proof::local("otp", 1_000 - 3_600));
        assert!(!may_manage(&who, true, 1_000));
        // An upstream's word: never.
        who.evidence
            .extend(Proof::from_upstream("corp", &["otp".into()], true, 1_000));
        assert!(!may_manage(&who, true, 1_000));
        let mut j = Journey::new(Target::Local("/account".into()));
        j.first_factor(who, None);
        j.manage = true;
        factor_reproven(&mut j, &["otp".into(), "mfa".into()], 990);
        assert!(!j.mfa.satisfied, "the journey stays at the choice");
        assert!(may_manage(j.who.as_ref().unwrap(), true, 1_000));
        assert!(!may_manage(
            j.who.as_ref().unwrap(),
            true,
            990 + REPROOF_SECS + 1
        ));
    }

    fn upstream(mfa: Option<MfaRequirement>, trust: bool) -> UpstreamConfig {
        UpstreamConfig {
            id: "corp".into(),
            name: None,
            link_by_verified_email: false,
            domains: vec![],
            mfa,
            trust_upstream_mfa: trust,
            mfa_acr_values: vec!["http://schemas.microsoft.com/claims/multipleauthn".into()],
            kind: crate::config::UpstreamKind::Oidc(crate::config::OidcUpstreamConfig {
                issuer: "https://idp.example".into(),
                client_id: "c".into(),
                client_secret: "s".into(),
                scopes: vec![],
                claims: Default::default(),
                client_auth: Default::default(),
            }),
        }
    }

    #[test]
    fn client_overrides_the_default_and_upstreams_raise_it() {
        assert_eq!(requirement(Off, None, None, None), Off);
        assert_eq!(requirement(Required, Some(Off), None, None), Off);
        assert_eq!(requirement(Off, Some(Optional), None, None), Optional);
        let u = upstream(Some(Required), false);
        assert_eq!(requirement(Off, Some(Off), Some(&u), None), Required);
        assert_eq!(requirement(Off, None, None, Some(ACR_LOA2)), Required);
        assert_eq!(requirement(Off, None, None, Some("urn:other")), Off);
    }

    #[test]
    fn acr_values_are_preferences() {
        assert!(acr_values_need_more(Some(ACR_LOA2), 1));
        assert!(!acr_values_need_more(Some(ACR_LOA2), 2));
        assert!(!acr_values_need_more(
            Some(&format!("{ACR_LOA2} {ACR_LOA1}")),
            1
        ));
        assert!(!acr_values_need_more(None, 1));
        assert!(!acr_values_need_more(Some("urn:unknown"), 1));
    }

    #[test]
    fn upstream_mfa_counts_only_when_trusted() {
        let amr = vec!["pwd".to_owned(), "otp".to_owned()];
        assert!(!upstream_mfa_trusted(
            Some(&upstream(None, false)),
            &amr,
            None
        ));
        assert!(upstream_mfa_trusted(
            Some(&upstream(None, true)),
            &amr,
            None
        ));
        let pwd = vec!["pwd".to_owned()];
        assert!(!upstream_mfa_trusted(
            Some(&upstream(None, true)),
            &pwd,
            None
        ));
        assert!(upstream_mfa_trusted(
            Some(&upstream(None, true)),
            &pwd,
            Some("http://schemas.microsoft.com/claims/multipleauthn")
        ));
        assert!(!upstream_mfa_trusted(None, &amr, None));
    }

    #[test]
    fn session_levels() {
        assert_eq!(session_level(&["pwd".into()]), 1);
        assert_eq!(
            session_level(&merge_amr(&["pwd".into()], &["otp".into(), "mfa".into()])),
            2
        );
    }
}
