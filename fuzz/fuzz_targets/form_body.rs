//! Fuzz target `form_body` (see fuzz/src/lib.rs and scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = concierge_fuzz::forms::body(data) {
        concierge_fuzz::fail("DISAGREEMENT", "form_body", &e);
    }
});
