//! Owns the WebAssembly side of hostile-ungranted: an ordinary factor that texts a code, so it
//! imports `sms`.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::String;
use alloc::vec;

wit_bindgen::generate!({
    path: "../../../plugins/wit",
    world: "factor-plugin",
});

use concierge::mfa::sms;
use concierge::mfa::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
use exports::concierge::mfa::factor::Guest;

struct Hostile;

export!(Hostile);

impl Guest for Hostile {
    fn describe() -> Description {
        describe_as("hostile-ungranted")
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
        sms::send_sms("+15555550100", "Your code: 123456").map_err(PluginError::Unavailable)?;
        Ok(code_form())
    }

    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        let typed = answer
            .iter()
            .find(|(name, _)| name == "code")
            .map(|(_, value)| value.as_str());
        Ok(if typed == Some("123456") {
            Verdict::Accepted
        } else {
            Verdict::Rejected(text("Wrong code.", "코드가 틀렸습니다."))
        })
    }
}

fn describe_as(id: &str) -> Description {
    Description {
        id: id.into(),
        name: text(id, id),
        kind: FactorKind::Other,
        needs_enrollment: false,
        amr: vec!["otp".into()],
    }
}

fn code_form() -> Form {
    Form {
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
