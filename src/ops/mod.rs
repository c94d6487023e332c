//! The application layer: one module per use case — [`backup`], [`restore`], [`drill`],
//! [`verify`], [`sync`], [`status`], [`preflight`], [`run_due`], [`snapshots`], [`keys`],
//! [`health`], [`catalog`], [`metrics`], [`systemd`] (and [`notify`], which `run_due`
//! uses), [`set`] (recovery-point sets, used by backup and drill), [`forget`], [`prune`], [`repair`], [`report`]. Each takes a resolved [`target::Target`] (or a plan) and a request
//! struct and returns a report value with `exit_code()`; none prints. The CLI renders the
//! reports, `run_due` calls the other use cases directly, and tests call the same functions
//! the commands do.
//!
//! Things that happen while a use case runs (a region caught up, a drill starting, a warning
//! that does not fail the run) are [`Event`]s handed to the caller's [`Observer`]; the CLI
//! prints them, tests collect them.
//!
//! Below this layer: plan → source → pipeline → repo → store, drill, catalog, schedule. This
//! module never imports `cli`.

pub mod anomaly;
pub mod backup;
pub mod catalog;
pub mod drill;
pub mod engine;
pub mod forget;
pub mod health;
pub mod job;
pub mod keys;
pub mod metrics;
pub mod notify;
pub mod object_lock;
pub mod plans;
pub mod preflight;
pub mod prune;
pub mod record;
pub mod repair;
pub mod report;
pub mod restore;
pub mod run_due;
pub mod set;
pub mod snapshots;
pub mod status;
pub mod sync;
pub mod systemd;
pub mod target;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::ids::SnapshotId;
use crate::progress::Progress;
use crate::repo::sync::SyncRegionReport;
use crate::sys::Cancel;
use crate::{Error, Result};

/// What every use case gets from its caller: cancellation, where the catalog is, how to show
/// progress, and who hears about events.
#[derive(Clone)]
pub struct Env {
    pub cancel: Cancel,
    /// The catalog location (a SQLite path or a postgres:// URL), or why the one given cannot
    /// be used (checked by the caller, reported when a use case needs the catalog).
    pub catalog: std::result::Result<String, String>,
    pub progress: Progress,
    pub observer: Arc<dyn Observer>,
}

impl Env {
    /// An environment with the default catalog location, no progress bars and events kept in
    /// memory (tests, embedding).
    pub fn quiet(cancel: Cancel) -> (Env, Arc<Collect>) {
        let collect = Arc::new(Collect::default());
        let env = Env {
            cancel,
            catalog: crate::catalog::default_location()
                .map(|p| p.display().to_string())
                .map_err(|e| e.to_string()),
            progress: Progress::hidden(),
            observer: collect.clone(),
        };
        (env, collect)
    }

    /// The catalog location, or the problem with the one given.
    pub fn catalog_location(&self) -> Result<&str> {
        self.catalog
            .as_deref()
            .map_err(|e| Error::Config(e.to_string()))
    }

    pub fn emit(&self, e: Event) {
        self.observer.event(e);
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning {
            message: message.into(),
            hint: None,
        });
    }
}

/// Receives the events of a running use case.
pub trait Observer: Send + Sync {
    fn event(&self, e: Event);
}

/// Keeps every event (tests, `Env::quiet`).
#[derive(Default)]
pub struct Collect(Mutex<Vec<Event>>);

impl Collect {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("events").clone()
    }
}

impl Observer for Collect {
    fn event(&self, e: Event) {
        self.0.lock().expect("events").push(e);
    }
}

/// Something a use case tells its caller while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// Not a failure of the use case, but something the operator should see.
    Warning {
        message: String,
        hint: Option<String>,
    },
    /// A write to the catalog did not happen (`what`: "backup run", "sync", …); the
    /// repository is unaffected.
    CatalogNotRecorded { what: String, warnings: Vec<String> },
    /// Before a multi-region write: a lagging region was copied what it lacked.
    CaughtUp(SyncRegionReport),
    /// A drill of `job` is about to restore `snapshot`.
    DrillStarting {
        job: String,
        snapshot: SnapshotId,
        consistency_time: DateTime<Utc>,
    },
    /// A throwaway environment left by a dead process was removed.
    OrphanRemoved(PathBuf),
    /// A plan job's backup finished (the run goes on with the next job).
    JobBackedUp(Box<backup::JobOutcome>),
    /// A recovery-point set's backup finished: its manifest, or why there is none.
    SetBackedUp(Box<set::SetOutcome>),
    /// A drill finished: its report, the evidence (announced once a run's drills are done,
    /// before they are recorded).
    DrillFinished(Box<crate::drill::DrillReport>),
    /// `run-due` found a task due (and runs it, unless this is a dry run).
    TaskDue(run_due::DueTask),
    /// A due task could not run to a report; `run-due` goes on with the others.
    TaskFailed { task: String, error: String },
    /// How each region fared in a multi-region write that `run-due` made.
    RegionsWritten(Vec<crate::store::multi::RegionResult>),
}
