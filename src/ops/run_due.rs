//! The scheduler use case (`lifeboat run-due`, what the systemd timer runs every few
//! minutes): load the plans, ask the catalog when each job's backup and each plan's drill
//! last ran, and run what the cron schedules say is due (catching up missed slots with one
//! run), under a lock file so overlapping timer ticks never double up.
//!
//! [`run_due`] calls [`backup::backup_plan`] and [`drill::drill`] directly. Each due task is
//! an [`Event::TaskDue`] on the caller's observer; the tasks' own events (a job backed up,
//! a drill's report, the regions a backup wrote) go to the observer the request names, so
//! the caller decides what of them is shown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::backup::{self, PlanRequest};
use super::drill::{self, DrillRequest};
use super::target::Target;
use super::{record, Env, Event, Observer};
use crate::catalog::HistoryFilter;
use crate::error::ExitCode;
use crate::plan::Plan;
use crate::schedule::{self, RunLock, Task};
use crate::{Error, Result};

/// What `run-due` runs.
#[derive(Clone)]
pub struct RunDueRequest {
    /// A plan file, or a directory of plan files (`*.toml`).
    pub plan: PathBuf,
    /// Only say what is due; run nothing (and take no lock).
    pub dry_run: bool,
    /// With several regions: how many must commit a backup (default: the plan's).
    pub min_regions: Option<usize>,
    /// Where the lock file `run-due.lock` goes (default: the state directory, where the
    /// default catalog lives).
    pub lock_dir: Option<PathBuf>,
    /// Who hears the due backups' and drills' own events.
    pub task_observer: Arc<dyn Observer>,
}

/// What a due task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// A job's backup.
    Backup { job: String },
    /// The plan's drill (of its `[drill]` jobs).
    Drill,
}

/// A task whose schedule says it is due ([`Event::TaskDue`]).
#[derive(Debug, Clone)]
pub struct DueTask {
    /// `plan/job/backup` or `plan/drill`: the name the JSON output and the catalog go by.
    pub key: String,
    pub plan: String,
    pub kind: TaskKind,
    /// The latest scheduled time that has passed (`None`: the task never ran).
    pub slot: Option<DateTime<Utc>>,
    /// Scheduled slots since the last run beyond the one this run serves.
    pub missed: u32,
    pub dry_run: bool,
}

/// How one due task went.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub task: DueTask,
    /// The task's exit code; `None` in a dry run (nothing ran).
    pub exit_code: Option<ExitCode>,
    /// Why the task could not run to a report (also an [`Event::TaskFailed`]).
    pub error: Option<String>,
}

/// When a task is next due.
#[derive(Debug, Clone)]
pub struct NextSlot {
    pub key: String,
    pub next: Option<DateTime<Utc>>,
}

/// The result of `run-due`.
#[derive(Debug, Clone)]
pub struct RunDue {
    /// The due tasks, in order, and how each went.
    pub due: Vec<TaskResult>,
    /// Every task's next slot.
    pub next: Vec<NextSlot>,
}

impl RunDue {
    /// The first task's exit code that is not `Ok`, else `Ok`.
    pub fn exit_code(&self) -> ExitCode {
        self.due
            .iter()
            .filter_map(|t| t.exit_code)
            .find(|c| *c != ExitCode::Ok)
            .unwrap_or(ExitCode::Ok)
    }
}

use super::plans::load_plans;

fn backup_key(plan: &str, job: &str) -> String {
    format!("{plan}/{job}/backup")
}

fn drill_key(plan: &str) -> String {
    format!("{plan}/drill")
}

/// Runs the due backups and drills of the plans at `req.plan`. A task that fails is
/// reported ([`Event::TaskFailed`], its exit code in the result) and the others still run;
/// an interruption stops the run.
pub async fn run_due(env: &Env, req: RunDueRequest) -> Result<RunDue> {
    let plans = load_plans(&req.plan)?;
    let lock_dir = match &req.lock_dir {
        Some(d) => d.clone(),
        None => crate::catalog::default_location()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let _lock = if req.dry_run {
        None
    } else {
        Some(RunLock::acquire(&lock_dir.join("run-due.lock"))?)
    };

    let mut tasks = Vec::new();
    // key → (plan, the job for a backup; None for the plan's drill)
    let mut owner: HashMap<String, (Arc<Plan>, Option<String>)> = HashMap::new();
    for (_, p) in plans {
        let p = Arc::new(p);
        for j in &p.jobs {
            let key = backup_key(&p.name, &j.name);
            tasks.push(Task {
                key: key.clone(),
                schedule: j.schedule.clone(),
            });
            owner.insert(key, (p.clone(), Some(j.name.clone())));
        }
        if let Some(schedule) = p.drill.as_ref().and_then(|d| d.schedule.clone()) {
            let key = drill_key(&p.name);
            tasks.push(Task {
                key: key.clone(),
                schedule,
            });
            owner.insert(key, (p.clone(), None));
        }
    }

    let last = last_runs(env, &owner).await?;
    let now = Utc::now();
    let due = schedule::due(&tasks, &last, now);
    let task_env = Env {
        observer: req.task_observer.clone(),
        ..env.clone()
    };
    let mut results = Vec::new();
    for d in due {
        let (p, job) = &owner[&d.key];
        let task = DueTask {
            key: d.key,
            plan: p.name.clone(),
            kind: match job {
                Some(j) => TaskKind::Backup { job: j.clone() },
                None => TaskKind::Drill,
            },
            slot: d.slot,
            missed: d.missed,
            dry_run: req.dry_run,
        };
        env.emit(Event::TaskDue(task.clone()));
        if req.dry_run {
            results.push(TaskResult {
                task,
                exit_code: None,
                error: None,
            });
            continue;
        }
        env.cancel.check()?;
        let (code, error) = match run_task(&task_env, p, &task.kind, req.min_regions).await {
            Ok(c) => (c, None),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                env.emit(Event::TaskFailed {
                    task: task.key.clone(),
                    error: e.to_string(),
                });
                (e.exit_code(), Some(e.to_string()))
            }
        };
        results.push(TaskResult {
            task,
            exit_code: Some(code),
            error,
        });
    }
    let next = tasks
        .iter()
        .map(|t| NextSlot {
            key: t.key.clone(),
            next: schedule::next_slot(t, now),
        })
        .collect();
    Ok(RunDue { due: results, next })
}

/// When each task last ran, from the catalog. Without the catalog run-due cannot tell what
/// is due: it refuses rather than guess (guessing "never ran" would re-run every backup and
/// drill on every tick of the timer).
async fn last_runs(
    env: &Env,
    owner: &HashMap<String, (Arc<Plan>, Option<String>)>,
) -> Result<HashMap<String, DateTime<Utc>>> {
    let refuse = |e: &dyn std::fmt::Display| {
        Error::Other(format!(
            "run-due cannot tell what is due: the catalog {e}; nothing was run. Fix the catalog (LIFEBOAT_CATALOG / --catalog): the next tick runs what is due, missed slots once; a backup can still be run by hand with `lifeboat backup --plan FILE`"
        ))
    };
    let cat = record::open_catalog(env)
        .await
        .map_err(|e| refuse(&format_args!("cannot be opened ({e})")))?;
    let mut last = HashMap::new();
    for (key, (p, job)) in owner {
        let f = HistoryFilter {
            plan: Some(p.name.clone()),
            job: job.clone(),
            limit: 50,
            ..Default::default()
        };
        let kind = if job.is_none() { "drill" } else { "backup" };
        let h = match cat.history(&f).await {
            Ok(h) => h,
            Err(e) => {
                cat.close().await;
                return Err(refuse(&format_args!("cannot be read ({e})")));
            }
        };
        if let Some(e) = h.iter().find(|e| e.kind == kind) {
            last.insert(key.clone(), e.started);
        }
    }
    cat.close().await;
    Ok(last)
}

/// Runs one due task: a job's backup (tagged `scheduled`) or the plan's drill.
async fn run_task(
    env: &Env,
    p: &Arc<Plan>,
    kind: &TaskKind,
    min_regions: Option<usize>,
) -> Result<ExitCode> {
    let target = Target::from_plan(p.clone(), min_regions)?;
    match kind {
        TaskKind::Backup { job } => {
            let req = PlanRequest {
                job: Some(job.clone()),
                tags: vec!["scheduled".into()],
                host: None,
                force: false,
            };
            let r = backup::backup_plan(env, &target, req).await?;
            if let Some(regions) = &r.regions {
                env.emit(Event::RegionsWritten(regions.clone()));
            }
            // Scheduled retention (issue 13): the plan's [retention] after a successful backup.
            match r.exit_code() {
                ExitCode::Ok => Ok(super::forget::after_backup(env, &target, job).await),
                code => Ok(code),
            }
        }
        TaskKind::Drill => Ok(drill::drill(env, &target, DrillRequest::default())
            .await?
            .exit_code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_text(name: &str) -> String {
        format!("name = \"{name}\"\n[repository]\npassword_file = \"repo.pass\"\n[[destinations]]\ntype = \"local\"\npath = \"repo\"\n\n[[jobs]]\nname = \"files\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"/srv\"]\n")
    }

    #[test]
    fn load_plans_reads_a_directorys_toml_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_plans(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("no plan files (*.toml) in"),
            "{err}"
        );
        std::fs::write(dir.path().join("b.toml"), plan_text("second")).unwrap();
        std::fs::write(dir.path().join("a.toml"), plan_text("first")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a plan").unwrap();
        let plans = load_plans(dir.path()).unwrap();
        let names: Vec<_> = plans.iter().map(|(_, p)| p.name.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        let one = load_plans(&dir.path().join("b.toml")).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1.name, "second");
    }

    #[test]
    fn the_first_failed_task_decides_the_exit_code() {
        let task = |key: &str, code: Option<ExitCode>| TaskResult {
            task: DueTask {
                key: key.into(),
                plan: "p".into(),
                kind: TaskKind::Drill,
                slot: None,
                missed: 0,
                dry_run: code.is_none(),
            },
            exit_code: code,
            error: None,
        };
        let run = |due| RunDue {
            due,
            next: Vec::new(),
        };
        assert_eq!(run(vec![]).exit_code(), ExitCode::Ok);
        assert_eq!(run(vec![task("a", None)]).exit_code(), ExitCode::Ok);
        let r = run(vec![
            task("a", Some(ExitCode::Ok)),
            task("b", Some(ExitCode::ObjectiveMissed)),
            task("c", Some(ExitCode::DrillCheckFailed)),
        ]);
        assert_eq!(r.exit_code(), ExitCode::ObjectiveMissed);
        assert_eq!(backup_key("p", "j"), "p/j/backup");
        assert_eq!(drill_key("p"), "p/drill");
    }
}
