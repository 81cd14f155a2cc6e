//! Owns the WebAssembly side of `test-http`: the bindings of `concierge:mfa@0.2.0` and the
//! request its verify makes.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::FIELDS;

wit_bindgen::generate!({
    path: ["../../../plugins/wit/mfa.wit", "../../../plugins/wit/0.2"],
    world: "concierge:mfa/factor-plugin@0.2.0",
    // The 0.1 interfaces 0.2 uses are generated here too.
    generate_all,
});

use concierge::mfa0_1_0::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
use concierge::mfa0_2_0::http::{self, Body, Request, SecretRef};
use exports::concierge::mfa0_1_0::factor::Guest;

struct TestHttp;

export!(TestHttp);

impl Guest for TestHttp {
    fn describe() -> Description {
        Description {
            id: "test-http".into(),
            name: text("Test HTTP factor", "테스트 HTTP 인증"),
            kind: FactorKind::Other,
            needs_enrollment: false,
            amr: vec!["otp".into()],
        }
    }

    fn is_enrolled(_user: User) -> bool {
        true
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        Err(PluginError::Internal("test-http needs no enrolment".into()))
    }

    fn enroll_finish(_user: User, _answer: Answer) -> Result<EnrollStep, PluginError> {
        Err(PluginError::Internal("test-http needs no enrolment".into()))
    }

    fn challenge_begin(_user: User) -> Result<Form, PluginError> {
        Ok(Form {
            intro: text("Test HTTP factor.", "테스트 HTTP 인증."),
            fields: FIELDS
                .iter()
                .map(|name| Field {
                    name: (*name).into(),
                    kind: FieldKind::Text,
                    label: text(name, name),
                    hint: None,
                    max_length: 256,
                })
                .collect(),
            qr: None,
            secret: None,
        })
    }

    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        let get = |name: &str| {
            answer
                .iter()
                .find(|(n, v)| n == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let url = get("url").ok_or_else(|| PluginError::BadInput(text("url?", "url?")))?;
        let secret = get("secret").unwrap_or_default();
        let mut headers = Vec::new();
        if let Some(h) = get("secret_header") {
            headers.push((h, SecretRef::Secret(secret.clone())));
        }
        let body = match get("secret_field") {
            Some(f) => Body::Form(vec![
                ("user".into(), SecretRef::Literal("alice".into())),
                (f, SecretRef::Secret(secret)),
            ]),
            None => Body::None,
        };
        let method = if matches!(body, Body::None) { "GET" } else { "POST" };
        let response = http::send(&Request {
            method: method.into(),
            url,
            headers,
            body,
        })
        .map_err(|e| PluginError::Unavailable(format!("http: {e:?}")))?;
        if response.status == 200 && response.body == b"accept" {
            return Ok(Verdict::Accepted);
        }
        let location = response
            .headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let body: String = String::from_utf8_lossy(&response.body)
            .chars()
            .take(500)
            .collect();
        let seen = format!(
            "status {} location [{location}] body [{body}]",
            response.status.to_string()
        );
        Ok(Verdict::Rejected(Localized {
            en: seen.clone(),
            ko: seen,
        }))
    }
}

fn text(en: &str, ko: &str) -> Localized {
    Localized {
        en: String::from(en),
        ko: String::from(ko),
    }
}
