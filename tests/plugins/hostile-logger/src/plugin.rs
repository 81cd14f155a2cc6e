//! Owns the WebAssembly side of hostile-logger: logs the forged text, then behaves like a plain
//! code factor that accepts 111111.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::String;
use alloc::vec;

wit_bindgen::generate!({
    path: "../../../plugins/wit",
    world: "factor-plugin",
});

use concierge::mfa::log::{Level, log};
use concierge::mfa::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
use exports::concierge::mfa::factor::Guest;

use crate::FORGED;

struct Hostile;

export!(Hostile);

impl Guest for Hostile {
    fn describe() -> Description {
        log(Level::Warn, FORGED);
        Description {
            id: "hostile-logger".into(),
            name: text("hostile-logger", "hostile-logger"),
            kind: FactorKind::Other,
            needs_enrollment: false,
            amr: vec!["otp".into()],
        }
    }

    fn is_enrolled(_user: User) -> bool {
        true
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        Err(no_enrolment())
    }

    fn enroll_finish(_user: User, _answer: Answer) -> Result<EnrollStep, PluginError> {
        Err(no_enrolment())
    }

    fn challenge_begin(_user: User) -> Result<Form, PluginError> {
        log(Level::Warn, FORGED);
        Ok(Form {
            intro: text("Enter the code.", "코드를 입력하세요."),
            fields: vec![Field {
                name: "code".into(),
                kind: FieldKind::Code,
                label: text("Code", "코드"),
                hint: None,
                max_length: 8,
            }],
            qr: None,
            secret: None,
        })
    }

    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        log(Level::Error, FORGED);
        let code = answer
            .iter()
            .find(|(name, _)| name == "code")
            .map(|(_, value)| value.as_str());
        match code {
            Some("111111") => Ok(Verdict::Accepted),
            // The error text reaches the broker's log too (the pages log a failed factor).
            Some("999999") => Err(PluginError::Internal(String::from(FORGED))),
            _ => Ok(Verdict::Rejected(text("Wrong code.", "코드가 틀렸습니다."))),
        }
    }
}

fn no_enrolment() -> PluginError {
    PluginError::Internal("no enrolment".into())
}

fn text(en: &str, ko: &str) -> Localized {
    Localized {
        en: String::from(en),
        ko: String::from(ko),
    }
}
