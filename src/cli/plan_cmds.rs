//! Plan commands: `plan check`. The repository is the plan's destination, opened with the
//! password the plan names.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::print_json;
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::preflight::{CheckRequest, PlanCheck};
use crate::Result;

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

// ----- plan check -----------------------------------------------------------------------

async fn check(ctx: &Ctx, a: PlanCheckArgs) -> Result<ExitCode> {
    let req = CheckRequest { offline: a.offline };
    let r = crate::ops::preflight::check(&a.file, req).await;
    match &r {
        PlanCheck::Invalid { issues, .. } => {
            if ctx.global.json {
                let v: Vec<_> = issues.iter().map(|i| json!({"file": i.file, "line": i.line, "key": i.key, "problem": i.problem, "fix": i.fix})).collect();
                print_json(&json!({"plan": a.file, "valid": false, "issues": v}));
            } else {
                println!("plan {} is not valid:", a.file.display());
                for i in issues {
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
        }
        PlanCheck::Checked { findings: f, .. } => {
            let problems = r.problems();
            if ctx.global.json {
                let v: Vec<_> = f
                    .iter()
                    .map(|x| json!({"ok": x.ok, "check": x.what}))
                    .collect();
                print_json(
                    &json!({"plan": a.file, "valid": true, "problems": problems, "checks": v}),
                );
            } else {
                for x in f {
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
        }
    }
    Ok(r.exit_code())
}
