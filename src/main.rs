//! The `lifeboat` binary: everything lives in the library; this only hands over the exit code.

fn main() {
    tune_malloc();
    std::process::exit(lifeboat::cli::main());
}

/// glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, after
/// which 8 MiB pack buffers come from per-thread arenas and stay resident there (restore
/// peaked ~15 MiB higher that way). A fixed 4 MiB threshold gives pack-sized buffers back to
/// the kernel when freed, while chunk-sized buffers are still recycled from the heap.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tunables; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
