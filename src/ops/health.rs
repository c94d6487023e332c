//! `lifeboat healthcheck`: can every destination be reached, read, written and deleted?
//! Each region's store answers its own probe (S3: bucket, credentials, endpoint, region and
//! clock told apart; a directory: a put, get and delete).

use super::target::Target;
use crate::error::ExitCode;
use crate::store::HealthReport;

/// One report per region, named as the region.
#[derive(Debug, Clone)]
pub struct Health {
    pub destinations: Vec<HealthReport>,
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
    for r in &target.regions {
        destinations.push(HealthReport {
            name: r.name.clone(),
            ..r.dest.store.probe().await
        });
    }
    Health { destinations }
}
