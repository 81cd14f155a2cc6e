//! Owns the hardware authenticators the operator trusts by attestation
//! (`[[mfa.passkey.hardware]]`, issue #19 item 4): which model a new passkey's attestation
//! proves (checked once, at registration, against the vendors' roots with webauthn-rs), and
//! which key-possession method a stored passkey proves now: `hwk` for a model still listed,
//! `swk` for any other. Without a list no attestation is asked and the method is the
//! authenticator's own word: `swk` when it says the key may be synced (backup eligible), else
//! `hwk`.

use std::collections::BTreeMap;

use serde_json::Value;
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestationMetadata, ParsedAttestation, Uuid,
};
use webauthn_rs_core::attestation::verify_attestation_ca_chain;

use crate::config::mfa::HardwareKey;
use crate::domain::auth::{AMR_HWK, AMR_SWK};
use crate::storage::{AttestedModel, WebAuthnCredential};

/// The trusted hardware models.
pub struct Hardware {
    roots: AttestationCaList,
    /// AAGUID (lower-case, hyphenated) to the model's name.
    names: BTreeMap<String, String>,
}

impl Hardware {
    /// The list `[mfa.passkey]` names (each root already read and checked by the config).
    pub fn new(keys: &[HardwareKey]) -> Result<Self, String> {
        let mut builder = AttestationCaListBuilder::new();
        let mut names = BTreeMap::new();
        for k in keys {
            for a in &k.aaguids {
                let aaguid = Uuid::parse_str(a).map_err(|e| format!("{a}: {e}"))?;
                builder
                    .insert_device_pem(&k.ca_pem, aaguid, k.name.clone(), BTreeMap::new())
                    .map_err(|e| format!("{}: {e}", k.ca_file.display()))?;
                names.insert(aaguid.hyphenated().to_string(), k.name.clone());
            }
        }
        Ok(Self {
            roots: builder.build(),
            names,
        })
    }

    /// Whether any model is listed (then registrations ask for attestation).
    pub fn listed(&self) -> bool {
        !self.names.is_empty()
    }

    /// The listed model a just-registered passkey (webauthn-rs's serialised credential, whose
    /// attestation statement webauthn-rs has verified) is attested as: its certificate chain
    /// ends at a listed root that vouches for its AAGUID. Self, `none` and unlisted attestation:
    /// none.
    pub fn attested(&self, passkey: &Value) -> Option<AttestedModel> {
        if !self.listed() {
            return None;
        }
        let attestation = passkey.get("cred")?.get("attestation")?.clone();
        let parsed: ParsedAttestation = serde_json::from_value(attestation).ok()?;
        let aaguid = match parsed.metadata {
            AttestationMetadata::Packed { aaguid } | AttestationMetadata::Tpm { aaguid, .. } => {
                aaguid
            }
            _ => return None,
        };
        let root = verify_attestation_ca_chain(&parsed.data, &self.roots, false).ok()??;
        if !root.aaguids().contains_key(&aaguid) {
            return None;
        }
        let key = aaguid.hyphenated().to_string();
        let name = self.names.get(&key)?.clone();
        Some(AttestedModel { aaguid: key, name })
    }

    /// Whether a stored passkey counts as a trusted hardware key now (its model still listed).
    pub fn trusted(&self, credential: &WebAuthnCredential) -> bool {
        credential
            .attested
            .as_ref()
            .is_some_and(|m| self.names.contains_key(&m.aaguid))
    }

    /// The key-possession method (RFC 8176) a pass with this passkey proves.
    pub fn method(&self, credential: &WebAuthnCredential) -> &'static str {
        let hardware = if self.listed() {
            self.trusted(credential)
        } else {
            !credential.backup_eligible
        };
        if hardware { AMR_HWK } else { AMR_SWK }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(backup_eligible: bool, attested: Option<&str>) -> WebAuthnCredential {
        WebAuthnCredential {
            credential_id: vec![1],
            passkey: "{}".into(),
            name: "k".into(),
            created_at: 0,
            last_used_at: None,
            sign_count: 0,
            backup_eligible,
            backup_state: false,
            attested: attested.map(|a| AttestedModel {
                aaguid: a.into(),
                name: "Key".into(),
            }),
        }
    }

    #[test]
    fn without_a_list_the_authenticator_s_flag_decides_and_with_one_only_attestation_does() {
        let none = Hardware::new(&[]).unwrap();
        assert!(!none.listed());
        assert_eq!(none.method(&row(false, None)), "hwk");
        assert_eq!(none.method(&row(true, None)), "swk");
        assert!(none.attested(&serde_json::json!({"cred": {}})).is_none());

        let aaguid = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
        let listed = Hardware {
            roots: AttestationCaListBuilder::new().build(),
            names: BTreeMap::from([(aaguid.to_owned(), "Key".to_owned())]),
        };
        assert!(listed.listed());
        // A device-bound key that was not attested as a listed model is not a hardware key.
        assert_eq!(listed.method(&row(false, None)), "swk");
        assert_eq!(listed.method(&row(false, Some(aaguid))), "hwk");
        // A model taken off the list no longer counts.
        assert_eq!(
            listed.method(&row(false, Some("ee882879-721c-4913-9775-3dfcce97072a"))),
            "swk"
        );
        // An attestation that is not there, or not a chain, names no model.
        assert!(listed.attested(&serde_json::json!({"cred": {}})).is_none());
        assert!(listed.attested(&serde_json::json!({})).is_none());
    }
}
