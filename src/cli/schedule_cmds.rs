//! `lifeboat run-due`: what the systemd timer runs every few minutes. Parses its flags, runs
//! [`crate::ops::run_due`] and renders the result: the due tasks as they are found, the
//! tasks' own output (unless `--json` or `--quiet`: one JSON document for the whole run),
//! and a summary.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::output::{print_json, Printer};
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::run_due::{RunDue, RunDueRequest};
use crate::Result;

#[derive(Args, Debug)]
pub struct RunDueArgs {
    /// A plan file, or a directory of plan files (`*.toml`)
    #[arg(long, value_name = "FILE|DIR")]
    pub plan: PathBuf,
    /// Only say what is due; run nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run_due(ctx: &Ctx, a: RunDueArgs) -> Result<ExitCode> {
    let req = RunDueRequest {
        plan: a.plan,
        dry_run: a.dry_run,
        min_regions: ctx.global.min_regions,
        lock_dir: None,
        // One JSON document for the whole run: the jobs' own summaries stay quiet.
        task_observer: Arc::new(Printer {
            json: false,
            quiet: ctx.global.quiet || ctx.global.json,
        }),
    };
    let r = crate::ops::run_due::run_due(&ctx.env(), req).await?;
    render(ctx, &r);
    Ok(r.exit_code())
}

fn render(ctx: &Ctx, r: &RunDue) {
    if ctx.global.json {
        let due: Vec<_> = r
            .due
            .iter()
            .map(|t| {
                let d = &t.task;
                match t.exit_code {
                    None => json!({"task": d.key, "slot": d.slot, "missed": d.missed, "ran": false}),
                    Some(code) => json!({"task": d.key, "slot": d.slot, "missed": d.missed, "ran": true, "exit_code": code.code()}),
                }
            })
            .collect();
        let next: Vec<_> = r
            .next
            .iter()
            .map(|n| json!({"task": n.key, "next": n.next}))
            .collect();
        print_json(&json!({"message_type": "summary", "due": due, "next": next}));
    } else if r.due.is_empty() && !ctx.global.quiet {
        println!("nothing is due");
    }
}
