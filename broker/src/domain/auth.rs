//! Owns the names of authentication strength the broker speaks: its `acr` levels of assurance,
//! the `amr` method names it asserts or counts (RFC 8176), and the level a set of methods reaches.

/// The single-factor and multi-factor authentication context classes the broker asserts.
pub const ACR_LOA1: &str = "urn:concierge:loa:1";
pub const ACR_LOA2: &str = "urn:concierge:loa:2";
/// Phishing-resistant multi-factor: reached only through a user-verified WebAuthn assertion the
/// broker checked itself (a passkey or security key bound to this origin).
pub const ACR_LOA3: &str = "urn:concierge:loa:3";

/// The amr value added to every session that passed a second factor.
pub const AMR_MFA: &str = "mfa";
/// The amr value of a password sign-in (RFC 8176).
pub const AMR_PWD: &str = "pwd";

/// The broker's own `amr` value for a phishing-resistant proof: a user-verified WebAuthn
/// assertion bound to the broker's origin, checked here (RFC 8176 registers no name for it;
/// RFC 8176 section 6.1 lets parties agree on others). Only a built-in factor proves it: a
/// plugin may not claim it, and an upstream's is never counted.
pub const AMR_PHR: &str = "phr";

/// Methods an upstream's `amr` may name that count as a second factor when it is trusted
/// (RFC 8176 names).
pub const SECOND_FACTOR_AMR: &[&str] = &["mfa", "otp", "hwk", "swk", "sms", "face", "fpt", "iris"];

/// The level an `acr` value stands for (unknown values: none).
pub fn acr_level(acr: &str) -> Option<u8> {
    match acr {
        ACR_LOA1 => Some(1),
        ACR_LOA2 => Some(2),
        ACR_LOA3 => Some(3),
        _ => None,
    }
}

/// The amr of a proof of possession of a hardware-secured key (RFC 8176). With `phr` it is the
/// broker's own check (domain::evidence keeps an upstream's out of the same `amr`).
pub const AMR_HWK: &str = "hwk";
/// The amr of a proof of possession of a software-secured key (RFC 8176): a synced passkey, or
/// one the operator's hardware list does not vouch for.
pub const AMR_SWK: &str = "swk";

/// The level a session's methods reach: 4 is a phishing-resistant proof by a hardware key
/// (`mfa = "hardware_key"`; its `acr` is still loa:3).
pub fn session_level(amr: &[String]) -> u8 {
    let has = |x: &str| amr.iter().any(|m| m == x);
    match (has(AMR_MFA), has(AMR_PHR), has(AMR_HWK)) {
        (true, true, true) => 4,
        (true, true, false) => 3,
        (true, false, _) => 2,
        _ => 1,
    }
}

/// The `acr` the broker asserts for a level.
pub fn acr_of_level(level: u8) -> &'static str {
    match level {
        0 | 1 => ACR_LOA1,
        2 => ACR_LOA2,
        _ => ACR_LOA3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_names() {
        assert_eq!(acr_level(ACR_LOA1), Some(1));
        assert_eq!(acr_level(ACR_LOA2), Some(2));
        assert_eq!(acr_level(ACR_LOA3), Some(3));
        assert_eq!(acr_level("urn:concierge:loa:4"), None);
        assert_eq!(session_level(&[AMR_PWD.into()]), 1);
        assert_eq!(session_level(&[AMR_PWD.into(), AMR_MFA.into()]), 2);
        let v = |m: &[&str]| session_level(&m.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
        assert_eq!(v(&["swk", "phr", "mfa"]), 3);
        assert_eq!(v(&["hwk", "phr", "mfa"]), 4);
        // Level 4 has no acr of its own: tokens say loa:3 and amr hwk.
        assert_eq!(acr_of_level(4), ACR_LOA3);
        // A method that counts as a second factor upstream is not `mfa` by itself.
        assert_eq!(session_level(&["otp".into()]), 1);
        assert!(SECOND_FACTOR_AMR.contains(&AMR_MFA));
        assert!(!SECOND_FACTOR_AMR.contains(&AMR_PWD));
    }

    #[test]
    fn the_phishing_resistant_level_needs_the_broker_s_mfa_and_its_phr() {
        let v = |m: &[&str]| session_level(&m.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(v(&["pwd", "swk", "phr", "mfa"]), 3);
        assert_eq!(v(&["swk", "user", "phr", "mfa"]), 3);
        assert_eq!(v(&["hwk", "user", "phr", "mfa"]), 4);
        // `phr` without the broker's `mfa` (never computed so, but a stored row could say it).
        assert_eq!(v(&["pwd", "phr"]), 1);
        assert_eq!(v(&["pwd", "hwk", "mfa"]), 2);
        assert_eq!(acr_of_level(1), ACR_LOA1);
        assert_eq!(acr_of_level(2), ACR_LOA2);
        assert_eq!(acr_of_level(3), ACR_LOA3);
        assert!(!SECOND_FACTOR_AMR.contains(&AMR_PHR));
    }
}
