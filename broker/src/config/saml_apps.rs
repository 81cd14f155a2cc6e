//! Owns `[[saml_apps]]`: the service providers the broker answers as a SAML 2.0 IdP (entity ID,
//! the ACS URLs it may post to, its SingleLogoutService, the NameID it gets, what is signed, the certificates its
//! requests are signed with, its sign-in policy like a client's, the attributes it is released
//! (`attributes.rs`), and whether it accepts IdP-initiated sign-ins), parsed and checked at boot.
//! The endpoints and keys are listed (`acs_urls`, `slo_url`, `*_cert_file`) or come from the SP's
//! metadata (`metadata_file`; an SP registered at run time, `saml_idp::registry`, is built the
//! same way from its stored metadata: [`SamlApp::from_metadata`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::domain::Channel;
use crate::domain::policy::{MfaRequirement, OnLimit};
use crate::domain::sp_metadata::{MAX_SP_METADATA, SpMetadata, sp_endpoint};

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
    /// Optional with `metadata_file` (then it must be the metadata's).
    #[serde(default)]
    pub entity_id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Where Responses may be posted: an AuthnRequest naming another URL is refused. Not with
    /// `metadata_file` (the metadata's HTTP-POST AssertionConsumerServices are then the list).
    #[serde(default)]
    pub acs_urls: Vec<String>,
    /// The SP's metadata (an `EntityDescriptor` with an `SPSSODescriptor`), read at start: its
    /// ACS URLs, SingleLogoutService, signing certificates and encryption certificate, instead
    /// of `acs_urls`, `slo_url`, `signing_cert_file` (and `encryption_cert_file` when it has
    /// an encryption key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_file: Option<PathBuf>,
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
    /// The SP's SingleLogoutService of the SOAP binding: a session that ends with no browser
    /// to carry a LogoutRequest (a revocation, a session limit, another session's logout), or
    /// any session when the SP has no `slo_url`, is ended there by back channel.
    #[serde(default)]
    pub slo_soap_url: Option<String>,
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
    /// Its SingleLogoutService of the SOAP binding (back-channel logout).
    pub slo_soap_url: Option<Url>,
    /// What its assertions are encrypted to (`None`: sent in the clear).
    pub encryption: Option<SpEncryption>,
    /// What its assertions carry, in this order.
    pub attributes: Vec<ReleasedAttribute>,
    /// It may be sent an unsolicited Response (IdP-initiated sign-in).
    pub idp_initiated: bool,
    /// The `validUntil` of the metadata it was read from: not used after (`SamlIdp::app`).
    pub metadata_valid_until: Option<crate::clock::UnixTime>,
}

/// An endpoint of an SP: https (http only on localhost), no fragment, no user info.
fn endpoint(key: &'static str, u: &str) -> Result<Url, (&'static str, String)> {
    sp_endpoint(u).map_err(|m| (key, m))
}

/// Reads an SP's metadata file (at most 1 MiB), as text.
pub fn read_metadata_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SP_METADATA as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() > MAX_SP_METADATA {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    Ok(text)
}

/// What `raw` releases: its `attributes`, checked, or the default release without a list.
fn released(raw: &RawSamlApp) -> Result<Vec<ReleasedAttribute>, (&'static str, String)> {
    match &raw.attributes {
        None => Ok(attributes::default_release()),
        Some(list) => {
            attributes::check_list(list).map_err(|m| ("attributes", m))?;
            Ok(list.clone())
        }
    }
}

impl SamlApp {
    /// Checks one table; the error names the key inside it.
    pub fn parse(raw: &RawSamlApp) -> Result<Self, (&'static str, String)> {
        if let Some(path) = &raw.metadata_file {
            let xml = read_metadata_file(path).map_err(|m| ("metadata_file", m))?;
            let md = SpMetadata::parse(&xml)
                .map_err(|e| ("metadata_file", format!("{}: {e}", path.display())))?;
            return Self::from_metadata(raw, &md);
        }
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
        let slo_soap_url = raw
            .slo_soap_url
            .as_deref()
            .map(|u| endpoint("slo_soap_url", u))
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
        let attributes = released(raw)?;
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
            slo_soap_url,
            encryption: encryption::parse(raw.encryption_cert_file.as_deref(), raw.encryption)?,
            attributes,
            idp_initiated: raw.idp_initiated,
            metadata_valid_until: None,
        })
    }

    /// The SP of `md` with the options of `raw`: the endpoints and keys are the metadata's
    /// only (a key that lists them too is an error naming it), its signing certificates become
    /// the ones its requests must be signed with, its encryption certificate (if any) the one
    /// assertions are encrypted to.
    pub fn from_metadata(
        raw: &RawSamlApp,
        md: &SpMetadata,
    ) -> Result<Self, (&'static str, String)> {
        let from_md = "is taken from the SP's metadata; remove it";
        if !raw.acs_urls.is_empty() {
            return Err(("acs_urls", from_md.into()));
        }
        if raw.slo_url.is_some() {
            return Err(("slo_url", from_md.into()));
        }
        if raw.slo_soap_url.is_some() {
            return Err(("slo_soap_url", from_md.into()));
        }
        if raw.signing_cert_file.is_some() {
            return Err(("signing_cert_file", from_md.into()));
        }
        if !raw.entity_id.is_empty() && raw.entity_id != md.entity_id {
            return Err((
                "entity_id",
                format!(
                    "`{}` is not the metadata's entityID `{}`",
                    raw.entity_id, md.entity_id
                ),
            ));
        }
        let encryption = match (&md.encryption_cert, &raw.encryption_cert_file) {
            (Some(_), Some(_)) => {
                return Err((
                    "encryption_cert_file",
                    "the SP's metadata has an encryption key; remove it".into(),
                ));
            }
            (Some(der), None) => Some(
                encryption::from_der(der, raw.encryption)
                    .map_err(|m| ("metadata_file", format!("the encryption key: {m}")))?,
            ),
            (None, file) => encryption::parse(file.as_deref(), raw.encryption)?,
        };
        let attributes = released(raw)?;
        Ok(Self {
            entity_id: md.entity_id.clone(),
            name: raw.name.clone().unwrap_or_else(|| md.entity_id.clone()),
            acs_urls: md.acs_urls.clone(),
            name_id_format: raw.name_id_format,
            sign: raw.sign,
            channel: raw.channel,
            mfa: raw.mfa,
            max_sessions_per_user: raw.max_sessions_per_user,
            on_session_limit: raw.on_session_limit,
            signing_certs: md.signing_certs.clone(),
            slo_url: md.slo_url.clone(),
            slo_soap_url: md.slo_soap_url.clone(),
            encryption,
            attributes,
            idp_initiated: raw.idp_initiated,
            metadata_valid_until: md.valid_until,
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
            metadata_file: None,
            name_id_format: SamlAppNameId::default(),
            sign: SamlSign::default(),
            channel: Channel::Web,
            mfa: None,
            max_sessions_per_user: None,
            on_session_limit: None,
            signing_cert_file: None,
            slo_url: None,
            slo_soap_url: None,
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

    fn cert_b64(bits: u32) -> String {
        use crate::domain::test_certs::{rsa, self_signed};
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self_signed(&rsa(bits)).to_der().unwrap())
    }

    #[test]
    fn metadata_file_gives_the_endpoints_and_keys_and_nothing_else_may() {
        let dir = tempfile::tempdir().unwrap();
        let (sign, enc) = (cert_b64(2048), cert_b64(2048));
        let xml = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://sp.example/meta"><md:SPSSODescriptor AuthnRequestsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{sign}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{enc}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://sp.example/slo"/><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs" index="0"/></md:SPSSODescriptor></md:EntityDescriptor>"#
        );
        let path = dir.path().join("sp.xml");
        std::fs::write(&path, &xml).unwrap();
        let mut r = raw(&[]);
        r.entity_id = String::new();
        r.metadata_file = Some(path.clone());
        let app = SamlApp::parse(&r).unwrap();
        assert_eq!(app.entity_id, "https://sp.example/meta");
        assert_eq!(app.acs_urls[0].as_str(), "https://sp.example/acs");
        assert_eq!(
            app.slo_url.as_ref().unwrap().as_str(),
            "https://sp.example/slo"
        );
        assert_eq!(app.signing_certs.len(), 1, "its requests must be signed");
        assert!(app.encryption.is_some());
        r.entity_id = "https://sp.example/meta".into();
        assert!(SamlApp::parse(&r).is_ok(), "the metadata's own entityID");
        let refused = |edit: &dyn Fn(&mut RawSamlApp)| {
            let mut bad = r.clone();
            edit(&mut bad);
            SamlApp::parse(&bad).unwrap_err().0
        };
        assert_eq!(
            refused(&|b| b.acs_urls = vec!["https://sp.example/acs".into()]),
            "acs_urls"
        );
        assert_eq!(
            refused(&|b| b.slo_url = Some("https://sp.example/slo".into())),
            "slo_url"
        );
        assert_eq!(
            refused(&|b| b.signing_cert_file = Some(path.clone())),
            "signing_cert_file"
        );
        assert_eq!(
            refused(&|b| b.encryption_cert_file = Some(path.clone())),
            "encryption_cert_file"
        );
        assert_eq!(
            refused(&|b| b.entity_id = "https://other.example".into()),
            "entity_id"
        );
        assert_eq!(
            refused(&|b| b.metadata_file = Some(dir.path().join("none.xml"))),
            "metadata_file"
        );
        std::fs::write(dir.path().join("dtd.xml"), format!("<!DOCTYPE x>{xml}")).unwrap();
        assert_eq!(
            refused(&|b| b.metadata_file = Some(dir.path().join("dtd.xml"))),
            "metadata_file"
        );
        // AuthnRequestsSigned without a signing key.
        let unsigned = xml.replace("use=\"signing\"", "use=\"encryption\"");
        std::fs::write(dir.path().join("nosign.xml"), unsigned).unwrap();
        let m = {
            let mut b = r.clone();
            b.metadata_file = Some(dir.path().join("nosign.xml"));
            SamlApp::parse(&b).unwrap_err()
        };
        assert_eq!(m.0, "metadata_file");
        assert!(m.1.contains("AuthnRequestsSigned"), "{}", m.1);
    }
}
