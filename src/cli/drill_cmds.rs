//! `lifeboat drill --plan FILE`: parses its flags, runs [`crate::ops::drill`] and renders
//! the reports (human form as each run's drills are done, through the printer; `--json` as
//! one array). The exit code is the worst drill's: 16 a check failed, 17 an objective was
//! missed, 1 the environment failed (15 out of space), 130 interrupted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;

use super::output::print_json;
use super::Ctx;
use crate::drill::DrillReport;
use crate::error::ExitCode;
use crate::ops::drill::DrillRequest;
use crate::ops::{Event, Observer};
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// The plan whose jobs are drilled (its [drill] section picks jobs, environment and
    /// restore tests; its [objectives] are the RTO/RPO targets)
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// Drill only this job, or this recovery-point set ([[sets]] name: every member
    /// restored into one environment) (default: the plan's [drill] jobs, else every job,
    /// and every set — a set's members are drilled as their set)
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Restore from this destination: `local` (the plan's first), or a destination's
    /// location (default: the first)
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Snapshot id (or a unique prefix), or `latest` (the job's newest)
    #[arg(long, default_value = "latest", value_name = "ID")]
    pub snapshot: String,
    /// Leave the restored environment running for inspection; the report says how to
    /// connect and how to remove it
    #[arg(long)]
    pub keep: bool,
}

pub async fn drill(ctx: &Ctx, a: DrillArgs) -> Result<ExitCode> {
    let target = ctx.target(Some(&a.plan), true)?;
    let mut env = ctx.env();
    let kept = Arc::new(KeepReports {
        inner: env.observer.clone(),
        reports: Mutex::default(),
    });
    env.observer = kept.clone();
    let req = DrillRequest {
        job: a.job,
        region: a.region,
        snapshot: a.snapshot,
        keep: a.keep,
    };
    let res = crate::ops::drill::drill(&env, &target, req).await;
    // The reports as announced: an interrupted run has them too, and prints them before it
    // exits 130.
    if ctx.global.json && matches!(res, Ok(_) | Err(Error::Interrupted)) {
        print_json(&*kept.reports.lock().expect("reports"));
    }
    Ok(res?.exit_code())
}

/// Passes the events on to the printer and keeps the drills' reports for `--json`.
struct KeepReports {
    inner: Arc<dyn Observer>,
    reports: Mutex<Vec<DrillReport>>,
}

impl Observer for KeepReports {
    fn event(&self, e: Event) {
        if let Event::DrillFinished(r) = &e {
            self.reports.lock().expect("reports").push((**r).clone());
        }
        self.inner.event(e);
    }
}
