//! Owns the login state machine: a start (how a journey begins), its steps (what the browser
//! proves), the factors, and an answer (what the journey ends with), around one server-side
//! journey record. Pure of HTTP; time and randomness come in. How to add a start, a step, a
//! factor or an answer: `docs/architecture.md`, "The sign-in journey".

pub mod admin;
pub mod answer;
pub mod binding;
pub mod contract;
pub mod drive;
pub mod finish;
pub mod journey;
pub mod login;
pub mod machine;
pub mod policy;
pub mod saml_backchannel;
pub mod saml_slo;
pub mod saml_slo_out;
pub mod signin;
pub mod signout;
pub mod start;
pub mod step;
