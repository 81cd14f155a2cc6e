//! Concierge: an identity broker. Federates upstream identity providers into one first-party
//! session and serves its own apps as an OpenID provider.

pub mod audit;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod flow;
pub mod http;
pub mod jwt;
#[cfg(test)]
mod layering;
pub mod mfa;
pub mod pages;
pub mod provider;
pub mod ratelimit;
pub mod rewrap;
pub mod saml_idp;
pub mod secrets;
pub mod session;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod upstream;
pub mod web;
