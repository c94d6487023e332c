//! Multi-region commands and helpers: building the destinations from repeated `--repo`
//! locations or a `--destinations` file, `sync` and `healthcheck`.

use clap::Args;
use serde_json::json;

use super::output::{bytes, print_json};
use super::Ctx;
use crate::error::ExitCode;
use crate::Result;

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
        print_json(
            &json!({"message_type": "summary", "destinations": out, "warnings": health.warnings}),
        );
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
        for w in &health.warnings {
            eprintln!("warning: region {}: {}", w.name, w.message);
            eprintln!("hint: {}", w.hint);
        }
    }
    Ok(health.exit_code())
}
