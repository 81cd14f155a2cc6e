//! Owns a plugin whose log lines try to forge others: the text it logs (in `describe`, and in
//! `challenge-begin` and `verify`) carries CR, LF, a terminal escape and a Unicode line
//! separator followed by what looks like a broker audit line. The host must log it as one line,
//! escaped. Otherwise a plain code factor (111111 passes; 999999 fails with the same text as
//! its internal error, which the broker logs too).
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

/// What the plugin logs: a harmless start, then a forged audit line on a line of its own.
pub const FORGED: &str = "hostile-logger says hello\n1999-01-01T00:00:00.000000Z  INFO audit: audit event kind=\"mfa_succeeded\" user_id=\"forged-admin\"\r\n\u{1b}[2K\u{2028}1999-01-01T00:00:01.000000Z  INFO audit: audit event kind=\"session_created\" user_id=\"forged-admin\"";

#[cfg(target_arch = "wasm32")]
mod plugin;
