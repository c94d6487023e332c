//! `status` and `history`: what the catalog knows, per job and region. [`status`] judges
//! each job's honest RPO — against the plans' own objectives when plan files are given — and
//! with a repository also runs the high-water check (rollback, vanished snapshots) and syncs
//! the verification ledger with the repository's packs. It reports snapshot anomalies
//! ([`super::anomaly`]) of the snapshots the catalog records, from the catalog alone
//! ([`catalog_anomalies`]); [`history`] lists backup runs and drills, newest first.
//!
//! Without `--repo`, `status` (and so every metrics scrape) reads the catalog only: the
//! recovery-point sets' RPO ([`plan_sets`]) and the plan SLOs and RTO trends ([`plan_slos`])
//! come from catalog rows too, so no repository is opened, no key derived, no region listed.
//!
//! A region behind the others for a job (its backups did not reach it) is *degraded*
//! ([`degraded`]): status lists it, metrics export it, an alert fires on it.
//!
//! `status --check` turns the report into a verdict: every objective that is missed — RPO,
//! verified RPO, the last drill's RTO, a failed last drill, a region not drilled within the
//! plan's drill interval, verification coverage behind its cycle — is a [`Miss`], and any
//! miss is exit 17, so a timer, a Nagios-style check or CI can act on it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::plans::load_plans;
use super::record::open_catalog;
use super::target::{Target, LOCAL_REGION};
use super::Env;
use crate::catalog::{self, HistoryEntry, HistoryFilter, StatusFilter};
use crate::error::ExitCode;
use crate::plan::Plan;
use crate::repo::verify::{Finding, Severity};
use crate::sys::clock::Clock;
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
    /// Coverage counts packs verified within this window ([`parse_cycle`]); a plan's
    /// `[verify] cycle` takes its place for that plan's regions.
    pub cycle: Duration,
    /// Where "now" comes from (ages, RPO, intervals).
    pub clock: Arc<dyn Clock>,
}

/// An objective that does not hold ([`StatusReport::misses`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Miss {
    /// `rpo`, `verified_rpo`, `rto`, `drill_failed`, `drill_interval` or `coverage`.
    pub objective: &'static str,
    pub plan: String,
    /// The job, for objectives of a job.
    pub job: Option<String>,
    pub region: String,
    /// What was measured against what, for people.
    pub detail: String,
}

/// The result of `status`.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// The catalog it came from (no password).
    pub catalog: String,
    pub status: catalog::StatusReport,
    /// The high-water check of the repository given (empty without one).
    pub findings: Vec<Finding>,
    /// The objectives that do not hold now.
    pub misses: Vec<Miss>,
    /// Per plan with SLOs (`--plan FILE|DIR`): each SLO's measured share, error budget left
    /// and burn rate, and the RTO trend per job and region — the period report's own
    /// functions ([`crate::report::period`]) over the catalog's drill and snapshot rows.
    pub slos: Vec<PlanSlos>,
    /// Per plan with recovery-point sets (`--plan FILE|DIR`): each set's newest committed
    /// recovery point in each region, and the set's RPO, from the catalog's set rows.
    pub sets: Vec<SetStatus>,
    /// Snapshot anomalies ([`super::anomaly`]) of the snapshots the catalog records, per
    /// region: every destination of the plan files, else every region the report covers
    /// (each finding is in `findings` too). Read from the catalog only.
    pub anomalies: Vec<RegionAnomalies>,
    /// The (job, region) pairs that hold less than another region of the same job
    /// ([`degraded`]).
    pub degraded: Vec<Degraded>,
}

/// The anomalies of one region's snapshots (of one plan, with plan files).
#[derive(Debug, Clone, Serialize)]
pub struct RegionAnomalies {
    pub plan: Option<String>,
    pub region: String,
    pub anomalies: Vec<super::anomaly::Anomaly>,
}

/// The anomalies ([`super::anomaly::detect`]) of the snapshots the catalog records, per
/// region of `regions` (every one gets an entry, empty when nothing is recorded there): each
/// repository of `repos` judged on its own, only `plan`'s snapshots when given, at this
/// host's time `now`. Reads the catalog only: no repository is opened, no key derived, no
/// store asked — so `status` and every metrics scrape stay cheap and need no password. A
/// snapshot written behind lifeboat's back is judged here once `catalog rebuild` recorded it
/// (`verify` judges it from the repository and warns that it is not in the catalog).
pub async fn catalog_anomalies(
    cat: &crate::catalog::Catalog,
    repos: &[(crate::ids::RepoId, String)],
    regions: &[String],
    plan: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RegionAnomalies>> {
    let mut out = Vec::new();
    for region in regions {
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for (repo, _) in repos.iter().filter(|(_, r)| r == region) {
            if seen.contains(repo) {
                continue;
            }
            seen.push(*repo);
            let rows: Vec<super::anomaly::Observed> = cat
                .snapshots(repo, Some(region))
                .await?
                .iter()
                .filter(|r| plan.is_none_or(|p| r.plan == p))
                .map(Into::into)
                .collect();
            found.extend(super::anomaly::detect(
                &rows,
                now,
                super::anomaly::NowFrom::Host,
            ));
        }
        found.sort_by_key(|a| (a.time, a.snapshot, a.kind));
        out.push(RegionAnomalies {
            plan: plan.map(str::to_string),
            region: region.clone(),
            anomalies: found,
        });
    }
    Ok(out)
}

/// A region that is behind the others for one job: its newest snapshot is older than the
/// job's newest in another region of the same repository (or it has none while another has
/// one) — the backups that should have reached it did not (it was down, or lagged), so its RPO
/// keeps growing while theirs is reset. The next backup, or `lifeboat sync`, catches it up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Degraded {
    pub plan: String,
    pub job: String,
    pub region: String,
    /// The region holding the job's newest snapshot.
    pub newest_in: String,
    /// How much older its newest snapshot is than that one (`None`: it has none).
    pub behind_secs: Option<f64>,
    /// Its RPO now (`None`: no snapshot).
    pub rpo_secs: Option<f64>,
    /// Its last backup run, when that failed there: the error the run recorded.
    pub last_run_error: Option<String>,
    /// What is wrong, for people.
    pub detail: String,
}

/// The degraded regions of `r`: for every job (of one repository, plan and job name) held in
/// more than one region, each region whose newest snapshot is older than the newest of any
/// region of that job. A region that a sync made complete again is not degraded, even when
/// its last backup run failed; a run that failed in every region degrades none (that is a
/// failing backup, not a region behind).
pub fn degraded(r: &catalog::StatusReport) -> Vec<Degraded> {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<(String, &str, &str), Vec<&catalog::JobStatus>> = BTreeMap::new();
    for j in &r.jobs {
        groups
            .entry((j.repo_id.to_hex(), j.plan.as_str(), j.job.as_str()))
            .or_default()
            .push(j);
    }
    let age = |s: f64| crate::sys::human::duration(s);
    let mut out = Vec::new();
    for rows in groups.values().filter(|rows| rows.len() > 1) {
        let Some(newest) = rows
            .iter()
            .filter_map(|j| j.newest_snapshot.as_ref().map(|s| (s.consistency_time, *j)))
            .max_by_key(|(t, j)| (*t, std::cmp::Reverse(j.region.clone())))
        else {
            continue;
        };
        for j in rows {
            let behind = match &j.newest_snapshot {
                Some(s) if s.consistency_time < newest.0 => Some(Some(
                    (newest.0 - s.consistency_time).num_milliseconds() as f64 / 1000.0,
                )),
                Some(_) => None,
                None => Some(None),
            };
            let Some(behind_secs) = behind else {
                continue;
            };
            let last_run_error = j
                .last_run
                .as_ref()
                .filter(|run| run.status == catalog::RunStatus::Failed)
                .map(|run| run.error.clone().unwrap_or_else(|| "no detail".into()));
            let mut detail = match (behind_secs, &j.newest_snapshot) {
                (Some(b), Some(s)) => format!(
                    "newest snapshot {} old, {} behind region {}",
                    age(s.age_secs),
                    age(b),
                    newest.1.region
                ),
                _ => format!("no snapshot, while region {} has one", newest.1.region),
            };
            if let Some(run) = j.last_run.as_ref().filter(|_| last_run_error.is_some()) {
                detail.push_str(&format!(
                    "; last backup run failed {} ago: {}",
                    age(catalog::age_secs(r.now, run.finished)),
                    last_run_error.as_deref().unwrap_or_default()
                ));
            }
            out.push(Degraded {
                plan: j.plan.clone(),
                job: j.job.clone(),
                region: j.region.clone(),
                newest_in: newest.1.region.clone(),
                behind_secs,
                rpo_secs: j.newest_snapshot.as_ref().map(|s| s.age_secs),
                last_run_error,
                detail,
            });
        }
    }
    out
}

/// A recovery-point set's newest committed recovery point in one region.
#[derive(Debug, Clone, Serialize)]
pub struct SetStatus {
    pub plan: String,
    pub set: String,
    pub region: String,
    pub set_id: Option<String>,
    pub manifest: Option<String>,
    /// The set's one consistency time; the set's RPO is measured from it.
    pub consistency_time: Option<chrono::DateTime<chrono::Utc>>,
    pub rpo_secs: Option<f64>,
    pub rpo_target_secs: Option<f64>,
    pub rpo_met: Option<bool>,
}

/// The sets of `plan` in each of its regions: the newest committed recovery point of each
/// set and its RPO, from the catalog's set rows (recorded when a manifest commits, when a
/// sync copies it, and by `catalog rebuild`). No repository is opened: no key derived, no
/// region listed. A region with no row has no committed recovery point.
pub async fn plan_sets(
    cat: &catalog::Catalog,
    plan: &Plan,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<SetStatus>> {
    if plan.sets.is_empty() {
        return Ok(Vec::new());
    }
    let rpo_target = plan.objectives.rpo.map(|d| d.as_secs_f64());
    let mut out = Vec::new();
    for region in crate::plan::DestinationSpec::catalog_regions(&plan.destinations) {
        for set in &plan.sets {
            let blank = SetStatus {
                plan: plan.name.clone(),
                set: set.name.clone(),
                region: region.clone(),
                set_id: None,
                manifest: None,
                consistency_time: None,
                rpo_secs: None,
                rpo_target_secs: rpo_target,
                rpo_met: rpo_target.map(|_| false),
            };
            out.push(
                match cat.newest_set(&plan.name, &set.name, &region).await? {
                    None => blank,
                    Some(row) => {
                        let rpo =
                            (now - row.consistency_time).num_milliseconds().max(0) as f64 / 1000.0;
                        SetStatus {
                            set_id: Some(row.set_id),
                            manifest: Some(row.manifest_id.to_string()),
                            consistency_time: Some(row.consistency_time),
                            rpo_secs: Some(rpo),
                            rpo_met: rpo_target.map(|t| rpo <= t),
                            ..blank
                        }
                    }
                },
            );
        }
    }
    Ok(out)
}

/// One plan's SLOs and RTO trends as `status` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSlos {
    pub plan: String,
    pub slos: Vec<crate::report::period::SloStatus>,
    pub rto_trends: Vec<RtoTrend>,
}

/// The RTO trend of one job in one region; `warn` when the projected breach is within
/// [`crate::report::period::TREND_HORIZON_DAYS`] days (or already past).
#[derive(Debug, Clone, Serialize)]
pub struct RtoTrend {
    pub job: String,
    pub region: String,
    #[serde(flatten)]
    pub trend: crate::report::trend::TimeTrend,
}

/// The SLOs and RTO trends of a plan that states SLOs (`backups_on_time`, `drill_every`);
/// `None` for a plan without SLOs. Computed by the period report's own functions
/// ([`crate::report::period::slos`], [`crate::report::period::rto_trends`]) from the
/// catalog's drill and snapshot rows and the repository's recorded creation time — no
/// repository is opened. (`lifeboat report` computes them from the signed reports and
/// manifests in the repositories instead.)
pub async fn plan_slos(
    cat: &catalog::Catalog,
    plan: &Plan,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<PlanSlos>> {
    use crate::report::period::{self, DrillPoint, SloEvidence};
    let spec = &plan.objectives.slo;
    if spec.backups_on_time_bp.is_none() && spec.drill_every.is_none() {
        return Ok(None);
    }
    let window = chrono::Duration::from_std(spec.window).unwrap_or(chrono::Duration::days(30));
    let evidence = SloEvidence {
        plan,
        repository_created: cat.plan_repository_created(&plan.name).await?,
        regions: crate::plan::DestinationSpec::catalog_regions(&plan.destinations),
        drills: cat
            .plan_drills(&plan.name)
            .await?
            .into_iter()
            .map(|d| DrillPoint {
                job: d.job,
                region: d.region,
                started: d.started,
                passed: d.passed,
                rto_secs: d.measured_rto_secs,
            })
            .collect(),
        snapshots: cat.plan_snapshot_times(&plan.name, now - window).await?,
    };
    Ok(Some(PlanSlos {
        plan: plan.name.clone(),
        slos: period::slos(&evidence, now),
        rto_trends: period::rto_trends(&evidence, now)
            .into_iter()
            .map(|(job, region, trend)| RtoTrend { job, region, trend })
            .collect(),
    }))
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

    /// `status --check`: 13 as [`Self::exit_code`], else 17 when any objective is missed.
    pub fn check_exit_code(&self) -> ExitCode {
        match self.exit_code() {
            ExitCode::Ok if !self.misses.is_empty() => ExitCode::ObjectiveMissed,
            c => c,
        }
    }
}

/// The objectives of `r` that do not hold: each job's RPO (against the plan's objective,
/// else the target its last drill recorded), verified RPO, last drill's RTO and result; with
/// a plan, each destination drilled within the plan's drill interval and, with `[verify]`,
/// each region's verification coverage within the cycle.
pub fn misses(r: &catalog::StatusReport, plan: Option<&Plan>) -> Vec<Miss> {
    let mut out = Vec::new();
    let age = |s: f64| crate::sys::human::duration(s);
    for j in &r.jobs {
        let miss = |objective, detail: String| Miss {
            objective,
            plan: j.plan.clone(),
            job: Some(j.job.clone()),
            region: j.region.clone(),
            detail,
        };
        let target = plan
            .and_then(|p| p.objectives.rpo.map(|d| d.as_secs_f64()))
            .or(j.rpo_target_secs);
        if let Some(t) = target {
            match &j.newest_snapshot {
                Some(s) if s.age_secs > t => out.push(miss(
                    "rpo",
                    format!(
                        "newest snapshot is {} old, target {}",
                        age(s.age_secs),
                        age(t)
                    ),
                )),
                None => out.push(miss("rpo", "no snapshot recorded".into())),
                _ => {}
            }
            match &j.newest_verified_snapshot {
                Some(s) if s.age_secs > t => out.push(miss(
                    "verified_rpo",
                    format!(
                        "newest drilled snapshot is {} old, target {}",
                        age(s.age_secs),
                        age(t)
                    ),
                )),
                None if plan.is_some_and(|p| p.drill.is_some()) || j.last_drill.is_some() => out
                    .push(miss(
                        "verified_rpo",
                        "no snapshot was proven restorable by a drill".into(),
                    )),
                _ => {}
            }
        }
        if let Some(d) = &j.last_drill {
            if d.rto_met == Some(false) {
                out.push(miss(
                    "rto",
                    format!(
                        "last drill took {}, target {}",
                        age(d.rto_secs.unwrap_or_default()),
                        age(d.rto_target_secs.unwrap_or_default())
                    ),
                ));
            }
            if matches!(
                d.result,
                catalog::DrillResult::CheckFailed | catalog::DrillResult::InfraFailed
            ) {
                out.push(miss(
                    "drill_failed",
                    format!("last drill {}: {}", d.drill_id.0, d.result.as_str()),
                ));
            }
        }
    }
    let Some(plan) = plan else {
        return out;
    };
    let regions = crate::plan::DestinationSpec::catalog_regions(&plan.destinations);
    // Jobs never backed up have no status row: with an RPO they miss it.
    if plan.objectives.rpo.is_some() {
        for job in &plan.jobs {
            if !r.jobs.iter().any(|j| j.job == job.name) {
                for region in &regions {
                    out.push(Miss {
                        objective: "rpo",
                        plan: plan.name.clone(),
                        job: Some(job.name.clone()),
                        region: region.clone(),
                        detail: "no backup recorded".into(),
                    });
                }
            }
        }
    }
    if let Some(interval) = plan.drill_interval() {
        for region in &regions {
            let last = r
                .jobs
                .iter()
                .filter(|j| &j.region == region)
                .filter_map(|j| j.last_drill.as_ref().map(|d| d.finished))
                .max();
            let detail = match last {
                None => Some("never drilled".to_string()),
                Some(t) => {
                    let a = catalog::age_secs(r.now, t);
                    (a > interval.as_secs_f64()).then(|| {
                        format!(
                            "last drilled {} ago, interval {}",
                            age(a),
                            age(interval.as_secs_f64())
                        )
                    })
                }
            };
            if let Some(detail) = detail {
                out.push(Miss {
                    objective: "drill_interval",
                    plan: plan.name.clone(),
                    job: None,
                    region: region.clone(),
                    detail,
                });
            }
        }
    }
    if plan.verify.is_some() {
        for c in &r.coverage {
            if let Some(a) = c.oldest_unverified_age_secs.filter(|a| *a > c.cycle_secs) {
                out.push(Miss {
                    objective: "coverage",
                    plan: plan.name.clone(),
                    job: None,
                    region: c.region.clone(),
                    detail: format!(
                        "{:.1}% verified within the {} cycle; a pack has gone unverified for {}",
                        c.percent,
                        age(c.cycle_secs),
                        age(a)
                    ),
                });
            }
        }
    }
    out
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
    let cat = open_catalog(env).await?.with_clock(req.clock.clone());
    let mut findings: Vec<Finding> = Vec::new();
    let mut anomalies: Vec<RegionAnomalies> = Vec::new();
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
        cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
            .await?;
        let listing = repo.list_snapshots().await?;
        findings = cat.check_high_water(repo.id(), region, &listing).await?;
        let index = repo.load_index().await?;
        cat.sync_packs(repo.id(), region, index.packs()).await?;
        filter.repo = Some(*repo.id());
    }
    let by_plan_files = plan_files.is_some();
    let mut misses_found = Vec::new();
    let mut slos = Vec::new();
    let mut sets = Vec::new();
    let report = match plan_files {
        None => {
            let r = cat.status(&filter).await?;
            misses_found = misses(&r, None);
            r
        }
        Some(plans) => {
            let mut merged: Option<catalog::StatusReport> = None;
            for (_, plan) in &plans {
                let f = StatusFilter {
                    plan: Some(plan.name.clone()),
                    cycle: plan
                        .verify
                        .as_ref()
                        .map(|v| v.cycle)
                        .unwrap_or(filter.cycle),
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
                misses_found.extend(misses(&r, Some(plan)));
                let regions: Vec<String> =
                    crate::plan::DestinationSpec::catalog_regions(&plan.destinations)
                        .into_iter()
                        .filter(|g| req.region.as_ref().is_none_or(|r| r == g))
                        .collect();
                let repos: Vec<_> = r
                    .jobs
                    .iter()
                    .map(|j| (j.repo_id, j.region.clone()))
                    .collect();
                anomalies.extend(
                    catalog_anomalies(&cat, &repos, &regions, Some(&plan.name), req.clock.now())
                        .await?,
                );
                if let Some(s) = plan_slos(&cat, plan, req.clock.now()).await? {
                    slos.push(s);
                }
                for st in plan_sets(&cat, plan, req.clock.now()).await? {
                    if st.rpo_met == Some(false) {
                        misses_found.push(Miss {
                            objective: "set_rpo",
                            plan: plan.name.clone(),
                            job: Some(crate::ops::drill::set_job_name(&st.set)),
                            region: st.region.clone(),
                            detail: match st.rpo_secs {
                                None => {
                                    format!("set {} has no committed recovery point", st.set)
                                }
                                Some(r) => format!(
                                    "set {}: newest recovery point is {} old, objective {}",
                                    st.set,
                                    humantime::format_duration(Duration::from_secs(r as u64)),
                                    humantime::format_duration(Duration::from_secs(
                                        st.rpo_target_secs.unwrap_or_default() as u64
                                    ))
                                ),
                            },
                        });
                    }
                    sets.push(st);
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
    if !by_plan_files {
        // Without plan files: every repository and region the report covers.
        let mut repos: Vec<_> = report
            .jobs
            .iter()
            .map(|j| (j.repo_id, j.region.clone()))
            .collect();
        if let Some(id) = filter.repo {
            repos.push((id, req.region.clone().unwrap_or(LOCAL_REGION.into())));
        }
        let mut regions: Vec<String> = repos.iter().map(|(_, r)| r.clone()).collect();
        regions.sort();
        regions.dedup();
        anomalies = catalog_anomalies(
            &cat,
            &repos,
            &regions,
            filter.plan.as_deref(),
            req.clock.now(),
        )
        .await?;
    }
    for ra in &anomalies {
        findings.extend(
            ra.anomalies
                .iter()
                .filter(|a| {
                    filter
                        .job
                        .as_ref()
                        .is_none_or(|j| a.job.as_ref() == Some(j))
                })
                .map(super::anomaly::Anomaly::finding),
        );
    }
    cat.close().await;
    if let Some(region) = &req.region {
        misses_found.retain(|m| &m.region == region);
    }
    if let Some(job) = &filter.job {
        misses_found.retain(|m| m.job.as_ref().is_none_or(|j| j == job));
    }
    for s in &mut slos {
        s.rto_trends.retain(|t| {
            req.region.as_ref().is_none_or(|r| &t.region == r)
                && filter.job.as_ref().is_none_or(|j| &t.job == j)
        });
    }
    let degraded = degraded(&report);
    Ok(StatusReport {
        catalog: cat.describe().to_string(),
        status: report,
        findings,
        misses: misses_found,
        slos,
        sets,
        anomalies,
        degraded,
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
    use crate::ids::{RepoId, SnapshotId};

    /// A job row of `region` whose newest snapshot is `minutes` old (`None`: none), and
    /// whose last run `failed` or not.
    fn row(repo: RepoId, region: &str, minutes: Option<i64>, failed: bool) -> catalog::JobStatus {
        let now = now();
        catalog::JobStatus {
            repo_id: repo,
            plan: "p".into(),
            job: "j".into(),
            region: region.into(),
            newest_snapshot: minutes.map(|m| {
                let t = now - chrono::Duration::minutes(m);
                catalog::SnapshotRef {
                    snapshot_id: SnapshotId::random(),
                    time: t,
                    consistency_time: t,
                    age_secs: (m * 60) as f64,
                }
            }),
            newest_verified_snapshot: None,
            honest_rpo_secs: None,
            rpo_target_secs: None,
            rpo_met: None,
            last_drill: None,
            last_run: Some(catalog::RunSummary {
                run_id: catalog::RunId::random(),
                finished: now - chrono::Duration::minutes(1),
                status: if failed {
                    catalog::RunStatus::Failed
                } else {
                    catalog::RunStatus::Ok
                },
                exit_code: if failed { 3 } else { 0 },
                error: failed.then(|| "region b failed: no answer".to_string()),
            }),
        }
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-12-05T08:00:00Z")
            .unwrap()
            .into()
    }

    fn regions(jobs: Vec<catalog::JobStatus>) -> Vec<(String, Option<f64>, bool)> {
        degraded(&catalog::StatusReport {
            now: now(),
            jobs,
            coverage: Vec::new(),
        })
        .into_iter()
        .map(|d| (d.region, d.behind_secs, d.last_run_error.is_some()))
        .collect()
    }

    /// T08: a region is degraded when it holds an older newest snapshot than another region
    /// of the same job (or none); not when it is even (caught up by a sync after a failed
    /// run, or every region failed alike), and never across repositories.
    #[test]
    fn a_region_behind_the_others_of_its_job_is_degraded() {
        let r = RepoId::random();
        let b = |m, f| row(r, "b", m, f);
        let a = |m, f| row(r, "a", m, f);
        assert_eq!(
            regions(vec![a(Some(1), false), b(Some(61), true)]),
            [("b".to_string(), Some(3600.0), true)]
        );
        assert_eq!(
            regions(vec![a(Some(1), false), b(None, true)]),
            [("b".to_string(), None, true)]
        );
        // behind without a failed run: it lagged
        assert_eq!(
            regions(vec![a(Some(1), false), b(Some(30), false)]),
            [("b".to_string(), Some(1740.0), false)]
        );
        // even again after a sync, though its last run failed; every region failed alike
        assert!(regions(vec![a(Some(1), false), b(Some(1), true)]).is_empty());
        assert!(regions(vec![a(Some(60), true), b(Some(60), true)]).is_empty());
        // one region only, or the same names in another repository: nothing to compare
        assert!(regions(vec![b(Some(600), true)]).is_empty());
        assert!(regions(vec![
            a(Some(1), false),
            row(RepoId::random(), "b", Some(600), true)
        ])
        .is_empty());
    }

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
