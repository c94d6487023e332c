//! Read commands: `snapshots` (a repository's, a plan's, or which is in which region), `ls`,
//! `restore` (a tree into `--target`, or a plan job's snapshot by its kind) and `verify`.
//! Each parses its flags, calls its use case in `ops` and renders the report.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use zeroize::Zeroizing;

use super::output::{self, bytes, duration, print_json};
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::restore::{JobRequest, JobRestore, Restored, TreeRequest, TreeRestore};
use crate::ops::snapshots::{Listing, Presence};
use crate::ops::verify::{ReadMode, Verification, VerifyRequest};
use crate::plan::SecretSpec;
use crate::repo::verify::Severity;
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// List the snapshots of this plan (from its destination)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --plan: only this job's snapshots
    #[arg(long, requires = "plan", value_name = "NAME")]
    pub job: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`
    pub snapshot: String,
    /// Show mode, owner, size and mtime
    #[arg(long, short)]
    pub long: bool,
    /// A snapshot of this plan (from its destination)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --plan: `latest` is this job's newest snapshot (and an id must be the job's)
    #[arg(long, requires = "plan", value_name = "NAME")]
    pub job: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`
    pub snapshot: String,
    /// Directory to restore into; must be missing or empty
    #[arg(long, short, value_name = "DIR", required_unless_present = "plan")]
    pub target: Option<PathBuf>,
    #[command(flatten)]
    pub plan: PlanRestoreArgs,
    /// Restore from this region (a destination name) instead of the first that answers
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// When a blob fails to read or verify in the chosen region, read it from another (and say so)
    #[arg(long)]
    pub allow_fallback: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read every pack and verify every blob (decrypt, decompress, re-hash)
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Take the destinations and password from this plan file (then pick one with --region)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Read and verify a random subset of packs, e.g. `10%`
    #[arg(long, value_name = "N%")]
    pub read_data_subset: Option<String>,
    /// Check this region (a destination name); required when there are several
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Read the least recently verified packs first, at most SIZE bytes (e.g. `5GiB`);
    /// repeated runs cover every pack (the catalog keeps the ledger)
    #[arg(long, value_name = "SIZE", conflicts_with_all = ["read_data", "read_data_subset"])]
    pub budget: Option<String>,
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

pub async fn snapshots(ctx: &Ctx, a: SnapshotsArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), true)?;
    let found = crate::ops::snapshots::list(&ctx.env(), &target, a.job.as_deref()).await?;
    match &found.listing {
        Listing::Repository(snaps) => print_snapshots(ctx, snaps),
        Listing::Plan { plan, snapshots } => print_plan_snapshots(ctx, plan, snapshots),
        Listing::Regions(p) => print_presence(ctx, p),
    }
    if !found.damaged.is_empty() {
        // Stdout stays the listing (a JSON array with --json); the damage is on stderr and
        // in the exit code.
        let files: Vec<&str> = found.damaged.iter().map(|d| d.file.as_str()).collect();
        eprintln!(
            "error: {} snapshot file(s) cannot be read and are not listed: {} (exit 13)",
            files.len(),
            files.join(", ")
        );
    }
    Ok(found.exit_code())
}

type Snapshots = [(crate::ids::SnapshotId, crate::repo::snapshot::Snapshot)];

fn print_snapshots(ctx: &Ctx, snaps: &Snapshots) {
    if ctx.global.json {
        print_json(&output::snapshots_json(snaps.iter().map(|(id, s)| (id, s))));
        return;
    }
    println!(
        "{:<10} {:<20} {:<16} {:<12} {:>10}  paths",
        "id", "time (UTC)", "host", "tags", "size"
    );
    println!("{}", "-".repeat(90));
    for (id, s) in snaps {
        println!(
            "{:<10} {:<20} {:<16} {:<12} {:>10}  {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.tags.join(","),
            bytes(s.summary.bytes_processed),
            s.paths.join(" ")
        );
    }
    println!("{} snapshots", snaps.len());
}

fn print_plan_snapshots(ctx: &Ctx, plan: &str, snaps: &Snapshots) {
    if ctx.global.json {
        print_json(&output::snapshots_json(snaps.iter().map(|(id, s)| (id, s))));
        return;
    }
    println!(
        "{:<10} {:<20} {:<16} {:<9} {:<24} {:>10}",
        "id", "time (UTC)", "job", "kind", "consistent at (UTC)", "size"
    );
    println!("{}", "-".repeat(95));
    for (id, s) in snaps {
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
    println!("{} snapshots of plan {plan}", snaps.len());
}

/// Which snapshot exists in which region.
fn print_presence(ctx: &Ctx, p: &Presence) {
    if ctx.global.json {
        let v: Vec<_> = p
            .rows
            .iter()
            .map(|r| {
                let names = |want: bool| {
                    p.regions
                        .iter()
                        .zip(&r.present)
                        .filter(|(_, has)| **has == want)
                        .map(|(name, _)| name)
                        .collect::<Vec<_>>()
                };
                let mut v = serde_json::to_value(&r.snapshot).expect("snapshot serializes");
                v["id"] = json!(r.id);
                v["short_id"] = json!(r.id.short());
                v["regions"] = json!(names(true));
                v["missing_from"] = json!(names(false));
                v
            })
            .collect();
        print_json(&v);
        return;
    }
    let names: Vec<String> = p
        .regions
        .iter()
        .map(|n| format!("{:^8}", truncate(n, 8)))
        .collect();
    println!(
        "{:<10} {:<20} {:<16} {}  paths",
        "id",
        "time (UTC)",
        "host",
        names.join(" ")
    );
    for r in &p.rows {
        let marks: Vec<String> = r
            .present
            .iter()
            .map(|has| format!("{:^8}", if *has { "yes" } else { "-" }))
            .collect();
        println!(
            "{:<10} {:<20} {:<16} {}  {}",
            r.id.short(),
            r.snapshot.time.format("%Y-%m-%d %H:%M:%S"),
            truncate(&r.snapshot.host, 16),
            marks.join(" "),
            r.snapshot.paths.join(" ")
        );
    }
    println!("{} snapshots", p.rows.len());
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

pub async fn ls(ctx: &Ctx, a: LsArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), true)?;
    let c = crate::ops::snapshots::ls_job(&target, a.job.as_deref(), &a.snapshot).await?;
    if ctx.global.json {
        let v: Vec<_> = c
            .nodes
            .iter()
            .map(|(p, n)| json!({"path": p, "type": n.kind, "mode": n.mode, "uid": n.uid, "gid": n.gid, "size": n.size, "mtime_ns": n.mtime_ns, "target": n.target}))
            .collect();
        print_json(&json!({"snapshot_id": c.snapshot_id, "nodes": v}));
        return Ok(ExitCode::Ok);
    }
    for (p, n) in c.nodes {
        if a.long {
            let mtime =
                chrono::DateTime::from_timestamp_nanos(n.mtime_ns).format("%Y-%m-%d %H:%M:%S");
            let target = n.target.map(|t| format!(" -> {t}")).unwrap_or_default();
            println!(
                "{} {:>6} {:>6} {:>12} {} {}{}",
                output::mode_string(n.kind, n.mode),
                n.uid,
                n.gid,
                n.size,
                mtime,
                p.display(),
                target
            );
        } else {
            println!("{}", p.display());
        }
    }
    Ok(ExitCode::Ok)
}

pub async fn restore(ctx: &Ctx, a: RestoreArgs) -> Result<ExitCode> {
    if a.plan.plan.is_some() {
        return restore_job(ctx, a).await;
    }
    let target_dir = a
        .target
        .clone()
        .ok_or_else(|| Error::Usage("--target DIR is required".into()))?;
    let target = ctx.target(None, false)?;
    let req = TreeRequest {
        snapshot: a.snapshot,
        target_dir,
        region: a.region,
        allow_fallback: a.allow_fallback,
    };
    let r = crate::ops::restore::restore_tree(&ctx.env(), &target, req).await?;
    print_tree_restore(ctx, &r);
    Ok(r.exit_code())
}

fn print_tree_restore(ctx: &Ctx, r: &TreeRestore) {
    let report = &r.report;
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "snapshot_id": r.snapshot_id, "target": r.target_dir, "report": report}),
        );
    } else if !ctx.global.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} hard links, {} in {}",
            r.snapshot_id.short(),
            r.target_dir.display(),
            report.files,
            report.dirs,
            report.symlinks,
            report.hardlinks,
            bytes(report.bytes),
            duration(report.duration_secs)
        );
    }
    for f in &report.fallback_reads {
        eprintln!("warning: {f}");
    }
}

/// `restore --plan --job`.
async fn restore_job(ctx: &Ctx, a: RestoreArgs) -> Result<ExitCode> {
    let pa = a.plan;
    let target = ctx.target(pa.plan.as_deref(), true)?;
    let p = target.plan.as_deref().expect("a plan's target");
    let job = pa.job.clone().ok_or_else(|| {
        Error::Usage(format!(
            "--job is required with --plan for restore; the plan's jobs are: {}",
            p.jobs
                .iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    // Only a restore into a server (or an image file) has a use for the server's password.
    let to_password = match &pa.to {
        Some(_) => to_password(&pa)?,
        None => None,
    };
    let req = JobRequest {
        job,
        snapshot: a.snapshot,
        to: pa.to,
        to_password,
        force: pa.force,
        globals: pa.globals,
        no_owner: pa.no_owner,
        no_tablespaces: pa.no_tablespaces,
        jobs: pa.jobs,
        target_dir: a.target,
        region: a.region,
        allow_fallback: a.allow_fallback,
    };
    let r = crate::ops::restore::restore_job(&ctx.env(), &target, req).await?;
    print_job_restore(ctx, &r);
    Ok(r.exit_code())
}

/// The password for the `--to` server: `--to-password-file`, else LIFEBOAT_TARGET_PASSWORD.
fn to_password(a: &PlanRestoreArgs) -> Result<Option<Zeroizing<String>>> {
    if let Some(f) = &a.to_password_file {
        return SecretSpec::File(f.clone())
            .read()
            .map(Some)
            .map_err(|e| Error::Usage(format!("--to-password-file: {e}; {}", e.fix)));
    }
    Ok(std::env::var("LIFEBOAT_TARGET_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())
        .map(Zeroizing::new))
}

fn print_job_restore(ctx: &Ctx, r: &JobRestore) {
    let report = match &r.restored {
        Restored::Database {
            report,
            duration_secs,
        } => {
            let text = format!(
                "{} loaded into {}{}{} in {}",
                bytes(report.bytes),
                report.target,
                if report.created_database {
                    " (database created)"
                } else {
                    ""
                },
                if report.globals_restored {
                    ", globals first"
                } else {
                    ""
                },
                duration(*duration_secs)
            );
            json!({"text": text, "database": report})
        }
        Restored::Image { bytes: n, file } => json!({
            "text": format!("{} written sparse to {}", bytes(*n), file.display()),
            "bytes": n,
            "file": file,
        }),
        Restored::Tree { target_dir, report } => {
            let text = format!(
                "{} files, {} dirs, {} into {} in {}",
                report.files,
                report.dirs,
                bytes(report.bytes),
                target_dir.display(),
                duration(report.duration_secs)
            );
            json!({"text": text, "report": report})
        }
    };
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "snapshot_id": r.snapshot_id, "job": r.job, "report": report}),
        );
    } else if !ctx.global.quiet {
        println!(
            "restored snapshot {} of job {}: {}",
            r.snapshot_id.short(),
            r.job,
            report["text"].as_str().unwrap_or("")
        );
    }
}

fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s.trim_end_matches('%').parse().map_err(|_| {
        Error::Usage(format!(
            "--read-data-subset {s:?}: expected a percentage such as 10%"
        ))
    })?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(Error::Usage(format!(
            "--read-data-subset {s:?}: must be more than 0% and at most 100%"
        )));
    }
    Ok(v)
}

pub async fn verify(ctx: &Ctx, a: VerifyArgs) -> Result<ExitCode> {
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadMode::Subset(parse_percent(s)?),
        (None, true) => ReadMode::All,
        (None, false) => ReadMode::Structure,
    };
    let target = ctx.target(a.plan.as_deref(), false)?;
    let read = match &a.budget {
        Some(b) => ReadMode::Budget(crate::ops::verify::parse_size(b)?),
        None => read,
    };
    let req = VerifyRequest {
        region: a.region,
        read,
    };
    let v = crate::ops::verify::verify(&ctx.env(), &target, req).await?;
    print_verification(ctx, &v);
    Ok(v.exit_code())
}

fn print_verification(ctx: &Ctx, v: &Verification) {
    let report = &v.report;
    let errors = report.errors();
    if ctx.global.json {
        print_json(&json!({"message_type": "summary", "errors": errors, "report": report}));
        return;
    }
    for f in &report.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        if f.severity != Severity::Info || ctx.global.verbose > 0 {
            eprintln!("{sev}: {}: {}", f.object, f.message);
        }
    }
    if !ctx.global.quiet {
        let infos = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Info)
            .count();
        println!(
            "checked {} snapshots, {} trees, {} index files, {} packs; read {} packs ({})",
            report.snapshots,
            report.trees,
            report.index_files,
            report.packs,
            report.packs_read,
            bytes(report.bytes_read)
        );
        if infos > 0 && ctx.global.verbose == 0 {
            println!("{infos} informational findings (-v to show)");
        }
        if errors == 0 {
            println!("no errors were found");
        } else {
            println!("{errors} errors were found");
        }
    }
}
