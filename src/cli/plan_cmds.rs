//! Plan commands: `plan check`. The repository is the plan's destination, opened with the
//! password the plan names.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::print_json;
use super::Ctx;
use crate::error::ExitCode;
use crate::plan::{self, JobSpec, Plan, SecretSpec, SourceSpec};
use crate::repo::Repository;
use crate::sys::process::find_tool;
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
            if let Some(s3) = &dest.s3 {
                let h = crate::store::s3::healthcheck(s3).await;
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
