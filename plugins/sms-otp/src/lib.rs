//! Owns the SMS one-time-code factor: the user enrols a phone number (proved with a code sent to
//! it), then signs in with a 6-digit code sent by text message, valid for ten minutes
//! (`ttl_seconds`), usable once, burnt after `max_attempts` wrong answers. The WebAssembly glue
//! lives in `plugin` (wasm32 only); the texts are pure (settings, codes and phone numbers:
//! concierge-plugin-kit).
#![cfg_attr(target_arch = "wasm32", no_std)]
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod plugin;
mod texts;
