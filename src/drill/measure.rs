//! Measurement of a drill: each phase timed, RTO and RPO computed and judged against the
//! plan's objectives (DESIGN "RTO and RPO, precisely").
//!
//! - RTO = drill start → the moment the restored service passes its checks (provision +
//!   fetch/decrypt + load + checks). Teardown is timed but is not part of the RTO.
//! - RPO = drill start − the snapshot's consistency time.
//!
//! Time comes from an injected [`Clock`], so tests of RTO/RPO are exact.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sys::clock::Clock;

/// The phases of a drill, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Provision,
    Fetch,
    Load,
    Checks,
    Teardown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provision => "provision",
            Phase::Fetch => "fetch",
            Phase::Load => "load",
            Phase::Checks => "checks",
            Phase::Teardown => "teardown",
        }
    }
    /// Whether the phase counts toward the RTO.
    pub fn in_rto(self) -> bool {
        !matches!(self, Phase::Teardown)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub phase: Phase,
    pub started: DateTime<Utc>,
    pub secs: f64,
}

/// Verdict on one objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub measured_secs: f64,
    pub target_secs: Option<f64>,
    pub met: bool,
}

impl Objective {
    pub fn judge(measured: Duration, target: Option<Duration>) -> Self {
        Objective {
            measured_secs: measured.as_secs_f64(),
            target_secs: target.map(|t| t.as_secs_f64()),
            met: target.is_none_or(|t| measured <= t),
        }
    }
}

/// Times the phases of one drill.
pub struct Stopwatch {
    clock: Arc<dyn Clock>,
    pub start: DateTime<Utc>,
    pub phases: Vec<PhaseTiming>,
    current: Option<(Phase, DateTime<Utc>)>,
    checks_passed_at: Option<DateTime<Utc>>,
}

impl Stopwatch {
    pub fn start(clock: Arc<dyn Clock>) -> Self {
        let start = clock.now();
        Stopwatch {
            clock,
            start,
            phases: Vec::new(),
            current: None,
            checks_passed_at: None,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Ends the running phase (if any) and starts `phase`.
    pub fn begin(&mut self, phase: Phase) {
        self.end();
        self.current = Some((phase, self.clock.now()));
    }

    pub fn end(&mut self) {
        if let Some((phase, started)) = self.current.take() {
            let secs = (self.clock.now() - started)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6;
            self.phases.push(PhaseTiming {
                phase,
                started,
                secs,
            });
        }
    }

    /// Marks the moment the restored service passed its checks: the end of the RTO.
    pub fn checks_passed(&mut self) {
        self.checks_passed_at = Some(self.clock.now());
    }

    /// RTO: drill start until the checks passed; `None` when they never passed.
    pub fn rto(&self) -> Option<Duration> {
        self.checks_passed_at
            .map(|t| (t - self.start).to_std().unwrap_or_default())
    }

    /// RPO: drill start minus the snapshot's consistency time.
    pub fn rpo(&self, consistency_time: DateTime<Utc>) -> Duration {
        (self.start - consistency_time).to_std().unwrap_or_default()
    }

    pub fn secs(&self, phase: Phase) -> f64 {
        self.phases
            .iter()
            .filter(|p| p.phase == phase)
            .map(|p| p.secs)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::ManualClock;

    #[test]
    fn rto_and_rpo_are_exact_with_a_manual_clock() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(t0);
        let mut sw = Stopwatch::start(Arc::new(clock.clone()));
        sw.begin(Phase::Provision);
        clock.advance(chrono::Duration::seconds(3));
        sw.begin(Phase::Fetch);
        clock.advance(chrono::Duration::seconds(10));
        sw.begin(Phase::Load);
        clock.advance(chrono::Duration::seconds(20));
        sw.begin(Phase::Checks);
        clock.advance(chrono::Duration::seconds(2));
        sw.checks_passed();
        sw.begin(Phase::Teardown);
        clock.advance(chrono::Duration::seconds(5));
        sw.end();
        assert_eq!(sw.rto(), Some(Duration::from_secs(35)));
        assert_eq!(sw.secs(Phase::Load), 20.0);
        assert_eq!(sw.phases.len(), 5);
        let consistency = t0 - chrono::Duration::hours(2);
        assert_eq!(sw.rpo(consistency), Duration::from_secs(7200));
        let o = Objective::judge(sw.rto().unwrap(), Some(Duration::from_secs(30)));
        assert!(!o.met);
        assert!(
            Objective::judge(
                Duration::from_secs(7200),
                Some(Duration::from_secs(6 * 3600))
            )
            .met
        );
        assert!(
            !Objective::judge(
                Duration::from_secs(7 * 3600),
                Some(Duration::from_secs(6 * 3600))
            )
            .met
        );
        assert!(Objective::judge(Duration::from_secs(1), None).met);
    }
}
