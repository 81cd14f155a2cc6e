//! Owns `[mfa.passkey]`: whether passkeys and security keys are offered, and the hardware
//! authenticators the operator trusts by attestation (`[[mfa.passkey.hardware]]`, issue #19
//! item 4): a vendor's attestation root and the models (AAGUIDs) it vouches for. A passkey
//! attested as one of them at registration proves `hwk`; every other one proves `swk`; and a
//! relying party with `mfa = "hardware_key"` accepts only the first kind.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[mfa.passkey]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeySettings {
    pub enabled: bool,
    /// `[[mfa.passkey.hardware]]`: the trusted hardware models. Empty: no attestation is asked,
    /// and a key's `hwk` or `swk` is the authenticator's own word (its backup-eligible flag).
    pub hardware: Vec<HardwareKey>,
}

/// `[[mfa.passkey.hardware]]`: models one vendor root vouches for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareKey {
    /// Shown on the account page and in the admin API (`YubiKey 5 Series`).
    pub name: String,
    /// The models' AAGUIDs (`cb69481e-8ff7-4039-93ec-0a2729a154a8`).
    pub aaguids: Vec<String>,
    /// The vendor's attestation root certificate (PEM).
    pub ca_file: PathBuf,
    /// The root as read at validation.
    #[serde(skip)]
    pub ca_pem: Vec<u8>,
}

/// The longest model name.
const MAX_NAME: usize = 64;

impl PasskeySettings {
    /// Validates the hardware list and reads each root; `invalid(key, message)` names the key.
    pub fn validate<E>(mut self, invalid: impl Fn(&str, String) -> E) -> Result<Self, E> {
        for (i, h) in self.hardware.iter_mut().enumerate() {
            let key = |k: &str| format!("mfa.passkey.hardware[{i}].{k}");
            let name = h.name.trim();
            if name.is_empty()
                || name.chars().count() > MAX_NAME
                || name.chars().any(char::is_control)
            {
                return Err(invalid(
                    &key("name"),
                    format!("must be 1-{MAX_NAME} printable characters"),
                ));
            }
            h.name = name.to_owned();
            if h.aaguids.is_empty() {
                return Err(invalid(
                    &key("aaguids"),
                    "must list at least one AAGUID".into(),
                ));
            }
            for a in &mut h.aaguids {
                let parsed = uuid::Uuid::parse_str(a.trim())
                    .map_err(|e| invalid(&key("aaguids"), format!("`{a}` is not a UUID: {e}")))?;
                if parsed.is_nil() {
                    // What a client sends in place of the model under `none` attestation.
                    return Err(invalid(
                        &key("aaguids"),
                        "the all-zero AAGUID names no model".into(),
                    ));
                }
                *a = parsed.hyphenated().to_string();
            }
            let pem = std::fs::read(&h.ca_file).map_err(|e| {
                invalid(
                    &key("ca_file"),
                    format!("cannot read {}: {e}", h.ca_file.display()),
                )
            })?;
            openssl::x509::X509::from_pem(&pem).map_err(|e| {
                invalid(
                    &key("ca_file"),
                    format!("{} is not a PEM certificate: {e}", h.ca_file.display()),
                )
            })?;
            h.ca_pem = pem;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> Result<PasskeySettings, String> {
        let raw: PasskeySettings = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        raw.validate(|k, m| format!("{k}: {m}"))
    }

    #[test]
    fn the_hardware_list_is_checked_and_its_roots_read() {
        assert!(check("enabled = true").unwrap().hardware.is_empty());
        let dir = std::env::temp_dir().join(format!("concierge-hw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("root.pem");
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let key = openssl::pkey::PKey::from_ec_key(key).unwrap();
        let cert = crate::domain::test_certs::self_signed(&key);
        std::fs::write(&ca, cert.to_pem().unwrap()).unwrap();
        let ok = check(&format!(
            "[[hardware]]\nname = \" Key \"\naaguids = [\"CB69481E-8FF7-4039-93EC-0A2729A154A8\"]\nca_file = {:?}",
            ca.display().to_string()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.hardware[0].name, "Key");
        assert_eq!(
            ok.hardware[0].aaguids,
            ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]
        );
        assert!(!ok.hardware[0].ca_pem.is_empty());
        let bad = |name: &str, aaguids: &str, file: &str| {
            check(&format!(
                "[[hardware]]\nname = {name:?}\naaguids = {aaguids}\nca_file = {file:?}"
            ))
            .unwrap_err()
        };
        let f = ca.display().to_string();
        assert!(
            bad("", "[\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]", &f).contains("hardware[0].name")
        );
        assert!(bad("K", "[]", &f).contains("aaguids"));
        assert!(bad("K", "[\"not-a-uuid\"]", &f).contains("not a UUID"));
        assert!(bad("K", "[\"00000000-0000-0000-0000-000000000000\"]", &f).contains("all-zero"));
        assert!(
            bad(
                "K",
                "[\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]",
                "/nonexistent.pem"
            )
            .contains("cannot read")
        );
        std::fs::write(dir.join("junk.pem"), "junk").unwrap();
        let junk = dir.join("junk.pem").display().to_string();
        assert!(
            bad("K", "[\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]", &junk).contains("not a PEM")
        );
        assert!(
            check("[[hardware]]\nname = \"K\"\naaguids = []\nca_file = \"x\"\nextra = 1").is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
