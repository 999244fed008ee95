//! How the C allocator treats the memory libtorch frees between forward passes.

use std::sync::Once;

/// Keeps the memory freed after each forward pass inside the process, so the next
/// pass reuses it instead of asking the kernel for fresh, zeroed pages.
///
/// libtorch's CPU tensors come from the C allocator. glibc returns large freed
/// blocks to the kernel (`munmap`, heap trimming), and every batch then pays page
/// faults and page clearing for its activations again: 4–7% of CPU time in a bf16
/// profile of all-MiniLM-L6-v2, and 3–5% throughput measured with the same settings
/// given through `GLIBC_TUNABLES`. Blocks under 256 MiB are kept and the heap is
/// trimmed only past 1 GiB free, which bounds what a long-running service keeps.
///
/// Process-wide, so applications opt in once at start-up (the `dartboard` binary
/// and `dartboard-api`'s shared model do). Idempotent; a no-op where the C
/// library is not glibc.
pub fn retain_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters and reports values it
        // refuses by returning 0.
        unsafe {
            // Older glibc refuses mmap thresholds above 32 MiB. Setting the trim
            // threshold alone would still freeze the mmap threshold at its 128 KiB
            // default and map every activation afresh, so it is set only once a
            // threshold has been accepted.
            let accepted = libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20) == 1
                || libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1;
            if accepted {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    });
}
