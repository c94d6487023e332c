//! Scheduling: which backups and drills are due now, given their cron expressions and when
//! each last ran; a lock so that overlapping `run-due` invocations (a slow run and the next
//! timer tick) never run the same work twice.
//!
//! Semantics (the systemd timer calls `lifeboat run-due` every few minutes):
//! - a task is due when a scheduled time falls in `(last run, now]`;
//! - missed runs (the machine was off, a run failed) are caught up by **one** run, not one per
//!   missed slot; the number missed is reported;
//! - a task that never ran is due at once (its first backup should not wait for the clock).
//!
//! Drills rotate over regions ([`pick_drill_region`]): a region never drilled or not drilled
//! within the interval goes first, the most overdue first; otherwise a due slot of the drill
//! schedule drills the region drilled least recently.
//!
//! This module knows nothing of plans or the catalog: callers pass tasks and last-run times.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::{Error, Result};

/// A scheduled piece of work, e.g. key `plan/job/backup`.
#[derive(Debug, Clone)]
pub struct Task {
    pub key: String,
    pub schedule: cron::Schedule,
}

/// A task that should run now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Due {
    pub key: String,
    /// The latest scheduled time that has passed (the slot this run serves).
    pub slot: Option<DateTime<Utc>>,
    /// Scheduled slots since the last run beyond the one this run serves.
    pub missed: u32,
}

/// Scheduled slots of `schedule` in `(after, until]`, counting at most `cap`.
fn slots_between(
    schedule: &cron::Schedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    cap: u32,
) -> (u32, Option<DateTime<Utc>>) {
    let mut n = 0;
    let mut last = None;
    for t in schedule.after(&after) {
        if t > until || n >= cap {
            break;
        }
        n += 1;
        last = Some(t);
    }
    (n, last)
}

/// The tasks due at `now`, given when each last ran (absent: never).
pub fn due(
    tasks: &[Task],
    last_runs: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Due> {
    let mut out = Vec::new();
    for t in tasks {
        match last_runs.get(&t.key) {
            None => out.push(Due {
                key: t.key.clone(),
                slot: None,
                missed: 0,
            }),
            Some(&last) => {
                let (n, slot) = slots_between(&t.schedule, last, now, 10_000);
                if n > 0 {
                    out.push(Due {
                        key: t.key.clone(),
                        slot,
                        missed: n - 1,
                    });
                }
            }
        }
    }
    out
}

/// The next time a task will be due after `now`.
pub fn next_slot(task: &Task, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    task.schedule.after(&now).next()
}

/// The region a drill should restore from now, and why ([`pick_drill_region`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillPick {
    pub region: String,
    /// The drill schedule's slot this serves (`None`: the region is overdue or never drilled).
    pub slot: Option<DateTime<Utc>>,
    pub missed: u32,
    pub reason: String,
}

/// Which region (if any) to drill at `now`: `regions` are (region, its last drill) in plan
/// order; `interval` is how often each region must be drilled. One region per call:
/// 1. a region never drilled (the first in plan order), else
/// 2. a region whose last drill is older than `interval` (the most overdue), else
/// 3. when a slot of `schedule` passed since the latest drill of any region, the region
///    drilled least recently.
pub fn pick_drill_region(
    schedule: &cron::Schedule,
    regions: &[(String, Option<DateTime<Utc>>)],
    interval: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Option<DrillPick> {
    if let Some((r, _)) = regions.iter().find(|(_, t)| t.is_none()) {
        return Some(DrillPick {
            region: r.clone(),
            slot: None,
            missed: 0,
            reason: format!("region {r} was never drilled"),
        });
    }
    let drilled: Vec<(&String, DateTime<Utc>)> = regions
        .iter()
        .filter_map(|(r, t)| t.map(|t| (r, t)))
        .collect();
    let (oldest_region, oldest) = drilled.iter().min_by_key(|(_, t)| *t).copied()?;
    if let Some(iv) = interval {
        let age = (now - oldest).to_std().unwrap_or_default();
        if age > iv {
            return Some(DrillPick {
                region: oldest_region.clone(),
                slot: None,
                missed: 0,
                reason: format!(
                    "region {oldest_region} is overdue: last drilled {} ago, interval {}",
                    crate::sys::human::duration(age.as_secs_f64()),
                    crate::sys::human::duration(iv.as_secs_f64())
                ),
            });
        }
    }
    let latest = drilled.iter().map(|(_, t)| *t).max()?;
    let (n, slot) = slots_between(schedule, latest, now, 10_000);
    (n > 0).then(|| DrillPick {
        region: oldest_region.clone(),
        slot,
        missed: n - 1,
        reason: format!(
            "slot {}{}; region {oldest_region} was drilled least recently",
            slot.map(|s| s.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
            if n > 1 {
                format!(", {} earlier slots missed", n - 1)
            } else {
                String::new()
            }
        ),
    })
}

/// Writes `bytes` to `path` so a reader sees the old file or the new one, never a part:
/// a temp file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".lifeboat-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temp file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", tmp.path(), e))?;
    // Readable by the collector (node_exporter runs as another user).
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path)
        .map_err(|e| Error::io("rename into", path, e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive, non-blocking lock on a file in the state directory (flock: released by the
/// kernel if the process dies, so a crash never leaves it stuck).
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    pub fn acquire(path: &Path) -> Result<RunLock> {
        use std::os::unix::io::AsRawFd;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        // A lock released a moment ago can still be held by a copy of its descriptor in a
        // child between fork and exec (any thread's spawn copies every descriptor): try for a
        // second before calling the lock taken. Another run-due holds it for much longer.
        let mut rc = -1;
        for attempt in 0..20 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // SAFETY: flock on a descriptor we own.
            rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
        }
        if rc != 0 {
            return Err(Error::Locked {
                location: path.display().to_string(),
                holder: "another `lifeboat run-due` is still running".into(),
            });
        }
        Ok(RunLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn task(key: &str, expr: &str) -> Task {
        Task {
            key: key.into(),
            schedule: cron::Schedule::from_str(expr).unwrap(),
        }
    }

    #[test]
    fn due_catches_up_missed_runs_once() {
        let tasks = vec![
            task("p/hourly/backup", "0 0 * * * *"),
            task("p/daily/drill", "0 30 3 * * *"),
        ];
        let now = at("2026-11-24T10:15:00Z");
        let mut last = HashMap::new();
        // never ran: due at once
        let d = due(&tasks, &last, now);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| d.slot.is_none()));
        // hourly ran at 09:00: the 10:00 slot is due, nothing missed
        last.insert("p/hourly/backup".to_string(), at("2026-11-24T09:00:05Z"));
        last.insert("p/daily/drill".to_string(), at("2026-11-24T03:30:10Z"));
        let d = due(&tasks, &last, now);
        assert_eq!(
            d,
            vec![Due {
                key: "p/hourly/backup".into(),
                slot: Some(at("2026-11-24T10:00:00Z")),
                missed: 0
            }]
        );
        // machine was off since 05:00: one catch-up run, five slots missed
        last.insert("p/hourly/backup".to_string(), at("2026-11-24T04:00:05Z"));
        let d = due(&tasks, &last, now);
        assert_eq!(d[0].missed, 5);
        // just ran: nothing due
        last.insert("p/hourly/backup".to_string(), now);
        assert!(due(&tasks, &last, now).is_empty());
        assert_eq!(next_slot(&tasks[0], now), Some(at("2026-11-24T11:00:00Z")));
    }

    /// A simulated month of daily drill slots over three regions with an interval of three
    /// days: every region is drilled within its interval, and the rotation is fair.
    #[test]
    fn drills_rotate_so_every_region_is_drilled_within_its_interval_over_a_month() {
        let sched = cron::Schedule::from_str("0 0 3 * * *").unwrap();
        let interval = std::time::Duration::from_secs(3 * 86_400);
        let mut regions: Vec<(String, Option<DateTime<Utc>>)> = ["eu", "us", "ap"]
            .iter()
            .map(|r| (r.to_string(), None))
            .collect();
        let mut drilled: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        let start = at("2026-11-01T00:00:00Z");
        // the timer ticks every 5 minutes for 30 days; a drill takes no time here
        let mut now = start;
        while now < start + chrono::Duration::days(30) {
            if let Some(p) = pick_drill_region(&sched, &regions, Some(interval), now) {
                drilled.entry(p.region.clone()).or_default().push(now);
                regions.iter_mut().find(|(r, _)| *r == p.region).unwrap().1 = Some(now);
            }
            now += chrono::Duration::minutes(5);
        }
        for (r, _) in &regions {
            let times = &drilled[r];
            assert!(times.len() >= 9, "{r}: {times:?}");
            for w in times.windows(2) {
                assert!(w[1] - w[0] <= chrono::Duration::days(3), "{r}: {w:?}");
            }
            let end = start + chrono::Duration::days(30);
            assert!(end - *times.last().unwrap() <= chrono::Duration::days(3));
        }
        // the first three ticks drill each region once (never drilled goes first)
        let firsts: Vec<_> = ["eu", "us", "ap"].iter().map(|r| drilled[*r][0]).collect();
        assert_eq!(
            firsts,
            vec![
                start,
                start + chrono::Duration::minutes(5),
                start + chrono::Duration::minutes(10)
            ]
        );
    }

    #[test]
    fn an_overdue_region_goes_before_the_schedule() {
        let sched = cron::Schedule::from_str("0 0 3 1 1 *").unwrap();
        let now = at("2026-11-24T10:00:00Z");
        let regions = vec![
            ("eu".to_string(), Some(at("2026-11-23T10:00:00Z"))),
            ("us".to_string(), Some(at("2026-11-10T10:00:00Z"))),
        ];
        let iv = Some(std::time::Duration::from_secs(7 * 86_400));
        let p = pick_drill_region(&sched, &regions, iv, now).unwrap();
        assert_eq!(p.region, "us");
        assert!(p.reason.contains("overdue"), "{}", p.reason);
        // within the interval and no slot passed: nothing to drill
        let fresh = vec![("eu".to_string(), Some(at("2026-11-23T10:00:00Z")))];
        assert_eq!(pick_drill_region(&sched, &fresh, iv, now), None);
    }

    #[test]
    fn write_atomic_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/m.prom");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn run_lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run-due.lock");
        let a = RunLock::acquire(&p).unwrap();
        assert!(matches!(RunLock::acquire(&p), Err(Error::Locked { .. })));
        drop(a);
        RunLock::acquire(&p).unwrap();
    }
}
