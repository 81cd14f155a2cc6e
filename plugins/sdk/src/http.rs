//! Owns outbound HTTP for contract 0.2 factors (feature `http`, grant `http`): a request builder
//! for the usual calls to an MFA service (a form or JSON POST with a credential the host holds),
//! and the response. Secrets are named, never held: `secret("pi-credential")` is replaced by
//! the host in the header or form field the operator bound it to (docs/plugins.md, contract 0.2).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::bindings::http as wit;
use crate::{Error, Result};

pub use serde_json::Value as Json;
pub use wit::{Body, HttpError, Response, SecretRef};

/// A credential the operator configured for this plugin (`[[mfa.plugins.http.secrets]] name`).
pub fn secret(name: &str) -> SecretRef {
    SecretRef::Secret(name.into())
}

impl From<&str> for SecretRef {
    fn from(value: &str) -> Self {
        SecretRef::Literal(value.into())
    }
}

impl From<String> for SecretRef {
    fn from(value: String) -> Self {
        SecretRef::Literal(value)
    }
}

/// One request, built up and then sent with [`Request::send`].
#[derive(Clone, Debug)]
pub struct Request(wit::Request);

impl Request {
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self(wit::Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Body::None,
        })
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A header; its value is text of your own (`"…"`) or a named secret ([`secret`]).
    pub fn header(mut self, name: &str, value: impl Into<SecretRef>) -> Self {
        self.0.headers.push((name.into(), value.into()));
        self
    }

    /// An `application/x-www-form-urlencoded` body; a field's value may be a named secret.
    pub fn form<N: Into<String>, V: Into<SecretRef>>(
        mut self,
        fields: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        self.0.body = Body::Form(
            fields
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        );
        self
    }

    /// One more form field (the body becomes a form if it was not one).
    pub fn field(mut self, name: &str, value: impl Into<SecretRef>) -> Self {
        let field = (String::from(name), value.into());
        match &mut self.0.body {
            Body::Form(fields) => fields.push(field),
            body => *body = Body::Form(alloc::vec![field]),
        }
        self
    }

    /// A JSON body (sent as given, with `content-type: application/json`). Build string values
    /// with [`json_string`]; a secret cannot go in a JSON body, only in a header.
    pub fn json(self, body: impl Into<String>) -> Self {
        let mut request = self.header("content-type", "application/json");
        request.0.body = Body::Raw(body.into().into_bytes());
        request
    }

    /// What will be sent (for tests).
    pub fn as_wit(&self) -> &wit::Request {
        &self.0
    }

    /// Sends it. Every failure is `unavailable` (the host refused it, it was too large, timed
    /// out or failed): the factor fails closed, and a refusal by the host's policy fails the
    /// call whatever the plugin does next.
    pub fn send(self) -> Result<Response> {
        wit::send(&self.0).map_err(|error| Error::Unavailable(describe(&error)))
    }
}

/// A form POST: `post_form(url, [("user", user_id.into()), ("pass", secret("pi-pass"))])`.
pub fn post_form<N: Into<String>, V: Into<SecretRef>>(
    url: &str,
    fields: impl IntoIterator<Item = (N, V)>,
) -> Result<Response> {
    Request::post(url).form(fields).send()
}

/// A JSON POST with one header carrying a named secret (e.g. `Authorization`).
pub fn post_json(url: &str, auth_header: &str, auth_secret: &str, body: &str) -> Result<Response> {
    Request::post(url)
        .header(auth_header, secret(auth_secret))
        .json(body)
        .send()
}

impl Response {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as UTF-8 text, if it is.
    pub fn text(&self) -> Option<&str> {
        core::str::from_utf8(&self.body).ok()
    }

    /// The body parsed as JSON; a body that is not JSON is `unavailable` (the service answered
    /// something else than it should). Read values with `pointer`:
    /// `response.json()?.pointer("/result/value").and_then(Json::as_bool) == Some(true)`.
    pub fn json(&self) -> Result<Json> {
        serde_json::from_slice(&self.body)
            .map_err(|error| Error::Unavailable(format!("http: the answer is not JSON: {error}")))
    }

    /// The first value of header `name` (lower case, as the host gives them).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// `value` as a JSON string literal, quotes included (for building JSON bodies).
pub fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn describe(error: &HttpError) -> String {
    match error {
        HttpError::Refused(why) => format!("http refused: {why}"),
        HttpError::TooLarge(why) => format!("http too large: {why}"),
        HttpError::Timeout => "http timeout".into(),
        HttpError::Failed(why) => format!("http failed: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_form_and_json_posts_with_named_secrets() {
        let request = Request::post("https://pi.example/validate/check")
            .header("authorization", secret("pi-credential"))
            .form([("user", SecretRef::from("ana")), ("pass", secret("otp"))]);
        let wit = request.as_wit();
        assert_eq!(wit.method, "POST");
        assert!(matches!(&wit.headers[0].1, SecretRef::Secret(name) if name == "pi-credential"));
        assert!(matches!(&wit.body, Body::Form(fields) if fields.len() == 2));
        let fields = Request::post("https://x.example")
            .field("user", "ana")
            .field("pass", secret("otp"));
        assert!(matches!(&fields.as_wit().body, Body::Form(f) if f.len() == 2 && f[0].0 == "user"));
        let json = Request::post("https://x.example").json("{}");
        assert_eq!(json.as_wit().headers[0].0, "content-type");
        assert!(matches!(&json.as_wit().body, Body::Raw(bytes) if bytes == b"{}"));
    }

    #[test]
    fn json_answers_are_read_by_pointer_and_anything_else_is_unavailable() {
        let answer = |body: &str| Response {
            status: 200,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        };
        let json =
            answer(r#"{"result": {"status": true, "value": false}, "detail": {"value": true}}"#)
                .json();
        let value = json.as_ref().ok().and_then(|j| j.pointer("/result/value"));
        assert_eq!(value.and_then(Json::as_bool), Some(false));
        assert!(matches!(
            answer("<html>").json(),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            json_string("a\"b\\c\n\u{1}한"),
            "\"a\\\"b\\\\c\\n\\u0001한\""
        );
    }
}
