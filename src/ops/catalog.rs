//! The catalog itself: [`info`] (where it is, its backend and schema versions) and rebuilding
//! its snapshot rows (and drill history, from the stored drill reports) from repositories — [`rebuild`] for one repository (`--repo`),
//! [`rebuild_plan`] for every destination of a plan, each under the region name its backups
//! are recorded with. Divergence (the catalog lists snapshots a repository no longer has) is
//! reported, never fixed unless asked (`forget_missing`).

use super::record::open_catalog;
use super::target::{Target, LOCAL_REGION};
use super::Env;
use crate::catalog::{self, Backend, RebuildReport};
use crate::error::ExitCode;
use crate::{Error, Result};

/// The result of `catalog info`.
#[derive(Debug, Clone)]
pub struct CatalogInfo {
    /// The location, password removed.
    pub catalog: String,
    pub backend: Backend,
    /// The applied migrations, oldest first.
    pub schema_versions: Vec<i64>,
    /// The newest schema this lifeboat knows.
    pub supported_schema_version: i64,
}

impl CatalogInfo {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Ok
    }
}

/// `lifeboat catalog info`.
pub async fn info(env: &Env) -> Result<CatalogInfo> {
    let cat = open_catalog(env).await?;
    let versions = cat.schema_versions().await?;
    cat.close().await;
    Ok(CatalogInfo {
        catalog: cat.describe().to_string(),
        backend: cat.backend(),
        schema_versions: versions,
        supported_schema_version: catalog::SCHEMA_VERSION,
    })
}

/// How to rebuild.
#[derive(Debug, Clone, Default)]
pub struct RebuildRequest {
    /// `rebuild`: the region the repository is (default `local`). `rebuild_plan`: only the
    /// destination this names (by region, destination name or location).
    pub region: Option<String>,
    /// Drop catalog rows of snapshots the repository no longer has.
    pub forget_missing: bool,
}

/// Exit 13 when a region diverged (the catalog lists snapshots it no longer has).
fn diverged_exit<'a>(reports: impl IntoIterator<Item = &'a RebuildReport>) -> ExitCode {
    if reports.into_iter().any(|r| r.errors() > 0) {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    }
}

/// The result of `catalog rebuild` from one repository.
#[derive(Debug, Clone)]
pub struct RepoRebuild {
    pub catalog: String,
    /// The repository's location.
    pub repository: String,
    pub report: RebuildReport,
}

impl RepoRebuild {
    pub fn exit_code(&self) -> ExitCode {
        diverged_exit([&self.report])
    }
}

/// `lifeboat catalog rebuild --repo …`: the repository's snapshots under `req.region`
/// (default `local`).
pub async fn rebuild(env: &Env, target: &Target, req: RebuildRequest) -> Result<RepoRebuild> {
    let repo = target.open_for_write().await?.repo;
    let cat = open_catalog(env).await?;
    let region = req.region.as_deref().unwrap_or(LOCAL_REGION);
    let mut report = cat.rebuild(&repo, region, req.forget_missing).await?;
    report.drills_restored = super::report::restore_drill_history(&cat, &repo).await?;
    cat.close().await;
    Ok(RepoRebuild {
        catalog: cat.describe().to_string(),
        repository: repo.location(),
        report,
    })
}

/// One destination of a plan rebuild.
#[derive(Debug)]
pub struct RegionRebuild {
    /// The catalog's name for the region.
    pub region: String,
    /// Where it is, for people.
    pub location: String,
    /// What was rebuilt, or why the region could not be read.
    pub result: std::result::Result<RebuildReport, Error>,
}

/// The result of `catalog rebuild --plan`.
#[derive(Debug)]
pub struct PlanRebuild {
    pub catalog: String,
    pub plan: String,
    pub regions: Vec<RegionRebuild>,
}

impl PlanRebuild {
    fn rebuilt(&self) -> impl Iterator<Item = &RebuildReport> {
        self.regions.iter().filter_map(|r| r.result.as_ref().ok())
    }

    /// 13 when a region diverged, else 3 when some region could not be read; when none
    /// could, the first reason's code (see [`PlanRebuild::into_failure`]).
    pub fn exit_code(&self) -> ExitCode {
        if self.rebuilt().next().is_none() {
            if let Some(Err(e)) = self.regions.first().map(|r| &r.result) {
                return e.exit_code();
            }
        }
        match diverged_exit(self.rebuilt()) {
            ExitCode::Ok if self.regions.iter().any(|r| r.result.is_err()) => ExitCode::Partial,
            code => code,
        }
    }

    /// When no region was rebuilt: the (first) reason, which is the command's error.
    pub fn into_failure(self) -> Option<Error> {
        if self.rebuilt().next().is_some() {
            return None;
        }
        self.regions.into_iter().find_map(|r| r.result.err())
    }
}

/// `lifeboat catalog rebuild --plan`: every destination of the target's plan (or the one
/// `req.region` names), each under the region name its backups are recorded with. A
/// destination that cannot be read is reported and the others are still rebuilt; the
/// catalog itself failing stops the rebuild (it is no region's fault).
pub async fn rebuild_plan(env: &Env, target: &Target, req: RebuildRequest) -> Result<PlanRebuild> {
    let plan = target
        .plan
        .as_ref()
        .ok_or_else(|| Error::Other("catalog rebuild of a plan needs the plan".into()))?;
    let picked: Vec<_> = target
        .regions
        .iter()
        .filter(|r| req.region.as_deref().is_none_or(|n| r.is(n)))
        .collect();
    if picked.is_empty() {
        return Err(Error::Usage(format!(
            "plan {} has no destination {:?}; its regions are: {}",
            plan.file.display(),
            req.region.unwrap_or_default(),
            target
                .regions
                .iter()
                .map(|r| r.catalog_region.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let cat = open_catalog(env).await?;
    let mut regions = Vec::new();
    for region in picked {
        let rebuilt = async {
            let repo = target.open_region(region).await?;
            let mut report = cat
                .rebuild(&repo, &region.catalog_region, req.forget_missing)
                .await?;
            report.drills_restored = super::report::restore_drill_history(&cat, &repo).await?;
            Ok(report)
        }
        .await;
        if let Err(e @ Error::Catalog(_)) = rebuilt {
            cat.close().await;
            return Err(e);
        }
        regions.push(RegionRebuild {
            region: region.catalog_region.clone(),
            location: region.location.clone(),
            result: rebuilt,
        });
    }
    cat.close().await;
    Ok(PlanRebuild {
        catalog: cat.describe().to_string(),
        plan: plan.name.clone(),
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::verify::{Finding, Severity};

    fn region(result: std::result::Result<RebuildReport, Error>) -> RegionRebuild {
        RegionRebuild {
            region: "r".into(),
            location: "/r".into(),
            result,
        }
    }

    fn diverged() -> RebuildReport {
        RebuildReport {
            findings: vec![Finding {
                severity: Severity::Error,
                object: "snapshot".into(),
                message: "vanished".into(),
            }],
            ..Default::default()
        }
    }

    fn plan(regions: Vec<RegionRebuild>) -> PlanRebuild {
        PlanRebuild {
            catalog: "c".into(),
            plan: "p".into(),
            regions,
        }
    }

    #[test]
    fn plan_rebuild_exit_codes() {
        let unreadable = || Err(Error::Usage("unreadable".into()));
        assert_eq!(
            plan(vec![region(Ok(RebuildReport::default()))]).exit_code(),
            ExitCode::Ok
        );
        // a diverged region outranks an unreadable one
        let r = plan(vec![region(unreadable()), region(Ok(diverged()))]);
        assert_eq!(r.exit_code(), ExitCode::Integrity);
        assert!(r.into_failure().is_none());
        let r = plan(vec![
            region(Ok(RebuildReport::default())),
            region(unreadable()),
        ]);
        assert_eq!(r.exit_code(), ExitCode::Partial);
        // nothing rebuilt: the first reason is the command's error
        let r = plan(vec![
            region(unreadable()),
            region(Err(Error::Other("x".into()))),
        ]);
        assert_eq!(r.exit_code(), ExitCode::Usage);
        assert!(matches!(r.into_failure(), Some(Error::Usage(_))));
    }
}
