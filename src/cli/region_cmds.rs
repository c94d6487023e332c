//! Multi-region commands and helpers: building the destinations from repeated `--repo`
//! locations or a `--destinations` file, `sync` and `healthcheck`.

use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::output::{bytes, print_json};
use super::Ctx;
use crate::error::ExitCode;
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
    let pctx = plan_ctx(ctx, a.plan.as_deref())?;
    let ctx = pctx.as_ref().unwrap_or(ctx);
    let (dests, _) = destinations(ctx)?;
    let mut out = Vec::new();
    for d in &dests {
        let report = match &d.s3 {
            Some(s3) => crate::store::s3::healthcheck(s3).await,
            None => local_health(d).await,
        };
        out.push(report);
    }
    let failed = out.iter().filter(|r| !r.ok()).count();
    if ctx.global.json {
        print_json(&json!({"message_type": "summary", "destinations": out}));
    } else {
        for r in &out {
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
    Ok(match failed {
        0 => ExitCode::Ok,
        n if n == out.len() => ExitCode::Error,
        _ => ExitCode::Partial,
    })
}

async fn local_health(d: &Destination) -> crate::store::s3::HealthReport {
    let key = format!(
        "lifeboat-healthcheck/{}",
        hex::encode(rand::random::<[u8; 8]>())
    );
    let res = async {
        d.store
            .put(&key, bytes::Bytes::from_static(b"probe"))
            .await?;
        d.store.get(&key).await?;
        d.store.delete(&key).await
    }
    .await;
    crate::store::s3::HealthReport {
        name: d.name.clone(),
        bucket: String::new(),
        region: String::new(),
        endpoint: None,
        problem: res
            .as_ref()
            .err()
            .map(|_| crate::store::s3::HealthProblem::ProbeFailed),
        detail: res
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        hint: res.err().and_then(|e| e.hint()),
    }
}
