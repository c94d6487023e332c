//! `[[jobs]]`: at least one job, valid and distinct names, cron schedules and
//! `[jobs.hooks]`; each `[jobs.source]` is checked in `sources`.

use super::{valid_name, Seg, Validator};
use crate::plan::model::JobSpec;
use crate::plan::raw::JobConfig;
use crate::source::hooks::HooksSpec;

impl Validator<'_> {
    /// `[[jobs]]`: a job whose schedule or source has problems is left out (the plan is
    /// rejected anyway).
    pub(super) fn jobs(&mut self, raw: Vec<JobConfig>) -> Vec<JobSpec> {
        let mut jobs: Vec<JobSpec> = Vec::new();
        if raw.is_empty() {
            self.issue(&[Seg::K("jobs")], "no jobs", "add a [[jobs]] table with name, schedule and a [jobs.source] (see plans/ for examples)");
        }
        for (i, j) in raw.into_iter().enumerate() {
            let at = |k: &'static str| [Seg::K("jobs"), Seg::I(i), Seg::K(k)];
            if !valid_name(&j.name) {
                self.issue(
                    &at("name"),
                    format!("{:?} is not a valid job name", j.name),
                    "use letters, digits, '-', '_' and '.'",
                );
            }
            if jobs.iter().any(|o| o.name == j.name) {
                self.issue(
                    &at("name"),
                    format!("job name {:?} is used twice", j.name),
                    "give every job its own name",
                );
            }
            let schedule = self.schedule(&at("schedule"), &j.schedule);
            let source = self.source(i, j.source);
            let hooks = match j.hooks {
                None => HooksSpec::default(),
                Some(h) => {
                    let timeout = match h.timeout.as_deref() {
                        Some(t) => self
                            .duration(
                                &[
                                    Seg::K("jobs"),
                                    Seg::I(i),
                                    Seg::K("hooks"),
                                    Seg::K("timeout"),
                                ],
                                t,
                            )
                            .unwrap_or_default(),
                        None => HooksSpec::default().timeout,
                    };
                    HooksSpec {
                        pre: h.pre,
                        post: h.post,
                        timeout,
                    }
                }
            };
            if let (Some(schedule), Some(source)) = (schedule, source) {
                jobs.push(JobSpec {
                    name: j.name,
                    schedule_expr: j.schedule,
                    schedule,
                    source,
                    tags: j.tags,
                    hooks,
                });
            }
        }
        jobs
    }
}
