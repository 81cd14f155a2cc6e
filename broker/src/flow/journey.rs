//! Owns the server-side record of one sign-in journey (a login transaction, issue #13): created
//! when a journey starts, read and changed only through [`Journeys::update`] (compare-and-swap
//! on its version, retried, dex's `UpdateAuthRequest(id, updater)`), finished at most once. The
//! browser holds only the opaque [`JourneyId`]; the database only its SHA-256, so a database
//! reader cannot resume anyone's journey. What the state holds is the caller's type.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, Entropy, UnixTime};
use crate::storage::{LoginTransactionRow, StorageError, Store};

/// How often [`Journeys::update`] re-reads and retries after losing a race.
const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    /// No such journey (never started, or swept), or the id is malformed.
    #[error("no such sign-in journey")]
    Unknown,
    #[error("the sign-in journey has expired")]
    Expired,
    /// Finished already: a replay of its last step.
    #[error("the sign-in journey is already finished")]
    Finished,
    /// Other writers kept winning (or a finish lost to another finish).
    #[error("the sign-in journey was changed concurrently")]
    Conflict,
    #[error("the stored sign-in journey cannot be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The opaque id a browser holds for its journey: 256 random bits, base64url. Redacted in
/// `Debug`; stored only as its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct JourneyId(String);

impl fmt::Debug for JourneyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JourneyId(<redacted>)")
    }
}

impl JourneyId {
    fn new(entropy: &dyn Entropy) -> Self {
        Self(URL_SAFE_NO_PAD.encode(entropy.bytes32()))
    }

    /// An id as presented by a browser: exactly 43 base64url characters, else `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 43 && URL_SAFE_NO_PAD.decode(raw).is_ok()).then(|| Self(raw.to_owned()))
    }

    /// The value for the browser's cookie.
    pub fn as_cookie_value(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// What the database knows of this id (and what other rows point at it with).
    pub fn key(&self) -> JourneyKey {
        JourneyKey(self.hash())
    }
}

/// The stored form of a [`JourneyId`] (its SHA-256): a row may point at a journey with it, but
/// it opens nothing by itself; [`Journeys::rekey`] gives the browser a fresh id for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JourneyKey(pub [u8; 32]);

/// A journey's state as read, with the version an update must match.
#[derive(Debug, Clone)]
pub struct Loaded<S> {
    pub state: S,
    pub version: i64,
    pub expires_at: UnixTime,
}

/// The store of journeys, with the clock, randomness and lifetime they are made with.
#[derive(Clone)]
pub struct Journeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    ttl_secs: i64,
}

impl Journeys {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        ttl_secs: i64,
    ) -> Self {
        Self {
            store,
            clock,
            entropy,
            ttl_secs,
        }
    }

    fn encode<S: Serialize>(state: &S) -> Result<String, JourneyError> {
        serde_json::to_string(state).map_err(|e| JourneyError::Corrupt(e.to_string()))
    }

    fn decode<S: DeserializeOwned>(row: &LoginTransactionRow) -> Result<S, JourneyError> {
        serde_json::from_str(&row.state).map_err(|e| JourneyError::Corrupt(e.to_string()))
    }

    /// Stores a new journey in `state`; it lives `ttl` from now (each update extends it).
    pub fn start<S: Serialize>(&self, state: &S) -> Result<JourneyId, JourneyError> {
        let id = JourneyId::new(self.entropy.as_ref());
        let now = self.clock.now();
        self.store.insert_login_transaction(&LoginTransactionRow {
            id_hash: id.hash(),
            version: 1,
            state: Self::encode(state)?,
            created_at: now,
            updated_at: now,
            expires_at: now.saturating_add(self.ttl_secs),
            finished_at: None,
        })?;
        Ok(id)
    }

    /// The journey if it is live: not finished, not expired.
    pub fn load<S: DeserializeOwned>(&self, id: &JourneyId) -> Result<Loaded<S>, JourneyError> {
        self.load_key(&id.key())
    }

    /// Like [`Self::load`], for a journey another row points at.
    pub fn load_key<S: DeserializeOwned>(
        &self,
        key: &JourneyKey,
    ) -> Result<Loaded<S>, JourneyError> {
        let row = self
            .store
            .login_transaction(&key.0)?
            .ok_or(JourneyError::Unknown)?;
        if row.finished_at.is_some() {
            return Err(JourneyError::Finished);
        }
        if row.expires_at <= self.clock.now() {
            return Err(JourneyError::Expired);
        }
        Ok(Loaded {
            state: Self::decode(&row)?,
            version: row.version,
            expires_at: row.expires_at,
        })
    }

    /// Reads the live journey, lets `step` change it, and writes it back only if nobody else
    /// wrote in between; on a lost race it reads again and re-runs `step` (so `step` must be a
    /// pure function of the state). An `Err` from `step` writes nothing.
    pub fn update<S, T, E>(
        &self,
        id: &JourneyId,
        mut step: impl FnMut(&mut S) -> Result<T, E>,
    ) -> Result<Result<T, E>, JourneyError>
    where
        S: Serialize + DeserializeOwned,
    {
        for _ in 0..MAX_ATTEMPTS {
            let mut loaded = self.load::<S>(id)?;
            let out = match step(&mut loaded.state) {
                Ok(out) => out,
                Err(e) => return Ok(Err(e)),
            };
            let now = self.clock.now();
            if self.store.update_login_transaction(
                &id.hash(),
                loaded.version,
                &Self::encode(&loaded.state)?,
                now.saturating_add(self.ttl_secs),
                now,
            )? {
                return Ok(Ok(out));
            }
        }
        Err(JourneyError::Conflict)
    }

    /// Writes `state` if the journey is still at `version` (nobody else wrote since it was
    /// read); returns the new version. For steps that did I/O between the read and the write
    /// (and so cannot simply be re-run by [`Self::update`]).
    pub fn save<S: Serialize>(
        &self,
        id: &JourneyId,
        version: i64,
        state: &S,
    ) -> Result<i64, JourneyError> {
        let now = self.clock.now();
        if self.store.update_login_transaction(
            &id.hash(),
            version,
            &Self::encode(state)?,
            now.saturating_add(self.ttl_secs),
            now,
        )? {
            Ok(version.saturating_add(1))
        } else {
            Err(JourneyError::Conflict)
        }
    }

    /// Gives the journey behind `key` a fresh id (the old one stops working), if it is still at
    /// `version`: a journey resumed from a pointer (an upstream's answer) continues under an
    /// id only this answer's browser learns. Returns the new id and version.
    pub fn rekey(&self, key: &JourneyKey, version: i64) -> Result<(JourneyId, i64), JourneyError> {
        let id = JourneyId::new(self.entropy.as_ref());
        if self
            .store
            .rekey_login_transaction(&key.0, version, &id.hash(), self.clock.now())?
        {
            Ok((id, version.saturating_add(1)))
        } else {
            Err(JourneyError::Conflict)
        }
    }

    /// Ends the journey the caller read at `version` (no second read): for exactly one caller,
    /// however many race; the others get [`JourneyError::Finished`] or
    /// [`JourneyError::Conflict`].
    pub fn finish_at(&self, id: &JourneyId, version: i64) -> Result<(), JourneyError> {
        if self
            .store
            .finish_login_transaction(&id.hash(), version, self.clock.now())?
        {
            return Ok(());
        }
        match self.store.login_transaction(&id.hash())? {
            Some(r) if r.finished_at.is_some() => Err(JourneyError::Finished),
            Some(_) => Err(JourneyError::Conflict),
            None => Err(JourneyError::Unknown),
        }
    }

    /// Ends the journey and returns its last state: for exactly one caller, however many race
    /// (the others get [`JourneyError::Finished`] or [`JourneyError::Conflict`]).
    pub fn finish<S: DeserializeOwned>(&self, id: &JourneyId) -> Result<S, JourneyError> {
        let loaded = self.load::<S>(id)?;
        if self
            .store
            .finish_login_transaction(&id.hash(), loaded.version, self.clock.now())?
        {
            Ok(loaded.state)
        } else {
            // Someone finished or changed it in between: tell a replay from a race.
            match self.store.login_transaction(&id.hash())? {
                Some(r) if r.finished_at.is_some() => Err(JourneyError::Finished),
                Some(_) => Err(JourneyError::Conflict),
                None => Err(JourneyError::Unknown),
            }
        }
    }
}
