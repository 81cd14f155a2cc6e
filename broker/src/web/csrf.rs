//! Owns CSRF protection for the hosted forms: a random cookie plus a form token that is an HMAC
//! of it under a broker-wide key (so a cookie planted by a sibling domain cannot be paired with
//! a token without the key). The key is derived from the sealed root secret (`crate::secrets`),
//! so nothing readable from the database makes a token. (The sign-in journey's steps are kept
//! server-side, ADR 11: nothing else is signed for a browser.) After `keys rotate-root`, tokens
//! made under the previous root's key are still accepted until `provider.root_overlap` ends.

use actix_web::HttpRequest;
use actix_web::cookie::Cookie;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::cookies::CookieNames;
use crate::clock::{Clock, Entropy, UnixTime};
use crate::error::WebError;

pub struct Csrf {
    key: [u8; 32],
    /// The previous root secret's key, until when it is accepted, and the clock that says.
    previous: Option<([u8; 32], UnixTime, std::sync::Arc<dyn Clock>)>,
}

/// A token for the page being rendered, and the cookie to set if the browser had none.
pub struct CsrfToken {
    pub token: String,
    pub new_cookie: Option<Cookie<'static>>,
}

impl Csrf {
    /// `key` makes the form tokens.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            previous: None,
        }
    }

    /// Also accepts tokens made under `key` (the previous root secret's) while `clock` says it
    /// is before `until`.
    pub fn with_previous(
        mut self,
        key: [u8; 32],
        until: UnixTime,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Self {
        self.previous = Some((key, until, clock));
        self
    }

    fn mac(&self, cookie_value: &str) -> Result<Vec<u8>, WebError> {
        Self::mac_with(&self.key, cookie_value)
    }

    fn mac_with(key: &[u8; 32], cookie_value: &str) -> Result<Vec<u8>, WebError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(WebError::internal)?;
        mac.update(b"concierge-csrf-v1:");
        mac.update(cookie_value.as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// The token to embed in a form, reusing the browser's CSRF cookie when it has a valid one.
    pub fn issue(
        &self,
        req: &HttpRequest,
        names: &CookieNames,
        entropy: &dyn Entropy,
    ) -> Result<CsrfToken, WebError> {
        let existing = req
            .cookie(&names.csrf)
            .map(|c| c.value().to_owned())
            .filter(|v| v.len() == 43 && URL_SAFE_NO_PAD.decode(v).is_ok());
        let (value, new_cookie) = match existing {
            Some(v) => (v, None),
            None => {
                let v = URL_SAFE_NO_PAD.encode(entropy.bytes32());
                let cookie = names.build(names.csrf.clone(), v.clone());
                (v, Some(cookie))
            }
        };
        Ok(CsrfToken {
            token: URL_SAFE_NO_PAD.encode(self.mac(&value)?),
            new_cookie,
        })
    }

    /// Accepts the form token only if it is the HMAC of this browser's CSRF cookie.
    pub fn verify(
        &self,
        req: &HttpRequest,
        names: &CookieNames,
        form_token: &str,
    ) -> Result<(), WebError> {
        let cookie = req.cookie(&names.csrf).ok_or(WebError::Csrf)?;
        let presented = URL_SAFE_NO_PAD
            .decode(form_token.as_bytes())
            .map_err(|_| WebError::Csrf)?;
        let matches = |expected: Vec<u8>| {
            presented.len() == expected.len() && bool::from(presented.ct_eq(&expected))
        };
        if matches(self.mac(cookie.value())?) {
            return Ok(());
        }
        match &self.previous {
            Some((key, until, clock))
                if clock.now() < *until && matches(Self::mac_with(key, cookie.value())?) =>
            {
                Ok(())
            }
            _ => Err(WebError::Csrf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use actix_web::test::TestRequest;
    use std::sync::Arc;

    #[test]
    fn a_token_of_the_previous_root_is_accepted_until_the_overlap_ends() {
        let names = CookieNames::new("concierge_session", false);
        let cookie = URL_SAFE_NO_PAD.encode([42u8; 32]);
        let req = TestRequest::default()
            .cookie(Cookie::new(names.csrf.clone(), cookie.clone()))
            .to_http_request();
        let old = Csrf::new([1; 32]);
        let token = old
            .issue(&req, &names, &crate::clock::OsEntropy)
            .unwrap()
            .token;
        assert!(old.verify(&req, &names, &token).is_ok());
        let clock = Arc::new(ManualClock::new(999));
        let rotated =
            Csrf::new([2; 32]).with_previous([1; 32], 1_000, Arc::clone(&clock) as Arc<dyn Clock>);
        assert!(
            rotated.verify(&req, &names, &token).is_ok(),
            "within the overlap"
        );
        let fresh = rotated
            .issue(&req, &names, &crate::clock::OsEntropy)
            .unwrap()
            .token;
        assert_ne!(fresh, token, "new tokens are made with the new key");
        assert!(rotated.verify(&req, &names, &fresh).is_ok());
        clock.set(1_000);
        assert!(
            rotated.verify(&req, &names, &token).is_err(),
            "after the overlap"
        );
        assert!(rotated.verify(&req, &names, &fresh).is_ok());
        assert!(Csrf::new([2; 32]).verify(&req, &names, &token).is_err());
    }
}
