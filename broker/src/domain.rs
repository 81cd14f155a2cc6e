//! Owns the domain newtypes that raw strings are parsed into at the edge: emails, user ids,
//! channels, locales, phone numbers, return paths and redacted secrets.

use std::fmt;

use serde::Serialize;

pub mod auth;
pub mod client;
pub mod evidence;
pub mod jose;
pub mod kek;
pub mod limits;
pub mod policy;
pub mod relying_party;
pub mod sp_metadata;
#[cfg(test)]
pub(crate) mod test_certs;

/// A parse failure of a domain value; the message is safe to show to a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);

/// A syntactically plausible, normalised (trimmed, lower-cased) email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() || s.len() > 254 {
            return Err(ParseError("email must be 1 to 254 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError("email must not contain spaces"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(ParseError("email must contain @"));
        };
        if local.is_empty() || domain.is_empty() || local.len() > 64 || domain.starts_with('.') {
            return Err(ParseError("email is not valid"));
        }
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The broker's own, stable identifier of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UserId(String);

impl UserId {
    pub fn new_random(entropy: &dyn crate::clock::Entropy) -> Self {
        let mut b = [0u8; 16];
        entropy.fill(&mut b);
        Self(uuid::Builder::from_random_bytes(b).into_uuid().to_string())
    }
    /// Wraps an id read back from storage.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The login channel a session or client belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Web,
    Mobile,
    Api,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Mobile => "mobile",
            Channel::Api => "api",
        }
    }
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "web" => Ok(Channel::Web),
            "mobile" => Ok(Channel::Mobile),
            "api" => Ok(Channel::Api),
            _ => Err(ParseError("channel must be web, mobile or api")),
        }
    }
}

/// The languages the hosted pages speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    En,
    Ko,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::Ko];

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ko => "ko",
        }
    }
    /// Matches a BCP 47 tag by its primary language subtag (`ko-KR` -> Korean).
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Locale::En),
            "ko" => Some(Locale::Ko),
            _ => None,
        }
    }
    /// Picks the first supported language of an OIDC `ui_locales` value (space separated).
    pub fn from_ui_locales(v: &str) -> Option<Self> {
        v.split_whitespace().find_map(Self::from_tag)
    }
    /// Picks the supported language with the highest weight in an `Accept-Language` header.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(f32, usize, Locale)> = None;
        for (pos, part) in header.split(',').enumerate() {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or("").trim();
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q <= 0.0 {
                continue;
            }
            if let Some(loc) = Self::from_tag(tag) {
                let better = match best {
                    None => true,
                    Some((bq, bpos, _)) => q > bq || (q == bq && pos < bpos),
                };
                if better {
                    best = Some((q, pos, loc));
                }
            }
        }
        best.map(|(_, _, l)| l)
    }
}

/// A phone number in E.164 form: `+` and 8 to 15 digits, nothing else (`+821012345678`).
/// What a text message may be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = raw
            .strip_prefix('+')
            .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError("not an E.164 number like +821012345678"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A same-origin path to return to after sign-in. Never an absolute URL, never `//host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReturnTo(String);

impl ReturnTo {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = raw.starts_with('/')
            && !raw.starts_with("//")
            && !raw.starts_with("/\\")
            && raw.len() <= 2048
            && !raw.chars().any(|c| c.is_control() || c == '\\');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError("return_to must be a path on this site"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret string whose `Debug` never shows the value (passwords, tokens, codes).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Demo@Example.COM ").map(|e| e.to_string()),
            Ok("demo@example.com".to_owned())
        );
        assert!(Email::parse("no-at-sign").is_err());
        assert!(Email::parse("a b@example.com").is_err());
        assert!(Email::parse("@example.com").is_err());
        assert!(Email::parse("a@").is_err());
    }

    #[test]
    fn phone_numbers_are_e164() {
        assert!(PhoneNumber::parse("+821012345678").is_ok());
        assert!(PhoneNumber::parse("01012345678").is_err());
        assert!(PhoneNumber::parse("+82 10 1234").is_err());
        assert!(PhoneNumber::parse("+1234567").is_err());
        assert!(PhoneNumber::parse("+1234567890123456").is_err());
    }

    #[test]
    fn accept_language_prefers_weight_then_order() {
        assert_eq!(
            Locale::from_accept_language("ko-KR,ko;q=0.9,en;q=0.8"),
            Some(Locale::Ko)
        );
        assert_eq!(
            Locale::from_accept_language("fr, en;q=0.5, ko;q=0.7"),
            Some(Locale::Ko)
        );
        assert_eq!(Locale::from_accept_language("fr, de"), None);
        assert_eq!(Locale::from_accept_language("ko;q=0, en"), Some(Locale::En));
        assert_eq!(Locale::from_ui_locales("fr-CA ko en"), Some(Locale::Ko));
    }

    #[test]
    fn return_to_only_accepts_local_paths() {
        assert!(ReturnTo::parse("/account").is_ok());
        assert!(ReturnTo::parse("/authorize?client_id=x").is_ok());
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil",
            "account",
            "",
            "/a\nb",
        ] {
            assert!(ReturnTo::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = SecretString::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
