//! Owns a plugin whose `verify` never returns: the host's wall-time deadline (epoch
//! interruption) or its fuel budget must end the call, and the factor fails.
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

#[cfg(target_arch = "wasm32")]
mod plugin;
