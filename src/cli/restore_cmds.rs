//! Read commands: `snapshots`, `ls`, `restore` and `verify`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::output::{self, bytes, duration, print_json};
use super::Ctx;
use crate::error::ExitCode;
use crate::repo::verify::{ReadData, Severity};
use crate::repo::Repository;
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
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`
    pub snapshot: String,
    /// Directory to restore into; must be missing or empty
    #[arg(long, short, value_name = "DIR", required_unless_present = "plan")]
    pub target: Option<PathBuf>,
    #[command(flatten)]
    pub plan: super::plan_cmds::PlanRestoreArgs,
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

pub(super) async fn open_repo(ctx: &Ctx) -> Result<Repository> {
    let store = super::region_cmds::open_store(ctx)?;
    // Refuse early (exit 10) before asking for a password the user cannot use.
    crate::repo::read_config(&store).await?;
    let pw = ctx.password(&store.describe(), false)?;
    Repository::open(store, pw.as_bytes()).await
}

pub async fn snapshots(ctx: &Ctx) -> Result<ExitCode> {
    let repo = open_repo(ctx).await?;
    let snaps = repo.list_snapshots().await?;
    if ctx.global.json {
        print_json(&super::output::snapshots_json(
            snaps.iter().map(|(id, s)| (id, s)),
        ));
        return Ok(ExitCode::Ok);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<12} {:>10}  paths",
        "id", "time (UTC)", "host", "tags", "size"
    );
    println!("{}", "-".repeat(90));
    for (id, s) in &snaps {
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
    Ok(ExitCode::Ok)
}

pub async fn ls(ctx: &Ctx, a: LsArgs) -> Result<ExitCode> {
    let repo = open_repo(ctx).await?;
    let (id, snap) = repo.find_snapshot(&a.snapshot).await?;
    let index = repo.load_index().await?;
    let mut stack = vec![(PathBuf::from("/"), snap.tree)];
    let mut rows = Vec::new();
    while let Some((dir, tree)) = stack.pop() {
        let t = repo.load_tree(&index, &tree).await?;
        for n in t.nodes.into_iter().rev() {
            let p = dir.join(&n.name);
            if let Some(s) = n.subtree {
                stack.push((p.clone(), s));
            }
            rows.push((p, n));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if ctx.global.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, n)| json!({"path": p, "type": n.kind, "mode": n.mode, "uid": n.uid, "gid": n.gid, "size": n.size, "mtime_ns": n.mtime_ns, "target": n.target}))
            .collect();
        print_json(&json!({"snapshot_id": id, "nodes": v}));
        return Ok(ExitCode::Ok);
    }
    for (p, n) in rows {
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
        return super::plan_cmds::restore(ctx, a).await;
    }
    let target = a
        .target
        .clone()
        .ok_or_else(|| Error::Usage("--target DIR is required".into()))?;
    let repo =
        super::region_cmds::open_repo_for_read(ctx, a.region.as_deref(), a.allow_fallback).await?;
    let lock = repo.lock("restore", false).await?;
    let result = async {
        let (id, snap) = repo.find_snapshot(&a.snapshot).await?;
        let index = Arc::new(repo.load_index().await?);
        let report = crate::restore::restore(
            &repo,
            index,
            &snap,
            &target,
            ctx.progress().bytes("restore"),
            ctx.cancel.clone(),
        )
        .await?;
        Ok::<_, Error>((id, report))
    }
    .await;
    lock.release().await;
    let (id, report) = result?;
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "snapshot_id": id, "target": target, "report": report}),
        );
    } else if !ctx.global.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} hard links, {} in {}",
            id.short(),
            target.display(),
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
    Ok(ExitCode::Ok)
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
        (Some(s), _) => ReadData::Subset(parse_percent(s)?),
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let pctx = super::region_cmds::plan_ctx(ctx, a.plan.as_deref())?;
    let ctx = pctx.as_ref().unwrap_or(ctx);
    if a.region.is_none() && super::region_cmds::is_multi(ctx) {
        return Err(Error::Usage(format!(
            "verify checks one region at a time: pass --region NAME (regions: {})",
            super::region_cmds::region_names(ctx)?
        )));
    }
    if let Some(b) = &a.budget {
        super::catalog_cmds::parse_size(b)?;
    }
    let repo = super::region_cmds::open_repo_for_read(ctx, a.region.as_deref(), false).await?;
    let lock = repo.lock("verify", false).await?;
    let result = async {
        let (read, catalog) = match &a.budget {
            Some(b) => {
                let (c, r) = super::catalog_cmds::budget_selection(ctx, &repo, b).await?;
                (r, Some(c))
            }
            None => (read, None),
        };
        let report = crate::repo::verify::verify(
            &repo,
            read,
            ctx.progress().bytes("verify"),
            ctx.cancel.clone(),
        )
        .await?;
        Ok::<_, Error>((report, catalog))
    }
    .await;
    lock.release().await;
    let (mut report, catalog) = result?;
    super::catalog_cmds::after_verify(ctx, &repo, catalog, &mut report).await;
    let errors = report.errors();
    if ctx.global.json {
        print_json(&json!({"message_type": "summary", "errors": errors, "report": report}));
    } else {
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
    Ok(if errors > 0 {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    })
}
