//! `[retention]`: how many snapshots to keep; a table that keeps nothing is an error.

use super::{Seg, Validator};
use crate::plan::model::RetentionSpec;
use crate::plan::raw::RetentionConfig;

impl Validator<'_> {
    /// `[retention]`.
    pub(super) fn retention(&mut self, r: RetentionConfig) -> RetentionSpec {
        let keep_within = r
            .keep_within
            .as_deref()
            .and_then(|s| self.duration(&[Seg::K("retention"), Seg::K("keep_within")], s));
        let spec = RetentionSpec {
            keep_last: r.keep_last,
            keep_hourly: r.keep_hourly,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_yearly: r.keep_yearly,
            keep_within,
            keep_tags: r.keep_tags,
            prune: false,
            schedule: None,
        };
        if spec == RetentionSpec::default() {
            self.issue(
                &[Seg::K("retention")],
                "keeps nothing",
                "set at least one of keep_last, keep_daily, …, keep_within, keep_tags, or remove [retention]",
            );
        }
        let schedule = r
            .schedule
            .as_deref()
            .and_then(|c| self.schedule(&[Seg::K("retention"), Seg::K("schedule")], c));
        RetentionSpec {
            prune: r.prune,
            schedule,
            ..spec
        }
    }
}
