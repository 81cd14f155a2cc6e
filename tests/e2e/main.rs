//! End-to-end tests over HTTP against the broker, in one test binary: each test spawns its own
//! broker on a random port with a fresh database (SQLite and PostgreSQL) and a manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod cli;
mod control;
mod faults;
mod helpers;
mod instances;
mod keys;
mod login;
mod logout;
mod mfa;
mod oidc;
mod passkey;
mod passkey_hardware;
mod passwordless;
mod plugin_http;
mod privacyidea;
mod saml_idp;
mod saml_idp_encrypt;
mod saml_idp_registry;
mod saml_idp_release;
mod saml_idp_rotation;
mod saml_idp_slo;
mod saml_idp_soap;
mod secrets;
mod sessions;
mod upstream_oidc;
mod upstream_saml;
mod waiting_factor;
