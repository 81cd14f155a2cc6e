//! Fuzz target `saml_precheck` (see fuzz/src/lib.rs and scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = concierge_fuzz::saml::check(data) {
        concierge_fuzz::fail("DISAGREEMENT", "saml_precheck", &e);
    }
});
