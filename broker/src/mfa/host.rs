//! Owns the host side of one plugin call: the generated bindings of `concierge:mfa@0.1.0` and
//! of `0.2.0` (0.1's world plus `http`, whose requests `outbound` makes), the per-call store
//! data, and each capability a plugin can import (one `impl Host` each).
//! Capabilities work on a snapshot: state writes and outgoing messages take effect only when
//! the call returns normally, so a trap or timeout leaves nothing half done.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits};

use crate::clock::Entropy;
use crate::domain::PhoneNumber;

wasmtime::component::bindgen!({
    path: "../plugins/wit",
    world: "concierge:mfa/factor-plugin",
    // Forms travel in the signed step ticket between the pages.
    additional_derives: [serde::Serialize, serde::Deserialize],
});

/// The bindings of `concierge:mfa@0.2.0` (plugins/wit/0.2): 0.1's world plus the `http`
/// interface. The 0.1 interfaces are the ones above (`with`), so a 0.2 component is
/// instantiated, called and given capabilities exactly like a 0.1 one; only `http` is new.
pub mod v02 {
    wasmtime::component::bindgen!({
        path: ["../plugins/wit/mfa.wit", "../plugins/wit/0.2"],
        world: "concierge:mfa/factor-plugin@0.2.0",
        with: {
            "concierge:mfa/types@0.1.0": super::concierge::mfa::types,
            "concierge:mfa/config@0.1.0": super::concierge::mfa::config,
            "concierge:mfa/clock@0.1.0": super::concierge::mfa::clock,
            "concierge:mfa/random@0.1.0": super::concierge::mfa::random,
            "concierge:mfa/state@0.1.0": super::concierge::mfa::state,
            "concierge:mfa/email@0.1.0": super::concierge::mfa::email,
            "concierge:mfa/sms@0.1.0": super::concierge::mfa::sms,
            "concierge:mfa/log@0.1.0": super::concierge::mfa::log,
        },
    });
}

/// The bindings of a waiting factor (`waiting-factor-plugin`, contract 0.2): the same imports
/// and `factor` export, plus the `waiting` export.
pub mod v02w {
    wasmtime::component::bindgen!({
        path: ["../plugins/wit/mfa.wit", "../plugins/wit/0.2"],
        world: "concierge:mfa/waiting-factor-plugin@0.2.0",
        with: {
            "concierge:mfa/types@0.1.0": super::concierge::mfa::types,
            "concierge:mfa/config@0.1.0": super::concierge::mfa::config,
            "concierge:mfa/clock@0.1.0": super::concierge::mfa::clock,
            "concierge:mfa/random@0.1.0": super::concierge::mfa::random,
            "concierge:mfa/state@0.1.0": super::concierge::mfa::state,
            "concierge:mfa/email@0.1.0": super::concierge::mfa::email,
            "concierge:mfa/sms@0.1.0": super::concierge::mfa::sms,
            "concierge:mfa/log@0.1.0": super::concierge::mfa::log,
            "concierge:mfa/http@0.2.0": super::v02::concierge::mfa0_2_0::http,
            "concierge:mfa/claims@0.2.0": super::v02::concierge::mfa0_2_0::claims,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// The `claims` interface of contract 0.2.
pub use v02::concierge::mfa0_2_0::claims;
/// The `http` interface of contract 0.2.
pub use v02::concierge::mfa0_2_0::http;
/// The `waiting` interface of contract 0.2.
pub use v02w::exports::concierge::mfa0_2_0::waiting;

pub use concierge::mfa::types::{
    Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError, User,
    Verdict,
};

/// State limits a plugin cannot exceed (documented in the WIT).
pub const MAX_STATE_KEY: usize = 64;
pub const MAX_STATE_VALUE: usize = 4096;
pub const MAX_STATE_KEYS: usize = 32;
const MAX_RANDOM: u32 = 1024;
const MAX_MESSAGES: usize = 3;
const MAX_MESSAGE_BYTES: usize = 4096;
const MAX_LOG_LINES: usize = 32;
/// Characters of one plugin log message kept (before escaping).
const MAX_LOG_CHARS: usize = 500;

/// Plugin text made safe for one log line: at most `max_chars` characters, then control
/// characters (CR, LF, ESC, NEL ...), the Unicode line and paragraph separators and `\` escaped,
/// so a plugin cannot start a line of its own (a forged audit event) or drive a terminal.
pub fn one_log_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A message a plugin asked to send; sent by the host after the call succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Email { subject: String, body: String },
    Sms { to: PhoneNumber, body: String },
}

/// Everything one call may touch. A fresh one per call.
pub struct CallState {
    pub plugin_id: String,
    pub now: i64,
    pub entropy: Arc<dyn Entropy>,
    pub config: Arc<BTreeMap<String, String>>,
    /// The user's state as loaded before the call; written back if `dirty`.
    pub state: BTreeMap<String, Vec<u8>>,
    pub dirty: bool,
    pub outbox: Vec<Outgoing>,
    log_lines: usize,
    limits: StoreLimits,
    /// Whether memory growth was refused (reported as an exhausted memory budget).
    pub memory_refused: bool,
    /// The `http` capability of this call, when the plugin has it.
    pub http: Option<HttpCall>,
    /// Requests made this call.
    http_requests: usize,
    /// Why the host refused a request by policy: the call then fails closed whatever the plugin
    /// returns.
    pub http_refused: Option<String>,
    /// The upstream claims of the call's user this plugin was granted (`claims`).
    pub claims: BTreeMap<String, String>,
}

/// Requests per call through the `http` capability.
pub const MAX_HTTP_REQUESTS: usize = 8;

/// Sends one request of a plugin (the `http` capability; `outbound::PluginHttp`): checks it
/// against the grant, ends by `deadline`, audits it, and redacts secrets from the response.
pub trait HttpSender: Send + Sync {
    fn send(
        &self,
        request: http::Request,
        deadline: std::time::Instant,
        audit: Option<&crate::audit::Auditor>,
        user: &str,
    ) -> Result<http::Response, http::HttpError>;
}

/// What the `http` capability needs for one call.
pub struct HttpCall {
    pub http: Arc<dyn HttpSender>,
    /// The call's wall-time deadline (the epoch deadline's, in `Instant`s).
    pub deadline: std::time::Instant,
    pub audit: Option<Arc<crate::audit::Auditor>>,
    /// The user the call is about (audited).
    pub user: String,
}

impl CallState {
    pub fn new(
        plugin_id: &str,
        now: i64,
        entropy: Arc<dyn Entropy>,
        config: Arc<BTreeMap<String, String>>,
        state: BTreeMap<String, Vec<u8>>,
        memory_bytes: usize,
    ) -> Self {
        Self {
            plugin_id: plugin_id.to_owned(),
            now,
            entropy,
            config,
            state,
            dirty: false,
            outbox: Vec::new(),
            log_lines: 0,
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(8)
                .memories(4)
                .tables(8)
                .table_elements(10_000)
                .build(),
            memory_refused: false,
            http: None,
            http_requests: 0,
            http_refused: None,
            claims: BTreeMap::new(),
        }
    }
}

/// Memory growth goes through the manifest's cap; a refusal is remembered so that the failed
/// call is reported as out of memory rather than as a plain trap.
impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if !ok {
            self.memory_refused = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl CallState {
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        self
    }
}

impl concierge::mfa::types::Host for CallState {}

impl concierge::mfa::config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl concierge::mfa::clock::Host for CallState {
    fn now(&mut self) -> i64 {
        self.now
    }
}

impl concierge::mfa::random::Host for CallState {
    fn bytes(&mut self, len: u32) -> Vec<u8> {
        let mut buf = vec![0u8; usize::try_from(len.min(MAX_RANDOM)).unwrap_or(0)];
        self.entropy.fill(&mut buf);
        buf
    }
}

impl concierge::mfa::state::Host for CallState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).cloned()
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_STATE_KEY {
            return Err(format!("keys are 1 to {MAX_STATE_KEY} bytes"));
        }
        if value.len() > MAX_STATE_VALUE {
            return Err(format!("values are at most {MAX_STATE_VALUE} bytes"));
        }
        if !self.state.contains_key(&key) && self.state.len() >= MAX_STATE_KEYS {
            return Err(format!("at most {MAX_STATE_KEYS} keys per user"));
        }
        self.state.insert(key, value);
        self.dirty = true;
        Ok(())
    }

    fn delete(&mut self, key: String) {
        if self.state.remove(&key).is_some() {
            self.dirty = true;
        }
    }
}

impl CallState {
    fn queue(&mut self, message: Outgoing, len: usize) -> Result<(), String> {
        if self.outbox.len() >= MAX_MESSAGES {
            return Err(format!("at most {MAX_MESSAGES} messages per call"));
        }
        if len > MAX_MESSAGE_BYTES {
            return Err(format!("messages are at most {MAX_MESSAGE_BYTES} bytes"));
        }
        self.outbox.push(message);
        Ok(())
    }
}

impl concierge::mfa::email::Host for CallState {
    fn send_email(&mut self, subject: String, body: String) -> Result<(), String> {
        if subject.contains(['\r', '\n']) || subject.len() > 200 {
            return Err("the subject is one line of at most 200 bytes".into());
        }
        let len = subject.len() + body.len();
        self.queue(Outgoing::Email { subject, body }, len)
    }
}

impl concierge::mfa::sms::Host for CallState {
    fn send_sms(&mut self, to: String, body: String) -> Result<(), String> {
        let Ok(to) = PhoneNumber::parse(&to) else {
            return Err("`to` is not an E.164 number like +821012345678".into());
        };
        let len = body.len();
        self.queue(Outgoing::Sms { to, body }, len)
    }
}

impl concierge::mfa::log::Host for CallState {
    fn log(&mut self, level: concierge::mfa::log::Level, message: String) {
        use concierge::mfa::log::Level;
        if self.log_lines >= MAX_LOG_LINES {
            return;
        }
        self.log_lines += 1;
        let message = one_log_line(&message, MAX_LOG_CHARS);
        let plugin = self.plugin_id.as_str();
        match level {
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}

impl http::Host for CallState {
    fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
        use http::HttpError;
        let outcome = match &self.http {
            None => Err(HttpError::Refused(
                "http is not available in this call".into(),
            )),
            Some(_) if self.http_requests >= MAX_HTTP_REQUESTS => Err(HttpError::Refused(format!(
                "at most {} requests per call",
                MAX_HTTP_REQUESTS
            ))),
            Some(h) => {
                self.http_requests += 1;
                h.http
                    .send(request, h.deadline, h.audit.as_deref(), &h.user)
            }
        };
        if let Err(HttpError::Refused(why)) = &outcome {
            self.http_refused
                .get_or_insert_with(|| one_log_line(why, 300));
        }
        outcome
    }
}

impl claims::Host for CallState {
    fn get(&mut self, name: String) -> Option<String> {
        self.claims.get(&name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::one_log_line;

    #[test]
    fn log_text_stays_on_one_line() {
        let forged = "ok\n2026-12-01T20:00:00Z  INFO audit: audit event kind=\"mfa_succeeded\"\r\u{1b}[2K\u{85}\u{2028}x\\n";
        let line = one_log_line(forged, 500);
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{line}"
        );
        assert_eq!(
            line,
            "ok\\n2026-12-01T20:00:00Z  INFO audit: audit event kind=\"mfa_succeeded\"\\r\\u{1b}[2K\\u{85}\\u{2028}x\\\\n"
        );
        assert_eq!(one_log_line("héllo wörld", 5), "héllo…");
        assert_eq!(one_log_line("plain text", 500), "plain text");
    }
}
