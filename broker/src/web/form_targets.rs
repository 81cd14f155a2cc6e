//! Owns where a page's forms may lead: the `form-action` of its Content-Security-Policy,
//! computed in one place from the journey's next hops (browsers apply `form-action` to every
//! redirect that follows a submission, so an answer that ends at an app or an upstream must
//! name that origin).

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::header::{CONTENT_SECURITY_POLICY, HeaderValue};
use actix_web::{HttpResponse, web};
use url::Url;

use super::AppState;
use crate::error::WebError;
use crate::flow::contract::Hop;
use crate::upstream::Connector;

/// The sources a page's forms may lead to: always this site (`'self'`), plus exact origins
/// (`scheme://host:port`) or private-use schemes (`com.example.app:`). Never a wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormTargets(BTreeSet<String>);

impl FormTargets {
    /// This site only.
    pub fn same_site() -> Self {
        Self::default()
    }

    /// Allows the origin of `url` (or its scheme, for a private-use scheme redirect URI).
    pub fn allow(&mut self, url: &Url) {
        if let Some(source) = source_of(url) {
            self.0.insert(source);
        }
    }

    /// The `form-action` sources, `'self'` first.
    pub fn sources(&self) -> Vec<&str> {
        std::iter::once("'self'")
            .chain(self.0.iter().map(String::as_str))
            .collect()
    }

    /// The page's whole policy (see [`super::middleware::csp`]); `scripts`: the page loads
    /// this site's own script files (a native factor's page).
    pub fn policy(&self, scripts: bool) -> String {
        super::middleware::csp(&self.sources(), scripts)
    }

    /// Sets the policy on a rendered page; the middleware keeps it.
    pub fn apply(&self, res: &mut HttpResponse, scripts: bool) {
        if let Ok(v) = HeaderValue::from_str(&self.policy(scripts)) {
            res.headers_mut().insert(CONTENT_SECURITY_POLICY, v);
        }
    }
}

/// A CSP source expression for a URL: its origin, or `scheme:` for a private-use scheme
/// (an opaque origin). `None` for anything that cannot be one safely.
pub(crate) fn source_of(uri: &Url) -> Option<String> {
    match uri.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => {
            let scheme = uri.scheme();
            let safe = !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                // Never a scheme that would allow script or inline content.
                && !matches!(scheme, "javascript" | "data" | "blob" | "filesystem");
            safe.then(|| format!("{scheme}:"))
        }
    }
}

/// The page's form targets for the journey's next hops ([`Hop`], computed by the flow). An
/// upstream whose endpoint is unknown right now is left out (the page still works for
/// everything else).
pub(crate) async fn form_targets(
    state: &web::Data<AppState>,
    hops: &[Hop],
) -> Result<FormTargets, WebError> {
    let mut targets = FormTargets::same_site();
    for hop in hops {
        match hop {
            Hop::Url(url) => targets.allow(url),
            Hop::RoutedUpstreams => {
                let ids = routed_upstreams(&state.settings.upstreams);
                for url in state.routed.endpoints(&state.upstreams, &ids).await {
                    targets.allow(&url);
                }
            }
            Hop::UpstreamLogout(sid) => {
                if let Some(url) = logout_endpoint(state, sid).await? {
                    targets.allow(&url);
                }
                // The sign-out goes through the SAML SPs of the session first (only those).
                for url in session_slo_urls(state, sid).await? {
                    targets.allow(&url);
                }
            }
        }
    }
    Ok(targets)
}

/// The upstreams that email domains are routed to (the login page may send the browser to
/// their sign-in endpoints).
pub(crate) fn routed_upstreams(upstreams: &[crate::config::UpstreamConfig]) -> Vec<String> {
    upstreams
        .iter()
        .filter(|u| !u.domains.is_empty())
        .map(|u| u.id.clone())
        .collect()
}

/// The single logout services of the SAML SPs that took part in the session `sid`.
async fn session_slo_urls(state: &web::Data<AppState>, sid: &str) -> Result<Vec<Url>, WebError> {
    let (store, sid) = (Arc::clone(&state.store), sid.to_owned());
    let idp = Arc::clone(&state.signin.saml);
    let urls = web::block(move || {
        let parties = store.session_clients(&sid)?;
        // An SP the registry cannot read now adds no target (the CSP is only stricter).
        Ok::<_, crate::storage::StorageError>(
            parties
                .iter()
                .filter_map(|p| p.strip_prefix("saml:"))
                .filter_map(|sp| idp.app(sp).ok().flatten()?.slo_url.clone())
                .collect(),
        )
    })
    .await??;
    Ok(urls)
}

/// The logout endpoint of the upstream the session `sid` came from, if it has one.
async fn logout_endpoint(state: &web::Data<AppState>, sid: &str) -> Result<Option<Url>, WebError> {
    let (store, sid) = (Arc::clone(&state.store), sid.to_owned());
    let Some(rec) = web::block(move || store.upstream_session(&sid)).await?? else {
        return Ok(None);
    };
    let endpoint = match state.upstreams.get(&rec.upstream).map(|u| &u.connector) {
        Some(Connector::Redirect(c)) => c.logout_endpoint().await,
        Some(Connector::Post(c)) => c.logout_endpoint().await,
        _ => Ok(None),
    };
    Ok(endpoint.ok().flatten())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn exact_origins_and_private_schemes_never_wildcards() {
        let mut t = FormTargets::same_site();
        assert_eq!(t.sources(), ["'self'"]);
        t.allow(&url("https://app.example.com:8443/cb?x=1#f"));
        t.allow(&url("https://app.example.com:8443/other"));
        t.allow(&url("http://127.0.0.1:40111/callback"));
        t.allow(&url("com.example.app:/oauth2redirect"));
        t.allow(&url("javascript:alert(1)"));
        t.allow(&url("data:text/html,x"));
        assert_eq!(
            t.sources(),
            [
                "'self'",
                "com.example.app:",
                "http://127.0.0.1:40111",
                "https://app.example.com:8443",
            ]
        );
        assert!(!t.policy(false).contains('*'));
        assert!(
            t.policy(false)
                .contains("form-action 'self' com.example.app: http://127.0.0.1:40111 ")
        );
    }

    #[test]
    fn default_ports_are_left_out_like_browsers_do() {
        let mut t = FormTargets::same_site();
        t.allow(&url("https://idp.example.com:443/authorize"));
        assert_eq!(t.sources(), ["'self'", "https://idp.example.com"]);
    }
}
