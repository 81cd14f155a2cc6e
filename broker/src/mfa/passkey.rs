//! Owns passkeys and security keys as a native second factor (issue #19): the WebAuthn
//! ceremonies (webauthn-rs), the relying party taken from `server.public_url`, the ceremony state
//! kept in the sealed journey between the page and the answer (never in memory: several
//! instances), and the user's credentials in the store. A user-verifying assertion proves `phr`
//! (phishing resistant: the level above multi-factor) and `hwk` or `swk` (a hardware key the
//! operator trusts, or any other: [`Hardware`]); a signature counter that does
//! not move forward (a possibly cloned authenticator) is refused and audited. The same
//! credentials sign in without a password ([`Passwordless`]): discoverable credentials, offered
//! by the sign-in page's button and by the browser's autofill (conditional UI).

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::{Host, Url};
use webauthn_rs::prelude::{
    CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Uuid, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use super::factor::{
    FirstFactorChallenge, Identified, NativeEnrolled, NativeFactor, NativeVerdict, Passwordless,
    Prompt,
};
use super::host::{Field, FieldKind, Localized};
use super::passkey_hardware::Hardware;
use super::{FactorUser, MfaError};
use crate::audit::{Auditor, Event, EventKind};
use crate::clock::Clock;
use crate::config::mfa::PasskeySettings;
use crate::domain::UserId;
use crate::domain::auth::{AMR_HWK, AMR_PHR, AMR_SWK};
use crate::storage::{CredentialUse, Store, WebAuthnCredential};

/// The factor's id.
pub const ID: &str = "passkey";
/// Its page: `templates/pages/mfa_passkey.hbs` (with `static/passkey.js`).
const PAGE: &str = "mfa_passkey";
/// The one answer field: the credential as JSON, posted by `passkey.js`.
const FIELD: &str = "credential";
/// An attestation without certificates or an assertion is well under this.
const MAX_CREDENTIAL_JSON: u32 = 8192;

fn text(en: &str, ko: &str) -> Localized {
    Localized {
        en: en.to_owned(),
        ko: ko.to_owned(),
    }
}

/// The relying party a public URL makes: its id (the host name) and origin. `None` when the
/// host is an IP literal (or missing): browsers refuse an IP address as an RP id.
pub fn relying_party(public_url: &Url) -> Option<(String, Url)> {
    match public_url.host()? {
        Host::Domain(d) if !d.is_empty() => {
            let origin = Url::parse(&public_url.origin().ascii_serialization()).ok()?;
            Some((d.to_ascii_lowercase(), origin))
        }
        _ => None,
    }
}

/// The WebAuthn user handle of a user: derived from the user id (stable, reveals nothing).
fn user_handle(user: &UserId) -> Uuid {
    let digest = Sha256::digest(format!("concierge/webauthn-user/{}", user.as_str()));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// The counter and backup flags of a credential as webauthn-rs serialises it (`{"cred": {...}}`).
fn counter_and_flags(passkey: &Value) -> (i64, bool, bool) {
    let cred = &passkey["cred"];
    (
        cred["counter"].as_i64().unwrap_or(0),
        cred["backup_eligible"].as_bool().unwrap_or(false),
        cred["backup_state"].as_bool().unwrap_or(false),
    )
}

/// The value of the answer field (empty if it is missing).
fn answer_of(answer: &[(String, String)]) -> &str {
    answer
        .iter()
        .find(|(n, _)| n == FIELD)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn failed(reason: impl std::fmt::Display) -> MfaError {
    MfaError::Failed {
        plugin: ID.to_owned(),
        reason: reason.to_string(),
    }
}

/// The passkey factor.
pub struct Passkeys {
    webauthn: Webauthn,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<Auditor>,
    hardware: Hardware,
}

/// The passkey factor `[mfa.passkey]` asks for, or none: disabled, or a public URL that cannot
/// be a relying party (then a warning at boot names `server.public_url`).
pub fn offer(
    settings: &PasskeySettings,
    public_url: &Url,
    product_name: &str,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<Auditor>,
) -> Option<Arc<Passkeys>> {
    if !settings.enabled {
        return None;
    }
    let Some((rp_id, origin)) = relying_party(public_url) else {
        tracing::warn!(
            public_url = %public_url,
            "mfa.passkey is enabled, but server.public_url has an IP address for a host: browsers offer passkeys only to a domain name (http://localhost works); passkeys are not offered"
        );
        return None;
    };
    let webauthn = match WebauthnBuilder::new(&rp_id, &origin)
        .map(|b| b.rp_name(product_name))
        .and_then(|b| b.build())
    {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(public_url = %public_url, error = %e, "server.public_url cannot be a WebAuthn relying party; passkeys are not offered");
            return None;
        }
    };
    let hardware = match Hardware::new(&settings.hardware) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "mfa.passkey.hardware cannot be read; passkeys are not offered");
            return None;
        }
    };
    Some(Arc::new(Passkeys {
        webauthn,
        store,
        clock,
        audit,
        hardware,
    }))
}

impl Passkeys {
    fn page(
        &self,
        mode: &str,
        options: &impl serde::Serialize,
        state: Value,
    ) -> Result<Prompt, MfaError> {
        let options = serde_json::to_string(options).map_err(failed)?;
        Ok(Prompt::Native {
            page: PAGE.to_owned(),
            data: json!({ "mode": mode, "options": options }),
            fields: vec![Field {
                name: FIELD.to_owned(),
                kind: FieldKind::Text,
                label: text("Passkey", "패스키"),
                hint: None,
                max_length: MAX_CREDENTIAL_JSON,
            }],
            state,
        })
    }

    /// A refused ceremony: logged and audited with its short reason (never the credential).
    fn audit_refusal(&self, user: &FactorUser, ceremony: &str, reason: &str) {
        tracing::info!(
            user = user.id.as_str(),
            reason,
            "passkey {ceremony} refused"
        );
        self.audit.record(
            Event::new(EventKind::MfaFailed)
                .user(user.id.as_str())
                .reason(format!("{ID}:{reason}")),
        );
    }

    /// A signature counter that did not move forward: possibly a cloned authenticator.
    fn counter_regressed(&self, user: &UserId) {
        tracing::warn!(
            user = user.as_str(),
            "passkey signature counter did not move forward: possibly a cloned authenticator; refused"
        );
        self.audit.record(
            Event::new(EventKind::MfaFailed)
                .user(user.as_str())
                .reason(format!("{ID}:counter_regressed")),
        );
    }

    fn regressed(&self, user: &FactorUser) -> NativeVerdict {
        self.counter_regressed(&user.id);
        NativeVerdict::Rejected(Some(text(
            "This passkey cannot be used: it may have been copied. Use another way to sign in and contact your administrator.",
            "이 패스키는 복제되었을 수 있어 사용할 수 없습니다. 다른 방법으로 로그인하고 관리자에게 문의하세요.",
        )))
    }
}

/// The registration options with a discoverable credential preferred (webauthn-rs asks for
/// none): such a credential also signs in without a password. With hardware models listed the
/// browser is asked for the authenticator's attestation (`direct`), and a journey that needs a
/// hardware key hints at a security key. Only what the browser is asked changes; the answer is
/// checked against the same state.
fn registration_options(
    options: &impl serde::Serialize,
    attestation: bool,
    hardware_only: bool,
) -> Result<Value, MfaError> {
    let mut v = serde_json::to_value(options).map_err(failed)?;
    let Some(public_key) = v.get_mut("publicKey").and_then(Value::as_object_mut) else {
        return Ok(v);
    };
    if let Some(sel) = public_key
        .get_mut("authenticatorSelection")
        .and_then(Value::as_object_mut)
    {
        sel.insert("residentKey".to_owned(), json!("preferred"));
        sel.insert("requireResidentKey".to_owned(), json!(false));
    }
    if attestation {
        public_key.insert("attestation".to_owned(), json!("direct"));
    }
    if hardware_only {
        public_key.insert("hints".to_owned(), json!(["security-key"]));
    }
    Ok(v)
}

/// The methods a passwordless sign-in proves: the key (`hwk` or `swk`), the user verified by the
/// authenticator (RFC 8176 `user`), phishing resistant (`mfa` is computed from them).
fn passwordless_amr(key: &str) -> Vec<String> {
    vec![key.to_owned(), "user".to_owned(), AMR_PHR.to_owned()]
}

/// What a journey that needs a hardware key shows when another passkey is used or added.
fn hardware_needed() -> Localized {
    text(
        "This app needs a security key your organisation approved. Use or add one of those.",
        "이 앱에는 조직이 승인한 보안 키가 필요합니다. 승인된 보안 키를 사용하거나 추가하세요.",
    )
}

fn refused(reason: &'static str) -> Identified {
    Identified::Refused {
        reason,
        message: text(
            "That passkey was not accepted. Try again, or sign in with your email and password.",
            "패스키가 확인되지 않았습니다. 다시 시도하거나 이메일과 비밀번호로 로그인하세요.",
        ),
    }
}

fn not_accepted() -> NativeVerdict {
    NativeVerdict::Rejected(Some(text(
        "That passkey was not accepted. Try again, or choose another way.",
        "패스키가 확인되지 않았습니다. 다시 시도하거나 다른 방법을 선택하세요.",
    )))
}

/// The short, secret-free reason a refused ceremony is audited with (`passkey:<reason>`).
fn refusal(e: &WebauthnError) -> &'static str {
    match e {
        WebauthnError::InvalidRPOrigin => "origin",
        WebauthnError::InvalidRPIDHash => "rp_id",
        WebauthnError::MismatchedChallenge => "challenge",
        WebauthnError::InvalidClientDataType => "type",
        WebauthnError::CredentialCrossOrigin => "cross_origin",
        WebauthnError::UserNotVerified => "user_not_verified",
        WebauthnError::UserNotPresent => "user_not_present",
        WebauthnError::AuthenticationFailure => "signature",
        WebauthnError::CredentialNotFound => "unknown_credential",
        WebauthnError::CredentialAlteredAlgFromRequest
        | WebauthnError::COSEKeyInvalidType
        | WebauthnError::COSEKeyInvalidAlgorithm => "algorithm",
        WebauthnError::AttestationStatementSigInvalid
        | WebauthnError::AttestationStatementSigMissing
        | WebauthnError::AttestationStatementAlgMismatch
        | WebauthnError::AttestationStatementAlgInvalid
        | WebauthnError::AttestationStatementAlgMissing
        | WebauthnError::AttestationNotSupported
        | WebauthnError::AttestationNotVerifiable => "attestation",
        _ => "invalid",
    }
}

/// Whether the client data says the ceremony ran in a cross-origin frame (`crossOrigin: true`,
/// or a `topOrigin`, WebAuthn L3 §5.8.1). The broker's pages are never framed (`frame-ancestors
/// 'none'`), so such a credential was not made on them; webauthn-rs checks `crossOrigin` at
/// registration only. Client data that is not JSON is refused later by webauthn-rs.
fn cross_origin(client_data_json: &[u8]) -> bool {
    serde_json::from_slice::<Value>(client_data_json).is_ok_and(|c| {
        c.get("crossOrigin").and_then(Value::as_bool) == Some(true) || c.get("topOrigin").is_some()
    })
}

impl NativeFactor for Passkeys {
    fn id(&self) -> &str {
        ID
    }

    fn name(&self) -> Localized {
        text("Passkey or security key", "패스키 또는 보안 키")
    }

    fn amr(&self) -> Vec<String> {
        // A user-verified assertion bound to this origin: a key held by an authenticator
        // (hardware or not, per pass), and phishing resistant (domain::auth::AMR_PHR).
        vec![AMR_HWK.to_owned(), AMR_SWK.to_owned(), AMR_PHR.to_owned()]
    }

    fn enrolled(&self, user: &FactorUser) -> Result<bool, MfaError> {
        let stored = self.store.webauthn_credentials(&user.id)?;
        Ok(if user.hardware_only {
            stored.iter().any(|c| self.hardware.trusted(c))
        } else {
            !stored.is_empty()
        })
    }

    fn begin(&self, user: &FactorUser, enroll: bool) -> Result<Prompt, MfaError> {
        let stored = self.store.webauthn_credentials(&user.id)?;
        if enroll {
            let exclude: Vec<CredentialID> = stored
                .iter()
                .map(|c| CredentialID::from(c.credential_id.clone()))
                .collect();
            let (options, registration) = self
                .webauthn
                .start_passkey_registration(
                    user_handle(&user.id),
                    &user.email,
                    &user.email,
                    Some(exclude),
                )
                .map_err(failed)?;
            let state = serde_json::to_value(&registration).map_err(failed)?;
            let options =
                registration_options(&options, self.hardware.listed(), user.hardware_only)?;
            return self.page("register", &options, state);
        }
        // A journey that needs a hardware key offers only those: the browser then shows no
        // other passkey to pick.
        let passkeys: Vec<Passkey> = stored
            .iter()
            .filter(|c| !user.hardware_only || self.hardware.trusted(c))
            .filter_map(|c| serde_json::from_str(&c.passkey).ok())
            .collect();
        if passkeys.is_empty() {
            return Err(MfaError::Unavailable(ID.to_owned()));
        }
        let (options, authentication) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(failed)?;
        let state = serde_json::to_value(&authentication).map_err(failed)?;
        self.page("authenticate", &options, state)
    }

    fn verify(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: &[(String, String)],
    ) -> Result<NativeVerdict, MfaError> {
        let Prompt::Native { state, .. } = prompt else {
            return Err(MfaError::State);
        };
        let authentication: PasskeyAuthentication =
            serde_json::from_value(state.clone()).map_err(|_| MfaError::State)?;
        let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(answer_of(answer)) else {
            self.audit_refusal(user, "assertion", "malformed");
            return Ok(not_accepted());
        };
        if cross_origin(credential.response.client_data_json.as_ref()) {
            self.audit_refusal(user, "assertion", "cross_origin");
            return Ok(not_accepted());
        }
        let result = match self
            .webauthn
            .finish_passkey_authentication(&credential, &authentication)
        {
            Ok(r) => r,
            Err(WebauthnError::CredentialPossibleCompromise) => return Ok(self.regressed(user)),
            Err(e) => {
                tracing::debug!(error = %e, "passkey assertion refused by webauthn-rs");
                self.audit_refusal(user, "assertion", refusal(&e));
                return Ok(not_accepted());
            }
        };
        if !result.user_verified() {
            self.audit_refusal(user, "assertion", "user_not_verified");
            return Ok(not_accepted());
        }
        let id: &[u8] = result.cred_id().as_ref();
        let stored = self.store.webauthn_credentials(&user.id)?;
        let Some(row) = stored.iter().find(|c| c.credential_id == id) else {
            self.audit_refusal(user, "assertion", "unknown_credential");
            return Ok(not_accepted());
        };
        if user.hardware_only && !self.hardware.trusted(row) {
            self.audit_refusal(user, "assertion", "not_listed_hardware");
            return Ok(NativeVerdict::Rejected(Some(hardware_needed())));
        }
        let key = self.hardware.method(row);
        let mut passkey: Passkey =
            serde_json::from_str(&row.passkey).map_err(|_| MfaError::State)?;
        passkey.update_credential(&result);
        let serialised = serde_json::to_string(&passkey).map_err(failed)?;
        match self.store.use_webauthn_credential(
            &user.id,
            id,
            &serialised,
            i64::from(result.counter()),
            result.backup_state(),
            self.clock.now(),
        )? {
            CredentialUse::Recorded => Ok(NativeVerdict::Accepted {
                amr: vec![key.to_owned(), AMR_PHR.to_owned()],
            }),
            CredentialUse::CounterRegressed => Ok(self.regressed(user)),
            CredentialUse::Unknown => {
                self.audit_refusal(user, "assertion", "unknown_credential");
                Ok(not_accepted())
            }
        }
    }

    fn enroll_finish(
        &self,
        user: &FactorUser,
        prompt: &Prompt,
        answer: &[(String, String)],
    ) -> Result<NativeEnrolled, MfaError> {
        let Prompt::Native { state, .. } = prompt else {
            return Err(MfaError::State);
        };
        let registration: PasskeyRegistration =
            serde_json::from_value(state.clone()).map_err(|_| MfaError::State)?;
        let retry = || {
            NativeEnrolled::Retry(text(
                "The passkey could not be registered. Try again.",
                "패스키를 등록하지 못했습니다. 다시 시도하세요.",
            ))
        };
        let Ok(credential) = serde_json::from_str::<RegisterPublicKeyCredential>(answer_of(answer))
        else {
            self.audit_refusal(user, "registration", "malformed");
            return Ok(retry());
        };
        if cross_origin(credential.response.client_data_json.as_ref()) {
            self.audit_refusal(user, "registration", "cross_origin");
            return Ok(retry());
        }
        let passkey = match self
            .webauthn
            .finish_passkey_registration(&credential, &registration)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "passkey registration refused by webauthn-rs");
                self.audit_refusal(user, "registration", refusal(&e));
                return Ok(retry());
            }
        };
        let value = serde_json::to_value(&passkey).map_err(failed)?;
        let (sign_count, backup_eligible, backup_state) = counter_and_flags(&value);
        let attested = self.hardware.attested(&value);
        if user.hardware_only && attested.is_none() {
            // Stored, it would not count here, and the journey would ask for it again.
            self.audit_refusal(user, "registration", "not_listed_hardware");
            return Ok(NativeEnrolled::Retry(hardware_needed()));
        }
        let count = self.store.webauthn_credentials(&user.id)?.len();
        let row = WebAuthnCredential {
            credential_id: passkey.cred_id().as_ref().to_vec(),
            passkey: value.to_string(),
            name: attested
                .as_ref()
                .map_or_else(|| format!("Passkey {}", count + 1), |m| m.name.clone()),
            created_at: self.clock.now(),
            last_used_at: None,
            sign_count,
            backup_eligible,
            backup_state,
            attested,
        };
        let key = self.hardware.method(&row);
        if !self.store.insert_webauthn_credential(&user.id, &row)? {
            self.audit_refusal(user, "registration", "registered_already");
            return Ok(NativeEnrolled::Retry(text(
                "This passkey is registered already.",
                "이미 등록된 패스키입니다.",
            )));
        }
        Ok(NativeEnrolled::Done {
            amr: vec![key.to_owned(), AMR_PHR.to_owned()],
        })
    }

    fn repeatable(&self) -> bool {
        true
    }

    fn remove(&self, user: &UserId) -> Result<bool, MfaError> {
        Ok(self.store.delete_webauthn_credentials(user)? > 0)
    }
}

impl Passwordless for Passkeys {
    fn challenge(&self) -> Result<FirstFactorChallenge, MfaError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(failed)?;
        Ok(FirstFactorChallenge {
            options: serde_json::to_string(&options).map_err(failed)?,
            state: serde_json::to_value(&state).map_err(failed)?,
        })
    }

    fn identify(
        &self,
        challenge: &FirstFactorChallenge,
        answer: &str,
    ) -> Result<Identified, MfaError> {
        let state: DiscoverableAuthentication =
            serde_json::from_value(challenge.state.clone()).map_err(|_| MfaError::State)?;
        let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(answer) else {
            return Ok(refused("malformed"));
        };
        if cross_origin(credential.response.client_data_json.as_ref()) {
            return Ok(refused("cross_origin"));
        }
        let Ok((handle, id)) = self
            .webauthn
            .identify_discoverable_authentication(&credential)
        else {
            return Ok(refused("no_user_handle"));
        };
        let Some(user) = self.store.webauthn_credential_owner(id)? else {
            return Ok(refused("unknown_credential"));
        };
        // The authenticator's user handle is the one made for this credential's owner.
        if handle != user_handle(&user) {
            return Ok(refused("user_handle_mismatch"));
        }
        let stored = self.store.webauthn_credentials(&user)?;
        let Some(row) = stored.iter().find(|c| c.credential_id == id) else {
            return Ok(refused("unknown_credential"));
        };
        let mut passkey: Passkey =
            serde_json::from_str(&row.passkey).map_err(|_| MfaError::State)?;
        let method = self.hardware.method(row);
        let key = DiscoverableKey::from(&passkey);
        let result = match self.webauthn.finish_discoverable_authentication(
            &credential,
            state,
            &[key],
        ) {
            Ok(r) => r,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                self.counter_regressed(&user);
                return Ok(refused("counter_regressed"));
            }
            Err(e) => {
                tracing::debug!(error = %e, "passwordless passkey assertion refused by webauthn-rs");
                return Ok(refused(refusal(&e)));
            }
        };
        if !result.user_verified() {
            return Ok(refused("user_not_verified"));
        }
        // The account as it is now, checked only once the key proved itself (a credential id is
        // not a secret: its account's state is not told to whoever sends one).
        match self.store.user_by_id(&user)? {
            Some(account) if !account.disabled => {}
            Some(_) => {
                return Ok(Identified::Refused {
                    reason: "account_disabled",
                    message: text("This account is disabled.", "비활성화된 계정입니다."),
                });
            }
            None => return Ok(refused("unknown_account")),
        }
        passkey.update_credential(&result);
        let serialised = serde_json::to_string(&passkey).map_err(failed)?;
        match self.store.use_webauthn_credential(
            &user,
            id,
            &serialised,
            i64::from(result.counter()),
            result.backup_state(),
            self.clock.now(),
        )? {
            CredentialUse::Recorded => Ok(Identified::User {
                user,
                amr: passwordless_amr(method),
            }),
            CredentialUse::CounterRegressed => {
                self.counter_regressed(&user);
                Ok(refused("counter_regressed"))
            }
            CredentialUse::Unknown => Ok(refused("unknown_credential")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_the_public_host_and_never_an_ip_address() {
        let rp = |u: &str| relying_party(&Url::parse(u).unwrap());
        let (id, origin) = rp("https://Login.Example.com/broker/").unwrap();
        assert_eq!(id, "login.example.com");
        assert_eq!(origin.as_str(), "https://login.example.com/");
        let (id, origin) = rp("http://localhost:8080").unwrap();
        assert_eq!(
            (id.as_str(), origin.as_str()),
            ("localhost", "http://localhost:8080/")
        );
        assert!(rp("http://127.0.0.1:8080").is_none());
        assert!(rp("https://[::1]:8443/").is_none());
    }

    #[test]
    fn user_handles_are_stable_and_distinct() {
        let a = UserId::from_stored("a".into());
        let b = UserId::from_stored("b".into());
        assert_eq!(user_handle(&a), user_handle(&a));
        assert_ne!(user_handle(&a), user_handle(&b));
    }

    #[test]
    fn counter_and_flags_are_read_from_the_serialised_credential() {
        let v = json!({"cred": {"counter": 7, "backup_eligible": true, "backup_state": false}});
        assert_eq!(counter_and_flags(&v), (7, true, false));
        assert_eq!(counter_and_flags(&json!({})), (0, false, false));
    }

    #[test]
    fn client_data_from_a_cross_origin_frame_is_recognised() {
        let cd = |j: &str| cross_origin(j.as_bytes());
        assert!(!cd(r#"{"type":"webauthn.get","crossOrigin":false}"#));
        assert!(!cd(r#"{"type":"webauthn.get"}"#));
        assert!(cd(r#"{"type":"webauthn.get","crossOrigin":true}"#));
        assert!(cd(
            r#"{"type":"webauthn.get","crossOrigin":false,"topOrigin":"https://evil.example"}"#
        ));
        assert!(!cd("not json"), "left to webauthn-rs, which refuses it");
    }

    #[test]
    fn refusals_have_short_reasons() {
        assert_eq!(refusal(&WebauthnError::InvalidRPOrigin), "origin");
        assert_eq!(refusal(&WebauthnError::COSEKeyInvalidType), "algorithm");
        assert_eq!(
            refusal(&WebauthnError::ChallengePersistenceError),
            "invalid"
        );
    }

    #[test]
    fn the_answer_is_the_credential_field_only() {
        let a = vec![
            ("other".to_owned(), "x".to_owned()),
            (FIELD.to_owned(), "{}".to_owned()),
        ];
        assert_eq!(answer_of(&a), "{}");
        assert_eq!(answer_of(&[]), "");
    }
}
