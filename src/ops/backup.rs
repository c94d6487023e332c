//! The backup use cases: a plain backup of paths (`backup PATH…`) and a plan's jobs
//! (`backup --plan`), each caught up across regions first, committed, and recorded in the
//! catalog (best effort); and below them the commit protocol every backup runs
//! ([`snapshot_source`]), which the demo and tests call directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use indicatif::ProgressBar;

use super::target::Target;
use super::{record, Env, Event};
use crate::error::ExitCode;
use crate::ids::{BlobId, SnapshotId};
use crate::pipeline::{Chunker, Pipeline};
use crate::plan::Plan;
use crate::repo::snapshot::{Snapshot, SourceMeta, Summary};
use crate::repo::sync::SyncRegionReport;
use crate::repo::tree::Tree;
use crate::repo::{ObjectKind, Repository};
use crate::source::dir::DirSource;
use crate::source::{BackupContext, Source, SourceOutput};
use crate::store::multi::{MultiStore, RegionResult, RegionStatus};
use crate::sys::host::{hostname, username};
use crate::sys::Cancel;
use crate::{Error, Result};

/// `backup PATH…`: what to back up and how.
#[derive(Debug, Clone, Default)]
pub struct PathsRequest {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub force: bool,
}

/// `backup --plan`: which jobs (all when `None`) and how.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub job: Option<String>,
    /// Added to each job's own tags.
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

/// The result of `backup --plan`.
#[derive(Debug, Clone)]
pub struct PlanBackup {
    pub plan: String,
    pub jobs: Vec<JobOutcome>,
    pub regions: Option<Vec<RegionResult>>,
}

impl PlanBackup {
    /// Every job ran; the first failure decides the exit code, then a partial job or region.
    pub fn exit_code(&self) -> ExitCode {
        if let Some(f) = self.jobs.iter().find_map(|j| j.result.as_ref().err()) {
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
    let caught_up = super::sync::catch_up(env, repo, opened.fanout.as_deref()).await?;
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
    let catalog_warnings =
        record::record_backup(env, repo, started, &host, None, result.as_ref(), &[]).await;
    Ok(PathsBackup {
        report: result?,
        regions: opened.fanout.as_ref().map(|m| m.results()),
        caught_up,
        catalog_warnings,
    })
}

/// `backup --plan`: the selected jobs of the target's plan, one after the other; a failed
/// job is reported ([`Event::JobBackedUp`]) and the others still run.
pub async fn backup_plan(env: &Env, target: &Target, req: PlanRequest) -> Result<PlanBackup> {
    let p: &Plan = target
        .plan
        .as_deref()
        .ok_or_else(|| Error::Usage("backup_plan needs a plan's target".into()))?;
    let jobs = p.select_jobs(req.job.as_deref())?;
    let opened = target.open_for_write().await?;
    let (repo, fanout) = (&opened.repo, opened.fanout.as_deref());
    // A region that missed earlier runs is caught up first, so it commits this one too.
    super::sync::catch_up(env, repo, fanout).await?;
    let mut outcomes = Vec::new();
    for job in jobs {
        env.cancel.check()?;
        let opts = BackupOptions {
            tags: [job.tags.clone(), req.tags.clone()].concat(),
            host: req.host.clone(),
            plan: Some(p.name.clone()),
            job: Some(job.name.clone()),
            force: req.force,
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
        let regions: Vec<_> = match fanout {
            Some(m) => target
                .regions
                .iter()
                .map(|r| r.catalog_region.clone())
                .zip(m.results())
                .collect(),
            None => Vec::new(),
        };
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
    Ok(PlanBackup {
        plan: p.name.clone(),
        jobs: outcomes,
        regions: fanout.map(|m| m.results()),
    })
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub plan: Option<String>,
    pub job: Option<String>,
    /// Skip change detection and re-read everything.
    pub force: bool,
}

/// One committed snapshot and how its run went.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
    pub partial: bool,
    pub packs_adopted: usize,
    /// Blobs found damaged by the verification before upload and sealed again (T27).
    pub blobs_resealed: u64,
}

/// Runs one backup of `source` into `repo` and commits a snapshot — the commit protocol:
/// lock → index (adopting packs an interrupted run left) → parent → pipeline → index →
/// lock check → (with several regions: every region holds every pack and index) →
/// snapshot (the commit point). `fanout`: the multi-region store behind `repo`, if any.
pub async fn snapshot_source(
    repo: &Repository,
    fanout: Option<&MultiStore>,
    mut source: Box<dyn Source>,
    opts: &BackupOptions,
    progress: ProgressBar,
    cancel: Cancel,
) -> Result<SnapshotReport> {
    repo.with_lock("backup", false, async |lock| {
        snapshot_locked(repo, fanout, &mut source, opts, progress, cancel, lock).await
    })
    .await
}

async fn snapshot_locked(
    repo: &Repository,
    fanout: Option<&MultiStore>,
    source: &mut Box<dyn Source>,
    opts: &BackupOptions,
    progress: ProgressBar,
    cancel: Cancel,
    lock: &crate::repo::lock::Lock,
) -> Result<SnapshotReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let mut index = repo.load_index().await?;
    let packs_adopted = repo.adopt_unindexed_packs(&mut index).await?;
    let host = opts.host.clone().unwrap_or_else(hostname);

    let probe = Snapshot {
        time: started,
        consistency_time: started,
        host: host.clone(),
        username: username(),
        tags: opts.tags.clone(),
        paths: source.paths(),
        tree: BlobId([0; 32]),
        parent: None,
        source: SourceMeta::from_parts(source.kind(), serde_json::Value::Null),
        plan: opts.plan.clone(),
        job: opts.job.clone(),
        summary: Summary::default(),
        program_version: env!("CARGO_PKG_VERSION").into(),
    };
    let parent = if opts.force {
        None
    } else {
        repo.list_snapshots()
            .await?
            .into_iter()
            .rev()
            .find(|(_, s)| s.same_lineage(&probe))
    };
    let parent_tree = match &parent {
        Some((_, s)) if index.contains(&s.tree) => match repo.load_tree(&index, &s.tree).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "parent snapshot unreadable; reading everything");
                None
            }
        },
        _ => None,
    };

    let repo2 = repo.clone();
    let index = Arc::new(index);
    let rt = tokio::runtime::Handle::current();
    let src = std::mem::replace(source, Box::new(NoSource));
    let (src, outcome) = tokio::task::spawn_blocking(move || {
        let mut src = src;
        let mut pipe = Pipeline::start(&repo2, &index, rt.clone(), cancel);
        let chunker = Chunker::new(repo2.config.chunker, repo2.keys.chunker_seed());
        let mut ctx = BackupContext {
            repo: &repo2,
            index: &index,
            pipe: &mut pipe,
            chunker,
            rt,
            progress,
            summary: Summary::default(),
            warnings: Vec::new(),
            partial: false,
        };
        let out = src.run(&mut ctx, parent_tree.as_ref());
        let (summary, warnings, partial) = (ctx.summary, ctx.warnings, ctx.partial);
        ctx.progress.finish_and_clear();
        let res = out.and_then(|o| {
            pipe.finish()
                .map(|stats| (o, stats, summary, warnings, partial))
        });
        (src, res)
    })
    .await
    .map_err(|e| Error::Other(format!("backup thread failed: {e}")))?;
    *source = src;
    let (out, stats, mut summary, warnings, partial) = outcome?;

    lock.check()?;
    summary.blobs_added = stats.blobs_added;
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.packs_added = stats.packs_added;
    summary.duration_secs = clock.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        consistency_time: out.consistency_time,
        tree: out.tree,
        parent: parent.map(|(id, _)| id),
        source: SourceMeta::from_parts(probe.source.kind(), out.meta),
        summary,
        ..probe
    };
    if let Some(multi) = fanout {
        // Multi-region commit: only regions holding every index file and every indexed pack
        // (at its indexed size) get the snapshot; the others are reported as lagging.
        let full = repo.load_index().await?;
        let mut required: Vec<(String, Option<u64>)> = full
            .packs()
            .iter()
            .map(|(id, size)| (crate::repo::pack_key(id), Some(*size)))
            .collect();
        required.extend(
            full.files
                .iter()
                .map(|id| (ObjectKind::Index.key(id), None)),
        );
        multi
            .prepare_commit(&["data/", "index/"], &required)
            .await?;
        lock.check()?;
    }
    let snapshot_id = repo.save_json(ObjectKind::Snapshot, &snapshot).await?;
    tracing::info!(snapshot = %snapshot_id, "snapshot committed");
    Ok(SnapshotReport {
        snapshot_id,
        snapshot,
        warnings,
        partial,
        packs_adopted,
        blobs_resealed: stats.blobs_resealed,
    })
}

/// Placeholder value left in the caller's slot while the real source runs on its thread.
struct NoSource;
impl Source for NoSource {
    fn kind(&self) -> &str {
        "none"
    }
    fn paths(&self) -> Vec<String> {
        Vec::new()
    }
    fn run(&mut self, _: &mut BackupContext<'_>, _: Option<&Tree>) -> Result<SourceOutput> {
        Err(Error::Other("source already consumed".into()))
    }
}
