//! Owns the contract 0.2 test factor `test-http`: its verify sends the request the test puts
//! in the answer (`url`, optionally a secret named `secret` in the header `secret_header` or in
//! the form field `secret_field`) through the `http` capability. It accepts when the response
//! is `200` with the body `accept`; otherwise it rejects with what it saw (status, `location`,
//! body), or returns `unavailable` naming the host's error.
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

/// The answer's fields the test fills.
const FIELDS: [&str; 4] = ["url", "secret", "secret_header", "secret_field"];

#[cfg(target_arch = "wasm32")]
mod factor;
