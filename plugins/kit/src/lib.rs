//! Owns the logic Concierge's first-party plugins share that does not touch the host: one-time
//! codes, the stored challenge, phone numbers, answers, locales; and, on wasm32, the allocator
//! and panic handler every guest needs. Pure, so `cargo test` runs it on the host.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod answer;
pub mod challenge;
pub mod config;
pub mod email;
pub mod locale;
pub mod otp;
pub mod phone;
#[cfg(target_arch = "wasm32")]
mod runtime;
pub mod settings;
