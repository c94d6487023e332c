//! `status` and `history`: what the catalog knows, per job and region. [`status`] judges
//! each job's honest RPO — against the plans' own objectives when plan files are given — and
//! with a repository also runs the high-water check (rollback, vanished snapshots) and syncs
//! the verification ledger with the repository's packs; [`history`] lists backup runs and
//! drills, newest first.

use std::path::Path;
use std::time::Duration;

use super::plans::load_plans;
use super::record::open_catalog;
use super::target::{Target, LOCAL_REGION};
use super::Env;
use crate::catalog::{self, HistoryEntry, HistoryFilter, StatusFilter};
use crate::error::ExitCode;
use crate::repo::verify::{Finding, Severity};
use crate::{Error, Result};

/// What `status` shows.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    /// Only this region (a plain `--repo` location is region `local`).
    pub region: Option<String>,
    /// Only this plan: a plan file, a directory of plan files (then the RPO targets are the
    /// plans' documented objectives), or a plan name.
    pub plan: Option<String>,
    /// Only this job.
    pub job: Option<String>,
    /// Coverage counts packs verified within this window ([`parse_cycle`]).
    pub cycle: Duration,
}

/// The result of `status`.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// The catalog it came from (no password).
    pub catalog: String,
    pub status: catalog::StatusReport,
    /// The high-water check of the repository given (empty without one).
    pub findings: Vec<Finding>,
}

impl StatusReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// 13 when the repository serves an older state than the catalog saw, or lost snapshots.
    pub fn exit_code(&self) -> ExitCode {
        if self.errors() > 0 {
            ExitCode::Integrity
        } else {
            ExitCode::Ok
        }
    }
}

/// Parses `--cycle`: a duration longer than zero, such as `30d` or `12h`.
pub fn parse_cycle(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        Error::Usage(format!(
            "--cycle {s:?}: {e}; expected a duration such as 30d or 12h"
        ))
    })?;
    if d.is_zero() {
        return Err(Error::Usage("--cycle must be longer than zero".into()));
    }
    Ok(d)
}

/// `lifeboat status`. With `repo` (plain `--repo` locations), the repository is checked
/// against the catalog's high-water marks and its packs are synced into the ledger first.
pub async fn status(env: &Env, repo: Option<&Target>, req: StatusRequest) -> Result<StatusReport> {
    let cat = open_catalog(env).await?;
    let mut findings: Vec<Finding> = Vec::new();
    // --plan FILE|DIR: one status per plan, judged against the plan's own objectives.
    let plan_files = match req.plan.as_deref() {
        Some(p) if Path::new(p).exists() => Some(load_plans(Path::new(p))?),
        _ => None,
    };
    let mut filter = StatusFilter {
        repo: None,
        region: req.region.clone(),
        plan: if plan_files.is_some() { None } else { req.plan },
        job: req.job,
        cycle: req.cycle,
    };
    if let Some(target) = repo {
        let repo = target.open_for_write().await?.repo;
        let region = req.region.as_deref().unwrap_or(LOCAL_REGION);
        cat.record_repository(repo.id(), &repo.location()).await?;
        let listing = repo.list_snapshots().await?;
        findings = cat.check_high_water(repo.id(), region, &listing).await?;
        let index = repo.load_index().await?;
        cat.sync_packs(repo.id(), region, index.packs()).await?;
        filter.repo = Some(*repo.id());
    }
    let report = match plan_files {
        None => cat.status(&filter).await?,
        Some(plans) => {
            let mut merged: Option<catalog::StatusReport> = None;
            for (_, plan) in &plans {
                let f = StatusFilter {
                    plan: Some(plan.name.clone()),
                    ..filter.clone()
                };
                let mut r = cat.status(&f).await?;
                let target = plan.objectives.rpo.map(|d| d.as_secs_f64());
                for j in &mut r.jobs {
                    if target.is_some() {
                        j.rpo_target_secs = target;
                        j.rpo_met = match (j.honest_rpo_secs, target) {
                            (Some(h), Some(t)) => Some(h <= t),
                            (None, Some(_)) => Some(false),
                            _ => None,
                        };
                    }
                }
                match &mut merged {
                    None => merged = Some(r),
                    Some(m) => {
                        m.jobs.extend(r.jobs);
                        for c in r.coverage {
                            if !m.coverage.contains(&c) {
                                m.coverage.push(c);
                            }
                        }
                    }
                }
            }
            merged.expect("load_plans returns at least one plan")
        }
    };
    cat.close().await;
    Ok(StatusReport {
        catalog: cat.describe().to_string(),
        status: report,
        findings,
    })
}

/// Which runs and drills `history` lists.
#[derive(Debug, Clone, Default)]
pub struct HistoryRequest {
    pub region: Option<String>,
    pub plan: Option<String>,
    pub job: Option<String>,
    /// At most this many entries, newest first (0: all).
    pub limit: usize,
}

/// The result of `history`: backup runs and drills, newest first.
#[derive(Debug, Clone)]
pub struct HistoryReport {
    pub entries: Vec<HistoryEntry>,
}

impl HistoryReport {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Ok
    }
}

/// `lifeboat history`.
pub async fn history(env: &Env, req: HistoryRequest) -> Result<HistoryReport> {
    let cat = open_catalog(env).await?;
    let entries = cat
        .history(&HistoryFilter {
            repo: None,
            region: req.region,
            plan: req.plan,
            job: req.job,
            limit: req.limit,
        })
        .await?;
    cat.close().await;
    Ok(HistoryReport { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_positive_durations() {
        assert_eq!(
            parse_cycle("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_cycle("12h").unwrap(), Duration::from_secs(12 * 3600));
        for bad in ["", "0s", "thirty days", "-1d"] {
            assert!(parse_cycle(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
