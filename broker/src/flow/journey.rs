//! Owns the server-side record of one sign-in journey (a login transaction, issue #13): created
//! when a journey starts, read and changed only through [`Journeys::update`] (compare-and-swap
//! on its version, retried, dex's `UpdateAuthRequest(id, updater)`), finished at most once. The
//! browser holds only the opaque [`JourneyId`]; the database only its SHA-256, so a database
//! reader cannot resume anyone's journey. What the state holds is the caller's type, stored in a
//! versioned envelope ([`FORMAT`]) and sealed (AES-256-GCM under a key derived for this purpose,
//! the row's id hash as associated data): TOTP seeds and upstream ID tokens in flight are not
//! readable from the database, and a sealed state moved to another row does not open.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, Entropy, UnixTime};
use crate::domain::kek::KeyEncryptionKeys;
use crate::storage::{LoginTransactionRow, StorageError, Store};

/// The shape of the stored journey. A row written in another shape (an older release's, or a
/// newer one's during a rolling upgrade) is refused as [`JourneyError::Outdated`]: the sign-in
/// starts again with a clear page instead of a 500. Raise it whenever the state's JSON changes
/// incompatibly.
pub const FORMAT: u32 = 3;

/// Prefix of a sealed state (base64url of `nonce || ciphertext || tag` follows).
const SEALED_PREFIX: &str = "s1.";

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
    /// Written in another shape, or under another key: the sign-in must start again.
    #[error("the stored sign-in journey is from another version")]
    Outdated,
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
    /// When the journey started (its absolute lifetime counts from here).
    pub created_at: UnixTime,
}

/// The store of journeys, with the clock, randomness and lifetime they are made with.
#[derive(Clone)]
pub struct Journeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    ttl_secs: i64,
    /// However often it is extended, a journey ends this long after it started.
    max_age_secs: i64,
    seal: Arc<KeyEncryptionKeys>,
}

/// The stored envelope: the shape's version and the caller's state.
#[derive(Serialize)]
struct Envelope<'a, S> {
    v: u32,
    s: &'a S,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn<S> {
    v: u32,
    s: S,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Journeys {
    /// Journeys that live `ttl_secs` after their last step (and at most `max(4 * ttl, 1 h)`
    /// after they started; see [`Journeys::with_max_age`]), their state sealed under `seal`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        ttl_secs: i64,
        seal: impl Into<KeyEncryptionKeys>,
    ) -> Self {
        Self {
            store,
            clock,
            entropy,
            ttl_secs,
            max_age_secs: ttl_secs.saturating_mul(4).max(3600),
            seal: Arc::new(seal.into()),
        }
    }

    /// The absolute lifetime: a journey that keeps being stepped still ends this long after it
    /// started (never less than its sliding lifetime).
    pub fn with_max_age(mut self, secs: i64) -> Self {
        self.max_age_secs = secs.max(self.ttl_secs);
        self
    }

    /// When a journey read now expires: its sliding lifetime, capped by its absolute one.
    fn expiry(&self, created_at: UnixTime, now: UnixTime) -> UnixTime {
        now.saturating_add(self.ttl_secs)
            .min(created_at.saturating_add(self.max_age_secs))
    }

    fn encode<S: Serialize>(&self, id_hash: &[u8; 32], state: &S) -> Result<String, JourneyError> {
        let json = serde_json::to_vec(&Envelope {
            v: FORMAT,
            s: state,
        })
        .map_err(|e| JourneyError::Corrupt(e.to_string()))?;
        let sealed = self
            .seal
            .seal(&hex(id_hash), &json, self.entropy.as_ref())
            .map_err(|e| JourneyError::Corrupt(e.to_string()))?;
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// The stored form of `json` (an envelope's bytes, as [`FORMAT`] writes it) for row `id`:
    /// sealed as the broker seals it. For the fuzz harness, which feeds the decoder arbitrary
    /// envelopes.
    #[doc(hidden)]
    pub fn seal_raw(&self, id: &JourneyId, json: &[u8]) -> Result<String, JourneyError> {
        let sealed = self
            .seal
            .seal(&hex(&id.hash()), json, self.entropy.as_ref())
            .map_err(|e| JourneyError::Corrupt(e.to_string()))?;
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    fn decode<S: DeserializeOwned>(&self, row: &LoginTransactionRow) -> Result<S, JourneyError> {
        // Anything that is not a sealed envelope of this shape (a row of an older release, one
        // sealed under a rotated key) is outdated: the sign-in starts again.
        let sealed = row
            .state
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .ok_or(JourneyError::Outdated)?;
        let json = self
            .seal
            .open_at(&hex(&row.id_hash), &sealed, self.clock.now())
            .map_err(|_| JourneyError::Outdated)?;
        let version: serde_json::Value =
            serde_json::from_slice(&json).map_err(|_| JourneyError::Outdated)?;
        if version.get("v").and_then(serde_json::Value::as_u64) != Some(u64::from(FORMAT)) {
            return Err(JourneyError::Outdated);
        }
        let env: EnvelopeIn<S> =
            serde_json::from_value(version).map_err(|_| JourneyError::Outdated)?;
        debug_assert_eq!(env.v, FORMAT);
        Ok(env.s)
    }

    /// Stores a new journey in `state`; it lives `ttl` from now (each update extends it).
    pub fn start<S: Serialize>(&self, state: &S) -> Result<JourneyId, JourneyError> {
        self.start_bound(state, None)
    }

    /// Starts a journey that belongs to the browser whose binding cookie hashes (SHA-256) to
    /// `binding_hash`: [`Journeys::end_browser`] ends it at sign-out.
    pub fn start_bound<S: Serialize>(
        &self,
        state: &S,
        binding_hash: Option<[u8; 32]>,
    ) -> Result<JourneyId, JourneyError> {
        let id = JourneyId::new(self.entropy.as_ref());
        let now = self.clock.now();
        self.store.insert_login_transaction(&LoginTransactionRow {
            id_hash: id.hash(),
            version: 1,
            state: self.encode(&id.hash(), state)?,
            created_at: now,
            updated_at: now,
            expires_at: self.expiry(now, now),
            finished_at: None,
            binding_hash,
        })?;
        Ok(id)
    }

    /// Finishes every live journey of the browser whose binding cookie hashes to `binding_hash`
    /// (sign-out): a sign-in started before cannot open a session after. Returns how many.
    pub fn end_browser(&self, binding_hash: &[u8; 32]) -> Result<usize, JourneyError> {
        Ok(self
            .store
            .finish_login_transactions_of(binding_hash, self.clock.now())?)
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
        let now = self.clock.now();
        if row.expires_at <= now || row.created_at.saturating_add(self.max_age_secs) <= now {
            return Err(JourneyError::Expired);
        }
        Ok(Loaded {
            state: self.decode(&row)?,
            version: row.version,
            expires_at: row.expires_at,
            created_at: row.created_at,
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
                &self.encode(&id.hash(), &loaded.state)?,
                self.expiry(loaded.created_at, now),
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
        loaded: &Loaded<S>,
    ) -> Result<i64, JourneyError> {
        let now = self.clock.now();
        if self.store.update_login_transaction(
            &id.hash(),
            loaded.version,
            &self.encode(&id.hash(), &loaded.state)?,
            self.expiry(loaded.created_at, now),
            now,
        )? {
            let version = loaded.version;
            Ok(version.saturating_add(1))
        } else {
            Err(JourneyError::Conflict)
        }
    }

    /// Gives the journey behind `key` a fresh id (the old one stops working), if it is still at
    /// `version`: a journey resumed from a pointer (an upstream's answer) continues under an
    /// id only this answer's browser learns. Returns the new id and version.
    pub fn rekey<S: Serialize>(
        &self,
        key: &JourneyKey,
        loaded: &Loaded<S>,
    ) -> Result<(JourneyId, i64), JourneyError> {
        let id = JourneyId::new(self.entropy.as_ref());
        // The state is sealed to its row's id: sealed again for the new one, in the same write.
        let state = self.encode(&id.hash(), &loaded.state)?;
        let version = loaded.version;
        if self.store.rekey_login_transaction(
            &key.0,
            version,
            &id.hash(),
            &state,
            self.clock.now(),
        )? {
            Ok((id, version.saturating_add(1)))
        } else {
            Err(JourneyError::Conflict)
        }
    }

    /// Ends the journey as read (`loaded.version`), storing its final state (what the journey
    /// answered, so that a second submit of the same last step gets the same answer): for
    /// exactly one caller, however many race; the others get [`JourneyError::Finished`] or
    /// [`JourneyError::Conflict`].
    pub fn finish_with<S: Serialize>(
        &self,
        id: &JourneyId,
        loaded: &Loaded<S>,
    ) -> Result<(), JourneyError> {
        let state = self.encode(&id.hash(), &loaded.state)?;
        if self.store.finish_login_transaction(
            &id.hash(),
            loaded.version,
            Some(&state),
            self.clock.now(),
        )? {
            return Ok(());
        }
        match self.store.login_transaction(&id.hash())? {
            Some(r) if r.finished_at.is_some() => Err(JourneyError::Finished),
            Some(_) => Err(JourneyError::Conflict),
            None => Err(JourneyError::Unknown),
        }
    }

    /// The final state of a finished journey that has not expired (`None`: not finished, gone,
    /// expired or unreadable).
    pub fn finished<S: DeserializeOwned>(&self, id: &JourneyId) -> Result<Option<S>, JourneyError> {
        let Some(row) = self.store.login_transaction(&id.hash())? else {
            return Ok(None);
        };
        if row.finished_at.is_none() || row.expires_at <= self.clock.now() {
            return Ok(None);
        }
        Ok(self.decode(&row).ok())
    }

    /// Ends the journey the caller read at `version` (no second read): for exactly one caller,
    /// however many race; the others get [`JourneyError::Finished`] or
    /// [`JourneyError::Conflict`].
    pub fn finish_at(&self, id: &JourneyId, version: i64) -> Result<(), JourneyError> {
        if self
            .store
            .finish_login_transaction(&id.hash(), version, None, self.clock.now())?
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
        if self.store.finish_login_transaction(
            &id.hash(),
            loaded.version,
            None,
            self.clock.now(),
        )? {
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
