//! Owns local accounts: argon2id password hashing with OWASP parameters, verification with a
//! constant-time failure path for unknown users, and disabled accounts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

#[cfg(test)]
fn verify(password: &SecretString, phc: &str) -> bool {
    verify_in(&mut Vec::new(), password, phc)
}

/// Verifies `password` against a PHC string with the parameters stored in it (so older hashes
/// keep working), filling `memory` (grown to the hash's memory cost if smaller) instead of
/// allocating: a thread that keeps its buffer allocates it once.
fn verify_in(memory: &mut Vec<Block>, password: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.expose().as_bytes(),
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
}

/// Runs password checks on a few dedicated threads, each reusing one argon2 block buffer.
///
/// A blocking thread that hashed once keeps its 19 MiB in the allocator (glibc raises its mmap
/// threshold after the first such free, so later buffers come from per-thread arenas that are
/// not trimmed): with checks on the runtime's blocking pool, memory grew by 19 MiB for every
/// thread that ever checked a password. Here it is `threads` buffers, allocated once, and at
/// most `threads` checks run at once; the rest wait in a bounded queue.
pub struct HashPool {
    jobs: std::sync::mpsc::SyncSender<Job>,
    gauge: Arc<Gauge>,
    threads: usize,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Checks waiting for a thread before new ones are refused (`Unavailable`).
const HASH_QUEUE: usize = 1024;

/// How many checks run now, and the most that ever ran at once.
#[derive(Default)]
struct Gauge {
    busy: AtomicUsize,
    peak: AtomicUsize,
}

impl HashPool {
    /// A pool of `threads` (at least one) hashing threads.
    pub fn new(threads: usize) -> Result<Self, UpstreamError> {
        let threads = threads.max(1);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(HASH_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let gauge = Arc::new(Gauge::default());
        for i in 0..threads {
            let (queue, gauge) = (Arc::clone(&queue), Arc::clone(&gauge));
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The pool is gone once every sender is dropped.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let now = gauge.busy.fetch_add(1, Ordering::SeqCst) + 1;
                        gauge.peak.fetch_max(now, Ordering::SeqCst);
                        job(&mut memory);
                        gauge.busy.fetch_sub(1, Ordering::SeqCst);
                    }
                })
                .map_err(|e| UpstreamError::Unavailable(format!("password hashing thread: {e}")))?;
        }
        Ok(Self {
            jobs,
            gauge,
            threads,
        })
    }

    /// One thread per core.
    pub fn per_core() -> Result<Self, UpstreamError> {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The most checks that ran at once since the pool started.
    pub fn peak(&self) -> usize {
        self.gauge.peak.load(Ordering::SeqCst)
    }

    /// Runs `f` on a hashing thread with that thread's block buffer.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> R + Send + 'static,
    ) -> Result<R, UpstreamError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(f(memory));
        });
        self.jobs.try_send(job).map_err(|e| {
            UpstreamError::Unavailable(match e {
                TrySendError::Full(_) => "too many password checks waiting".into(),
                TrySendError::Disconnected(_) => "no password hashing thread".into(),
            })
        })?;
        rx.await
            .map_err(|_| UpstreamError::Unavailable("password check ended early".into()))
    }

    /// Checks `password` against a PHC string on a hashing thread.
    pub async fn verify(&self, password: &SecretString, phc: &str) -> Result<bool, UpstreamError> {
        let (password, phc) = (password.clone(), phc.to_owned());
        self.run(move |memory| verify_in(memory, &password, &phc))
            .await
    }
}

/// The local-accounts connector.
pub struct LocalAccounts {
    store: Arc<dyn Store>,
    /// A hash of nothing in particular, verified against when the user is unknown so that the
    /// failure takes as long as a wrong password.
    dummy_hash: String,
    /// Where passwords are checked.
    pool: HashPool,
}

impl LocalAccounts {
    pub fn new(store: Arc<dyn Store>, entropy: &dyn Entropy) -> Result<Self, UpstreamError> {
        let mut filler = [0u8; 24];
        entropy.fill(&mut filler);
        let dummy_hash = hash_password(&SecretString::new(hex::encode(filler)), entropy)?;
        Ok(Self {
            store,
            dummy_hash,
            pool: HashPool::per_core()?,
        })
    }

    /// The threads that check passwords (for their gauge).
    pub fn pool(&self) -> &HashPool {
        &self.pool
    }

    /// Blocking: checks the password against the store. Run it on a blocking thread; the
    /// connector runs it on the hashing pool instead.
    pub fn authenticate_blocking(
        &self,
        login: &Email,
        password: &SecretString,
    ) -> Result<Identity, UpstreamError> {
        self.authenticate_in(&mut Vec::new(), login, password)
    }

    fn authenticate_in(
        &self,
        memory: &mut Vec<Block>,
        login: &Email,
        password: &SecretString,
    ) -> Result<Identity, UpstreamError> {
        let user = self.store.user_by_email(login)?;
        let Some(user) = user else {
            let _ = verify_in(memory, password, &self.dummy_hash);
            return Err(UpstreamError::InvalidCredentials);
        };
        let Some(hash) = user.password_hash.as_deref() else {
            let _ = verify_in(memory, password, &self.dummy_hash);
            return Err(UpstreamError::InvalidCredentials);
        };
        if !verify_in(memory, password, hash) {
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
            kept: Default::default(),
            amr: vec![crate::domain::auth::AMR_PWD.to_owned()],
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
        // The user lookup runs on the hashing thread too: one hop, and the check stays one unit.
        self.pool
            .run(move |memory| this.authenticate_in(memory, &login, &password))
            .await?
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
            tokens_valid_after: 0,
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
        // A hash with other parameters (an older one) verifies with its own.
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 3, 1, None).unwrap(),
        )
        .hash_password(b"correct horse", &SaltString::encode_b64(&[7; 16]).unwrap())
        .unwrap()
        .to_string();
        assert!(verify(&pw, &old));
        assert!(!verify(&SecretString::new("wrong".into()), &old));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checks_never_run_more_than_the_pool_size_at_once() {
        let e = SeededEntropy::new(2);
        let pw = SecretString::new("correct horse".into());
        let h = hash_password(&pw, &e).unwrap();
        let pool = Arc::new(HashPool::new(2).unwrap());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (pool, h) = (Arc::clone(&pool), h.clone());
            let guess =
                SecretString::new(if i % 2 == 0 { "correct horse" } else { "wrong" }.into());
            tasks.push(tokio::spawn(async move { pool.verify(&guess, &h).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), i % 2 == 0, "check {i}");
        }
        // Eight checks were waiting at once: both threads ran, never a third.
        assert_eq!(pool.peak(), 2);
        assert_eq!(pool.threads(), 2);
    }
}
