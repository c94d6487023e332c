//! The process exit codes: stable numbers, documented in `--help` and the README. A leaf
//! module, so every layer (the store included) can name an exit code without importing the
//! library error type.

/// Process exit codes. Unknown codes must be treated as failure by callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    Error = 1,
    Usage = 2,
    Partial = 3,
    RepoNotFound = 10,
    Locked = 11,
    WrongPassword = 12,
    Integrity = 13,
    SourceFailed = 14,
    NoSpace = 15,
    DrillCheckFailed = 16,
    ObjectiveMissed = 17,
    Interrupted = 130,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit-code table, as printed by `--help` and the README.
    pub const TABLE: &'static str = "\
Exit codes:
    0    success
    1    error (see message)
    2    usage error (bad flags or arguments)
    3    partial: some files could not be read, or some regions/targets failed
   10    repository not found
   11    lock conflict, or lock lost
   12    wrong password or damaged key file
   13    integrity violation detected (corrupt, missing or tampered data)
   14    source dump failed
   15    out of space or quota
   16    restore drill: data verification failed
   17    restore drill: an objective (RTO or RPO) was missed;
         status --check: an objective is missed (RPO, drill interval, coverage…)
  130    interrupted";
}
