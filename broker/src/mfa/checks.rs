//! Owns the checks on what a plugin returns before the pages show it: texts in both languages
//! within size, forms with few, well-named fields (none that shadows the broker's own).

use super::host::{Form, Localized};

/// A text in both languages, checked for size.
pub fn check_localized(l: &Localized) -> Result<(), String> {
    if l.en.len() > 2048 || l.ko.len() > 2048 {
        return Err("texts are at most 2048 bytes".into());
    }
    Ok(())
}

/// A form as a plugin returned it, checked before the pages render it.
pub fn check_form(f: &Form) -> Result<(), String> {
    check_localized(&f.intro)?;
    if f.fields.is_empty() || f.fields.len() > 8 {
        return Err("a form has 1 to 8 fields".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for field in &f.fields {
        let ok = (1..=32).contains(&field.name.len())
            && field
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !matches!(
                field.name.as_str(),
                "csrf_token" | "journey" | "ticket" | "factor"
            );
        if !ok || !names.insert(field.name.as_str()) {
            return Err(format!(
                "field name `{}` is not 1-32 of a-z, 0-9, _ (or is reserved or repeated)",
                field
                    .name
                    .chars()
                    .take(40)
                    .collect::<String>()
                    .escape_debug()
            ));
        }
        check_localized(&field.label)?;
        if let Some(h) = &field.hint {
            check_localized(h)?;
        }
        if field.max_length == 0 || field.max_length > 256 {
            return Err("max-length is 1 to 256".into());
        }
    }
    if f.qr.as_ref().is_some_and(|q| q.len() > 1024) {
        return Err("qr is at most 1024 bytes".into());
    }
    if f.secret.as_ref().is_some_and(|s| s.len() > 256) {
        return Err("secret is at most 256 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mfa::host;

    #[test]
    fn forms_are_checked() {
        let l = |s: &str| Localized {
            en: s.into(),
            ko: s.into(),
        };
        let field = |name: &str| host::Field {
            name: name.into(),
            kind: host::FieldKind::Code,
            label: l("Code"),
            hint: None,
            max_length: 6,
        };
        let mut f = Form {
            intro: l("Enter"),
            fields: vec![field("code")],
            qr: None,
            secret: None,
        };
        assert!(check_form(&f).is_ok());
        f.fields = vec![field("BAD NAME")];
        assert!(check_form(&f).is_err());
        f.fields = vec![field("csrf_token")];
        assert!(check_form(&f).is_err());
        f.fields = vec![field("a"), field("a")];
        assert!(check_form(&f).is_err());
        f.fields = vec![];
        assert!(check_form(&f).is_err());
        f.fields = vec![field("code")];
        f.intro = l(&"x".repeat(5000));
        assert!(check_form(&f).is_err());
    }
}
