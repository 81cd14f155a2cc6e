//! Fuzz target `id_token` (see fuzz/src/lib.rs and scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = concierge_fuzz::id_token::check(data) {
        concierge_fuzz::fail("FAILURE", "id_token", &e);
    }
});
