//! The repair use cases: `lifeboat repair` (for what the next backup cannot heal) and
//! `lifeboat unlock` (locks left by processes that died).
//!
//! `repair`, under an exclusive lock on one region: the index is rebuilt from the pack
//! headers (packs that are gone drop out of it, packs no index listed join it; with
//! `read_data`, every pack is read in full first and a damaged one is replaced by a pack of
//! its blobs that still verify, T11), then every
//! snapshot is walked for data no pack holds. Those snapshots are reported (exit 13); with
//! `rewrite_snapshots` each is written again without the files and directories that cannot
//! be restored (tagged `repaired`) and the original removed — a snapshot whose root directory
//! is lost is left as it is and still reported.

use super::record::{not_recorded, open_best_effort};
use super::target::Target;
use super::Env;
use crate::error::ExitCode;
use crate::ids::{BlobId, SnapshotId};
use crate::pipeline::Pipeline;
use crate::repo::heal::{IndexRebuild, PackSalvage, SnapshotDamage};
use crate::repo::index::Index;
use crate::repo::lock::{LockFile, UnlockReport};
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;
use crate::sys::Cancel;
use crate::{Error, Result};
use tokio::runtime::Handle;

#[derive(Debug, Clone, Default)]
pub struct RepairRequest {
    /// The region to repair; required when the target has several.
    pub region: Option<String>,
    /// Write snapshots that point at lost data again without the lost files.
    pub rewrite_snapshots: bool,
    /// Read every pack in full first and salvage damaged ones (T11).
    pub read_data: bool,
}

/// One snapshot that needs data no pack holds, and what repair did about it.
#[derive(Debug, Clone)]
pub struct DamagedSnapshot {
    pub damage: SnapshotDamage,
    /// The snapshot written in its place (with `rewrite_snapshots`, unless its root is lost).
    pub rewritten_as: Option<SnapshotId>,
    rewritten: Option<(SnapshotId, Snapshot)>,
}

/// The result of `lifeboat repair`.
#[derive(Debug, Clone)]
pub struct Repair {
    pub location: String,
    /// Damaged packs found by `read_data`, and what became of their blobs.
    pub salvaged: Vec<PackSalvage>,
    pub index: IndexRebuild,
    pub snapshots_checked: usize,
    pub damaged: Vec<DamagedSnapshot>,
}

impl Repair {
    /// 0 when every snapshot restores (or was rewritten to); 13 when a snapshot still
    /// points at lost data.
    pub fn exit_code(&self) -> ExitCode {
        if self.damaged.iter().any(|d| d.rewritten_as.is_none())
            || self.salvaged.iter().any(|p| p.left_because.is_some())
        {
            ExitCode::Integrity
        } else {
            ExitCode::Ok
        }
    }
}

/// `lifeboat repair`: rebuild the index from the packs; report (or rewrite) the snapshots that
/// point at lost data.
pub async fn repair(env: &Env, target: &Target, req: RepairRequest) -> Result<Repair> {
    if req.region.is_none() && target.is_multi() {
        return Err(Error::Usage(format!(
            "repair works on one region at a time: pass --region NAME (regions: {})",
            target.region_names()
        )));
    }
    // The catalog's name for the region: a plain `--repo` run records as `local`.
    let catalog_region = match (&req.region, target.is_multi()) {
        (Some(r), true) => target.region(r)?.catalog_region.clone(),
        _ => super::target::LOCAL_REGION.to_string(),
    };
    let repo = target.open_for_read(req.region.as_deref(), false).await?;
    let repair = repo
        .with_lock("repair", true, async |lock| {
            repo.sweep_leftovers().await;
            let salvaged = if req.read_data {
                repo.salvage_damaged_packs(&env.progress.bytes("packs read"))
                    .await?
            } else {
                Vec::new()
            };
            env.cancel.check()?;
            let index = repo.rebuild_index(&env.progress.bytes("packs")).await?;
            env.cancel.check()?;
            let loaded = repo.load_index().await?;
            let snapshots_checked = repo.list_snapshots().await?.len();
            let mut damaged = Vec::new();
            for damage in repo.lost_data(&loaded).await? {
                env.cancel.check()?;
                let rewritten = if req.rewrite_snapshots {
                    lock.check()?;
                    rewrite_without_lost(&repo, &loaded, &damage, &env.cancel).await?
                } else {
                    None
                };
                damaged.push(DamagedSnapshot {
                    damage,
                    rewritten_as: rewritten.as_ref().map(|(id, _)| *id),
                    rewritten,
                });
            }
            Ok(Repair {
                location: repo.location(),
                salvaged,
                index,
                snapshots_checked,
                damaged,
            })
        })
        .await?;
    record_rewrites(env, &repo, &catalog_region, &repair).await;
    Ok(repair)
}

/// Tells the catalog (best effort) that each rewritten snapshot replaced its original: a
/// deliberate replacement, not a rollback for its high-water mark.
async fn record_rewrites(env: &Env, repo: &Repository, region: &str, r: &Repair) {
    const WHAT: &str = "the rewritten snapshots were not recorded in the catalog; `lifeboat catalog rebuild` records them once the catalog is back";
    let rewrites: Vec<_> = r
        .damaged
        .iter()
        .filter_map(|d| d.rewritten.as_ref().map(|new| (d.damage.id, new)))
        .collect();
    if rewrites.is_empty() {
        return;
    }
    let mut warnings = Vec::new();
    let Some(cat) = open_best_effort(env, &mut warnings).await else {
        not_recorded(env, &warnings, WHAT);
        return;
    };
    let res = async {
        cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
            .await?;
        for (old, (new_id, new)) in &rewrites {
            cat.record_snapshot(repo.id(), region, new_id, new).await?;
            cat.forget_snapshots(repo.id(), region, &[*old]).await?;
        }
        Ok::<(), crate::catalog::CatalogError>(())
    }
    .await;
    if let Err(e) = res {
        warnings.push(e.to_string());
    }
    cat.close().await;
    not_recorded(env, &warnings, WHAT);
}

#[derive(Debug, Clone, Default)]
pub struct UnlockRequest {
    /// The region to unlock; all regions when `None`.
    pub region: Option<String>,
    /// Remove every lock, live ones included.
    pub remove_all: bool,
}

/// The result of `lifeboat unlock`.
#[derive(Debug, Clone)]
pub struct Unlock {
    /// Per region location: what was removed and what was kept.
    pub regions: Vec<(String, UnlockReport)>,
}

impl Unlock {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Ok
    }

    /// Live locks that were removed (`--remove-all`): the operations holding them may now
    /// collide with others.
    pub fn live_removed(&self) -> Vec<&LockFile> {
        self.regions
            .iter()
            .flat_map(|(_, r)| r.removed.iter().filter(|(_, why)| why.is_live()))
            .map(|(l, _)| l)
            .collect()
    }
}

/// `lifeboat unlock`: removes stale locks (expired, or held by a process of this host that no
/// longer runs); with `remove_all`, every lock.
pub async fn unlock(env: &Env, target: &Target, req: UnlockRequest) -> Result<Unlock> {
    let mut regions = Vec::new();
    let chosen: Vec<&super::target::Region> = match &req.region {
        Some(r) => vec![target.region(r)?],
        None => target.regions.iter().collect(),
    };
    for region in chosen {
        env.cancel.check()?;
        let repo = target.open_region(region).await?;
        let report = repo.remove_stale_locks(req.remove_all).await?;
        if req.remove_all {
            for (l, _) in report.removed.iter().filter(|(_, why)| why.is_live()) {
                env.warn(format!(
                    "removed a live {} lock for {} held by pid {} on {}: if that process still runs, it may now collide with others",
                    if l.exclusive { "exclusive" } else { "shared" },
                    l.purpose,
                    l.pid,
                    l.host
                ));
            }
        }
        regions.push((repo.location(), report));
    }
    Ok(Unlock { regions })
}

/// Writes `damage`'s snapshot again without the files and directories whose data is lost
/// (tagged `repaired`) and removes the original; `None` when its root tree is lost (the
/// snapshot is left as it is). The new trees go through the pipeline into a new pack and
/// index before the new snapshot is committed.
async fn rewrite_without_lost(
    repo: &Repository,
    index: &Index,
    damage: &SnapshotDamage,
    cancel: &Cancel,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    let Some((trees, root)) = repo.trees_without_lost(index, damage).await? else {
        return Ok(None);
    };
    let (writer, rt, cancel) = (repo.clone(), Handle::current(), cancel.clone());
    let idx = repo.load_index().await?;
    let written = tokio::task::spawn_blocking(move || -> Result<Option<BlobId>> {
        let mut pipe = Pipeline::start(&writer, &idx, rt, cancel);
        let mut last = None;
        for t in &trees {
            let bytes = serde_json::to_vec(t).expect("trees serialize");
            last = Some(pipe.add(BlobKind::Tree, bytes)?);
        }
        pipe.finish()?;
        Ok(last)
    })
    .await
    .map_err(|e| Error::Other(format!("repair thread failed: {e}")))??;
    debug_assert_eq!(written, Some(root));
    repo.replace_snapshot(damage, root).await.map(Some)
}
