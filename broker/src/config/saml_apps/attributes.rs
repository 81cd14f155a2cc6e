//! Owns `[[saml_apps.attributes]]`: which attributes an SP is released, each parsed at boot into
//! a [`ReleasedAttribute`] (its SAML `Name`, `FriendlyName`, `NameFormat` and where its values
//! come from, [`AttributeSource`]); without the list, [`default_release`] (today's `email` and
//! `name`, NameFormat basic). Turning a source into values is the IdP's
//! (`saml_idp::attributes`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest attribute `Name` or `FriendlyName` accepted.
const MAX_NAME: usize = 256;
/// The most attributes one SP may be released.
pub const MAX_ATTRIBUTES: usize = 64;

/// `NameFormat` (SAML Core 8.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameFormat {
    /// `urn:oasis:names:tc:SAML:2.0:attrname-format:basic`: the name is an `xs:Name`.
    #[default]
    Basic,
    /// `urn:oasis:names:tc:SAML:2.0:attrname-format:uri`: the name is a URI (`urn:oid:…`).
    Uri,
    /// `urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified`.
    Unspecified,
}

impl NameFormat {
    pub fn urn(self) -> &'static str {
        match self {
            Self::Basic => "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
            Self::Uri => "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
            Self::Unspecified => "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified",
        }
    }
}

/// Where an attribute's values come from (`from`), parsed once at boot.
///
/// A new source is one more variant here, one arm in [`FromStr`] and [`fmt::Display`], and one
/// arm in `saml_idp::attributes::values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AttributeSource {
    /// The account's email (one value).
    Email,
    /// Whether the session's upstream, trusted for verified email, verified the account's
    /// current email (`true` / `false`, as the OpenID `email_verified` claim).
    EmailVerified,
    /// The account's display name (left out when empty).
    Name,
    /// The pairwise id of the user for this SP (the persistent NameID's value).
    UserId,
    /// The groups the session's upstream gave at its sign-in (multi-valued; none for a local
    /// sign-in).
    Groups,
    /// `claim:<name>`: a claim the session's upstream kept on the user's link
    /// (`[upstreams.claims] keep`, or `attributes.keep` for SAML); none for a local sign-in.
    Claim(String),
}

impl FromStr for AttributeSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "email" => Self::Email,
            "email_verified" => Self::EmailVerified,
            "name" => Self::Name,
            "user_id" => Self::UserId,
            "groups" => Self::Groups,
            other => match other.strip_prefix("claim:") {
                Some(name) => {
                    crate::config::keep::check_keep(&[name.to_owned()])?;
                    Self::Claim(name.to_owned())
                }
                None => {
                    return Err(format!(
                        "`{other}` is not a source: one of email, email_verified, name, \
                         user_id, groups, claim:<name>"
                    ));
                }
            },
        })
    }
}

impl TryFrom<String> for AttributeSource {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for AttributeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Email => f.write_str("email"),
            Self::EmailVerified => f.write_str("email_verified"),
            Self::Name => f.write_str("name"),
            Self::UserId => f.write_str("user_id"),
            Self::Groups => f.write_str("groups"),
            Self::Claim(name) => write!(f, "claim:{name}"),
        }
    }
}

impl From<AttributeSource> for String {
    fn from(s: AttributeSource) -> Self {
        s.to_string()
    }
}

/// One `[[saml_apps.attributes]]` table as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttribute {
    /// The SAML attribute `Name`.
    pub name: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub name_format: NameFormat,
    pub from: AttributeSource,
}

/// An attribute released to an SP, checked as it is read (an error names the table,
/// `saml_apps[N].attributes[M]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAttribute", into = "RawAttribute")]
pub struct ReleasedAttribute {
    pub name: String,
    pub friendly_name: Option<String>,
    pub name_format: NameFormat,
    pub from: AttributeSource,
}

/// What an SP without an `attributes` list gets: `email` and `name`, NameFormat basic.
pub fn default_release() -> Vec<ReleasedAttribute> {
    [
        ("email", AttributeSource::Email),
        ("name", AttributeSource::Name),
    ]
    .into_iter()
    .map(|(name, from)| ReleasedAttribute {
        name: name.to_owned(),
        friendly_name: None,
        name_format: NameFormat::Basic,
        from,
    })
    .collect()
}

/// An `xs:Name` (XML 1.0 Name, ASCII letters, digits, `_`, `-`, `.`, `:`; not starting with a
/// digit, `-` or `.`); the names a `basic` attribute may have.
fn is_xs_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// A printable name of at most [`MAX_NAME`] bytes.
fn printable(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= MAX_NAME && !s.chars().any(char::is_control)
}

impl TryFrom<RawAttribute> for ReleasedAttribute {
    type Error = String;

    fn try_from(raw: RawAttribute) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<ReleasedAttribute> for RawAttribute {
    fn from(a: ReleasedAttribute) -> Self {
        Self {
            name: a.name,
            friendly_name: a.friendly_name,
            name_format: a.name_format,
            from: a.from,
        }
    }
}

impl ReleasedAttribute {
    /// Checks one table; the error says what is wrong with it.
    pub fn parse(raw: &RawAttribute) -> Result<Self, String> {
        let name = raw.name.as_str();
        if !printable(name) || name.chars().any(char::is_whitespace) {
            return Err(format!(
                "name `{name}` must be 1 to {MAX_NAME} characters, without spaces or control characters"
            ));
        }
        match raw.name_format {
            NameFormat::Basic if !is_xs_name(name) => {
                return Err(format!(
                    "name `{name}` is not an xs:Name, as name_format = \"basic\" requires (use \"uri\" for a URI)"
                ));
            }
            NameFormat::Uri if url::Url::parse(name).is_err() => {
                return Err(format!(
                    "name `{name}` is not an absolute URI, as name_format = \"uri\" requires"
                ));
            }
            _ => {}
        }
        if let Some(f) = &raw.friendly_name
            && !printable(f)
        {
            return Err(format!(
                "friendly_name `{f}` must be 1 to {MAX_NAME} characters, without control characters"
            ));
        }
        Ok(Self {
            name: raw.name.clone(),
            friendly_name: raw.friendly_name.clone(),
            name_format: raw.name_format,
            from: raw.from.clone(),
        })
    }
}

/// Checks a whole list (each table was checked as it was read): at most [`MAX_ATTRIBUTES`], no
/// `Name` twice for one `NameFormat`.
pub fn check_list(list: &[ReleasedAttribute]) -> Result<(), String> {
    if list.len() > MAX_ATTRIBUTES {
        return Err(format!("at most {MAX_ATTRIBUTES} attributes"));
    }
    for (i, a) in list.iter().enumerate() {
        if list[..i]
            .iter()
            .any(|b| b.name == a.name && b.name_format == a.name_format)
        {
            return Err(format!(
                "name `{}` is released twice (attributes[{i}])",
                a.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, format: NameFormat, from: &str) -> RawAttribute {
        RawAttribute {
            name: name.into(),
            friendly_name: None,
            name_format: format,
            from: from.parse().unwrap(),
        }
    }

    #[test]
    fn sources_parse_and_print_back() {
        for s in [
            "email",
            "email_verified",
            "name",
            "user_id",
            "groups",
            "claim:employee_id",
        ] {
            assert_eq!(s.parse::<AttributeSource>().unwrap().to_string(), s);
        }
        assert_eq!(
            "claim:upn".parse::<AttributeSource>().unwrap(),
            AttributeSource::Claim("upn".into())
        );
        for bad in ["", "Email", "mail", "claim", "groups "] {
            let e = bad.parse::<AttributeSource>().unwrap_err();
            assert!(e.contains("not a source"), "{bad}: {e}");
        }
        for bad in ["claim:", "claim:a b"] {
            assert!(bad.parse::<AttributeSource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_fit_their_format() {
        let ok = [
            ("mail", NameFormat::Basic),
            ("eduPersonAffiliation", NameFormat::Basic),
            ("urn:oid:0.9.2342.19200300.100.1.3", NameFormat::Uri),
            (
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                NameFormat::Uri,
            ),
            ("anything goes?", NameFormat::Unspecified),
        ];
        for (name, f) in ok {
            // `unspecified` still refuses spaces.
            let r = ReleasedAttribute::parse(&raw(name, f, "email"));
            assert_eq!(r.is_ok(), !name.contains(' '), "{name}: {r:?}");
        }
        for (name, f) in [
            ("http://example.com/claims/mail", NameFormat::Basic),
            ("1mail", NameFormat::Basic),
            ("-mail", NameFormat::Basic),
            ("mail", NameFormat::Uri),
            ("", NameFormat::Basic),
            ("a\u{7}b", NameFormat::Unspecified),
        ] {
            assert!(
                ReleasedAttribute::parse(&raw(name, f, "email")).is_err(),
                "{name}"
            );
        }
        let mut r = raw("mail", NameFormat::Basic, "email");
        r.friendly_name = Some(" ".into());
        assert!(
            ReleasedAttribute::parse(&r)
                .unwrap_err()
                .contains("friendly_name")
        );
    }

    #[test]
    fn a_list_releases_a_name_once_per_format() {
        let ok = |r: RawAttribute| ReleasedAttribute::parse(&r).unwrap();
        let list = vec![
            ok(raw("mail", NameFormat::Basic, "email")),
            ok(raw("mail", NameFormat::Basic, "name")),
        ];
        let m = check_list(&list).unwrap_err();
        assert!(m.contains("twice") && m.contains("attributes[1]"), "{m}");
        // The same name in another format is another attribute.
        let list = vec![
            ok(raw("urn:x:mail", NameFormat::Uri, "email")),
            ok(raw("urn:x:mail", NameFormat::Unspecified, "email")),
        ];
        assert!(check_list(&list).is_ok());
        let many: Vec<ReleasedAttribute> = (0..=MAX_ATTRIBUTES)
            .map(|i| ok(raw(&format!("a{i}"), NameFormat::Basic, "email")))
            .collect();
        assert!(check_list(&many).unwrap_err().contains("at most"));
        assert!(check_list(&many[..MAX_ATTRIBUTES]).is_ok());
        assert_eq!(default_release().len(), 2);
    }
}
