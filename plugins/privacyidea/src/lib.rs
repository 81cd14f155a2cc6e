//! Owns the `privacyidea` factor: the user's token lives in privacyIDEA (nothing to enrol here),
//! and the code typed at sign-in (6 or 8 digits) is POSTed as a form to its `/validate/check`
//! (config `validate_url`) with the service credential in `Authorization`: a secret the host holds
//! and writes, which the plugin only names (config `secret`, default `pi-credential`; `""` sends
//! none). The user is named as config `user_name` says: `email` (default), `local_part` (of the
//! email), `id`, or `claim:<name>` (an upstream claim, grant `claims`), in config `realm` if set.
//! Only a 200 whose `result.value` is true passes; a wrong or replayed code is rejected; any
//! other answer is `unavailable` (fails closed). Grants: `http` (and `claims`). The manifest is
//! in docs/plugins.md.
#![cfg_attr(target_arch = "wasm32", no_std)]

use concierge_plugin_sdk::http::{Json, Request, secret};
use concierge_plugin_sdk::{claims, prelude::*};

struct PrivacyIdea;
export!(PrivacyIdea);

fn user_name(user: &User) -> Result<String> {
    let local_part = user.email.rsplit_once('@').map_or("", |(local, _)| local);
    match config::get("user_name").as_deref().unwrap_or("email") {
        "email" => Ok(user.email.clone()),
        "local_part" => Ok(local_part.into()),
        "id" => Ok(user.id.clone()),
        other => match other.strip_prefix("claim:") {
            Some(name) => claims::get(name).ok_or(Error::unavailable("no such claim")),
            None => Err(Error::internal(format!("user_name {other:?} is unknown"))),
        },
    }
}

impl Factor for PrivacyIdea {
    fn describe() -> Description {
        let description = Description::new("privacyidea", text("Security token", "보안 토큰"));
        description.amr("otp").without_enrollment()
    }

    fn is_enrolled(_: &User) -> bool {
        true
    }

    fn challenge(_: &User) -> Result<Form> {
        let intro = text("Enter your token's code.", "토큰의 코드를 입력하세요.");
        Ok(Form::new(intro).field(Field::code("code", text("Code", "코드"))))
    }

    fn verify(user: &User, answer: &Answer) -> Result<Verdict> {
        let malformed = text("Enter 6 or 8 digits.", "숫자 6자리나 8자리를 입력하세요.");
        let code = answer.code("code", 6).or_else(|| answer.code("code", 8));
        let code = code.ok_or(Error::bad_input(malformed))?;
        let url = config::get("validate_url").ok_or(Error::internal("no validate_url"))?;
        let name = user_name(user)?;
        let mut request = Request::post(url).field("user", name).field("pass", code);
        if let Some(realm) = config::get("realm") {
            request = request.field("realm", realm);
        }
        let credential = config::get("secret").unwrap_or_else(|| "pi-credential".into());
        if !credential.is_empty() {
            request = request.header("authorization", secret(&credential));
        }
        let response = request.send()?;
        let status = response.status;
        if status != 200 {
            return Err(Error::unavailable(format!("privacyIDEA answered {status}")));
        }
        let json = response.json()?;
        let detail = json.pointer("/detail/message").and_then(Json::as_str);
        let replayed = detail.is_some_and(|m| m.contains("previous otp used again"));
        let used = text("That code was already used.", "이미 사용한 코드입니다.");
        let wrong = text("That code is not correct.", "코드가 올바르지 않습니다.");
        match json.pointer("/result/value").and_then(Json::as_bool) {
            Some(true) => Ok(Verdict::Accepted),
            Some(false) => Ok(Verdict::rejected(if replayed { used } else { wrong })),
            None => Err(Error::unavailable("privacyIDEA: no result.value")),
        }
    }
}
