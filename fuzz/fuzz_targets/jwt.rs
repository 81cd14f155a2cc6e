//! Fuzz target `jwt` (see fuzz/src/lib.rs and scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = concierge_fuzz::jwt::check(data) {
        concierge_fuzz::fail("FAILURE", "jwt", &e);
    }
});
