//! The `lifeboat` binary: everything lives in the library; this only hands over the exit code.

fn main() {
    if writes_backups(std::env::args().skip(1)) {
        tune_malloc_for_backup();
    }
    std::process::exit(lifeboat::cli::main());
}

/// Whether the subcommand (the first argument that is not a flag) builds packs.
fn writes_backups(args: impl Iterator<Item = String>) -> bool {
    args.take(4)
        .find(|a| !a.starts_with('-'))
        .is_some_and(|c| matches!(c.as_str(), "backup" | "run-due" | "demo"))
}

/// glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, after
/// which the 8 MiB pack buffers a backup builds come from per-thread arenas and stay resident
/// there. A fixed 4 MiB threshold gives pack-sized buffers back to the kernel when freed
/// (about 10 MiB less peak memory for a backup) at some cost in speed (fresh mappings must be
/// faulted in). Restore and verify keep glibc's default: their pack buffers are pooled by the
/// store, and the fixed threshold made them ~20 % slower (measured 2026-11-24).
fn tune_malloc_for_backup() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tunables; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
