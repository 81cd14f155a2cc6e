//! Owns the thin wrappers over the host capabilities of contract 0.1: each returns the SDK's
//! types and maps a failure to the `Error` the docs prescribe (`unavailable` for a capability
//! that failed, `internal` for a config value that makes no sense). A wrapper that is never
//! called leaves no import in the component.

/// The broker's clock (grant `clock`).
pub mod clock {
    /// Unix seconds.
    pub fn now() -> i64 {
        crate::bindings::v1::clock::now()
    }
}

/// Secure random bytes (grant `random`).
pub mod random {
    use alloc::vec::Vec;

    use crate::{Error, Result};

    /// `len` random bytes (at most 1024 per call).
    pub fn bytes(len: u32) -> Vec<u8> {
        crate::bindings::v1::random::bytes(len)
    }

    /// `N` random bytes (`N` at most 1024).
    pub fn array<const N: usize>() -> Result<[u8; N]> {
        let len = u32::try_from(N).map_err(|_| Error::internal("random: too many bytes"))?;
        bytes(len)
            .try_into()
            .map_err(|_| Error::internal("random: short read"))
    }
}

/// The manifest's `config` table (always linked).
pub mod config {
    use alloc::string::String;

    use crate::{Error, Result};

    /// The value of `key`, if the operator set it.
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::v1::config::get(key)
    }

    /// `key` as a whole number in `min..=max`, `default` when unset; any other value is an
    /// `internal` error (fail closed rather than guess what the operator meant).
    pub fn number(key: &str, default: i64, min: i64, max: i64) -> Result<i64> {
        concierge_plugin_kit::config::number(key, get(key).as_deref(), default, min, max)
            .map_err(Error::Internal)
    }
}

/// Email to the user's own address (grant `email`), sent after the call succeeds.
pub mod email {
    use crate::{Error, Result};

    pub fn send(subject: &str, body: &str) -> Result<()> {
        crate::bindings::v1::email::send_email(subject, body).map_err(Error::Unavailable)
    }
}

/// Text messages (grant `sms`), sent after the call succeeds.
pub mod sms {
    use crate::{Error, Result};

    /// Sends `body` to `to` (E.164, `+821012345678`; `code::parse_phone` makes one).
    pub fn send(to: &str, body: &str) -> Result<()> {
        crate::bindings::v1::sms::send_sms(to, body).map_err(Error::Unavailable)
    }
}

/// Lines in the broker's log, tagged with the plugin id (grant `log`). Never log secrets.
pub mod log {
    use crate::bindings::v1::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// What the user's upstream identity provider said about them (grant `claims`, contract 0.2):
/// the claims the operator keeps from that upstream and grants this plugin by name. A user who
/// signed in with a password, or whose upstream did not send the claim, has none.
#[cfg(feature = "http")]
pub mod claims {
    use alloc::string::String;

    /// The value of the claim `name`, if granted and known.
    pub fn get(name: &str) -> Option<String> {
        crate::bindings::claims::get(name)
    }
}
