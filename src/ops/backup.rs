//! The backup use cases: a plain backup of paths (`backup PATH…`) and a plan's jobs
//! (`backup --plan`), each caught up across regions first, committed by the engine
//! ([`super::engine::snapshot_source`]), and recorded in the catalog (best effort).

use std::path::PathBuf;

use super::engine::{snapshot_source, BackupOptions, SnapshotReport};
pub use super::job::{JobFailure, JobOutcome, PlanRequest};
use super::record::RecordedRegion;
use super::target::Target;
use super::{record, Env, Event};
use crate::error::ExitCode;
use crate::plan::Plan;
use crate::repo::sync::SyncRegionReport;
use crate::source::dir::DirSource;
use crate::store::multi::{RegionResult, RegionStatus};
use crate::sys::host::hostname;
use crate::{Error, Result};

/// `backup PATH…`: what to back up and how.
#[derive(Debug, Clone, Default)]
pub struct PathsRequest {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub force: bool,
}

/// The result of `backup PATH…`.
#[derive(Debug, Clone)]
pub struct PathsBackup {
    pub report: SnapshotReport,
    /// Per-region outcome when the backup fanned out to several regions.
    pub regions: Option<Vec<RegionResult>>,
    /// What lagging regions were given before the backup.
    pub caught_up: Vec<SyncRegionReport>,
    /// Why the run is missing from the catalog (empty: recorded).
    pub catalog_warnings: Vec<String>,
}

impl PathsBackup {
    pub fn exit_code(&self) -> ExitCode {
        if self.report.partial || !regions_complete(self.regions.as_deref()) {
            ExitCode::Partial
        } else {
            ExitCode::Ok
        }
    }
}

/// The result of `backup --plan`.
#[derive(Debug, Clone)]
pub struct PlanBackup {
    pub plan: String,
    pub jobs: Vec<JobOutcome>,
    /// The recovery-point sets the run backed up (`[[sets]]`), with their manifests.
    pub sets: Vec<super::set::SetOutcome>,
    pub regions: Option<Vec<RegionResult>>,
}

impl PlanBackup {
    /// Every job ran; the first failure decides the exit code, then a partial job or region.
    pub fn exit_code(&self) -> ExitCode {
        if let Some(f) = self.jobs.iter().find_map(|j| j.result.as_ref().err()) {
            return f.code;
        }
        if let Some(f) = self.sets.iter().find_map(|s| s.failure.as_ref()) {
            return f.code;
        }
        let partial = self
            .jobs
            .iter()
            .any(|j| j.result.as_ref().is_ok_and(|r| r.partial));
        if partial || !regions_complete(self.regions.as_deref()) {
            ExitCode::Partial
        } else {
            ExitCode::Ok
        }
    }
}

fn regions_complete(regions: Option<&[RegionResult]>) -> bool {
    regions.is_none_or(|r| r.iter().all(|r| r.status == RegionStatus::Complete))
}

/// `backup PATH…` into the target's regions.
pub async fn backup_paths(env: &Env, target: &Target, req: PathsRequest) -> Result<PathsBackup> {
    let opened = target.open_for_write().await?;
    let repo = &opened.repo;
    let source = DirSource::new(req.paths)?;
    let caught_up = super::sync::catch_up(env, target, repo, opened.fanout.as_deref()).await?;
    let opts = BackupOptions {
        tags: req.tags,
        host: req.host,
        force: req.force,
        ..Default::default()
    };
    let started = chrono::Utc::now();
    let result = snapshot_source(
        repo,
        opened.fanout.as_deref(),
        Box::new(source),
        &opts,
        env.progress.bytes("backup"),
        env.cancel.clone(),
    )
    .await;
    // After the commit point, and never able to undo it (T30).
    let host = opts.host.clone().unwrap_or_else(hostname);
    let regions = RecordedRegion::of(target, opened.fanout.as_deref());
    let catalog_warnings =
        record::record_backup(env, repo, started, &host, None, result.as_ref(), &regions).await;
    if result.is_ok() {
        record::record_missing(env, repo, &regions).await;
        super::object_lock::after_backup(env, target, repo).await;
    }
    Ok(PathsBackup {
        report: result?,
        regions: opened.fanout.as_ref().map(|m| m.results()),
        caught_up,
        catalog_warnings,
    })
}

/// `backup --plan`: the selected jobs of the target's plan, one after the other; a failed
/// job is reported ([`Event::JobBackedUp`]) and the others still run. The members of a
/// recovery-point set are backed up together, as their set ([`super::set::backup_set`]).
pub async fn backup_plan(env: &Env, target: &Target, req: PlanRequest) -> Result<PlanBackup> {
    let p: &Plan = target
        .plan
        .as_deref()
        .ok_or_else(|| Error::Other("backup_plan needs a plan's target".into()))?;
    let units = super::set::plan_units(p, &req)?;
    let opened = target.open_for_write().await?;
    let (repo, fanout) = (&opened.repo, opened.fanout.as_deref());
    // A region that missed earlier runs is caught up first, so it commits this one too.
    super::sync::catch_up(env, target, repo, fanout).await?;
    let mut outcomes = Vec::new();
    let mut sets = Vec::new();
    for unit in units {
        env.cancel.check()?;
        let job = match unit {
            Ok(job) => job,
            Err(set) => {
                let (outs, set) =
                    super::set::backup_set(env, target, p, set, repo, fanout, &req).await?;
                outcomes.extend(outs);
                sets.push(set);
                continue;
            }
        };
        let opts = BackupOptions {
            tags: [job.tags.clone(), req.tags.clone()].concat(),
            host: req.host.clone(),
            plan: Some(p.name.clone()),
            job: Some(job.name.clone()),
            force: req.force,
            set: None,
        };
        let started = chrono::Utc::now();
        let res = match job.source.build(&job.name, &job.hooks) {
            Ok(src) => {
                snapshot_source(
                    repo,
                    fanout,
                    src,
                    &opts,
                    env.progress.bytes(&job.name),
                    env.cancel.clone(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        // The catalog is not on the critical path: a failure to record is a warning.
        let host = opts.host.clone().unwrap_or_else(hostname);
        let regions = RecordedRegion::of(target, fanout);
        record::record_backup(
            env,
            repo,
            started,
            &host,
            Some((&p.name, &job.name)),
            res.as_ref(),
            &regions,
        )
        .await;
        if let Err(Error::Interrupted) = res {
            return Err(Error::Interrupted);
        }
        let outcome = JobOutcome {
            job: job.name.clone(),
            result: res.as_ref().map(Clone::clone).map_err(JobFailure::from),
        };
        env.emit(Event::JobBackedUp(Box::new(outcome.clone())));
        outcomes.push(outcome);
    }
    if outcomes.iter().any(|o| o.result.is_ok()) {
        record::record_missing(env, repo, &RecordedRegion::of(target, fanout)).await;
        super::object_lock::after_backup(env, target, repo).await;
    }
    Ok(PlanBackup {
        plan: p.name.clone(),
        jobs: outcomes,
        sets,
        regions: fanout.map(|m| m.results()),
    })
}
