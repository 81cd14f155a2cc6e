//! Owns the email one-time-code factor: a 6-digit code sent to the user's own address, valid
//! for ten minutes (`ttl_seconds`), usable once, burnt after `max_attempts` wrong answers. No
//! enrolment: every user with an email address has it. The WebAssembly glue lives in `plugin`
//! (wasm32 only); the texts are pure (settings and codes: concierge-plugin-kit) and unit-tested on the host.
#![cfg_attr(target_arch = "wasm32", no_std)]
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod plugin;
mod texts;
