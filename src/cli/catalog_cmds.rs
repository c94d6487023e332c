//! Catalog commands — `status`, `history`, `catalog rebuild`, `catalog info` — parse their
//! flags, call `ops::status` / `ops::catalog` and render the reports; and the hooks that let
//! `backup` and `verify` write to the catalog without depending on it: a catalog that cannot
//! be opened or written costs a warning, never a committed backup (T30).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{bytes, print_json};
use super::Ctx;
use crate::catalog::{self, age_secs};
use crate::error::ExitCode;
use crate::ops::catalog::RebuildRequest;
use crate::ops::status::{parse_cycle, HistoryRequest, StatusRequest};
use crate::repo::verify::Severity;
use crate::Result;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this region (a plain --repo location is region `local`)
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Only this plan: a plan file, a directory of plan files, or a plan name. From files,
    /// the RPO targets are the plans' documented objectives
    #[arg(long, value_name = "FILE|DIR|NAME")]
    pub plan: Option<String>,
    /// Only this job (by name)
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Verification cycle: coverage counts packs verified within this window
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub cycle: String,
    /// Exit 17 when any objective is missed (RPO, verified RPO, the last drill's RTO or
    /// result, a region not drilled within the plan's drill interval, coverage behind the
    /// [verify] cycle); without it, status reports and exits 0
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only this region
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Only this plan (by name)
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,
    /// Only this job (by name)
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Show at most this many entries, newest first (0: all)
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Re-create the catalog's snapshot and recovery-point set rows and the drill history
    /// from the repository (--repo, or every destination of --plan); reports divergence
    Rebuild(RebuildArgs),
    /// Show where the catalog is, its backend and schema version
    Info,
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    /// Rebuild every destination of this plan file (its destinations and password), each
    /// under the region name its backups are recorded with
    #[arg(long, value_name = "FILE")]
    pub plan: Option<std::path::PathBuf>,
    /// The region the --repo location is (default `local`); with --plan, only the
    /// destination of this name
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Drop catalog rows of snapshots (and recovery-point sets) the repository no longer
    /// has (after checking why)
    #[arg(long)]
    pub forget_missing: bool,
}

pub async fn status(ctx: &Ctx, a: StatusArgs) -> Result<ExitCode> {
    let req = StatusRequest {
        cycle: parse_cycle(&a.cycle)?,
        region: a.region,
        plan: a.plan,
        job: a.job,
        clock: std::sync::Arc::new(crate::sys::clock::SystemClock),
    };
    let repo = if ctx.global.repo.is_empty() {
        None
    } else {
        Some(ctx.target(None, false)?)
    };
    let r = crate::ops::status::status(&ctx.env(), repo.as_ref(), req).await?;
    if ctx.global.json {
        print_json(&json!({
            "catalog": r.catalog,
            "now": r.status.now,
            "jobs": r.status.jobs,
            "coverage": r.status.coverage,
            "findings": r.findings,
            "misses": r.misses,
            "slos": r.slos,
            "sets": r.sets,
            "anomalies": r.anomalies,
            "degraded": r.degraded,
        }));
    } else {
        print_status(ctx, &r);
    }
    if a.check {
        for m in &r.misses {
            eprintln!(
                "missed: {} {}{} in {}: {}",
                m.objective,
                m.plan,
                m.job
                    .as_deref()
                    .map(|j| format!("/{j}"))
                    .unwrap_or_default(),
                m.region,
                m.detail
            );
        }
        Ok(r.check_exit_code())
    } else {
        Ok(r.exit_code())
    }
}

fn print_status(ctx: &Ctx, r: &crate::ops::status::StatusReport) {
    let report = &r.status;
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        eprintln!("{sev}: {}: {}", f.object, f.message);
    }
    if ctx.global.quiet {
        return;
    }
    println!("catalog {}", r.catalog);
    if report.jobs.is_empty() {
        println!("no runs, snapshots or drills recorded yet");
    } else {
        println!();
        println!(
            "{:<22} {:<10} {:<12} {:<23} {:<24} {:<22} last run",
            "job", "region", "newest", "verified (rpo)", "last drill", "rto / target"
        );
        for j in &report.jobs {
            let name = match (j.plan.as_str(), j.job.as_str()) {
                ("", "") => "(no plan)".to_string(),
                (p, jb) => format!("{p}/{jb}"),
            };
            let newest = j
                .newest_snapshot
                .as_ref()
                .map(|s| format!("{} ago", age(s.age_secs)))
                .unwrap_or_else(|| "never".into());
            let mut verified = j
                .newest_verified_snapshot
                .as_ref()
                .map(|s| format!("{} ago", age(s.age_secs)))
                .unwrap_or_else(|| "never drilled".into());
            if j.rpo_met == Some(false) {
                verified.push_str(" MISSED");
            }
            let (drill, rto) = match &j.last_drill {
                Some(d) => (
                    format!(
                        "{} {} ago",
                        d.result.as_str(),
                        age(age_secs(report.now, d.finished))
                    ),
                    match (d.rto_secs, d.rto_target_secs) {
                        (Some(m), Some(t)) => format!(
                            "{} / {} {}",
                            age(m),
                            age(t),
                            if m <= t { "ok" } else { "MISSED" }
                        ),
                        (Some(m), None) => format!("{} / no target", age(m)),
                        _ => "-".into(),
                    },
                ),
                None => ("none".into(), "-".into()),
            };
            let run = j
                .last_run
                .as_ref()
                .map(|r| {
                    format!(
                        "{} {} ago",
                        r.status.as_str(),
                        age(age_secs(report.now, r.finished))
                    )
                })
                .unwrap_or_else(|| "none".into());
            println!(
                "{name:<22} {:<10} {newest:<12} {verified:<23} {drill:<24} {rto:<22} {run}",
                j.region
            );
        }
    }
    if !report.coverage.is_empty() {
        println!();
        println!(
            "{:<10} {:<10} {:>8} {:>10} {:>8} {:>7} {:>8}  oldest unverified",
            "repository", "region", "packs", "size", "covered", "never", "damaged"
        );
        for c in &report.coverage {
            let oldest = match (&c.oldest_unverified_pack, c.oldest_unverified_age_secs) {
                (Some(p), Some(a)) => format!("{} for {}", p.short(), age(a)),
                _ => "-".into(),
            };
            println!(
                "{:<10} {:<10} {:>8} {:>10} {:>7.1}% {:>7} {:>8}  {oldest}",
                c.repo_id.short(),
                c.region,
                c.packs,
                bytes(c.bytes),
                c.percent,
                c.never_verified,
                c.damaged
            );
        }
        println!(
            "(covered: bytes read and verified good within the last {})",
            humantime::format_duration(Duration::from_secs(
                report.coverage[0].cycle_secs.round() as u64
            ))
        );
    }
    if !r.degraded.is_empty() {
        println!();
        println!("degraded regions (behind the others; the next backup or `lifeboat sync` catches them up):");
        for d in &r.degraded {
            println!("  {}/{} in {}: {}", d.plan, d.job, d.region, d.detail);
        }
    }
    print_slos(r);
    print_sets(r);
}

/// Each recovery-point set's newest committed recovery point per region and its RPO.
fn print_sets(r: &crate::ops::status::StatusReport) {
    if r.sets.is_empty() {
        return;
    }
    println!("recovery-point sets:");
    for s in &r.sets {
        let rpo = match s.rpo_secs {
            None => "no committed recovery point".into(),
            Some(r) => format!(
                "RPO {}{}",
                humantime::format_duration(Duration::from_secs(r as u64)),
                match (s.rpo_target_secs, s.rpo_met) {
                    (Some(t), Some(met)) => format!(
                        " (objective {}, {})",
                        humantime::format_duration(Duration::from_secs(t as u64)),
                        if met { "met" } else { "MISSED" }
                    ),
                    _ => String::new(),
                }
            ),
        };
        println!(
            "  {}/{} in {}: {}{}",
            s.plan,
            s.set,
            s.region,
            s.consistency_time
                .map(|t| format!("consistent at {}, ", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default(),
            rpo
        );
    }
}

/// Each plan's SLOs (share, error budget left, burn rate) and RTO trends with the projected
/// breach, `WARN` when it is within the report's horizon.
fn print_slos(r: &crate::ops::status::StatusReport) {
    let pct = |v: Option<f64>| {
        v.map(|s| format!("{:.1}%", s * 100.0))
            .unwrap_or_else(|| "n/a".into())
    };
    for p in &r.slos {
        println!();
        println!(
            "{:<22} {:<16} {:>8} {:>8} {:>10} {:>11} {:>6}",
            "plan", "slo", "measured", "target", "budget", "burn rate", "met"
        );
        for s in &p.slos {
            println!(
                "{:<22} {:<16} {:>8} {:>8} {:>10} {:>11} {:>6}",
                p.plan,
                s.slo,
                pct(s.measured_share),
                pct(Some(s.target_share)),
                pct(s.budget_left),
                s.burn_rate
                    .map(|b| format!("{b:.2}x"))
                    .unwrap_or_else(|| "n/a".into()),
                if s.met { "yes" } else { "MISSED" },
            );
        }
        for t in &p.rto_trends {
            let tr = &t.trend;
            let when = match (tr.breached, tr.breach) {
                (true, _) => "already above target".to_string(),
                (false, Some(b)) => format!("projected breach {}", b.format("%Y-%m-%d")),
                (false, None) if tr.target_secs.is_some() => "no breach projected".into(),
                _ => "no rto target".into(),
            };
            println!(
                "rto trend {}/{} in {}: {:+.1}s/day, {} now{}; {when}{}",
                p.plan,
                t.job,
                t.region,
                tr.secs_per_day,
                age(tr.fitted_now_secs),
                tr.target_secs
                    .map(|t| format!(" (target {})", age(t)))
                    .unwrap_or_default(),
                if tr.warn { " WARN" } else { "" },
            );
        }
    }
}

/// A compact age: `45s`, `12m`, `3h 20m`, `4d 6h`.
pub fn age(secs: f64) -> String {
    if secs < 0.0 {
        return format!("in {}", age(-secs));
    }
    let s = secs.round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub async fn history(ctx: &Ctx, a: HistoryArgs) -> Result<ExitCode> {
    let req = HistoryRequest {
        region: a.region,
        plan: a.plan,
        job: a.job,
        limit: a.limit,
    };
    let r = crate::ops::status::history(&ctx.env(), req).await?;
    let entries = &r.entries;
    if ctx.global.json {
        print_json(entries);
        return Ok(r.exit_code());
    }
    println!(
        "{:<20} {:<7} {:<22} {:<10} {:<17} {:>10}  snapshot / detail",
        "started (UTC)", "kind", "job", "region", "outcome", "duration"
    );
    for e in entries {
        let name = match (e.plan.as_str(), e.job.as_str()) {
            ("", "") => "(no plan)".to_string(),
            (p, j) => format!("{p}/{j}"),
        };
        let mut detail = e
            .snapshot_id
            .map(|s| s.short())
            .unwrap_or_else(|| "-".into());
        if let Some(rto) = e.rto_secs {
            detail.push_str(&format!(" rto {}", age(rto)));
        }
        if let Some(err) = &e.error {
            detail.push_str(&format!(" {err}"));
        }
        println!(
            "{:<20} {:<7} {name:<22} {:<10} {:<17} {:>10}  {detail}",
            e.started.format("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.region,
            e.outcome,
            age(age_secs(e.finished, e.started)),
        );
    }
    println!("{} entries", entries.len());
    Ok(r.exit_code())
}

pub async fn catalog_cmd(ctx: &Ctx, cmd: CatalogCommand) -> Result<ExitCode> {
    match cmd {
        CatalogCommand::Info => {
            let r = crate::ops::catalog::info(&ctx.env()).await?;
            if ctx.global.json {
                print_json(&json!({
                    "catalog": r.catalog,
                    "backend": r.backend,
                    "schema_versions": r.schema_versions,
                    "supported_schema_version": r.supported_schema_version,
                }));
            } else {
                let backend = match r.backend {
                    catalog::Backend::Sqlite => "sqlite",
                    catalog::Backend::Postgres => "postgresql",
                };
                println!("catalog {} ({backend})", r.catalog);
                println!(
                    "schema versions applied: {:?} (this lifeboat: {})",
                    r.schema_versions, r.supported_schema_version
                );
            }
            Ok(r.exit_code())
        }
        CatalogCommand::Rebuild(a) => {
            let req = RebuildRequest {
                region: a.region,
                forget_missing: a.forget_missing,
            };
            match a.plan {
                Some(file) => rebuild_plan(ctx, &file, req).await,
                None => {
                    let target = ctx.target(None, false)?;
                    let r = crate::ops::catalog::rebuild(&ctx.env(), &target, req.clone()).await?;
                    if ctx.global.json {
                        print_json(&json!({
                            "catalog": r.catalog,
                            "repository": r.repository,
                            "report": r.report,
                        }));
                    } else {
                        print_rebuild(
                            ctx,
                            &r.catalog,
                            &r.repository,
                            &r.report,
                            req.forget_missing,
                        );
                    }
                    Ok(r.exit_code())
                }
            }
        }
    }
}

fn print_rebuild(
    ctx: &Ctx,
    catalog: &str,
    location: &str,
    report: &catalog::RebuildReport,
    forget_missing: bool,
) {
    for f in &report.findings {
        eprintln!("error: {}: {}", f.object, f.message);
    }
    if ctx.global.quiet {
        return;
    }
    println!(
        "rebuilt catalog {catalog} from {location} (region {}): {} snapshots in the repository, {} added, {} updated, {} unchanged, {} forgotten; {} recovery-point sets, {} added, {} forgotten",
        report.region,
        report.snapshots_in_repository,
        report.added,
        report.updated,
        report.unchanged,
        report.forgotten,
        report.sets_in_repository,
        report.sets_added,
        report.sets_forgotten
    );
    if report.errors() > 0 && !forget_missing {
        println!("the catalog lists snapshots the repository does not have; find out why (see the errors above), then run again with --forget-missing to drop them");
    }
}

/// `catalog rebuild --plan FILE`: every destination of the plan (or the one `--region`
/// names). A destination that cannot be read is reported and the others are still rebuilt
/// (exit 3); when none could be, the first reason is the command's error.
async fn rebuild_plan(ctx: &Ctx, file: &std::path::Path, req: RebuildRequest) -> Result<ExitCode> {
    let target = ctx.target(Some(file), false)?;
    let forget_missing = req.forget_missing;
    let r = crate::ops::catalog::rebuild_plan(&ctx.env(), &target, req).await?;
    let mut rows = Vec::new();
    for g in &r.regions {
        match &g.result {
            Ok(report) => {
                if !ctx.global.json {
                    print_rebuild(ctx, &r.catalog, &g.location, report, forget_missing);
                }
                rows.push(json!({"region": g.region, "repository": g.location, "report": report}));
            }
            Err(e) => {
                if !ctx.global.json {
                    eprintln!(
                        "error: region {} ({}) was not rebuilt: {e}",
                        g.region, g.location
                    );
                }
                rows.push(
                    json!({"region": g.region, "repository": g.location, "error": e.to_string()}),
                );
            }
        }
    }
    if ctx.global.json {
        print_json(&json!({"catalog": r.catalog, "plan": r.plan, "regions": rows}));
    }
    let code = r.exit_code();
    match r.into_failure() {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_compact() {
        assert_eq!(age(42.0), "42s");
        assert_eq!(age(600.0), "10m");
        assert_eq!(age(3.0 * 3600.0 + 20.0 * 60.0), "3h 20m");
        assert_eq!(age(4.0 * 86_400.0 + 6.0 * 3600.0), "4d 6h");
        assert_eq!(age(-30.0), "in 30s");
    }
}
