//! Owns the WebAssembly side of hostile-describe-loop: `describe` spins forever.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::String;

wit_bindgen::generate!({
    path: "../../../plugins/wit",
    world: "factor-plugin",
});

use concierge::mfa::types::{Answer, Description, EnrollStep, Form, PluginError, User, Verdict};
use exports::concierge::mfa::factor::Guest;

struct Hostile;

export!(Hostile);

impl Guest for Hostile {
    fn describe() -> Description {
        let mut spins: u64 = 0;
        loop {
            // black_box: the loop has a visible effect, so it is not optimised away.
            spins = core::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn is_enrolled(_user: User) -> bool {
        false
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        Err(never())
    }

    fn enroll_finish(_user: User, _answer: Answer) -> Result<EnrollStep, PluginError> {
        Err(never())
    }

    fn challenge_begin(_user: User) -> Result<Form, PluginError> {
        Err(never())
    }

    fn verify(_user: User, _answer: Answer) -> Result<Verdict, PluginError> {
        Err(never())
    }
}

fn never() -> PluginError {
    PluginError::Internal(String::from("never loaded"))
}
