//! WebAuthn credentials (passkeys, security keys; issue #19): registered once per credential id
//! (to one user), listed per user, used only with a counter that moves forward (a counter that
//! goes back may be a cloned authenticator and writes nothing), removed with the factor, the
//! attested hardware model kept as registered; on both backends.

use concierge::domain::UserId;
use concierge::storage::{AttestedModel, CredentialUse, MfaStore, Store, WebAuthnCredential};

use crate::support::Backend;
use crate::{user, with_store};

fn credential(id: u8, created_at: i64, sign_count: i64) -> WebAuthnCredential {
    WebAuthnCredential {
        credential_id: vec![id; 16],
        passkey: format!("{{\"cred\":{id}}}"),
        name: format!("key {id}"),
        created_at,
        last_used_at: None,
        sign_count,
        backup_eligible: true,
        backup_state: false,
        // One attested hardware model among them: the model is stored and read back as it was.
        attested: (id == 2).then(|| AttestedModel {
            aaguid: "cb69481e-8ff7-4039-93ec-0a2729a154a8".into(),
            name: "YubiKey 5 Series".into(),
        }),
    }
}

fn credentials_are_registered_once_and_used_forward_only(b: Backend) {
    with_store(b, |s| {
        s.insert_user(&user("u1", "u1@example.com")).unwrap();
        s.insert_user(&user("u2", "u2@example.com")).unwrap();
        let (u1, u2) = (
            UserId::from_stored("u1".into()),
            UserId::from_stored("u2".into()),
        );
        assert!(s.webauthn_credentials(&u1).unwrap().is_empty());
        assert!(
            s.insert_webauthn_credential(&u1, &credential(2, 20, 5))
                .unwrap()
        );
        assert!(
            s.insert_webauthn_credential(&u1, &credential(1, 10, 0))
                .unwrap()
        );
        assert!(
            !s.insert_webauthn_credential(&u2, &credential(1, 30, 0))
                .unwrap(),
            "a credential id belongs to one user"
        );
        assert_eq!(
            s.webauthn_credential_owner(&[1; 16]).unwrap(),
            Some(u1.clone())
        );
        assert_eq!(
            s.webauthn_credential_owner(&[2; 16]).unwrap(),
            Some(u1.clone())
        );
        assert_eq!(s.webauthn_credential_owner(&[9; 16]).unwrap(), None);
        // Renaming and removing one touch only the owner's credential.
        assert!(
            s.rename_webauthn_credential(&u1, &[1; 16], "Laptop")
                .unwrap()
        );
        assert!(!s.rename_webauthn_credential(&u2, &[1; 16], "Mine").unwrap());
        assert_eq!(s.delete_webauthn_credential(&u2, &[1; 16]).unwrap(), None);
        assert!(
            s.insert_webauthn_credential(&u1, &credential(3, 30, 0))
                .unwrap()
        );
        assert_eq!(
            s.delete_webauthn_credential(&u1, &[3; 16]).unwrap(),
            Some(2)
        );
        assert_eq!(s.delete_webauthn_credential(&u1, &[3; 16]).unwrap(), None);
        assert_eq!(s.webauthn_credential_owner(&[3; 16]).unwrap(), None);
        let listed = s.webauthn_credentials(&u1).unwrap();
        let mut renamed = credential(1, 10, 0);
        renamed.name = "Laptop".into();
        assert_eq!(listed, vec![renamed, credential(2, 20, 5)]);
        assert!(s.webauthn_credentials(&u2).unwrap().is_empty());

        // Forward: recorded, with the new serialised credential and flags.
        assert_eq!(
            s.use_webauthn_credential(&u1, &[2; 16], "{\"cred\":\"new\"}", 6, true, 100)
                .unwrap(),
            CredentialUse::Recorded
        );
        let used = &s.webauthn_credentials(&u1).unwrap()[1];
        assert_eq!(
            (used.sign_count, used.backup_state, used.last_used_at),
            (6, true, Some(100))
        );
        assert_eq!(used.passkey, "{\"cred\":\"new\"}");
        // The same or a lower counter: refused, nothing written.
        for count in [6, 3, 0] {
            assert_eq!(
                s.use_webauthn_credential(&u1, &[2; 16], "{}", count, false, 200)
                    .unwrap(),
                CredentialUse::CounterRegressed,
                "counter {count}"
            );
        }
        assert_eq!(s.webauthn_credentials(&u1).unwrap()[1].sign_count, 6);
        assert_eq!(
            s.webauthn_credentials(&u1).unwrap()[1].last_used_at,
            Some(100)
        );
        // No counter at all (always 0): every use is recorded.
        for at in [300, 301] {
            assert_eq!(
                s.use_webauthn_credential(&u1, &[1; 16], "{}", 0, false, at)
                    .unwrap(),
                CredentialUse::Recorded
            );
        }
        // A credential of someone else, or none.
        assert_eq!(
            s.use_webauthn_credential(&u2, &[1; 16], "{}", 9, false, 400)
                .unwrap(),
            CredentialUse::Unknown
        );
        assert_eq!(
            s.use_webauthn_credential(&u1, &[9; 16], "{}", 9, false, 400)
                .unwrap(),
            CredentialUse::Unknown
        );

        assert_eq!(s.delete_webauthn_credentials(&u1).unwrap(), 2);
        assert_eq!(s.delete_webauthn_credentials(&u1).unwrap(), 0);
        assert!(s.webauthn_credentials(&u1).unwrap().is_empty());
        // Freed ids can be registered again.
        assert!(
            s.insert_webauthn_credential(&u2, &credential(1, 30, 0))
                .unwrap()
        );
    });
}

crate::per_backend!(credentials_are_registered_once_and_used_forward_only,);
