//! Where "now" comes from. RTO, RPO, ages, coverage cycles and schedules are computed against
//! an injected [`Clock`], so tests move time by hand and get exact figures. Also the calling
//! thread's CPU clock ([`thread_cpu_secs`]), for the benchmarks' floors.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests, replaying history). Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(at)))
    }
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().expect("clock lock");
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// The environment variable that sets the time Object Lock dates are computed from
/// ([`lock_now`]): an RFC 3339 instant. For tests and lock drills against a server whose own
/// clock is moved the same way (moto's, see `tests/it/support/moto.rs`); never set it in
/// production, where a real S3 judges retention by its own clock. While it is set it also
/// stands for the store's time when a lock measures the store's clock (`repo::clock`).
pub const LOCK_CLOCK_VAR: &str = "LIFEBOAT_LOCK_CLOCK";

/// "Now" for Object Lock: the retain-until dates lifeboat asks for and judges. The wall clock
/// unless [`LOCK_CLOCK_VAR`] names another instant (a bad value is ignored, with a warning).
pub fn lock_now() -> DateTime<Utc> {
    match std::env::var(LOCK_CLOCK_VAR) {
        Ok(v) if !v.trim().is_empty() => match DateTime::parse_from_rfc3339(v.trim()) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                tracing::warn!(value = %v, error = %e, "{LOCK_CLOCK_VAR} is not an RFC 3339 time; using the wall clock");
                Utc::now()
            }
        },
        _ => Utc::now(),
    }
}

/// CPU time (user + system) the calling thread has used: what a benchmark's pass cost,
/// however much other processes delayed it.
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
