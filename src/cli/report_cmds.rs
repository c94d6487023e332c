//! `lifeboat report`: the period report for audits (`--plan FILE|DIR --since 90d --out DIR`
//! writes `dr-report.json`, `.md` and `.html`), `report verify` (signatures and chain of
//! drill reports: a file, a directory, or every region of `--plan` / `--repo`), `report
//! pubkey` (the key an auditor verifies with) and `report incident RUN_ID` (a post-mortem
//! draft). Parses, calls `ops::report`, renders.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::print_json;
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::report::{PeriodRequest, VerifySource};
use crate::ops::target::Target;
use crate::report::chain;
use crate::{Error, Result};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    #[command(flatten)]
    pub period: PeriodArgs,
}

#[derive(Args, Debug)]
pub struct PeriodArgs {
    /// The plan file, or a directory of plan files (one section per plan and a fleet
    /// summary); the reports and snapshots are read from the plans' destinations
    #[arg(long, value_name = "FILE|DIR")]
    pub plan: Option<PathBuf>,
    /// The period: this long before now
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    pub since: String,
    /// Where dr-report.json, dr-report.md and dr-report.html are written
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Check the signatures and the chain of drill reports and name the first broken link
    /// (exit 13): a report edited, removed, reordered, or signed by another key
    Verify(VerifyArgs),
    /// Print the repository's report-signing public key: an auditor verifies the reports
    /// with it, without the repository password
    Pubkey(PubkeyArgs),
    /// Write a blameless post-mortem draft (Markdown) of a failed drill (from its report) or
    /// backup run (from the catalog)
    Incident(IncidentArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A report file or a directory of them (default: the reports stored in the --repo
    /// locations when given, else the state directory's reports)
    #[arg(value_name = "FILE|DIR")]
    pub path: Option<PathBuf>,
    /// Verify the reports stored in every destination of this plan
    #[arg(long, value_name = "FILE", conflicts_with = "path")]
    pub plan: Option<PathBuf>,
    /// The public key the reports must be signed with (`report pubkey` prints it);
    /// without it, files are checked against the first report of each chain
    #[arg(long, value_name = "HEX")]
    pub pubkey: Option<String>,
}

#[derive(Args, Debug)]
pub struct PubkeyArgs {
    /// The plan whose repository's key is printed (default: --repo)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct IncidentArgs {
    /// The drill's or backup run's id (or a prefix), as `lifeboat history` lists it
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,
    /// Also search the reports stored in this plan's destinations
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Write the draft to this file (default: stdout)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn report(ctx: &Ctx, a: ReportArgs) -> Result<ExitCode> {
    match a.command {
        Some(ReportCommand::Verify(v)) => verify(ctx, v).await,
        Some(ReportCommand::Pubkey(p)) => pubkey(ctx, p).await,
        Some(ReportCommand::Incident(i)) => incident(ctx, i).await,
        None => period(ctx, a.period).await,
    }
}

fn plan_targets(ctx: &Ctx, path: &std::path::Path) -> Result<Vec<Target>> {
    crate::ops::plans::load_plans(path)?
        .into_iter()
        .map(|(_, p)| Target::from_plan(Arc::new(p), ctx.global.min_regions))
        .collect()
}

async fn period(ctx: &Ctx, a: PeriodArgs) -> Result<ExitCode> {
    let plan = a.plan.ok_or_else(|| {
        Error::Usage(
            "lifeboat report needs --plan FILE|DIR (or a subcommand: verify, pubkey, incident)"
                .into(),
        )
    })?;
    let since = humantime::parse_duration(&a.since).map_err(|e| {
        Error::Usage(format!(
            "--since {:?}: {e}; expected a duration such as 90d or 12h",
            a.since
        ))
    })?;
    let now = chrono::Utc::now();
    let since = now
        - chrono::Duration::from_std(since)
            .map_err(|_| Error::Usage(format!("--since {:?} is too long", a.since)))?;
    let targets = plan_targets(ctx, &plan)?;
    let run = crate::ops::report::period(
        &ctx.env(),
        &targets,
        PeriodRequest {
            since,
            now,
            out: a.out,
        },
    )
    .await?;
    let f = &run.report.fleet;
    if ctx.global.json {
        print_json(&json!({
            "files": run.files,
            "fleet": f,
            "exit_code": run.exit_code().code(),
        }));
    } else if !ctx.global.quiet {
        for p in &run.report.plans {
            println!(
                "plan {}: {} drills ({} passed), backups on time {}, {} misses, chain {}",
                p.plan,
                p.compliance.drills,
                p.compliance.drills_passed,
                p.compliance
                    .backup_on_time_share
                    .map(|s| format!("{:.1} %", s * 100.0))
                    .unwrap_or_else(|| "n/a".into()),
                p.misses.len(),
                if p.chain.iter().all(|c| c.intact()) {
                    "intact"
                } else {
                    "BROKEN"
                }
            );
            for t in &p.trends {
                if let Some(tt) = t.rto_over_time.as_ref().filter(|t| t.warn) {
                    println!(
                        "warning: plan {} job {} region {}: RTO projected to cross its target {}",
                        p.plan,
                        t.job,
                        t.region,
                        tt.breach
                            .map(|b| format!("on {}", b.format("%Y-%m-%d")))
                            .unwrap_or_else(|| "already".into())
                    );
                }
            }
        }
        for file in &run.files {
            println!("wrote {}", file.display());
        }
    }
    Ok(run.exit_code())
}

async fn verify(ctx: &Ctx, a: VerifyArgs) -> Result<ExitCode> {
    let trusted = a
        .pubkey
        .as_deref()
        .map(chain::parse_public_key)
        .transpose()
        .map_err(|e| Error::Usage(format!("--pubkey: {e}")))?;
    let source = if let Some(p) = &a.plan {
        VerifySource::Target(ctx.target(Some(p), true)?)
    } else if a.path.is_none() && !ctx.global.repo.is_empty() {
        VerifySource::Target(ctx.target(None, false)?)
    } else {
        VerifySource::Path(match a.path {
            Some(p) => p,
            None => crate::ops::report::local_reports_dir(&ctx.env())?,
        })
    };
    let r = crate::ops::report::verify(source, trusted).await?;
    if ctx.global.json {
        print_json(&r);
    } else {
        for c in &r.chains {
            match &c.first_broken {
                None => {
                    if !ctx.global.quiet {
                        println!("plan {}: {} reports, chain intact", c.plan, c.reports)
                    }
                }
                Some(b) => eprintln!("error: plan {}: {}", c.plan, b.message),
            }
        }
        for u in &r.unreadable {
            eprintln!("warning: region {u}");
        }
        if !ctx.global.quiet {
            if let Some(k) = &r.public_key {
                println!("checked against key {k} ({})", r.key_source);
            } else {
                println!("key: {}", r.key_source);
            }
        }
    }
    Ok(r.exit_code())
}

async fn pubkey(ctx: &Ctx, a: PubkeyArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), true)?;
    let key = crate::ops::report::pubkey(&ctx.env(), &target).await?;
    let hex = hex::encode(key.to_bytes());
    if ctx.global.json {
        print_json(&json!({ "algorithm": "ed25519", "public_key": hex }));
    } else {
        println!("{hex}");
    }
    Ok(ExitCode::Ok)
}

async fn incident(ctx: &Ctx, a: IncidentArgs) -> Result<ExitCode> {
    let target = a
        .plan
        .as_deref()
        .map(|p| ctx.target(Some(p), true))
        .transpose()?;
    let md = crate::ops::report::incident(&ctx.env(), target.as_ref(), &a.run_id).await?;
    match a.out {
        Some(p) => {
            crate::report::store::write_file(&p, md.as_bytes())?;
            if !ctx.global.quiet {
                println!("wrote {}", p.display());
            }
        }
        None => print!("{md}"),
    }
    Ok(ExitCode::Ok)
}
