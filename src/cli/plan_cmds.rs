//! Plan commands: `plan check`, and the `--plan` forms of `backup`, `snapshots` and
//! `restore`. The repository is the plan's destination, opened with the password the plan
//! names; database restores load into a `--to` URL.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{bytes, duration, print_json};
use super::restore_cmds::{RestoreArgs, SnapshotsArgs};
use super::Ctx;
use crate::error::ExitCode;
use crate::ids::SnapshotId;
use crate::ops::preflight::{CheckRequest, PlanCheck};
use crate::plan::{self, JobSpec, Plan, SecretSpec, SourceSpec};
use crate::repo::Repository;
use crate::restore::database::{restore_mariadb, restore_postgres, DbRestoreOptions};
use crate::source::db::DbConn;
use crate::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Validate a plan and preflight it: tools on PATH, secrets present, databases reachable,
    /// repository reachable and opened by the password (exit 1 on any problem)
    Check(PlanCheckArgs),
}

#[derive(Args, Debug)]
pub struct PlanCheckArgs {
    /// The plan file
    pub file: PathBuf,
    /// Only validate the file; do not contact servers or the repository
    #[arg(long)]
    pub offline: bool,
}

/// The `restore --plan` flags (flattened into `restore`).
#[derive(Args, Debug, Default)]
pub struct PlanRestoreArgs {
    /// Restore a snapshot of this plan (from its destination)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --plan: the job whose snapshot is restored
    #[arg(long, requires = "plan", value_name = "NAME")]
    pub job: Option<String>,
    /// Database jobs: the server and database to load into, e.g. postgres://user@host:5432/db
    /// or mariadb://root@/db?socket=/run/mysqld/mysqld.sock (no password in the URL).
    /// Block jobs: the image file to write (must not exist)
    #[arg(long, requires = "plan", value_name = "URL|FILE")]
    pub to: Option<String>,
    /// Password for the --to server: first line of this file (else LIFEBOAT_TARGET_PASSWORD)
    #[arg(long, env = "LIFEBOAT_TARGET_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Load into a database that already holds objects (replacing what the dump contains)
    #[arg(long, requires = "plan")]
    pub force: bool,
    /// PostgreSQL: restore roles and tablespaces (globals.sql) before the database
    #[arg(long, requires = "plan")]
    pub globals: bool,
    /// Do not restore who owns what, for a server that lacks the dumped accounts.
    /// PostgreSQL: pg_restore --no-owner --no-privileges; MariaDB: views, routines,
    /// triggers and events are defined as the loading user (DEFINER=CURRENT_USER)
    #[arg(long, requires = "plan")]
    pub no_owner: bool,
    /// PostgreSQL: put everything in the default tablespace (pg_restore --no-tablespaces;
    /// with --globals, globals.sql's tablespace statements are left out too), for a server
    /// without the source's tablespace directories
    #[arg(long, requires = "plan")]
    pub no_tablespaces: bool,
    /// PostgreSQL: parallel pg_restore workers (more than 1 stages the archive in a temp file)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
}

pub async fn plan(ctx: &Ctx, cmd: PlanCommand) -> Result<ExitCode> {
    match cmd {
        PlanCommand::Check(a) => check(ctx, a).await,
    }
}

pub(super) fn load(file: &std::path::Path, ctx: &Ctx) -> Result<Plan> {
    if let Some(r) = ctx.global.repo.first() {
        // LIFEBOAT_REPO may well be exported in the shell: ignore it, but say so.
        eprintln!("warning: --repo/LIFEBOAT_REPO ({r}) is ignored: the plan names its destination");
    }
    Ok(plan::load(file)?)
}

pub(super) fn secret_err(what: &str, e: plan::SecretError) -> Error {
    Error::Usage(format!("{what}: {e}; {}", e.fix))
}

async fn open_plan_repo(ctx: &Ctx, p: &Plan) -> Result<Repository> {
    let pctx = ctx.with_plan(p.clone());
    let store = super::region_cmds::open_store(&pctx)?;
    crate::repo::read_config(&store).await?;
    let pw = pctx.password(&store.describe(), false)?;
    Repository::open(store, pw.as_bytes()).await
}

// ----- plan check -----------------------------------------------------------------------

async fn check(ctx: &Ctx, a: PlanCheckArgs) -> Result<ExitCode> {
    let req = CheckRequest { offline: a.offline };
    let r = crate::ops::preflight::check(&a.file, req).await;
    match &r {
        PlanCheck::Invalid { issues, .. } => {
            if ctx.global.json {
                let v: Vec<_> = issues.iter().map(|i| json!({"file": i.file, "line": i.line, "key": i.key, "problem": i.problem, "fix": i.fix})).collect();
                print_json(&json!({"plan": a.file, "valid": false, "issues": v}));
            } else {
                println!("plan {} is not valid:", a.file.display());
                for i in issues {
                    println!(
                        "  {}:{}: {}: {}",
                        i.file.display(),
                        i.line,
                        i.key,
                        i.problem
                    );
                    println!("      fix: {}", i.fix);
                }
            }
        }
        PlanCheck::Checked { findings: f, .. } => {
            let problems = r.problems();
            if ctx.global.json {
                let v: Vec<_> = f
                    .iter()
                    .map(|x| json!({"ok": x.ok, "check": x.what}))
                    .collect();
                print_json(
                    &json!({"plan": a.file, "valid": true, "problems": problems, "checks": v}),
                );
            } else {
                for x in f {
                    println!("{} {}", if x.ok { "ok     " } else { "PROBLEM" }, x.what);
                }
                println!(
                    "{}",
                    if problems == 0 {
                        "plan is ready".to_string()
                    } else {
                        format!("{problems} problem(s) found")
                    }
                );
            }
        }
    }
    Ok(r.exit_code())
}

// ----- snapshots ------------------------------------------------------------------------

pub async fn snapshots(ctx: &Ctx, a: SnapshotsArgs) -> Result<ExitCode> {
    let p = load(a.plan.as_deref().expect("--plan given"), ctx)?;
    if let Some(j) = &a.job {
        p.select_jobs(Some(j))?;
    }
    if p.destinations.len() > 1 {
        // Several regions: which snapshot exists in which destination.
        return super::region_cmds::snapshots(&ctx.with_plan(p)).await;
    }
    let repo = open_plan_repo(ctx, &p).await?;
    let all = repo.list_snapshots().await?;
    let snaps = crate::ops::snapshots::of_plan(&all, &p, a.job.as_deref());
    if ctx.global.json {
        print_json(&super::output::snapshots_json(
            snaps.iter().map(|(id, s)| (id, s)),
        ));
        return Ok(ExitCode::Ok);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<9} {:<24} {:>10}",
        "id", "time (UTC)", "job", "kind", "consistent at (UTC)", "size"
    );
    println!("{}", "-".repeat(95));
    for (id, s) in &snaps {
        println!(
            "{:<10} {:<20} {:<16} {:<9} {:<24} {:>10}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.job.as_deref().unwrap_or("-"),
            s.source.kind(),
            s.consistency_time.format("%Y-%m-%d %H:%M:%S%.3f"),
            bytes(s.summary.bytes_processed)
        );
    }
    println!("{} snapshots of plan {}", snaps.len(), p.name);
    Ok(ExitCode::Ok)
}

// ----- restore --------------------------------------------------------------------------

fn target_password(a: &PlanRestoreArgs) -> Result<Option<zeroize::Zeroizing<String>>> {
    if let Some(f) = &a.to_password_file {
        return SecretSpec::File(f.clone())
            .read()
            .map(Some)
            .map_err(|e| secret_err("--to-password-file", e));
    }
    Ok(std::env::var("LIFEBOAT_TARGET_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())
        .map(zeroize::Zeroizing::new))
}

pub async fn restore(ctx: &Ctx, a: RestoreArgs) -> Result<ExitCode> {
    let pa = &a.plan;
    let p = load(pa.plan.as_deref().expect("--plan given"), ctx)?;
    let job_name = pa.job.as_deref().ok_or_else(|| {
        Error::Usage(format!(
            "--job is required with --plan for restore; the plan's jobs are: {}",
            p.jobs
                .iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let job = p.select_jobs(Some(job_name))?[0];
    let repo = super::region_cmds::open_repo_for_read(
        &ctx.with_plan(p.clone()),
        a.region.as_deref(),
        a.allow_fallback,
    )
    .await?;
    let lock = repo.lock("restore", false).await?;
    let result = restore_locked(ctx, &a, &p, job, &repo).await;
    lock.release().await;
    let (id, report) = result?;
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "snapshot_id": id, "job": job.name, "report": report}),
        );
    } else if !ctx.global.quiet {
        println!(
            "restored snapshot {} of job {}: {}",
            id.short(),
            job.name,
            report["text"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::Ok)
}

async fn restore_locked(
    ctx: &Ctx,
    a: &RestoreArgs,
    p: &Plan,
    job: &JobSpec,
    repo: &Repository,
) -> Result<(SnapshotId, serde_json::Value)> {
    let pa = &a.plan;
    let (id, snap) =
        crate::ops::snapshots::find_job_snapshot(repo, p, &job.name, &a.snapshot).await?;
    let index = Arc::new(repo.load_index().await?);
    let to = || {
        pa.to.clone().ok_or_else(|| {
            Error::Usage(format!(
                "job {} is a {} job: give --to",
                job.name,
                snap.source.kind()
            ))
        })
    };
    match snap.source.kind() {
        "postgres" | "mariadb" => {
            let (scheme, conn) = DbConn::parse_url(&to()?)?;
            if scheme != snap.source.kind() {
                return Err(Error::Usage(format!(
                    "snapshot {} is a {} dump; --to must be a {}:// URL",
                    id.short(),
                    snap.source.kind(),
                    snap.source.kind()
                )));
            }
            let (bin_dir, no_defaults) = match &job.source {
                SourceSpec::Postgres(s) => (s.bin_dir.clone(), false),
                SourceSpec::Mariadb(s) => (s.bin_dir.clone(), s.no_defaults),
                _ => (None, false),
            };
            let opts = DbRestoreOptions {
                force: pa.force,
                globals: pa.globals,
                jobs: pa.jobs,
                bin_dir,
                no_defaults,
                no_owner: pa.no_owner,
                no_tablespaces: pa.no_tablespaces,
                create_roles: Vec::new(),
            };
            let pw = target_password(pa)?;
            let clock = std::time::Instant::now();
            let r = if scheme == "postgres" {
                restore_postgres(repo, &index, &snap, &conn, pw, &opts, &ctx.cancel).await?
            } else {
                restore_mariadb(repo, &index, &snap, &conn, pw, &opts, &ctx.cancel).await?
            };
            let text = format!(
                "{} loaded into {}{}{} in {}",
                bytes(r.bytes),
                r.target,
                if r.created_database {
                    " (database created)"
                } else {
                    ""
                },
                if r.globals_restored {
                    ", globals first"
                } else {
                    ""
                },
                duration(clock.elapsed().as_secs_f64())
            );
            Ok((id, json!({"text": text, "database": r})))
        }
        "block" | "lvm" => {
            let path = PathBuf::from(to()?);
            let node = match &snap.source {
                crate::repo::snapshot::SourceMeta::Image { meta, .. } => meta.file.clone(),
                _ => String::new(),
            };
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Error::Usage(format!(
                        "{} already exists; restore a block image into a new file",
                        path.display()
                    )),
                    _ => Error::io("create", &path, e),
                })?;
            let res =
                crate::restore::restore_sparse(repo, &index, &snap, &node, &file, &ctx.cancel)
                    .await;
            match res {
                Ok(n) => Ok((
                    id,
                    json!({"text": format!("{} written sparse to {}", bytes(n), path.display()), "bytes": n, "file": path}),
                )),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
            }
        }
        _ => {
            let target = a.target.clone().ok_or_else(|| {
                Error::Usage(format!(
                    "job {} restores a file tree: give --target DIR",
                    job.name
                ))
            })?;
            let r = crate::restore::restore(
                repo,
                index,
                &snap,
                &target,
                ctx.progress().bytes("restore"),
                ctx.cancel.clone(),
            )
            .await?;
            let text = format!(
                "{} files, {} dirs, {} into {} in {}",
                r.files,
                r.dirs,
                bytes(r.bytes),
                target.display(),
                duration(r.duration_secs)
            );
            Ok((id, json!({"text": text, "report": r})))
        }
    }
}
