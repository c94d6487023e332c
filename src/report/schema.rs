//! `dr-report.json` of one drill, schema `lifeboat.dr-report/1` (documented in
//! `docs/reports.md`): the evidence of a drill, signed and chained. New optional fields may be
//! added without changing the version; readers ignore fields they do not know.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::drill::DrillReport;
use crate::repo::snapshot::{Snapshot, SourceMeta};

/// The schema name and version every drill report carries.
pub const SCHEMA: &str = "lifeboat.dr-report/1";

/// One drill's report: what ran, on what, how long each phase took, what the checks found,
/// the measured RTO and RPO against the targets, the verdict, and its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillEvidence {
    pub schema: String,
    /// The drill's run id (`history`, `report incident`).
    pub report_id: String,
    pub plan: String,
    pub job: String,
    /// The region (catalog name) the snapshot was restored from.
    pub region: String,
    pub repository_id: String,
    pub host: String,
    /// `timer` (run by systemd, e.g. `run-due`) or `operator` (by hand).
    pub trigger: String,
    pub environment: String,
    pub snapshot: SnapshotEvidence,
    pub tool_versions: BTreeMap<String, String>,
    /// The tools that loaded the snapshot in the drill (`pg_restore`, `psql`, `mariadb`),
    /// each with its `--version` line. Since 2026-12 (absent in older reports).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restore_tools: BTreeMap<String, String>,
    /// The throwaway (or scratch) server's version as it reports it. Since 2026-12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_server_version: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub phases: Vec<PhaseEvidence>,
    pub checks: Vec<CheckEvidence>,
    pub rto: ObjectiveEvidence,
    pub rpo: ObjectiveEvidence,
    /// `passed`, `check_failed`, `objective_missed` or `infra_failed`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub chain: ChainLink,
    /// Absent while the report is being signed; present in every stored report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEvidence {
    pub id: String,
    pub time: DateTime<Utc>,
    pub consistency_time: DateTime<Utc>,
    /// The snapshot's root tree id: a keyed blake3 hash of its whole content.
    pub content_hash: String,
    /// Bytes the backup read (the restored size).
    pub size_bytes: u64,
    pub source_kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The tools that wrote the dump, as the snapshot recorded them (`pg_dump`,
    /// `pg_dumpall`, `mariadb-dump`), each with its `--version` line. Since 2026-12 (absent
    /// in older reports, and for snapshots taken before lifeboat recorded them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dump_tools: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseEvidence {
    pub phase: String,
    pub started: DateTime<Utc>,
    pub secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckEvidence {
    pub name: String,
    pub kind: String,
    /// `passed`, `failed`, `skipped` …
    pub status: String,
    pub detail: String,
    pub secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveEvidence {
    pub measured_secs: f64,
    pub target_secs: Option<f64>,
    pub met: bool,
}

/// The report's place in its plan's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainLink {
    /// 1 for a plan's first report, then one more for each.
    pub seq: u64,
    /// `blake3:<hex>` of the previous report of the same plan (its canonical form,
    /// signature included); `null` for the first.
    pub prev: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub algorithm: String,
    /// hex of the ed25519 public key.
    pub public_key: String,
    /// hex of the signature over the canonical form without this field.
    pub value: String,
}

/// Who started a drill: systemd sets `INVOCATION_ID` for every unit it runs (the timer's
/// `run-due`); `LIFEBOAT_TRIGGER` overrides.
pub fn trigger() -> String {
    if let Ok(t) = std::env::var("LIFEBOAT_TRIGGER") {
        if !t.is_empty() {
            return t;
        }
    }
    if std::env::var_os("INVOCATION_ID").is_some() {
        "timer".into()
    } else {
        "operator".into()
    }
}

impl DrillEvidence {
    /// The evidence of a finished drill, before it is chained and signed.
    pub fn from_drill(
        r: &DrillReport,
        snap: &Snapshot,
        repository_id: String,
        default_region: &str,
    ) -> DrillEvidence {
        let (server_version, mut tool_versions, dump_tools) = match &snap.source {
            SourceMeta::Database { meta, .. } => {
                let tools = meta
                    .other
                    .iter()
                    .filter(|(k, _)| k.contains("version"))
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect();
                (
                    meta.server_version.clone(),
                    tools,
                    meta.dump_tools.clone().unwrap_or_default(),
                )
            }
            _ => (None, BTreeMap::new(), BTreeMap::new()),
        };
        tool_versions.insert("lifeboat".into(), env!("CARGO_PKG_VERSION").into());
        tool_versions.insert("lifeboat_backup".into(), snap.program_version.clone());
        DrillEvidence {
            schema: SCHEMA.into(),
            report_id: r.id.clone(),
            plan: r.plan.clone().unwrap_or_default(),
            job: r.job.clone().unwrap_or_default(),
            region: r
                .region
                .clone()
                .unwrap_or_else(|| default_region.to_string()),
            repository_id,
            host: crate::sys::host::hostname(),
            trigger: trigger(),
            environment: r.environment.clone(),
            snapshot: SnapshotEvidence {
                id: r.snapshot_id.to_hex(),
                time: r.snapshot_time,
                consistency_time: r.consistency_time,
                content_hash: snap.tree.to_hex(),
                size_bytes: snap.summary.bytes_processed,
                source_kind: snap.source.kind().to_string(),
                server_version,
                dump_tools,
            },
            tool_versions,
            restore_tools: r.restore_tools.clone(),
            restore_server_version: r.restore_server_version.clone(),
            started: r.started,
            finished: r.finished,
            phases: r
                .phases
                .iter()
                .map(|p| PhaseEvidence {
                    phase: p.phase.as_str().into(),
                    started: p.started,
                    secs: p.secs,
                })
                .collect(),
            checks: r
                .checks
                .iter()
                .map(|c| CheckEvidence {
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    status: serde_json::to_value(c.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    detail: c.detail.clone(),
                    secs: c.secs,
                })
                .collect(),
            rto: ObjectiveEvidence {
                measured_secs: r.rto.measured_secs,
                target_secs: r.rto.target_secs,
                met: r.rto.met,
            },
            rpo: ObjectiveEvidence {
                measured_secs: r.rpo.measured_secs,
                target_secs: r.rpo.target_secs,
                met: r.rpo.met,
            },
            verdict: r.result.as_str().into(),
            failure: r.failure.and_then(|f| {
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
            }),
            error: r.error.clone(),
            chain: ChainLink { seq: 0, prev: None },
            signature: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == "passed"
    }

    /// Seconds of the phases that count toward the RTO, by phase name.
    pub fn phase_secs(&self, phase: &str) -> Option<f64> {
        self.phases
            .iter()
            .filter(|p| p.phase == phase)
            .map(|p| p.secs)
            .reduce(|a, b| a + b)
    }

    /// The file name of this report in a report directory: `<seq>-<report id>.json`.
    pub fn file_name(&self) -> String {
        format!("{:06}-{}.json", self.chain.seq, self.report_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report written before the version fields existed (2026-12) still parses, keeps
    /// its exact bytes when written back (so its signature and the chain's hashes hold),
    /// and new reports with the fields verify too.
    #[test]
    fn reports_without_the_version_fields_still_read_and_verify() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let t = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let old = serde_json::json!({
            "schema": SCHEMA, "report_id": "20261120T100000Z-abcdef", "plan": "shop",
            "job": "db", "region": "local", "repository_id": "00", "host": "h",
            "trigger": "operator", "environment": "ephemeral-postgres",
            "snapshot": {"id": "11", "time": t, "consistency_time": t, "content_hash": "22",
                         "size_bytes": 5, "source_kind": "postgres", "server_version": "15.4"},
            "tool_versions": {"lifeboat": "0.1.0"}, "started": t, "finished": t,
            "phases": [], "checks": [],
            "rto": {"measured_secs": 1.0, "target_secs": null, "met": true},
            "rpo": {"measured_secs": 1.0, "target_secs": null, "met": true},
            "verdict": "passed", "chain": {"seq": 1, "prev": null}
        });
        let mut ev: DrillEvidence = serde_json::from_value(old.clone()).unwrap();
        assert!(ev.snapshot.dump_tools.is_empty() && ev.restore_tools.is_empty());
        assert_eq!(ev.restore_server_version, None);
        assert_eq!(serde_json::to_value(&ev).unwrap(), old);
        super::super::chain::sign(&mut ev, &key);
        let v = serde_json::to_value(&ev).unwrap();
        assert!(super::super::chain::check_signature(&v).is_ok());

        ev.snapshot
            .dump_tools
            .insert("pg_dump".into(), "pg_dump (PostgreSQL) 15.20".into());
        ev.restore_tools
            .insert("pg_restore".into(), "pg_restore (PostgreSQL) 15.20".into());
        ev.restore_server_version = Some("15.20".into());
        super::super::chain::sign(&mut ev, &key);
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            v["snapshot"]["dump_tools"]["pg_dump"],
            "pg_dump (PostgreSQL) 15.20"
        );
        assert!(super::super::chain::check_signature(&v).is_ok());
        let back: DrillEvidence = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }
}
