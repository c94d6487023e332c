//! `lifeboat drill --plan FILE`: restore each selected job's snapshot into a throwaway
//! environment, run the restore tests, measure RTO and RPO against the plan's objectives,
//! print the evidence and record it in the catalog (best effort: a catalog problem is a
//! warning, never a failed drill). The exit code is the worst drill's: 16 a check failed,
//! 17 an objective was missed, 1 the environment failed (15 out of space), 130 interrupted.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::catalog_cmds::{open_best_effort, LOCAL_REGION};
use super::output::{duration, print_json};
use super::plan_cmds::{load, secret_err};
use super::Ctx;
use crate::catalog::{self, DrillCheck, DrillPhase, DrillRecord, RunId};
use crate::drill::checks::{CheckStatus, DbKind};
use crate::drill::database::{DbDrill, DbEnvironment};
use crate::drill::env::Password;
use crate::drill::measure::Objective;
use crate::drill::restore_tests::RestoreTests;
use crate::drill::{DirDrill, DrillContext, DrillReport, DrillResult, Targets};
use crate::error::ExitCode;
use crate::ops::snapshots::find_job_snapshot;
use crate::plan::{EnvironmentKind, JobSpec, Plan, SourceSpec};
use crate::repo::Repository;
use crate::sys::SystemClock;
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// The plan whose jobs are drilled (its [drill] section picks jobs, environment and
    /// restore tests; its [objectives] are the RTO/RPO targets)
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// Drill only this job (default: the plan's [drill] jobs, else every job)
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Restore from this destination: `local` (the plan's first), or a destination's
    /// location (default: the first)
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Snapshot id (or a unique prefix), or `latest` (the job's newest)
    #[arg(long, default_value = "latest", value_name = "ID")]
    pub snapshot: String,
    /// Leave the restored environment running for inspection; the report says how to
    /// connect and how to remove it
    #[arg(long)]
    pub keep: bool,
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
        Some(w) => Err(Error::Usage(format!(
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
                        secret_err(
                            &format!("plan {}: [drill] scratch server password", p.file.display()),
                            e,
                        )
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

/// The jobs to drill: `--job`, else the plan's `[drill] jobs`, else all.
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

/// One of a plan's destinations: where it is, the region name the catalog records it under
/// (a local first destination is region `local`, like the backups recorded from it; others
/// go by their destination name), and its store.
pub(super) struct PlanDestination {
    pub location: String,
    pub region: String,
    pub dest: crate::store::multi::Destination,
}

impl PlanDestination {
    /// Whether `--region r` names this destination (by region, destination name or location).
    pub fn is(&self, r: &str) -> bool {
        self.region == r
            || self.dest.name == r
            || self.location == r
            || format!("local:{}", self.location) == r
    }
}

/// Every destination of a plan, in order.
pub(super) fn plan_destinations(p: &Plan) -> Result<Vec<PlanDestination>> {
    let names = crate::plan::DestinationSpec::catalog_regions(&p.destinations);
    p.destinations
        .iter()
        .zip(names)
        .map(|(d, region)| {
            let dest = crate::store::multi::Destination::from_config(&d.0).map_err(|e| {
                Error::Usage(format!(
                    "plan {}: destination {}: {e}",
                    p.name,
                    d.location()
                ))
            })?;
            Ok(PlanDestination {
                location: d.location(),
                region,
                dest,
            })
        })
        .collect()
}

/// The destination to restore from (the first, or the one `region` names) and the region
/// name the catalog knows it by.
fn destination(p: &Plan, region: Option<&str>) -> Result<(crate::store::DynStore, String)> {
    let all = plan_destinations(p)?;
    let pick = match region {
        None => all.first(),
        Some(r) => all.iter().find(|d| d.is(r)),
    };
    match pick {
        Some(d) => Ok((d.dest.store.clone(), d.region.clone())),
        None => Err(Error::Usage(format!(
            "plan {} has no destination {:?}; its destinations are: {}",
            p.file.display(),
            region.unwrap_or_default(),
            all.iter()
                .map(|d| format!("{} ({})", d.region, d.location))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Opens a plan's repository in one of its destinations, with the plan's password.
pub(super) async fn open_plan_repo(p: &Plan, store: crate::store::DynStore) -> Result<Repository> {
    crate::repo::read_config(&store).await?;
    let pw = p
        .password
        .read()
        .map_err(|e| secret_err(&format!("repository password of plan {}", p.name), e))?;
    Repository::open(store, pw.as_bytes()).await
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
        .map(|f| RestoreTests::load(f).map_err(|e| Error::Usage(format!("restore tests: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(RestoreTests::merge(sets))
}

fn rank(r: DrillResult) -> u8 {
    match r {
        DrillResult::Passed => 0,
        DrillResult::InfraFailed => 1,
        DrillResult::ObjectiveMissed => 2,
        DrillResult::CheckFailed => 3,
    }
}

pub async fn drill(ctx: &Ctx, a: DrillArgs) -> Result<ExitCode> {
    let p = load(&a.plan, ctx)?;
    let jobs = select(&p, a.job.as_deref())?;
    let hows = jobs
        .iter()
        .map(|j| how(&p, j))
        .collect::<Result<Vec<_>>>()?;
    let tests = load_tests(&p)?;
    let targets = Targets {
        rto: p.objectives.rto,
        rpo: p.objectives.rpo,
    };
    let (store, region) = destination(&p, a.region.as_deref())?;
    let repo = open_plan_repo(&p, store).await?;
    // Shared: a drill only reads, but prune must not delete what it is restoring.
    let lock = repo.lock("drill", false).await?;
    let res = drill_locked(ctx, &a, &p, &jobs, &hows, &tests, targets, &repo, &region).await;
    lock.release().await;
    let reports = res?;

    if ctx.global.json {
        print_json(&reports);
    } else if !ctx.global.quiet {
        for r in &reports {
            print_report(r);
        }
    }
    record(ctx, &repo, &reports).await;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    Ok(reports
        .iter()
        .max_by_key(|r| rank(r.result))
        .map(DrillReport::exit_code)
        .unwrap_or(ExitCode::Ok))
}

#[allow(clippy::too_many_arguments)]
async fn drill_locked(
    ctx: &Ctx,
    a: &DrillArgs,
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
        if ctx.cancel.is_cancelled() {
            break;
        }
        let (id, snap) = find_job_snapshot(repo, p, &job.name, &a.snapshot).await?;
        // Servers left behind by a drill that was killed outright hold memory and ports.
        for d in crate::drill::env::sweep_orphans() {
            eprintln!(
                "warning: removed a throwaway environment left by a dead process: {}",
                d.display()
            );
        }
        if !ctx.global.json && !ctx.global.quiet {
            eprintln!(
                "drilling job {} (snapshot {}, consistent at {})…",
                job.name,
                id.short(),
                snap.consistency_time.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        let dctx = DrillContext {
            repo,
            snapshot_id: id,
            snapshot: &snap,
            tests,
            targets,
            plan: Some(p.name.clone()),
            job: Some(job.name.clone()),
            region: Some(region.to_string()),
            keep: a.keep,
            clock: Arc::new(SystemClock),
            cancel: ctx.cancel.clone(),
        };
        let report = match how {
            How::Dir => {
                DirDrill {
                    ctx: dctx,
                    progress: ctx.progress().bytes(&job.name),
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
                }
                .run()
                .await
            }
        };
        reports.push(report);
    }
    Ok(reports)
}

fn objective_line(what: &str, o: &Objective, measured_is_final: bool) -> String {
    let target = o
        .target_secs
        .map(|t| format!("target {}", duration(t)))
        .unwrap_or_else(|| "no target in the plan".into());
    let verdict = if !measured_is_final {
        "not reached (the checks never passed)"
    } else if o.met {
        "met"
    } else {
        "MISSED"
    };
    format!(
        "  {what}  {:<10} {target:<22} {verdict}",
        duration(o.measured_secs)
    )
}

fn print_report(r: &DrillReport) {
    println!(
        "drill {}: plan {} job {} region {}, snapshot {} (consistent at {}), environment {}",
        r.id,
        r.plan.as_deref().unwrap_or("-"),
        r.job.as_deref().unwrap_or("-"),
        r.region.as_deref().unwrap_or("-"),
        r.snapshot_id.short(),
        r.consistency_time.format("%Y-%m-%d %H:%M:%S UTC"),
        r.environment
    );
    for ph in &r.phases {
        println!("  {:<10} {}", ph.phase.as_str(), duration(ph.secs));
    }
    let passed = r.error.is_none() && r.checks.iter().all(|c| c.status == CheckStatus::Passed);
    println!("{}", objective_line("RTO", &r.rto, passed));
    println!("{}", objective_line("RPO", &r.rpo, true));
    for c in &r.checks {
        let status = match c.status {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "FAILED",
        };
        println!("  check {:<28} {status:<7} {}", c.name, c.detail);
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    if let Some(k) = &r.kept {
        println!("  kept: {k}");
    }
    let verdict = match r.result {
        DrillResult::Passed => "passed: the backup restores and its checks pass within the objectives",
        DrillResult::CheckFailed => "FAILED: the restored data did not pass its checks (exit 16)",
        DrillResult::ObjectiveMissed => "OBJECTIVE MISSED: the restore works, but RTO or RPO exceeded its target (exit 17)",
        DrillResult::InfraFailed if r.exit_code() == ExitCode::NoSpace => "INFRASTRUCTURE FAILURE: the restore target ran out of space; give the drill environment more room (exit 15). The backup is neither proven good nor bad",
        DrillResult::InfraFailed => "INFRASTRUCTURE FAILURE: the drill could not finish; the backup is neither proven good nor bad (exit 1)",
    };
    println!("  result: {verdict}");
}

/// Records the drills in the catalog; a catalog that cannot be opened or written is a
/// warning (the drill's evidence is on stdout either way).
async fn record(ctx: &Ctx, repo: &Repository, reports: &[DrillReport]) {
    if reports.is_empty() {
        return;
    }
    let mut warnings = Vec::new();
    if let Some(cat) = open_best_effort(ctx, &mut warnings).await {
        let res = async {
            cat.record_repository(repo.id(), &repo.location()).await?;
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
            let restored: Vec<&DrillReport> = reports
                .iter()
                .filter(|r| r.result != crate::drill::DrillResult::InfraFailed)
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
            warnings.push(e.to_string());
        }
        cat.close().await;
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !warnings.is_empty() {
        eprintln!("warning: the drill was not recorded in the catalog, so `lifeboat status` and `history` will not show it; the report above is the evidence");
    }
}

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
