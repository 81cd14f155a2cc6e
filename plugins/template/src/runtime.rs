//! Owns what a no_std guest must provide itself: a global allocator and a panic handler.

// STEP 2: an allocator over the component's linear memory. The host caps that memory
// (`memory = "4MiB"`); running out is a trap, which the host counts as a failed factor.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

// A panic traps: the call fails and the factor with it (fail closed). Prefer returning
// `PluginError` values; never let a panic stand for "wrong answer".
#[panic_handler]
fn on_panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
