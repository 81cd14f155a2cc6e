//! Owns the WebAssembly side of hostile-malformed: every value it returns breaks a rule of the
//! contract (id pattern, field-name pattern, sane lengths).

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

wit_bindgen::generate!({
    path: "../../../plugins/wit",
    world: "factor-plugin",
});

use concierge::mfa::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
use exports::concierge::mfa::factor::Guest;

/// Characters in each absurd text: far beyond any page, well within a 4 MiB memory cap.
const ABSURD: usize = 100_000;

struct Malformed;

export!(Malformed);

impl Guest for Malformed {
    fn describe() -> Description {
        Description {
            // Not [a-z0-9-]{1,32}.
            id: "BAD ID!".into(),
            name: absurd(),
            kind: FactorKind::Other,
            needs_enrollment: false,
            amr: vec!["otp".into(), "x".repeat(ABSURD), String::new()],
        }
    }

    fn is_enrolled(_user: User) -> bool {
        true
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        Ok(bad_form())
    }

    fn enroll_finish(_user: User, _answer: Answer) -> Result<EnrollStep, PluginError> {
        Ok(EnrollStep::Next(bad_form()))
    }

    fn challenge_begin(_user: User) -> Result<Form, PluginError> {
        Ok(bad_form())
    }

    fn verify(_user: User, _answer: Answer) -> Result<Verdict, PluginError> {
        Ok(Verdict::Rejected(absurd()))
    }
}

/// A form whose field names break `[a-z0-9_]{1,32}` (spaces, capitals, markup, empty, too long,
/// duplicated) and whose texts are absurdly long.
fn bad_form() -> Form {
    let names: Vec<String> = vec![
        "Bad Name!".into(),
        "<script>alert(1)</script>".into(),
        String::new(),
        "a".repeat(33),
        "code".into(),
        "code".into(),
    ];
    Form {
        intro: absurd(),
        fields: names
            .into_iter()
            .map(|name| Field {
                name,
                kind: FieldKind::Text,
                label: absurd(),
                hint: Some(absurd()),
                max_length: u32::MAX,
            })
            .collect(),
        qr: Some("q".repeat(ABSURD)),
        secret: Some("s".repeat(ABSURD)),
    }
}

fn absurd() -> Localized {
    Localized {
        en: "A".repeat(ABSURD),
        ko: "가".repeat(ABSURD / 3),
    }
}
