//! `[retention]`: how many snapshots to keep; a table that keeps nothing is an error, and so
//! is an append-only one without `keep_within` or with count rules it did not allow.

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
            append_only: false,
            allow_count_rules: false,
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
        if r.append_only {
            if spec.keep_within.is_none() {
                self.issue(
                    &[Seg::K("retention"), Seg::K("append_only")],
                    "an append-only repository needs keep_within (counted from the store's current time)",
                    "add keep_within = \"30d\" (how long every snapshot is kept)",
                );
            }
            let counts = spec.count_rules();
            if !counts.is_empty() && !r.allow_count_rules {
                self.issue(
                    &[Seg::K("retention"), Seg::K("append_only")],
                    format!(
                        "count rules ({}) over an append-only repository: whoever can add snapshots can fill their counts with forgeries and push the real ones out",
                        counts.join(", ")
                    ),
                    "use keep_within only, or set allow_count_rules = true to accept that risk",
                );
            }
        } else if r.allow_count_rules {
            self.issue(
                &[Seg::K("retention"), Seg::K("allow_count_rules")],
                "only means something with append_only = true",
                "remove it, or set append_only = true",
            );
        }
        RetentionSpec {
            prune: r.prune,
            schedule,
            append_only: r.append_only,
            allow_count_rules: r.allow_count_rules,
            ..spec
        }
    }
}
