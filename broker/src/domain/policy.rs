//! Owns the policy values the configuration sets and the services apply: whether a sign-in needs
//! a second factor, and each channel's session timeouts and concurrent-session limit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether a sign-in needs a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MfaRequirement {
    /// Never asked.
    #[default]
    Off,
    /// Asked when the user has enrolled a factor; users without one sign in without.
    Optional,
    /// Always asked; a user without a factor enrols one at this sign-in.
    Required,
    /// Always asked, and only a passkey or security key counts (`urn:concierge:loa:3`): a user
    /// without one sets one up, after passing a factor they have.
    #[serde(rename = "phishing_resistant")]
    PhishingResistant,
    /// Always asked, and only a passkey on a hardware key the operator trusts by attestation
    /// (`[[mfa.passkey.hardware]]`, amr `hwk`) counts: the level above phishing resistant
    /// (NIST SP 800-63B AAL3 asks the same: a hardware authenticator that resists phishing).
    /// Tokens still say `urn:concierge:loa:3`; their `amr` says `hwk`.
    #[serde(rename = "hardware_key")]
    HardwareKey,
}

impl MfaRequirement {
    /// Whether a second factor is always asked.
    pub fn always(self) -> bool {
        self >= MfaRequirement::Required
    }

    /// The level of assurance a sign-in under this requirement must reach (none asked: 1).
    pub fn level(self) -> u8 {
        match self {
            MfaRequirement::Off | MfaRequirement::Optional => 1,
            MfaRequirement::Required => 2,
            MfaRequirement::PhishingResistant => 3,
            MfaRequirement::HardwareKey => 4,
        }
    }
}

/// What a sign-in does when the user is at the session limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// The oldest session ends (its refresh tokens revoked, back-channel logout sent).
    #[default]
    EndOldest,
    /// The sign-in stops at a page listing the sessions; the user ends one to continue.
    Refuse,
}

/// How many live sessions a user may have, counted over which sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLimit {
    None,
    /// At most N sessions of the user in all channels.
    AllChannels(u32),
    /// At most N sessions of the user in this channel.
    ThisChannel(u32),
}

/// The resolved session policy of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPolicy {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// The limit and what it counts.
    pub limit: SessionLimit,
    pub on_limit: OnLimit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_order_from_off_to_required() {
        assert!(MfaRequirement::Off < MfaRequirement::Optional);
        assert!(MfaRequirement::Optional < MfaRequirement::Required);
        assert!(MfaRequirement::Required < MfaRequirement::PhishingResistant);
        assert!(MfaRequirement::PhishingResistant.always());
        assert!(!MfaRequirement::Optional.always());
        assert_eq!(MfaRequirement::PhishingResistant.level(), 3);
        assert!(MfaRequirement::PhishingResistant < MfaRequirement::HardwareKey);
        assert_eq!(MfaRequirement::HardwareKey.level(), 4);
        let h: std::collections::HashMap<String, MfaRequirement> =
            toml::from_str("a = \"hardware_key\"").unwrap();
        assert_eq!(h["a"], MfaRequirement::HardwareKey);
        let r: std::collections::HashMap<String, MfaRequirement> =
            toml::from_str("a = \"phishing_resistant\"\nb = \"required\"").unwrap();
        assert_eq!(r["a"], MfaRequirement::PhishingResistant);
        assert_eq!(r["b"], MfaRequirement::Required);
    }
}
