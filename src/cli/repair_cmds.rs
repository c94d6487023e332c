//! Repair commands: `repair` (rebuild the index from the packs; report, or rewrite, the
//! snapshots that point at lost data) and `unlock` (remove stale locks). Each parses its
//! flags, calls its use case in `ops::repair` and renders the report.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::output::print_json;
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::repair::{Repair, RepairRequest, Unlock, UnlockRequest};
use crate::Result;

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Write each snapshot that points at lost data again without the files and directories
    /// that cannot be restored (tagged `repaired`), and remove the original. Without it the
    /// damaged snapshots are only reported
    #[arg(long)]
    pub rewrite_snapshots: bool,
    /// Read every pack in full first: a pack whose bytes are damaged is replaced by a pack of
    /// its blobs that still verify, and the snapshots and files that needed the others are
    /// named (slow: reads the whole repository)
    #[arg(long)]
    pub read_data: bool,
    /// Take the destinations and password from this plan file (then pick one with --region)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Repair this region (a destination name); required when there are several
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, including live ones. Only when you are sure no lifeboat process
    /// uses the repository: a running backup or prune whose lock is removed may collide
    #[arg(long)]
    pub remove_all: bool,
    /// Take the destinations and password from this plan file
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Unlock only this region (a destination name); default: every region
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
}

pub async fn repair(ctx: &Ctx, a: RepairArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), false)?;
    let req = RepairRequest {
        region: a.region,
        rewrite_snapshots: a.rewrite_snapshots,
        read_data: a.read_data,
    };
    let r = crate::ops::repair::repair(&ctx.env(), &target, req).await?;
    print_repair(ctx, &r, a.rewrite_snapshots);
    Ok(r.exit_code())
}

fn print_repair(ctx: &Ctx, r: &Repair, rewrite: bool) {
    let i = &r.index;
    if ctx.global.json {
        let damaged: Vec<_> = r
            .damaged
            .iter()
            .map(|d| {
                json!({
                    "snapshot_id": d.damage.id,
                    "time": d.damage.snapshot.time,
                    "paths": d.damage.snapshot.paths,
                    "root_lost": d.damage.root_lost,
                    "lost_paths": d.damage.lost_paths,
                    "rewritten_as": d.rewritten_as,
                })
            })
            .collect();
        print_json(&json!({
            "message_type": "summary",
            "location": r.location,
            "packs_salvaged": r.salvaged.iter().map(|p| json!({
                "pack": p.pack,
                "salvaged_into": p.salvaged_into,
                "blobs_kept": p.kept,
                "blobs_lost": p.lost.iter().map(|(b, why)| json!({"blob": b, "error": why})).collect::<Vec<_>>(),
                "left_because": p.left_because,
            })).collect::<Vec<_>>(),
            "packs_indexed": i.packs,
            "blobs_indexed": i.blobs,
            "index_files_written": i.written.len(),
            "index_files_removed": i.removed,
            "packs_lost": i.lost,
            "packs_unreadable": i.unreadable.iter().map(|(p, why)| json!({"pack": p, "error": why})).collect::<Vec<_>>(),
            "snapshots_checked": r.snapshots_checked,
            "snapshots_damaged": damaged,
        }));
        return;
    }
    for (p, why) in &i.unreadable {
        eprintln!("warning: pack {p}: {why}; not indexed");
    }
    for p in &r.salvaged {
        match &p.left_because {
            Some(why) => eprintln!(
                "error: pack {}: damaged and its header is unreadable ({why}); left in place",
                p.pack
            ),
            None => eprintln!(
                "salvaged: pack {} was damaged: {} blob(s) verified and were stored again{}, {} lost ({})",
                p.pack,
                p.kept,
                p.salvaged_into.map(|n| format!(" in pack {n}")).unwrap_or_default(),
                p.lost.len(),
                p.lost.iter().take(3).map(|(b, why)| format!("blob {b}: {why}")).collect::<Vec<_>>().join("; ")
            ),
        }
    }
    for d in &r.damaged {
        let s = &d.damage;
        let what = if s.root_lost {
            "its root directory is lost: nothing of it restores".to_string()
        } else {
            format!(
                "{} path(s) cannot be restored: {}{}",
                s.lost_paths.len(),
                s.lost_paths
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if s.lost_paths.len() > 5 { ", …" } else { "" }
            )
        };
        eprintln!(
            "{}: snapshot {} ({}): {what}",
            if d.rewritten_as.is_some() {
                "repaired"
            } else {
                "error"
            },
            s.id.short(),
            s.snapshot.time.format("%Y-%m-%d %H:%M:%S UTC")
        );
        if let Some(new) = d.rewritten_as {
            eprintln!("          written again without them as {}", new.short());
        }
    }
    if ctx.global.quiet {
        return;
    }
    println!(
        "index:      rebuilt from {} packs ({} blobs) into {} file(s); {} old file(s) removed",
        i.packs,
        i.blobs,
        i.written.len(),
        i.removed
    );
    if !i.lost.is_empty() {
        println!(
            "lost:       {} pack(s) the old index listed are missing from the repository",
            i.lost.len()
        );
    }
    let left = r
        .damaged
        .iter()
        .filter(|d| d.rewritten_as.is_none())
        .count();
    println!(
        "snapshots:  {} checked, {} point at lost data{}",
        r.snapshots_checked,
        r.damaged.len(),
        if left > 0 && !rewrite {
            " — back up the sources again (a backup stores what they still have), then \
             `lifeboat repair --rewrite-snapshots` keeps the rest of each damaged snapshot"
        } else {
            ""
        }
    );
}

pub async fn unlock(ctx: &Ctx, a: UnlockArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), false)?;
    let req = UnlockRequest {
        region: a.region,
        remove_all: a.remove_all,
    };
    let u = crate::ops::repair::unlock(&ctx.env(), &target, req).await?;
    print_unlock(ctx, &u);
    Ok(u.exit_code())
}

fn print_unlock(ctx: &Ctx, u: &Unlock) {
    if ctx.global.json {
        let regions: Vec<_> = u
            .regions
            .iter()
            .map(|(loc, r)| {
                json!({
                    "location": loc,
                    "removed": r.removed.iter().map(|(l, why)| json!({
                        "holder": l.holder(), "host": l.host, "pid": l.pid,
                        "purpose": l.purpose, "exclusive": l.exclusive,
                        "why": why.describe(),
                    })).collect::<Vec<_>>(),
                    "kept": r.kept.iter().map(|l| l.holder()).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!({"message_type": "summary", "regions": regions}));
        return;
    }
    if ctx.global.quiet {
        return;
    }
    for (loc, r) in &u.regions {
        for (l, why) in &r.removed {
            println!("{loc}: removed {} ({})", l.holder(), why.describe());
        }
        for l in &r.kept {
            println!(
                "{loc}: kept {} (it is live; `--remove-all` removes it)",
                l.holder()
            );
        }
        if r.removed.is_empty() && r.kept.is_empty() {
            println!("{loc}: no locks");
        }
    }
}
