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

use crate::clock::UnixTime;
use crate::domain::evidence::{self, Proof};
use crate::flow::answer::Request;
use crate::mfa::factor::{FirstFactorChallenge, Prompt};
use crate::upstream::UpstreamSession;

/// Where the journey ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A relying party's request, parsed once where it came in (`/authorize` today): the journey
    /// ends with its protocol's answer ([`crate::flow::answer`]).
    App(Request),
    /// A page of the broker's own (`/account`): a local path, checked when the journey began.
    Local(String),
}

/// Who the journey proved, and the evidence: each proof with its method, source and time
/// (`amr` and the level are computed from it, [`crate::domain::evidence`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proven {
    pub user_id: String,
    /// `local` for a password, else the upstream's id.
    pub upstream: String,
    pub evidence: Vec<Proof>,
    /// The upstream's authentication context, kept in the session (informative: its level
    /// counts only through `trusted_for_mfa` in the evidence).
    pub acr: Option<String>,
}

impl Proven {
    /// The `amr` the broker asserts for this evidence.
    pub fn amr(&self) -> Vec<String> {
        evidence::amr_of(&self.evidence)
    }

    /// The level of assurance reached.
    pub fn level(&self) -> u8 {
        evidence::level_of(&self.evidence)
    }

    /// When the oldest proof was made.
    pub fn since(&self) -> Option<UnixTime> {
        evidence::oldest(&self.evidence)
    }
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
    /// The claims the operator keeps for MFA plugins, once linked.
    #[serde(default)]
    pub kept: std::collections::BTreeMap<String, String>,
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
    /// What the open factor shows (a plugin's form; a native factor's own prompt).
    pub prompt: Option<Prompt>,
    /// A factor was just enrolled: its methods, added once the recovery codes were seen.
    pub awaiting_codes_ack: Option<Vec<String>>,
    /// The level the policy asked for (3: only a phishing-resistant factor ends the step; a
    /// factor that reaches less is kept as evidence and the policy asks again). 0: not set.
    #[serde(default)]
    pub level: u8,
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
    /// An unsolicited upstream answer would replace this browser's session: "continue as X?".
    ContinueAs,
}

/// What a request asks of a journey. Each is accepted only at the stage that expects it
/// ([`accept`]), like Keycloak's execution id in each form: a stale or forged form of another
/// step does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A posted email (email-first) or email and password.
    Password,
    /// A passkey's answer to the sign-in page's challenge (no password).
    Passkey,
    /// Leaving for upstream `0`.
    UpstreamStart(&'a str),
    /// The answer of upstream `0`, through the pending login that points at this journey.
    UpstreamAnswer(&'a str),
    /// A factor chosen (its challenge or enrolment starts).
    ChooseFactor,
    /// The answer to the open challenge or enrolment form.
    AnswerFactor,
    /// A recovery code instead of a factor.
    RecoveryCode,
    /// The recovery codes were seen.
    CodesSeen,
    /// A session picked to end at the session limit.
    EndSession,
    /// "Continue as X" confirmed.
    Continue,
    /// Remove an enrolled factor (a journey started to manage factors).
    RemoveFactor,
    /// New recovery codes instead of the old ones (a journey started to manage factors).
    RenewRecoveryCodes,
}

/// Whether `event` is valid for the journey at its current stage.
pub fn accept(j: &Journey, event: Event<'_>) -> bool {
    match (&j.stage, event) {
        // The first factor can be (re)tried while nothing else is proven: from the sign-in page,
        // or back from an upstream the user left (the browser's back button).
        (
            Stage::FirstFactor | Stage::AtUpstream { .. },
            Event::Password | Event::Passkey | Event::UpstreamStart(_),
        ) => j.who.is_none() && j.link.is_none() && !j.unsolicited,
        (Stage::AtUpstream { upstream }, Event::UpstreamAnswer(u)) => upstream == u,
        (Stage::LinkProof, Event::Password) => j.link.is_some() && j.who.is_none(),
        (Stage::Mfa, Event::ChooseFactor | Event::RecoveryCode) => {
            j.who.is_some() && j.mfa.awaiting_codes_ack.is_none()
        }
        (Stage::Mfa, Event::AnswerFactor) => {
            j.who.is_some() && j.mfa.factor.is_some() && j.mfa.prompt.is_some()
        }
        (Stage::Mfa, Event::CodesSeen) => j.mfa.awaiting_codes_ack.is_some(),
        (Stage::SessionLimit, Event::EndSession) => j.who.is_some() && j.mfa.satisfied,
        (Stage::ContinueAs, Event::Continue) => j.who.is_some(),
        (Stage::Mfa, Event::RemoveFactor | Event::RenewRecoveryCodes) => {
            j.manage && j.who.is_some() && j.mfa.awaiting_codes_ack.is_none()
        }
        _ => false,
    }
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
    /// Started by an upstream's unsolicited answer (SAML IdP-initiated): it never proves an
    /// account for linking and never creates one; it asks before replacing a session.
    pub unsolicited: bool,
    /// The user confirmed "continue as X" (an unsolicited sign-in replacing a session).
    pub confirmed: bool,
    /// Started from the account page to manage factors: every factor is offered whatever the
    /// session's level, adding or removing one needs a second factor proven within
    /// [`REPROOF_SECS`], and proving one does not end the journey.
    #[serde(default)]
    pub manage: bool,
    /// Claimed by the request that opens the session (under a session limit): a concurrent
    /// copy of the last step waits for its answer instead of opening a session of its own.
    #[serde(default)]
    pub finishing: bool,
    /// What the journey answered when it finished (kept with the finished row, sealed, until it
    /// expires): a second submit of its last step from the same browser gets the same answer.
    pub answer: Option<Answer>,
    pub mfa: MfaProgress,
    /// The sign-in page's passkey challenge (passwordless), while the first factor is asked.
    #[serde(default)]
    pub passkey: Option<FirstFactorChallenge>,
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
            unsolicited: false,
            confirmed: false,
            manage: false,
            finishing: false,
            answer: None,
            mfa: MfaProgress::default(),
            passkey: None,
            user_checked: false,
        }
    }

    /// The levels the relying party asks for, if the journey ends at one.
    pub fn acr_values(&self) -> Option<&str> {
        match &self.target {
            Target::App(r) => r.answerer().acr_values(),
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
        self.passkey = None;
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

/// A finished journey's answer, kept so that a double submit is answered the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The app's redirect URI with its parameters, or the local path.
    pub to: String,
    pub form_post: bool,
    pub params: Vec<(String, String)>,
    /// The session cookie value set with the answer.
    pub session: Option<String>,
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

/// A factor proven again in a journey that manages factors: its methods join the evidence, the
/// journey stays at the choice (now allowed to add or remove one).
pub fn factor_reproven(j: &mut Journey, amr: &[String], at: UnixTime) {
    if let Some(who) = &mut j.who {
        for m in amr {
            who.evidence.push(Proof::local(m.clone(), at));
        }
    }
    j.mfa.factor = None;
    j.mfa.prompt = None;
    j.mfa.enrolling = false;
}

/// A factor was proven here at `at`: its methods join the evidence. The step is over when the
/// evidence reaches the level the policy asked for; otherwise (a one-time code where a passkey
/// is asked) the policy is asked again with what was proven.
pub fn second_factor_proven(j: &mut Journey, amr: &[String], at: UnixTime) {
    let mut reached = 0;
    if let Some(who) = &mut j.who {
        for m in amr {
            who.evidence.push(Proof::local(m.clone(), at));
        }
        reached = who.level();
    }
    j.mfa = MfaProgress {
        satisfied: reached >= j.mfa.level,
        ..MfaProgress::default()
    };
}

/// Nothing (more) is asked: the policy is met, or `optional` found nothing to ask.
pub fn second_factor_settled(j: &mut Journey) {
    j.mfa = MfaProgress {
        satisfied: true,
        ..MfaProgress::default()
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::provider::authorize::StoredRequest;

    pub(crate) fn app(acr: Option<&str>) -> Target {
        Target::App(Request::Openid(StoredRequest {
            client_id: "web".into(),
            redirect_uri: "https://app.example/cb".into(),
            redirect_uri_presented: "https://app.example/cb".into(),
            form_post: false,
            state: Some("s".into()),
            nonce: None,
            scope: vec!["openid".into()],
            code_challenge: None,
            acr_values: acr.map(str::to_owned),
        }))
    }

    pub(crate) fn pwd(user: &str) -> Proven {
        Proven {
            user_id: user.into(),
            upstream: "local".into(),
            evidence: vec![Proof::local("pwd", 100)],
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
            kept: Default::default(),
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
            kept: Default::default(),
            verified_email: None,
        });
        j.first_factor(pwd("mallory"), Some("mallory@example.com"));
        assert!(j.link.is_none());
    }

    #[test]
    fn a_proven_second_factor_leads_to_the_session() {
        let mut j = Journey::new(Target::Local("/account".into()));
        j.first_factor(pwd("u"), None);
        assert_eq!(next(&j, no_route), Want::SecondFactor);
        second_factor_proven(&mut j, &["otp".into(), "mfa".into()], 200);
        assert_eq!(next(&j, no_route), Want::Session);
        assert_eq!(
            j.who.as_ref().map(Proven::amr),
            Some(vec!["pwd".into(), "otp".into(), "mfa".into()])
        );
        assert_eq!(j.who.as_ref().and_then(Proven::since), Some(100));
    }

    /// Every event outside the stage that expects it is refused.
    #[test]
    fn accept_refuses_every_event_outside_its_stage() {
        let events = [
            Event::Password,
            Event::Passkey,
            Event::UpstreamStart("corp"),
            Event::UpstreamAnswer("corp"),
            Event::UpstreamAnswer("other"),
            Event::ChooseFactor,
            Event::AnswerFactor,
            Event::RecoveryCode,
            Event::CodesSeen,
            Event::EndSession,
            Event::Continue,
            Event::RemoveFactor,
            Event::RenewRecoveryCodes,
        ];
        let fresh = Journey::new(app(None));
        let mut at_upstream = fresh.clone();
        at_upstream.stage = Stage::AtUpstream {
            upstream: "corp".into(),
        };
        let mut linking = fresh.clone();
        linking.needs_link_proof(PendingLink {
            upstream: "corp".into(),
            subject: "s".into(),
            email: "a@example.com".into(),
            user_id: None,
            groups: vec![],
            kept: Default::default(),
            verified_email: None,
        });
        let mut choosing = fresh.clone();
        choosing.first_factor(pwd("u"), None);
        choosing.stage = Stage::Mfa;
        let mut answering = choosing.clone();
        answering.mfa.factor = Some("totp".into());
        answering.mfa.prompt = Some(Prompt::Form(crate::mfa::host::Form {
            intro: crate::mfa::host::Localized {
                en: String::new(),
                ko: String::new(),
            },
            fields: vec![],
            qr: None,
            secret: None,
        }));
        let mut codes = choosing.clone();
        codes.mfa.awaiting_codes_ack = Some(vec!["mfa".into()]);
        let mut limit = choosing.clone();
        limit.mfa.satisfied = true;
        limit.stage = Stage::SessionLimit;
        let mut cont = choosing.clone();
        cont.stage = Stage::ContinueAs;
        let mut managing = choosing.clone();
        managing.manage = true;
        let allowed: &[(&Journey, &[Event])] = &[
            (
                &fresh,
                &[
                    Event::Password,
                    Event::Passkey,
                    Event::UpstreamStart("corp"),
                ],
            ),
            (
                &at_upstream,
                &[
                    Event::Password,
                    Event::Passkey,
                    Event::UpstreamStart("corp"),
                    Event::UpstreamAnswer("corp"),
                ],
            ),
            (&linking, &[Event::Password]),
            (&choosing, &[Event::ChooseFactor, Event::RecoveryCode]),
            (
                &answering,
                &[
                    Event::ChooseFactor,
                    Event::RecoveryCode,
                    Event::AnswerFactor,
                ],
            ),
            (&codes, &[Event::CodesSeen]),
            (&limit, &[Event::EndSession]),
            (&cont, &[Event::Continue]),
            (
                &managing,
                &[
                    Event::ChooseFactor,
                    Event::RecoveryCode,
                    Event::RemoveFactor,
                    Event::RenewRecoveryCodes,
                ],
            ),
        ];
        for (j, ok) in allowed {
            for e in events {
                assert_eq!(
                    accept(j, e),
                    ok.contains(&e),
                    "{e:?} at {:?} (factor open: {})",
                    j.stage,
                    j.mfa.factor.is_some()
                );
            }
        }
        // An unsolicited journey never takes a password (no link proof, no other account).
        let mut unsolicited = fresh.clone();
        unsolicited.unsolicited = true;
        assert!(!accept(&unsolicited, Event::Password));
        // Nor a passkey: it would prove an account for a sign-in the user did not start.
        assert!(!accept(&unsolicited, Event::Passkey));
    }

    #[test]
    fn a_factor_below_the_asked_level_is_kept_and_the_step_goes_on() {
        let mut j = Journey::new(app(Some(crate::domain::auth::ACR_LOA3)));
        j.first_factor(pwd("u"), None);
        j.mfa.level = 3;
        second_factor_proven(&mut j, &["otp".into(), "mfa".into()], 20);
        assert!(!j.mfa.satisfied, "a one-time code does not reach level 3");
        assert_eq!(j.who.as_ref().map(Proven::level), Some(2), "but it is kept");
        assert_eq!(next(&j, |_| None), Want::SecondFactor);
        j.mfa.level = 3;
        second_factor_proven(&mut j, &["swk".into(), "phr".into(), "mfa".into()], 30);
        assert!(j.mfa.satisfied);
        assert_eq!(j.who.as_ref().map(Proven::level), Some(3));
        // A hardware key is asked for (level 4): a synced passkey's pass is kept, not enough.
        j.mfa.level = 4;
        second_factor_proven(&mut j, &["swk".into(), "phr".into(), "mfa".into()], 40);
        assert!(!j.mfa.satisfied);
        second_factor_proven(&mut j, &["hwk".into(), "phr".into(), "mfa".into()], 50);
        assert!(j.mfa.satisfied);
        assert_eq!(j.who.as_ref().map(Proven::level), Some(4));
        // Nothing asked (met, or optional with nothing to ask): settled whatever the level.
        let mut k = Journey::new(app(None));
        k.first_factor(pwd("u"), None);
        second_factor_settled(&mut k);
        assert!(k.mfa.satisfied);
        assert_eq!(next(&k, |_| None), Want::Session);
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
