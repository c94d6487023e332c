//! `lifeboat run-due`: what the systemd timer runs every few minutes. Parses its flags, runs
//! [`crate::ops::run_due`] and renders the result: one line per due task saying what runs
//! and why, the tasks' own output (unless `--json` or `--quiet`: one JSON document for the
//! whole run), and a summary. With `--textfile PATH` it then writes the metrics for
//! node_exporter's textfile collector.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::output::{print_json, Printer};
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::metrics::MetricsRequest;
use crate::ops::run_due::{RunDue, RunDueRequest, TaskKind};
use crate::sys::clock::SystemClock;
use crate::Result;

#[derive(Args, Debug)]
pub struct RunDueArgs {
    /// A plan file, or a directory of plan files (`*.toml`)
    #[arg(long, value_name = "FILE|DIR")]
    pub plan: PathBuf,
    /// Only say what is due; run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// After the run, write the metrics (Prometheus text format) to this file, replacing
    /// it atomically: point it into node_exporter's textfile-collector directory
    #[arg(long, value_name = "PATH", env = "LIFEBOAT_TEXTFILE")]
    pub textfile: Option<PathBuf>,
}

pub async fn run_due(ctx: &Ctx, a: RunDueArgs) -> Result<ExitCode> {
    let req = RunDueRequest {
        plan: a.plan.clone(),
        dry_run: a.dry_run,
        min_regions: ctx.global.min_regions,
        lock_dir: None,
        // One JSON document for the whole run: the jobs' own summaries stay quiet.
        task_observer: Arc::new(Printer {
            json: false,
            quiet: ctx.global.quiet || ctx.global.json,
        }),
        clock: Arc::new(SystemClock),
    };
    let env = ctx.env();
    let result = crate::ops::run_due::run_due(&env, req).await;
    // The textfile is written even when the run failed: a refusal (catalog down) is exactly
    // what the metrics must show.
    if let (Some(path), false) = (&a.textfile, a.dry_run) {
        let m = MetricsRequest {
            plan: Some(a.plan.clone()),
            state_dir: crate::catalog::default_state_dir()?,
            clock: Arc::new(SystemClock),
        };
        if let Err(e) = crate::ops::metrics::write_textfile(&env, &m, path).await {
            env.warn(format!(
                "the metrics textfile {} was not written: {e}",
                path.display()
            ));
        }
    }
    let r = result?;
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
                let (what, name) = TaskKind::subject(&d.kind);
                let mut v = json!({
                    "task": d.key, "plan": d.plan, "kind": d.kind.name(), what: name,
                    "reason": d.reason, "slot": d.slot, "missed": d.missed,
                    "ran": t.exit_code.is_some(),
                });
                if let Some(code) = t.exit_code {
                    v["exit_code"] = json!(code.code());
                    v["duration_secs"] = json!(t.duration_secs);
                    v["error"] = json!(t.error);
                } else if let Some(why) = &t.error {
                    v["skipped"] = json!(why);
                }
                v
            })
            .collect();
        let next: Vec<_> = r
            .next
            .iter()
            .map(|n| json!({"task": n.key, "next": n.next}))
            .collect();
        let refused: Vec<_> = r
            .refused
            .iter()
            .map(|(p, why)| json!({"plan": p, "why": why}))
            .collect();
        print_json(
            &json!({"message_type": "summary", "due": due, "next": next, "refused": refused}),
        );
    } else if !ctx.global.quiet {
        if r.due.is_empty() && r.refused.is_empty() {
            println!("nothing is due");
        }
        for t in r.due.iter().filter(|t| t.exit_code.is_none()) {
            if let Some(why) = &t.error {
                println!("{}: {why}", t.task.key);
            }
        }
        for t in r.due.iter().filter(|t| t.exit_code.is_some()) {
            println!(
                "done: {} {} exit {} in {}",
                t.task.kind.name(),
                t.task.key,
                t.exit_code.map(|c| c.code()).unwrap_or_default(),
                crate::sys::human::duration(t.duration_secs)
            );
        }
    }
}
