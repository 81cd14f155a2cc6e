//! Owns what can go wrong in the MFA layer ([`MfaError`], with its audit code) and how a plugin's
//! failure (an exhausted budget, a trap, an error it returned, a malformed answer) becomes one.

use super::delivery::DeliveryError;
use super::host::{self, PluginError};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin `{plugin}` cannot be loaded: {reason}")]
    Load { plugin: String, reason: String },
    #[error("factor `{0}` is not available")]
    Unavailable(String),
    #[error("plugin `{plugin}` ran out of {budget}")]
    Budget {
        plugin: String,
        budget: &'static str,
    },
    #[error("plugin `{plugin}` trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin `{plugin}` returned a malformed answer: {reason}")]
    Malformed { plugin: String, reason: String },
    #[error("plugin `{plugin}` failed: {reason}")]
    Failed { plugin: String, reason: String },
    #[error("another attempt changed this factor at the same time")]
    Conflict,
    #[error("the factor's stored state cannot be read")]
    State,
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MfaError {
    /// A short code for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(_) | Self::Load { .. } | Self::Unavailable(_) => "unavailable",
            Self::Budget { budget, .. } => budget,
            Self::Trap { .. } => "trap",
            Self::Malformed { .. } => "malformed",
            Self::Failed { .. } => "plugin_error",
            Self::Conflict => "conflict",
            Self::State => "state",
            Self::Delivery(_) => "delivery",
            Self::Storage(_) => "storage",
        }
    }
}

pub(super) fn malformed(plugin: &str, reason: String) -> MfaError {
    MfaError::Malformed {
        plugin: plugin.to_owned(),
        reason,
    }
}

pub(super) fn plugin_error(plugin: &str, e: PluginError) -> MfaError {
    let reason = match e {
        PluginError::BadInput(_) => "bad input".to_owned(),
        PluginError::NotEnrolled => "not enrolled".to_owned(),
        // Logged by the pages when the factor fails: one line, like the plugin's own log.
        PluginError::Unavailable(s) | PluginError::Internal(s) => host::one_log_line(&s, 200),
    };
    MfaError::Failed {
        plugin: plugin.to_owned(),
        reason,
    }
}

pub(super) fn plugin_result<T>(plugin: &str, r: Result<T, PluginError>) -> Result<T, MfaError> {
    r.map_err(|e| plugin_error(plugin, e))
}

/// Why a call did not complete: budget (fuel, time, memory) or a trap.
pub(super) fn classify(plugin: &str, e: &wasmtime::Error, memory_refused: bool) -> MfaError {
    let budget = |budget| MfaError::Budget {
        plugin: plugin.to_owned(),
        budget,
    };
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => budget("fuel"),
        Some(wasmtime::Trap::Interrupt) => budget("time"),
        _ if memory_refused => budget("memory"),
        Some(t) => MfaError::Trap {
            plugin: plugin.to_owned(),
            reason: t.to_string(),
        },
        // The backtrace names the plugin's own functions: one line.
        None => MfaError::Trap {
            plugin: plugin.to_owned(),
            reason: host::one_log_line(&format!("{e:#}"), 300),
        },
    }
}
