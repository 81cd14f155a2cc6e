//! Owns the attributes an SP is released: each `[[saml_apps.attributes]]` entry (or the default
//! release, `email` and `name`) turned into a `saml:Attribute` for the signed-in session, its
//! values read from the account, the pairwise id, or what the session's upstream said (groups,
//! verified email, kept claims: `Store::upstream_claims`, read only when an entry needs it). Empty values are
//! left out, an attribute without values too; everything written is escaped.

use super::{IdpError, SamlIdp};
use crate::config::saml_apps::SamlApp;
use crate::config::saml_apps::attributes::{AttributeSource, ReleasedAttribute};
use crate::storage::{SessionRecord, User};
use crate::upstream::saml::xml::escape;

/// What the session's upstream said at its sign-in, read once per Response when needed.
struct UpstreamSaid {
    groups: Vec<String>,
    email_verified: bool,
    kept: std::collections::BTreeMap<String, String>,
}

/// `s` without the characters XML 1.0 cannot carry (C0 controls other than tab, line feed and
/// carriage return; U+FFFE, U+FFFF), escaped.
fn xml_text(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| {
            !matches!(*c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
        })
        .collect();
    escape(&kept)
}

/// One `saml:Attribute` with `values` (none: nothing).
fn render(a: &ReleasedAttribute, values: &[String]) -> String {
    let values: String = values
        .iter()
        .filter(|v| !v.is_empty())
        .map(|v| format!("<saml:AttributeValue>{}</saml:AttributeValue>", xml_text(v)))
        .collect();
    if values.is_empty() {
        return String::new();
    }
    let friendly = a
        .friendly_name
        .as_deref()
        .map(|f| format!(r#" FriendlyName="{}""#, xml_text(f)))
        .unwrap_or_default();
    format!(
        r#"<saml:Attribute Name="{name}" NameFormat="{format}"{friendly}>{values}</saml:Attribute>"#,
        name = xml_text(&a.name),
        format = a.name_format.urn(),
    )
}

/// Whether the values of `from` come from what the session's upstream said.
fn from_upstream(from: &AttributeSource) -> bool {
    match from {
        AttributeSource::Groups | AttributeSource::EmailVerified | AttributeSource::Claim(_) => {
            true
        }
        AttributeSource::Email | AttributeSource::Name | AttributeSource::UserId => false,
    }
}

impl SamlIdp {
    /// The values of `from` for `user` at the SP `app` (`said`: what the session's upstream
    /// said, read when some attribute needs it).
    fn values(
        &self,
        from: &AttributeSource,
        app: &SamlApp,
        user: &User,
        said: Option<&UpstreamSaid>,
    ) -> Result<Vec<String>, IdpError> {
        Ok(match from {
            AttributeSource::Email => vec![user.email.as_str().to_owned()],
            AttributeSource::Name => vec![user.name.clone()],
            AttributeSource::UserId => vec![self.pairwise_id(user.id.as_str(), &app.entity_id)?],
            AttributeSource::Groups => said.map(|s| s.groups.clone()).unwrap_or_default(),
            AttributeSource::EmailVerified => {
                vec![said.is_some_and(|s| s.email_verified).to_string()]
            }
            AttributeSource::Claim(name) => said
                .and_then(|s| s.kept.get(name).cloned())
                .into_iter()
                .collect(),
        })
    }

    /// The `saml:AttributeStatement` of an assertion to `app` for `user` in `session`; empty
    /// when no attribute has a value (SAML wants at least one Attribute in a statement).
    pub fn attribute_statement(
        &self,
        app: &SamlApp,
        user: &User,
        session: &SessionRecord,
    ) -> Result<String, IdpError> {
        let said = if app.attributes.iter().any(|a| from_upstream(&a.from)) {
            let c = self.store.upstream_claims(&session.upstream, &user.id)?;
            Some(UpstreamSaid {
                email_verified: c.verified_email.as_deref() == Some(user.email.as_str()),
                groups: c.groups,
                kept: c.kept,
            })
        } else {
            None
        };
        let mut out = String::new();
        for a in &app.attributes {
            let values = self.values(&a.from, app, user, said.as_ref())?;
            out.push_str(&render(a, &values));
        }
        if out.is_empty() {
            return Ok(out);
        }
        Ok(format!(
            "<saml:AttributeStatement>{out}</saml:AttributeStatement>"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::saml_apps::attributes::NameFormat;

    fn attr(name: &str, format: NameFormat, friendly: Option<&str>) -> ReleasedAttribute {
        ReleasedAttribute {
            name: name.into(),
            friendly_name: friendly.map(str::to_owned),
            name_format: format,
            from: AttributeSource::Email,
        }
    }

    #[test]
    fn attributes_are_escaped_and_empty_values_left_out() {
        let a = attr("urn:oid:2.5.4.42", NameFormat::Uri, Some("given\"Name"));
        let xml = render(&a, &["<b>&".into(), String::new(), "x\u{1}y".into()]);
        assert_eq!(
            xml,
            concat!(
                r#"<saml:Attribute Name="urn:oid:2.5.4.42" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri" FriendlyName="given&quot;Name">"#,
                r#"<saml:AttributeValue>&lt;b&gt;&amp;</saml:AttributeValue><saml:AttributeValue>xy</saml:AttributeValue></saml:Attribute>"#
            )
        );
        // No value, or only empty ones: no attribute at all.
        assert_eq!(render(&a, &[]), "");
        assert_eq!(render(&a, &[String::new()]), "");
        let basic = render(&attr("mail", NameFormat::Basic, None), &["a@b".into()]);
        assert!(
            basic.contains(r#"NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">"#),
            "{basic}"
        );
        assert!(!basic.contains("FriendlyName"), "{basic}");
    }
}
