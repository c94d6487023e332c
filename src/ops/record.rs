//! Best-effort writes to the catalog after the repository has committed: a catalog that
//! cannot be opened or written costs a warning ([`Event::CatalogNotRecorded`]), never a
//! committed backup, sync, verification or drill (T30).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::target::{Target, LOCAL_REGION};
use super::{Env, Event};
use crate::catalog::{self, BackupRun, Catalog, OpenOptions, RunId, RunStatus, SetRow};
use crate::error::ExitCode;
use crate::ids::ObjectId;
use crate::repo::set::SetManifest;
use crate::repo::snapshot::Snapshot;
use crate::repo::{list_ids_in, ObjectKind, Repository};
use crate::store::multi::{MultiStore, RegionResult, RegionStatus};
use crate::store::DynStore;
use crate::{Error, Result};

use super::engine::SnapshotReport;

/// How long best-effort writers wait for a catalog server before going on without it, and
/// for another process's lock of a SQLite catalog.
const BEST_EFFORT_TIMEOUT: Duration = Duration::from_secs(5);
const BEST_EFFORT_BUSY: Duration = Duration::from_secs(30);

/// Opens the catalog for a use case that needs it (status, history, rebuild, `--budget`).
pub async fn open_catalog(env: &Env) -> Result<Catalog> {
    Ok(Catalog::open(env.catalog_location()?).await?)
}

/// Opens the catalog for a write that must not fail the use case: `None` plus a warning.
pub async fn open_best_effort(env: &Env, warnings: &mut Vec<String>) -> Option<Catalog> {
    let opts = OpenOptions {
        connect_timeout: BEST_EFFORT_TIMEOUT,
        // Waiting on another process's lock of a SQLite catalog (two backups finishing at
        // once, a checkpoint fsyncing on a loaded disk) is worth more than the record lost.
        busy_timeout: BEST_EFFORT_BUSY,
    };
    let loc = match env.catalog_location() {
        Ok(l) => l,
        Err(e) => {
            warnings.push(e.to_string());
            return None;
        }
    };
    match Catalog::open_with(loc, &opts).await {
        Ok(c) => Some(c),
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    }
}

/// Tells the caller that `what` was not recorded, and what that means.
pub fn not_recorded(env: &Env, warnings: &[String], consequence: &str) {
    if !warnings.is_empty() {
        env.emit(Event::CatalogNotRecorded {
            what: consequence.to_string(),
            warnings: warnings.to_vec(),
        });
    }
}

const BACKUP_NOT_RECORDED: &str = "the backup run was not recorded in the catalog; it is safe in the repository, and the next backup (or `lifeboat catalog rebuild`) adds its snapshot once the catalog is back";

/// Records a backup run (and its snapshot) after the repository commit: one run per region
/// (`regions`: the catalog's name for each destination and how it fared; empty for a plain
/// `--repo` run, recorded as region `local`). The snapshot is recorded in the regions that
/// Opens the catalog best effort, runs `write` on it and closes it; an error (opening or
/// writing) becomes a warning, returned and emitted with `consequence`
/// ([`Event::CatalogNotRecorded`]). The shape of every recorder that must never fail the
/// operation it records.
async fn best_effort<E: ToString>(
    env: &Env,
    consequence: &str,
    write: impl AsyncFnOnce(&Catalog) -> std::result::Result<(), E>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(cat) = open_best_effort(env, &mut warnings).await else {
        not_recorded(env, &warnings, consequence);
        return warnings;
    };
    if let Err(e) = write(&cat).await {
        warnings.push(e.to_string());
    }
    cat.close().await;
    not_recorded(env, &warnings, consequence);
    warnings
}

/// committed it. Never fails: returns the warnings (empty when recorded).
pub async fn record_backup(
    env: &Env,
    repo: &Repository,
    started: DateTime<Utc>,
    host: &str,
    plan_job: Option<(&str, &str)>,
    outcome: std::result::Result<&SnapshotReport, &Error>,
    regions: &[RecordedRegion],
) -> Vec<String> {
    best_effort(env, BACKUP_NOT_RECORDED, async |cat: &Catalog| {
        let finished = cat.now();
        let base = match outcome {
            Ok(r) => BackupRun {
                run_id: RunId::random(),
                repo_id: *repo.id(),
                plan: r.snapshot.plan.clone().unwrap_or_default(),
                job: r.snapshot.job.clone().unwrap_or_default(),
                region: LOCAL_REGION.into(),
                host: r.snapshot.host.clone(),
                started,
                finished,
                status: if r.partial {
                    RunStatus::Partial
                } else {
                    RunStatus::Ok
                },
                exit_code: if r.partial {
                    ExitCode::Partial.code()
                } else {
                    ExitCode::Ok.code()
                },
                snapshot_id: Some(r.snapshot_id),
                bytes_processed: r.snapshot.summary.bytes_processed,
                bytes_added: r.snapshot.summary.bytes_added,
                bytes_stored: r.snapshot.summary.bytes_stored,
                error: None,
            },
            Err(e) => BackupRun {
                run_id: RunId::random(),
                repo_id: *repo.id(),
                plan: plan_job.map(|(p, _)| p.to_string()).unwrap_or_default(),
                job: plan_job.map(|(_, j)| j.to_string()).unwrap_or_default(),
                region: LOCAL_REGION.into(),
                host: host.into(),
                started,
                finished,
                status: RunStatus::Failed,
                exit_code: e.exit_code().code(),
                snapshot_id: None,
                bytes_processed: 0,
                bytes_added: 0,
                bytes_stored: 0,
                error: Some(e.to_string()),
            },
        };
        // (run, whether this region holds the snapshot)
        let runs: Vec<(BackupRun, bool)> = if regions.is_empty() {
            vec![(base.clone(), outcome.is_ok())]
        } else {
            regions
                .iter()
                .map(
                    |RecordedRegion {
                         name, result: r, ..
                     }| {
                        let mut run = base.clone();
                        run.run_id = RunId::random();
                        run.region = name.clone();
                        let committed = outcome.is_ok() && r.status == RegionStatus::Complete;
                        if outcome.is_ok() && !committed {
                            run.status = RunStatus::Failed;
                            run.snapshot_id = None;
                            run.error = Some(format!(
                                "region {} {}: {}",
                                r.region,
                                if r.status == RegionStatus::Lagging {
                                    "is lagging"
                                } else {
                                    "failed"
                                },
                                r.error.as_deref().unwrap_or("no detail")
                            ));
                        }
                        (run, committed)
                    },
                )
                .collect()
        };
        cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
            .await
            .map_err(|e| e.to_string())?;
        for (run, committed) in &runs {
            // Snapshot first: a run row pointing at a snapshot the catalog lacks would mislead.
            if let (Ok(r), true) = (outcome, committed) {
                cat.record_snapshot(repo.id(), &run.region, &r.snapshot_id, &r.snapshot)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            cat.record_backup_run(run)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })
    .await
}

/// One region of a fan-out backup, as the catalog records it.
#[derive(Debug, Clone)]
pub struct RecordedRegion {
    /// The catalog's name for the region.
    pub name: String,
    /// What the run did there.
    pub result: RegionResult,
    /// The region's own store (the snapshots it holds are listed there).
    pub store: DynStore,
}

impl RecordedRegion {
    /// The catalog's name for each region a fan-out wrote, with how it fared so far and its
    /// store (empty without a fan-out: the run is recorded as region `local`). Plan and
    /// ad-hoc backups record alike, so `forget` and `verify` find their rows under the same
    /// names.
    pub fn of(target: &Target, fanout: Option<&MultiStore>) -> Vec<RecordedRegion> {
        match fanout {
            Some(m) => target
                .regions
                .iter()
                .zip(m.results())
                .map(|(r, result)| RecordedRegion {
                    name: r.catalog_region.clone(),
                    result,
                    store: r.store().clone(),
                })
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Once per backup run that committed something, after its own records: records the
/// snapshots the repository (with several regions: each region the run committed to, listed
/// on its own — what one holds says nothing about another's) holds and the catalog lacks.
/// A run killed between its commit and its record left such a snapshot; this way `status`
/// and the metrics do not miss that restore point until someone runs `catalog rebuild`.
/// Quiet when the catalog cannot be opened (the run's own record has warned about that); a
/// failure while recording is logged.
pub async fn record_missing(env: &Env, repo: &Repository, regions: &[RecordedRegion]) {
    let Some(cat) = open_best_effort(env, &mut Vec::new()).await else {
        return;
    };
    let res = async {
        if regions.is_empty() {
            record_missing_snapshots(&cat, repo, &repo.store, LOCAL_REGION).await?;
        }
        for r in regions {
            if r.result.status == RegionStatus::Complete {
                record_missing_snapshots(&cat, repo, &r.store, &r.name).await?;
            }
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "could not record the snapshots the catalog lacks; `lifeboat catalog rebuild` adds them");
    }
    cat.close().await;
}

/// Records the snapshots of `repo` in `store` (the repository's, or one region's) that the
/// catalog lacks for `region`: one listing of the snapshot names, and only the missing
/// snapshots read. One that vanished meanwhile (a concurrent `forget`) or fails its seal
/// (`verify` reports it) is skipped.
async fn record_missing_snapshots(
    cat: &Catalog,
    repo: &Repository,
    store: &DynStore,
    region: &str,
) -> std::result::Result<usize, String> {
    let ids = list_ids_in(store, ObjectKind::Snapshot)
        .await
        .map_err(|e| e.to_string())?;
    let known: HashSet<ObjectId> = cat
        .snapshots(repo.id(), Some(region))
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| r.snapshot_id)
        .collect();
    let mut added = 0;
    for id in ids.into_iter().filter(|id| !known.contains(id)) {
        let raw = match store.get(&ObjectKind::Snapshot.key(&id)).await {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.to_string()),
        };
        let snap: Snapshot = match repo.open_json(ObjectKind::Snapshot, &id, &raw) {
            Ok(s) => s,
            Err(Error::Integrity { .. }) => continue,
            Err(e) => return Err(e.to_string()),
        };
        cat.record_snapshot(repo.id(), region, &id, &snap)
            .await
            .map_err(|e| e.to_string())?;
        added += 1;
    }
    if added > 0 {
        tracing::info!(
            added,
            region,
            "recorded snapshots the catalog lacked (committed by runs that ended before recording them)"
        );
    }
    Ok(added)
}

/// Records a committed recovery-point set manifest in the regions (catalog names) that hold
/// it, so `status` and metrics read the set's RPO without opening the repository. Never
/// fails the set's backup: problems are warnings (returned, and an
/// [`Event::CatalogNotRecorded`]).
pub async fn record_set(
    env: &Env,
    repo: &Repository,
    regions: &[String],
    id: &ObjectId,
    manifest: &SetManifest,
) -> Vec<String> {
    const WHAT: &str = "the set's recovery point was not recorded in the catalog; it is committed in the repository, and `lifeboat catalog rebuild` adds it once the catalog is back (until then `status` reports no committed recovery point for it)";
    best_effort(env, WHAT, async |cat: &Catalog| {
        let now = cat.now();
        cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
            .await?;
        for region in regions {
            cat.record_set(&SetRow::from_manifest(
                *repo.id(),
                region,
                *id,
                manifest,
                Some(now),
            ))
            .await?;
        }
        Ok::<(), catalog::CatalogError>(())
    })
    .await
}

/// Records that `regions` (catalog names) now hold every snapshot of the repository, after
/// a sync made them complete. Never fails the sync: problems are warnings.
pub async fn record_synced(env: &Env, repo: &Repository, regions: &[String]) {
    if regions.is_empty() {
        return;
    }
    const WHAT: &str = "the sync was not recorded in the catalog; it is safe in the repository, and `lifeboat catalog rebuild` adds its snapshots once the catalog is back";
    best_effort(env, WHAT, async |cat: &Catalog| {
        let snaps = repo.list_snapshots().await.map_err(|e| e.to_string())?;
        let sets = repo.list_sets().await.map_err(|e| e.to_string())?;
        let now = cat.now();
        cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
            .await
            .map_err(|e| e.to_string())?;
        for region in regions {
            for (id, snap) in &snaps {
                cat.record_snapshot(repo.id(), region, id, snap)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // The sync copied the set manifests too (a region that lagged gets them now).
            for (id, m) in &sets {
                cat.record_set(&SetRow::from_manifest(
                    *repo.id(),
                    region,
                    *id,
                    m,
                    Some(now),
                ))
                .await
                .map_err(|e| e.to_string())?;
            }
        }
        Ok::<(), String>(())
    })
    .await;
}
