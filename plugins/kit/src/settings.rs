//! Owns the settings of the code-sending plugins (email, SMS) from their manifest `config`
//! table: `ttl_seconds`, `max_attempts`, `resend_seconds`, `issuer` (else the broker's
//! `product_name`, which the host offers every plugin through `config`).

use alloc::string::String;

use crate::config::number;

/// How codes are issued and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `ttl_seconds`: how long a code works (60..=3600, default 600).
    pub ttl_seconds: i64,
    /// `max_attempts`: wrong answers before the code is burnt (1..=10, default 5).
    pub max_attempts: u8,
    /// `resend_seconds`: the least time between two codes (0..=600, default 30).
    pub resend_seconds: i64,
    /// `issuer`: the service name in the message; when unset, the `product_name` the host
    /// offers (the broker's `[ui] product_name`); else "Concierge".
    pub issuer: String,
}

impl Settings {
    /// Reads the settings through `get` (the host's `config.get`).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let max_attempts = number("max_attempts", get("max_attempts").as_deref(), 5, 1, 10)?;
        Ok(Self {
            ttl_seconds: number("ttl_seconds", get("ttl_seconds").as_deref(), 600, 60, 3600)?,
            max_attempts: u8::try_from(max_attempts).unwrap_or(5),
            resend_seconds: number(
                "resend_seconds",
                get("resend_seconds").as_deref(),
                30,
                0,
                600,
            )?,
            issuer: [get("issuer"), get("product_name")]
                .into_iter()
                .flatten()
                .map(|issuer| String::from(issuer.trim()))
                .find(|issuer| {
                    !issuer.is_empty()
                        && issuer.chars().count() <= 64
                        && !issuer.chars().any(char::is_control)
                })
                .unwrap_or_else(|| String::from("Concierge")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let defaults = Settings::read(|_| None);
        assert_eq!(
            defaults,
            Ok(Settings {
                ttl_seconds: 600,
                max_attempts: 5,
                resend_seconds: 30,
                issuer: "Concierge".into()
            })
        );
        let set = Settings::read(|key| match key {
            "ttl_seconds" => Some("300".into()),
            "max_attempts" => Some("3".into()),
            "issuer" => Some("Example".into()),
            _ => None,
        });
        assert_eq!(
            set.map(|s| (s.ttl_seconds, s.max_attempts, s.issuer)),
            Ok((300, 3, "Example".into()))
        );
    }

    #[test]
    fn the_product_name_is_the_issuer_unless_one_is_set() {
        let named = Settings::read(|key| (key == "product_name").then(|| "Acme Sign-in".into()));
        assert_eq!(named.map(|s| s.issuer), Ok("Acme Sign-in".into()));
        let both = Settings::read(|key| match key {
            "issuer" => Some("Example".into()),
            "product_name" => Some("Acme Sign-in".into()),
            _ => None,
        });
        assert_eq!(both.map(|s| s.issuer), Ok("Example".into()));
    }

    #[test]
    fn out_of_range_is_an_error() {
        assert!(Settings::read(|key| (key == "ttl_seconds").then(|| "5".into())).is_err());
        assert!(Settings::read(|key| (key == "max_attempts").then(|| "0".into())).is_err());
    }
}
