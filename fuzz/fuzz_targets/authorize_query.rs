//! Fuzz target `authorize_query` (see fuzz/src/lib.rs and scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = concierge_fuzz::forms::authorize_query(data) {
        concierge_fuzz::fail("FAILURE", "authorize_query", &e);
    }
});
