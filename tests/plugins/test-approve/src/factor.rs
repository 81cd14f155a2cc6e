//! Owns the WebAssembly side of `test-approve`: the bindings of the waiting world of
//! `concierge:mfa@0.2.0` and its calls to the approval service.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::numbers;

wit_bindgen::generate!({
    path: ["../../../plugins/wit/mfa.wit", "../../../plugins/wit/0.2"],
    world: "concierge:mfa/waiting-factor-plugin@0.2.0",
    generate_all,
});

use concierge::mfa0_1_0::types::{
    Answer, Description, EnrollStep, FactorKind, Form, Localized, PluginError, User, Verdict,
};
use concierge::mfa0_1_0::{config, random};
use concierge::mfa0_2_0::http::{self, Body, Request, SecretRef};
use exports::concierge::mfa0_1_0::factor::Guest as Factor;
use exports::concierge::mfa0_2_0::waiting::{Guest as Waiting, Pending, PollState};

struct Approve;

export!(Approve);

fn text(en: &str, ko: &str) -> Localized {
    Localized {
        en: String::from(en),
        ko: String::from(ko),
    }
}

fn service() -> Result<String, PluginError> {
    config::get("service")
        .ok_or_else(|| PluginError::Internal("config `service` is not set".into()))
}

fn send(method: &str, url: String, body: Body) -> Result<(u16, String), PluginError> {
    let response = http::send(&Request {
        method: method.into(),
        url,
        headers: Vec::new(),
        body,
    })
    .map_err(|e| PluginError::Unavailable(format!("approval service: {e:?}")))?;
    let text: String = String::from_utf8_lossy(&response.body)
        .chars()
        .take(200)
        .collect();
    Ok((response.status, text))
}

impl Factor for Approve {
    fn describe() -> Description {
        Description {
            id: "test-approve".into(),
            name: text("Approve on your phone", "휴대폰에서 승인"),
            kind: FactorKind::Other,
            needs_enrollment: false,
            amr: vec!["swk".into()],
        }
    }

    fn is_enrolled(_user: User) -> bool {
        true
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        Err(PluginError::Internal(
            "test-approve needs no enrolment".into(),
        ))
    }

    fn enroll_finish(_user: User, _answer: Answer) -> Result<EnrollStep, PluginError> {
        Err(PluginError::Internal(
            "test-approve needs no enrolment".into(),
        ))
    }

    fn challenge_begin(_user: User) -> Result<Form, PluginError> {
        Err(PluginError::Internal(
            "a waiting factor: wait-begin, not challenge-begin".into(),
        ))
    }

    fn verify(_user: User, _answer: Answer) -> Result<Verdict, PluginError> {
        Err(PluginError::Internal(
            "a waiting factor: poll, not verify".into(),
        ))
    }
}

impl Waiting for Approve {
    fn wait_begin(user: User) -> Result<Pending, PluginError> {
        let (right, all) = numbers(&random::bytes(16));
        let choices: Vec<String> = all.iter().map(|n| format!("{n}")).collect();
        let (status, id) = send(
            "POST",
            format!("{}/approvals", service()?),
            Body::Form(vec![
                ("user".into(), SecretRef::Literal(user.email.clone())),
                ("choices".into(), SecretRef::Literal(choices.join(","))),
            ]),
        )?;
        if status != 201 || id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PluginError::Unavailable(format!(
                "approval service answered {status}"
            )));
        }
        Ok(Pending {
            intro: text(
                "We sent a sign-in request to your phone. Approve it there.",
                "휴대폰으로 로그인 요청을 보냈습니다. 휴대폰에서 승인하세요.",
            ),
            number: Some(format!("{right}")),
            correlation: format!("{id}:{right}"),
            poll_every: 2,
            expires_in: 60,
        })
    }

    fn poll(_user: User, correlation: String) -> Result<PollState, PluginError> {
        let Some((id, right)) = correlation.split_once(':') else {
            return Err(PluginError::Internal(
                "a correlation this plugin did not make".into(),
            ));
        };
        let (status, state) = send("GET", format!("{}/approvals/{id}", service()?), Body::None)?;
        if status != 200 {
            return Err(PluginError::Unavailable(format!(
                "approval service answered {status}"
            )));
        }
        Ok(match state.as_str() {
            "pending" => PollState::Waiting,
            "denied" => {
                PollState::Rejected(text("The request was denied.", "요청이 거부되었습니다."))
            }
            s => match s.strip_prefix("picked:") {
                Some(n) if n == right => PollState::Accepted,
                Some(_) => PollState::Rejected(text(
                    "The wrong number was picked: the request was refused.",
                    "잘못된 숫자를 선택하여 요청이 거부되었습니다.",
                )),
                None => {
                    return Err(PluginError::Unavailable(
                        "approval service: unknown state".into(),
                    ));
                }
            },
        })
    }
}
