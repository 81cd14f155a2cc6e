//! Owns `[[saml_apps]]`: the service providers the broker answers as a SAML 2.0 IdP (entity ID,
//! the ACS URLs it may post to, its SingleLogoutService, the NameID it gets, what is signed, the certificates its
//! requests are signed with, its sign-in policy like a client's, the attributes it is released
//! (`attributes.rs`), and whether it accepts IdP-initiated sign-ins), parsed and checked at boot.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::Channel;
use crate::domain::policy::{MfaRequirement, OnLimit};

mod encryption;
pub use encryption::{SamlEncryption, SpEncryption};
pub mod attributes;

use attributes::ReleasedAttribute;

/// The NameID an SP gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamlAppNameId {
    /// The account's email (`urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress`).
    #[default]
    Email,
    /// A stable opaque id for this user at this SP only (pairwise).
    Persistent,
    /// An opaque id for this session at this SP only: another at the next sign-in.
    Transient,
}

/// What the broker signs in a Response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamlSign {
    Response,
    Assertion,
    /// The assertion, and the Response around it.
    #[default]
    Both,
}

fn web() -> Channel {
    Channel::Web
}

/// One `[[saml_apps]]` table as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSamlApp {
    pub entity_id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Where Responses may be posted: an AuthnRequest naming another URL is refused.
    pub acs_urls: Vec<String>,
    #[serde(default)]
    pub name_id_format: SamlAppNameId,
    #[serde(default)]
    pub sign: SamlSign,
    #[serde(default = "web")]
    pub channel: Channel,
    #[serde(default)]
    pub mfa: Option<MfaRequirement>,
    #[serde(default)]
    pub max_sessions_per_user: Option<u32>,
    #[serde(default)]
    pub on_session_limit: Option<OnLimit>,
    /// PEM file of the certificate(s) the SP signs its AuthnRequests with: when set, every
    /// AuthnRequest of this SP must be signed by one of them.
    #[serde(default)]
    pub signing_cert_file: Option<PathBuf>,
    /// The SP's SingleLogoutService (HTTP-Redirect): where its LogoutRequests are answered.
    /// Without it the SP cannot log out through the broker.
    #[serde(default)]
    pub slo_url: Option<String>,
    /// PEM file of the certificate (RSA, 2048 bits or more) the SP's assertions are encrypted
    /// to: when set, every assertion it gets is an EncryptedAssertion.
    #[serde(default)]
    pub encryption_cert_file: Option<PathBuf>,
    /// The content encryption (default `aes256-gcm`); only with `encryption_cert_file`.
    #[serde(default)]
    pub encryption: Option<SamlEncryption>,
    /// The attributes the SP is released (`[[saml_apps.attributes]]`); unset: `email` and
    /// `name`, NameFormat basic.
    #[serde(default)]
    pub attributes: Option<Vec<ReleasedAttribute>>,
    /// The SP accepts unsolicited Responses: a sign-in started at the broker
    /// (`/saml/idp/init`).
    #[serde(default)]
    pub idp_initiated: bool,
}

/// A service provider, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlApp {
    pub entity_id: String,
    pub name: String,
    /// The first is the default (an AuthnRequest without `AssertionConsumerServiceURL`).
    pub acs_urls: Vec<Url>,
    pub name_id_format: SamlAppNameId,
    pub sign: SamlSign,
    pub channel: Channel,
    pub mfa: Option<MfaRequirement>,
    pub max_sessions_per_user: Option<u32>,
    pub on_session_limit: Option<OnLimit>,
    /// DER certificates its AuthnRequests must be signed with (empty: unsigned requests
    /// accepted, a signature ignored).
    pub signing_certs: Vec<Vec<u8>>,
    /// Where its LogoutRequests are answered (a LogoutResponse, HTTP-Redirect binding).
    pub slo_url: Option<Url>,
    /// What its assertions are encrypted to (`None`: sent in the clear).
    pub encryption: Option<SpEncryption>,
    /// What its assertions carry, in this order.
    pub attributes: Vec<ReleasedAttribute>,
    /// It may be sent an unsolicited Response (IdP-initiated sign-in).
    pub idp_initiated: bool,
}

/// An endpoint of an SP: https (http only on localhost), no fragment, no user info.
fn endpoint(key: &'static str, u: &str) -> Result<Url, (&'static str, String)> {
    let url = Url::parse(u).map_err(|e| (key, format!("`{u}`: {e}")))?;
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if !(url.scheme() == "https" || url.scheme() == "http" && local)
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err((
            key,
            format!(
                "`{u}` must be https (http only on localhost), without a fragment or user info"
            ),
        ));
    }
    Ok(url)
}

impl SamlApp {
    /// Checks one table; the error names the key inside it.
    pub fn parse(raw: &RawSamlApp) -> Result<Self, (&'static str, String)> {
        if raw.entity_id.trim().is_empty() || raw.entity_id.len() > 1024 {
            return Err(("entity_id", "must be 1 to 1024 characters".into()));
        }
        if raw.acs_urls.is_empty() {
            return Err(("acs_urls", "needs at least one URL".into()));
        }
        let acs_urls = raw
            .acs_urls
            .iter()
            .map(|u| endpoint("acs_urls", u))
            .collect::<Result<Vec<_>, _>>()?;
        let slo_url = raw
            .slo_url
            .as_deref()
            .map(|u| endpoint("slo_url", u))
            .transpose()?;
        let signing_certs = match &raw.signing_cert_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    (
                        "signing_cert_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let certs = openssl::x509::X509::stack_from_pem(&pem)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .ok_or(("signing_cert_file", "holds no PEM certificate".to_owned()))?;
                certs
                    .iter()
                    .map(|c| c.to_der())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ("signing_cert_file", e.to_string()))?
            }
        };
        let attributes = match &raw.attributes {
            None => attributes::default_release(),
            Some(list) => {
                attributes::check_list(list).map_err(|m| ("attributes", m))?;
                list.clone()
            }
        };
        Ok(Self {
            entity_id: raw.entity_id.clone(),
            name: raw.name.clone().unwrap_or_else(|| raw.entity_id.clone()),
            acs_urls,
            name_id_format: raw.name_id_format,
            sign: raw.sign,
            channel: raw.channel,
            mfa: raw.mfa,
            max_sessions_per_user: raw.max_sessions_per_user,
            on_session_limit: raw.on_session_limit,
            signing_certs,
            slo_url,
            encryption: encryption::parse(raw.encryption_cert_file.as_deref(), raw.encryption)?,
            attributes,
            idp_initiated: raw.idp_initiated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(acs: &[&str]) -> RawSamlApp {
        RawSamlApp {
            entity_id: "https://sp.example/meta".into(),
            name: None,
            acs_urls: acs.iter().map(|s| (*s).to_owned()).collect(),
            name_id_format: SamlAppNameId::default(),
            sign: SamlSign::default(),
            channel: Channel::Web,
            mfa: None,
            max_sessions_per_user: None,
            on_session_limit: None,
            signing_cert_file: None,
            slo_url: None,
            encryption_cert_file: None,
            encryption: None,
            attributes: None,
            idp_initiated: false,
        }
    }

    #[test]
    fn acs_urls_are_https_or_local_http() {
        let app = SamlApp::parse(&raw(&[
            "https://sp.example/acs",
            "http://127.0.0.1:8000/acs",
        ]))
        .unwrap();
        assert_eq!(app.name, "https://sp.example/meta");
        assert_eq!(app.sign, SamlSign::Both);
        assert_eq!(app.name_id_format, SamlAppNameId::Email);
        for bad in [
            "http://sp.example/acs",
            "https://sp.example/acs#x",
            "https://user@sp.example/acs",
            "/acs",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                SamlApp::parse(&raw(&[bad])).unwrap_err().0,
                "acs_urls",
                "{bad}"
            );
        }
        assert_eq!(SamlApp::parse(&raw(&[])).unwrap_err().0, "acs_urls");
        let mut slo = raw(&["https://sp.example/acs"]);
        slo.slo_url = Some("http://sp.example/slo".into());
        assert_eq!(SamlApp::parse(&slo).unwrap_err().0, "slo_url");
        let mut no_id = raw(&["https://sp.example/acs"]);
        no_id.entity_id = " ".into();
        assert_eq!(SamlApp::parse(&no_id).unwrap_err().0, "entity_id");
    }
}
