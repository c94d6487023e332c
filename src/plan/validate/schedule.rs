//! `[schedule]`: how `run-due` treats the plan — how often each destination must be drilled,
//! how long one scheduled task may run, and whether a catalog that cannot be opened may be
//! replaced by run-due's own state file.

use super::{Seg, Validator};
use crate::plan::model::ScheduleSpec;
use crate::plan::raw::ScheduleConfig;

impl Validator<'_> {
    /// `[schedule]` (all keys optional).
    pub(super) fn schedule_section(&mut self, s: ScheduleConfig) -> ScheduleSpec {
        ScheduleSpec {
            drill_interval: s
                .drill_interval
                .as_deref()
                .and_then(|d| self.duration(&[Seg::K("schedule"), Seg::K("drill_interval")], d)),
            task_timeout: s
                .task_timeout
                .as_deref()
                .and_then(|d| self.duration(&[Seg::K("schedule"), Seg::K("task_timeout")], d)),
            local_fallback: s.local_fallback,
        }
    }
}
