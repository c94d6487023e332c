//! Multi-region commands and helpers: building the destinations from repeated `--repo`
//! locations or a `--destinations` file, per-region output of backups, `snapshots` per region,
//! `sync`, `healthcheck`, and opening one region for `restore --region` / `verify --region`
//! (with `--allow-fallback` reading from the others).

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::output::{bytes, print_json};
use super::Ctx;
use crate::error::ExitCode;
use crate::repo::{ObjectKind, Repository};
use crate::store::multi::{Destination, Destinations, MultiStore};
use crate::store::{open_destination, DynStore};
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Take the destinations and password from this plan file
    #[arg(long, value_name = "FILE")]
    pub plan: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// Take the destinations from this plan file
    #[arg(long, value_name = "FILE")]
    pub plan: Option<std::path::PathBuf>,
}

/// `ctx` itself, or a copy carrying the plan named by `--plan`.
pub fn plan_ctx(ctx: &Ctx, plan: Option<&std::path::Path>) -> Result<Option<Ctx>> {
    match plan {
        None => Ok(None),
        Some(f) => Ok(Some(ctx.with_plan(crate::plan::load(f)?))),
    }
}

/// The destinations named on the command line, and the `min_regions` the file asks for.
pub fn destinations(ctx: &Ctx) -> Result<(Vec<Destination>, Option<usize>)> {
    if let Some(p) = &ctx.plan {
        let dests = p
            .destinations
            .iter()
            .map(|d| {
                Destination::from_config(&d.0).map_err(|e| {
                    Error::Usage(format!(
                        "plan {}: destination {}: {e}",
                        p.name,
                        d.location()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok((dests, Some(p.min_regions)));
    }
    let g = &ctx.global;
    if let Some(file) = &g.destinations {
        if !g.repo.is_empty() {
            return Err(Error::Usage(
                "give either --destinations or --repo, not both".into(),
            ));
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::Usage(format!(
                "cannot read destinations file {}: {e}",
                file.display()
            ))
        })?;
        let d = Destinations::parse(&text, &file.display().to_string()).map_err(Error::Usage)?;
        let dests = d
            .destinations
            .iter()
            .map(|c| {
                Destination::from_config(c)
                    .map_err(|e| Error::Usage(format!("destinations file {}: {e}", file.display())))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok((dests, d.min_regions));
    }
    if g.repo.is_empty() {
        return Err(Error::Usage("no repository given: pass --repo LOCATION (repeat it for several regions) or --destinations FILE".into()));
    }
    Ok((
        g.repo
            .iter()
            .map(|l| open_destination(l))
            .collect::<Result<Vec<_>>>()?,
        None,
    ))
}

/// The destination names, comma-separated (for messages).
pub fn region_names(ctx: &Ctx) -> Result<String> {
    let (dests, _) = destinations(ctx)?;
    Ok(dests
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", "))
}

/// True when the command line names more than one destination.
pub fn is_multi(ctx: &Ctx) -> bool {
    if let Some(p) = &ctx.plan {
        return p.destinations.len() > 1;
    }
    ctx.global.repo.len() > 1 || ctx.global.destinations.is_some()
}

/// The store for commands that write: one destination as is, several behind a [`MultiStore`].
pub fn open_store(ctx: &Ctx) -> Result<DynStore> {
    let (dests, file_min) = destinations(ctx)?;
    if dests.len() == 1 && !is_multi(ctx) {
        return Ok(dests.into_iter().next().expect("one").store);
    }
    let min = ctx.global.min_regions.or(file_min).unwrap_or(1);
    Ok(Arc::new(MultiStore::new(dests, min).map_err(Error::Usage)?))
}

fn find<'a>(dests: &'a [Destination], name: &str) -> Result<&'a Destination> {
    dests.iter().find(|d| d.name == name).ok_or_else(|| {
        let names: Vec<&str> = dests.iter().map(|d| d.name.as_str()).collect();
        Error::Usage(format!(
            "no region named {name:?}; the regions are: {}",
            names.join(", ")
        ))
    })
}

/// Opens the repository for reading: in region `region` when given (else all regions, first
/// answer wins); with `allow_fallback`, a blob that fails to read or verify in the chosen
/// region is read from the others.
pub async fn open_repo_for_read(
    ctx: &Ctx,
    region: Option<&str>,
    allow_fallback: bool,
) -> Result<Repository> {
    let (dests, _) = destinations(ctx)?;
    let (primary, others): (DynStore, Vec<&Destination>) = match region {
        Some(name) => {
            let d = find(&dests, name)?;
            (
                d.store.clone(),
                dests.iter().filter(|o| o.name != name).collect(),
            )
        }
        None if dests.len() == 1 => (dests[0].store.clone(), Vec::new()),
        None if allow_fallback => (dests[0].store.clone(), dests[1..].iter().collect()),
        None => (
            Arc::new(MultiStore::new(dests.clone(), 1).map_err(Error::Usage)?) as DynStore,
            Vec::new(),
        ),
    };
    crate::repo::read_config(&primary).await?;
    let pw = ctx.password(&primary.describe(), false)?;
    let repo = Repository::open(primary, pw.as_bytes()).await?;
    Ok(if allow_fallback {
        repo.with_fallbacks(
            others
                .into_iter()
                .map(|d| (d.name.clone(), d.store.clone()))
                .collect(),
        )
    } else {
        repo
    })
}

/// `lifeboat snapshots` over several regions: which snapshot exists in which region.
pub async fn snapshots(ctx: &Ctx) -> Result<ExitCode> {
    let (dests, _) = destinations(ctx)?;
    let repo = open_repo_for_read(ctx, None, false).await?;
    let mut presence: BTreeMap<crate::ids::SnapshotId, Vec<bool>> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for (i, d) in dests.iter().enumerate() {
        match d.store.list("snapshots/").await {
            Ok(list) => {
                for info in list {
                    if let Some(id) = info
                        .key
                        .strip_prefix("snapshots/")
                        .and_then(|s| s.parse().ok())
                    {
                        presence
                            .entry(id)
                            .or_insert_with(|| vec![false; dests.len()])[i] = true;
                    }
                }
            }
            Err(e) => {
                eprintln!("warning: region {}: cannot list snapshots: {e}", d.name);
                unreachable.push(d.name.clone());
            }
        }
    }
    let mut rows = Vec::new();
    for (id, present) in presence {
        let snap: crate::repo::snapshot::Snapshot =
            repo.load_json(ObjectKind::Snapshot, &id).await?;
        rows.push((id, snap, present));
    }
    rows.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    if ctx.global.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(id, s, present)| {
                let mut v = serde_json::to_value(s).expect("snapshot serializes");
                v["id"] = json!(id);
                v["short_id"] = json!(id.short());
                v["regions"] = json!(dests
                    .iter()
                    .zip(present)
                    .filter(|(_, p)| **p)
                    .map(|(d, _)| &d.name)
                    .collect::<Vec<_>>());
                v["missing_from"] = json!(dests
                    .iter()
                    .zip(present)
                    .filter(|(_, p)| !**p)
                    .map(|(d, _)| &d.name)
                    .collect::<Vec<_>>());
                v
            })
            .collect();
        print_json(&v);
    } else {
        let names: Vec<String> = dests
            .iter()
            .map(|d| format!("{:^8}", truncate(&d.name, 8)))
            .collect();
        println!(
            "{:<10} {:<20} {:<16} {}  paths",
            "id",
            "time (UTC)",
            "host",
            names.join(" ")
        );
        for (id, s, present) in &rows {
            let marks: Vec<String> = present
                .iter()
                .map(|p| format!("{:^8}", if *p { "yes" } else { "-" }))
                .collect();
            println!(
                "{:<10} {:<20} {:<16} {}  {}",
                id.short(),
                s.time.format("%Y-%m-%d %H:%M:%S"),
                truncate(&s.host, 16),
                marks.join(" "),
                s.paths.join(" ")
            );
        }
        println!("{} snapshots", rows.len());
    }
    Ok(if unreachable.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Partial
    })
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// `lifeboat sync`: copy what lagging regions lack from the others, verified, snapshots last.
pub async fn sync(ctx: &Ctx, a: SyncArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), false)?;
    let report = crate::ops::sync::sync(&ctx.env(), &target).await?;
    if ctx.global.json {
        print_json(&json!({"message_type": "summary", "regions": report.regions}));
    } else {
        for r in &report.regions {
            if !ctx.global.quiet {
                println!(
                    "region {:<12} {:<9} copied {} objects ({}), {} snapshots",
                    r.region,
                    if r.complete { "complete" } else { "INCOMPLETE" },
                    r.objects_copied,
                    bytes(r.bytes_copied),
                    r.snapshots_copied
                );
            }
            for e in &r.errors {
                eprintln!("error: region {}: {e}", r.region);
            }
        }
    }
    Ok(report.exit_code())
}

/// `lifeboat healthcheck`: can every destination be reached, read, written and deleted?
pub async fn healthcheck(ctx: &Ctx, a: HealthcheckArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), false)?;
    let health = crate::ops::health::healthcheck(&target).await;
    let out = &health.destinations;
    if ctx.global.json {
        print_json(&json!({"message_type": "summary", "destinations": out}));
    } else {
        for r in out {
            if r.ok() {
                if !ctx.global.quiet {
                    println!(
                        "region {:<12} ok (bucket {}, region {})",
                        r.name, r.bucket, r.region
                    );
                }
            } else {
                eprintln!(
                    "error: region {} (bucket {}, region {}): {:?}: {}",
                    r.name,
                    r.bucket,
                    r.region,
                    r.problem.expect("not ok"),
                    r.detail
                );
                if let Some(h) = &r.hint {
                    eprintln!("hint: {h}");
                }
            }
        }
    }
    Ok(health.exit_code())
}
