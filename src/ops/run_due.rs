//! The scheduler use case (`lifeboat run-due`, what the systemd timer runs every few
//! minutes): load the plans, ask the catalog when each job's backup, each region's drill and
//! each region's verification last ran, and run what is due (catching up missed slots with
//! one run), under a lock file so overlapping timer ticks never double up.
//!
//! - **Backups**: each job's cron schedule.
//! - **Drills** rotate over the plan's destinations, one drill per plan and tick: a region
//!   never drilled, or not drilled within the plan's drill interval, goes first (most overdue
//!   first); otherwise, when the `[drill] schedule` has a slot due, the region drilled least
//!   recently. So every copy is proven, not just the first.
//! - **Verification** (`[verify]`): at each slot of its schedule every region reads its least
//!   recently verified packs within the budget, so the cycle covers every pack.
//! - The orphan sweep (throwaway environments of dead processes) runs on every tick.
//! - `[schedule] task_timeout` stops a task that runs too long (counted as failed).
//!
//! When each task last ran comes from the catalog (shared by a fleet) and from the state file
//! run-due keeps beside its lock (what this host ran), the later of the two.
//! A catalog that cannot be opened means run-due cannot tell what is due: it refuses rather
//! than guess, unless the plan sets `[schedule] local_fallback = true`, in which case the
//! state file run-due keeps beside its lock (`run-due-state.json`, written after every task)
//! stands in. Each task's notifications (`[notify]`) are sent around it; a notification that
//! fails is a warning, never a failed task.
//!
//! Each due task is an [`Event::TaskDue`] on the caller's observer; the tasks' own events (a
//! job backed up, a drill's report, the regions a backup wrote) go to the observer the
//! request names, so the caller decides what of them is shown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::backup::{self, PlanRequest};
use super::drill::{self, DrillRequest};
use super::notify::{Notifier, Ping};
use super::target::Target;
use super::verify::{self, ReadMode, VerifyRequest};
use super::{record, Env, Event, Observer};
use crate::error::ExitCode;
use crate::plan::DestinationSpec;
use crate::plan::Plan;
use crate::schedule::{self, RunLock, Task};
use crate::sys::clock::Clock;
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
    /// Where the lock file `run-due.lock` and the state file `run-due-state.json` go
    /// (default: the state directory, where the default catalog lives).
    pub lock_dir: Option<PathBuf>,
    /// Who hears the due backups' and drills' own events.
    pub task_observer: Arc<dyn Observer>,
    /// Where "now" comes from (the wall clock, or a test's manual clock).
    pub clock: Arc<dyn Clock>,
}

/// What a due task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// A job's backup.
    Backup { job: String },
    /// The plan's drill (of its `[drill]` jobs), restoring from one region.
    Drill { region: String },
    /// A budgeted verification of one region (`[verify]`).
    Verify { region: String },
    /// The plan's `[retention]`: for one job right after its successful backup (no
    /// `[retention] schedule`), or for every job on the retention's own schedule (`None`).
    Retention { job: Option<String> },
}

impl TaskKind {
    /// `backup`, `drill`, `verify` or `retention`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Backup { .. } => "backup",
            TaskKind::Drill { .. } => "drill",
            TaskKind::Verify { .. } => "verify",
            TaskKind::Retention { .. } => "retention",
        }
    }

    /// What the task works on: (`job`, name), (`region`, name), or (`jobs`, `all`).
    pub fn subject(&self) -> (&'static str, &str) {
        match self {
            TaskKind::Backup { job } | TaskKind::Retention { job: Some(job) } => ("job", job),
            TaskKind::Drill { region } | TaskKind::Verify { region } => ("region", region),
            TaskKind::Retention { job: None } => ("jobs", "all"),
        }
    }
}

/// A task that is due ([`Event::TaskDue`]).
#[derive(Debug, Clone)]
pub struct DueTask {
    /// `plan/job/backup`, `plan/drill/REGION` or `plan/verify/REGION`: the name the JSON
    /// output, the metrics and the state file go by.
    pub key: String,
    pub plan: String,
    pub kind: TaskKind,
    /// The latest scheduled time that has passed (`None`: never ran, or overdue).
    pub slot: Option<DateTime<Utc>>,
    /// Scheduled slots since the last run beyond the one this run serves.
    pub missed: u32,
    /// Why it is due, for people: "never ran", "slot 2026-12-04 03:00 UTC", "region eu last
    /// drilled 4d ago, interval 3d".
    pub reason: String,
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
    /// How long it ran.
    pub duration_secs: f64,
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
    /// Plans whose tasks were not considered because the catalog could not be opened and the
    /// plan has no local fallback: (plan, why).
    pub refused: Vec<(String, String)>,
}

impl RunDue {
    /// The first task's exit code that is not `Ok`, else 1 when a plan was refused, else `Ok`.
    pub fn exit_code(&self) -> ExitCode {
        self.due
            .iter()
            .filter_map(|t| t.exit_code)
            .find(|c| *c != ExitCode::Ok)
            .unwrap_or(if self.refused.is_empty() {
                ExitCode::Ok
            } else {
                ExitCode::Error
            })
    }
}

use super::plans::load_plans;

fn backup_key(plan: &str, job: &str) -> String {
    format!("{plan}/{job}/backup")
}

fn drill_key(plan: &str, region: &str) -> String {
    format!("{plan}/drill/{region}")
}

fn retention_key(plan: &str, job: Option<&str>) -> String {
    match job {
        Some(job) => format!("{plan}/retention/{job}"),
        None => format!("{plan}/retention"),
    }
}

fn verify_key(plan: &str, region: &str) -> String {
    format!("{plan}/verify/{region}")
}

/// The state file's name, beside the lock.
pub const STATE_FILE: &str = "run-due-state.json";

/// What run-due remembers between ticks (`run-due-state.json`): each task's last run and
/// outcome. The metrics read it for the task outcomes; a plan with `[schedule]
/// local_fallback = true` is scheduled from it when the catalog cannot be opened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunDueState {
    /// When run-due last finished a tick that was not a dry run.
    pub last_tick: Option<DateTime<Utc>>,
    /// By task key.
    pub tasks: BTreeMap<String, TaskState>,
    /// By plan: the objectives missed at the last tick (`objective plan/job region`), so
    /// the webhook hears of a miss once, when it starts, and of its end.
    #[serde(default)]
    pub misses: BTreeMap<String, Vec<String>>,
}

/// One task's last run, in [`RunDueState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskState {
    pub plan: String,
    /// `backup`, `drill` or `verify`.
    pub kind: String,
    /// The job (backups) or region (drills, verifications).
    pub subject: String,
    pub started: DateTime<Utc>,
    pub duration_secs: f64,
    pub exit_code: u8,
    /// How many times this task has run and how many of those failed (counters).
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub failures: u64,
}

impl RunDueState {
    /// Reads the state file in `dir` (empty when there is none yet).
    pub fn load(dir: &Path) -> Result<RunDueState> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::Other(format!(
                    "run-due's state file {} is damaged ({e}); it is replaced at the end of this tick (the catalog still says what ran)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RunDueState::default()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Writes the state file in `dir` atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let body = serde_json::to_vec_pretty(self).expect("state serializes");
        schedule::write_atomic(&path, &body)
    }
}

/// When each task last ran: by task key.
type LastRuns = HashMap<String, DateTime<Utc>>;

/// One plan's tasks, before due-ness: (key, kind, cron schedule).
struct PlanTasks {
    plan: Arc<Plan>,
    /// Catalog region names of the plan's destinations, in plan order.
    regions: Vec<String>,
}

/// Runs the due backups, drills and verifications of the plans at `req.plan`. A task that
/// fails is reported ([`Event::TaskFailed`], its exit code in the result) and the others
/// still run; an interruption stops the run.
pub async fn run_due(env: &Env, req: RunDueRequest) -> Result<RunDue> {
    let plans = load_plans(&req.plan)?;
    let state_dir = match &req.lock_dir {
        Some(d) => d.clone(),
        None => crate::catalog::default_state_dir()?,
    };
    let _lock = if req.dry_run {
        None
    } else {
        Some(RunLock::acquire(&state_dir.join("run-due.lock"))?)
    };
    // A damaged state file must not stop the backups: the catalog still says what ran.
    let mut state = RunDueState::load(&state_dir).unwrap_or_else(|e| {
        env.warn(format!("{e}; starting a new one"));
        RunDueState::default()
    });
    let now = req.clock.now();

    let plans: Vec<PlanTasks> = plans
        .into_iter()
        .map(|(_, p)| PlanTasks {
            regions: DestinationSpec::catalog_regions(&p.destinations),
            plan: Arc::new(p),
        })
        .collect();

    // When each task last ran: from the catalog, or (opted in) from the state file.
    let mut refused = Vec::new();
    let mut considered = Vec::new();
    match last_runs(env, &plans).await {
        Ok(per_plan) => {
            for (p, mut last) in plans.iter().zip(per_plan) {
                // What this host ran itself counts too (the later time wins): a task that
                // failed before the catalog heard of it waits for its next slot instead of
                // running again on every tick.
                for (k, t) in state.tasks.iter().filter(|(_, t)| t.plan == p.plan.name) {
                    let e = last.entry(k.clone()).or_insert(t.started);
                    *e = (*e).max(t.started);
                }
                considered.push((p, last));
            }
        }
        Err(why) => {
            for p in &plans {
                if p.plan.schedule.local_fallback {
                    env.warn(format!(
                        "plan {}: the catalog {why}; deciding what is due from run-due's state file {} ([schedule] local_fallback)",
                        p.plan.name,
                        state_dir.join(STATE_FILE).display()
                    ));
                    let last = state
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.plan == p.plan.name)
                        .map(|(k, t)| (k.clone(), t.started))
                        .collect();
                    considered.push((p, last));
                } else {
                    refused.push((p.plan.name.clone(), why.clone()));
                }
            }
            if considered.is_empty() {
                return Err(refusal(&why));
            }
            for (plan, _) in &refused {
                env.emit(Event::TaskFailed {
                    task: format!("{plan}/*"),
                    error: refusal(&why).to_string(),
                });
            }
        }
    }

    let mut due = Vec::new();
    let mut next = Vec::new();
    for (p, last) in &considered {
        due.extend(due_tasks(p, last, now, req.dry_run, &mut next));
    }

    if !req.dry_run {
        // Throwaway environments of dead processes go on every tick, not only when a drill runs.
        let swept = tokio::task::spawn_blocking(crate::drill::env::sweep_orphans)
            .await
            .unwrap_or_default();
        for d in swept {
            env.emit(Event::OrphanRemoved(d));
        }
    }

    let task_env = Env {
        observer: req.task_observer.clone(),
        ..env.clone()
    };
    let owners: HashMap<&str, &Arc<Plan>> = considered
        .iter()
        .map(|(p, _)| (p.plan.name.as_str(), &p.plan))
        .collect();
    let mut results: Vec<TaskResult> = Vec::new();
    let mut backed_up: HashSet<(String, String)> = HashSet::new();
    let plans_of: Vec<String> = due.iter().map(|t| t.plan.clone()).collect();
    for (i, task) in due.into_iter().enumerate() {
        env.emit(Event::TaskDue(task.clone()));
        if req.dry_run {
            results.push(TaskResult {
                task,
                exit_code: None,
                error: None,
                duration_secs: 0.0,
            });
            continue;
        }
        env.cancel.check()?;
        // A job's retention follows its backup only when that backup succeeded this tick.
        if let TaskKind::Retention { job: Some(job) } = &task.kind {
            if !backed_up.contains(&(task.plan.clone(), job.clone())) {
                let why = format!("skipped: the backup of job {job} did not succeed");
                results.push(TaskResult {
                    task,
                    exit_code: None,
                    error: Some(why),
                    duration_secs: 0.0,
                });
                continue;
            }
        }
        let p = owners[task.plan.as_str()];
        // One healthchecks-style check per plan: started before its first task of this
        // tick, success or fail after its last; each failed task also goes to the webhook.
        let notifier = p.notify.as_ref().map(|n| Notifier::new(n.clone()));
        let first_of_plan = i == 0 || plans_of[i - 1] != task.plan;
        let last_of_plan = plans_of.get(i + 1) != Some(&task.plan);
        if let (Some(n), true) = (&notifier, first_of_plan) {
            let tasks: Vec<&String> = plans_of.iter().filter(|q| **q == task.plan).collect();
            let body = serde_json::json!({
                "source": "lifeboat", "event": "start", "host": crate::sys::host::hostname(),
                "plan": task.plan, "tasks_due": tasks.len(),
            });
            n.ping(env, Ping::Start, &body).await;
        }
        let started = req.clock.now();
        let clock = std::time::Instant::now();
        let run = run_task(&task_env, p, &task.kind, req.min_regions);
        let outcome = match p.schedule.task_timeout {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(r) => r,
                Err(_) => Err(Error::Other(format!(
                    "{} ran longer than [schedule] task_timeout ({}) in plan {} and was stopped; raise task_timeout or look at why it is slow",
                    task.key,
                    humantime::format_duration(limit),
                    p.file.display()
                ))),
            },
            None => run.await,
        };
        let duration_secs = clock.elapsed().as_secs_f64();
        let (code, error) = match outcome {
            Ok((c, detail)) => (c, detail),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                env.emit(Event::TaskFailed {
                    task: task.key.clone(),
                    error: e.to_string(),
                });
                (e.exit_code(), Some(e.to_string()))
            }
        };
        if let (TaskKind::Backup { job }, ExitCode::Ok) = (&task.kind, code) {
            backed_up.insert((task.plan.clone(), job.clone()));
        }
        if let Some(n) = &notifier {
            if code != ExitCode::Ok {
                n.webhook(env, &task_summary(&task, Some(code), error.as_deref()))
                    .await;
            }
        }
        let entry = state.tasks.entry(task.key.clone()).or_insert(TaskState {
            plan: task.plan.clone(),
            kind: task.kind.name().into(),
            subject: task.kind.subject().1.into(),
            started,
            duration_secs,
            exit_code: code.code(),
            runs: 0,
            failures: 0,
        });
        entry.started = started;
        entry.duration_secs = duration_secs;
        entry.exit_code = code.code();
        entry.runs += 1;
        entry.failures += u64::from(code != ExitCode::Ok);
        // Saved after every task, so a crash mid-tick loses at most the task that ran.
        state.last_tick = Some(req.clock.now());
        if let Err(e) = state.save(&state_dir) {
            env.warn(format!("run-due's state was not saved: {e}"));
        }
        let plan_name = task.plan.clone();
        results.push(TaskResult {
            task,
            exit_code: Some(code),
            error,
            duration_secs,
        });
        if let (Some(n), true) = (&notifier, last_of_plan) {
            let mine: Vec<&TaskResult> = results
                .iter()
                .filter(|r| r.task.plan == plan_name)
                .collect();
            let failed = mine.iter().any(|r| r.exit_code != Some(ExitCode::Ok));
            let body = serde_json::json!({
                "source": "lifeboat",
                "event": if failed { "failure" } else { "success" },
                "host": crate::sys::host::hostname(),
                "plan": plan_name,
                "tasks": mine
                    .iter()
                    .map(|r| task_summary(&r.task, r.exit_code, r.error.as_deref()))
                    .collect::<Vec<_>>(),
            });
            let kind = if failed { Ping::Fail } else { Ping::Success };
            n.ping(env, kind, &body).await;
        }
    }
    if !req.dry_run {
        for (p, _) in &considered {
            if p.plan
                .notify
                .as_ref()
                .is_some_and(|n| n.webhook_url.is_some())
            {
                notify_misses(env, &p.plan, &req, &mut state).await;
            }
        }
        state.last_tick = Some(req.clock.now());
        if let Err(e) = state.save(&state_dir) {
            env.warn(format!("run-due's state was not saved: {e}"));
        }
    }
    Ok(RunDue {
        due: results,
        next,
        refused,
    })
}

/// Tells the plan's webhook about objectives that are newly missed (`objective_missed`) or
/// no longer missed (`objective_recovered`) since the last tick: `status --check` of the
/// plan, judged after this tick's tasks. A catalog that cannot be read is skipped (the
/// tasks' own notifications have said what failed).
async fn notify_misses(env: &Env, plan: &Arc<Plan>, req: &RunDueRequest, state: &mut RunDueState) {
    let Some(n) = plan.notify.as_ref().map(|n| Notifier::new(n.clone())) else {
        return;
    };
    let status_req = super::status::StatusRequest {
        region: None,
        plan: Some(plan.file.display().to_string()),
        job: None,
        cycle: std::time::Duration::from_secs(30 * 86_400),
        clock: req.clock.clone(),
    };
    let Ok(report) = super::status::status(env, None, status_req).await else {
        return;
    };
    let now: Vec<String> = report
        .misses
        .iter()
        .map(|m| {
            format!(
                "{} {}{} {}",
                m.objective,
                m.plan,
                m.job
                    .as_deref()
                    .map(|j| format!("/{j}"))
                    .unwrap_or_default(),
                m.region
            )
        })
        .collect();
    let before = state.misses.get(&plan.name).cloned().unwrap_or_default();
    let new: Vec<_> = report
        .misses
        .iter()
        .zip(&now)
        .filter(|(_, k)| !before.contains(k))
        .map(|(m, _)| m)
        .collect();
    let recovered: Vec<_> = before.iter().filter(|k| !now.contains(k)).collect();
    let host = crate::sys::host::hostname();
    if !new.is_empty() {
        let body = serde_json::json!({
            "source": "lifeboat", "event": "objective_missed", "host": host,
            "plan": plan.name, "misses": new,
        });
        n.webhook(env, &body).await;
    }
    if !recovered.is_empty() {
        let body = serde_json::json!({
            "source": "lifeboat", "event": "objective_recovered", "host": host,
            "plan": plan.name, "recovered": recovered,
        });
        n.webhook(env, &body).await;
    }
    state.misses.insert(plan.name.clone(), now);
}

/// The JSON a notification carries: names, times and codes — never a password, key or
/// catalog URL.
fn task_summary(task: &DueTask, code: Option<ExitCode>, error: Option<&str>) -> serde_json::Value {
    let event = match code {
        None => "start",
        Some(ExitCode::Ok) => "success",
        Some(ExitCode::ObjectiveMissed) => "objective_missed",
        Some(_) => "failure",
    };
    serde_json::json!({
        "source": "lifeboat",
        "event": event,
        "host": crate::sys::host::hostname(),
        "plan": task.plan,
        "task": task.key,
        "kind": task.kind.name(),
        "subject": task.kind.subject().1,
        "reason": task.reason,
        "exit_code": code.map(|c| c.code()),
        "error": error,
    })
}

fn refusal(why: &str) -> Error {
    Error::Other(format!(
        "run-due cannot tell what is due: the catalog {why}; nothing was run. Fix the catalog (LIFEBOAT_CATALOG / --catalog): the next tick runs what is due, missed slots once; a backup can still be run by hand with `lifeboat backup --plan FILE`; or set [schedule] local_fallback = true in the plan to schedule from run-due's own state file meanwhile"
    ))
}

/// When each task of each plan last ran, from the catalog (in `plans` order), or why the
/// catalog cannot say. Without the catalog run-due cannot tell what is due: guessing "never
/// ran" would re-run every backup and drill on every tick of the timer.
async fn last_runs(env: &Env, plans: &[PlanTasks]) -> std::result::Result<Vec<LastRuns>, String> {
    let cat = record::open_catalog(env)
        .await
        .map_err(|e| format!("cannot be opened ({e})"))?;
    let mut out = Vec::new();
    for p in plans {
        let name = &p.plan.name;
        let mut last = LastRuns::new();
        let starts = match cat.last_starts(name).await {
            Ok(s) => s,
            Err(e) => {
                cat.close().await;
                return Err(format!("cannot be read ({e})"));
            }
        };
        for s in starts {
            let key = match s.kind {
                "backup" => backup_key(name, &s.job),
                _ => drill_key(name, &s.region),
            };
            let e = last.entry(key).or_insert(s.started);
            *e = (*e).max(s.started);
        }
        if p.plan.verify.is_some() {
            for r in &p.regions {
                match cat.last_verified(name, r).await {
                    Ok(Some(t)) => {
                        last.insert(verify_key(name, r), t);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        cat.close().await;
                        return Err(format!("cannot be read ({e})"));
                    }
                }
            }
        }
        out.push(last);
    }
    cat.close().await;
    Ok(out)
}

fn slot_reason(slot: Option<DateTime<Utc>>, missed: u32) -> String {
    match (slot, missed) {
        (None, _) => "never ran".to_string(),
        (Some(s), 0) => format!("slot {}", s.format("%Y-%m-%d %H:%M UTC")),
        (Some(s), m) => format!(
            "slot {}, {m} earlier slots missed",
            s.format("%Y-%m-%d %H:%M UTC")
        ),
    }
}

/// The tasks of one plan that are due at `now`, given when each last ran; every task's next
/// slot is added to `next`. Backups first, then at most one drill, then verifications.
fn due_tasks(
    p: &PlanTasks,
    last: &LastRuns,
    now: DateTime<Utc>,
    dry_run: bool,
    next: &mut Vec<NextSlot>,
) -> Vec<DueTask> {
    let plan = &p.plan;
    let mut out = Vec::new();
    let mk = |key: String, kind: TaskKind, slot, missed, reason: String| DueTask {
        key,
        plan: plan.name.clone(),
        kind,
        slot,
        missed,
        reason,
        dry_run,
    };

    let jobs: Vec<Task> = plan
        .jobs
        .iter()
        .map(|j| Task {
            key: backup_key(&plan.name, &j.name),
            schedule: j.schedule.clone(),
        })
        .collect();
    // A recovery-point set is backed up whole by its first due member's task (its members
    // share one schedule, and the set's run records a backup of every member).
    let mut sets_queued: Vec<&str> = Vec::new();
    for d in schedule::due(&jobs, last, now) {
        let job = plan
            .jobs
            .iter()
            .find(|j| backup_key(&plan.name, &j.name) == d.key)
            .expect("a job's task");
        if let Some(set) = plan.set_of(&job.name) {
            if sets_queued.contains(&set.name.as_str()) {
                continue;
            }
            sets_queued.push(&set.name);
        }
        out.push(mk(
            d.key,
            TaskKind::Backup {
                job: job.name.clone(),
            },
            d.slot,
            d.missed,
            slot_reason(d.slot, d.missed),
        ));
        // Without its own schedule, the retention follows each successful backup of the job.
        if plan
            .retention
            .as_ref()
            .is_some_and(|r| r.schedule.is_none())
        {
            out.push(mk(
                retention_key(&plan.name, Some(&job.name)),
                TaskKind::Retention {
                    job: Some(job.name.clone()),
                },
                d.slot,
                0,
                format!(
                    "after the backup of job {} ([retention] has no schedule of its own)",
                    job.name
                ),
            ));
        }
    }
    next.extend(jobs.iter().map(|t| NextSlot {
        key: t.key.clone(),
        next: schedule::next_slot(t, now),
    }));

    if let Some(sched) = plan.retention.as_ref().and_then(|r| r.schedule.clone()) {
        let task = Task {
            key: retention_key(&plan.name, None),
            schedule: sched,
        };
        for d in schedule::due(std::slice::from_ref(&task), last, now) {
            out.push(mk(
                d.key,
                TaskKind::Retention { job: None },
                d.slot,
                d.missed,
                format!(
                    "{}; [retention] for every job",
                    slot_reason(d.slot, d.missed)
                ),
            ));
        }
        next.push(NextSlot {
            key: task.key.clone(),
            next: schedule::next_slot(&task, now),
        });
    }

    if let Some(sched) = plan.drill.as_ref().and_then(|d| d.schedule.clone()) {
        let last_drills: Vec<(String, Option<DateTime<Utc>>)> = p
            .regions
            .iter()
            .map(|r| (r.clone(), last.get(&drill_key(&plan.name, r)).copied()))
            .collect();
        let interval = plan.drill_interval();
        if let Some(pick) = schedule::pick_drill_region(&sched, &last_drills, interval, now) {
            out.push(mk(
                drill_key(&plan.name, &pick.region),
                TaskKind::Drill {
                    region: pick.region,
                },
                pick.slot,
                pick.missed,
                pick.reason,
            ));
        }
        let task = Task {
            key: format!("{}/drill", plan.name),
            schedule: sched,
        };
        next.push(NextSlot {
            key: task.key.clone(),
            next: schedule::next_slot(&task, now),
        });
    }

    if let Some(v) = &plan.verify {
        let tasks: Vec<Task> = p
            .regions
            .iter()
            .map(|r| Task {
                key: verify_key(&plan.name, r),
                schedule: v.schedule.clone(),
            })
            .collect();
        for d in schedule::due(&tasks, last, now) {
            let region = p
                .regions
                .iter()
                .find(|r| verify_key(&plan.name, r) == d.key)
                .expect("a region's task")
                .clone();
            let reason = format!(
                "{}; reads up to {} of the least recently verified packs",
                slot_reason(d.slot, d.missed),
                crate::sys::human::bytes(v.budget_bytes)
            );
            out.push(mk(
                d.key,
                TaskKind::Verify { region },
                d.slot,
                d.missed,
                reason,
            ));
        }
        next.extend(tasks.iter().map(|t| NextSlot {
            key: t.key.clone(),
            next: schedule::next_slot(t, now),
        }));
    }
    out
}

/// Runs one due task: a job's backup (tagged `scheduled`), the plan's drill from one region,
/// or a budgeted verification of one region.
async fn run_task(
    env: &Env,
    p: &Arc<Plan>,
    kind: &TaskKind,
    min_regions: Option<usize>,
) -> Result<(ExitCode, Option<String>)> {
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
            let failed: Vec<String> = r
                .jobs
                .iter()
                .filter_map(|j| j.result.as_ref().err().map(|f| f.message.clone()))
                .collect();
            Ok((
                r.exit_code(),
                (!failed.is_empty()).then(|| failed.join("; ")),
            ))
        }
        TaskKind::Retention { job } => {
            let jobs: Vec<&str> = match job {
                Some(j) => vec![j.as_str()],
                None => p.jobs.iter().map(|j| j.name.as_str()).collect(),
            };
            let mut code = ExitCode::Ok;
            let mut failed = Vec::new();
            for j in jobs {
                let c = super::forget::apply_retention(env, &target, j).await;
                if c != ExitCode::Ok {
                    failed.push(format!("retention of job {j}: exit {}", c.code()));
                    if code == ExitCode::Ok {
                        code = c;
                    }
                }
            }
            Ok((code, (!failed.is_empty()).then(|| failed.join("; "))))
        }
        TaskKind::Drill { region } => {
            let req = DrillRequest {
                region: Some(region.clone()),
                ..DrillRequest::default()
            };
            let run = drill::drill(env, &target, req).await?;
            let detail = run
                .reports
                .iter()
                .filter(|r| r.result != crate::catalog::DrillResult::Passed)
                .map(|r| format!("drill {}: {}", r.id, r.result.as_str()))
                .collect::<Vec<_>>();
            Ok((
                run.exit_code(),
                (!detail.is_empty()).then(|| detail.join("; ")),
            ))
        }
        TaskKind::Verify { region } => {
            let budget = p.verify.as_ref().map(|v| v.budget_bytes).unwrap_or(1 << 30);
            let req = VerifyRequest {
                region: Some(region.clone()),
                read: ReadMode::Budget(budget),
            };
            let v = verify::verify(env, &target, req).await?;
            let errors = v.report.errors();
            Ok((
                v.exit_code(),
                (errors > 0)
                    .then(|| format!("verification of region {region} found {errors} errors")),
            ))
        }
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
                kind: TaskKind::Drill {
                    region: "local".into(),
                },
                slot: None,
                missed: 0,
                reason: "never ran".into(),
                dry_run: code.is_none(),
            },
            exit_code: code,
            error: None,
            duration_secs: 0.0,
        };
        let run = |due| RunDue {
            due,
            next: Vec::new(),
            refused: Vec::new(),
        };
        assert_eq!(run(vec![]).exit_code(), ExitCode::Ok);
        assert_eq!(run(vec![task("a", None)]).exit_code(), ExitCode::Ok);
        let r = run(vec![
            task("a", Some(ExitCode::Ok)),
            task("b", Some(ExitCode::ObjectiveMissed)),
            task("c", Some(ExitCode::DrillCheckFailed)),
        ]);
        assert_eq!(r.exit_code(), ExitCode::ObjectiveMissed);
        let refused = RunDue {
            due: vec![task("a", Some(ExitCode::Ok))],
            next: Vec::new(),
            refused: vec![("q".into(), "cannot be opened".into())],
        };
        assert_eq!(refused.exit_code(), ExitCode::Error);
        assert_eq!(backup_key("p", "j"), "p/j/backup");
        assert_eq!(drill_key("p", "eu"), "p/drill/eu");
        assert_eq!(verify_key("p", "eu"), "p/verify/eu");
    }

    #[test]
    fn notification_payloads_name_the_task_and_carry_no_secret() {
        let task = DueTask {
            key: "p/files/backup".into(),
            plan: "p".into(),
            kind: TaskKind::Backup {
                job: "files".into(),
            },
            slot: None,
            missed: 0,
            reason: "never ran".into(),
            dry_run: false,
        };
        let v = task_summary(&task, Some(ExitCode::SourceFailed), Some("pg_dump failed"));
        assert_eq!(v["event"], "failure");
        assert_eq!(v["exit_code"], 14);
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        for k in keys {
            assert!(
                !["password", "secret", "catalog", "key", "token"]
                    .iter()
                    .any(|s| k.contains(s)),
                "{k}"
            );
        }
    }
}
