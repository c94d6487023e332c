//! Catalog commands — `status`, `history`, `catalog rebuild`, `catalog info` — and the hooks
//! that let `backup` and `verify` write to the catalog without depending on it: a catalog that
//! cannot be opened or written costs a warning, never a committed backup (T30).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{bytes, print_json};
use super::Ctx;
use crate::catalog::{self, age_secs, Catalog, HistoryFilter, OpenOptions, StatusFilter};
use crate::error::ExitCode;
use crate::repo::verify::{Finding, Severity};
use crate::{Error, Result};

/// The region a plain `--repo` location counts as (plans name their regions).
pub const LOCAL_REGION: &str = "local";

/// How long `backup` and `verify` wait for the catalog before going on without it.
const BEST_EFFORT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Re-create the catalog's snapshot rows from the repository (--repo, or every
    /// destination of --plan); reports divergence
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
    /// Drop catalog rows of snapshots the repository no longer has (after checking why)
    #[arg(long)]
    pub forget_missing: bool,
}

/// `--catalog` / `LIFEBOAT_CATALOG`, else the default file in the state directory.
pub fn catalog_location(ctx: &Ctx) -> Result<String> {
    match &ctx.global.catalog {
        Some(loc) => {
            let from_env = std::env::var("LIFEBOAT_CATALOG").ok().as_deref() == Some(loc);
            if catalog::has_password(loc) && !from_env {
                return Err(Error::Usage(format!(
                    "--catalog {}: a password on the command line is visible to every user in `ps`; put the URL in LIFEBOAT_CATALOG, or use PGPASSWORD / ~/.pgpass",
                    catalog::redact(loc)
                )));
            }
            Ok(loc.clone())
        }
        None => Ok(catalog::default_location()?.display().to_string()),
    }
}

pub async fn open_catalog(ctx: &Ctx) -> Result<Catalog> {
    Ok(Catalog::open(&catalog_location(ctx)?).await?)
}

/// Opens the catalog for a write that must not fail the command: `None` plus a warning.
pub(super) async fn open_best_effort(ctx: &Ctx, warnings: &mut Vec<String>) -> Option<Catalog> {
    let opts = OpenOptions {
        connect_timeout: BEST_EFFORT_TIMEOUT,
        ..Default::default()
    };
    let loc = match catalog_location(ctx) {
        Ok(l) => l,
        Err(e) => {
            warnings.push(e.to_string());
            return None;
        }
    };
    match Catalog::open_with(&loc, &opts).await {
        Ok(c) => Some(c),
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    }
}

fn parse_cycle(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        Error::Usage(format!(
            "--cycle {s:?}: {e}; expected a duration such as 30d or 12h"
        ))
    })?;
    if d.is_zero() {
        return Err(Error::Usage("--cycle must be longer than zero".into()));
    }
    Ok(d)
}

pub async fn status(ctx: &Ctx, a: StatusArgs) -> Result<ExitCode> {
    let cycle = parse_cycle(&a.cycle)?;
    let cat = open_catalog(ctx).await?;
    let mut findings: Vec<Finding> = Vec::new();
    // --plan FILE|DIR: one status per plan, judged against the plan's own objectives.
    let plan_files = match a.plan.as_deref() {
        Some(p) if std::path::Path::new(p).exists() => {
            Some(super::schedule_cmds::load_plans(std::path::Path::new(p))?)
        }
        _ => None,
    };
    let mut filter = StatusFilter {
        repo: None,
        region: a.region.clone(),
        plan: if plan_files.is_some() { None } else { a.plan },
        job: a.job,
        cycle,
    };
    if !ctx.global.repo.is_empty() {
        let repo = ctx.target(None, false)?.open_for_write().await?.repo;
        let region = a.region.as_deref().unwrap_or(LOCAL_REGION);
        cat.record_repository(repo.id(), &repo.location()).await?;
        let listing = repo.list_snapshots().await?;
        findings = cat.check_high_water(repo.id(), region, &listing).await?;
        let index = repo.load_index().await?;
        cat.sync_packs(repo.id(), region, index.packs()).await?;
        filter.repo = Some(*repo.id());
    }
    let report = match plan_files {
        None => cat.status(&filter).await?,
        Some(plans) => {
            let mut merged: Option<catalog::StatusReport> = None;
            for (_, plan) in &plans {
                let f = StatusFilter {
                    plan: Some(plan.name.clone()),
                    ..filter.clone()
                };
                let mut r = cat.status(&f).await?;
                let target = plan.objectives.rpo.map(|d| d.as_secs_f64());
                for j in &mut r.jobs {
                    if target.is_some() {
                        j.rpo_target_secs = target;
                        j.rpo_met = match (j.honest_rpo_secs, target) {
                            (Some(h), Some(t)) => Some(h <= t),
                            (None, Some(_)) => Some(false),
                            _ => None,
                        };
                    }
                }
                match &mut merged {
                    None => merged = Some(r),
                    Some(m) => {
                        m.jobs.extend(r.jobs);
                        for c in r.coverage {
                            if !m.coverage.contains(&c) {
                                m.coverage.push(c);
                            }
                        }
                    }
                }
            }
            merged.expect("load_plans returns at least one plan")
        }
    };
    cat.close().await;
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if ctx.global.json {
        print_json(&json!({
            "catalog": cat.describe(),
            "now": report.now,
            "jobs": report.jobs,
            "coverage": report.coverage,
            "findings": findings,
        }));
    } else {
        print_status(ctx, &cat, &report, &findings);
    }
    Ok(if errors > 0 {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    })
}

fn print_status(ctx: &Ctx, cat: &Catalog, report: &catalog::StatusReport, findings: &[Finding]) {
    for f in findings {
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
    println!("catalog {}", cat.describe());
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
    let cat = open_catalog(ctx).await?;
    let entries = cat
        .history(&HistoryFilter {
            repo: None,
            region: a.region,
            plan: a.plan,
            job: a.job,
            limit: a.limit,
        })
        .await?;
    cat.close().await;
    if ctx.global.json {
        print_json(&entries);
        return Ok(ExitCode::Ok);
    }
    println!(
        "{:<20} {:<7} {:<22} {:<10} {:<17} {:>10}  snapshot / detail",
        "started (UTC)", "kind", "job", "region", "outcome", "duration"
    );
    for e in &entries {
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
    Ok(ExitCode::Ok)
}

pub async fn catalog_cmd(ctx: &Ctx, cmd: CatalogCommand) -> Result<ExitCode> {
    match cmd {
        CatalogCommand::Info => {
            let cat = open_catalog(ctx).await?;
            let versions = cat.schema_versions().await?;
            cat.close().await;
            if ctx.global.json {
                print_json(&json!({
                    "catalog": cat.describe(),
                    "backend": cat.backend(),
                    "schema_versions": versions,
                    "supported_schema_version": catalog::SCHEMA_VERSION,
                }));
            } else {
                let backend = match cat.backend() {
                    catalog::Backend::Sqlite => "sqlite",
                    catalog::Backend::Postgres => "postgresql",
                };
                println!("catalog {} ({backend})", cat.describe());
                println!(
                    "schema versions applied: {:?} (this lifeboat: {})",
                    versions,
                    catalog::SCHEMA_VERSION
                );
            }
            Ok(ExitCode::Ok)
        }
        CatalogCommand::Rebuild(a) => match a.plan.clone() {
            Some(file) => rebuild_plan(ctx, &file, a).await,
            None => {
                let repo = ctx.target(None, false)?.open_for_write().await?.repo;
                let cat = open_catalog(ctx).await?;
                let region = a.region.as_deref().unwrap_or(LOCAL_REGION);
                let report = cat.rebuild(&repo, region, a.forget_missing).await?;
                cat.close().await;
                if ctx.global.json {
                    print_json(&json!({
                        "catalog": cat.describe(),
                        "repository": repo.location(),
                        "report": report,
                    }));
                } else {
                    print_rebuild(ctx, &cat, &repo.location(), &report, a.forget_missing);
                }
                Ok(rebuild_exit(std::slice::from_ref(&report)))
            }
        },
    }
}

/// Exit 13 when a region diverged (the catalog lists snapshots it no longer has).
fn rebuild_exit(reports: &[catalog::RebuildReport]) -> ExitCode {
    if reports.iter().any(|r| r.errors() > 0) {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    }
}

fn print_rebuild(
    ctx: &Ctx,
    cat: &Catalog,
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
        "rebuilt catalog {} from {location} (region {}): {} snapshots in the repository, {} added, {} updated, {} unchanged, {} forgotten",
        cat.describe(),
        report.region,
        report.snapshots_in_repository,
        report.added,
        report.updated,
        report.unchanged,
        report.forgotten
    );
    if report.errors() > 0 && !forget_missing {
        println!("the catalog lists snapshots the repository does not have; find out why (see the errors above), then run again with --forget-missing to drop them");
    }
}

/// `catalog rebuild --plan FILE`: every destination of the plan (or the one `--region`
/// names), each under the region name its backups are recorded with. A destination that
/// cannot be read is reported and the others are still rebuilt (exit 3).
async fn rebuild_plan(ctx: &Ctx, file: &std::path::Path, a: RebuildArgs) -> Result<ExitCode> {
    let plan = crate::plan::load(file)?;
    let all = super::drill_cmds::plan_destinations(&plan)?;
    let regions: Vec<String> = all.iter().map(|d| d.region.clone()).collect();
    let picked: Vec<_> = all
        .into_iter()
        .filter(|d| a.region.as_deref().is_none_or(|r| d.is(r)))
        .map(|d| (d.region, d.location, d.dest.store))
        .collect();
    if picked.is_empty() {
        return Err(Error::Usage(format!(
            "plan {} has no destination {:?}; its regions are: {}",
            file.display(),
            a.region.unwrap_or_default(),
            regions.join(", ")
        )));
    }
    let cat = open_catalog(ctx).await?;
    let (mut reports, mut rows, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (region, location, store) in picked {
        let rebuilt = async {
            let repo = super::drill_cmds::open_plan_repo(&plan, store).await?;
            cat.rebuild(&repo, &region, a.forget_missing).await
        }
        .await;
        match rebuilt {
            Ok(report) => {
                if !ctx.global.json {
                    print_rebuild(ctx, &cat, &location, &report, a.forget_missing);
                }
                rows.push(json!({"region": region, "repository": location, "report": report}));
                reports.push(report);
            }
            // The catalog itself failing is no region's fault: stop.
            Err(e @ Error::Catalog(_)) => {
                cat.close().await;
                return Err(e);
            }
            Err(e) => {
                if !ctx.global.json {
                    eprintln!("error: region {region} ({location}) was not rebuilt: {e}");
                }
                rows.push(
                    json!({"region": region, "repository": location, "error": e.to_string()}),
                );
                failed.push(e);
            }
        }
    }
    cat.close().await;
    if ctx.global.json {
        print_json(&json!({"catalog": cat.describe(), "plan": plan.name, "regions": rows}));
    }
    if reports.is_empty() {
        // Nothing was rebuilt: the (first) reason is the command's error.
        return Err(failed.remove(0));
    }
    Ok(match rebuild_exit(&reports) {
        ExitCode::Ok if !failed.is_empty() => ExitCode::Partial,
        code => code,
    })
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
