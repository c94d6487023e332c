//! The plan file as serde reads it: one `*Config` per table, `deny_unknown_fields` on each
//! so a misspelt key is an error that names it. Nothing here is checked beyond its TOML
//! type; the validator turns these into the `*Spec` values of `model`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::source::db::RowCounts;
use crate::source::postgres::DumpFormat;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanConfig {
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) repository: RepositoryConfig,
    #[serde(default)]
    pub(super) objectives: ObjectivesConfig,
    #[serde(default)]
    pub(super) destinations: Vec<DestinationConfig>,
    /// How many destinations must commit a backup (default 1; some but not all is exit 3).
    pub(super) min_regions: Option<usize>,
    #[serde(default)]
    pub(super) jobs: Vec<JobConfig>,
    pub(super) retention: Option<RetentionConfig>,
    pub(super) drill: Option<DrillConfig>,
    pub(super) schedule: Option<ScheduleConfig>,
    pub(super) verify: Option<VerifyConfig>,
    pub(super) notify: Option<NotifyConfig>,
    /// `[[sets]]`: recovery-point sets (jobs backed up together at one moment).
    #[serde(default)]
    pub(super) sets: Vec<SetConfig>,
}

/// `[[sets]]`: jobs backed up together, at one consistency moment, and drilled together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetConfig {
    pub(super) name: String,
    pub(super) jobs: Vec<String>,
    /// Restore tests for the set's drill (default: the plan's `[drill] restore_tests`).
    #[serde(default)]
    pub(super) restore_tests: Vec<PathBuf>,
}

/// `[schedule]`: how `run-due` treats this plan.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleConfig {
    pub(super) drill_interval: Option<String>,
    pub(super) task_timeout: Option<String>,
    #[serde(default)]
    pub(super) local_fallback: bool,
}

/// `[verify]`: scheduled verification within a read budget.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyConfig {
    pub(super) schedule: String,
    pub(super) budget: String,
    pub(super) cycle: Option<String>,
}

/// `[notify]`: pings and a webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifyConfig {
    pub(super) ping_url: Option<String>,
    pub(super) webhook_url: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepositoryConfig {
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) password_credential: Option<String>,
    pub(super) password_command: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ObjectivesConfig {
    pub(super) rpo: Option<String>,
    pub(super) rto: Option<String>,
    /// SLO: share of scheduled backups that complete on time, e.g. "99%".
    pub(super) backups_on_time: Option<String>,
    /// SLO: every region is drilled (a passing drill) at least this often, e.g. "7d".
    pub(super) drill_every: Option<String>,
    /// The window the SLOs are measured over (default "30d").
    pub(super) slo_window: Option<String>,
}

// Destinations are the store's own `[[destinations]]` entries: `type = "local"` (`path`,
// optional `name`) or `type = "s3"` (the keys of `crate::store::s3::S3Config`).
pub(super) use crate::store::multi::{DestinationConfig, LocalConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobConfig {
    pub(super) name: String,
    pub(super) schedule: String,
    pub(super) source: SourceConfig,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    pub(super) hooks: Option<HooksConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HooksConfig {
    pub(super) pre: Option<String>,
    pub(super) post: Option<String>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum SourceConfig {
    Dir(DirConfig),
    Postgres(PostgresConfig),
    #[serde(alias = "mysql")]
    Mariadb(MariadbConfig),
    Btrfs(BtrfsConfig),
    Block(BlockConfig),
    Lvm(LvmConfig),
    Zfs(ZfsConfig),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirConfig {
    pub(super) paths: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PostgresConfig {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) database: String,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) password_credential: Option<String>,
    pub(super) password_command: Option<String>,
    pub(super) row_counts: Option<RowCounts>,
    pub(super) globals: Option<bool>,
    pub(super) compress: Option<u8>,
    pub(super) bin_dir: Option<PathBuf>,
    pub(super) format: Option<DumpFormat>,
    pub(super) jobs: Option<u32>,
    pub(super) spool_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MariadbConfig {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) socket: Option<PathBuf>,
    pub(super) user: Option<String>,
    pub(super) database: String,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) password_credential: Option<String>,
    pub(super) password_command: Option<String>,
    pub(super) row_counts: Option<RowCounts>,
    pub(super) bin_dir: Option<PathBuf>,
    pub(super) no_defaults: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BtrfsConfig {
    pub(super) subvolume: PathBuf,
    pub(super) snapshot_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockConfig {
    pub(super) path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LvmConfig {
    pub(super) volume_group: String,
    pub(super) logical_volume: String,
    pub(super) snapshot_size: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ZfsConfig {
    pub(super) dataset: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionConfig {
    pub(super) keep_last: Option<u32>,
    pub(super) keep_hourly: Option<u32>,
    pub(super) keep_daily: Option<u32>,
    pub(super) keep_weekly: Option<u32>,
    pub(super) keep_monthly: Option<u32>,
    pub(super) keep_yearly: Option<u32>,
    pub(super) keep_within: Option<String>,
    #[serde(default)]
    pub(super) keep_tags: Vec<String>,
    #[serde(default)]
    pub(super) prune: bool,
    pub(super) schedule: Option<String>,
    #[serde(default)]
    pub(super) append_only: bool,
    #[serde(default)]
    pub(super) allow_count_rules: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DrillConfig {
    pub(super) environment: String,
    pub(super) schedule: Option<String>,
    #[serde(default)]
    pub(super) jobs: Vec<String>,
    #[serde(default)]
    pub(super) restore_tests: Vec<PathBuf>,
    pub(super) postgres_version: Option<u32>,
    // scratch
    pub(super) server: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) password_credential: Option<String>,
    pub(super) password_command: Option<String>,
    // scratch and command
    pub(super) bin_dir: Option<PathBuf>,
    pub(super) orphan_expiry: Option<String>,
    // command
    pub(super) provision: Option<String>,
    pub(super) teardown: Option<String>,
    pub(super) timeout: Option<String>,
}
