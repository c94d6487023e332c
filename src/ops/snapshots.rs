//! Finding snapshots: a plan's (and a job's) snapshots, and the snapshot a restore or drill of
//! a job means by `latest` or an id.

use crate::ids::SnapshotId;
use crate::plan::Plan;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;
use crate::{Error, Result};

/// The snapshots of plan `p` (and of `job`, when given), in the listing's order.
pub fn of_plan<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    p: &Plan,
    job: Option<&str>,
) -> Vec<&'a (SnapshotId, Snapshot)> {
    snaps
        .iter()
        .filter(|(_, s)| {
            s.plan.as_deref() == Some(p.name.as_str())
                && job.is_none_or(|j| s.job.as_deref() == Some(j))
        })
        .collect()
}

/// A plan job's snapshot: `latest` (its newest) or an id (prefix) that must belong to the job.
pub async fn find_job_snapshot(
    repo: &Repository,
    p: &Plan,
    job: &str,
    query: &str,
) -> Result<(SnapshotId, Snapshot)> {
    let all = repo.list_snapshots().await?;
    let mut snaps: Vec<_> = of_plan(&all, p, Some(job)).into_iter().cloned().collect();
    if query == "latest" {
        return snaps.pop().ok_or_else(|| Error::SnapshotNotFound {
            query: format!("latest of job {job} (the job has no snapshots yet; run `lifeboat backup --plan {} --job {job}`)", p.file.display()),
        });
    }
    let (id, s) = repo.find_snapshot(query).await?;
    if s.plan.as_deref() != Some(p.name.as_str()) || s.job.as_deref() != Some(job) {
        return Err(Error::Usage(format!(
            "snapshot {} belongs to plan {:?} job {:?}, not plan {:?} job {job:?}; `lifeboat snapshots --plan {}` lists this job's snapshots",
            id.short(),
            s.plan.as_deref().unwrap_or("-"),
            s.job.as_deref().unwrap_or("-"),
            p.name,
            p.file.display()
        )));
    }
    Ok((id, s))
}
