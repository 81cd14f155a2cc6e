//! Owns the upstream SAML 2.0 connector: IdP metadata (from a file, or a URL refreshed with the
//! last good copy kept), AuthnRequests over HTTP-Redirect (optionally signed), validating the
//! Response posted to the ACS (see `response`), the replay cache, the attribute mapping into an
//! [`Identity`], and the SP metadata document.

pub mod crypto;
pub mod dsig;
pub mod metadata;
pub mod response;
pub mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::pkey::{PKey, Private};

use self::metadata::{IdpMetadata, SpMetadata};
use self::xml::escape;
use super::{
    Federated, Identity, IdpLogout, PendingUpstream, PostConnector, UpstreamError, UpstreamSession,
    UpstreamStart,
};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::{NameIdFormat, SamlAttributeMapping, SamlMetadataSource, SamlUpstreamConfig};
use crate::domain::Email;
use crate::storage::{StorageError, Store};

/// Why a SAML exchange failed. Messages are safe to log: they never quote the document.
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    #[error("the document is too large")]
    TooLarge,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("a DTD, entity declaration or entity reference is refused")]
    Dtd,
    #[error("XML comments are refused (no signature covers them)")]
    Comment,
    #[error("not a SAML Response")]
    NotAResponse,
    #[error("signature wrapping: {0}")]
    Wrapping(String),
    #[error("neither the Response nor the Assertion is signed")]
    Unsigned,
    #[error("signature: {0}")]
    Signature(String),
    #[error("signature reference: {0}")]
    Reference(String),
    #[error("signature algorithm: {0}")]
    Algorithm(String),
    #[error("Destination is not this ACS")]
    Destination,
    #[error("InResponseTo is not this browser's request")]
    InResponseTo,
    #[error("SubjectConfirmationData Recipient is not this ACS")]
    Recipient,
    #[error("no bearer SubjectConfirmation (only the bearer method is accepted)")]
    ConfirmationMethod,
    #[error("the Audience is not this SP")]
    Audience,
    #[error("the Issuer is not the IdP")]
    Issuer,
    #[error("expired: {0}")]
    Expired(String),
    #[error("not yet valid: {0}")]
    NotYetValid(String),
    #[error("this assertion was used before")]
    Replayed,
    #[error("no subject")]
    NoSubject,
    #[error("NameID format {0} was not asked for")]
    NameIdFormat(String),
    #[error("decryption: {0}")]
    Decryption(String),
    #[error("encryption: {0}")]
    Encryption(String),
    #[error("AES-CBC content in an unsigned Response (only AES-GCM is accepted there)")]
    CbcUnsigned,
    #[error("an unsolicited response (IdP-initiated login is off)")]
    Unsolicited,
    #[error("the IdP answered with status {code} ({sub:?})")]
    Status { code: String, sub: Option<String> },
    #[error("IdP metadata: {0}")]
    Metadata(String),
    #[error("IdP metadata unavailable: {0}")]
    Unavailable(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<SamlError> for UpstreamError {
    fn from(e: SamlError) -> Self {
        match e {
            SamlError::Status { code, sub } => {
                let second = sub.as_deref().unwrap_or("");
                let oauth =
                    if second.ends_with(":AuthnFailed") || second.ends_with(":RequestDenied") {
                        "access_denied"
                    } else if second.ends_with(":NoPassive") {
                        "login_required"
                    } else if code.ends_with(":Requester") || code.ends_with(":VersionMismatch") {
                        "server_error"
                    } else {
                        "temporarily_unavailable"
                    };
                UpstreamError::Refused {
                    code: oauth.into(),
                    description: None,
                }
            }
            SamlError::Unavailable(m) => UpstreamError::Unavailable(m),
            SamlError::Storage(s) => UpstreamError::Storage(s),
            other => UpstreamError::Invalid {
                check: other.check(),
                detail: other.to_string(),
            },
        }
    }
}

impl SamlError {
    /// A stable code for the check that failed (audit reason `rejected:<check>`).
    pub fn check(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed(_) | Self::NotAResponse => "malformed",
            Self::Dtd => "dtd",
            Self::Comment => "comment",
            Self::Wrapping(_) => "wrapping",
            Self::Unsigned => "unsigned",
            Self::Signature(_) => "signature",
            Self::Reference(_) => "reference",
            Self::Algorithm(_) => "algorithm",
            Self::Destination => "destination",
            Self::InResponseTo => "in_response_to",
            Self::Recipient => "recipient",
            Self::ConfirmationMethod => "confirmation_method",
            Self::Audience => "audience",
            Self::Issuer => "issuer",
            Self::Expired(_) => "expired",
            Self::NotYetValid(_) => "not_yet_valid",
            Self::Replayed => "replayed",
            Self::NoSubject => "subject",
            Self::NameIdFormat(_) => "name_id_format",
            Self::Decryption(_) => "decryption",
            Self::Encryption(_) => "encryption",
            Self::CbcUnsigned => "cbc_unsigned",
            Self::Unsolicited => "unsolicited",
            Self::Status { .. } => "status",
            Self::Metadata(_) | Self::Unavailable(_) => "metadata",
            Self::Config(_) => "config",
            Self::Storage(_) => "storage",
        }
    }
}

/// How long a failed metadata fetch waits before the next try (the last good copy serves).
const METADATA_RETRY: i64 = 300;
/// The largest metadata document fetched.
const MAX_METADATA: usize = 1024 * 1024;

pub struct SamlConnector {
    id: String,
    sp_entity_id: String,
    acs_url: String,
    slo_url: String,
    source: SamlMetadataSource,
    refresh: i64,
    signing: Option<(PKey<Private>, String)>,
    decryption: Option<(PKey<Private>, String)>,
    name_id_format: NameIdFormat,
    allow_idp_initiated: bool,
    mapping: SamlAttributeMapping,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    metadata: tokio::sync::RwLock<Option<(Arc<IdpMetadata>, UnixTime)>>,
}

fn key(
    pair: &Option<crate::config::SpKeyPair>,
) -> Result<Option<(PKey<Private>, String)>, UpstreamError> {
    pair.as_ref()
        .map(|p| {
            PKey::private_key_from_pem(p.key_pem.expose().as_bytes())
                .map(|k| (k, p.cert_pem.clone()))
                .map_err(|_| UpstreamError::Rejected("SP key is not a PEM private key".into()))
        })
        .transpose()
}

impl SamlConnector {
    pub fn new(
        id: &str,
        cfg: &SamlUpstreamConfig,
        public_url: &url::Url,
        trust: &crate::config::http::TrustAnchors,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, UpstreamError> {
        // A second guard (main() locks xmlsec down before any thread starts): xmlsec opens no
        // URI and runs no transform off the allow-list before this connector verifies (ADR 7).
        xmlsec_lockdown::lock_down()
            .map_err(|e| UpstreamError::Unavailable(format!("xmlsec lockdown: {e}")))?;
        let url = |path: &str| {
            public_url
                .join(&format!("/upstream/{id}/saml/{path}"))
                .map(|u| u.to_string())
                .map_err(|e| UpstreamError::Rejected(e.to_string()))
        };
        let http = crate::http::client(Duration::from_secs(10), trust)
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        let metadata = match &cfg.metadata {
            SamlMetadataSource::File { xml, .. } => Some((Arc::new(IdpMetadata::parse(xml)?), 0)),
            SamlMetadataSource::Url(_) => None,
        };
        Ok(Self {
            id: id.to_owned(),
            sp_entity_id: cfg.sp_entity_id.clone(),
            acs_url: url("acs")?,
            slo_url: url("slo")?,
            source: cfg.metadata.clone(),
            refresh: i64::try_from(cfg.metadata_refresh.as_secs()).unwrap_or(3600),
            signing: key(&cfg.signing)?,
            decryption: key(&cfg.decryption)?,
            name_id_format: cfg.name_id_format,
            allow_idp_initiated: cfg.allow_idp_initiated,
            mapping: cfg.attributes.clone(),
            store,
            http,
            clock,
            entropy,
            metadata: tokio::sync::RwLock::new(metadata),
        })
    }

    /// The IdP's metadata: the file's, or the URL's (fetched again once stale; when a fetch
    /// fails the last good copy keeps serving and the fetch is retried a few minutes later).
    async fn idp(&self) -> Result<Arc<IdpMetadata>, SamlError> {
        let SamlMetadataSource::Url(url) = &self.source else {
            return self
                .metadata
                .read()
                .await
                .as_ref()
                .map(|(m, _)| Arc::clone(m))
                .ok_or(SamlError::Unavailable("no metadata".into()));
        };
        let now = self.clock.now();
        if let Some((m, at)) = self.metadata.read().await.as_ref()
            && now - at < self.refresh
        {
            return Ok(Arc::clone(m));
        }
        let mut slot = self.metadata.write().await;
        if let Some((m, at)) = slot.as_ref()
            && now - at < self.refresh
        {
            return Ok(Arc::clone(m));
        }
        match self.fetch(url).await {
            Ok(m) => {
                let m = Arc::new(m);
                *slot = Some((Arc::clone(&m), now));
                Ok(m)
            }
            Err(e) => match slot.as_mut() {
                Some((m, at)) => {
                    tracing::warn!(upstream = %self.id, error = %e, "IdP metadata refresh failed; the last good copy serves");
                    *at = now - self.refresh + METADATA_RETRY;
                    Ok(Arc::clone(m))
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self, url: &url::Url) -> Result<IdpMetadata, SamlError> {
        let unavailable = |e: &dyn std::fmt::Display| SamlError::Unavailable(format!("{url}: {e}"));
        let res = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| unavailable(&crate::http::describe(&e)))?;
        if !res.status().is_success() {
            return Err(unavailable(&res.status()));
        }
        let body = match crate::http::read_capped(res, MAX_METADATA).await {
            Ok(b) => b,
            Err(crate::http::ReadError::TooLarge(_)) => {
                return Err(SamlError::Metadata("larger than 1 MiB".into()));
            }
            Err(e) => return Err(unavailable(&e)),
        };
        let text =
            std::str::from_utf8(&body).map_err(|_| SamlError::Metadata("not UTF-8".into()))?;
        IdpMetadata::parse(text)
    }

    fn random(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.entropy.bytes32())
    }

    fn instant(t: UnixTime) -> String {
        chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn authn_request(&self, id: &str, destination: &str) -> String {
        format!(
            concat!(
                "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ",
                "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" ",
                "IssueInstant=\"{instant}\" Destination=\"{dest}\" AssertionConsumerServiceURL=\"{acs}\" ",
                "ProtocolBinding=\"{binding}\"><saml:Issuer>{issuer}</saml:Issuer>",
                "<samlp:NameIDPolicy Format=\"{format}\" AllowCreate=\"true\"/></samlp:AuthnRequest>"
            ),
            id = id,
            instant = Self::instant(self.clock.now()),
            dest = escape(destination),
            acs = escape(&self.acs_url),
            binding = metadata::POST_BINDING,
            issuer = escape(&self.sp_entity_id),
            format = self.name_id_format.urn(),
        )
    }

    /// The identity the verified assertion describes, through the attribute mapping.
    fn identity(&self, v: &response::Verified) -> Result<Identity, SamlError> {
        let first = |name: &str| {
            v.attributes
                .get(name)
                .and_then(|vs| vs.iter().find(|s| !s.trim().is_empty()))
                .cloned()
        };
        let subject = match &self.mapping.subject {
            Some(a) => first(a).ok_or(SamlError::NoSubject)?,
            None => v.name_id.clone(),
        };
        let email = first(&self.mapping.email)
            .or_else(|| {
                (self.name_id_format == NameIdFormat::EmailAddress).then(|| v.name_id.clone())
            })
            .and_then(|e| Email::parse(&e).ok());
        Ok(Identity {
            upstream: self.id.clone(),
            subject,
            // SAML has no `email_verified`: the email is what the IdP asserts. Linking to an
            // existing account by it still needs `link_by_verified_email` on this upstream.
            email_verified: email.is_some(),
            email,
            name: first(&self.mapping.name),
            groups: v
                .attributes
                .get(&self.mapping.groups)
                .cloned()
                .unwrap_or_default(),
            kept: self
                .mapping
                .keep
                .iter()
                .filter_map(|name| {
                    let value = first(name)?;
                    (value.len() <= crate::config::MAX_KEPT_VALUE).then(|| (name.clone(), value))
                })
                .collect(),
            amr: amr_of(v.authn_context.as_deref()),
            acr: v.authn_context.clone(),
        })
    }

    /// The checks every logout message from the IdP passes: its Issuer, our SLO URL as its
    /// Destination (when it names one), an IssueInstant within the skew and the maximum age.
    fn check_message(
        &self,
        idp_entity: &str,
        issuer: Option<&samael::schema::Issuer>,
        destination: Option<&str>,
        issued: Option<&chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), SamlError> {
        if issuer.and_then(|i| i.value.as_deref()) != Some(idp_entity) {
            return Err(SamlError::Issuer);
        }
        if let Some(d) = destination
            && d != self.slo_url
        {
            return Err(SamlError::Destination);
        }
        check_issued(issued.map(|t| t.timestamp()), self.clock.now())
    }

    /// The SP metadata document for this upstream.
    pub fn sp_metadata(&self) -> String {
        SpMetadata {
            entity_id: &self.sp_entity_id,
            acs_url: &self.acs_url,
            slo_url: self.signing.as_ref().map(|_| self.slo_url.as_str()),
            signing_cert_pem: self.signing.as_ref().map(|(_, c)| c.as_str()),
            encryption_cert_pem: self.decryption.as_ref().map(|(_, c)| c.as_str()),
            name_id_format: self.name_id_format.urn(),
        }
        .to_xml()
    }
}

/// `url` with `query` appended to any query it already has.
fn with_query(mut url: url::Url, query: &str) -> url::Url {
    let q = match url.query() {
        Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
        _ => query.to_owned(),
    };
    url.set_query(Some(&q));
    url
}

/// RFC 8176 methods for the common SAML authentication context classes.
pub fn amr_of(class: Option<&str>) -> Vec<String> {
    let Some(class) = class else {
        return Vec::new();
    };
    let tail = class.rsplit([':', '/']).next().unwrap_or("");
    let m: &[&str] = match tail {
        "Password" | "PasswordProtectedTransport" => &["pwd"],
        "X509" | "TLSClient" => &["hwk"],
        "Smartcard" | "SmartcardPKI" => &["sc"],
        "TimeSyncToken" | "MobileTwoFactorContract" => &["otp", "mfa"],
        "mfa" | "multipleauthn" => &["mfa"],
        _ => &[],
    };
    m.iter().map(|s| (*s).to_owned()).collect()
}

#[async_trait]
impl PostConnector for SamlConnector {
    async fn start(&self, _login_hint: Option<&str>) -> Result<UpstreamStart, UpstreamError> {
        let idp = self.idp().await?;
        let relay_state = self.random();
        // An XML ID: an NCName, so it starts with a letter or underscore.
        let request_id = format!("_{}", hex::encode(&self.entropy.bytes32()[..20]));
        let xml = self.authn_request(&request_id, idp.sso_url.as_str());
        let query = crypto::redirect_query(
            "SAMLRequest",
            &xml,
            Some(&relay_state),
            self.signing.as_ref().map(|(k, _)| k),
        )?;
        Ok(UpstreamStart {
            redirect_to: with_query(idp.sso_url.clone(), &query),
            pending: PendingUpstream {
                values: BTreeMap::from([
                    ("state".to_owned(), relay_state),
                    ("request_id".to_owned(), request_id),
                ]),
            },
        })
    }

    async fn handle_post(
        &self,
        pending: Option<&PendingUpstream>,
        form: &BTreeMap<String, String>,
    ) -> Result<Federated, UpstreamError> {
        let encoded = form
            .get("SAMLResponse")
            .filter(|v| !v.trim().is_empty())
            .cloned()
            .ok_or(SamlError::Malformed("no SAMLResponse".into()))?;
        let request_id =
            match pending {
                Some(p) => Some(p.values.get("request_id").cloned().ok_or(
                    SamlError::Malformed("pending login without request id".into()),
                )?),
                None if self.allow_idp_initiated => None,
                None => return Err(SamlError::Unsolicited.into()),
            };
        let idp = self.idp().await?;
        let now = self.clock.now();
        let (sp, acs, format) = (
            self.sp_entity_id.clone(),
            self.acs_url.clone(),
            self.name_id_format.urn(),
        );
        let decryption = self.decryption.as_ref().map(|(k, _)| k.clone());
        // XML-DSig and decryption are CPU work: off the async workers.
        let verified = tokio::task::spawn_blocking(move || {
            let doc = response::decode(&encoded)?;
            response::validate(
                &doc,
                &response::Expected {
                    idp_entity_id: &idp.entity_id,
                    sp_entity_id: &sp,
                    acs_url: &acs,
                    certs: &idp.certs,
                    request_id: request_id.as_deref(),
                    decryption_key: decryption.as_ref(),
                    name_id_format: format,
                    now,
                },
            )
        })
        .await
        .map_err(|e| UpstreamError::Unavailable(e.to_string()))??;
        // Each assertion once, across instances (only after everything else passed, so no one
        // can fill the cache with IDs the IdP never signed).
        let (store, id, aid, until) = (
            Arc::clone(&self.store),
            self.id.clone(),
            verified.assertion_id.clone(),
            verified.replay_until,
        );
        let fresh =
            tokio::task::spawn_blocking(move || store.use_saml_assertion(&id, &aid, until, now))
                .await
                .map_err(|e| UpstreamError::Unavailable(e.to_string()))?
                .map_err(SamlError::from)?;
        if !fresh {
            return Err(SamlError::Replayed.into());
        }
        Ok(Federated {
            identity: self.identity(&verified)?,
            session: Some(UpstreamSession::Saml {
                name_id: verified.name_id,
                name_id_format: verified.name_id_format,
                session_index: verified.session_index,
            }),
        })
    }

    fn metadata(&self) -> Result<String, UpstreamError> {
        Ok(self.sp_metadata())
    }

    async fn logout_request(
        &self,
        session: &UpstreamSession,
        relay_state: &str,
    ) -> Result<Option<(url::Url, String)>, UpstreamError> {
        let UpstreamSession::Saml {
            name_id,
            name_id_format,
            session_index,
        } = session
        else {
            return Ok(None);
        };
        let Some((key, _)) = &self.signing else {
            return Ok(None);
        };
        let idp = self.idp().await?;
        let Some(slo) = idp.slo_url.clone() else {
            return Ok(None);
        };
        let id = format!("_{}", hex::encode(&self.entropy.bytes32()[..20]));
        let format = name_id_format
            .as_deref()
            .map(|f| format!(" Format=\"{}\"", escape(f)))
            .unwrap_or_default();
        let index = session_index
            .as_deref()
            .map(|i| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(i)))
            .unwrap_or_default();
        let xml = format!(
            concat!(
                "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ",
                "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" ",
                "IssueInstant=\"{instant}\" Destination=\"{dest}\"><saml:Issuer>{issuer}</saml:Issuer>",
                "<saml:NameID{format}>{name_id}</saml:NameID>{index}</samlp:LogoutRequest>"
            ),
            id = id,
            instant = Self::instant(self.clock.now()),
            dest = escape(slo.as_str()),
            issuer = escape(&self.sp_entity_id),
            format = format,
            name_id = escape(name_id),
            index = index,
        );
        let query = crypto::redirect_query("SAMLRequest", &xml, Some(relay_state), Some(key))?;
        Ok(Some((with_query(slo, &query), id)))
    }

    async fn logout_response(
        &self,
        raw_query: &str,
        request_id: &str,
    ) -> Result<(), UpstreamError> {
        let idp = self.idp().await?;
        let (r, _): (samael::schema::LogoutResponse, _) =
            signed_redirect(raw_query, &idp, "SAMLResponse", "LogoutResponse")?;
        self.check_message(
            &idp.entity_id,
            r.issuer.as_ref(),
            r.destination.as_deref(),
            r.issue_instant.as_ref(),
        )?;
        if r.in_response_to.as_deref() != Some(request_id) {
            return Err(SamlError::InResponseTo.into());
        }
        let status = r
            .status
            .as_ref()
            .and_then(|s| s.status_code.value.clone())
            .unwrap_or_default();
        if status != xml::STATUS_SUCCESS {
            return Err(SamlError::Status {
                code: status,
                sub: None,
            }
            .into());
        }
        Ok(())
    }

    async fn logout_endpoint(&self) -> Result<Option<url::Url>, UpstreamError> {
        if self.signing.is_none() {
            return Ok(None);
        }
        Ok(self.idp().await?.slo_url.clone())
    }

    async fn login_endpoint(&self) -> Result<Option<url::Url>, UpstreamError> {
        Ok(Some(self.idp().await?.sso_url.clone()))
    }

    async fn idp_logout(&self, raw_query: &str) -> Result<IdpLogout, UpstreamError> {
        let idp = self.idp().await?;
        // A LogoutRequest ends sessions: only a signed one is believed.
        let (r, msg): (samael::schema::LogoutRequest, _) =
            signed_redirect(raw_query, &idp, "SAMLRequest", "LogoutRequest")?;
        let relay_state = msg.relay_state;
        // SessionIndex is a child element (SAML Core 3.7.1): read out of the signed bytes. None
        // named means every session of the NameID at this IdP.
        let session_indexes = xml::session_indexes(&msg.xml)?;
        self.check_message(
            &idp.entity_id,
            r.issuer.as_ref(),
            r.destination.as_deref(),
            r.issue_instant.as_ref(),
        )?;
        let name_id = r
            .name_id
            .as_ref()
            .map(|n| n.value.clone())
            .filter(|v| !v.trim().is_empty())
            .ok_or(SamlError::NoSubject)?;
        let request_id = r.id.clone().ok_or(SamlError::Malformed("no ID".into()))?;
        let slo = idp.slo_url.clone().ok_or(SamlError::Metadata(
            "the IdP has no SingleLogoutService".into(),
        ))?;
        let Some((key, _)) = &self.signing else {
            return Err(SamlError::Config("Single Logout needs signing_key_file".into()).into());
        };
        let xml = format!(
            concat!(
                "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ",
                "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_{id}\" Version=\"2.0\" ",
                "IssueInstant=\"{instant}\" Destination=\"{dest}\" InResponseTo=\"{irt}\">",
                "<saml:Issuer>{issuer}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{ok}\"/>",
                "</samlp:Status></samlp:LogoutResponse>"
            ),
            id = hex::encode(&self.entropy.bytes32()[..20]),
            instant = Self::instant(self.clock.now()),
            dest = escape(slo.as_str()),
            irt = escape(&request_id),
            issuer = escape(&self.sp_entity_id),
            ok = xml::STATUS_SUCCESS,
        );
        let query =
            crypto::redirect_query("SAMLResponse", &xml, relay_state.as_deref(), Some(key))?;
        Ok(IdpLogout {
            name_id,
            session_indexes,
            respond_to: with_query(slo, &query),
        })
    }
}

/// The clock-skew bound of every request or logout message: its IssueInstant no more than the
/// skew ahead of `now` and no older than the maximum age (so a replay cache keyed by its ID need
/// only remember it until `issued + MAX_AGE + SKEW`, [`replay_until`]).
pub fn check_issued(issued: Option<UnixTime>, now: UnixTime) -> Result<(), SamlError> {
    let issued = issued.ok_or(SamlError::Malformed("no IssueInstant".into()))?;
    if issued > now + response::SKEW {
        return Err(SamlError::NotYetValid(
            "IssueInstant is in the future".into(),
        ));
    }
    if issued < now - response::MAX_AGE {
        return Err(SamlError::Expired("IssueInstant is too old".into()));
    }
    Ok(())
}

/// Until when the ID of a message issued at `issued` (past [`check_issued`]) is remembered.
pub fn replay_until(issued: UnixTime) -> UnixTime {
    issued
        .saturating_add(response::MAX_AGE)
        .saturating_add(response::SKEW)
}

/// A protocol message (a LogoutRequest or LogoutResponse) read from `doc`: no DTD, its root the
/// protocol element `element` (namespaces checked as libxml2 reads them, no comments), then
/// parsed by samael.
pub fn protocol_message<T>(doc: &str, element: &str) -> Result<T, SamlError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    if doc.len() > xml::MAX_DOCUMENT {
        return Err(SamlError::TooLarge);
    }
    xml::refuse_dtd(doc)?;
    let (root, _) = xml::root_of(doc)?;
    if root.ns != xml::PROTOCOL_NS || root.name != element {
        return Err(SamlError::Malformed(format!("not a {element}")));
    }
    doc.parse()
        .map_err(|e| SamlError::Malformed(format!("{element}: {e}")))
}

/// A logout message over HTTP-Redirect: signed by the IdP's metadata keys (anything unsigned
/// is refused), carried in `param`, whose root is the protocol element `element`; with the
/// message itself (its signed XML and its RelayState).
fn signed_redirect<T>(
    raw_query: &str,
    idp: &IdpMetadata,
    param: &str,
    element: &str,
) -> Result<(T, crypto::RedirectMessage), UpstreamError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let msg = crypto::read_redirect(raw_query, &idp.certs)?;
    if !msg.signed || msg.param != param {
        return Err(SamlError::Unsigned.into());
    }
    let parsed = protocol_message(&msg.xml, element)?;
    Ok((parsed, msg))
}
