//! Owns a plugin whose `verify` allocates until memory runs out: the host's memory
//! cap must stop the growth, the call traps, and the factor fails.
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

#[cfg(target_arch = "wasm32")]
mod plugin;
