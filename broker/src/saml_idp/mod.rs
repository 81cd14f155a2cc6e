//! Owns the broker as a SAML 2.0 identity provider to its own service providers: its entity ID
//! and endpoints, its signing key and self-signed certificate (made at the first start, kept
//! sealed in `secrets`, rotated as `keys.rs` says), the registry of SPs (`[[saml_apps]]`, then
//! those registered at run time: `registry.rs`), its metadata document, the
//! pairwise persistent NameIDs, and signing through the one XML-DSig door
//! (`upstream::saml::dsig`). Reading an AuthnRequest is `authn_request.rs`, a LogoutRequest
//! `logout_request.rs`; the IDs of both are used once (`use_request_id`). The IdP's own
//! LogoutRequests to its SPs, and their answers, are `logout_out.rs`; the attributes an SP is
//! released, `attributes.rs`; encrypting an SP's assertions to its certificate, `encrypt.rs`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use sha2::Sha256;
use url::Url;

use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::saml_apps::{SamlApp, SamlAppNameId};
use crate::domain::kek::KeyEncryptionKeys;
use crate::storage::{StorageError, Store};
use crate::upstream::saml::crypto::redirect_query;
use crate::upstream::saml::dsig;
use crate::upstream::saml::metadata::{POST_BINDING, REDIRECT_BINDING};
use crate::upstream::saml::xml::STATUS_SUCCESS;
use crate::upstream::saml::xml::escape;
use crate::upstream::saml::{SamlError, replay_until};

pub mod attributes;
pub mod authn_request;
pub mod backchannel;
pub mod decrypt;
pub mod encrypt;
pub mod keys;
pub mod logout_out;
pub mod logout_request;
pub mod registry;

/// The sealed row in `secrets` holding the IdP's first certificate and private key (PEM), also
/// the AAD it is sealed under. The key set (`keys::KEYS_SECRET`) starts from it.
pub const SIGNING_SECRET: &str = "saml_idp.signing.v1";
/// The sealed row holding the key of the pairwise persistent NameIDs. Its own random value, not
/// a key derived from the root secret: a root rotation must not change every SP's NameIDs. Never
/// rotated, for the same reason (ADR 23).
pub const PAIRWISE_SECRET: &str = "saml_idp.pairwise.v1";

pub const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
pub const NAMEID_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
pub const NAMEID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
/// The second-level status of a LogoutResponse when some session participant was not reached.
pub const PARTIAL_LOGOUT: &str = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout";
pub const UNKNOWN_PRINCIPAL: &str = "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal";
const REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";

/// How a LogoutRequest went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutStatus {
    /// The session ended and every participant was told.
    Success,
    /// The session ended, but some participant (another SP, an app without back-channel
    /// logout, the upstream) could not be told: Success with the second-level PartialLogout.
    Partial,
    /// No session of the broker is the one named (Requester, UnknownPrincipal).
    UnknownPrincipal,
}

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the SAML IdP key: {0}")]
    Key(String),
    #[error(transparent)]
    Rotate(#[from] keys::RotateError),
    #[error("the stored SAML service provider {0}: {1}")]
    StoredApp(String, String),
}

impl From<IdpError> for SamlError {
    fn from(e: IdpError) -> Self {
        match e {
            IdpError::Storage(s) => Self::Storage(s),
            other => Self::Config(other.to_string()),
        }
    }
}

/// The broker's SAML IdP.
pub struct SamlIdp {
    pub entity_id: String,
    /// The single sign-on endpoint (both bindings).
    pub sso_url: Url,
    /// The single logout endpoint (both bindings).
    pub slo_url: Url,
    /// The signing keys and their schedule, reloaded from storage (`reload_keys`).
    keys: RwLock<keys::Schedule<keys::SigningKey>>,
    pairwise: [u8; 32],
    /// The key SPs encrypt to (an `EncryptedID`), published with `use="encryption"`.
    decryption: decrypt::DecryptionKey,
    /// `[[saml_apps]]`: these win over a stored SP of the same entity ID.
    apps: Vec<Arc<SamlApp>>,
    /// Stored SPs as last parsed, by entity ID, with the stored text they were parsed from.
    parsed: Mutex<HashMap<String, (registry::Source, Arc<SamlApp>)>>,
    /// Every AuthnRequest must be signed (`WantAuthnRequestsSigned` in the metadata).
    pub want_signed_requests: bool,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub store: Arc<dyn Store>,
}

impl fmt::Debug for SamlIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlIdp")
            .field("entity_id", &self.entity_id)
            .finish_non_exhaustive()
    }
}

/// The NameID format URN of an SP's `name_id_format`.
pub fn name_id_format(f: SamlAppNameId) -> &'static str {
    match f {
        SamlAppNameId::Email => NAMEID_EMAIL,
        SamlAppNameId::Persistent => NAMEID_PERSISTENT,
        SamlAppNameId::Transient => NAMEID_TRANSIENT,
    }
}

fn key_err(e: impl fmt::Display) -> IdpError {
    IdpError::Key(e.to_string())
}

/// A new RSA-2048 key and a self-signed certificate for it (ten years), as one PEM text.
fn new_key_pair(entropy: &dyn Entropy) -> Result<Vec<u8>, IdpError> {
    let key = PKey::from_rsa(Rsa::generate(2048).map_err(key_err)?).map_err(key_err)?;
    let mut name = X509NameBuilder::new().map_err(key_err)?;
    name.append_entry_by_text("CN", "Concierge SAML IdP")
        .map_err(key_err)?;
    let name = name.build();
    let mut serial = [0u8; 16];
    entropy.fill(&mut serial);
    serial[0] &= 0x7f;
    let serial = BigNum::from_slice(&serial)
        .and_then(|n| Asn1Integer::from_bn(&n))
        .map_err(key_err)?;
    let mut b = X509::builder().map_err(key_err)?;
    b.set_version(2).map_err(key_err)?;
    b.set_serial_number(&serial).map_err(key_err)?;
    b.set_subject_name(&name).map_err(key_err)?;
    b.set_issuer_name(&name).map_err(key_err)?;
    b.set_pubkey(&key).map_err(key_err)?;
    let (from, to) = (
        Asn1Time::days_from_now(0).map_err(key_err)?,
        Asn1Time::days_from_now(3650).map_err(key_err)?,
    );
    b.set_not_before(&from).map_err(key_err)?;
    b.set_not_after(&to).map_err(key_err)?;
    b.sign(&key, MessageDigest::sha256()).map_err(key_err)?;
    let mut pem = b.build().to_pem().map_err(key_err)?;
    pem.extend(key.private_key_to_pem_pkcs8().map_err(key_err)?);
    Ok(pem)
}

/// The sealed secret `name`, made by `make` and stored by whichever instance gets there first.
fn sealed_secret(
    store: &dyn Store,
    kek: &KeyEncryptionKeys,
    entropy: &dyn Entropy,
    now: UnixTime,
    name: &str,
    make: impl FnOnce() -> Result<Vec<u8>, IdpError>,
) -> Result<Vec<u8>, IdpError> {
    let sealed = match store.secret(name)? {
        Some((s, _)) => s,
        None => {
            let candidate = kek.seal(name, &make()?, entropy).map_err(key_err)?;
            store.secret_or_insert(name, &candidate, now)?
        }
    };
    kek.open(name, &sealed).map_err(key_err)
}

impl SamlIdp {
    /// The IdP of `public_url`, its key pair and pairwise key loaded (or made at the first
    /// start, sealed under `kek`).
    pub fn load(
        public_url: &Url,
        apps: Vec<SamlApp>,
        store: Arc<dyn Store>,
        kek: &KeyEncryptionKeys,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, IdpError> {
        let now = clock.now();
        let url = |p: &str| public_url.join(p).map_err(key_err);
        let signing = keys::load(store.as_ref(), kek, entropy.as_ref(), now)?;
        let pairwise = sealed_secret(
            store.as_ref(),
            kek,
            entropy.as_ref(),
            now,
            PAIRWISE_SECRET,
            || Ok(entropy.bytes32().to_vec()),
        )?;
        let decryption = decrypt::load(store.as_ref(), kek, entropy.as_ref(), now)?;
        encrypt::warn_weak(&apps);
        Ok(Self {
            entity_id: url("/saml/idp/metadata")?.to_string(),
            sso_url: url("/saml/idp/sso")?,
            slo_url: url("/saml/idp/slo")?,
            keys: RwLock::new(signing),
            pairwise: <[u8; 32]>::try_from(pairwise.as_slice()).map_err(key_err)?,
            decryption,
            apps: apps.into_iter().map(Arc::new).collect(),
            parsed: Mutex::new(HashMap::new()),
            want_signed_requests: false,
            clock,
            entropy,
            store,
        })
    }

    /// Reads the signing keys again (a rotation by the CLI or another instance), so that every
    /// instance signs and publishes by one schedule.
    pub fn reload_keys(&self, kek: &KeyEncryptionKeys) -> Result<(), IdpError> {
        let loaded = keys::load(
            self.store.as_ref(),
            kek,
            self.entropy.as_ref(),
            self.clock.now(),
        )?;
        match self.keys.write() {
            Ok(mut g) => *g = loaded,
            Err(p) => *p.into_inner() = loaded,
        }
        Ok(())
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, keys::Schedule<keys::SigningKey>> {
        match self.keys.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// `part` of the key that signs now, taken out so that the lock is released before it
    /// signs (both forms of the private key are loaded once, when the set is loaded).
    fn signing_key<T>(&self, part: impl FnOnce(&keys::SigningKey) -> T) -> Result<T, SamlError> {
        self.read_keys()
            .signer(self.clock.now())
            .map(|k| part(&k.key))
            .ok_or_else(|| SamlError::Config("no SAML IdP key signs now".into()))
    }

    /// The certificates published now (base64 DER): the signing one first.
    pub fn published_certs(&self) -> Vec<String> {
        self.read_keys()
            .published(self.clock.now())
            .iter()
            .map(|k| k.key.cert_b64.clone())
            .collect()
    }

    /// The IdP that wants every AuthnRequest signed (`yes`), as its metadata then says.
    pub fn requiring_signed_requests(mut self, yes: bool) -> Self {
        self.want_signed_requests = yes;
        self
    }

    /// The SP registered as `entity_id`: in `[[saml_apps]]`, else in storage (blocking then;
    /// its stored metadata, the last good copy, parsed once per change). An SP whose metadata is
    /// past its `validUntil` is not one: its endpoints and keys are not to be trusted any more.
    pub fn app(&self, entity_id: &str) -> Result<Option<Arc<SamlApp>>, IdpError> {
        let app = self.registered(entity_id)?;
        if let Some(a) = &app
            && a.metadata_valid_until
                .is_some_and(|t| t <= self.clock.now())
        {
            // Info, not warn: anyone can name the SP in a request (the refresher warns).
            tracing::info!(sp = %entity_id, "the SP's metadata is past its validUntil: the SP is refused until it is renewed");
            return Ok(None);
        }
        Ok(app)
    }

    fn registered(&self, entity_id: &str) -> Result<Option<Arc<SamlApp>>, IdpError> {
        if let Some(a) = self.configured(entity_id) {
            return Ok(Some(a));
        }
        let Some(record) = self.store.saml_app(entity_id)? else {
            return Ok(None);
        };
        let source = registry::Source::of(&record);
        if let Ok(parsed) = self.parsed.lock()
            && let Some((s, app)) = parsed.get(entity_id)
            && *s == source
        {
            return Ok(Some(Arc::clone(app)));
        }
        let app = Arc::new(
            registry::app_of(&record).map_err(|m| IdpError::StoredApp(entity_id.to_owned(), m))?,
        );
        if let Ok(mut parsed) = self.parsed.lock() {
            parsed.insert(entity_id.to_owned(), (source, Arc::clone(&app)));
        }
        Ok(Some(app))
    }

    /// The SP of `[[saml_apps]]` registered as `entity_id`.
    pub fn configured(&self, entity_id: &str) -> Option<Arc<SamlApp>> {
        self.apps
            .iter()
            .find(|a| a.entity_id == entity_id)
            .map(Arc::clone)
    }

    /// The SP's persistent NameID for `user_id`: an HMAC of both under the pairwise key, so one
    /// user is unlinkable across SPs and the id never changes for one SP.
    pub fn pairwise_id(&self, user_id: &str, sp: &str) -> Result<String, IdpError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.pairwise).map_err(key_err)?;
        mac.update(user_id.as_bytes());
        mac.update(&[0]);
        mac.update(sp.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// The SP's transient NameID in the session `sid`: an HMAC of both under a key derived
    /// from the pairwise key for this use only, so it differs per session and per SP, links
    /// nothing across sessions, and is computed again at logout without being stored.
    pub fn transient_id(&self, sid: &str, sp: &str) -> Result<String, IdpError> {
        let mut derive = Hmac::<Sha256>::new_from_slice(&self.pairwise).map_err(key_err)?;
        derive.update(b"concierge saml transient NameID v1");
        let key = derive.finalize().into_bytes();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(key_err)?;
        // Length-prefixed: no (sid, sp) pair reads as another.
        mac.update(&(sid.len() as u64).to_be_bytes());
        mac.update(sid.as_bytes());
        mac.update(sp.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// The NameID (format and value) the SP `app` gets for the account `user_id`, `email`, in
    /// the session `sid`.
    pub fn name_id_for(
        &self,
        app: &SamlApp,
        user_id: &str,
        email: &str,
        sid: &str,
    ) -> Result<(&'static str, String), IdpError> {
        let format = name_id_format(app.name_id_format);
        let value = match app.name_id_format {
            SamlAppNameId::Email => email.to_owned(),
            SamlAppNameId::Persistent => self.pairwise_id(user_id, &app.entity_id)?,
            SamlAppNameId::Transient => self.transient_id(sid, &app.entity_id)?,
        };
        Ok((format, value))
    }

    /// Records that the SP `sp` used the request `id` (`kind`: `AuthnRequest`, `LogoutRequest`)
    /// issued at `issued` (already within the skew), atomically across instances, in the
    /// upstream side's replay cache: false if it was used before. Remembered as long as
    /// `check_issued` would accept it.
    pub fn use_request_id(
        &self,
        sp: &str,
        kind: &str,
        id: &str,
        issued: UnixTime,
    ) -> Result<bool, StorageError> {
        // Upstream ids are `[a-z0-9_-]`: a key with a colon is never one of theirs.
        self.store.use_saml_assertion(
            &format!("sp:{sp}"),
            &format!("{kind}:{id}"),
            replay_until(issued),
            self.clock.now(),
        )
    }

    /// The LogoutResponse to `app`'s LogoutRequest `in_response_to`, HTTP-Redirect binding to
    /// its SingleLogoutService, signed (RSA-SHA256 query signature).
    pub fn logout_response(
        &self,
        app: &SamlApp,
        in_response_to: &str,
        relay_state: Option<&str>,
        status: LogoutStatus,
    ) -> Result<Url, SamlError> {
        let slo = app
            .slo_url
            .clone()
            .ok_or(SamlError::Config("the SP has no slo_url".into()))?;
        let (top, sub) = match status {
            LogoutStatus::Success => (STATUS_SUCCESS, None),
            LogoutStatus::Partial => (STATUS_SUCCESS, Some(PARTIAL_LOGOUT)),
            LogoutStatus::UnknownPrincipal => (REQUESTER, Some(UNKNOWN_PRINCIPAL)),
        };
        let sub = sub
            .map(|s| format!(r#"<samlp:StatusCode Value="{s}"/>"#))
            .unwrap_or_default();
        let xml = format!(
            concat!(
                r#"<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" "#,
                r#"ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{dest}" InResponseTo="{irt}">"#,
                r#"<saml:Issuer>{issuer}</saml:Issuer><samlp:Status><samlp:StatusCode Value="{ok}">{sub}</samlp:StatusCode>"#,
                r#"</samlp:Status></samlp:LogoutResponse>"#
            ),
            id = self.new_id(),
            now = self.instant(),
            dest = escape(slo.as_str()),
            irt = escape(in_response_to),
            issuer = escape(&self.entity_id),
            ok = top,
            sub = sub,
        );
        self.signed_redirect(slo, "SAMLResponse", &xml, relay_state)
    }

    /// `xml` as the `param` of an HTTP-Redirect message to `to` (its own query kept), with
    /// `relay_state`, signed with the IdP key (RSA-SHA256 query signature).
    fn signed_redirect(
        &self,
        mut to: Url,
        param: &str,
        xml: &str,
        relay_state: Option<&str>,
    ) -> Result<Url, SamlError> {
        let key = self.signing_key(|k| k.pkey.clone())?;
        let query = redirect_query(param, xml, relay_state, Some(&key))?;
        let q = match to.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
            _ => query,
        };
        to.set_query(Some(&q));
        Ok(to)
    }

    /// Now, as SAML writes it.
    fn instant(&self) -> String {
        chrono::DateTime::<chrono::Utc>::from_timestamp(self.clock.now(), 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// A fresh `ID` for a Response or an Assertion (an NCName).
    pub fn new_id(&self) -> String {
        let mut b = [0u8; 20];
        self.entropy.fill(&mut b);
        format!("_{}", hex::encode(b))
    }

    /// The enveloped RSA-SHA256, exclusive-c14n signature template of the element with ID `id`.
    pub fn signature_template(id: &str) -> String {
        format!(
            concat!(
                r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>"#,
                r#"<ds:CanonicalizationMethod Algorithm="{c14n}"/>"#,
                r#"<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>"#,
                r##"<ds:Reference URI="#{id}"><ds:Transforms>"##,
                r#"<ds:Transform Algorithm="{env}"/><ds:Transform Algorithm="{c14n}"/></ds:Transforms>"#,
                r#"<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>"#,
                r#"<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>"#,
                r#"<ds:SignatureValue></ds:SignatureValue></ds:Signature>"#
            ),
            c14n = dsig::EXC_C14N,
            env = dsig::ENVELOPED,
            id = id,
        )
    }

    /// Signs the template in `doc` that signs the element `id` (through `upstream::saml::dsig`,
    /// the one door to xmlsec), without the XML declaration libxml2 adds.
    pub fn sign(&self, doc: &str, id: &str) -> Result<String, SamlError> {
        let key = self.signing_key(|k| Arc::clone(&k.loaded))?;
        let signed = dsig::sign_with(doc, id, &key)?;
        let body = match signed.strip_prefix("<?xml") {
            Some(decl) => decl.split_once("?>").map_or(decl, |(_, rest)| rest),
            None => signed.as_str(),
        };
        Ok(body.trim().to_owned())
    }

    /// The IdP's metadata: entity ID, signing certificates (the one signing now, and during a
    /// rotation the next or the previous one: `keys.rs`), the encryption certificate
    /// (`decrypt.rs`), NameID formats, and the single
    /// logout and single sign-on endpoints for HTTP-Redirect and HTTP-POST.
    /// `WantAuthnRequestsSigned` as configured (`saml_idp_want_authn_requests_signed`); when it is
    /// false, only the requests of SPs with signing certificates must be signed.
    pub fn metadata(&self) -> String {
        let sso = escape(self.sso_url.as_str());
        let slo = escape(self.slo_url.as_str());
        let certs: String = self
            .published_certs()
            .iter()
            .map(|c| {
                format!(
                    r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
                )
            })
            .chain([self.decryption.key_descriptor()])
            .collect();
        format!(
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                "\n",
                r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{id}">"#,
                r#"<md:IDPSSODescriptor WantAuthnRequestsSigned="{want}" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
                "{certs}",
                r#"<md:SingleLogoutService Binding="{redirect}" Location="{slo}"/>"#,
                r#"<md:SingleLogoutService Binding="{post}" Location="{slo}"/>"#,
                r#"<md:NameIDFormat>{email}</md:NameIDFormat><md:NameIDFormat>{persistent}</md:NameIDFormat><md:NameIDFormat>{transient}</md:NameIDFormat>"#,
                r#"<md:SingleSignOnService Binding="{redirect}" Location="{sso}"/>"#,
                r#"<md:SingleSignOnService Binding="{post}" Location="{sso}"/>"#,
                r#"</md:IDPSSODescriptor></md:EntityDescriptor>"#,
                "\n"
            ),
            id = escape(&self.entity_id),
            want = self.want_signed_requests,
            certs = certs,
            email = NAMEID_EMAIL,
            persistent = NAMEID_PERSISTENT,
            transient = NAMEID_TRANSIENT,
            redirect = REDIRECT_BINDING,
            post = POST_BINDING,
            sso = sso,
            slo = slo,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, OsEntropy};
    use crate::domain::kek::KeyEncryptionKey;
    use crate::upstream::saml::metadata::IdpMetadata;

    fn idp(store: Arc<dyn Store>) -> SamlIdp {
        let kek = KeyEncryptionKeys::from(KeyEncryptionKey::new([7; 32]));
        SamlIdp::load(
            &Url::parse("https://id.example.com").unwrap(),
            Vec::new(),
            store,
            &kek,
            Arc::new(ManualClock::new(1_800_000_000)),
            Arc::new(OsEntropy),
        )
        .unwrap()
    }

    /// A migrated SQLite store in a temporary folder (kept while the folder lives).
    fn temp_store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::DatabaseUrl::Sqlite(dir.path().join("t.db"));
        let store =
            crate::storage::DieselStore::open(&url, 2, std::time::Duration::from_secs(5)).unwrap();
        store.migrate().unwrap();
        (dir, Arc::new(store))
    }

    #[test]
    fn keys_are_made_once_and_the_metadata_is_what_signs() {
        let (_dir, store) = temp_store();
        let (first, again) = (idp(Arc::clone(&store)), idp(Arc::clone(&store)));
        // Another start (or instance) reads the same key pair and pairwise key.
        assert_eq!(first.metadata(), again.metadata());
        assert_eq!(
            first.pairwise_id("u1", "https://sp.example").unwrap(),
            again.pairwise_id("u1", "https://sp.example").unwrap()
        );
        assert_ne!(
            first.pairwise_id("u1", "https://sp.example").unwrap(),
            first.pairwise_id("u1", "https://other.example").unwrap()
        );
        // Transient ids: the same for one session and SP (logout computes it again), another
        // for another session or SP, and not the persistent id.
        let t = first.transient_id("sid-1", "https://sp.example").unwrap();
        assert_eq!(
            t,
            again.transient_id("sid-1", "https://sp.example").unwrap()
        );
        assert_ne!(
            t,
            first.transient_id("sid-2", "https://sp.example").unwrap()
        );
        assert_ne!(
            t,
            first
                .transient_id("sid-1", "https://other.example")
                .unwrap()
        );
        assert_ne!(t, first.pairwise_id("sid-1", "https://sp.example").unwrap());
        assert!(first.metadata().contains(NAMEID_TRANSIENT));
        // Sealed at rest: the stored rows are not the PEM.
        let (sealed, _) = store.secret(SIGNING_SECRET).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("BEGIN"));

        // The metadata reads back (as the broker reads an IdP's), and its certificate verifies
        // what the IdP signs.
        let md = IdpMetadata::parse(&first.metadata()).unwrap();
        assert_eq!(md.entity_id, "https://id.example.com/saml/idp/metadata");
        assert_eq!(md.sso_url.as_str(), "https://id.example.com/saml/idp/sso");
        assert_eq!(
            md.slo_url.as_ref().map(Url::as_str),
            Some("https://id.example.com/saml/idp/slo")
        );
        assert_eq!(md.certs.len(), 1);
        let id = first.new_id();
        let doc = format!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0"><saml:Issuer>x</saml:Issuer>{}</saml:Assertion>"#,
            SamlIdp::signature_template(&id)
        );
        let signed = first.sign(&doc, &id).unwrap();
        assert!(!signed.starts_with("<?xml"), "{signed}");
        dsig::verify(&signed, &id, &md.certs).unwrap();
        assert!(dsig::verify(&signed.replace(">x<", ">y<"), &id, &md.certs).is_err());
    }

    #[test]
    fn a_rotation_is_published_first_then_signs_and_every_instance_agrees() {
        let (_dir, store) = temp_store();
        let kek = KeyEncryptionKeys::from(KeyEncryptionKey::new([7; 32]));
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let load = || {
            SamlIdp::load(
                &Url::parse("https://id.example.com").unwrap(),
                Vec::new(),
                Arc::clone(&store),
                &kek,
                clock.clone(),
                Arc::new(OsEntropy),
            )
            .unwrap()
        };
        // `keys list` before the first start: nothing, and nothing made.
        assert!(keys::peek(store.as_ref(), &kek).unwrap().is_none());
        assert!(store.secret(SIGNING_SECRET).unwrap().is_none());
        let (a, b) = (load(), load());
        let first = a.published_certs();
        let peeked = keys::peek(store.as_ref(), &kek).unwrap().unwrap();
        assert_eq!(peeked.keys.len(), 1);
        assert_eq!(peeked.keys[0].key.cert_b64, first[0]);
        assert_eq!(first.len(), 1);
        let signed_by = |idp: &SamlIdp| {
            let id = idp.new_id();
            let doc = format!(
                r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0"><saml:Issuer>x</saml:Issuer>{}</saml:Assertion>"#,
                SamlIdp::signature_template(&id)
            );
            let signed = idp.sign(&doc, &id).unwrap();
            let md = IdpMetadata::parse(&idp.metadata()).unwrap();
            dsig::verify(&signed, &id, &md.certs).unwrap();
            // Which of the published certificates verifies it.
            md.certs
                .iter()
                .position(|c| dsig::verify(&signed, &id, std::slice::from_ref(c)).is_ok())
                .unwrap()
        };

        let week = 7 * 86_400;
        let rotated = keys::rotate(store.as_ref(), &kek, &OsEntropy, clock.now(), week).unwrap();
        assert_eq!(rotated.keys.len(), 2);
        // Not seen before a reload; after one, both certificates are published and the old
        // key still signs (it is first in the metadata).
        assert_eq!(b.published_certs(), first);
        b.reload_keys(&kek).unwrap();
        let both = b.published_certs();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], first[0]);
        assert_eq!(signed_by(&b), 0);
        assert_eq!(IdpMetadata::parse(&b.metadata()).unwrap().certs.len(), 2);
        // Sealed at rest.
        let (sealed, _) = store.secret(keys::KEYS_SECRET).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("BEGIN"));
        // A second rotation while this one is pending is refused and changes nothing.
        assert!(matches!(
            keys::rotate(store.as_ref(), &kek, &OsEntropy, clock.now() + 60, week),
            Err(IdpError::Rotate(keys::RotateError::Pending { .. }))
        ));
        a.reload_keys(&kek).unwrap();
        assert_eq!(a.published_certs(), both);

        // Past the switch: the new key signs; the old certificate is still published.
        clock.advance(week);
        let after = b.published_certs();
        assert_eq!(after, [both[1].clone(), both[0].clone()]);
        assert_eq!(signed_by(&b), 0);
        let id = b.new_id();
        let doc = format!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0"><saml:Issuer>x</saml:Issuer>{}</saml:Assertion>"#,
            SamlIdp::signature_template(&id)
        );
        let signed = b.sign(&doc, &id).unwrap();
        let old_only = IdpMetadata::parse(&first_metadata(&first[0]))
            .unwrap()
            .certs;
        assert!(
            dsig::verify(&signed, &id, &old_only).is_err(),
            "signed with the old key"
        );
        // A week later the old certificate is no longer published.
        clock.advance(week);
        assert_eq!(b.published_certs(), [both[1].clone()]);
        // The pairwise key did not change.
        assert_eq!(
            a.pairwise_id("u1", "https://sp").unwrap(),
            load().pairwise_id("u1", "https://sp").unwrap()
        );
    }

    /// Metadata publishing only `cert` (an SP that cached it before a rotation).
    fn first_metadata(cert: &str) -> String {
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="x"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="{REDIRECT_BINDING}" Location="https://id.example.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
        )
    }
}
