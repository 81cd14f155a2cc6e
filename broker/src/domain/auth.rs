//! Owns the names of authentication strength the broker speaks: its `acr` levels of assurance,
//! the `amr` method names it asserts or counts (RFC 8176), and the level a set of methods reaches.

/// The single-factor and multi-factor authentication context classes the broker asserts.
pub const ACR_LOA1: &str = "urn:concierge:loa:1";
pub const ACR_LOA2: &str = "urn:concierge:loa:2";

/// The amr value added to every session that passed a second factor.
pub const AMR_MFA: &str = "mfa";
/// The amr value of a password sign-in (RFC 8176).
pub const AMR_PWD: &str = "pwd";

/// Methods an upstream's `amr` may name that count as a second factor when it is trusted
/// (RFC 8176 names).
pub const SECOND_FACTOR_AMR: &[&str] = &["mfa", "otp", "hwk", "swk", "sms", "face", "fpt", "iris"];

/// The level an `acr` value stands for (unknown values: none).
pub fn acr_level(acr: &str) -> Option<u8> {
    match acr {
        ACR_LOA1 => Some(1),
        ACR_LOA2 => Some(2),
        _ => None,
    }
}

/// The level a session's methods reach.
pub fn session_level(amr: &[String]) -> u8 {
    if amr.iter().any(|m| m == AMR_MFA) {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_names() {
        assert_eq!(acr_level(ACR_LOA1), Some(1));
        assert_eq!(acr_level(ACR_LOA2), Some(2));
        assert_eq!(acr_level("urn:concierge:loa:3"), None);
        assert_eq!(session_level(&[AMR_PWD.into()]), 1);
        assert_eq!(session_level(&[AMR_PWD.into(), AMR_MFA.into()]), 2);
        // A method that counts as a second factor upstream is not `mfa` by itself.
        assert_eq!(session_level(&["otp".into()]), 1);
        assert!(SECOND_FACTOR_AMR.contains(&AMR_MFA));
        assert!(!SECOND_FACTOR_AMR.contains(&AMR_PWD));
    }
}
