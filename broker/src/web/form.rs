//! Owns strict parsing of urlencoded form bodies: the right content type, well-formed `%XX`
//! escapes and UTF-8 throughout, or a 400 before any handler sees the request. (The framework's
//! own form extractor silently repairs malformed input, which hides garbage behind a 401.) And
//! the OAuth bodies and queries: every value of every parameter, repeated ones refused.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{self, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::WebError;
use crate::provider::OAuthError;

pub struct StrictForm<T>(pub T);

impl<T> StrictForm<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Accepts only well-formed `application/x-www-form-urlencoded` bytes.
pub fn well_formed(body: &[u8]) -> bool {
    if std::str::from_utf8(body).is_err() {
        return false;
    }
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'%' {
            let hex = |b: Option<&u8>| b.is_some_and(u8::is_ascii_hexdigit);
            if !hex(body.get(i + 1)) || !hex(body.get(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    // Every decoded name and value must be UTF-8 too (no silent U+FFFD replacement).
    body.split(|b| *b == b'&').all(|pair| {
        let decoded: Vec<u8> = percent_decode(pair);
        std::str::from_utf8(&decoded).is_ok()
    })
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' if i + 2 < s.len() => {
                let h = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(h(s[i + 1]) * 16 + h(s[i + 2]));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

impl<T: DeserializeOwned + 'static> FromRequest for StrictForm<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let urlencoded = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let body = Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = body.await.map_err(|e| {
                // The payload limit comes from PayloadConfig; anything else is a broken body.
                if e.as_response_error().status_code()
                    == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                {
                    actix_web::Error::from(WebError::PayloadTooLarge)
                } else {
                    WebError::BadRequest.into()
                }
            })?;
            if !urlencoded || !well_formed(&body) {
                return Err(WebError::BadRequest.into());
            }
            serde_urlencoded::from_bytes::<T>(&body)
                .map(StrictForm)
                .map_err(|_| WebError::BadRequest.into())
        })
    }
}

/// Every value of every parameter, so that repeated parameters can be refused.
pub fn multi_params(raw: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        map.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    map
}

/// A urlencoded OAuth request body: well-formed, no repeated parameters.
pub fn oauth_form(req: &HttpRequest, body: &[u8]) -> Result<BTreeMap<String, String>, OAuthError> {
    let urlencoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !urlencoded || !well_formed(body) {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in multi_params(body) {
        match v.as_slice() {
            [one] => {
                out.insert(k, one.clone());
            }
            _ => {
                return Err(OAuthError::InvalidRequest(format!(
                    "`{k}` given more than once"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_bodies_pass() {
        assert!(well_formed(b"a=1&b=%ED%95%9C+x"));
        assert!(well_formed(b""));
        assert!(!well_formed(b"a=%ZZ"));
        assert!(!well_formed(b"a=%"));
        assert!(!well_formed(b"a=%4"));
        assert!(!well_formed(b"a=%FF%FE"), "decodes to invalid UTF-8");
        assert!(!well_formed(&[b'a', b'=', 0xff]));
    }
}
