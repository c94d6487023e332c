//! `lifeboat prune`: frees the packs no snapshot needs, region by region, with the two-phase
//! scheme of [`crate::repo::prune`] (documented in `docs/format.md`, "Prune"): phase 1 under a
//! shared lock beside running backups, phase 2 under a short exclusive lock. Afterwards the
//! catalog's verification ledger drops the deleted packs (best effort).

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use super::record::open_best_effort;
use super::target::{Region, Target};
use super::{Env, Event};
use crate::error::ExitCode;
use crate::ids::SnapshotId;
use crate::repo::multipart_gc::{abort_orphans, MultipartReport};
use crate::repo::prune::{self as core, MarkOptions, MarkReport, SweepReport};
use crate::repo::reach::{list_snapshots, load_snapshots};
use crate::repo::snapshot::Snapshot;
use crate::repo::{ObjectKind, Repository};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// Repack partly used packs until at most this fraction (0–1) of the repository is unused.
    pub max_unused: f64,
    /// Merge every small pack whenever that makes fewer packs (not only the smallest, once
    /// there are ten of a kind).
    pub repack_small: bool,
    /// Packs are deleted only when their plan is at least this old (0: in the same run).
    pub grace: Duration,
    /// Report what would be condemned; change nothing.
    pub dry_run: bool,
}

impl Default for PruneRequest {
    fn default() -> Self {
        PruneRequest {
            max_unused: core::DEFAULT_MAX_UNUSED,
            repack_small: false,
            grace: Duration::ZERO,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub regions: Vec<PruneRegion>,
}

/// One region's prune.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRegion {
    pub name: String,
    pub region: String,
    /// Why the region was not pruned (it is left for the next run).
    pub error: Option<String>,
    pub mark: Option<MarkReport>,
    pub sweep: Option<SweepReport>,
    /// Phase 2 could not take its exclusive lock (a backup or drill is running): the plan
    /// is stored and the next prune carries it out.
    pub deferred: Option<String>,
    /// Object Lock: the retention pass that followed (destinations with `object_lock_mode`).
    pub object_lock: Option<crate::repo::object_lock::LockReport>,
    /// Orphaned multipart uploads aborted under the exclusive lock (T02).
    pub multipart: Option<MultipartReport>,
    pub catalog_warnings: Vec<String>,
}

impl PruneRegion {
    pub fn exit_code(&self) -> ExitCode {
        if self.error.is_some() {
            ExitCode::Partial
        } else if self.deferred.is_some() {
            ExitCode::Locked
        } else {
            ExitCode::Ok
        }
    }
}

impl PruneReport {
    pub fn exit_code(&self) -> ExitCode {
        if self.regions.iter().any(|r| r.error.is_some()) {
            return ExitCode::Partial;
        }
        self.regions
            .iter()
            .map(PruneRegion::exit_code)
            .max_by_key(|c| c.code())
            .unwrap_or(ExitCode::Ok)
    }

    pub fn freed_bytes(&self) -> u64 {
        self.regions
            .iter()
            .filter_map(|r| r.sweep.as_ref())
            .map(|s| s.freed_bytes)
            .sum()
    }
}

/// `lifeboat prune`: every region of the target (or `region`).
pub async fn prune(
    env: &Env,
    target: &Target,
    region: Option<&str>,
    req: PruneRequest,
) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&req.max_unused) {
        return Err(Error::Usage(format!(
            "--max-unused {}: give a percentage from 0% to 100%",
            req.max_unused * 100.0
        )));
    }
    let regions: Vec<&Region> = match region {
        Some(r) => vec![target.region(r)?],
        None => target.regions.iter().collect(),
    };
    let single = regions.len() == 1;
    let mut out = Vec::new();
    for r in regions {
        env.cancel.check()?;
        let res = async {
            let repo = target.open_region(r).await?;
            prune_repo(env, &repo, &target.recorded_region(r), &req).await
        }
        .await;
        match res {
            Ok(mut pr) => {
                pr.name = r.name.clone();
                out.push(pr);
            }
            Err(e) if single => return Err(e),
            Err(e @ Error::Interrupted) => return Err(e),
            Err(e) => {
                env.warn(format!(
                    "region {}: not pruned, the next run will: {e}",
                    r.name
                ));
                out.push(PruneRegion {
                    name: r.name.clone(),
                    region: r.catalog_region.clone(),
                    error: Some(e.to_string()),
                    mark: None,
                    sweep: None,
                    deferred: None,
                    object_lock: None,
                    multipart: None,
                    catalog_warnings: Vec::new(),
                });
            }
        }
    }
    Ok(PruneReport {
        dry_run: req.dry_run,
        regions: out,
    })
}

/// Prunes one repository (one region): phase 1, then phase 2 for every plan old enough.
pub async fn prune_repo(
    env: &Env,
    repo: &Repository,
    catalog_region: &str,
    req: &PruneRequest,
) -> Result<PruneRegion> {
    if !req.dry_run {
        super::object_lock::check_may_delete(repo, "prune").await?;
    }
    // Temp files of killed writers (only those whose writer is gone) go first.
    repo.sweep_leftovers().await;
    let mut pr = PruneRegion {
        name: repo.location(),
        region: catalog_region.to_string(),
        error: None,
        mark: None,
        sweep: None,
        deferred: None,
        object_lock: None,
        multipart: None,
        catalog_warnings: Vec::new(),
    };
    let opts = MarkOptions {
        max_unused: req.max_unused,
        repack_small: req.repack_small,
        dry_run: req.dry_run,
    };
    let bar = env.progress.bytes("repack");
    let mark = repo
        .with_lock("prune (phase 1: mark)", false, async |_| {
            // One listing of snapshots/, each snapshot loaded once: checked against the
            // catalog, then walked by phase 1.
            let listed = if req.dry_run {
                list_snapshots(repo).await?
            } else {
                // The lock measured the store's clock; grace periods and leases are judged
                // in it.
                repo.refuse_skewed_clock("prune")?;
                listing_checked(env, repo, catalog_region).await?
            };
            core::mark_listed(repo, listed, opts, bar, &env.cancel).await
        })
        .await?;
    pr.mark = Some(mark);
    if req.dry_run {
        pr.multipart = Some(abort_orphans(repo, None).await?);
        return Ok(pr);
    }
    let sweep = repo
        .with_lock("prune (phase 2: delete)", true, async |lock| {
            let s = core::sweep(repo, req.grace, repo.now(), &env.cancel, lock).await?;
            lock.check()?;
            Ok((s, abort_orphans(repo, Some(lock)).await?))
        })
        .await;
    match sweep {
        Ok((s, multipart)) => {
            pr.multipart = Some(multipart);
            let deleted = s.deleted_packs;
            pr.sweep = Some(s);
            if deleted > 0 {
                update_ledger(env, repo, catalog_region, &mut pr.catalog_warnings).await;
            }
        }
        Err(Error::Locked { holder, .. }) => {
            env.warn(format!(
                "{}: packs not deleted yet, the repository is in use ({holder}); the prune plan is stored and the next prune deletes them",
                repo.location()
            ));
            pr.deferred = Some(holder);
        }
        Err(e) => return Err(e),
    }
    // What the remaining snapshots need stays locked (a no-op without Object Lock).
    pr.object_lock = super::object_lock::extend(env, repo).await?;
    Ok(pr)
}

/// The region's snapshots, listed and loaded for phase 1 — refused (exit 13) when the
/// listing lacks snapshots the catalog knows the region holds (T10): a listing cut short —
/// a dropped page, a cleared `IsTruncated` — would make prune take the data of every
/// snapshot it hides for unused. A deliberate `forget` removes the catalog's rows before the
/// snapshot files, so it never trips this. A snapshot committed and recorded between the
/// listing and the catalog read is seen on the next listing (three tries; only snapshots
/// not loaded yet are read again). Without a catalog there is nothing to compare: a warning.
async fn listing_checked(
    env: &Env,
    repo: &Repository,
    region: &str,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut warnings = Vec::new();
    let Some(cat) = open_best_effort(env, &mut warnings).await else {
        env.warn(format!(
            "{}: the catalog cannot be read, so prune cannot check the listing of snapshots against it ({})",
            repo.location(),
            warnings.join("; ")
        ));
        return list_snapshots(repo).await;
    };
    let mut listing: Vec<(SnapshotId, Snapshot)> = Vec::new();
    let mut missing = Vec::new();
    for _ in 0..3 {
        let ids = repo.list_ids(ObjectKind::Snapshot).await?;
        let loaded: HashSet<SnapshotId> = listing.iter().map(|(id, _)| *id).collect();
        let listed: HashSet<SnapshotId> = ids.iter().copied().collect();
        listing.retain(|(id, _)| listed.contains(id));
        let new: Vec<SnapshotId> = ids.into_iter().filter(|id| !loaded.contains(id)).collect();
        listing.extend(load_snapshots(repo, new).await?);
        missing = cat
            .check_high_water(repo.id(), region, &listing)
            .await?
            .into_iter()
            .filter(|f| f.severity == crate::repo::verify::Severity::Error)
            .collect();
        if missing.is_empty() {
            break;
        }
    }
    cat.close().await;
    if missing.is_empty() {
        return Ok(listing);
    }
    let named: Vec<String> = missing
        .iter()
        .take(5)
        .map(|f| format!("{}: {}", f.object, f.message))
        .collect();
    Err(Error::integrity(
        format!("{} snapshots/", repo.location()),
        format!(
            "prune refused, nothing was deleted: the listing lacks {} snapshot(s) the catalog knows ({}{}); an incomplete listing must not decide what is unused. Run `lifeboat verify` to see what the region serves; if those snapshots were really deleted, `lifeboat catalog rebuild --forget-missing` records it, and prune runs again",
            missing.len(),
            named.join("; "),
            if missing.len() > 5 { "; …" } else { "" }
        ),
    ))
}

/// Drops the deleted packs from the verification ledger (and adds the repacked ones).
async fn update_ledger(env: &Env, repo: &Repository, region: &str, warnings: &mut Vec<String>) {
    let mut w = Vec::new();
    if let Some(cat) = open_best_effort(env, &mut w).await {
        // The packs the index files list, without the blob map of a loaded index.
        match repo.load_index_files().await {
            Ok(files) => {
                let mut seen = std::collections::HashSet::new();
                let packs: Vec<(crate::ids::PackId, u64)> = files
                    .iter()
                    .flat_map(|(_, f)| f.packs.iter())
                    .filter(|p| seen.insert(p.id))
                    .map(|p| (p.id, p.size))
                    .collect();
                drop(files);
                if let Err(e) = cat.sync_packs(repo.id(), region, &packs).await {
                    w.push(e.to_string());
                }
            }
            Err(e) => w.push(e.to_string()),
        }
    }
    if !w.is_empty() {
        env.emit(Event::CatalogNotRecorded {
            what: "the verification ledger still lists the deleted packs; the next `verify --budget` or `catalog rebuild` drops them".into(),
            warnings: w.clone(),
        });
        warnings.extend(w);
    }
}
