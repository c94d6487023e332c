//! The validated plan: [`Plan`] and the `*Spec` values the rest of lifeboat reads (jobs,
//! objectives, destinations, retention, drills). Everything here has passed validation:
//! durations and schedules are parsed, relative paths are resolved against the plan file's
//! directory. A job's source is a [`SourceSpec`], a type of [`crate::source`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::secret::SecretSpec;
use crate::source::hooks::HooksSpec;
use crate::source::spec::SourceSpec;
use crate::store::multi::DestinationConfig;

/// A validated plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    pub password: SecretSpec,
    pub objectives: Objectives,
    pub destinations: Vec<DestinationSpec>,
    /// How many destinations must commit a backup.
    pub min_regions: usize,
    pub jobs: Vec<JobSpec>,
    pub retention: Option<RetentionSpec>,
    pub drill: Option<DrillSpec>,
    /// `[schedule]`: how `run-due` treats the plan (defaults when absent).
    pub schedule: ScheduleSpec,
    /// `[verify]`: scheduled verification of every region within a read budget.
    pub verify: Option<VerifySpec>,
    /// `[notify]`: where run-due reports starts, successes and failures.
    pub notify: Option<NotifySpec>,
    /// `[[sets]]`: recovery-point sets.
    pub sets: Vec<SetSpec>,
}

/// A recovery-point set: jobs backed up together at one consistency moment, committed as
/// one set manifest, and drilled together into one environment (docs/plans.md).
#[derive(Debug, Clone, PartialEq)]
pub struct SetSpec {
    pub name: String,
    /// Member jobs, in the plan's order.
    pub jobs: Vec<String>,
    /// Restore tests for the set's drill, resolved against the plan file's directory
    /// (empty: the plan's `[drill] restore_tests`).
    pub restore_tests: Vec<PathBuf>,
}

/// `[schedule]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleSpec {
    /// Each destination must be drilled at least this often (default: the drill schedule's
    /// longest gap times the number of destinations, which rotation alone achieves).
    pub drill_interval: Option<Duration>,
    /// A scheduled task that runs longer is stopped and counted as failed.
    pub task_timeout: Option<Duration>,
    /// When the catalog cannot be opened, decide what is due from run-due's own state file
    /// instead of refusing.
    pub local_fallback: bool,
}

/// `[verify]`: `schedule` (cron), `budget` (bytes read per region per run), `cycle` (every
/// pack of every region read within it).
#[derive(Debug, Clone)]
pub struct VerifySpec {
    pub schedule: cron::Schedule,
    pub budget_bytes: u64,
    pub cycle: Duration,
}

/// `[notify]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySpec {
    /// healthchecks.io-style: `URL/start`, `URL` (success), `URL/fail` (with a body).
    pub ping_url: Option<String>,
    /// A JSON POST for failed backups, failed drills and missed objectives.
    pub webhook_url: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
}

impl Plan {
    pub fn job(&self, name: &str) -> Option<&JobSpec> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The jobs `--job` selects (all when `None`), or a usage error naming the known jobs.
    pub fn select_jobs(&self, name: Option<&str>) -> crate::Result<Vec<&JobSpec>> {
        match name {
            None => Ok(self.jobs.iter().collect()),
            Some(n) => self.job(n).map(|j| vec![j]).ok_or_else(|| {
                crate::Error::Usage(format!(
                    "plan {} has no job {n:?}; its jobs are: {}",
                    self.file.display(),
                    self.jobs
                        .iter()
                        .map(|j| j.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }),
        }
    }

    /// Jobs whose schedule cannot meet the plan's RPO by construction: the longest gap
    /// between two runs (over the next 60 days) is longer than the objective. Returns
    /// (job, longest gap) pairs.
    pub fn rpo_misses(&self) -> Vec<(String, Duration)> {
        let Some(rpo) = self.objectives.rpo else {
            return Vec::new();
        };
        let now = chrono::Utc::now();
        let horizon = now + chrono::Duration::days(60);
        self.jobs
            .iter()
            .filter_map(|j| {
                let times: Vec<_> = j
                    .schedule
                    .after(&now)
                    .take_while(|t| *t < horizon)
                    .take(20_000)
                    .collect();
                let gap = times
                    .windows(2)
                    .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
                    .max()?;
                (gap > rpo).then(|| (j.name.clone(), gap))
            })
            .collect()
    }

    /// How often each destination must be drilled: `[schedule] drill_interval`, else the
    /// drill schedule's longest gap (over the next 60 days, or between its next two slots) times the number of destinations.
    /// `None` without a drill schedule.
    pub fn drill_interval(&self) -> Option<Duration> {
        if let Some(d) = self.schedule.drill_interval {
            return Some(d);
        }
        let schedule = self.drill.as_ref()?.schedule.as_ref()?;
        let now = chrono::Utc::now();
        let horizon = now + chrono::Duration::days(60);
        // At least two slots, so a monthly or yearly drill has an interval too.
        let times: Vec<_> = schedule
            .after(&now)
            .enumerate()
            .take_while(|(i, t)| *i < 2 || *t < horizon)
            .take(20_000)
            .map(|(_, t)| t)
            .collect();
        let gap = times
            .windows(2)
            .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
            .max()?;
        Some(gap * self.destinations.len().max(1) as u32)
    }

    /// The set job `job` belongs to, if any.
    pub fn set_of(&self, job: &str) -> Option<&SetSpec> {
        self.sets.iter().find(|s| s.jobs.iter().any(|j| j == job))
    }

    /// The set named `name`, or a usage error naming the plan's sets.
    pub fn select_set(&self, name: &str) -> crate::Result<&SetSpec> {
        self.sets.iter().find(|s| s.name == name).ok_or_else(|| {
            crate::Error::Usage(format!(
                "plan {} has no set {name:?}; its sets are: {}",
                self.file.display(),
                if self.sets.is_empty() {
                    "(none: add a [[sets]] table, see docs/plans.md)".to_string()
                } else {
                    self.sets
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })
    }

    /// The destination backups are written to.
    pub fn primary(&self) -> &DestinationSpec {
        &self.destinations[0]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objectives {
    pub rpo: Option<Duration>,
    pub rto: Option<Duration>,
    /// Service-level objectives for the backups and drills themselves.
    pub slo: SloSpec,
}

/// `[objectives]` `backups_on_time`, `drill_every`, `slo_window`: what the period report
/// measures with an error budget (docs/reports.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloSpec {
    /// Share of scheduled backups that must complete on time, in basis points (9900 = 99 %).
    pub backups_on_time_bp: Option<u32>,
    /// Every region must pass a drill at least this often.
    pub drill_every: Option<Duration>,
    /// The window the SLOs are measured over.
    pub window: Duration,
}

/// SLOs are measured over 30 days unless the plan says otherwise.
pub const DEFAULT_SLO_WINDOW: Duration = Duration::from_secs(30 * 86_400);

impl Default for SloSpec {
    fn default() -> Self {
        SloSpec {
            backups_on_time_bp: None,
            drill_every: None,
            window: DEFAULT_SLO_WINDOW,
        }
    }
}

/// One validated destination (local paths resolved against the plan file's directory).
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSpec(pub DestinationConfig);

impl DestinationSpec {
    /// The names the catalog records a plan's destinations under, in order: a local first
    /// destination is region `local` (what `--repo` runs record too); every other
    /// destination goes by its region name.
    pub fn catalog_regions(dests: &[DestinationSpec]) -> Vec<String> {
        dests
            .iter()
            .enumerate()
            .map(|(i, d)| match &d.0 {
                DestinationConfig::Local(_) if i == 0 => "local".to_string(),
                c => crate::store::multi::Destination::name_of(c),
            })
            .collect()
    }

    /// A human description of where it is (no secrets).
    pub fn location(&self) -> String {
        match &self.0 {
            DestinationConfig::Local(l) => l.path.display().to_string(),
            DestinationConfig::S3(c) => format!("s3:{}", c.label()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    /// The expression as written (5 fields are accepted and get a leading `0` seconds field).
    pub schedule_expr: String,
    pub schedule: cron::Schedule,
    pub source: SourceSpec,
    pub tags: Vec<String>,
    pub hooks: HooksSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionSpec {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<Duration>,
    /// Snapshots carrying any of these tags are kept.
    pub keep_tags: Vec<String>,
    /// `run-due` prunes after applying the rules (`prune = true`); else it only forgets.
    pub prune: bool,
    /// When `run-due` applies the rules to every job (`schedule`, cron); `None`: after each
    /// successful scheduled backup of a job, to that job.
    pub schedule: Option<cron::Schedule>,
    /// The destinations are append-only for the backup credentials (they can add snapshots,
    /// not delete): `keep_within` counts from the store's current time and is required, and
    /// count rules are refused unless `allow_count_rules` (RELIABILITY T16).
    pub append_only: bool,
    pub allow_count_rules: bool,
}

impl RetentionSpec {
    /// The count rules set, by their keys (`keep_last`, `keep_daily`, …).
    pub fn count_rules(&self) -> Vec<&'static str> {
        [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ]
        .into_iter()
        .filter(|(_, n)| n.unwrap_or(0) > 0)
        .map(|(k, _)| k)
        .collect()
    }
}

/// Where a drill restores into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentKind {
    EphemeralPostgres,
    EphemeralMariadb,
    /// An existing server given by URL (`[drill] server`).
    Scratch,
    /// The user's provisioning/teardown commands (`[drill] provision`, `teardown`).
    Command,
    /// A temporary directory (file and volume jobs; `temp-dir` is accepted too).
    Directory,
}

impl FromStr for EnvironmentKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "ephemeral-postgres" => EnvironmentKind::EphemeralPostgres,
            "ephemeral-mariadb" => EnvironmentKind::EphemeralMariadb,
            "scratch" => EnvironmentKind::Scratch,
            "command" => EnvironmentKind::Command,
            "directory" | "temp-dir" => EnvironmentKind::Directory,
            _ => return Err(()),
        })
    }
}

impl EnvironmentKind {
    pub fn name(self) -> &'static str {
        match self {
            EnvironmentKind::EphemeralPostgres => "ephemeral-postgres",
            EnvironmentKind::EphemeralMariadb => "ephemeral-mariadb",
            EnvironmentKind::Scratch => "scratch",
            EnvironmentKind::Command => "command",
            EnvironmentKind::Directory => "directory",
        }
    }
}

/// `environment = "scratch"`: the server and where its password comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScratchDrillSpec {
    pub server: crate::drill::env::ScratchSpec,
    pub password: Option<SecretSpec>,
}

#[derive(Debug, Clone)]
pub struct DrillSpec {
    pub environment: EnvironmentKind,
    pub schedule: Option<cron::Schedule>,
    /// Jobs to drill (all when empty).
    pub jobs: Vec<String>,
    /// Restore-test files, resolved against the plan file's directory.
    pub restore_tests: Vec<PathBuf>,
    pub postgres_version: Option<u32>,
    /// Set when `environment = "scratch"`.
    pub scratch: Option<ScratchDrillSpec>,
    /// Set when `environment = "command"`.
    pub command: Option<crate::drill::env::CommandSpec>,
}
