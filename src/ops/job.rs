//! A plan job's backup, as data: what `backup --plan` asks for and how each job went. Shared by
//! the plan's backup (`ops::backup`) and a recovery-point set's (`ops::set`).

use crate::error::ExitCode;
use crate::ops::engine::SnapshotReport;
use crate::Error;

/// `backup --plan`: which jobs (all when `None`) and how.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub job: Option<String>,
    /// Added to each job's own tags.
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub force: bool,
}

/// How one plan job's backup went.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub job: String,
    pub result: std::result::Result<SnapshotReport, JobFailure>,
}

/// A failed job, kept as data (the run goes on with the next job).
#[derive(Debug, Clone)]
pub struct JobFailure {
    pub message: String,
    pub hint: Option<String>,
    pub code: ExitCode,
}

impl From<&Error> for JobFailure {
    fn from(e: &Error) -> Self {
        JobFailure {
            message: e.to_string(),
            hint: e.hint(),
            code: e.exit_code(),
        }
    }
}
