//! Owns the TOTP factor (authenticator apps, RFC 6238): enrolment with a QR code, and checking
//! codes with one step of clock skew either way, each time step usable once. The WebAssembly
//! glue lives in `plugin` (wasm32 only); everything else is pure and unit-tested on the host.
#![cfg_attr(target_arch = "wasm32", no_std)]
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod plugin;
mod record;
mod settings;
mod texts;
mod uri;
