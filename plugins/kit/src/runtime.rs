//! Owns the guest runtime on wasm32: the global allocator (dlmalloc over linear memory) and the
//! panic handler. A panic is a trap, which the host counts as a failed factor.

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn on_panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
