//! `[[sets]]`: recovery-point sets. Valid, distinct names (not a job's); at least two member
//! jobs, each defined, none in two sets; kinds the set can start together (PostgreSQL,
//! MariaDB, directories, btrfs subvolumes); one schedule shared by every member (a set is backed up
//! as one run); several databases (of one engine or both) only where the drill starts
//! throwaway servers of lifeboat's own — one per engine, each member loaded into its
//! engine's; restore-test paths resolved.

use super::{valid_name, Seg, Validator};
use crate::plan::model::{EnvironmentKind, JobSpec, SetSpec};
use crate::plan::raw::SetConfig;
use crate::plan::SourceSpec;

impl Validator<'_> {
    pub(super) fn sets(
        &mut self,
        raw: Vec<SetConfig>,
        jobs: &[JobSpec],
        drill_env: Option<EnvironmentKind>,
    ) -> Vec<SetSpec> {
        let mut sets: Vec<SetSpec> = Vec::new();
        for (i, s) in raw.into_iter().enumerate() {
            let at = |k: &'static str| [Seg::K("sets"), Seg::I(i), Seg::K(k)];
            if !valid_name(&s.name) {
                self.issue(
                    &at("name"),
                    format!("{:?} is not a valid set name", s.name),
                    "use letters, digits, '-', '_' and '.'",
                );
            }
            if sets.iter().any(|o| o.name == s.name) {
                self.issue(
                    &at("name"),
                    format!("set name {:?} is used twice", s.name),
                    "give every set its own name",
                );
            }
            if jobs.iter().any(|j| j.name == s.name) {
                self.issue(
                    &at("name"),
                    format!("set name {:?} is also a job's name", s.name),
                    "give the set a name no job has, so history and reports can tell them apart",
                );
            }
            if s.jobs.len() < 2 {
                self.issue(
                    &at("jobs"),
                    format!(
                        "set {:?} has {} job(s); a set groups at least two",
                        s.name,
                        s.jobs.len()
                    ),
                    "list two or more [[jobs]] names, e.g. jobs = [\"app-db\", \"uploads\"]",
                );
            }
            let mut schedule: Option<&JobSpec> = None;
            let mut databases: Vec<&JobSpec> = Vec::new();
            for (k, name) in s.jobs.iter().enumerate() {
                if s.jobs[..k].contains(name) {
                    self.issue(
                        &at("jobs"),
                        format!("set {:?} lists job {name:?} twice", s.name),
                        "list each job once",
                    );
                    continue;
                }
                let Some(job) = jobs.iter().find(|j| &j.name == name) else {
                    self.issue(
                        &at("jobs"),
                        format!(
                            "set {:?} names job {name:?}, which the plan does not define",
                            s.name
                        ),
                        format!(
                            "use the name of a [[jobs]] table: {}",
                            jobs.iter()
                                .map(|j| j.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    continue;
                };
                if let Some(other) = sets.iter().find(|o| o.jobs.contains(name)) {
                    self.issue(
                        &at("jobs"),
                        format!(
                            "job {name:?} is in set {:?} and set {:?}",
                            other.name, s.name
                        ),
                        "a job belongs to at most one set: it is backed up once, with its set",
                    );
                }
                match &job.source {
                    SourceSpec::Postgres(_) | SourceSpec::Mariadb(_) => databases.push(job),
                    SourceSpec::Dir { .. } | SourceSpec::Btrfs(_) => {}
                    other => self.issue(
                        &at("jobs"),
                        format!(
                            "job {name:?} is a {} job; a set can start PostgreSQL, MariaDB, dir and btrfs jobs together",
                            other.kind()
                        ),
                        "leave the job out of the set (it is backed up on its own), see docs/plans.md",
                    ),
                }
                match schedule {
                    None => schedule = Some(job),
                    Some(first) if first.schedule_expr != job.schedule_expr => self.issue(
                        &at("jobs"),
                        format!(
                            "the members of set {:?} have different schedules ({:?}: {:?}, {:?}: {:?}); a set is backed up as one run",
                            s.name, first.name, first.schedule_expr, job.name, job.schedule_expr
                        ),
                        "give every member job the same schedule",
                    ),
                    Some(_) => {}
                }
            }
            let pg = databases
                .iter()
                .filter(|j| matches!(j.source, SourceSpec::Postgres(_)))
                .count();
            if databases.len() > 1
                && matches!(
                    drill_env,
                    Some(EnvironmentKind::Scratch | EnvironmentKind::Command)
                )
            {
                let engines = if pg > 0 && pg < databases.len() {
                    "ephemeral-postgres\" or \"ephemeral-mariadb\" (either: a set of both engines gets one throwaway server per engine)".to_string()
                } else {
                    format!(
                        "ephemeral-{}\"",
                        if pg > 0 { "postgres" } else { "mariadb" }
                    )
                };
                self.issue(
                    &at("jobs"),
                    format!(
                        "set {:?} has {} database jobs; its drill loads them into throwaway servers of lifeboat's own, not a scratch server or provisioning commands",
                        s.name,
                        databases.len()
                    ),
                    format!("set [drill] environment = \"{engines}, or keep one database job per set"),
                );
            }
            let restore_tests: Vec<_> = s.restore_tests.iter().map(|p| self.resolve(p)).collect();
            for t in &restore_tests {
                if !t.exists() {
                    self.issue(
                        &at("restore_tests"),
                        format!("restore-test file {} does not exist", t.display()),
                        "give a path relative to the plan file (see restore-tests/ for examples)",
                    );
                }
            }
            sets.push(SetSpec {
                name: s.name,
                jobs: s.jobs,
                restore_tests,
            });
        }
        sets
    }
}
