//! Human and JSON output helpers.

use serde::Serialize;

pub use crate::sys::human::{bytes, duration};

pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("output serializes")
    );
}

pub fn mode_string(kind: crate::repo::tree::NodeKind, mode: u32) -> String {
    use crate::repo::tree::NodeKind;
    let t = match kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Snapshots as `--json` prints them: the manifest plus `id` and `short_id`.
pub fn snapshots_json<'a>(
    snaps: impl Iterator<
        Item = (
            &'a crate::ids::SnapshotId,
            &'a crate::repo::snapshot::Snapshot,
        ),
    >,
) -> Vec<serde_json::Value> {
    snaps
        .map(|(id, s)| {
            let mut v = serde_json::to_value(s).expect("snapshot serializes");
            v["id"] = serde_json::json!(id);
            v["short_id"] = serde_json::json!(id.short());
            v
        })
        .collect()
}

/// Prints the events of a running use case: warnings always (stderr), progress lines only
/// in human mode.
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
}

impl Printer {
    fn human(&self) -> bool {
        !self.json && !self.quiet
    }
}

impl crate::ops::Observer for Printer {
    fn event(&self, e: crate::ops::Event) {
        use crate::ops::Event;
        match e {
            Event::Warning { message, hint } => {
                eprintln!("warning: {message}");
                if let Some(h) = hint {
                    eprintln!("hint: {h}");
                }
            }
            Event::CatalogNotRecorded { what, warnings } => {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                if !self.quiet {
                    eprintln!("warning: {what}");
                }
            }
            Event::CaughtUp(r) => {
                if self.human() {
                    println!(
                        "region {:<12} caught up: copied {} objects ({}), {} snapshots",
                        r.region,
                        r.objects_copied,
                        bytes(r.bytes_copied),
                        r.snapshots_copied
                    );
                }
                for e in &r.errors {
                    eprintln!("warning: region {}: catching up: {e}", r.region);
                }
            }
            Event::DrillStarting {
                job,
                snapshot,
                consistency_time,
            } => {
                if self.human() {
                    eprintln!(
                        "drilling job {job} (snapshot {}, consistent at {})…",
                        snapshot.short(),
                        consistency_time.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
            }
            Event::OrphanRemoved(d) => eprintln!(
                "warning: removed a throwaway environment left by a dead process: {}",
                d.display()
            ),
            Event::JobBackedUp(o) => match &o.result {
                Ok(r) => {
                    if self.human() {
                        let s = &r.snapshot.summary;
                        println!(
                            "job {}: snapshot {} saved ({} processed, {} new, consistent at {}) in {}",
                            o.job,
                            r.snapshot_id.short(),
                            bytes(s.bytes_processed),
                            bytes(s.bytes_added),
                            r.snapshot
                                .consistency_time
                                .format("%Y-%m-%d %H:%M:%S%.3f UTC"),
                            duration(s.duration_secs)
                        );
                    }
                }
                Err(f) => {
                    eprintln!("error: job {}: {}", o.job, f.message);
                    if let Some(h) = &f.hint {
                        eprintln!("hint: {h}");
                    }
                }
            },
            Event::SetBackedUp(o) => match (&o.manifest, &o.failure) {
                (Some(id), _) => {
                    if self.human() {
                        let captures = o
                            .captures
                            .iter()
                            .map(|(j, c)| format!("{j}: {}", c.describe()))
                            .collect::<Vec<_>>()
                            .join("; ");
                        println!(
                            "set {}: recovery point {} committed (set id {}, consistent at {}); {}",
                            o.set,
                            id.short(),
                            o.set_id,
                            o.consistency_time
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
                                .unwrap_or_default(),
                            captures
                        );
                    }
                }
                (None, f) => {
                    eprintln!(
                        "error: {}",
                        f.as_ref()
                            .map(|f| f.message.clone())
                            .unwrap_or_else(|| format!("set {}: no recovery point", o.set))
                    );
                }
            },
            Event::DrillFinished(r) => {
                if self.human() {
                    print_drill_report(&r);
                }
            }
            Event::TaskDue(t) => {
                if self.human() {
                    // One line per task: what runs, on what, and why.
                    use crate::ops::run_due::TaskKind;
                    let what = match &t.kind {
                        TaskKind::Backup { job } => format!("backup {}/{job}", t.plan),
                        TaskKind::Drill { region } => {
                            format!("drill {} from region {region}", t.plan)
                        }
                        TaskKind::Verify { region } => format!("verify {} region {region}", t.plan),
                        TaskKind::Retention { job: Some(job) } => {
                            format!("retention {}/{job}", t.plan)
                        }
                        TaskKind::Retention { job: None } => format!("retention {}", t.plan),
                    };
                    println!(
                        "due: {what} ({}){}",
                        t.reason,
                        if t.dry_run { " [dry run]" } else { "" }
                    );
                }
            }
            Event::TaskFailed { task, error } => eprintln!("error: {task}: {error}"),
            Event::RegionsWritten(r) => print_regions(self.json, self.quiet, &r),
        }
    }
}

fn objective_line(
    what: &str,
    o: &crate::drill::measure::Objective,
    measured_is_final: bool,
) -> String {
    let target = o
        .target_secs
        .map(|t| format!("target {}", duration(t)))
        .unwrap_or_else(|| "no target in the plan".into());
    let verdict = if !measured_is_final {
        "not reached (the checks never passed)"
    } else if o.met {
        "met"
    } else {
        "MISSED"
    };
    format!(
        "  {what}  {:<10} {target:<22} {verdict}",
        duration(o.measured_secs)
    )
}

/// A drill's report in human form: phases, RTO and RPO against their targets, the checks,
/// and the verdict with its exit code.
pub fn print_drill_report(r: &crate::drill::DrillReport) {
    use crate::drill::checks::CheckStatus;
    use crate::drill::DrillResult;
    use crate::error::ExitCode;
    println!(
        "drill {}: plan {} job {} region {}, snapshot {} (consistent at {}), environment {}",
        r.id,
        r.plan.as_deref().unwrap_or("-"),
        r.job.as_deref().unwrap_or("-"),
        r.region.as_deref().unwrap_or("-"),
        r.snapshot_id.short(),
        r.consistency_time.format("%Y-%m-%d %H:%M:%S UTC"),
        r.environment
    );
    if let Some(set) = &r.set {
        println!(
            "  recovery-point set {} (set id {}, manifest {}, one consistency time {}): {}",
            set.name,
            set.set_id,
            &set.manifest[..set.manifest.len().min(8)],
            set.consistency_time.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            set.members
                .iter()
                .map(|m| format!("{} ({} {})", m.job, m.kind, m.snapshot_id.short()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for ph in &r.phases {
        println!("  {:<10} {}", ph.phase.as_str(), duration(ph.secs));
    }
    let passed = r.error.is_none() && r.checks.iter().all(|c| c.status == CheckStatus::Passed);
    println!("{}", objective_line("RTO", &r.rto, passed));
    println!("{}", objective_line("RPO", &r.rpo, true));
    for c in &r.checks {
        let status = match c.status {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "FAILED",
        };
        println!("  check {:<28} {status:<7} {}", c.name, c.detail);
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    if let Some(k) = &r.kept {
        println!("  kept: {k}");
    }
    if let Some(p) = &r.damaged_pack {
        println!("  damaged pack: {p} (marked damaged in the verification ledger)");
    }
    let verdict = match r.result {
        DrillResult::Passed => "passed: the backup restores and its checks pass within the objectives",
        DrillResult::CheckFailed => "FAILED: the restored data did not pass its checks (exit 16)",
        DrillResult::ObjectiveMissed => "OBJECTIVE MISSED: the restore works, but RTO or RPO exceeded its target (exit 17)",
        DrillResult::Damaged => "DAMAGED BACKUP: the snapshot failed its integrity check while being restored (see the error above); it does not restore. Run `lifeboat verify --read-data` to list every damaged object, and restore from another region or an older snapshot (exit 13)",
        DrillResult::InfraFailed if r.exit_code() == ExitCode::NoSpace => "INFRASTRUCTURE FAILURE: the restore target ran out of space; give the drill environment more room (exit 15). The backup is neither proven good nor bad",
        DrillResult::InfraFailed => "INFRASTRUCTURE FAILURE: the drill could not finish; the backup is neither proven good nor bad (exit 1)",
    };
    println!("  result: {verdict}");
}

/// Prints the per-region lines of a multi-region write (human form) and warnings for the
/// regions that did not complete.
pub fn print_regions(json: bool, quiet: bool, results: &[crate::store::multi::RegionResult]) {
    use crate::store::multi::RegionStatus;
    if !json && !quiet {
        for r in results {
            let status = match r.status {
                RegionStatus::Complete => "complete",
                RegionStatus::Failed => "FAILED",
                RegionStatus::Lagging => "LAGGING",
            };
            let retries = r
                .retries
                .map(|c| format!(", {} retries", c.retries))
                .unwrap_or_default();
            println!(
                "region {:<12} {:<9} {} objects, {} written{retries}",
                r.region,
                status,
                r.objects_written,
                bytes(r.bytes_written)
            );
        }
    }
    for r in results
        .iter()
        .filter(|r| r.status != RegionStatus::Complete)
    {
        eprintln!(
            "warning: region {} ({}): {}",
            r.region,
            r.location,
            r.error.as_deref().unwrap_or("did not complete")
        );
        if let Some(h) = &r.hint {
            eprintln!("hint: {h}");
        }
    }
}
