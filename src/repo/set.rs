//! Recovery-point set manifests (`sets/<id>`): the commit point of a set. A set's members
//! are ordinary snapshots that carry the set id; the manifest, sealed like a snapshot
//! (AEAD, AAD bound to the repository and the `sets` kind), lists them with the set's one
//! consistency time. It is written only after every member snapshot committed, and only to
//! regions that hold every member: a set without a manifest is not a recovery point.
//! Format: docs/format.md ("Set manifests").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ObjectKind, Repository};
use crate::ids::{ObjectId, SnapshotId};
use crate::Result;

/// The set manifest format this version writes and reads.
pub const SET_FORMAT: u32 = 1;

/// A committed recovery-point set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetManifest {
    /// [`SET_FORMAT`]; a newer one is refused when read.
    pub version: u32,
    /// The set id every member snapshot carries (`set`), 32 hex characters.
    pub set_id: String,
    pub plan: String,
    /// The set's name in the plan (`[[sets]] name`).
    pub name: String,
    /// When the set's run started.
    pub time: DateTime<Utc>,
    /// The set's one consistency time: the moment its databases' snapshots were taken, before
    /// any member was read. RPO of the set is measured from here.
    pub consistency_time: DateTime<Utc>,
    pub host: String,
    pub members: Vec<SetMember>,
    pub program_version: String,
}

/// One member of a set: a job and the snapshot it committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    pub job: String,
    /// The source kind (`postgres`, `dir`, `btrfs`).
    pub kind: String,
    pub snapshot: SnapshotId,
    /// How the member was captured relative to the set's moment (see [`Capture`]).
    pub capture: Capture,
    /// The member snapshot's own consistency time.
    pub consistency_time: DateTime<Utc>,
}

/// How a member's data was fixed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capture {
    /// A database snapshot taken at the set's moment and held open while it was dumped
    /// (PostgreSQL: an exported snapshot, `pg_dump --snapshot`).
    DatabaseSnapshot,
    /// A read-only file-system snapshot taken at the set's moment (btrfs).
    FilesystemSnapshot,
    /// A plain read of a live tree, started after the set's moment: files written after it
    /// may be present, files changed in place during the read may be newer than the moment.
    PlainRead,
}

impl Capture {
    pub fn describe(self) -> &'static str {
        match self {
            Capture::DatabaseSnapshot => "database snapshot held open from the set's moment",
            Capture::FilesystemSnapshot => "read-only file-system snapshot at the set's moment",
            Capture::PlainRead => {
                "plain read of the live tree, started just after the set's moment (no file-system snapshot)"
            }
        }
    }
}

/// A new random set id.
pub fn new_set_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Repository {
    /// Every set manifest, oldest first (by consistency time). A manifest of a newer format
    /// is an error naming it.
    pub async fn list_sets(&self) -> Result<Vec<(ObjectId, SetManifest)>> {
        let mut out = Vec::new();
        for id in self.list_ids(ObjectKind::Set).await? {
            let m: SetManifest = self.load_json(ObjectKind::Set, &id).await?;
            if m.version > SET_FORMAT {
                return Err(crate::Error::Other(format!(
                    "set manifest {id} has format {} but this lifeboat reads format {SET_FORMAT}; upgrade lifeboat",
                    m.version
                )));
            }
            out.push((id, m));
        }
        out.sort_by(|a, b| {
            a.1.consistency_time
                .cmp(&b.1.consistency_time)
                .then(a.0.cmp(&b.0))
        });
        Ok(out)
    }
}
