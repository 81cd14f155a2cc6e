//! Owns `approve`, the reference waiting factor: a push approval with number matching. The
//! sign-in page shows a two-digit number; the approval service (config `service`, its origin
//! granted `http`) shows the user's phone three numbers; only the one shown on the page approves.
//! Service: `POST /approvals` (form `user`, `choices`) -> 201 and the approval's id;
//! `GET /approvals/ID` -> `pending`, `denied` or `picked:NN`. Grants: random, http.
#![cfg_attr(target_arch = "wasm32", no_std)]

use concierge_plugin_sdk::http::Request;
use concierge_plugin_sdk::prelude::*;

struct Approve;
export!(Approve);

fn service() -> Result<String> {
    config::get("service").ok_or_else(|| Error::internal("config `service` is not set"))
}

impl Factor for Approve {
    fn describe() -> Description {
        Description::new("approve", text("Approve on your phone", "휴대폰에서 승인"))
            .amr("swk")
            .without_enrollment()
    }

    fn is_enrolled(_: &User) -> bool {
        true
    }
}

impl Waiting for Approve {
    fn wait_begin(user: &User) -> Result<Pending> {
        let (shown, all) = code::number_match(3);
        let response = Request::post(format!("{}/approvals", service()?))
            .field("user", user.email.as_str())
            .field("choices", all.join(","))
            .send()?;
        let id = response.text().unwrap_or_default().trim().to_owned();
        if response.status != 201 || id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Error::unavailable(format!(
                "approval service: {}",
                response.status
            )));
        }
        let intro = text(
            "Approve the sign-in on your phone.",
            "휴대폰에서 로그인을 승인하세요.",
        );
        Ok(Pending::new(intro, format!("{id}:{shown}")).number(shown))
    }

    fn poll(_: &User, correlation: &str) -> Result<Poll> {
        let (id, shown) = correlation
            .split_once(':')
            .ok_or_else(|| Error::internal("correlation"))?;
        let response = Request::get(format!("{}/approvals/{id}", service()?)).send()?;
        Ok(
            match (response.status, response.text().unwrap_or_default()) {
                (200, "pending") => Poll::Waiting,
                (200, "denied") => {
                    Poll::Rejected(text("The request was denied.", "요청이 거부되었습니다."))
                }
                (200, s) if s.strip_prefix("picked:") == Some(shown) => Poll::Accepted,
                (200, s) if s.starts_with("picked:") => Poll::Rejected(text(
                    "The wrong number was picked: the request was refused.",
                    "잘못된 숫자를 선택하여 요청이 거부되었습니다.",
                )),
                (status, _) => {
                    return Err(Error::unavailable(format!("approval service: {status}")));
                }
            },
        )
    }
}
