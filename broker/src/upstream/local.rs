//! Owns local accounts: argon2id password hashing with OWASP parameters, verification with a
//! constant-time failure path for unknown users, and disabled accounts.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;

use super::{Identity, PasswordConnector, UpstreamError};
use crate::clock::Entropy;
use crate::domain::{Email, SecretString};
use crate::storage::Store;

pub const LOCAL_UPSTREAM_ID: &str = "local";

/// OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
fn argon2() -> Result<Argon2<'static>, UpstreamError> {
    let params = Params::new(19 * 1024, 2, 1, None)
        .map_err(|e| UpstreamError::Unavailable(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string with a salt from `entropy`.
pub fn hash_password(
    password: &SecretString,
    entropy: &dyn Entropy,
) -> Result<String, UpstreamError> {
    let mut salt = [0u8; 16];
    entropy.fill(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| UpstreamError::Unavailable(format!("salt: {e}")))?;
    argon2()?
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UpstreamError::Unavailable(format!("hashing: {e}")))
}

fn verify(password: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Verify with the parameters stored in the hash, so older hashes keep working.
    Argon2::default()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok()
}

/// The local-accounts connector.
pub struct LocalAccounts {
    store: Arc<dyn Store>,
    /// A hash of nothing in particular, verified against when the user is unknown so that the
    /// failure takes as long as a wrong password.
    dummy_hash: String,
}

impl LocalAccounts {
    pub fn new(store: Arc<dyn Store>, entropy: &dyn Entropy) -> Result<Self, UpstreamError> {
        let mut filler = [0u8; 24];
        entropy.fill(&mut filler);
        let dummy_hash = hash_password(&SecretString::new(hex::encode(filler)), entropy)?;
        Ok(Self { store, dummy_hash })
    }

    /// Blocking: checks the password against the store. Run it on a blocking thread.
    pub fn authenticate_blocking(
        &self,
        login: &Email,
        password: &SecretString,
    ) -> Result<Identity, UpstreamError> {
        let user = self.store.user_by_email(login)?;
        let Some(user) = user else {
            let _ = verify(password, &self.dummy_hash);
            return Err(UpstreamError::InvalidCredentials);
        };
        let Some(hash) = user.password_hash.as_deref() else {
            let _ = verify(password, &self.dummy_hash);
            return Err(UpstreamError::InvalidCredentials);
        };
        if !verify(password, hash) {
            return Err(UpstreamError::InvalidCredentials);
        }
        // Only after the password proved who they are do we tell them the account is disabled.
        if user.disabled {
            return Err(UpstreamError::AccountDisabled);
        }
        Ok(Identity {
            upstream: LOCAL_UPSTREAM_ID.to_owned(),
            subject: user.id.as_str().to_owned(),
            email: Some(user.email.clone()),
            email_verified: false,
            name: (!user.name.is_empty()).then(|| user.name.clone()),
            groups: Vec::new(),
            amr: vec!["pwd".to_owned()],
            acr: None,
        })
    }
}

#[async_trait]
impl PasswordConnector for Arc<LocalAccounts> {
    async fn authenticate(
        &self,
        login: &Email,
        password: &SecretString,
    ) -> Result<Identity, UpstreamError> {
        let this = Arc::clone(self);
        let (login, password) = (login.clone(), password.clone());
        tokio::task::spawn_blocking(move || this.authenticate_blocking(&login, &password))
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("password check task: {e}")))?
    }
}

/// Account administration used by the CLI.
pub mod admin {
    use super::*;
    use crate::clock::UnixTime;
    use crate::domain::UserId;
    use crate::storage::{StorageError, User};

    #[derive(Debug, thiserror::Error)]
    pub enum AdminError {
        #[error("no user with email {0}")]
        NoSuchUser(String),
        #[error("a user with email {0} already exists")]
        Exists(String),
        #[error("password must be at least 8 characters (the demo account excepted)")]
        WeakPassword,
        #[error(transparent)]
        Storage(#[from] StorageError),
        #[error(transparent)]
        Upstream(#[from] UpstreamError),
        #[error("revoking the user's sessions failed: {0}")]
        Revoke(String),
    }

    fn strong_enough(password: &SecretString) -> Result<(), AdminError> {
        if password.expose().chars().count() < 8 {
            return Err(AdminError::WeakPassword);
        }
        Ok(())
    }

    pub fn add_user(
        store: &dyn Store,
        entropy: &dyn Entropy,
        now: UnixTime,
        email: Email,
        name: String,
        password: &SecretString,
    ) -> Result<User, AdminError> {
        strong_enough(password)?;
        let user = User {
            id: UserId::new_random(entropy),
            email: email.clone(),
            name,
            password_hash: Some(hash_password(password, entropy)?),
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        store.insert_user(&user).map_err(|e| match e {
            StorageError::Conflict(_) => AdminError::Exists(email.to_string()),
            other => other.into(),
        })?;
        Ok(user)
    }

    /// Ends every session and token of a user everywhere (the provider's revoke-all, which also
    /// tells the apps); given to the functions below so that accounts need not know the provider.
    pub type Revoke<'a> = &'a dyn Fn(&UserId, &str) -> Result<u64, AdminError>;

    /// Sets a new password and revokes everything of the user (a security event).
    pub fn set_password(
        store: &dyn Store,
        revoke: Revoke<'_>,
        entropy: &dyn Entropy,
        now: UnixTime,
        email: &Email,
        password: &SecretString,
    ) -> Result<u64, AdminError> {
        strong_enough(password)?;
        let user = store
            .user_by_email(email)?
            .ok_or_else(|| AdminError::NoSuchUser(email.to_string()))?;
        store.set_password_hash(&user.id, &hash_password(password, entropy)?, now)?;
        revoke(&user.id, "password_changed")
    }

    /// Disables (or re-enables) an account; disabling revokes everything of the user.
    pub fn set_disabled(
        store: &dyn Store,
        revoke: Revoke<'_>,
        now: UnixTime,
        email: &Email,
        disabled: bool,
    ) -> Result<u64, AdminError> {
        let user = store
            .user_by_email(email)?
            .ok_or_else(|| AdminError::NoSuchUser(email.to_string()))?;
        store.set_disabled(&user.id, disabled, now)?;
        if disabled {
            revoke(&user.id, "user_disabled")
        } else {
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededEntropy;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let e = SeededEntropy::new(1);
        let pw = SecretString::new("correct horse".into());
        let h = hash_password(&pw, &e).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&pw, &h));
        assert!(!verify(&SecretString::new("wrong".into()), &h));
        assert!(!verify(&pw, "not a phc string"));
    }
}
