//! Snapshot manifests: the commit point of a backup. Written last, after every pack and
//! index it depends on is durable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BlobId, SnapshotId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// When the backup started.
    pub time: DateTime<Utc>,
    /// When the data was consistent: for a directory the start of the walk, for a database
    /// dump the moment its snapshot was taken. RPO is measured from here.
    pub consistency_time: DateTime<Utc>,
    pub host: String,
    pub username: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The source paths (or the dump's name) as given.
    pub paths: Vec<String>,
    /// Root tree: one entry per source.
    pub tree: BlobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// What kind of source produced this snapshot (`dir`, later `postgres`, `mariadb`, …).
    pub source_kind: String,
    /// Source-specific facts (server version, LSN, row counts, …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub source_meta: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub summary: Summary,
    pub program_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub bytes_processed: u64,
    pub blobs_added: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Bytes actually stored (compressed, encrypted, packed).
    pub bytes_stored: u64,
    pub packs_added: u64,
    pub warnings: u64,
    pub duration_secs: f64,
}

impl Snapshot {
    /// Snapshots of the same source set from the same host form a lineage (parent lookup).
    pub fn same_lineage(&self, other: &Snapshot) -> bool {
        let mut a = self.paths.clone();
        let mut b = other.paths.clone();
        a.sort();
        b.sort();
        self.host == other.host
            && a == b
            && self.source_kind == other.source_kind
            && self.job == other.job
    }
}
