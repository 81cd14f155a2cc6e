//! Owns CSRF protection for the hosted forms: a random cookie plus a form token that is an HMAC
//! of it under a broker-wide key (so a cookie planted by a sibling domain cannot be paired with
//! a token without the key), and values bound to one browser (the same cookie) under a second,
//! unrelated key. Both keys are derived from the sealed root secret (`crate::secrets`), so
//! nothing readable from the database signs either.

use actix_web::HttpRequest;
use actix_web::cookie::Cookie;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::cookies::CookieNames;
use crate::clock::Entropy;
use crate::error::WebError;

pub struct Csrf {
    key: [u8; 32],
    binding_key: [u8; 32],
}

/// A token for the page being rendered, and the cookie to set if the browser had none.
pub struct CsrfToken {
    pub token: String,
    pub new_cookie: Option<Cookie<'static>>,
}

impl Csrf {
    /// `key` makes form tokens, `binding_key` the values bound to a browser; they must differ.
    pub fn new(key: [u8; 32], binding_key: [u8; 32]) -> Self {
        Self { key, binding_key }
    }

    fn mac(&self, cookie_value: &str) -> Result<Vec<u8>, WebError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).map_err(WebError::internal)?;
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

    /// Signs `data` for this browser only: the MAC covers `label`, the browser's CSRF cookie
    /// and `data`. Returns `data.mac` (base64url), or `None` if the browser has no CSRF cookie.
    pub fn sign_for_browser(
        &self,
        req: &HttpRequest,
        names: &CookieNames,
        label: &str,
        data: &[u8],
    ) -> Result<Option<String>, WebError> {
        let Some(cookie) = req.cookie(&names.csrf) else {
            return Ok(None);
        };
        self.sign_with_cookie(cookie.value(), label, data).map(Some)
    }

    /// Signs `data` for the browser a page is rendered for: bound to the CSRF cookie it has, or
    /// to the one `issued` is about to set.
    pub fn sign_for_page(
        &self,
        req: &HttpRequest,
        names: &CookieNames,
        issued: &CsrfToken,
        label: &str,
        data: &[u8],
    ) -> Result<String, WebError> {
        match &issued.new_cookie {
            Some(c) => self.sign_with_cookie(c.value(), label, data),
            None => self
                .sign_for_browser(req, names, label, data)?
                .ok_or(WebError::Csrf),
        }
    }

    /// A ticket (any serialisable step state) signed for the browser a page is rendered for.
    pub fn sign_ticket<T: serde::Serialize>(
        &self,
        req: &HttpRequest,
        names: &CookieNames,
        issued: &CsrfToken,
        label: &str,
        ticket: &T,
    ) -> Result<String, WebError> {
        let data = serde_json::to_vec(ticket).map_err(WebError::internal)?;
        self.sign_for_page(req, names, issued, label, &data)
    }

    /// The ticket of a value made by [`Self::sign_ticket`], if it is this browser's, for
    /// `label`, and well formed (its expiry is the caller's to check).
    pub fn open_ticket<T: serde::de::DeserializeOwned>(
        &self,
        req: &HttpRequest,
        names: &CookieNames,
        label: &str,
        signed: &str,
    ) -> Option<T> {
        self.verify_for_browser(req, names, label, signed)
            .and_then(|d| serde_json::from_slice(&d).ok())
    }

    /// As [`Self::sign_for_browser`], for a cookie value about to be set.
    pub fn sign_with_cookie(
        &self,
        cookie_value: &str,
        label: &str,
        data: &[u8],
    ) -> Result<String, WebError> {
        let mac = self.labelled_mac(cookie_value, label, data)?;
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(data),
            URL_SAFE_NO_PAD.encode(mac)
        ))
    }

    /// The data of a value made by [`Self::sign_for_browser`] for this browser and `label`.
    pub fn verify_for_browser(
        &self,
        req: &HttpRequest,
        names: &CookieNames,
        label: &str,
        signed: &str,
    ) -> Option<Vec<u8>> {
        let cookie = req.cookie(&names.csrf)?;
        let (data, mac) = signed.split_once('.')?;
        let data = URL_SAFE_NO_PAD.decode(data).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.labelled_mac(cookie.value(), label, &data).ok()?;
        (mac.len() == expected.len() && bool::from(mac.ct_eq(&expected))).then_some(data)
    }

    fn labelled_mac(
        &self,
        cookie_value: &str,
        label: &str,
        data: &[u8],
    ) -> Result<Vec<u8>, WebError> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.binding_key).map_err(WebError::internal)?;
        mac.update(b"concierge-signed-v1:");
        mac.update(label.as_bytes());
        mac.update(b":");
        mac.update(cookie_value.as_bytes());
        mac.update(b":");
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
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
        let expected = self.mac(cookie.value())?;
        if presented.len() == expected.len() && bool::from(presented.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }
}
