//! Owns the login state machine: an upstream's [`Identity`](crate::upstream::Identity) becomes a
//! broker user and a first-party session. Pure of HTTP; time and randomness come from the
//! session manager it is given.

pub mod admin;
pub mod journey;
pub mod login;
pub mod logout;
pub mod machine;
pub mod mfa;
pub mod signin;
mod signin_mfa;
pub mod signout;
