//! Owns the audit trail: the kinds of auth event, and recording each one three ways: a
//! structured log line (target `audit`) at once, a Prometheus counter per kind, and a row in
//! the audit table, written in batches by a background task (ADR 6). Also retention.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::clock::{Clock, UnixTime};
use crate::storage::{AuditRecord, StorageError, Store};

/// The kinds of auth event. The names are stable: they are the `kind` column, the `kind`
/// label of `concierge_audit_events_total` and the `kind` filter of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    LoginSucceeded,
    LoginFailed,
    SessionCreated,
    SessionEnded,
    TokenIssued,
    TokenRefreshed,
    TokenRevoked,
    RefreshReuseDetected,
    CodeReplayed,
    UserRevoked,
    RateLimited,
    LockedOut,
    AdminAction,
    /// A factor was set up (reason: the plugin id).
    MfaEnrolled,
    /// A challenge was started (code sent, page shown).
    MfaChallenged,
    MfaSucceeded,
    /// A factor was removed by its user (reason: the plugin id).
    MfaRemoved,
    /// The user replaced their recovery codes with new ones (the old ones stop working).
    RecoveryCodesRenewed,
    /// A wrong, expired or reused answer, or a plugin failure (reason: `plugin:why`).
    MfaFailed,
    MfaLockedOut,
    /// A plugin was loaded, reloaded or refused (reason: `plugin:outcome`).
    PluginReloaded,
    /// A plugin's outbound request through the `http` capability (reason: `plugin METHOD
    /// origin status|refused|too_large|timeout|failed duration`; never bodies or secrets).
    PluginHttp,
    /// The database stopped answering: recorded once per outage (by the first request answered
    /// 503 because of it), written when the database is back.
    DatabaseUnavailable,
}

impl EventKind {
    pub const ALL: [EventKind; 23] = [
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::SessionCreated,
        Self::SessionEnded,
        Self::TokenIssued,
        Self::TokenRefreshed,
        Self::TokenRevoked,
        Self::RefreshReuseDetected,
        Self::CodeReplayed,
        Self::UserRevoked,
        Self::RateLimited,
        Self::LockedOut,
        Self::AdminAction,
        Self::MfaEnrolled,
        Self::MfaChallenged,
        Self::MfaSucceeded,
        Self::MfaRemoved,
        Self::RecoveryCodesRenewed,
        Self::MfaFailed,
        Self::MfaLockedOut,
        Self::PluginReloaded,
        Self::PluginHttp,
        Self::DatabaseUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::SessionCreated => "session_created",
            Self::SessionEnded => "session_ended",
            Self::TokenIssued => "token_issued",
            Self::TokenRefreshed => "token_refreshed",
            Self::TokenRevoked => "token_revoked",
            Self::RefreshReuseDetected => "refresh_reuse_detected",
            Self::CodeReplayed => "code_replayed",
            Self::UserRevoked => "user_revoked",
            Self::RateLimited => "rate_limited",
            Self::LockedOut => "locked_out",
            Self::AdminAction => "admin_action",
            Self::MfaEnrolled => "mfa_enrolled",
            Self::MfaChallenged => "mfa_challenged",
            Self::MfaSucceeded => "mfa_succeeded",
            Self::MfaRemoved => "mfa_removed",
            Self::RecoveryCodesRenewed => "recovery_codes_renewed",
            Self::MfaFailed => "mfa_failed",
            Self::MfaLockedOut => "mfa_locked_out",
            Self::PluginReloaded => "plugin_reloaded",
            Self::PluginHttp => "plugin_http",
            Self::DatabaseUnavailable => "database_unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One auth event, built where it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub sid: Option<String>,
    pub ip: Option<String>,
    pub upstream: Option<String>,
    /// Why (a failure reason, why a session ended, which admin action ...): a short code.
    pub reason: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            user_id: None,
            client_id: None,
            sid: None,
            ip: None,
            upstream: None,
            reason: None,
        }
    }
    pub fn user(mut self, v: impl Into<String>) -> Self {
        self.user_id = Some(v.into());
        self
    }
    pub fn client(mut self, v: impl Into<String>) -> Self {
        self.client_id = Some(v.into());
        self
    }
    pub fn sid(mut self, v: impl Into<String>) -> Self {
        self.sid = Some(v.into());
        self
    }
    pub fn ip(mut self, v: impl Into<String>) -> Self {
        self.ip = Some(v.into());
        self
    }
    pub fn upstream(mut self, v: impl Into<String>) -> Self {
        self.upstream = Some(v.into());
        self
    }
    pub fn reason(mut self, v: impl Into<String>) -> Self {
        self.reason = Some(v.into());
        self
    }
}

/// Events waiting for the table beyond this are dropped (and counted) rather than letting a
/// database outage exhaust memory; the log line of each was written anyway.
const MAX_PENDING: usize = 100_000;

pub struct Auditor {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    pending: Mutex<Vec<AuditRecord>>,
    /// Held through a whole flush: a flush that finds the rows taken by another (the background
    /// writer) returns only once they are written, so a query after it sees them.
    flushing: Mutex<()>,
    events: IntCounterVec,
    dropped: IntCounter,
}

impl Auditor {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new("concierge_audit_events_total", "Auth events by kind"),
            &["kind"],
        )?;
        for k in EventKind::ALL {
            events.with_label_values(&[k.as_str()]);
        }
        let dropped = IntCounter::new(
            "concierge_audit_dropped_total",
            "Audit rows dropped because the database was unavailable for too long",
        )?;
        Ok(Self {
            store,
            clock,
            pending: Mutex::new(Vec::new()),
            flushing: Mutex::new(()),
            events,
            dropped,
        })
    }

    /// Adds the counters to the registry served at `/metrics`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.events.clone()))?;
        registry.register(Box::new(self.dropped.clone()))
    }

    fn pending(&self) -> MutexGuard<'_, Vec<AuditRecord>> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Records an event: log line and counter now, table row at the next flush. Never blocks
    /// on the database.
    pub fn record(&self, e: Event) {
        let at = self.clock.now();
        let kind = e.kind.as_str();
        tracing::info!(
            target: "audit",
            kind,
            user_id = e.user_id.as_deref(),
            client_id = e.client_id.as_deref(),
            sid = e.sid.as_deref(),
            ip = e.ip.as_deref(),
            upstream = e.upstream.as_deref(),
            reason = e.reason.as_deref(),
            "audit event"
        );
        self.events.with_label_values(&[kind]).inc();
        let mut pending = self.pending();
        if pending.len() >= MAX_PENDING {
            self.dropped.inc();
            return;
        }
        pending.push(AuditRecord {
            id: 0,
            at,
            kind: kind.to_owned(),
            user_id: e.user_id,
            client_id: e.client_id,
            sid: e.sid,
            ip: e.ip,
            upstream: e.upstream,
            reason: e.reason,
        });
    }

    /// Writes the pending rows in one transaction. On failure they are kept for the next
    /// flush. Blocking.
    pub fn flush(&self) -> Result<usize, StorageError> {
        let _flushing = match self.flushing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let batch = std::mem::take(&mut *self.pending());
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.insert_audit_events(&batch) {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = self.pending();
                let room = MAX_PENDING.saturating_sub(pending.len());
                let keep = batch.len().min(room);
                self.dropped.inc_by((batch.len() - keep) as u64);
                let newer = std::mem::take(&mut *pending);
                pending.extend(batch.into_iter().take(keep));
                pending.extend(newer);
                Err(e)
            }
        }
    }

    /// Deletes rows older than `retention_secs`. Blocking.
    pub fn sweep(&self, retention_secs: i64) -> Result<u64, StorageError> {
        let before: UnixTime = self.clock.now().saturating_sub(retention_secs);
        self.store.delete_audit_events_before(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
