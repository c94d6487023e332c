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
        let budget = match crate::sys::human::parse_size(&v.budget) {
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

#[cfg(test)]
mod tests {
    #[test]
    fn budgets_are_sizes() {
        assert_eq!(crate::sys::human::parse_size("2GiB"), Some(2 << 30));
        assert_eq!(crate::sys::human::parse_size("500MB"), Some(500_000_000));
        assert_eq!(crate::sys::human::parse_size("lots"), None);
        assert_eq!(crate::sys::human::parse_size("0"), None);
    }
}
