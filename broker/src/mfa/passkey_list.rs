//! Owns a user's passkeys one by one, as the account page, the admin API and the CLI see them
//! (issue #19 item 5): listed (name, added, last used, synced or bound to one device), renamed,
//! removed one at a time. Removing the last one also removes the factor's enrolment record; every
//! removal is audited (`mfa_removed`, `passkey`, with who did it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::MfaError;
use super::passkey::ID;
use crate::audit::{Auditor, Event, EventKind};
use crate::clock::UnixTime;
use crate::domain::UserId;
use crate::storage::Store;

/// The longest name a passkey may have.
pub const MAX_NAME: usize = 64;

/// One passkey of a user, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyInfo {
    /// The credential id, base64url: how the admin API and the CLI name it.
    pub id: String,
    pub name: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    /// May be synced to other devices (a passkey in a password manager), by the authenticator's
    /// own flags (WebAuthn L3 §6.1, BE and BS).
    pub backup_eligible: bool,
    pub backed_up: bool,
    /// The hardware model it was attested as at registration (`[[mfa.passkey.hardware]]`);
    /// none for any other passkey.
    pub authenticator: Option<String>,
}

/// What removing one came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// Removed; this many passkeys are left.
    Left(usize),
    /// The user has no passkey with that id.
    NotFound,
}

/// A passkey name as typed: trimmed, 1 to [`MAX_NAME`] characters, no control characters and
/// no bidirectional overrides (a name that reads differently than it is stored).
pub fn parse_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let bidi = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    (!name.is_empty()
        && name.chars().count() <= MAX_NAME
        && !name.chars().any(|c| c.is_control() || bidi(c)))
    .then(|| name.to_owned())
}

fn credential_id(id: &str) -> Option<Vec<u8>> {
    (id.len() <= 1400)
        .then(|| URL_SAFE_NO_PAD.decode(id).ok())
        .flatten()
}

/// The user's passkeys, oldest first. Blocking.
pub fn list(store: &dyn Store, user: &UserId) -> Result<Vec<PasskeyInfo>, MfaError> {
    Ok(store
        .webauthn_credentials(user)?
        .into_iter()
        .map(|c| PasskeyInfo {
            id: URL_SAFE_NO_PAD.encode(&c.credential_id),
            name: c.name,
            created_at: c.created_at,
            last_used_at: c.last_used_at,
            backup_eligible: c.backup_eligible,
            backed_up: c.backup_state,
            authenticator: c.attested.map(|m| m.name),
        })
        .collect())
}

/// Renames one of the user's passkeys (`name` already parsed); whether it was theirs. Blocking.
pub fn rename(store: &dyn Store, user: &UserId, id: &str, name: &str) -> Result<bool, MfaError> {
    let Some(raw) = credential_id(id) else {
        return Ok(false);
    };
    Ok(store.rename_webauthn_credential(user, &raw, name)?)
}

/// Removes one of the user's passkeys; the last one takes the factor's enrolment record with
/// it. `actor` says who asked (`user`, `cli`, `admin:<client>`). Blocking.
pub fn remove(
    store: &dyn Store,
    audit: &Auditor,
    user: &UserId,
    id: &str,
    actor: &str,
) -> Result<Removed, MfaError> {
    let Some(raw) = credential_id(id) else {
        return Ok(Removed::NotFound);
    };
    let Some(left) = store.delete_webauthn_credential(user, &raw)? else {
        return Ok(Removed::NotFound);
    };
    if left == 0 {
        store.delete_mfa_enrollment(user, ID)?;
    }
    audit.record(
        Event::new(EventKind::MfaRemoved)
            .user(user.as_str())
            .reason(format!("{ID} by {actor}")),
    );
    Ok(Removed::Left(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(parse_name("  Work laptop "), Some("Work laptop".to_owned()));
        assert_eq!(
            parse_name("업무용 노트북"),
            Some("업무용 노트북".to_owned())
        );
        assert_eq!(parse_name("   "), None);
        assert_eq!(parse_name(&"a".repeat(MAX_NAME)).map(|n| n.len()), Some(64));
        assert_eq!(parse_name(&"a".repeat(MAX_NAME + 1)), None);
        assert_eq!(parse_name("evil\u{202e}eman"), None);
        assert_eq!(parse_name("line\nbreak"), None);
    }

    #[test]
    fn credential_ids_are_base64url_and_bounded() {
        assert_eq!(credential_id("AQID"), Some(vec![1, 2, 3]));
        assert_eq!(credential_id("not base64!"), None);
        assert_eq!(credential_id(&"A".repeat(2000)), None);
    }
}
