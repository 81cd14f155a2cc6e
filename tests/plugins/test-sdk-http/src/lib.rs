//! Owns `test-sdk-http`, a contract 0.2 factor on the SDK shaped like a privacyIDEA check: its
//! verify POSTs `user` (the user's id) and `pass` (the typed code) as a form to the manifest's
//! `url`, with the header `authorization` set to the secret `service-credential`, and accepts
//! only a `200` whose JSON says `result.status` and `result.value` are `true`; any other answer
//! is rejected, an http failure or a body that is not JSON is `unavailable`. Grants: `http`.
//! Part of the test corpus (plugins/tools/harness tests it through the harness's fake http).
#![cfg_attr(target_arch = "wasm32", no_std)]

use concierge_plugin_sdk::http::{Json, Request, secret};
use concierge_plugin_sdk::prelude::*;

struct TestSdkHttp;
export!(TestSdkHttp);

impl Factor for TestSdkHttp {
    fn describe() -> Description {
        Description::new("test-sdk-http", text("Service code", "서비스 코드"))
            .amr("otp")
            .without_enrollment()
    }

    fn is_enrolled(_: &User) -> bool {
        true
    }

    fn challenge(_: &User) -> Result<Form> {
        Ok(Form::new(text("Enter your code.", "코드를 입력하세요."))
            .field(Field::code("code", text("Code", "코드"))))
    }

    fn verify(user: &User, answer: &Answer) -> Result<Verdict> {
        let code = answer
            .code("code", 6)
            .ok_or_else(|| Error::bad_input(text("Enter 6 digits.", "6자리 숫자를 입력하세요.")))?;
        let url = config::get("url").ok_or_else(|| Error::internal("config url is not set"))?;
        let response = Request::post(url)
            .header("authorization", secret("service-credential"))
            .field("user", user.id.as_str())
            .field("pass", code)
            .send()?;
        let json = response.json()?;
        let yes = |path| json.pointer(path).and_then(Json::as_bool) == Some(true);
        Ok(
            if response.status == 200 && yes("/result/status") && yes("/result/value") {
                Verdict::Accepted
            } else {
                Verdict::rejected(text(
                    "That code is not correct.",
                    "코드가 올바르지 않습니다.",
                ))
            },
        )
    }
}
