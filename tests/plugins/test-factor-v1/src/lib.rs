//! Owns version 1 of the hot-reload test factor: id `test-factor` (the same in both versions,
//! so one manifest entry can be reloaded from one to the other), a challenge whose intro says
//! "version 1", and a verify that accepts only 111111.
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

/// The version this build says it is.
const VERSION: u32 = 1;
/// The only answer it accepts.
const ANSWER: &str = "111111";

#[cfg(target_arch = "wasm32")]
#[path = "../../test-factor-v1/src/factor.rs"]
mod factor;
