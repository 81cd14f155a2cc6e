//! Owns the plugin's settings from its manifest `config` table: `algorithm` (SHA1 or SHA256),
//! `digits` (6 or 8) and `issuer` (the name the authenticator app shows). They apply to new
//! enrolments; an enrolled secret keeps the algorithm and digits it was set up with.

use alloc::format;
use alloc::string::String;

use totp_rs::Algorithm;

/// The issuer when the config names none.
pub const DEFAULT_ISSUER: &str = "Concierge";

/// The longest issuer, in UTF-8 bytes: twice in the QR code's URI, percent-encoded, it must
/// leave room for the account within the host's 1024-byte limit on `qr`.
pub const MAX_ISSUER_BYTES: usize = 64;

/// Settings for a new enrolment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub algorithm: Algorithm,
    pub digits: u8,
    pub issuer: String,
}

impl Settings {
    /// Parses the config values (each `None` when unset). An unknown value is an error: the
    /// plugin refuses to enrol rather than guess.
    pub fn parse(
        algorithm: Option<&str>,
        digits: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Self, String> {
        let algorithm = match algorithm.map(str::trim) {
            None | Some("") => Algorithm::SHA1,
            Some(value) if value.eq_ignore_ascii_case("SHA1") => Algorithm::SHA1,
            Some(value) if value.eq_ignore_ascii_case("SHA256") => Algorithm::SHA256,
            Some(value) => {
                return Err(format!(
                    "config algorithm = {value:?}: must be SHA1 or SHA256"
                ));
            }
        };
        let digits = match digits.map(str::trim) {
            None | Some("") | Some("6") => 6,
            Some("8") => 8,
            Some(value) => return Err(format!("config digits = {value:?}: must be 6 or 8")),
        };
        let issuer = match issuer.map(str::trim) {
            None | Some("") => String::from(DEFAULT_ISSUER),
            Some(value) if value.contains(':') || value.len() > MAX_ISSUER_BYTES => {
                return Err(format!(
                    "config issuer = {value:?}: must have no ':' and at most {MAX_ISSUER_BYTES} bytes"
                ));
            }
            Some(value) => String::from(value),
        };
        Ok(Self {
            algorithm,
            digits,
            issuer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sha1_six_digits_concierge() {
        let settings = Settings::parse(None, None, None);
        assert_eq!(
            settings,
            Ok(Settings {
                algorithm: Algorithm::SHA1,
                digits: 6,
                issuer: "Concierge".into()
            })
        );
    }

    #[test]
    fn reads_each_key() {
        let settings = Settings::parse(Some("sha256"), Some("8"), Some("Example Corp"));
        assert_eq!(
            settings,
            Ok(Settings {
                algorithm: Algorithm::SHA256,
                digits: 8,
                issuer: "Example Corp".into()
            })
        );
    }

    #[test]
    fn refuses_unknown_values() {
        assert!(Settings::parse(Some("MD5"), None, None).is_err());
        assert!(Settings::parse(Some("SHA512"), None, None).is_err());
        assert!(Settings::parse(None, Some("7"), None).is_err());
        assert!(Settings::parse(None, Some("eight"), None).is_err());
        assert!(Settings::parse(None, None, Some("Evil:Corp")).is_err());
        assert!(
            Settings::parse(None, None, Some(&"회".repeat(22))).is_err(),
            "66 bytes"
        );
        assert!(Settings::parse(None, None, Some(&"회".repeat(21))).is_ok());
    }
}
