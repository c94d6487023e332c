//! Store time (T23). Leases, prune's grace period and the age of unfinished uploads are
//! compared across hosts, so they must not depend on each host's own clock: a host whose
//! clock runs ten minutes ahead would take a live lock for expired and break it.
//!
//! A store with a clock of its own (S3: `Last-Modified`) tells the time of every write. When
//! lifeboat takes a lock it writes the lock file, asks the store when that write happened and
//! keeps the difference to its own clock (the midpoint of the request, so the error is at
//! most half the request's round trip plus the one-second resolution of `Last-Modified`).
//! From then on [`Repository::now`] is this host's clock moved by that offset: lock expiries
//! written and judged, grace periods and upload ages are all in store time. Offsets within
//! [`NOISE`] are taken as zero. A store without a clock of its own (a local directory) shares
//! this host's clock: the offset stays zero.
//!
//! `prune` refuses to run when the offset is over [`PRUNE_MAX_SKEW`] (as kopia's maintenance
//! does): a clock that far off is broken, and deleting is the one thing not to do with it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Repository;
use crate::{Error, Result};

/// Offsets up to this are measurement noise (`Last-Modified` has whole seconds).
pub const NOISE: Duration = Duration::from_secs(2);
/// The most skew `prune` accepts.
pub const PRUNE_MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The measured offset of a store's clock from this host's.
#[derive(Debug, Default)]
pub struct StoreClock {
    offset_ms: AtomicI64,
    measured: AtomicBool,
}

impl StoreClock {
    /// Store time minus this host's time, in milliseconds (0 until measured).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Whether a write has been timed against the store's clock.
    pub fn measured(&self) -> bool {
        self.measured.load(Ordering::SeqCst)
    }

    /// Records that the store has no clock of its own: its time is this host's.
    pub fn same_clock(&self) {
        self.offset_ms.store(0, Ordering::SeqCst);
        self.measured.store(true, Ordering::SeqCst);
    }

    /// Records a write the store dated `stored` that this host sent at `sent` and saw
    /// answered at `answered`; returns the offset kept (ms).
    pub fn observe(
        &self,
        sent: DateTime<Utc>,
        answered: DateTime<Utc>,
        stored: DateTime<Utc>,
    ) -> i64 {
        let mid = sent + (answered - sent) / 2;
        let raw = (stored - mid).num_milliseconds();
        let kept = if raw.unsigned_abs() <= NOISE.as_millis() as u64 {
            0
        } else {
            raw
        };
        self.offset_ms.store(kept, Ordering::SeqCst);
        self.measured.store(true, Ordering::SeqCst);
        kept
    }
}

/// `ms` as "3 min 20 s ahead" / "behind".
pub fn describe_offset(ms: i64) -> String {
    let d = Duration::from_secs(ms.unsigned_abs() / 1000);
    format!(
        "{} {}",
        humantime::format_duration(d),
        if ms >= 0 { "ahead of" } else { "behind" }
    )
}

impl Repository {
    /// "Now" in the store's time: this host's clock moved by the offset a lock measured
    /// (unmoved before any lock, and on stores without a clock of their own).
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.clock.offset_ms())
    }

    /// The clock state shared by clones of this repository.
    pub fn store_clock(&self) -> &StoreClock {
        &self.clock
    }

    /// Times the write of `key` (made between `sent` and `answered`) against the store's
    /// clock, when the store has one. A failed question is not an error: the offset stays
    /// as it was, and the failure is logged.
    pub(crate) async fn time_write(&self, key: &str, sent: DateTime<Utc>, answered: DateTime<Utc>) {
        // `LIFEBOAT_LOCK_CLOCK` (tests against a server whose clock is moved the same way,
        // see `sys::clock::lock_now`) says what time the store keeps: measure from it. In
        // production it is unset and the shift is zero.
        let shift = crate::sys::clock::lock_now() - Utc::now();
        let shift = if shift.num_seconds().abs() < 1 {
            chrono::Duration::zero()
        } else {
            shift
        };
        match self.store.modified(key).await {
            Ok(Some(stored)) => {
                let kept = self.clock.observe(sent + shift, answered + shift, stored);
                if kept != 0 {
                    tracing::warn!(
                        store = %self.location(),
                        "the store's clock is {} this host's; leases and grace periods use the store's time (check this host's NTP: timedatectl)",
                        describe_offset(kept)
                    );
                }
            }
            // No clock of its own (a local directory): this host's time is the store's.
            Ok(None) => self.clock.same_clock(),
            Err(e) => {
                tracing::debug!(key, error = %e, "could not read the time of a write from the store")
            }
        }
    }

    /// Refuses (exit 1) when the store's clock is over [`PRUNE_MAX_SKEW`] away from this
    /// host's: `what` deletes data, and a clock that far off is broken.
    pub fn refuse_skewed_clock(&self, what: &str) -> Result<()> {
        let off = self.clock.offset_ms();
        if off.unsigned_abs() > PRUNE_MAX_SKEW.as_millis() as u64 {
            return Err(Error::Other(format!(
                "{what} refused: this host's clock is {} the clock of {} (more than {} apart, judged from the time the store gave the lock file just written); deleting with a clock that far off could remove what other hosts still use — fix the clock (timedatectl; chronyc tracking) and run it again",
                describe_offset(-off),
                self.location(),
                humantime::format_duration(PRUNE_MAX_SKEW)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn offsets_are_measured_from_the_request_midpoint_and_noise_is_zero() {
        let c = StoreClock::default();
        assert!(!c.measured());
        // Sent 12:00:00.000, answered 12:00:00.400: midpoint .200; store says 12:10:00.
        let kept = c.observe(
            at("2026-12-05T12:00:00Z"),
            at("2026-12-05T12:00:00.400Z"),
            at("2026-12-05T12:10:00Z"),
        );
        assert_eq!(kept, 600_000 - 200);
        assert!(c.measured());
        assert_eq!(c.offset_ms(), kept);
        // Last-Modified in whole seconds: a store 1.5 s off is noise.
        let kept = c.observe(
            at("2026-12-05T12:00:00Z"),
            at("2026-12-05T12:00:00.200Z"),
            at("2026-12-05T11:59:58.600Z"),
        );
        assert_eq!(kept, 0);
        // Behind by an hour.
        let kept = c.observe(
            at("2026-12-05T12:00:00Z"),
            at("2026-12-05T12:00:00Z"),
            at("2026-12-05T11:00:00Z"),
        );
        assert_eq!(kept, -3_600_000);
        assert_eq!(describe_offset(kept), "1h behind");
        assert_eq!(describe_offset(90_000), "1m 30s ahead of");
    }
}
