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
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
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
