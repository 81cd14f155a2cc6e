//! Owns the guest SDK for Concierge MFA plugins: a factor is one `impl Factor` and one
//! `export!`; the SDK generates the WIT bindings (contract 0.1, or 0.2 with the `http` feature),
//! provides the allocator and panic handler on wasm32, and wraps each host capability in a
//! small typed helper (codes, attempts, per-user state, texts in English and Korean, forms).
//!
//! ```ignore
//! use concierge_plugin_sdk::prelude::*;
//!
//! struct Pin;
//! export!(Pin);
//!
//! impl Factor for Pin {
//!     fn describe() -> Description { Description::new("pin", text("PIN", "PIN")).amr("pin") }
//!     fn is_enrolled(_: &User) -> bool { PIN.is_set() }
//!     // enroll_begin, enroll_finish, challenge, verify ...
//! }
//! ```
//!
//! A component imports only the capabilities its code calls: an SDK helper that is never
//! called leaves no import behind, so the manifest's `grants` stay the least the factor needs.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod answer;
pub mod attempts;
#[doc(hidden)]
pub mod bindings;
mod capabilities;
pub mod code;
mod contract;
pub mod hashed;
#[cfg(feature = "http")]
pub mod http;
pub mod state;
#[cfg(feature = "waiting")]
pub mod waiting;

pub use answer::Answer;
#[cfg(feature = "http")]
pub use capabilities::claims;
pub use capabilities::{clock, config, email, log, random, sms};
pub use concierge_plugin_kit::locale::Lang;
pub use contract::{
    Description, EnrollStep, Error, FactorKind, Field, FieldKind, Form, Text, User, Verdict, text,
};

/// What every `Factor` function returns on failure: a `plugin-error` (every one fails the factor).
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// A second factor, in the terms of docs/plugins.md (Keycloak's authenticator split). Each
/// function gets a fresh instance: keep everything that must last in `state`.
pub trait Factor {
    /// Who this factor is: constants only (called at load, before any user, with no capability).
    fn describe() -> Description;

    /// Whether this user has set the factor up and can be challenged (usually one state read).
    fn is_enrolled(user: &User) -> bool;

    /// The first enrolment page. The default is for factors that need none.
    fn enroll_begin(_user: &User) -> Result<Form> {
        Err(Error::internal("this factor needs no enrolment"))
    }

    /// Handles an enrolment page's answer: `EnrollStep::Done`, or `EnrollStep::Next(form)`.
    fn enroll_finish(_user: &User, _answer: &Answer) -> Result<EnrollStep> {
        Err(Error::internal("this factor needs no enrolment"))
    }

    /// Starts a challenge at sign-in: sends what must be sent and returns the page.
    #[cfg(not(feature = "waiting"))]
    fn challenge(user: &User) -> Result<Form>;

    /// Checks the answer to the challenge: `Verdict::Accepted` only when it proves the factor.
    #[cfg(not(feature = "waiting"))]
    fn verify(user: &User, answer: &Answer) -> Result<Verdict>;

    /// A waiting factor is challenged through [`waiting::Waiting`]; the host never calls this.
    #[cfg(feature = "waiting")]
    fn challenge(_user: &User) -> Result<Form> {
        Err(Error::internal(
            "a waiting factor: wait-begin, not challenge-begin",
        ))
    }

    /// A waiting factor is checked through [`waiting::Waiting::poll`]; the host never calls this.
    #[cfg(feature = "waiting")]
    fn verify(_user: &User, _answer: &Answer) -> Result<Verdict> {
        Err(Error::internal("a waiting factor: poll, not verify"))
    }
}

/// Exports a `Factor` as the component's `factor` interface: `export!(MyFactor);`, once per
/// crate, at the crate root or in any module. On other targets than wasm32 it expands to
/// nothing, so the crate's own unit tests build and run on the host.
#[macro_export]
macro_rules! export {
    ($factor:ty) => {
        // The export functions wit-bindgen writes are `unsafe extern "C"`; none is written by you.
        // Only on wasm32: a host build (`cargo test`) of the crate exports nothing.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            type ConciergeFactorExport = $crate::Adapter<$factor>;
            $crate::bindings::export_factor!(
                ConciergeFactorExport with_types_in $crate::bindings
            );
        };
        // On the host: the factor's functions, reachable as in the component (no dead code).
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub static __CONCIERGE_FACTOR: $crate::Exports = $crate::Exports::of::<$factor>();
    };
}

/// The functions `export!` exports, as seen from a host build. Not for direct use.
#[doc(hidden)]
pub struct Exports {
    pub describe: fn() -> Description,
    pub is_enrolled: fn(&User) -> bool,
    pub enroll_begin: fn(&User) -> Result<Form>,
    pub enroll_finish: fn(&User, &Answer) -> Result<EnrollStep>,
    pub challenge: fn(&User) -> Result<Form>,
    pub verify: fn(&User, &Answer) -> Result<Verdict>,
}

impl Exports {
    pub const fn of<F: Factor>() -> Self {
        Self {
            describe: F::describe,
            is_enrolled: F::is_enrolled,
            enroll_begin: F::enroll_begin,
            enroll_finish: F::enroll_finish,
            challenge: F::challenge,
            verify: F::verify,
        }
    }
}

/// The `factor` export of a `Factor` (what `export!` exports). Not for direct use.
#[doc(hidden)]
pub struct Adapter<F>(core::marker::PhantomData<F>);

impl<F: Factor> bindings::factor::Guest for Adapter<F> {
    fn describe() -> Description {
        F::describe()
    }

    fn is_enrolled(user: User) -> bool {
        F::is_enrolled(&user)
    }

    fn enroll_begin(user: User) -> Result<Form> {
        F::enroll_begin(&user)
    }

    fn enroll_finish(
        user: User,
        answer: alloc::vec::Vec<(alloc::string::String, alloc::string::String)>,
    ) -> Result<EnrollStep> {
        F::enroll_finish(&user, &Answer::new(answer))
    }

    fn challenge_begin(user: User) -> Result<Form> {
        F::challenge(&user)
    }

    fn verify(
        user: User,
        answer: alloc::vec::Vec<(alloc::string::String, alloc::string::String)>,
    ) -> Result<Verdict> {
        F::verify(&user, &Answer::new(answer))
    }
}

/// `use concierge_plugin_sdk::prelude::*;` brings the trait, the macro, the contract's types,
/// the helpers, and `String`, `Vec`, `format!`, `vec!` (a guest is `no_std` + `alloc`).
pub mod prelude {
    pub use crate::attempts::Attempts;
    pub use crate::hashed::Hashed;
    pub use crate::state::Key;
    #[cfg(feature = "waiting")]
    pub use crate::waiting::{Pending, Poll, Waiting};
    pub use crate::{
        Answer, Description, EnrollStep, Error, Factor, FactorKind, Field, FieldKind, Form, Lang,
        Result, Text, User, Verdict, export, text,
    };
    pub use crate::{clock, code, config, email, log, random, sms};
    pub use alloc::borrow::ToOwned;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}
