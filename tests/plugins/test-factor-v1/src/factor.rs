//! Owns the WebAssembly side of the hot-reload test factor, shared by test-factor-v1 and
//! test-factor-v2 (each sets `VERSION` and `ANSWER`). It imports no capability at all.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec;

use crate::{ANSWER, VERSION};

wit_bindgen::generate!({
    path: "../../../plugins/wit",
    world: "factor-plugin",
});

use concierge::mfa::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
use exports::concierge::mfa::factor::Guest;

struct TestFactor;

export!(TestFactor);

impl Guest for TestFactor {
    fn describe() -> Description {
        Description {
            id: "test-factor".into(),
            name: Localized {
                en: format!("Test factor v{VERSION}"),
                ko: format!("테스트 인증 v{VERSION}"),
            },
            kind: FactorKind::Other,
            needs_enrollment: false,
            amr: vec!["otp".into()],
        }
    }

    fn is_enrolled(_user: User) -> bool {
        true
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        Err(PluginError::Internal(
            "test-factor needs no enrolment".into(),
        ))
    }

    fn enroll_finish(_user: User, _answer: Answer) -> Result<EnrollStep, PluginError> {
        Err(PluginError::Internal(
            "test-factor needs no enrolment".into(),
        ))
    }

    fn challenge_begin(_user: User) -> Result<Form, PluginError> {
        Ok(Form {
            intro: Localized {
                en: format!("Test factor version {VERSION}: enter the test code."),
                ko: format!("테스트 인증 version {VERSION}: 테스트 코드를 입력하세요."),
            },
            fields: vec![Field {
                name: "code".into(),
                kind: FieldKind::Code,
                label: text("Code", "코드"),
                hint: None,
                max_length: 6,
            }],
            qr: None,
            secret: None,
        })
    }

    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        let typed = answer
            .iter()
            .find(|(name, _)| name == "code")
            .map(|(_, value)| value.trim());
        Ok(if typed == Some(ANSWER) {
            Verdict::Accepted
        } else {
            Verdict::Rejected(text("Wrong test code.", "테스트 코드가 틀렸습니다."))
        })
    }
}

fn text(en: &str, ko: &str) -> Localized {
    Localized {
        en: String::from(en),
        ko: String::from(ko),
    }
}
