//! `lifeboat healthcheck`: can every destination be reached, read, written and deleted?
//! Each region's store answers its own probe (S3: bucket, credentials, endpoint, region and
//! clock told apart; a directory: a put, get and delete). A reachable region with multipart
//! uploads left unfinished for over a day (T02: a writer killed mid-upload) is a warning, not
//! a failure: they cost money until `prune` or a bucket lifecycle rule aborts them. So is an
//! S3 bucket without such a rule (no `AbortIncompleteMultipartUpload` covering the prefix).

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
    /// Multipart uploads started over a day ago and never finished (0 for the warning about
    /// a missing lifecycle rule).
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
            match r.dest.store.aborts_incomplete_uploads().await {
                Ok(Some(false)) => warnings.push(HealthWarning {
                    name: r.name.clone(),
                    orphaned_uploads: 0,
                    message: format!(
                        "bucket {} has no lifecycle rule with AbortIncompleteMultipartUpload covering this repository: the parts of uploads a killed writer left behind are billed until `lifeboat prune` aborts them",
                        report.bucket
                    ),
                    hint: format!(
                        "add an enabled rule, e.g. aws s3api put-bucket-lifecycle-configuration --bucket {} --lifecycle-configuration '{{\"Rules\":[{{\"ID\":\"abort-incomplete-uploads\",\"Status\":\"Enabled\",\"Filter\":{{\"Prefix\":\"\"}},\"AbortIncompleteMultipartUpload\":{{\"DaysAfterInitiation\":7}}}}]}}' (this replaces the bucket's lifecycle configuration: merge it with rules you already have)",
                        report.bucket
                    ),
                }),
                Ok(_) => {}
                Err(e) => tracing::debug!(region = %r.name, error = %e, "could not read the bucket's lifecycle configuration"),
            }
        }
        destinations.push(report);
    }
    Health {
        destinations,
        warnings,
    }
}
