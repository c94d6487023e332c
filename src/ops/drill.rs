//! The drill use case (`lifeboat drill --plan`, and the drills `run-due` finds due): restore
//! each selected job's snapshot into a throwaway environment, run the restore tests, measure
//! RTO and RPO against the plan's objectives, and record the evidence in the catalog and the
//! pack ledger (best effort: a catalog problem is a warning, never a failed drill).
//!
//! [`drill`] takes a plan's [`Target`] and a [`DrillRequest`] and returns a [`DrillRun`]
//! whose exit code is the worst drill's: 16 a check failed, 17 an objective was missed, 1 the
//! environment failed (15 out of space). Each finished drill's report is an
//! [`Event::DrillFinished`] (the evidence, shown before the drills are recorded); a run
//! interrupted after its reports exist still records them, then returns
//! [`Error::Interrupted`].

use std::sync::Arc;

use super::record::{self, not_recorded};
use super::snapshots::find_job_snapshot;
use super::target::{Region, Target, LOCAL_REGION};
use super::{Env, Event};
use crate::catalog::{self, DrillCheck, DrillPhase, DrillRecord, RunId};
use crate::drill::checks::CheckStatus;
use crate::drill::database::{DbDrill, DbEnvironment};
use crate::drill::restore_tests::RestoreTests;
use crate::drill::sql::Password;
use crate::drill::{DirDrill, DrillContext, DrillReport, DrillResult, Targets};
use crate::error::ExitCode;
use crate::plan::{EnvironmentKind, JobSpec, Plan, SetSpec, SourceSpec};
use crate::repo::snapshot::DbKind;
use crate::repo::Repository;
use crate::sys::SystemClock;
use crate::{Error, Result};

/// What to drill and how.
#[derive(Debug, Clone)]
pub struct DrillRequest {
    /// Only this job, or this recovery-point set (default: the plan's `[drill] jobs`, else
    /// every job, a set's members drilled as their set).
    pub job: Option<String>,
    /// Restore from this destination (catalog region, destination name or location;
    /// default: the plan's first).
    pub region: Option<String>,
    /// A snapshot id (or a unique prefix), or `latest` (each job's newest).
    pub snapshot: String,
    /// Leave the restored environment running for inspection.
    pub keep: bool,
}

impl Default for DrillRequest {
    fn default() -> Self {
        DrillRequest {
            job: None,
            region: None,
            snapshot: "latest".into(),
            keep: false,
        }
    }
}

/// The result of a drill run: one report per drilled job.
#[derive(Debug, Clone)]
pub struct DrillRun {
    pub reports: Vec<DrillReport>,
    /// Why the drills are missing from the catalog (empty: recorded).
    pub catalog_warnings: Vec<String>,
}

impl DrillRun {
    /// The worst drill's exit code (a failed check before a missed objective before a failed
    /// environment); `Ok` when nothing was drilled.
    pub fn exit_code(&self) -> ExitCode {
        self.reports
            .iter()
            .max_by_key(|r| rank(r.result))
            .map(DrillReport::exit_code)
            .unwrap_or(ExitCode::Ok)
    }
}

const NOT_RECORDED: &str = "the drill was not recorded in the catalog, so `lifeboat status` and `history` will not show it; the report above is the evidence";

/// Drills the selected jobs of the target's plan, one after the other, under a shared
/// repository lock (a drill only reads, but prune must not delete what it is restoring).
pub async fn drill(env: &Env, target: &Target, req: DrillRequest) -> Result<DrillRun> {
    let p: &Plan = target
        .plan
        .as_deref()
        .ok_or_else(|| Error::Other("a drill needs a plan's target".into()))?;
    let (jobs, sets) = select_units(p, req.job.as_deref())?;
    let hows = jobs.iter().map(|j| how(p, j)).collect::<Result<Vec<_>>>()?;
    let tests = load_tests(p)?;
    let sets = sets
        .into_iter()
        .map(|s| set_plan(p, s, &tests))
        .collect::<Result<Vec<_>>>()?;
    let targets = Targets {
        rto: p.objectives.rto,
        rpo: p.objectives.rpo,
    };
    let region = destination(p, target, req.region.as_deref())?;
    let repo = target.open_region(region).await?;
    let reports = repo
        .with_lock("drill", false, async |_| {
            let mut reports = drill_locked(
                env,
                &req,
                p,
                &jobs,
                &hows,
                &tests,
                targets,
                &repo,
                &region.catalog_region,
            )
            .await?;
            for s in &sets {
                if env.cancel.is_cancelled() {
                    break;
                }
                reports.push(
                    drill_set(env, &req, p, s, targets, &repo, &region.catalog_region).await?,
                );
            }
            Ok(reports)
        })
        .await?;
    for r in &reports {
        env.emit(Event::DrillFinished(Box::new(r.clone())));
    }
    super::report::write_drill_reports(env, target, &repo, &reports).await;
    let catalog_warnings = record(env, &repo, &reports).await;
    if env.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    Ok(DrillRun {
        reports,
        catalog_warnings,
    })
}

/// How a job is drilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Db(DbKind),
    Dir,
}

/// The environment for a job: a database job needs a server — the matching ephemeral one
/// by default, or the plan's scratch server or command environment; file trees and volumes
/// restore into a temporary directory whatever the plan's database environment is.
fn how(p: &Plan, job: &JobSpec) -> Result<How> {
    let wanted = p.drill.as_ref().map(|d| d.environment);
    let (need, kind) = match &job.source {
        SourceSpec::Postgres(_) => (
            EnvironmentKind::EphemeralPostgres,
            How::Db(DbKind::Postgres),
        ),
        SourceSpec::Mariadb(_) => (EnvironmentKind::EphemeralMariadb, How::Db(DbKind::Mariadb)),
        _ => return Ok(How::Dir),
    };
    let scratch_kind = p
        .drill
        .as_ref()
        .and_then(|d| d.scratch.as_ref())
        .map(|s| s.server.kind.as_str());
    match wanted {
        None | Some(EnvironmentKind::Command) => Ok(kind),
        Some(w) if w == need => Ok(kind),
        Some(EnvironmentKind::Scratch) if scratch_kind == Some(job.source.kind()) => Ok(kind),
        Some(w) => Err(Error::Config(format!(
            "plan {}: job {} is a {} job, but [drill] environment is {}{}; set environment = \"{}\" (or a scratch server of that kind) or drill the job from a plan whose drill environment fits it",
            p.file.display(),
            job.name,
            job.source.kind(),
            w.name(),
            scratch_kind.map(|k| format!(" with a {k} server")).unwrap_or_default(),
            need.name()
        ))),
    }
}

/// Where a database job's drill restores into, from the plan's `[drill]` section (the
/// scratch server's password is read now: a missing secret stops the drill before anything
/// starts).
fn db_environment(p: &Plan) -> Result<DbEnvironment> {
    let Some(d) = &p.drill else {
        return Ok(DbEnvironment::Ephemeral {
            postgres_version: None,
        });
    };
    Ok(match (d.environment, &d.scratch, &d.command) {
        (EnvironmentKind::Scratch, Some(s), _) => DbEnvironment::Scratch {
            spec: s.server.clone(),
            password: s
                .password
                .as_ref()
                .map(|sec| {
                    sec.read().map(Password).map_err(|e| {
                        let m = format!(
                            "plan {}: [drill] scratch server password: {e}; {}",
                            p.file.display(),
                            e.fix
                        );
                        if sec.fails_at_run_time() {
                            Error::Other(m)
                        } else {
                            Error::Config(m)
                        }
                    })
                })
                .transpose()?,
        },
        (EnvironmentKind::Command, _, Some(c)) => DbEnvironment::Command(c.clone()),
        _ => DbEnvironment::Ephemeral {
            postgres_version: d.postgres_version,
        },
    })
}

/// The jobs to drill: `job`, else the plan's `[drill] jobs`, else all.
fn select<'a>(p: &'a Plan, job: Option<&str>) -> Result<Vec<&'a JobSpec>> {
    if job.is_some() {
        return p.select_jobs(job);
    }
    match &p.drill {
        Some(d) if !d.jobs.is_empty() => d
            .jobs
            .iter()
            .map(|j| p.select_jobs(Some(j.as_str())).map(|v| v[0]))
            .collect(),
        _ => p.select_jobs(None),
    }
}

/// What a drill run covers: single jobs, and recovery-point sets. `job` may name a job
/// (drilled alone, even a set's member) or a set; without it, the plan's `[drill] jobs`
/// (else every job) less the sets' members, and every set.
fn select_units<'a>(
    p: &'a Plan,
    job: Option<&str>,
) -> Result<(Vec<&'a JobSpec>, Vec<&'a SetSpec>)> {
    match job {
        Some(n) if p.job(n).is_none() && p.sets.iter().any(|s| s.name == n) => {
            Ok((Vec::new(), vec![p.select_set(n)?]))
        }
        Some(_) => Ok((select(p, job)?, Vec::new())),
        None => {
            let jobs = select(p, None)?
                .into_iter()
                .filter(|j| p.set_of(&j.name).is_none())
                .collect();
            Ok((jobs, p.sets.iter().collect()))
        }
    }
}

/// A set's drill, resolved before anything starts: its database member (drilled in the
/// plan's environment for it) and its restore tests.
struct SetPlan<'a> {
    set: &'a SetSpec,
    db_job: &'a JobSpec,
    /// The set's other database members, loaded beside it: those of `db_job`'s engine on
    /// its server, the others (a PostgreSQL + MariaDB set) on a second throwaway server.
    other_dbs: Vec<(&'a JobSpec, DbKind)>,
    kind: DbKind,
    tests: RestoreTests,
}

fn set_plan<'a>(p: &'a Plan, set: &'a SetSpec, plan_tests: &RestoreTests) -> Result<SetPlan<'a>> {
    let members: Vec<&JobSpec> = set.jobs.iter().filter_map(|j| p.job(j)).collect();
    let dbs: Vec<(&JobSpec, DbKind)> = members
        .iter()
        .filter_map(|j| match &j.source {
            SourceSpec::Postgres(_) => Some((*j, DbKind::Postgres)),
            SourceSpec::Mariadb(_) => Some((*j, DbKind::Mariadb)),
            _ => None,
        })
        .collect();
    let Some(&(db_job, kind)) = dbs.first() else {
        return Err(Error::Config(format!(
            "plan {}: set {} has no database job; a set's drill restores its databases and, beside them, its directories; add a database job to the [[sets]] jobs list",
            p.file.display(),
            set.name,
        )));
    };
    // One database goes wherever the plan's environment says; several are loaded into
    // throwaway servers of lifeboat's own, one per engine (checked in `drill_set`).
    if dbs.len() == 1 {
        how(p, db_job)?;
    }
    let other_dbs = dbs[1..].to_vec();
    let tests = if set.restore_tests.is_empty() {
        plan_tests.clone()
    } else {
        RestoreTests::merge(
            set.restore_tests
                .iter()
                .map(|f| {
                    RestoreTests::load(f)
                        .map_err(|e| Error::Config(format!("set {} restore tests: {e}", set.name)))
                })
                .collect::<Result<Vec<_>>>()?,
        )
    };
    Ok(SetPlan {
        set,
        db_job,
        other_dbs,
        kind,
        tests,
    })
}

/// The drill of one recovery-point set: its newest complete manifest (or the one
/// `req.snapshot` names), the database members loaded into throwaway servers (one per
/// engine), every file
/// member restored beside it, the set's restore tests run across them.
async fn drill_set(
    env: &Env,
    req: &DrillRequest,
    p: &Plan,
    sp: &SetPlan<'_>,
    targets: Targets,
    repo: &Repository,
    region: &str,
) -> Result<DrillReport> {
    let (manifest_id, m) = super::set::find_set(repo, &p.name, &sp.set.name, &req.snapshot).await?;
    let mut snaps = Vec::new();
    for member in &m.members {
        let snap: crate::repo::snapshot::Snapshot = repo
            .load_json(crate::repo::ObjectKind::Snapshot, &member.snapshot)
            .await?;
        snaps.push((member.job.clone(), member.snapshot, snap));
    }
    let Some(db_pos) = snaps.iter().position(|(j, ..)| *j == sp.db_job.name) else {
        return Err(Error::SnapshotNotFound {
            query: format!(
                "database member {} in recovery point {} of set {}",
                sp.db_job.name,
                manifest_id.short(),
                sp.set.name
            ),
        });
    };
    let (_, db_id, db_snap) = snaps.remove(db_pos);
    let mut databases = Vec::new();
    for (j, kind) in &sp.other_dbs {
        let Some(pos) = snaps.iter().position(|(n, ..)| *n == j.name) else {
            return Err(Error::SnapshotNotFound {
                query: format!(
                    "database member {} in recovery point {} of set {}",
                    j.name,
                    manifest_id.short(),
                    sp.set.name
                ),
            });
        };
        let (job, snapshot_id, snapshot) = snaps.remove(pos);
        databases.push(crate::drill::set::SetDatabase {
            job,
            kind: *kind,
            snapshot_id,
            snapshot,
        });
    }
    let environment = db_environment(p)?;
    if !databases.is_empty() && !matches!(environment, DbEnvironment::Ephemeral { .. }) {
        return Err(Error::Config(format!(
            "plan {}: set {} has {} databases; a set's drill loads them into throwaway servers of lifeboat's own (one per engine), which a scratch server or provisioning commands are not; set [drill] environment = \"ephemeral-{}\"",
            p.file.display(),
            sp.set.name,
            databases.len() + 1,
            sp.kind.as_str()
        )));
    }
    let info = crate::drill::set::SetInfo {
        name: sp.set.name.clone(),
        set_id: m.set_id.clone(),
        manifest: manifest_id.to_string(),
        consistency_time: m.consistency_time,
        members: m
            .members
            .iter()
            .map(|x| crate::drill::set::SetMemberInfo {
                job: x.job.clone(),
                kind: x.kind.clone(),
                snapshot_id: x.snapshot,
                capture: x.capture,
            })
            .collect(),
    };
    // Every member is kept from `forget` while it is restored (issue 13).
    let mut markers = Vec::new();
    for member in &m.members {
        markers.push(
            repo.lock(
                &crate::repo::retention::drill_marker(&member.snapshot),
                false,
            )
            .await?,
        );
    }
    for d in crate::drill::env::sweep_orphans() {
        env.emit(Event::OrphanRemoved(d));
    }
    env.emit(Event::DrillStarting {
        job: format!("set {}", sp.set.name),
        snapshot: manifest_id,
        consistency_time: m.consistency_time,
    });
    let database = match &sp.db_job.source {
        SourceSpec::Postgres(s) => Some(s.conn.database.clone()),
        SourceSpec::Mariadb(s) => Some(s.conn.database.clone()),
        _ => None,
    };
    let report = DbDrill {
        ctx: DrillContext {
            repo,
            snapshot_id: db_id,
            snapshot: &db_snap,
            tests: &sp.tests,
            targets,
            plan: Some(p.name.clone()),
            job: Some(set_job_name(&sp.set.name)),
            region: Some(region.to_string()),
            keep: req.keep,
            clock: Arc::new(SystemClock),
            cancel: env.cancel.clone(),
        },
        kind: sp.kind,
        database,
        environment,
        set: Some(crate::drill::set::SetDrill {
            info,
            trees: snaps,
            db_job: sp.db_job.name.clone(),
            databases,
        }),
    }
    .run()
    .await;
    for mk in markers {
        mk.release().await;
    }
    Ok(report)
}

/// The name a set's drill is recorded under in the catalog's job column (`set:<name>`), so
/// `history` and `status` list it beside the jobs without mistaking it for one.
pub fn set_job_name(set: &str) -> String {
    format!("set:{set}")
}

/// The region to restore from: the first, or the one `region` names.
fn destination<'a>(p: &Plan, target: &'a Target, region: Option<&str>) -> Result<&'a Region> {
    let pick = match region {
        None => target.regions.first(),
        Some(r) => target.regions.iter().find(|d| d.is(r)),
    };
    pick.ok_or_else(|| {
        Error::Usage(format!(
            "plan {} has no destination {:?}; its destinations are: {}",
            p.file.display(),
            region.unwrap_or_default(),
            target
                .regions
                .iter()
                .map(|d| format!("{} ({})", d.catalog_region, d.location))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

fn load_tests(p: &Plan) -> Result<RestoreTests> {
    let files = p
        .drill
        .as_ref()
        .map(|d| d.restore_tests.clone())
        .unwrap_or_default();
    if files.is_empty() {
        return Ok(RestoreTests::builtin());
    }
    let sets = files
        .iter()
        .map(|f| RestoreTests::load(f).map_err(|e| Error::Config(format!("restore tests: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(RestoreTests::merge(sets))
}

/// How bad a result is, for the run's exit code.
fn rank(r: DrillResult) -> u8 {
    match r {
        DrillResult::Passed => 0,
        DrillResult::InfraFailed => 1,
        DrillResult::ObjectiveMissed => 2,
        DrillResult::CheckFailed => 3,
        DrillResult::Damaged => 4,
    }
}

#[allow(clippy::too_many_arguments)]
async fn drill_locked(
    env: &Env,
    req: &DrillRequest,
    p: &Plan,
    jobs: &[&JobSpec],
    hows: &[How],
    tests: &RestoreTests,
    targets: Targets,
    repo: &Repository,
    region: &str,
) -> Result<Vec<DrillReport>> {
    let mut reports = Vec::new();
    for (job, how) in jobs.iter().zip(hows) {
        if env.cancel.is_cancelled() {
            break;
        }
        let (id, snap) = find_job_snapshot(repo, p, &job.name, &req.snapshot).await?;
        // Tells `forget` that this snapshot is being restored: it is kept (issue 13).
        let marker = repo
            .lock(&crate::repo::retention::drill_marker(&id), false)
            .await?;
        // Servers left behind by a drill that was killed outright hold memory and ports.
        for d in crate::drill::env::sweep_orphans() {
            env.emit(Event::OrphanRemoved(d));
        }
        env.emit(Event::DrillStarting {
            job: job.name.clone(),
            snapshot: id,
            consistency_time: snap.consistency_time,
        });
        let dctx = DrillContext {
            repo,
            snapshot_id: id,
            snapshot: &snap,
            tests,
            targets,
            plan: Some(p.name.clone()),
            job: Some(job.name.clone()),
            region: Some(region.to_string()),
            keep: req.keep,
            clock: Arc::new(SystemClock),
            cancel: env.cancel.clone(),
        };
        let report = match how {
            How::Dir => {
                DirDrill {
                    ctx: dctx,
                    progress: env.progress.bytes(&job.name),
                }
                .run()
                .await
            }
            How::Db(kind) => {
                let database = match &job.source {
                    SourceSpec::Postgres(s) => Some(s.conn.database.clone()),
                    SourceSpec::Mariadb(s) => Some(s.conn.database.clone()),
                    _ => None,
                };
                DbDrill {
                    ctx: dctx,
                    kind: *kind,
                    database,
                    environment: db_environment(p)?,
                    set: None,
                }
                .run()
                .await
            }
        };
        marker.release().await;
        reports.push(report);
    }
    Ok(reports)
}

/// Records the drills in the catalog, and the packs each restore read and verified in the
/// pack ledger. Never fails: returns the warnings (empty when recorded), which are also an
/// [`Event::CatalogNotRecorded`].
pub async fn record(env: &Env, repo: &Repository, reports: &[DrillReport]) -> Vec<String> {
    if reports.is_empty() {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if let Some(cat) = record::open_best_effort(env, &mut warnings).await {
        let res = async {
            cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
                .await?;
            for r in reports {
                cat.record_drill(&to_record(repo, r)).await?;
            }
            Ok::<_, catalog::CatalogError>(())
        }
        .await;
        if let Err(e) = res {
            warnings.push(e.to_string());
        }
        // A drill that restored its snapshot read and verified (AEAD + re-hash) every pack
        // it needed: the ledger counts them as verified in that region.
        let res = async {
            // A drill that met a damaged pack: the ledger marks it damaged in that region.
            for r in reports.iter().filter(|r| r.result == DrillResult::Damaged) {
                let region = r.region.clone().unwrap_or_else(|| LOCAL_REGION.into());
                let packs: Vec<crate::ids::PackId> = r
                    .damaged_pack
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                // The ledger lists the region's packs (with their sizes) first.
                if let Ok(index) = repo.load_index().await {
                    cat.sync_packs(repo.id(), &region, index.packs())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                cat.mark_packs_damaged(repo.id(), &region, &packs, catalog::VerifiedBy::Drill)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let restored: Vec<&DrillReport> = reports
                .iter()
                .filter(|r| !matches!(r.result, DrillResult::InfraFailed | DrillResult::Damaged))
                .collect();
            if restored.is_empty() {
                return Ok(());
            }
            let index = repo.load_index().await.map_err(|e| e.to_string())?;
            for r in restored {
                let region = r.region.clone().unwrap_or_else(|| LOCAL_REGION.into());
                let snap: crate::repo::snapshot::Snapshot = repo
                    .load_json(crate::repo::ObjectKind::Snapshot, &r.snapshot_id)
                    .await
                    .map_err(|e| e.to_string())?;
                let packs = crate::drill::snapshot_packs(repo, &index, &snap)
                    .await
                    .map_err(|e| e.to_string())?;
                cat.sync_packs(repo.id(), &region, index.packs())
                    .await
                    .map_err(|e| e.to_string())?;
                let reads: Vec<catalog::PackRead> = packs
                    .into_iter()
                    .map(|(pack, size)| catalog::PackRead {
                        pack,
                        size,
                        ok: true,
                    })
                    .collect();
                cat.record_pack_verifications(
                    repo.id(),
                    &region,
                    &reads,
                    catalog::VerifiedBy::Drill,
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }
        .await;
        if let Err(e) = res {
            warnings.push(e);
        }
        cat.close().await;
    }
    not_recorded(env, &warnings, NOT_RECORDED);
    warnings
}

/// A drill report as the catalog records it.
fn to_record(repo: &Repository, r: &DrillReport) -> DrillRecord {
    let passed = r.error.is_none() && r.checks.iter().all(|c| c.status == CheckStatus::Passed);
    DrillRecord {
        drill_id: RunId(r.id.clone()),
        repo_id: *repo.id(),
        plan: r.plan.clone().unwrap_or_default(),
        job: r.job.clone().unwrap_or_default(),
        region: r.region.clone().unwrap_or_else(|| LOCAL_REGION.into()),
        snapshot_id: r.snapshot_id,
        started: r.started,
        finished: r.finished,
        result: r.result,
        rto_secs: passed.then_some(r.rto.measured_secs),
        measured_rto_secs: r.error.is_none().then_some(r.rto.measured_secs),
        rpo_secs: Some(r.rpo.measured_secs),
        rto_target_secs: r.rto.target_secs,
        rpo_target_secs: r.rpo.target_secs,
        detail: r.error.clone().or_else(|| r.kept.clone()),
        phases: r
            .phases
            .iter()
            .map(|ph| DrillPhase {
                phase: ph.phase.as_str().into(),
                started: ph.started,
                secs: ph.secs,
            })
            .collect(),
        checks: r
            .checks
            .iter()
            .map(|c| DrillCheck {
                name: c.name.clone(),
                passed: c.status == CheckStatus::Passed,
                detail: c.detail.clone(),
            })
            .collect(),
    }
}
