//! Owns a plugin whose `describe` returns an invalid id (`BAD ID!`) and absurdly
//! long texts, and whose forms have invalid field names: the host must refuse to load it, and
//! would have to refuse each such form.
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

#[cfg(target_arch = "wasm32")]
mod plugin;
