//! `[verify]`: scheduled verification — a cron `schedule`, a read `budget` per region and
//! run (a size such as "2GiB"), and the `cycle` within which every pack of every region must
//! have been read (default 30 days).

use std::time::Duration;

use super::{Seg, Validator};
use crate::plan::model::VerifySpec;
use crate::plan::raw::VerifyConfig;

impl Validator<'_> {
    /// `[verify]`; `None` when a key is invalid (the issue is recorded).
    pub(super) fn verify(&mut self, v: VerifyConfig) -> Option<VerifySpec> {
        let schedule = self.schedule(&[Seg::K("verify"), Seg::K("schedule")], &v.schedule);
        let budget = match parse_size(&v.budget) {
            Some(b) => Some(b),
            None => {
                self.issue(
                    &[Seg::K("verify"), Seg::K("budget")],
                    format!("{:?} is not a size", v.budget),
                    "write a size such as \"2GiB\", \"500MB\" or \"1.5G\"",
                );
                None
            }
        };
        let cycle = match v.cycle.as_deref() {
            Some(c) => self.duration(&[Seg::K("verify"), Seg::K("cycle")], c)?,
            None => Duration::from_secs(30 * 86_400),
        };
        Some(VerifySpec {
            schedule: schedule?,
            budget_bytes: budget?,
            cycle,
        })
    }
}

/// A size with an optional unit: `2GiB`, `500MB`, `1.5G` (binary), `4096`.
fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v >= 1.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn budgets_are_sizes() {
        assert_eq!(super::parse_size("2GiB"), Some(2 << 30));
        assert_eq!(super::parse_size("500MB"), Some(500_000_000));
        assert_eq!(super::parse_size("lots"), None);
        assert_eq!(super::parse_size("0"), None);
    }
}
