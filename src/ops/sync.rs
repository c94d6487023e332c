//! Copying between regions: [`sync`] (`lifeboat sync`: copy what lagging regions lack from
//! the others, verified, snapshots last) and [`catch_up`] (the same before a multi-region
//! backup, so a region that missed earlier runs commits this one instead of lagging again).

use super::target::Target;
use super::{record, Env, Event};
use crate::error::ExitCode;
use crate::repo::sync::SyncRegionReport;
use crate::repo::Repository;
use crate::store::multi::MultiStore;
use crate::store::DynStore;
use crate::{Error, Result};

/// Before a multi-region write: copy to every reachable region what it lacks from the
/// others. Regions that cannot be caught up are left to the commit check. Each region that
/// was given something (or failed) is an [`Event::CaughtUp`]; a region that was given
/// snapshots and is complete now is recorded in the catalog as holding every snapshot, as
/// `lifeboat sync` records it (else `catalog rebuild` would find the copied ones missing).
pub async fn catch_up(
    env: &Env,
    target: &Target,
    repo: &Repository,
    fanout: Option<&MultiStore>,
) -> Result<Vec<SyncRegionReport>> {
    let Some(multi) = fanout else {
        return Ok(Vec::new());
    };
    let regions = multi.live_regions();
    if regions.len() < 2 {
        return Ok(Vec::new());
    }
    let reports = repo
        .with_lock("catch up regions", false, async |_| {
            crate::repo::sync::sync(repo, &regions, &env.cancel).await
        })
        .await?;
    for r in reports
        .iter()
        .filter(|r| r.objects_copied > 0 || !r.errors.is_empty())
    {
        env.emit(Event::CaughtUp(r.clone()));
    }
    let filled: Vec<String> = target
        .regions
        .iter()
        .filter(|d| {
            reports
                .iter()
                .any(|r| r.region == d.name && r.complete && r.snapshots_copied > 0)
        })
        .map(|d| d.catalog_region.clone())
        .collect();
    record::record_synced(env, repo, &filled).await;
    Ok(reports)
}

/// The result of `lifeboat sync`.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub regions: Vec<SyncRegionReport>,
}

impl SyncReport {
    pub fn exit_code(&self) -> ExitCode {
        match self.regions.iter().filter(|r| r.complete).count() {
            n if n == self.regions.len() => ExitCode::Ok,
            0 => ExitCode::Error,
            _ => ExitCode::Partial,
        }
    }
}

/// `lifeboat sync`: copy what lagging regions lack from the others. With a plan, the
/// catalog learns which regions now hold every snapshot.
pub async fn sync(env: &Env, target: &Target) -> Result<SyncReport> {
    if target.regions.len() < 2 {
        return Err(Error::Usage(
            "sync needs at least two regions: repeat --repo, use --destinations, or a plan with several [[destinations]]".into(),
        ));
    }
    let repo = target.open_for_read(None, false).await?;
    let regions: Vec<(String, DynStore)> = target
        .regions
        .iter()
        .map(|r| (r.name.clone(), r.dest.store.clone()))
        .collect();
    let reports = repo
        .with_lock("sync", false, async |_| {
            crate::repo::sync::sync(&repo, &regions, &env.cancel).await
        })
        .await?;
    // Recorded under the regions' catalog names (a plan's destination names, or the names
    // ad-hoc `--repo` regions are recorded under by backups), so status, drills and the
    // high-water checks of `verify` know what each region now holds.
    let complete: Vec<String> = target
        .regions
        .iter()
        .filter(|d| reports.iter().any(|r| r.region == d.name && r.complete))
        .map(|d| d.catalog_region.clone())
        .collect();
    record::record_synced(env, &repo, &complete).await;
    Ok(SyncReport { regions: reports })
}
