//! glibc's allocator, tuned once at start-up.
//!
//! SQLite gives each statement that may change several rows a statement journal, 64 KiB
//! allocated and freed again within the statement. With glibc's defaults that free often
//! leaves more than 128 KiB at the top of the store thread's heap, which glibc then hands back
//! to the kernel (`madvise`) only to fault the same pages in at the next statement: a tenth of
//! the service's CPU under handover load, most of it on the one SQLite writer thread
//! (measured with `perf record`; the README's Performance section). Keeping up to
//! `KEEP_FREE` at the top of each heap ends that; memory still goes back beyond it.

/// Free memory a heap keeps at its top before it is returned to the kernel. A fixed value
/// also fixes the size from which allocations are mapped on their own (glibc's default
/// would otherwise adapt it): the same value, so nothing below it is mapped and unmapped
/// each time.
pub const KEEP_FREE: usize = 4 << 20;

/// Applies the settings; call it before the first thread starts. A no-op off glibc.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let keep = KEEP_FREE as libc::c_int;
        // SAFETY: `mallopt` only sets allocator parameters; it is called before other threads
        // exist, and a value it refuses leaves the default in place (its result: 0).
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, keep);
            libc::mallopt(libc::M_MMAP_THRESHOLD, keep);
        }
    }
}
