//! Snapshot anomalies (RELIABILITY T16): snapshots that a writer who may add but not delete
//! — an append-only credential in the wrong hands, or a broken host — could have put into a
//! repository, found from the manifests alone. `verify` adds them to its findings and
//! `status` (with a repository or plan files) to its own; the metrics export their count
//! per kind (`lifeboat_snapshot_anomalies`), and `monitoring/lifeboat.rules.yml` alerts on it.
//!
//! The kinds, per group (a plan job; ad-hoc backups: host and paths), in manifest-time order:
//! - [`AnomalyKind::FutureDated`]: dated more than [`FUTURE_TOLERANCE`](crate::repo::retention::FUTURE_TOLERANCE) after the current
//!   time (any repository): the store's in `verify`, this host's in `status` and the metrics.
//!   `latest` passes over such snapshots ([`crate::repo::Repository::latest_of`]). Retention keeps such snapshots and counts them nowhere.
//! - [`AnomalyKind::UnexpectedHost`]: a plan job's snapshot written by a host that wrote none
//!   of that job's older snapshots (a migration raises it once, for its first snapshot).
//! - [`AnomalyKind::SizeCollapse`]: a snapshot that read less than [`COLLAPSE_RATIO`] of the
//!   median of the group's previous [`COLLAPSE_WINDOW`] snapshots, when that median is at
//!   least [`COLLAPSE_MIN_BYTES`] (a real shrink raises it until the smaller size is the
//!   median, at most three snapshots).
//!
//! Not a kind: the key slot that wrote a snapshot. Every key slot unwraps the same master
//! key and manifests are sealed with it, so the writer's slot is not knowable from the
//! manifest, and a field naming it would be a claim any holder of any slot can forge; old
//! versions would also refuse manifests with an unknown field. See `docs/format.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::SnapshotRow;
use crate::ids::SnapshotId;
use crate::repo::retention::When;
use crate::repo::snapshot::Snapshot;
use crate::repo::verify::{Finding, Severity};
use crate::{Error, Result};

/// A snapshot is a size collapse below this share of its group's recent median.
pub const COLLAPSE_RATIO: f64 = 0.1;
/// How many previous snapshots the median is taken over.
pub const COLLAPSE_WINDOW: usize = 5;
/// Groups whose recent median is smaller are not judged (small sources vary a lot).
pub const COLLAPSE_MIN_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    FutureDated,
    UnexpectedHost,
    SizeCollapse,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 3] = [
        AnomalyKind::FutureDated,
        AnomalyKind::UnexpectedHost,
        AnomalyKind::SizeCollapse,
    ];

    /// The metric label and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::FutureDated => "future_dated",
            AnomalyKind::UnexpectedHost => "unexpected_host",
            AnomalyKind::SizeCollapse => "size_collapse",
        }
    }
}

/// One anomalous snapshot and why.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub snapshot: SnapshotId,
    pub plan: Option<String>,
    pub job: Option<String>,
    pub host: String,
    pub time: DateTime<Utc>,
    /// For people: what was expected and what was found.
    pub detail: String,
}

impl Anomaly {
    /// As a `verify`/`status` finding: a warning naming the snapshot.
    pub fn finding(&self) -> Finding {
        let of = match (&self.plan, &self.job) {
            (Some(p), Some(j)) => format!(" of job {j} (plan {p})"),
            _ => String::new(),
        };
        Finding {
            severity: Severity::Warning,
            object: format!("snapshot {}", self.snapshot.short()),
            message: format!(
                "anomaly ({}){of}: {}; if this host did not write it, the repository's credentials may be misused (see docs/operations.md, \"Snapshot anomalies\")",
                self.kind.as_str(),
                self.detail
            ),
        }
    }
}

/// What [`detect`] needs of a snapshot: read from its manifest or from the catalog's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: SnapshotId,
    pub plan: Option<String>,
    pub job: Option<String>,
    pub host: String,
    pub paths: Vec<String>,
    pub time: DateTime<Utc>,
    pub bytes_processed: u64,
}

impl From<&(SnapshotId, Snapshot)> for Observed {
    fn from((id, s): &(SnapshotId, Snapshot)) -> Self {
        Observed {
            id: *id,
            plan: s.plan.clone(),
            job: s.job.clone(),
            host: s.host.clone(),
            paths: s.paths.clone(),
            time: s.time,
            bytes_processed: s.summary.bytes_processed,
        }
    }
}

impl From<&SnapshotRow> for Observed {
    /// The catalog stores a missing plan or job as `""`.
    fn from(r: &SnapshotRow) -> Self {
        let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Observed {
            id: r.snapshot_id,
            plan: some(&r.plan),
            job: some(&r.job),
            host: r.host.clone(),
            paths: r.paths.clone(),
            time: r.time,
            bytes_processed: r.bytes_processed,
        }
    }
}

/// Whose clock "now" is, as findings name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NowFrom {
    /// The store's ([`crate::repo::Repository::now`]: `verify`).
    Store,
    /// This host's (`status`, the metrics: no repository is opened).
    Host,
}

/// The anomalies among `snaps` (one repository's, in one region) at the current time `now`.
pub fn detect(snaps: &[Observed], now: DateTime<Utc>, from: NowFrom) -> Vec<Anomaly> {
    #[derive(Clone, PartialEq, Eq, Hash)]
    enum Key {
        Job(String, String),
        AdHoc(String, Vec<String>),
    }
    let when = When {
        now: Some(now),
        within_from_now: false,
    };
    let whose = match from {
        NowFrom::Store => "the store's",
        NowFrom::Host => "this host's",
    };
    let mut groups: HashMap<Key, Vec<&Observed>> = HashMap::new();
    for s in snaps {
        let k = match (&s.plan, &s.job) {
            (Some(p), Some(j)) => Key::Job(p.clone(), j.clone()),
            _ => {
                let mut paths = s.paths.clone();
                paths.sort();
                Key::AdHoc(s.host.clone(), paths)
            }
        };
        groups.entry(k).or_default().push(s);
    }
    let mut out = Vec::new();
    for (key, mut members) in groups {
        // Manifest time, never ids or names (T18); equal times by id.
        members.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        let mut hosts: Vec<&str> = Vec::new();
        for (i, s) in members.iter().enumerate() {
            let anomaly = |kind, detail: String| Anomaly {
                kind,
                snapshot: s.id,
                plan: s.plan.clone(),
                job: s.job.clone(),
                host: s.host.clone(),
                time: s.time,
                detail,
            };
            if when.is_future(&s.time) {
                out.push(anomaly(
                    AnomalyKind::FutureDated,
                    format!(
                        "dated {}, {} after {whose} current time ({})",
                        s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        crate::sys::human::duration((s.time - now).num_seconds() as f64),
                        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ));
            }
            if matches!(key, Key::Job(..)) {
                if !hosts.is_empty() && !hosts.contains(&s.host.as_str()) {
                    out.push(anomaly(
                        AnomalyKind::UnexpectedHost,
                        format!(
                            "written by host {:?}; the job's older snapshots are from {}",
                            s.host,
                            hosts
                                .iter()
                                .map(|h| format!("{h:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                if !hosts.contains(&s.host.as_str()) {
                    hosts.push(&s.host);
                }
            }
            let prev: Vec<u64> = members[i.saturating_sub(COLLAPSE_WINDOW)..i]
                .iter()
                .map(|m| m.bytes_processed)
                .collect();
            if let Some(median) = median(&prev).filter(|m| *m >= COLLAPSE_MIN_BYTES) {
                let size = s.bytes_processed;
                if (size as f64) < COLLAPSE_RATIO * median as f64 {
                    out.push(anomaly(
                        AnomalyKind::SizeCollapse,
                        format!(
                            "read {} where the previous {} snapshots read {} (median); below {}%",
                            indicatif::HumanBytes(size),
                            prev.len(),
                            indicatif::HumanBytes(median),
                            COLLAPSE_RATIO * 100.0
                        ),
                    ));
                }
            }
        }
    }
    out.sort_by_key(|a| (a.time, a.snapshot, a.kind));
    out
}

/// The upper median (`None` when empty).
fn median(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Per kind, how many of `anomalies` there are (every kind present, 0 when none).
pub fn counts(anomalies: &[Anomaly]) -> Vec<(AnomalyKind, usize)> {
    AnomalyKind::ALL
        .iter()
        .map(|k| (*k, anomalies.iter().filter(|a| a.kind == *k).count()))
        .collect()
}

/// The file, in the state directory (beside run-due's state), where each `verify` leaves
/// the anomaly counts it found in its region. The catalog records no findings of a
/// verification, and a snapshot written behind lifeboat's back is not in the catalog's rows
/// that `status` and the metrics judge; through this file the metrics still count what the
/// last verification of the region on this host found (a scheduled one included).
pub const VERIFIED_FILE: &str = "verify-anomalies.json";

/// What the last `verify` of one region found ([`VERIFIED_FILE`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    /// The plan verified (empty for a plain `--repo` location).
    pub plan: String,
    /// The region's catalog name.
    pub region: String,
    pub checked: DateTime<Utc>,
    /// Per kind, every kind present.
    pub counts: BTreeMap<AnomalyKind, u64>,
}

impl Verified {
    pub fn new(plan: &str, region: &str, checked: DateTime<Utc>, found: &[Anomaly]) -> Self {
        Verified {
            plan: plan.to_string(),
            region: region.to_string(),
            checked,
            counts: counts(found)
                .into_iter()
                .map(|(k, n)| (k, n as u64))
                .collect(),
        }
    }
}

/// The last verification of each region, from `dir`'s [`VERIFIED_FILE`] (none when there
/// is no file; a damaged one is an error naming it).
pub fn load_verified(dir: &Path) -> Result<Vec<Verified>> {
    let path = dir.join(VERIFIED_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::Other(format!(
                "{} is damaged ({e}); the next `lifeboat verify` of each region replaces it",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Other(format!("reading {}: {e}", path.display()))),
    }
}

/// Replaces the region's entry in `dir`'s [`VERIFIED_FILE`] with `v` (written whole, then
/// renamed into place).
pub fn record_verified(dir: &Path, v: Verified) -> Result<()> {
    let mut all = load_verified(dir).unwrap_or_default();
    all.retain(|x| !(x.plan == v.plan && x.region == v.region));
    all.push(v);
    all.sort_by(|a, b| (&a.plan, &a.region).cmp(&(&b.plan, &b.region)));
    let path = dir.join(VERIFIED_FILE);
    let io = |e: std::io::Error| Error::Other(format!("writing {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!("{VERIFIED_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all).expect("serializes")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::snapshot::Summary;

    fn snap(n: u8, job: &str, host: &str, time: DateTime<Utc>, bytes: u64) -> Observed {
        let mut b = [0u8; 32];
        b[0] = n;
        let s: Snapshot = serde_json::from_value(serde_json::json!({
            "time": time, "consistency_time": time, "host": host, "username": "u",
            "paths": ["/srv"], "tree": crate::ids::BlobId::from_bytes([1; 32]),
            "source_kind": "dir", "plan": "shop", "job": job,
            "summary": Summary { bytes_processed: bytes, ..Default::default() },
            "program_version": "t",
        }))
        .expect("snapshot");
        let id = SnapshotId::from_bytes(b);
        let observed = Observed::from(&(id, s.clone()));
        // The catalog's row of it is the same observation.
        let row =
            SnapshotRow::from_snapshot(crate::ids::RepoId::from_bytes([7; 32]), "local", id, &s);
        assert_eq!(Observed::from(&row), observed);
        observed
    }

    #[test]
    fn a_healthy_history_has_none_and_each_kind_is_named() {
        let now: DateTime<Utc> = "2026-12-05T12:00:00Z".parse().unwrap();
        let h = |n: i64| now - chrono::Duration::hours(n);
        // Healthy: one host, sizes that vary within ±50 %, a clock 4 min ahead (tolerated),
        // ids that sort opposite to time.
        let mut snaps: Vec<_> = (0..8u8)
            .map(|i| {
                snap(
                    200 - i,
                    "db",
                    "a",
                    h(8 - i as i64),
                    (20 + (i as u64 % 3) * 10) << 20,
                )
            })
            .collect();
        snaps.push(snap(
            1,
            "db",
            "a",
            now + chrono::Duration::minutes(4),
            25 << 20,
        ));
        // another job on another host, and a tiny job that shrinks (below the floor)
        snaps.push(snap(50, "files", "b", h(3), 40 << 20));
        snaps.push(snap(51, "tiny", "a", h(3), 900 << 10));
        snaps.push(snap(52, "tiny", "a", h(2), 1 << 10));
        let found = detect(&snaps, now, NowFrom::Store);
        assert!(found.is_empty(), "{found:?}");

        snaps.push(snap(
            90,
            "db",
            "mallory",
            h(1) + chrono::Duration::minutes(1),
            22 << 20,
        ));
        snaps.push(snap(91, "db", "a", h(1) + chrono::Duration::minutes(2), 0));
        snaps.push(snap(
            92,
            "db",
            "a",
            now + chrono::Duration::days(30),
            20 << 20,
        ));
        let found = detect(&snaps, now, NowFrom::Store);
        let kinds: Vec<(u8, AnomalyKind)> = found
            .iter()
            .map(|a| (a.snapshot.as_bytes()[0], a.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (90, AnomalyKind::UnexpectedHost),
                (91, AnomalyKind::SizeCollapse),
                (92, AnomalyKind::FutureDated)
            ]
        );
        let f = found[0].finding();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.message.contains("\"mallory\"") && f.message.contains("\"a\""),
            "{f:?}"
        );
        assert!(found[2]
            .finding()
            .message
            .contains("after the store's current time"));
        assert_eq!(
            counts(&found),
            vec![
                (AnomalyKind::FutureDated, 1),
                (AnomalyKind::UnexpectedHost, 1),
                (AnomalyKind::SizeCollapse, 1)
            ]
        );
    }
}
