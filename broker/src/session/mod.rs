//! Owns first-party sessions: creating them with a 256-bit random id (stored only as its
//! SHA-256), checking them on every request against idle and absolute timeouts, batching
//! last-seen updates in memory, ending them, and sweeping expired ones (each expiry audited
//! once as `session_ended`, reason `idle_timeout` or `absolute_timeout`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::audit::{Auditor, Event, EventKind};
use crate::clock::{Clock, Entropy, UnixTime};
use crate::config::SessionSettings;
use crate::domain::policy::{OnLimit, SessionLimit};
use crate::domain::{Channel, UserId};
use crate::storage::{CappedInsert, SessionCap, SessionKey, SessionRecord, StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The raw session id as it travels in the cookie. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    pub fn as_cookie_value(&self) -> &str {
        &self.0
    }
    /// A token kept sealed elsewhere (a finished journey's answer), as it was issued.
    pub fn from_kept(value: String) -> Self {
        Self(value)
    }
    /// The storage key of a cookie value, or `None` if it cannot be one of ours.
    pub fn key_of(cookie_value: &str) -> Option<SessionKey> {
        if cookie_value.len() != 43 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(cookie_value).ok()?;
        if raw.len() != 32 {
            return None;
        }
        Some(Sha256::digest(&raw).into())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// What the sign-in flow knows about the session it is about to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: UserId,
    pub channel: Channel,
    pub user_agent: String,
    pub ip: String,
    pub upstream: String,
    pub amr: Vec<String>,
    /// The upstream's authentication context, when it gave one.
    pub upstream_acr: Option<String>,
}

/// The outcome of [`SessionManager::create_within`].
#[derive(Debug)]
pub enum Opened {
    /// Stored; `evicted` were deleted to make room (oldest first).
    Created {
        token: SessionToken,
        record: Box<SessionRecord>,
        evicted: Vec<SessionRecord>,
    },
    /// Refused at the limit: nothing stored. The live sessions in scope, oldest first.
    Full(Vec<SessionRecord>),
}

/// A session that passed its checks on this request.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub record: SessionRecord,
}

impl ActiveSession {
    pub fn idle_expires_at(&self) -> UnixTime {
        self.record
            .last_seen
            .saturating_add(self.record.idle_timeout)
    }
}

pub struct SessionManager {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    /// Per-channel lifetimes for new sessions.
    policy: SessionSettings,
    /// How long last-seen updates may wait in memory; also the sweep's grace for other instances.
    touch_interval: Duration,
    /// Last-seen times not yet written, coalesced per session.
    pending: Mutex<HashMap<SessionKey, UnixTime>>,
    /// Where the end of an expired session is recorded.
    audit: Option<Arc<Auditor>>,
}

/// Expired sessions deleted per sweep query.
const SWEEP_BATCH: i64 = 500;

/// Why a session that is no longer live ended.
fn expiry_reason(record: &SessionRecord, now: UnixTime) -> &'static str {
    if now >= record.expires_at {
        "absolute_timeout"
    } else {
        "idle_timeout"
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl SessionManager {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: &SessionSettings,
    ) -> Self {
        Self {
            store,
            clock,
            entropy,
            policy: settings.clone(),
            touch_interval: settings.touch_interval,
            pending: Mutex::new(HashMap::new()),
            audit: None,
        }
    }

    /// Records the end of each session that expires (found expired, or swept) in `audit`.
    pub fn with_audit(mut self, audit: Arc<Auditor>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Records that `record` ended by expiring (called by whoever deleted it, so once).
    fn expired(&self, record: &SessionRecord, now: UnixTime) {
        if let Some(audit) = &self.audit {
            audit.record(
                Event::new(EventKind::SessionEnded)
                    .user(record.user_id.as_str())
                    .sid(record.sid.as_str())
                    .reason(expiry_reason(record, now)),
            );
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<SessionKey, UnixTime>> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Creates and stores a session; the token goes into the cookie and nowhere else.
    pub fn create(&self, new: NewSession) -> Result<(SessionToken, SessionRecord), SessionError> {
        let (token, record) = self.new_record(new);
        self.store.insert_session(&record)?;
        Ok((token, record))
    }

    /// Creates and stores a session within the user's concurrent-session limit, atomically:
    /// the oldest live sessions in scope are deleted to make room (`EndOldest`; returned, for
    /// the caller to record ended and tell their apps), or nothing is stored (`Refuse`).
    pub fn create_within(
        &self,
        new: NewSession,
        limit: SessionLimit,
        on_limit: OnLimit,
    ) -> Result<Opened, SessionError> {
        let (max, channel) = match limit {
            SessionLimit::None => {
                let (token, record) = self.create(new)?;
                return Ok(Opened::Created {
                    token,
                    record: Box::new(record),
                    evicted: Vec::new(),
                });
            }
            SessionLimit::AllChannels(n) => (n, None),
            SessionLimit::ThisChannel(n) => (n, Some(new.channel)),
        };
        let (token, record) = self.new_record(new);
        let cap = SessionCap {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            channel,
            evict_oldest: on_limit == OnLimit::EndOldest,
            now: record.auth_time,
        };
        Ok(match self.store.insert_session_within(&record, &cap)? {
            CappedInsert::Inserted { evicted } => Opened::Created {
                token,
                record: Box::new(record),
                evicted,
            },
            CappedInsert::Full(live) => Opened::Full(live),
        })
    }

    fn new_record(&self, new: NewSession) -> (SessionToken, SessionRecord) {
        let raw = self.entropy.bytes32();
        let token = SessionToken(URL_SAFE_NO_PAD.encode(raw));
        let now = self.clock.now();
        let policy = *self.policy.channel(new.channel);
        let mut sid = [0u8; 16];
        self.entropy.fill(&mut sid);
        let record = SessionRecord {
            key: Sha256::digest(raw).into(),
            sid: URL_SAFE_NO_PAD.encode(sid),
            user_id: new.user_id,
            channel: new.channel,
            user_agent: truncate(&new.user_agent, 512),
            ip: truncate(&new.ip, 64),
            upstream: new.upstream,
            amr: new.amr,
            auth_time: now,
            last_seen: now,
            idle_timeout: secs(policy.idle_timeout),
            expires_at: now.saturating_add(secs(policy.absolute_timeout)),
            upstream_acr: new.upstream_acr,
        };
        (token, record)
    }

    /// The session behind a cookie value if it is live; records this request as activity.
    /// Expired sessions found here are deleted at once.
    pub fn check(&self, cookie_value: &str) -> Result<Option<ActiveSession>, SessionError> {
        let Some(key) = SessionToken::key_of(cookie_value) else {
            return Ok(None);
        };
        let Some(mut record) = self.store.session(&key)? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let mut pending = self.pending();
        let last_seen = pending
            .get(&key)
            .copied()
            .unwrap_or(record.last_seen)
            .max(record.last_seen);
        if now >= record.expires_at || now.saturating_sub(last_seen) >= record.idle_timeout {
            pending.remove(&key);
            drop(pending);
            if self.store.delete_session(&key)? {
                self.expired(&record, now);
            }
            return Ok(None);
        }
        if now > last_seen {
            pending.insert(key, now);
        }
        record.last_seen = now.max(last_seen);
        Ok(Some(ActiveSession { record }))
    }

    /// Ends the session behind a cookie value (if any) and the refresh tokens issued in it.
    /// Returns the ended session.
    pub fn end(&self, cookie_value: &str) -> Result<Option<SessionRecord>, SessionError> {
        let Some(key) = SessionToken::key_of(cookie_value) else {
            return Ok(None);
        };
        self.pending().remove(&key);
        let Some(record) = self.store.session(&key)? else {
            return Ok(None);
        };
        self.store.delete_session(&key)?;
        self.store.delete_refresh_for_sid(&record.sid)?;
        Ok(Some(record))
    }

    /// Writes the batched last-seen updates. On failure they are kept for the next flush.
    pub fn flush_touches(&self) -> Result<usize, SessionError> {
        let batch: Vec<(SessionKey, UnixTime)> = self.pending().drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.touch_sessions(&batch) {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = self.pending();
                for (k, t) in batch {
                    let slot = pending.entry(k).or_insert(t);
                    *slot = (*slot).max(t);
                }
                Err(e.into())
            }
        }
    }

    /// Flushes, then deletes expired sessions, recording the end of each. Safe to run on every
    /// instance at once (each session is deleted, and its end recorded, by one of them).
    pub fn sweep(&self) -> Result<u64, SessionError> {
        self.flush_touches()?;
        let grace = secs(self.touch_interval).saturating_mul(2);
        let now = self.clock.now();
        let mut swept = 0u64;
        loop {
            let ended = self.store.take_expired_sessions(now, grace, SWEEP_BATCH)?;
            for record in &ended {
                self.expired(record, now);
            }
            swept = swept.saturating_add(ended.len() as u64);
            if ended.len() < usize::try_from(SWEEP_BATCH).unwrap_or(usize::MAX) {
                return Ok(swept);
            }
        }
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub fn touch_interval(&self) -> Duration {
        self.touch_interval
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_that_cannot_be_ours_have_no_key() {
        assert!(SessionToken::key_of("").is_none());
        assert!(SessionToken::key_of("short").is_none());
        assert!(SessionToken::key_of(&"!".repeat(43)).is_none());
        let ok = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(SessionToken::key_of(&ok).is_some());
    }

    #[test]
    fn tokens_are_redacted_in_debug() {
        let t = SessionToken("abc".into());
        assert!(!format!("{t:?}").contains("abc"));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("한국어", 4), "한");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
