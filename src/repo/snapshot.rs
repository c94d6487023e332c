//! Snapshot manifests: the commit point of a backup. Written last, after every pack and
//! index it depends on is durable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BlobId, SnapshotId};

/// A snapshot manifest. On disk the source is two fields, `source_kind` and `source_meta`
/// (format v1); in memory it is the typed [`SourceMeta`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "SnapshotFile", into = "SnapshotFile")]
pub struct Snapshot {
    /// When the backup started.
    pub time: DateTime<Utc>,
    /// When the data was consistent: for a directory the start of the walk, for a database
    /// dump the moment its snapshot was taken. RPO is measured from here.
    pub consistency_time: DateTime<Utc>,
    pub host: String,
    pub username: String,
    pub tags: Vec<String>,
    /// The source paths (or the dump's name) as given.
    pub paths: Vec<String>,
    /// Root tree: one entry per source.
    pub tree: BlobId,
    pub parent: Option<SnapshotId>,
    /// What kind of source produced this snapshot, and the facts its backup recorded.
    pub source: SourceMeta,
    pub plan: Option<String>,
    pub job: Option<String>,
    pub summary: Summary,
    pub program_version: String,
    /// The recovery-point set this snapshot was taken in (its set id), if any. Only a set
    /// manifest (`sets/<id>`) naming this snapshot makes it part of a recovery point.
    pub set: Option<String>,
}

/// The manifest as stored (`snapshots/<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
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
    /// The recovery-point set id (optional; absent for snapshots taken on their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
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

impl From<SnapshotFile> for Snapshot {
    fn from(f: SnapshotFile) -> Self {
        Snapshot {
            time: f.time,
            consistency_time: f.consistency_time,
            host: f.host,
            username: f.username,
            tags: f.tags,
            paths: f.paths,
            tree: f.tree,
            parent: f.parent,
            source: SourceMeta::from_parts(&f.source_kind, f.source_meta),
            plan: f.plan,
            job: f.job,
            summary: f.summary,
            program_version: f.program_version,
            set: f.set,
        }
    }
}

impl From<Snapshot> for SnapshotFile {
    fn from(s: Snapshot) -> Self {
        let (source_kind, source_meta) = s.source.into_parts();
        SnapshotFile {
            time: s.time,
            consistency_time: s.consistency_time,
            host: s.host,
            username: s.username,
            tags: s.tags,
            paths: s.paths,
            tree: s.tree,
            parent: s.parent,
            source_kind,
            source_meta,
            plan: s.plan,
            job: s.job,
            summary: s.summary,
            program_version: s.program_version,
            set: s.set,
        }
    }
}

/// The two database engines lifeboat dumps, loads and drills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    Postgres,
    Mariadb,
}

impl DbKind {
    /// The name used in plans, URLs (`postgres://`, `mariadb://`) and snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            DbKind::Postgres => "postgres",
            DbKind::Mariadb => "mariadb",
        }
    }

    /// `postgres`/`postgresql` and `mariadb`/`mysql`.
    pub fn parse(s: &str) -> Option<DbKind> {
        match s {
            "postgres" | "postgresql" => Some(DbKind::Postgres),
            "mariadb" | "mysql" => Some(DbKind::Mariadb),
            _ => None,
        }
    }
}

impl std::fmt::Display for DbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a snapshot holds and the facts its backup recorded, one variant per source kind.
/// Metadata of a kind this version does not know, or that does not parse, is kept as
/// [`SourceMeta::Unknown`] so every snapshot still loads (and is written back unchanged).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceMeta {
    /// A directory tree (no metadata).
    Dir,
    /// A database dump.
    Database { kind: DbKind, meta: DatabaseMeta },
    /// A block device or LVM volume stored as one sparse image file.
    Image { kind: String, meta: ImageMeta },
    /// A btrfs or ZFS snapshot walked as a tree; the facts are for people.
    Volume {
        kind: String,
        meta: serde_json::Map<String, serde_json::Value>,
    },
    Unknown {
        kind: String,
        meta: serde_json::Value,
    },
}

/// What a database backup recorded (the keys lifeboat reads; the rest is kept in `other`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// PostgreSQL: the source's role names (a drill's own server creates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// MariaDB: the accounts views, routines, triggers and events run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definers: Option<Vec<String>>,
    /// PostgreSQL: `globals.sql` (roles, tablespaces) when the backup dumped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_counts: Option<RowCounts>,
    /// The tools that wrote the dump, each with the first line of its `--version`
    /// (`pg_dump`, `pg_dumpall`, `mariadb-dump` / `mysqldump`). Since 2026-12; snapshots
    /// written before have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_tools: Option<std::collections::BTreeMap<String, String>>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl DatabaseMeta {
    /// Whether the backup wrote `globals.sql` into the snapshot.
    pub fn has_globals(&self) -> bool {
        self.globals.as_ref().is_some_and(|g| g.is_object())
    }

    /// The accounts a drill's own server must create before loading: PostgreSQL roles or
    /// MariaDB definers, `None` when the backup did not record them.
    pub fn accounts(&self, kind: DbKind) -> Option<&[String]> {
        match kind {
            DbKind::Postgres => self.roles.as_deref(),
            DbKind::Mariadb => self.definers.as_deref(),
        }
    }
}

/// Row counts taken at backup time (`tables`: name → count; absent with `row_counts = off`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowCounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// What an image backup recorded: the node of the image file in the snapshot's root tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    #[serde(default)]
    pub file: String,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl SourceMeta {
    /// Builds the typed metadata from the stored kind and facts.
    pub fn from_parts(kind: &str, meta: serde_json::Value) -> SourceMeta {
        use serde_json::Value;
        let unknown = |meta: Value| SourceMeta::Unknown {
            kind: kind.to_string(),
            meta,
        };
        match (kind, DbKind::parse(kind)) {
            ("dir", _) if meta.is_null() => SourceMeta::Dir,
            (_, Some(db)) if meta.is_object() => {
                match serde_json::from_value::<DatabaseMeta>(meta.clone()) {
                    Ok(m) => SourceMeta::Database { kind: db, meta: m },
                    Err(_) => unknown(meta),
                }
            }
            ("block" | "lvm", _) if meta.is_object() => {
                match serde_json::from_value::<ImageMeta>(meta.clone()) {
                    Ok(m) => SourceMeta::Image {
                        kind: kind.to_string(),
                        meta: m,
                    },
                    Err(_) => unknown(meta),
                }
            }
            ("btrfs" | "zfs", _) => match meta {
                Value::Object(m) => SourceMeta::Volume {
                    kind: kind.to_string(),
                    meta: m,
                },
                other => unknown(other),
            },
            _ => unknown(meta),
        }
    }

    /// The stored kind and facts.
    pub fn into_parts(self) -> (String, serde_json::Value) {
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.expect("source metadata serializes")
        };
        match self {
            SourceMeta::Dir => ("dir".into(), serde_json::Value::Null),
            SourceMeta::Database { kind, meta } => {
                (kind.as_str().into(), json(serde_json::to_value(meta)))
            }
            SourceMeta::Image { kind, meta } => (kind, json(serde_json::to_value(meta))),
            SourceMeta::Volume { kind, meta } => (kind, serde_json::Value::Object(meta)),
            SourceMeta::Unknown { kind, meta } => (kind, meta),
        }
    }

    /// `dir`, `postgres`, `mariadb`, `block`, `lvm`, `btrfs`, `zfs`, or an unknown kind.
    pub fn kind(&self) -> &str {
        match self {
            SourceMeta::Dir => "dir",
            SourceMeta::Database { kind, .. } => kind.as_str(),
            SourceMeta::Image { kind, .. }
            | SourceMeta::Volume { kind, .. }
            | SourceMeta::Unknown { kind, .. } => kind,
        }
    }

    /// The database engine and facts of a dump.
    pub fn database(&self) -> Option<(DbKind, &DatabaseMeta)> {
        match self {
            SourceMeta::Database { kind, meta } => Some((*kind, meta)),
            _ => None,
        }
    }

    /// The stored facts as JSON (for `--json` output).
    pub fn to_json(&self) -> serde_json::Value {
        self.clone().into_parts().1
    }
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
            && self.source.kind() == other.source.kind()
            && self.job == other.job
    }
}

#[cfg(test)]
mod dump_tools_tests {
    use super::*;

    #[test]
    fn database_metadata_with_and_without_dump_tools_reads() {
        let old = serde_json::json!({"database": "shop", "server_version": "15.4"});
        let SourceMeta::Database { meta, .. } = SourceMeta::from_parts("postgres", old.clone())
        else {
            panic!("a database snapshot")
        };
        assert_eq!(meta.dump_tools, None);
        // Written back unchanged.
        assert_eq!(
            SourceMeta::Database {
                kind: DbKind::Postgres,
                meta
            }
            .into_parts()
            .1,
            old
        );
        let new = serde_json::json!({"database": "shop",
            "dump_tools": {"mariadb-dump": "mariadb-dump  Ver 10.19"}});
        let SourceMeta::Database { meta, .. } = SourceMeta::from_parts("mariadb", new) else {
            panic!("a database snapshot")
        };
        assert_eq!(
            meta.dump_tools.unwrap()["mariadb-dump"],
            "mariadb-dump  Ver 10.19"
        );
        assert!(meta.other.is_empty());
    }
}
