//! Owns the contract's types as an integrator sees them (`Text` for `localized`, `Error` for
//! `plugin-error`) and the builders that keep a factor short: descriptions, forms, fields,
//! errors and verdicts.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use concierge_plugin_kit::locale::Lang;

pub use crate::bindings::v1::types::{
    Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized as Text,
    PluginError as Error, User, Verdict,
};

/// A text in English and Korean (the host shows the user's language).
pub fn text(en: &str, ko: &str) -> Text {
    Text::new(en, ko)
}

impl Text {
    /// A text from its English and Korean versions.
    pub fn new(en: impl Into<String>, ko: impl Into<String>) -> Self {
        Self {
            en: en.into(),
            ko: ko.into(),
        }
    }

    /// The same text in both languages (e.g. a question the user wrote).
    pub fn same(text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            en: text.clone(),
            ko: text,
        }
    }

    /// Adds `en` and `ko` at the end of each version.
    pub fn append(&mut self, en: &str, ko: &str) {
        self.en.push_str(en);
        self.ko.push_str(ko);
    }

    /// This text followed by the numbered `choices` (` 1. … 2. …`), for a page that asks the
    /// user to pick one by typing its number (the contract has no drop-down; read the pick
    /// with [`crate::Answer::choice`]).
    pub fn with_choices(mut self, choices: &[[&str; 2]]) -> Self {
        for (n, [en, ko]) in choices.iter().enumerate() {
            let n = n + 1;
            self.append(&format!(" {n}. {en}"), &format!(" {n}. {ko}"));
        }
        self
    }

    /// The version in `lang` (for what the plugin sends itself: an email, an SMS).
    pub fn get(&self, lang: Lang) -> &str {
        lang.pick(&self.en, &self.ko)
    }
}

impl User {
    /// The language of this user's pages and messages.
    pub fn lang(&self) -> Lang {
        Lang::of(&self.locale)
    }
}

impl Description {
    /// A factor called `id` (the manifest's id, `[a-z0-9-]{1,32}`) named `name`: kind `other`,
    /// needs enrolment, no `amr` yet (add them with [`Description::amr`]).
    pub fn new(id: &str, name: Text) -> Self {
        Self {
            id: id.into(),
            name,
            kind: FactorKind::Other,
            needs_enrollment: true,
            amr: Vec::new(),
        }
    }

    /// One more RFC 8176 method this factor proves (`otp`, `pin`, `kba`, `sms` …).
    pub fn amr(mut self, value: &str) -> Self {
        self.amr.push(value.into());
        self
    }

    /// The kind (the pages pick an icon and wording from it).
    pub fn kind(mut self, kind: FactorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Every user has this factor (e.g. codes to the account's email): no enrolment.
    pub fn without_enrollment(mut self) -> Self {
        self.needs_enrollment = false;
        self
    }
}

impl Form {
    /// A page with `intro` above its fields (add them with [`Form::field`], 1 to 8).
    pub fn new(intro: Text) -> Self {
        Self {
            intro,
            fields: Vec::new(),
            qr: None,
            secret: None,
        }
    }

    pub fn field(mut self, field: Field) -> Self {
        self.fields.push(field);
        self
    }

    /// Shown as a QR code (at most 1024 bytes), e.g. an `otpauth://` URI.
    pub fn qr(mut self, qr: impl Into<String>) -> Self {
        self.qr = Some(qr.into());
        self
    }

    /// Shown verbatim in a monospace box (at most 256 bytes).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }
}

impl Field {
    fn new(name: &str, kind: FieldKind, label: Text, max_length: u32) -> Self {
        Self {
            name: name.into(),
            kind,
            label,
            hint: None,
            max_length,
        }
    }

    /// A one-time code (numeric keypad), at most 8 characters unless changed.
    pub fn code(name: &str, label: Text) -> Self {
        Self::new(name, FieldKind::Code, label, 8)
    }

    /// Free text, at most 256 characters unless changed.
    pub fn text(name: &str, label: Text) -> Self {
        Self::new(name, FieldKind::Text, label, 256)
    }

    /// A phone number (E.164), at most 20 characters unless changed.
    pub fn phone(name: &str, label: Text) -> Self {
        Self::new(name, FieldKind::Phone, label, 20)
    }

    pub fn hint(mut self, hint: Text) -> Self {
        self.hint = Some(hint);
        self
    }

    /// At most `max_length` characters (1 to 256).
    pub fn max_length(mut self, max_length: u32) -> Self {
        self.max_length = max_length;
        self
    }
}

impl Error {
    /// The answer is malformed: `message` is shown to the user.
    pub fn bad_input(message: Text) -> Self {
        Self::BadInput(message)
    }

    /// A capability failed; `reason` is logged, the user sees a generic page.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable(reason.into())
    }

    /// Anything else (e.g. a config value you do not understand); logged, never shown.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::Internal(reason.into())
    }
}

impl Verdict {
    /// A wrong (or expired, or used) answer; `message` is shown to the user.
    pub fn rejected(message: Text) -> Self {
        Self::Rejected(message)
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_contract_types() {
        let d = Description::new("kba", text("Question", "질문"))
            .amr("kba")
            .without_enrollment();
        assert_eq!(d.id, "kba");
        assert_eq!(d.amr, ["kba"]);
        assert!(!d.needs_enrollment);
        let form = Form::new(text("a", "b"))
            .field(Field::text("answer", text("Answer", "답")).max_length(100))
            .field(Field::code("code", text("Code", "코드")).hint(text("6", "6")));
        assert_eq!(form.fields.len(), 2);
        assert_eq!(form.fields[0].max_length, 100);
        assert!(form.fields[1].hint.is_some());
        assert_eq!(text("yes", "네").get(Lang::Ko), "네");
        let pick = text("Pick:", "고르세요:").with_choices(&[["a", "가"], ["b", "나"]]);
        assert_eq!(
            (pick.en.as_str(), pick.ko.as_str()),
            ("Pick: 1. a 2. b", "고르세요: 1. 가 2. 나")
        );
        let user = User {
            id: "u".into(),
            email: String::new(),
            locale: "ko-KR".into(),
        };
        assert_eq!(user.lang(), Lang::Ko);
    }
}
