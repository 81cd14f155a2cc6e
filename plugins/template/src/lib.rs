//! Owns the template factor: a PIN the user picks at enrolment and types at sign-in. Copy this
//! crate to write your own plugin; each numbered STEP comment is a place you will change.
//!
//! A real factor proves something a password does not (a device, an inbox, a phone); a PIN is
//! here because it shows the whole contract in few lines: enrolment with state, a challenge
//! form, a verdict, localized texts, config, random bytes and fail-closed errors.
//!
//! The pure logic (`pin`) builds and is unit-tested on the host (`cargo test`); the WebAssembly
//! glue (`plugin`) and the runtime (`runtime`) only on wasm32.

// STEP 1: no_std keeps the component small (tens of KB). `alloc` gives String and Vec.
#![cfg_attr(target_arch = "wasm32", no_std)]
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;

mod pin;
#[cfg(target_arch = "wasm32")]
mod plugin;
#[cfg(target_arch = "wasm32")]
mod runtime;
