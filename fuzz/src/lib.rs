//! Owns the oracles of Concierge's fuzz targets (fuzz_targets/, run by scripts/fuzz.sh): what
//! each parser of hostile input must do with any bytes. A target panics (and libFuzzer keeps the
//! input) when an oracle returns an error; the message says `DISAGREEMENT` when two parsers of
//! one document disagree, and anything else that panics is a crash of the code under test.

// Harness code: a setup step that cannot fail in a sound environment may stop the process.
#![allow(clippy::expect_used, reason = "fuzz harness setup, not library code")]

pub mod forms;
pub mod id_token;
pub mod journey;
pub mod jwt;
pub mod saml;
pub mod store;

/// With `CONCIERGE_FUZZ_DEBUG` set, says on stderr what an oracle concluded (for checking that
/// seeds reach the deep paths: run a target on one file).
pub fn debug(what: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("CONCIERGE_FUZZ_DEBUG").is_some()) {
        eprintln!("concierge-fuzz: {}", what());
    }
}

/// The known classes of disagreement to let pass (`CONCIERGE_FUZZ_KNOWN`, comma-separated).
pub fn known() -> &'static [&'static str] {
    static KNOWN: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let list = std::env::var("CONCIERGE_FUZZ_KNOWN").unwrap_or_default();
        list.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| &*Box::leak(c.to_owned().into_boxed_str()))
            .collect()
    })
}

/// Notes on stderr, once per class and process, that an input of a known class of disagreement
/// was let pass (scripts/fuzz.sh reports which classes a run met).
pub fn tolerated(class: &'static str) {
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !seen.contains(&class) {
        seen.push(class);
        eprintln!("KNOWN DISAGREEMENT met (let pass): {class}");
    }
    debug(|| format!("known disagreement {class} let pass"));
}

/// Reports a failed oracle the way the targets and scripts/fuzz.sh expect.
#[allow(
    clippy::panic,
    reason = "libFuzzer records a failing input by its panic"
)]
pub fn fail(kind: &str, target: &str, detail: &str) -> ! {
    panic!("{kind} in {target}: {detail}")
}
