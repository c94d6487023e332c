//! `lifeboat run-due`: what the systemd timer runs every few minutes. Loads the plans, asks
//! the catalog when each job last ran, runs what the cron schedules say is due (catching up
//! missed slots with one run), under a lock so overlapping timer ticks never double up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::output::print_json;
use super::Ctx;
use crate::catalog::HistoryFilter;
use crate::error::ExitCode;
use crate::plan::{self, Plan};
use crate::schedule::{self, RunLock, Task};
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct RunDueArgs {
    /// A plan file, or a directory of plan files (`*.toml`)
    #[arg(long, value_name = "FILE|DIR")]
    pub plan: PathBuf,
    /// Only say what is due; run nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Loads one plan file or every `*.toml` in a directory (sorted, so runs are repeatable).
pub fn load_plans(path: &Path) -> Result<Vec<(PathBuf, Plan)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io("read", path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "no plan files (*.toml) in {}; put plans there or pass --plan FILE",
            path.display()
        )));
    }
    files
        .into_iter()
        .map(|f| plan::load(&f).map(|p| (f, p)).map_err(Error::from))
        .collect()
}

fn backup_key(plan: &str, job: &str) -> String {
    format!("{plan}/{job}/backup")
}

fn drill_key(plan: &str) -> String {
    format!("{plan}/drill")
}

pub async fn run_due(ctx: &Ctx, a: RunDueArgs) -> Result<ExitCode> {
    let plans = load_plans(&a.plan)?;
    let state_dir = crate::catalog::default_location()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let _lock = if a.dry_run {
        None
    } else {
        Some(RunLock::acquire(&state_dir.join("run-due.lock"))?)
    };

    let mut tasks = Vec::new();
    let mut owner: HashMap<String, (PathBuf, String, String)> = HashMap::new();
    for (file, p) in &plans {
        for j in &p.jobs {
            let key = backup_key(&p.name, &j.name);
            tasks.push(Task {
                key: key.clone(),
                schedule: j.schedule.clone(),
            });
            owner.insert(key, (file.clone(), p.name.clone(), j.name.clone()));
        }
        if let Some(schedule) = p.drill.as_ref().and_then(|d| d.schedule.clone()) {
            let key = drill_key(&p.name);
            tasks.push(Task {
                key: key.clone(),
                schedule,
            });
            owner.insert(key, (file.clone(), p.name.clone(), String::new()));
        }
    }

    // Last runs from the catalog; without one, everything counts as never run.
    let mut last = HashMap::new();
    match super::catalog_cmds::open_catalog(ctx).await {
        Ok(cat) => {
            for (key, (_, plan, job)) in &owner {
                let is_drill = job.is_empty();
                let f = HistoryFilter {
                    plan: Some(plan.clone()),
                    job: (!is_drill).then(|| job.clone()),
                    limit: 50,
                    ..Default::default()
                };
                let kind = if is_drill { "drill" } else { "backup" };
                if let Ok(h) = cat.history(&f).await {
                    if let Some(e) = h.iter().find(|e| e.kind == kind) {
                        last.insert(key.clone(), e.started);
                    }
                }
            }
            cat.close().await;
        }
        Err(e) => eprintln!("warning: catalog unavailable ({e}); treating every job as never run"),
    }

    let now = chrono::Utc::now();
    let due = schedule::due(&tasks, &last, now);
    let mut results = Vec::new();
    let mut worst = ExitCode::Ok;
    for d in &due {
        let (file, plan, job) = &owner[&d.key];
        if !ctx.global.json && !ctx.global.quiet {
            let why = match (d.slot, d.missed) {
                (None, _) => "never ran".to_string(),
                (Some(s), 0) => format!("slot {}", s.format("%Y-%m-%d %H:%M UTC")),
                (Some(s), m) => format!(
                    "slot {}, {m} earlier slots missed",
                    s.format("%Y-%m-%d %H:%M UTC")
                ),
            };
            println!(
                "due: backup {plan}/{job} ({why}){}",
                if a.dry_run { " [dry run]" } else { "" }
            );
        }
        if a.dry_run {
            results.push(json!({"task": d.key, "slot": d.slot, "missed": d.missed, "ran": false}));
            continue;
        }
        ctx.cancel.check()?;
        // One JSON document for the whole run: the jobs' own summaries stay quiet.
        let sub = Ctx {
            global: super::Global {
                json: false,
                quiet: ctx.global.quiet || ctx.global.json,
                ..ctx.global.clone()
            },
            cancel: ctx.cancel.clone(),
            plan: None,
        };
        let res = if job.is_empty() {
            let args = super::drill_cmds::DrillArgs {
                plan: file.clone(),
                job: None,
                region: None,
                snapshot: "latest".into(),
                keep: false,
            };
            super::drill_cmds::drill(&sub, args).await
        } else {
            let req = crate::ops::backup::PlanRequest {
                job: Some(job.clone()),
                tags: vec!["scheduled".into()],
                host: None,
                force: false,
            };
            async {
                let target = sub.target(Some(file), false)?;
                let r = crate::ops::backup::backup_plan(&sub.env(), &target, req).await?;
                if let Some(regions) = &r.regions {
                    super::output::print_regions(sub.global.json, sub.global.quiet, regions);
                }
                Ok(r.exit_code())
            }
            .await
        };
        let code = match res {
            Ok(c) => c,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                eprintln!("error: {}: {e}", d.key);
                e.exit_code()
            }
        };
        if code != ExitCode::Ok && worst == ExitCode::Ok {
            worst = code;
        }
        results.push(json!({"task": d.key, "slot": d.slot, "missed": d.missed, "ran": true, "exit_code": code.code()}));
    }
    let next: Vec<_> = tasks
        .iter()
        .map(|t| json!({"task": t.key, "next": schedule::next_slot(t, now)}))
        .collect();
    if ctx.global.json {
        print_json(&json!({"message_type": "summary", "due": results, "next": next}));
    } else if due.is_empty() && !ctx.global.quiet {
        println!("nothing is due");
    }
    Ok(worst)
}
