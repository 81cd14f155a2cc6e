//! Owns a plugin whose `describe` never returns: the host asks it at load (boot, hot reload,
//! `concierge plugins list|check`), and the manifest's timeout must end the call there too, so
//! the broker starts and lists the plugin as unavailable.
//! Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

#[cfg(target_arch = "wasm32")]
mod plugin;
