//! Owns the WIT bindings of the contract the SDK is built for: `concierge:mfa@0.1.0`
//! (plugins/wit/mfa.wit), or with the `http` feature `concierge:mfa@0.2.0`
//! (plugins/wit/0.2/mfa.wit, which adds `http` and `claims`). The rest of the SDK names them through the
//! aliases below, so it reads the same for both. Hidden: integrators never name these.

// The code wit-bindgen generates for imports and exports is `unsafe`; none is written here.
#![allow(unsafe_code, missing_docs)]

#[cfg(not(feature = "http"))]
wit_bindgen::generate!({
    path: "../wit/mfa.wit",
    world: "concierge:mfa/factor-plugin@0.1.0",
    pub_export_macro: true,
    export_macro_name: "export_factor",
    additional_derives: [PartialEq, Eq],
});

#[cfg(all(feature = "http", not(feature = "waiting")))]
wit_bindgen::generate!({
    path: ["../wit/mfa.wit", "../wit/0.2"],
    world: "concierge:mfa/factor-plugin@0.2.0",
    // The 0.1 interfaces the 0.2 world uses are generated here too.
    generate_all,
    pub_export_macro: true,
    export_macro_name: "export_factor",
    additional_derives: [PartialEq, Eq],
});

#[cfg(feature = "waiting")]
wit_bindgen::generate!({
    path: ["../wit/mfa.wit", "../wit/0.2"],
    world: "concierge:mfa/waiting-factor-plugin@0.2.0",
    generate_all,
    pub_export_macro: true,
    export_macro_name: "export_factor",
    additional_derives: [PartialEq, Eq],
});

/// The 0.1 interfaces (types and capabilities), under one name for both contracts.
#[cfg(not(feature = "http"))]
pub use self::concierge::mfa as v1;
/// The `factor` export's module (its `Guest` trait).
#[cfg(not(feature = "http"))]
pub use self::exports::concierge::mfa::factor;

#[cfg(feature = "http")]
pub use self::concierge::mfa0_1_0 as v1;
#[cfg(feature = "http")]
pub use self::concierge::mfa0_2_0::{claims, http};
#[cfg(feature = "http")]
pub use self::exports::concierge::mfa0_1_0::factor;
/// The `waiting` export's module (its `Guest` trait and types).
#[cfg(feature = "waiting")]
pub use self::exports::concierge::mfa0_2_0::waiting;
