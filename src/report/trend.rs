//! The RTO trend: a Theil–Sen fit (the median of the slopes between every pair of points,
//! intercept the median of `y - slope·x`), robust to the odd slow drill, of a measured
//! duration against time or restored size, and the projected moment it crosses its target.
//! No peer tool does this; it turns "the restore got slower" into "the RTO target will be
//! missed around 14 March" while there is still time to act.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// A robust straight line `y = intercept + slope·x`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
    /// Points the fit is made of.
    pub points: usize,
}

impl Fit {
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    /// The `x` where the line reaches `y` going up (`None`: flat or falling).
    pub fn crossing(&self, y: f64) -> Option<f64> {
        (self.slope > 0.0).then(|| (y - self.intercept) / self.slope)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The Theil–Sen fit of the points; `None` with fewer than three points or no spread in x.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Fit> {
    if points.len() < 3 {
        return None;
    }
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dx = b.0 - a.0;
            if dx.abs() > f64::EPSILON {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    let slope = median(&mut slopes);
    let mut rest: Vec<f64> = points.iter().map(|(x, y)| y - slope * x).collect();
    Some(Fit {
        slope,
        intercept: median(&mut rest),
        points: points.len(),
    })
}

/// An RTO trend over time and the projected breach.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeTrend {
    /// Seconds of RTO gained per day.
    pub secs_per_day: f64,
    /// The fitted RTO now.
    pub fitted_now_secs: f64,
    pub target_secs: Option<f64>,
    /// When the fitted RTO reaches the target (`None`: never at this rate, or no target).
    pub breach: Option<DateTime<Utc>>,
    /// The fitted RTO is already above the target.
    pub breached: bool,
    /// The breach is projected within the warning horizon (see [`time_trend`]).
    pub warn: bool,
    pub points: usize,
}

/// Fits measured seconds against time and projects when they reach `target_secs`; `warn` is
/// set when that is within `horizon` of `now` (or already past).
pub fn time_trend(
    series: &[(DateTime<Utc>, f64)],
    target_secs: Option<f64>,
    now: DateTime<Utc>,
    horizon: Duration,
) -> Option<TimeTrend> {
    let t0 = series.first()?.0;
    let day = 86_400.0;
    let pts: Vec<(f64, f64)> = series
        .iter()
        .map(|(t, y)| ((*t - t0).num_milliseconds() as f64 / 1000.0 / day, *y))
        .collect();
    let fit = theil_sen(&pts)?;
    let x_now = (now - t0).num_milliseconds() as f64 / 1000.0 / day;
    let fitted_now = fit.at(x_now);
    let breached = target_secs.is_some_and(|t| fitted_now > t);
    let breach = target_secs.and_then(|t| fit.crossing(t)).and_then(|x| {
        let ms = (x * day * 1000.0).round();
        (ms.is_finite() && ms.abs() < 1e15).then(|| t0 + Duration::milliseconds(ms as i64))
    });
    let warn = breached || breach.is_some_and(|b| b <= now + horizon);
    Some(TimeTrend {
        secs_per_day: fit.slope,
        fitted_now_secs: fitted_now,
        target_secs,
        breach,
        breached,
        warn,
        points: fit.points,
    })
}

/// An RTO trend against restored size: seconds per GiB, and the size at which the target
/// is reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeTrend {
    pub secs_per_gib: f64,
    pub intercept_secs: f64,
    /// The restored size at which the fitted RTO reaches the target.
    pub breach_bytes: Option<u64>,
    pub points: usize,
}

pub fn size_trend(series: &[(u64, f64)], target_secs: Option<f64>) -> Option<SizeTrend> {
    let gib = (1u64 << 30) as f64;
    let pts: Vec<(f64, f64)> = series.iter().map(|(b, y)| (*b as f64 / gib, *y)).collect();
    let fit = theil_sen(&pts)?;
    Some(SizeTrend {
        secs_per_gib: fit.slope,
        intercept_secs: fit.intercept,
        breach_bytes: target_secs
            .and_then(|t| fit.crossing(t))
            .filter(|x| x.is_finite() && *x > 0.0)
            .map(|x| (x * gib) as u64),
        points: fit.points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    /// A deterministic noise source (xorshift), so the tests are exact.
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 10_000) as f64 / 10_000.0 - 0.5
    }

    #[test]
    fn linear_growth_gives_the_exact_breach_date() {
        // RTO 600 s growing 10 s a day; target 1800 s: crossed on day 120.
        let s: Vec<_> = (0..30)
            .map(|d| (start() + Duration::days(d), 600.0 + 10.0 * d as f64))
            .collect();
        let now = start() + Duration::days(29);
        let t = time_trend(&s, Some(1800.0), now, Duration::days(30)).unwrap();
        assert!((t.secs_per_day - 10.0).abs() < 1e-9);
        assert_eq!(t.breach, Some(start() + Duration::days(120)));
        assert!(!t.warn, "91 days away is beyond a 30-day horizon");
        let t = time_trend(&s, Some(1800.0), now, Duration::days(100)).unwrap();
        assert!(t.warn);
    }

    #[test]
    fn noise_moves_the_breach_by_little() {
        let mut seed = 42u64;
        let s: Vec<_> = (0..60)
            .map(|d| {
                (
                    start() + Duration::days(d),
                    600.0 + 10.0 * d as f64 + 40.0 * noise(&mut seed),
                )
            })
            .collect();
        let t = time_trend(
            &s,
            Some(1800.0),
            start() + Duration::days(59),
            Duration::days(30),
        )
        .unwrap();
        let off = (t.breach.unwrap() - (start() + Duration::days(120)))
            .num_hours()
            .abs();
        assert!(off <= 72, "breach off by {off} h");
    }

    #[test]
    fn outliers_do_not_pull_the_fit() {
        // Every fifth drill is 5x slower (a noisy neighbour): least squares would be pulled
        // far off; Theil–Sen stays on the line.
        let s: Vec<_> = (0..50)
            .map(|d| {
                let y = 600.0 + 10.0 * d as f64;
                (
                    start() + Duration::days(d),
                    if d % 5 == 0 { y * 5.0 } else { y },
                )
            })
            .collect();
        let t = time_trend(
            &s,
            Some(1800.0),
            start() + Duration::days(49),
            Duration::days(30),
        )
        .unwrap();
        assert!((t.secs_per_day - 10.0).abs() < 0.5, "{}", t.secs_per_day);
        let off = (t.breach.unwrap() - (start() + Duration::days(120)))
            .num_hours()
            .abs();
        assert!(off <= 5 * 24, "breach off by {off} h");
    }

    #[test]
    fn flat_or_falling_never_breaches_and_a_breach_in_the_past_warns() {
        let flat: Vec<_> = (0..10)
            .map(|d| (start() + Duration::days(d), 600.0))
            .collect();
        let t = time_trend(
            &flat,
            Some(1800.0),
            start() + Duration::days(9),
            Duration::days(30),
        )
        .unwrap();
        assert_eq!((t.breach, t.warn), (None, false));
        let over: Vec<_> = (0..10)
            .map(|d| (start() + Duration::days(d), 1000.0 + 100.0 * d as f64))
            .collect();
        let t = time_trend(
            &over,
            Some(1500.0),
            start() + Duration::days(9),
            Duration::days(1),
        )
        .unwrap();
        assert!(t.breached && t.warn);
        assert_eq!(t.breach, Some(start() + Duration::days(5)));
        assert!(time_trend(&flat[..2], Some(1.0), start(), Duration::days(1)).is_none());
    }

    #[test]
    fn size_trend_projects_the_breaching_size() {
        // 60 s per GiB plus 120 s setup; target 1800 s: reached at 28 GiB.
        let s: Vec<_> = (1..=10u64)
            .map(|g| (g << 30, 120.0 + 60.0 * g as f64))
            .collect();
        let t = size_trend(&s, Some(1800.0)).unwrap();
        assert!((t.secs_per_gib - 60.0).abs() < 1e-9);
        assert_eq!(t.breach_bytes, Some(28u64 << 30));
    }
}
