//! Plan commands: `plan check`, and the `--plan` forms of `backup`, `snapshots` and
//! `restore`. The repository is the plan's destination, opened with the password the plan
//! names; database restores load into a `--to` URL.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::commands::{BackupArgs, RestoreArgs, SnapshotsArgs};
use super::output::{bytes, duration, print_json};
use super::Ctx;
use crate::error::ExitCode;
use crate::ids::SnapshotId;
use crate::plan::{self, JobSpec, Plan, SecretSpec, SourceSpec};
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;
use crate::restore::database::{restore_mariadb, restore_postgres, DbRestoreOptions};
use crate::source::db::DbConn;
use crate::source::process::find_tool;
use crate::source::BackupOptions;
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

struct Finding {
    ok: bool,
    what: String,
}

async fn check(ctx: &Ctx, a: PlanCheckArgs) -> Result<ExitCode> {
    let p = match plan::load(&a.file) {
        Ok(p) => p,
        Err(e) => {
            if ctx.global.json {
                let v: Vec<_> = e.issues.iter().map(|i| json!({"file": i.file, "line": i.line, "key": i.key, "problem": i.problem, "fix": i.fix})).collect();
                print_json(&json!({"plan": a.file, "valid": false, "issues": v}));
            } else {
                println!("plan {} is not valid:", a.file.display());
                for i in &e.issues {
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
            return Ok(ExitCode::Error);
        }
    };
    let mut f: Vec<Finding> = vec![Finding {
        ok: true,
        what: format!(
            "plan {} parses: {} job(s), destination {}",
            p.name,
            p.jobs.len(),
            p.primary().location()
        ),
    }];
    for (job, gap) in p.rpo_misses() {
        f.push(Finding {
            ok: false,
            what: format!(
                "job {job}: its schedule leaves gaps of up to {} between backups, longer than the plan's rpo of {}; run it more often or relax the objective",
                humantime::format_duration(gap),
                humantime::format_duration(p.objectives.rpo.unwrap_or_default())
            ),
        });
    }
    if !a.offline {
        preflight(ctx, &p, &mut f).await;
    }
    let problems = f.iter().filter(|x| !x.ok).count();
    if ctx.global.json {
        let v: Vec<_> = f
            .iter()
            .map(|x| json!({"ok": x.ok, "check": x.what}))
            .collect();
        print_json(&json!({"plan": a.file, "valid": true, "problems": problems, "checks": v}));
    } else {
        for x in &f {
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
    Ok(if problems == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Error
    })
}

async fn preflight(ctx: &Ctx, p: &Plan, f: &mut Vec<Finding>) {
    let mut push = |ok: bool, what: String| f.push(Finding { ok, what });
    // S3 destinations: bucket, credentials, endpoint, region and clock, each told apart.
    for d in &p.destinations {
        if let Ok(dest) = crate::store::multi::Destination::from_config(&d.0) {
            if dest.store.backend() == crate::store::Backend::S3 {
                let h = dest.store.probe().await;
                let hint = h
                    .hint
                    .as_deref()
                    .map(|x| format!("; {x}"))
                    .unwrap_or_default();
                push(
                    h.ok(),
                    format!(
                        "destination {} (bucket {}, region {}): {}{hint}",
                        h.name, h.bucket, h.region, h.detail
                    ),
                );
            }
        }
    }
    // The repository: reachable, and the password opens it.
    match p.password.read() {
        Err(e) => push(false, format!("repository password: {e}; {}", e.fix)),
        Ok(_) => match open_plan_repo(ctx, p).await {
            Ok(r) => push(
                true,
                format!(
                    "repository {} opens with the password from {}",
                    r.location(),
                    p.password.describe()
                ),
            ),
            Err(e) => push(
                false,
                format!(
                    "repository {}: {e}{}",
                    p.primary().location(),
                    e.hint().map(|h| format!("; {h}")).unwrap_or_default()
                ),
            ),
        },
    }
    for job in &p.jobs {
        for (ok, what) in preflight_job(job) {
            push(ok, format!("job {}: {what}", job.name));
        }
    }
    if let Some(d) = &p.drill {
        for (ok, what) in preflight_drill(d) {
            push(
                ok,
                format!("drill environment {}: {what}", d.environment.name()),
            );
        }
    }
}

/// The drill environment: a scratch server answers with the password from the plan (nothing
/// is created or swept); command scripts are at least valid shell.
fn preflight_drill(d: &plan::DrillSpec) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    if let Some(s) = &d.scratch {
        let password = match &s.password {
            None => None,
            Some(sec) => match sec.read() {
                Ok(pw) => Some(crate::drill::env::Password(pw)),
                Err(e) => {
                    out.push((false, format!("server password: {e}; {}", e.fix)));
                    return out;
                }
            },
        };
        let server = s.server.server.describe(&s.server.kind);
        let scratch = crate::drill::env::ScratchServer::new(
            s.server.clone(),
            password,
            "preflight",
            std::time::Duration::ZERO,
        );
        out.push(match scratch.ping() {
            Ok(v) => (true, format!("server {server} answers (version {v})")),
            Err(e) => (
                false,
                format!("server {server}: {e}; check the URL, the role and the password source"),
            ),
        });
    }
    if let Some(c) = &d.command {
        for (name, script) in [("provision", &c.provision), ("teardown", &c.teardown)] {
            let r = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .output();
            out.push(match r {
                Ok(o) if o.status.success() => (true, format!("{name} command is valid shell")),
                Ok(o) => (
                    false,
                    format!(
                        "{name} command is not valid shell: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ),
                Err(e) => (
                    false,
                    format!("cannot run sh to check the {name} command: {e}"),
                ),
            });
        }
    }
    out
}

fn tools_check(tools: &[&[&str]], bin: Option<&std::path::Path>) -> Vec<(bool, String)> {
    tools
        .iter()
        .map(|alts| match alts.iter().find_map(|t| find_tool(t, bin)) {
            Some(p) => (true, format!("{} found at {}", alts[0], p.display())),
            None => (
                false,
                format!(
                    "{} not found {}; install the tool or set bin_dir in the plan",
                    alts.join(" / "),
                    bin.map(|b| format!("in {}", b.display()))
                        .unwrap_or_else(|| "on PATH".into())
                ),
            ),
        })
        .collect()
}

fn secret_check(s: &Option<SecretSpec>) -> Option<(bool, String)> {
    s.as_ref().map(|s| match s.read() {
        Ok(_) => (
            true,
            format!("database password readable from {}", s.describe()),
        ),
        Err(e) => (false, format!("database password: {e}; {}", e.fix)),
    })
}

/// The major version of the pg_dump that a job would run.
fn pg_dump_major(bin: Option<&std::path::Path>) -> Option<u64> {
    let out = std::process::Command::new(find_tool("pg_dump", bin)?)
        .arg("--version")
        .output()
        .ok()?;
    // "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let ver = text.split(") ").nth(1)?;
    ver.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn preflight_job(job: &JobSpec) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    match &job.source {
        SourceSpec::Dir { paths } => {
            for p in paths {
                out.push(match std::fs::symlink_metadata(p) {
                    Ok(_) => (true, format!("{} exists", p.display())),
                    Err(e) => (
                        false,
                        format!("{}: {e}; fix the path in the plan", p.display()),
                    ),
                });
            }
        }
        SourceSpec::Postgres(s) => {
            out.extend(tools_check(
                &[&["pg_dump"], &["pg_dumpall"], &["psql"], &["pg_restore"]],
                s.bin_dir.as_deref(),
            ));
            out.extend(secret_check(&s.conn.password));
            let pw = s.conn.password.as_ref().and_then(|p| p.read().ok());
            let env = crate::source::postgres::libpq_env(
                &s.conn,
                pw.as_deref().map(|x| x.as_str()),
                None,
            );
            let secrets = pw.iter().map(|p| p.to_string()).collect();
            let r = crate::source::postgres::psql_session(
                s.bin_dir.as_deref(),
                &env,
                &job.name,
                secrets,
            )
            .and_then(|mut ses| {
                let v = ses.query_json(
                    "SELECT json_build_object('v', current_setting('server_version'), 'num', current_setting('server_version_num')::int);",
                )?;
                ses.close("")?;
                Ok(v)
            });
            if let Ok(v) = &r {
                let server = v["num"].as_u64().unwrap_or(0) / 10000;
                if let Some(dump) = pg_dump_major(s.bin_dir.as_deref()) {
                    if dump < server {
                        out.push((
                            false,
                            format!(
                                "pg_dump {dump} cannot dump a PostgreSQL {server} server; install postgresql-client-{server} and set bin_dir = \"/usr/lib/postgresql/{server}/bin\""
                            ),
                        ));
                    }
                }
            }
            out.push(match r {
                Ok(v) => (
                    true,
                    format!(
                        "database {} reachable (PostgreSQL {})",
                        s.conn.describe("postgres"),
                        v["v"].as_str().unwrap_or("?")
                    ),
                ),
                Err(e) => (
                    false,
                    format!(
                        "database {} not reachable: {e}",
                        s.conn.describe("postgres")
                    ),
                ),
            });
        }
        SourceSpec::Mariadb(s) => {
            out.extend(tools_check(
                &[&["mariadb-dump", "mysqldump"], &["mariadb", "mysql"]],
                s.bin_dir.as_deref(),
            ));
            out.extend(secret_check(&s.conn.password));
            let pw = s.conn.password.as_ref().and_then(|p| p.read().ok());
            let secrets: Vec<String> = pw.iter().map(|p| p.to_string()).collect();
            let r = crate::source::mysql::ClientOptions::new(&s.conn, pw.as_deref().map(|x| x.as_str()), s.no_defaults).and_then(|o| {
                let mut ses = crate::source::mysql::client_session(s.bin_dir.as_deref(), &o, None, &job.name, secrets)?;
                let v = ses.query_json(&format!(
                    "SELECT JSON_OBJECT('v', VERSION(), 'db', (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}));",
                    crate::source::mysql::sql_literal(&s.conn.database)
                ))?;
                ses.close("")?;
                Ok(v)
            });
            out.push(match r {
                Ok(v) if v["db"].as_i64() == Some(1) => (true, format!("database {} reachable ({})", s.conn.describe("mariadb"), v["v"].as_str().unwrap_or("?"))),
                Ok(_) => (false, format!("server reachable but database {:?} does not exist; fix `database` in the plan", s.conn.database)),
                Err(e) => (false, format!("database {} not reachable: {e}", s.conn.describe("mariadb"))),
            });
        }
        SourceSpec::Btrfs(s) => {
            out.extend(tools_check(&[&["btrfs"]], None));
            let sub = s.subvolume.to_string_lossy();
            out.push(match crate::source::volume::run_tool(&job.name, "btrfs", &["subvolume", "show", &sub]) {
                Ok(_) => (true, format!("{sub} is a btrfs subvolume")),
                Err(e) => (false, format!("{sub} is not a btrfs subvolume ({e}); fix `subvolume` in the plan or create it with `btrfs subvolume create`")),
            });
        }
        SourceSpec::Block(s) => out.push(match std::fs::File::open(&s.path) {
            Ok(_) => (true, format!("{} is readable", s.path.display())),
            Err(e) => (
                false,
                format!(
                    "{}: {e}; fix `path` or run lifeboat with read access to it",
                    s.path.display()
                ),
            ),
        }),
        SourceSpec::Lvm(_) => out.extend(tools_check(&[&["lvcreate"], &["lvremove"]], None)),
        SourceSpec::Zfs(_) => out.extend(tools_check(&[&["zfs"]], None)),
    }
    out
}

// ----- backup ---------------------------------------------------------------------------

pub async fn backup(ctx: &Ctx, a: BackupArgs) -> Result<ExitCode> {
    let p = load(a.plan.as_deref().expect("--plan given"), ctx)?;
    let jobs = p.select_jobs(a.job.as_deref())?;
    let repo = open_plan_repo(ctx, &p).await?;
    // A region that missed earlier runs is caught up first, so it commits this one too.
    super::region_cmds::catch_up(ctx, &repo).await?;
    let mut worst: Option<Error> = None;
    let mut partial = false;
    let mut results = Vec::new();
    for job in jobs {
        ctx.cancel.check()?;
        let opts = BackupOptions {
            tags: [job.tags.clone(), a.tags.clone()].concat(),
            host: a.host.clone(),
            plan: Some(p.name.clone()),
            job: Some(job.name.clone()),
            force: a.force,
        };
        let started = chrono::Utc::now();
        let res = match crate::source::from_job(job) {
            Ok(src) => {
                crate::source::backup(
                    &repo,
                    src,
                    &opts,
                    ctx.progress().bytes(&job.name),
                    ctx.cancel.clone(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        // The catalog is not on the critical path: a failure to record is a warning.
        let host = opts.host.clone().unwrap_or_else(crate::source::hostname);
        let regions: Vec<_> = match repo.store.as_multi() {
            Some(m) => crate::plan::DestinationSpec::catalog_regions(&p.destinations)
                .into_iter()
                .zip(m.results())
                .collect(),
            None => Vec::new(),
        };
        super::catalog_cmds::record_backup(
            ctx,
            &repo,
            started,
            &host,
            Some((&p.name, &job.name)),
            res.as_ref(),
            &regions,
        )
        .await;
        match res {
            Ok(r) => {
                partial |= r.partial;
                let s = &r.snapshot.summary;
                if !ctx.global.json && !ctx.global.quiet {
                    println!(
                        "job {}: snapshot {} saved ({} processed, {} new, consistent at {}) in {}",
                        job.name,
                        r.snapshot_id.short(),
                        bytes(s.bytes_processed),
                        bytes(s.bytes_added),
                        r.snapshot
                            .consistency_time
                            .format("%Y-%m-%d %H:%M:%S%.3f UTC"),
                        duration(s.duration_secs)
                    );
                }
                results.push(json!({"job": job.name, "ok": true, "snapshot_id": r.snapshot_id, "summary": s, "source_meta": r.snapshot.source_meta, "warnings": r.warnings}));
            }
            Err(e) => {
                eprintln!("error: job {}: {e}", job.name);
                if let Some(h) = e.hint() {
                    eprintln!("hint: {h}");
                }
                results.push(json!({"job": job.name, "ok": false, "error": e.to_string(), "code": e.exit_code().code()}));
                if matches!(e, Error::Interrupted) {
                    return Err(e);
                }
                worst.get_or_insert(e);
            }
        }
    }
    let regions = repo.store.as_multi().map(|m| m.results());
    let region_code = regions
        .as_ref()
        .map(|r| super::region_cmds::report_regions(ctx, r))
        .unwrap_or(ExitCode::Ok);
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "plan": p.name, "jobs": results, "regions": regions}),
        );
    }
    if region_code == ExitCode::Partial {
        partial = true;
    }
    if let Some(e) = worst {
        // Every job ran; the first failure decides the exit code.
        return Ok(e.exit_code());
    }
    Ok(if partial {
        ExitCode::Partial
    } else {
        ExitCode::Ok
    })
}

// ----- snapshots ------------------------------------------------------------------------

fn of_plan<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    p: &Plan,
    job: Option<&str>,
) -> Vec<&'a (SnapshotId, Snapshot)> {
    snaps
        .iter()
        .filter(|(_, s)| {
            s.plan.as_deref() == Some(p.name.as_str())
                && job.is_none_or(|j| s.job.as_deref() == Some(j))
        })
        .collect()
}

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
    let snaps = of_plan(&all, &p, a.job.as_deref());
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
            s.source_kind,
            s.consistency_time.format("%Y-%m-%d %H:%M:%S%.3f"),
            bytes(s.summary.bytes_processed)
        );
    }
    println!("{} snapshots of plan {}", snaps.len(), p.name);
    Ok(ExitCode::Ok)
}

// ----- restore --------------------------------------------------------------------------

pub(super) async fn find_job_snapshot(
    repo: &Repository,
    p: &Plan,
    job: &str,
    query: &str,
) -> Result<(SnapshotId, Snapshot)> {
    let all = repo.list_snapshots().await?;
    let mut snaps: Vec<_> = of_plan(&all, p, Some(job)).into_iter().cloned().collect();
    if query == "latest" {
        return snaps.pop().ok_or_else(|| Error::SnapshotNotFound {
            query: format!("latest of job {job} (the job has no snapshots yet; run `lifeboat backup --plan {} --job {job}`)", p.file.display()),
        });
    }
    let (id, s) = repo.find_snapshot(query).await?;
    if s.plan.as_deref() != Some(p.name.as_str()) || s.job.as_deref() != Some(job) {
        return Err(Error::Usage(format!(
            "snapshot {} belongs to plan {:?} job {:?}, not plan {:?} job {job:?}; `lifeboat snapshots --plan {}` lists this job's snapshots",
            id.short(),
            s.plan.as_deref().unwrap_or("-"),
            s.job.as_deref().unwrap_or("-"),
            p.name,
            p.file.display()
        )));
    }
    Ok((id, s))
}

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
    let (id, snap) = find_job_snapshot(repo, p, &job.name, &a.snapshot).await?;
    let index = Arc::new(repo.load_index().await?);
    let to = || {
        pa.to.clone().ok_or_else(|| {
            Error::Usage(format!(
                "job {} is a {} job: give --to",
                job.name, snap.source_kind
            ))
        })
    };
    match snap.source_kind.as_str() {
        "postgres" | "mariadb" => {
            let (scheme, conn) = DbConn::parse_url(&to()?)?;
            if scheme != snap.source_kind {
                return Err(Error::Usage(format!(
                    "snapshot {} is a {} dump; --to must be a {}:// URL",
                    id.short(),
                    snap.source_kind,
                    snap.source_kind
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
            let node = snap.source_meta["file"]
                .as_str()
                .unwrap_or_default()
                .to_string();
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
