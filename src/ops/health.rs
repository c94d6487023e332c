//! `lifeboat healthcheck`: can every destination be reached, read, written and deleted?
//! Each region's store answers its own probe (S3: bucket, credentials, endpoint, region and
//! clock told apart; a directory: a put, get and delete). A reachable region with multipart
//! uploads left unfinished for over a day (T02: a writer killed mid-upload) is a warning, not
//! a failure: they cost money until `prune` or a bucket lifecycle rule aborts them.

use super::target::Target;
use crate::error::ExitCode;
use crate::repo::multipart_gc::{stale_uploads, HEALTH_WARN_AGE};
use crate::store::HealthReport;

/// One report per region, named as the region, and warnings that do not fail the check.
#[derive(Debug, Clone)]
pub struct Health {
    pub destinations: Vec<HealthReport>,
    pub warnings: Vec<HealthWarning>,
}

/// Something worth an operator's attention in a region that works.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthWarning {
    pub name: String,
    /// Multipart uploads started over a day ago and never finished.
    pub orphaned_uploads: usize,
    pub message: String,
    pub hint: String,
}

impl Health {
    pub fn failed(&self) -> usize {
        self.destinations.iter().filter(|r| !r.ok()).count()
    }

    /// 0 all healthy, 3 some, 1 none.
    pub fn exit_code(&self) -> ExitCode {
        match self.failed() {
            0 => ExitCode::Ok,
            n if n == self.destinations.len() => ExitCode::Error,
            _ => ExitCode::Partial,
        }
    }
}

pub async fn healthcheck(target: &Target) -> Health {
    let mut destinations = Vec::new();
    let mut warnings = Vec::new();
    for r in &target.regions {
        let report = HealthReport {
            name: r.name.clone(),
            ..r.dest.store.probe().await
        };
        if report.ok() {
            match stale_uploads(&*r.dest.store, HEALTH_WARN_AGE, chrono::Utc::now()).await {
                Ok(old) if !old.is_empty() => warnings.push(HealthWarning {
                    name: r.name.clone(),
                    orphaned_uploads: old.len(),
                    message: format!(
                        "{} multipart uploads were started over a day ago and never finished (writers killed mid-upload); their parts are billed until aborted",
                        old.len()
                    ),
                    hint: "run `lifeboat prune`, which aborts them, or give the bucket a lifecycle rule with AbortIncompleteMultipartUpload".into(),
                }),
                Ok(_) => {}
                Err(e) => tracing::debug!(region = %r.name, error = %e, "could not list pending multipart uploads"),
            }
        }
        destinations.push(report);
    }
    Health {
        destinations,
        warnings,
    }
}
