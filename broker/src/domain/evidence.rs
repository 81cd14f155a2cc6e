//! Owns proofs as evidence (ADR 12): what was proven, by which method, from which source (this
//! broker, or an upstream and whether the operator trusts that upstream's second factor), and
//! when. The `amr` a set of proofs earns, and so its level, is computed here when it is needed;
//! another party's claim is never copied into the broker's own assurance.

use serde::{Deserialize, Serialize};

use super::auth::{AMR_HWK, AMR_MFA, AMR_PHR, AMR_SWK, SECOND_FACTOR_AMR, session_level};
use crate::clock::UnixTime;

/// The `amr` of an upstream sign-in whose own methods do not count here (RFC 8176 has no name
/// for "federated"; this is the broker's, as before).
pub const AMR_FED: &str = "fed";

/// Who vouches for a proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Checked by the broker itself: a password, a second factor, a session it opened.
    Local,
    /// Asserted by an upstream. Its second-factor methods count only when the operator trusts
    /// that upstream for MFA (`trust_upstream_mfa`) and it said so (`amr` or a configured
    /// `acr`); decided when the answer arrives, from the configuration then.
    Upstream { id: String, trusted_for_mfa: bool },
}

/// One thing proven in a sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// An RFC 8176 method name (`pwd`, `otp`, `hwk`, `mfa`, ...), as the source named it.
    pub method: String,
    pub source: Source,
    pub at: UnixTime,
}

impl Proof {
    pub fn local(method: impl Into<String>, at: UnixTime) -> Self {
        Self {
            method: method.into(),
            source: Source::Local,
            at,
        }
    }

    /// The proofs an upstream's answer brings: each method it named (none: `fed`).
    pub fn from_upstream(
        upstream: &str,
        methods: &[String],
        trusted_for_mfa: bool,
        at: UnixTime,
    ) -> Vec<Self> {
        let source = Source::Upstream {
            id: upstream.to_owned(),
            trusted_for_mfa,
        };
        let mut out: Vec<Self> = methods
            .iter()
            .map(|m| Self {
                method: m.clone(),
                source: source.clone(),
                at,
            })
            .collect();
        if out.is_empty() {
            out.push(Self {
                method: AMR_FED.to_owned(),
                source,
                at,
            });
        }
        out
    }

    /// Whether this proof may stand in the broker's `amr`: everything checked here, everything
    /// a trusted upstream said, and an untrusted upstream's methods except second factors. An
    /// upstream's `phr` never counts: phishing resistance is the broker's own check of an
    /// assertion bound to its origin.
    fn counts(&self) -> bool {
        if self.method == AMR_PHR && self.source != Source::Local {
            return false;
        }
        match &self.source {
            Source::Local => true,
            Source::Upstream {
                trusted_for_mfa: true,
                ..
            } => true,
            Source::Upstream {
                trusted_for_mfa: false,
                ..
            } => !SECOND_FACTOR_AMR.contains(&self.method.as_str()),
        }
    }

    /// Whether this proof is a second factor the broker vouches for.
    fn second_factor(&self) -> bool {
        match &self.source {
            Source::Local => SECOND_FACTOR_AMR.contains(&self.method.as_str()),
            Source::Upstream {
                trusted_for_mfa, ..
            } => *trusted_for_mfa,
        }
    }
}

/// The `amr` the broker asserts for these proofs, in the order they were proven, without
/// repeats: `mfa` only for a second factor checked here or trusted upstream MFA; an untrusted
/// upstream that named only second factors is `fed`.
pub fn amr_of(evidence: &[Proof]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let push = |m: &str, out: &mut Vec<String>| {
        if !out.iter().any(|x| x == m) {
            out.push(m.to_owned());
        }
    };
    // Where the broker checked a key itself (`phr`), the key-possession methods in its amr are
    // its own: an upstream's `hwk` beside a synced passkey checked here must not read as a
    // hardware key that resisted phishing (domain::auth::session_level's level 4).
    let own_key = evidence
        .iter()
        .any(|p| p.method == AMR_PHR && p.source == Source::Local);
    for p in evidence {
        let upstream_key =
            p.source != Source::Local && [AMR_HWK, AMR_SWK].contains(&p.method.as_str());
        if p.counts() && !(own_key && upstream_key) {
            push(&p.method, &mut out);
        }
    }
    // An upstream whose every method was dropped still signed the user in.
    let upstream_counted = |id: &str| {
        evidence
            .iter()
            .any(|p| p.counts() && matches!(&p.source, Source::Upstream { id: i, .. } if i == id))
    };
    for p in evidence {
        if let Source::Upstream { id, .. } = &p.source
            && !upstream_counted(id)
        {
            push(AMR_FED, &mut out);
        }
    }
    if evidence.iter().any(Proof::second_factor) {
        push(AMR_MFA, &mut out);
    } else {
        out.retain(|m| m != AMR_MFA);
    }
    out
}

/// The level of assurance these proofs reach.
pub fn level_of(evidence: &[Proof]) -> u8 {
    session_level(&amr_of(evidence))
}

/// When the oldest of these proofs was made (none: `None`). A proof older than the user's
/// token epoch (a password change, a revoke-all, a disable) opens nothing.
pub fn oldest(evidence: &[Proof]) -> Option<UnixTime> {
    evidence.iter().map(|p| p.at).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str, methods: &[&str], trusted: bool) -> Vec<Proof> {
        let m: Vec<String> = methods.iter().map(|s| (*s).to_owned()).collect();
        Proof::from_upstream(id, &m, trusted, 100)
    }

    fn amr(e: &[Proof]) -> Vec<String> {
        amr_of(e)
    }

    #[test]
    fn a_local_password_is_pwd_and_a_local_factor_adds_mfa() {
        let mut e = vec![Proof::local("pwd", 10)];
        assert_eq!(amr(&e), ["pwd"]);
        assert_eq!(level_of(&e), 1);
        e.push(Proof::local("otp", 20));
        e.push(Proof::local("mfa", 20));
        assert_eq!(amr(&e), ["pwd", "otp", "mfa"]);
        assert_eq!(level_of(&e), 2);
        assert_eq!(oldest(&e), Some(10));
        assert_eq!(oldest(&[]), None);
    }

    #[test]
    fn a_local_security_key_is_hwk_and_a_second_factor() {
        // A passkey's pass (mfa::passkey) proves `hwk`; the `mfa` is computed, not copied.
        let e = vec![Proof::local("pwd", 10), Proof::local("hwk", 20)];
        assert_eq!(amr(&e), ["pwd", "hwk", "mfa"]);
        assert_eq!(level_of(&e), 2);
    }

    #[test]
    fn only_the_broker_s_own_webauthn_check_earns_the_phishing_resistant_level() {
        let e = vec![
            Proof::local("pwd", 10),
            Proof::local("hwk", 20),
            Proof::local("phr", 20),
        ];
        assert_eq!(amr(&e), ["pwd", "hwk", "phr", "mfa"]);
        // A hardware key checked here: the level above phishing resistance.
        assert_eq!(level_of(&e), 4);
        let synced = vec![Proof::local("swk", 20), Proof::local("phr", 20)];
        assert_eq!(level_of(&synced), 3);
        // A trusted upstream's `hwk` beside a synced passkey checked here is left out: the
        // key-possession methods are the broker's own once it checked a key itself.
        let mut mixed = up("corp", &["hwk", "mfa"], true);
        mixed.extend(synced);
        assert_eq!(amr(&mixed), ["mfa", "swk", "phr"]);
        assert_eq!(level_of(&mixed), 3);
        // A trusted upstream's word reaches multi-factor, never phishing resistance.
        let e = up("corp", &["hwk", "phr", "mfa"], true);
        assert_eq!(amr(&e), ["hwk", "mfa"]);
        assert_eq!(level_of(&e), 2);
        let e = up("corp", &["phr"], false);
        assert_eq!(amr(&e), ["fed"]);
        assert_eq!(level_of(&e), 1);
    }

    #[test]
    fn an_untrusted_upstream_never_earns_mfa_whatever_it_says() {
        for claimed in [
            &["pwd", "mfa"][..],
            &["mfa"],
            &["otp", "hwk"],
            &["pwd", "otp", "mfa"],
        ] {
            let e = up("corp", claimed, false);
            let got = amr(&e);
            assert_eq!(level_of(&e), 1, "{claimed:?}");
            for m in &got {
                assert!(
                    !SECOND_FACTOR_AMR.contains(&m.as_str()),
                    "{claimed:?} -> {got:?}"
                );
            }
        }
        assert_eq!(amr(&up("corp", &["pwd", "mfa"], false)), ["pwd"]);
        assert_eq!(amr(&up("corp", &["mfa"], false)), ["fed"]);
        assert_eq!(amr(&up("corp", &[], false)), ["fed"]);
    }

    #[test]
    fn a_trusted_upstream_mfa_counts() {
        let e = up("corp", &["pwd", "otp"], true);
        assert_eq!(amr(&e), ["pwd", "otp", "mfa"]);
        assert_eq!(level_of(&e), 2);
        // Trusted by a configured acr, with no second-factor method named.
        let e = up("corp", &[], true);
        assert_eq!(amr(&e), ["fed", "mfa"]);
    }

    #[test]
    fn every_source_combination() {
        // (upstream claims, trusted, local second factor) -> level
        let cases: &[(&[&str], bool, bool, u8)] = &[
            (&["pwd"], false, false, 1),
            (&["pwd"], false, true, 2),
            (&["pwd", "mfa"], false, false, 1),
            (&["pwd", "mfa"], false, true, 2),
            (&["pwd", "mfa"], true, false, 2),
            (&["pwd"], true, false, 2),
            (&[], false, false, 1),
            (&[], false, true, 2),
        ];
        for (claims, trusted, local, level) in cases {
            let mut e = up("corp", claims, *trusted);
            if *local {
                e.push(Proof::local("otp", 200));
                e.push(Proof::local("mfa", 200));
            }
            assert_eq!(
                level_of(&e),
                *level,
                "{claims:?} trusted={trusted} local={local}"
            );
            let a = amr_of(&e);
            assert_eq!(a.iter().any(|m| m == "mfa"), *level == 2);
        }
        // A local factor after an untrusted upstream: the upstream's "mfa" is still not its own.
        let mut e = up("corp", &["pwd", "mfa"], false);
        e.push(Proof::local("otp", 200));
        e.push(Proof::local("mfa", 200));
        assert_eq!(amr(&e), ["pwd", "otp", "mfa"]);
    }

    #[test]
    fn evidence_round_trips_as_json() {
        let e = vec![Proof::local("pwd", 1), up("corp", &["pwd"], true).remove(0)];
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""kind":"upstream""#), "{json}");
        let back: Vec<Proof> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
