//! Owns the sign-in journey's state and its transitions, pure: no storage, no HTTP, no clock
//! of its own (time comes in). A [`Journey`] is what the login transaction stores
//! (`login_transactions`, through [`super::journey::Journeys`]); [`super::signin`] records
//! each proof the browser brings into it (a password, an upstream's answer, a second factor, the
//! session the user chose to end) and asks [`next`] what comes after, until the journey is done.
//!
//! The order of the steps is written once, in [`next`]: first factor -> link proof -> second
//! factor -> session (limit) -> done. A new step (a passkey, a consent page, a device code) is one
//! more field of proof in [`Journey`] and one more arm there.

use serde::{Deserialize, Serialize};

use crate::domain::policy::MfaRequirement;
use crate::flow::mfa as policy;
use crate::mfa::host::Form;
use crate::provider::authorize::StoredRequest;
use crate::upstream::UpstreamSession;

/// Where the journey ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// An app's authorization request, parsed once at `/authorize`: it ends with a code (or an
    /// error) at the app's redirect URI.
    App(StoredRequest),
    /// A page of the broker's own (`/account`): a local path, checked when the journey began.
    Local(String),
}

/// Who the first factor proved: the broker user, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proven {
    pub user_id: String,
    /// `local` for a password, else the upstream's id.
    pub upstream: String,
    pub amr: Vec<String>,
    /// The upstream's authentication context, kept in the session.
    pub acr: Option<String>,
}

/// An upstream identity that claims an existing account by an email the broker may not trust
/// for linking: linked only once the account is proven here, and only when the journey completes
/// (after the second factor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLink {
    pub upstream: String,
    pub subject: String,
    pub email: String,
    /// The broker account proven for it (by its password, or by the upstream's verified email
    /// when the upstream is trusted for that); the link is written for this account only.
    pub user_id: Option<String>,
    /// What the tokens may say from the upstream once linked.
    pub groups: Vec<String>,
    pub verified_email: Option<String>,
}

/// Where the second factor stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MfaProgress {
    /// The policy was evaluated and is met (nothing asked, or a factor proven).
    pub satisfied: bool,
    /// The policy said `required` (a user without a factor must set one up).
    pub required: bool,
    /// The factor whose challenge or enrolment form is open.
    pub factor: Option<String>,
    pub enrolling: bool,
    pub form: Option<Form>,
    /// A factor was just enrolled: its methods, added once the recovery codes were seen.
    pub awaiting_codes_ack: Option<Vec<String>>,
}

/// What the journey waits for from the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// The sign-in page (password, email-first, upstream buttons).
    FirstFactor,
    /// Gone to an upstream; its answer comes to the callback.
    AtUpstream { upstream: String },
    /// The password of the account a [`PendingLink`] claims.
    LinkProof,
    /// The second-factor pages.
    Mfa,
    /// The user is at the session limit and picks a session to end.
    SessionLimit,
}

/// One sign-in journey, as stored server-side. The browser holds only its id (and the binding
/// cookie whose hash is [`Journey::binding`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journey {
    /// SHA-256 (hex) of the browser binding cookie this journey belongs to.
    pub binding: String,
    pub target: Target,
    /// The email the app suggested (`login_hint`) or the user typed.
    pub login_hint: Option<String>,
    /// An upstream the app named (`idp_hint`).
    pub idp_hint: Option<String>,
    pub stage: Stage,
    pub who: Option<Proven>,
    pub link: Option<PendingLink>,
    /// What logging out at the upstream needs, kept until the session exists.
    pub upstream_session: Option<(String, UpstreamSession)>,
    /// Raising this existing session (sid) to a second factor, rather than opening a new one.
    pub step_up: Option<String>,
    pub mfa: MfaProgress,
    /// Not stored: the first factor was checked against the account in this very request (so
    /// opening the session need not read the account again).
    #[serde(skip)]
    pub user_checked: bool,
}

impl Journey {
    /// A journey to `target`; its browser binding is set when it is stored
    /// (`SignIn::begin`).
    pub fn new(target: Target) -> Self {
        Self {
            binding: String::new(),
            target,
            login_hint: None,
            idp_hint: None,
            stage: Stage::FirstFactor,
            who: None,
            link: None,
            upstream_session: None,
            step_up: None,
            mfa: MfaProgress::default(),
            user_checked: false,
        }
    }

    /// The app's requested `acr_values`, if the journey ends at an app.
    pub fn acr_values(&self) -> Option<&str> {
        match &self.target {
            Target::App(r) => r.acr_values.as_deref(),
            Target::Local(_) => None,
        }
    }

    /// The id of the client that receives the code, if any.
    pub fn client_id(&self) -> Option<&str> {
        match &self.target {
            Target::App(r) => Some(r.client_id.as_str()),
            Target::Local(_) => None,
        }
    }

    /// Records a proven first factor. Proving a different account than the one a pending link
    /// claims drops the link (it is never written for another account).
    pub fn first_factor(&mut self, who: Proven, email: Option<&str>) {
        match &mut self.link {
            Some(l) if email == Some(l.email.as_str()) => l.user_id = Some(who.user_id.clone()),
            _ => self.link = None,
        }
        self.who = Some(who);
        self.mfa = MfaProgress::default();
        self.user_checked = false;
    }

    /// An upstream identity claims an existing account: the account's password must be proven.
    pub fn needs_link_proof(&mut self, link: PendingLink) {
        self.login_hint = Some(link.email.clone());
        self.link = Some(link);
        self.who = None;
        self.stage = Stage::LinkProof;
    }
}

/// What the policy needs to know about the user's factors (read only when it matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorFacts {
    /// An enrolled factor whose plugin can run.
    pub usable: bool,
    /// A factor the user could set up now.
    pub enrollable: bool,
    pub recovery_left: i64,
}

/// What the second-factor policy says for this journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaNeed {
    /// Nothing (more) to ask; these methods are added to the session.
    Met { add_amr: Vec<String> },
    /// The user's factors decide: read them, then call [`mfa_decision`].
    Facts { required: bool },
}

/// Evaluates the MFA policy for the client that will receive the code (and the upstream, and
/// the `acr_values` the app asked for). Pure.
pub fn mfa_need(
    default: MfaRequirement,
    client: Option<MfaRequirement>,
    upstream: Option<&crate::config::UpstreamConfig>,
    j: &Journey,
) -> MfaNeed {
    let Some(who) = &j.who else {
        return MfaNeed::Facts { required: true };
    };
    let mut required = policy::requirement(default, client, upstream, j.acr_values());
    if j.step_up.is_some() {
        required = MfaRequirement::Required;
    }
    if required == MfaRequirement::Off || crate::domain::auth::session_level(&who.amr) >= 2 {
        return MfaNeed::Met { add_amr: vec![] };
    }
    if policy::upstream_mfa_trusted(upstream, &who.amr, who.acr.as_deref()) {
        return MfaNeed::Met {
            add_amr: vec![crate::domain::auth::AMR_MFA.to_owned()],
        };
    }
    MfaNeed::Facts {
        required: required == MfaRequirement::Required,
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

/// `optional` with a usable enrolled factor asks for it; `required` asks or fails closed.
pub fn mfa_decision(required: bool, f: FactorFacts) -> MfaDecision {
    if !f.usable && !required {
        return MfaDecision::Skip;
    }
    if !f.usable && !f.enrollable && f.recovery_left == 0 {
        return MfaDecision::NoFactor;
    }
    MfaDecision::Ask
}

/// What the journey needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The sign-in page, or straight to the upstream the app or the email named.
    FirstFactor { route_to: Option<String> },
    /// The password of the account the pending link claims.
    LinkProof,
    /// The second-factor policy must be evaluated (or its pages continue).
    SecondFactor,
    /// Everything is proven: open (or raise) the session, then finish.
    Session,
}

/// The order of the steps, in one place.
pub fn next(j: &Journey, routed: impl Fn(&str) -> Option<String>) -> Want {
    if j.who.is_none() {
        if j.link.is_some() {
            return Want::LinkProof;
        }
        let route_to = j
            .idp_hint
            .clone()
            .or_else(|| j.login_hint.as_deref().and_then(&routed));
        return Want::FirstFactor { route_to };
    }
    if !j.mfa.satisfied {
        return Want::SecondFactor;
    }
    Want::Session
}

/// Whether a user may set up a new factor in this journey: only one with no factor yet, or one
/// who already passed a second factor (adding a method from the account page). Otherwise a
/// stolen password could enrol the thief's own authenticator and pass as MFA.
pub fn may_enroll(who: &Proven, any_enrolled: bool) -> bool {
    who.amr.iter().any(|m| m == crate::domain::auth::AMR_MFA) || !any_enrolled
}

/// A factor was proven: its methods join the first factor's.
pub fn second_factor_proven(j: &mut Journey, amr: &[String]) {
    if let Some(who) = &mut j.who {
        who.amr = policy::merge_amr(&who.amr, amr);
    }
    j.mfa = MfaProgress {
        satisfied: true,
        ..MfaProgress::default()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(acr: Option<&str>) -> Target {
        Target::App(StoredRequest {
            client_id: "web".into(),
            redirect_uri: "https://app.example/cb".into(),
            redirect_uri_presented: "https://app.example/cb".into(),
            form_post: false,
            state: Some("s".into()),
            nonce: None,
            scope: vec!["openid".into()],
            code_challenge: None,
            acr_values: acr.map(str::to_owned),
        })
    }

    fn pwd(user: &str) -> Proven {
        Proven {
            user_id: user.into(),
            upstream: "local".into(),
            amr: vec!["pwd".into()],
            acr: None,
        }
    }

    fn no_route(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_new_journey_asks_for_the_first_factor_or_routes_by_hint() {
        let mut j = Journey::new(app(None));
        assert_eq!(next(&j, no_route), Want::FirstFactor { route_to: None });
        j.login_hint = Some("bob@corp.example".into());
        let routed = |e: &str| e.ends_with("@corp.example").then(|| "corp".to_owned());
        assert_eq!(
            next(&j, routed),
            Want::FirstFactor {
                route_to: Some("corp".into())
            }
        );
        j.idp_hint = Some("saml".into());
        assert_eq!(
            next(&j, routed),
            Want::FirstFactor {
                route_to: Some("saml".into())
            }
        );
    }

    #[test]
    fn a_pending_link_asks_for_the_password_even_on_a_routed_domain() {
        let mut j = Journey::new(app(None));
        j.needs_link_proof(PendingLink {
            upstream: "corp".into(),
            subject: "u1".into(),
            email: "alice@corp.example".into(),
            user_id: None,
            groups: vec![],
            verified_email: None,
        });
        let routed = |_: &str| Some("corp".to_owned());
        assert_eq!(next(&j, routed), Want::LinkProof);
        assert_eq!(j.stage, Stage::LinkProof);
        // The account is proven: the link is kept (written only at the end), MFA comes next.
        j.first_factor(pwd("alice"), Some("alice@corp.example"));
        assert_eq!(
            j.link.as_ref().and_then(|l| l.user_id.as_deref()),
            Some("alice")
        );
        assert_eq!(next(&j, routed), Want::SecondFactor);
    }

    #[test]
    fn proving_another_account_drops_the_pending_link() {
        let mut j = Journey::new(app(None));
        j.needs_link_proof(PendingLink {
            upstream: "corp".into(),
            subject: "u1".into(),
            email: "alice@corp.example".into(),
            user_id: None,
            groups: vec![],
            verified_email: None,
        });
        j.first_factor(pwd("mallory"), Some("mallory@example.com"));
        assert!(j.link.is_none());
    }

    #[test]
    fn mfa_is_evaluated_for_the_client_receiving_the_code() {
        let mut j = Journey::new(app(None));
        j.first_factor(pwd("u"), None);
        use MfaRequirement::*;
        assert_eq!(
            mfa_need(Off, None, None, &j),
            MfaNeed::Met { add_amr: vec![] }
        );
        assert_eq!(
            mfa_need(Off, Some(Optional), None, &j),
            MfaNeed::Facts { required: false }
        );
        assert_eq!(
            mfa_need(Off, Some(Required), None, &j),
            MfaNeed::Facts { required: true }
        );
        // acr_values asking for the second level make it required.
        let mut k = Journey::new(app(Some(crate::domain::auth::ACR_LOA2)));
        k.first_factor(pwd("u"), None);
        assert_eq!(
            mfa_need(Off, Some(Off), None, &k),
            MfaNeed::Facts { required: true }
        );
        // A step-up is always required.
        j.step_up = Some("sid".into());
        assert_eq!(
            mfa_need(Off, Some(Off), None, &j),
            MfaNeed::Facts { required: true }
        );
    }

    #[test]
    fn optional_with_an_enrolled_factor_asks_for_it() {
        let some = FactorFacts {
            usable: true,
            enrollable: false,
            recovery_left: 0,
        };
        let none = FactorFacts {
            usable: false,
            enrollable: true,
            recovery_left: 0,
        };
        let nothing = FactorFacts {
            usable: false,
            enrollable: false,
            recovery_left: 0,
        };
        assert_eq!(mfa_decision(false, some), MfaDecision::Ask);
        assert_eq!(mfa_decision(false, none), MfaDecision::Skip);
        assert_eq!(mfa_decision(true, none), MfaDecision::Ask);
        assert_eq!(mfa_decision(true, nothing), MfaDecision::NoFactor);
        assert_eq!(mfa_decision(false, nothing), MfaDecision::Skip);
    }

    #[test]
    fn a_proven_second_factor_leads_to_the_session() {
        let mut j = Journey::new(Target::Local("/account".into()));
        j.first_factor(pwd("u"), None);
        assert_eq!(next(&j, no_route), Want::SecondFactor);
        second_factor_proven(&mut j, &["otp".into(), "mfa".into()]);
        assert_eq!(next(&j, no_route), Want::Session);
        assert_eq!(
            j.who.as_ref().map(|w| w.amr.clone()),
            Some(vec!["pwd".into(), "otp".into(), "mfa".into()])
        );
        // A session already at the second level needs nothing more.
        let mut k = Journey::new(app(None));
        k.first_factor(
            Proven {
                amr: vec!["pwd".into(), "mfa".into()],
                ..pwd("u")
            },
            None,
        );
        assert_eq!(
            mfa_need(MfaRequirement::Required, None, None, &k),
            MfaNeed::Met { add_amr: vec![] }
        );
    }

    #[test]
    fn enrolment_needs_the_existing_factor_first() {
        assert!(may_enroll(&pwd("u"), false));
        assert!(!may_enroll(&pwd("u"), true));
        let mut strong = pwd("u");
        strong.amr.push("mfa".into());
        assert!(may_enroll(&strong, true));
    }

    #[test]
    fn the_state_survives_storage() {
        let mut j = Journey::new(app(Some(crate::domain::auth::ACR_LOA2)));
        j.first_factor(pwd("u"), None);
        j.upstream_session = Some((
            "corp".into(),
            UpstreamSession::Oidc {
                id_token: "t".into(),
            },
        ));
        let text = serde_json::to_string(&j).unwrap();
        let back: Journey = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert_eq!(back.who, j.who);
        assert_eq!(back.upstream_session, j.upstream_session);
    }
}
