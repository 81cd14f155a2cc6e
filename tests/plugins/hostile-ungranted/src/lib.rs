//! Owns a plugin that imports the `sms` capability, which the test manifest does
//! not grant: the host must refuse to load it. Otherwise an ordinary factor (accepts 123456).
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

#[cfg(target_arch = "wasm32")]
mod plugin;
