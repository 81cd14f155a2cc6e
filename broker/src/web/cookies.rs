//! Owns the names and attributes of the broker's cookies: `__Host-` prefix and `Secure` over
//! https, plain names only for http on loopback; always HttpOnly, Path=/, SameSite=Lax (None
//! for the one cookie a SAML IdP's cross-site POST must carry).

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};

#[derive(Debug, Clone)]
pub struct CookieNames {
    pub session: String,
    pub csrf: String,
    /// Binds sign-in journeys (and the logins they leave waiting at upstreams) to the browser
    /// that started them.
    pub binding: String,
    secure: bool,
}

impl CookieNames {
    pub fn new(base_session_name: &str, https: bool) -> Self {
        let prefix = if https { "__Host-" } else { "" };
        Self {
            session: format!("{prefix}{base_session_name}"),
            csrf: format!("{prefix}concierge_csrf"),
            binding: format!("{prefix}concierge_binding"),
            secure: https,
        }
    }

    /// A session-lifetime cookie (no Max-Age: it goes when the browser closes; the server-side
    /// record decides how long it is honoured).
    pub fn build(&self, name: String, value: String) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .finish()
    }

    /// Like [`Self::build`], but also sent on a cross-site POST (an IdP's form posting to the
    /// SAML ACS): SameSite=None over https. On plain http (loopback only) browsers refuse
    /// SameSite=None without Secure, so it stays Lax there.
    pub fn build_cross_site(&self, name: String, value: String) -> Cookie<'static> {
        let mut c = self.build(name, value);
        if self.secure {
            c.set_same_site(SameSite::None);
        }
        c
    }

    /// A cookie that deletes `name` in the browser.
    pub fn removal(&self, name: String) -> Cookie<'static> {
        let mut c = self.build(name, String::new());
        c.set_max_age(CookieDuration::ZERO);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cross_site_binding_cookie_is_samesite_none_and_secure_over_https() {
        let https = CookieNames::new("concierge_session", true);
        let c = https.build_cross_site(https.binding.clone(), "v".into());
        assert_eq!(c.name(), "__Host-concierge_binding");
        assert_eq!(c.same_site(), Some(SameSite::None));
        assert_eq!(c.secure(), Some(true));
        assert_eq!(c.http_only(), Some(true));
        // Plain http (loopback development): browsers drop SameSite=None without Secure.
        let http = CookieNames::new("concierge_session", false);
        let c = http.build_cross_site(http.binding.clone(), "v".into());
        assert_eq!(c.same_site(), Some(SameSite::Lax));
        assert_eq!(c.secure(), Some(false));
        // Every other cookie stays Lax.
        let s = https.build(https.session.clone(), "v".into());
        assert_eq!(s.same_site(), Some(SameSite::Lax));
    }
}
