//! `[drill]`: the environment and the keys each environment takes (a key given for another
//! environment is an error, not a no-op), its schedule, the jobs it drills (each defined in
//! `[[jobs]]`), restore-test files and the PostgreSQL version.

use std::time::Duration;

use super::{Seg, Validator};
use crate::plan::model::{DrillSpec, EnvironmentKind, JobSpec, ScratchDrillSpec};
use crate::plan::raw::DrillConfig;
use crate::source::db::DbConn;

impl Validator<'_> {
    /// `[drill]`; `jobs` are the plan's validated jobs, which `[drill] jobs` must name.
    pub(super) fn drill(&mut self, d: DrillConfig, jobs: &[JobSpec]) -> DrillSpec {
        let environment = d.environment.parse().unwrap_or_else(|_| {
            self.issue(
                &[Seg::K("drill"), Seg::K("environment")],
                format!("unknown environment {:?}", d.environment),
                "use \"ephemeral-postgres\", \"ephemeral-mariadb\", \"scratch\", \"command\" or \"directory\"",
            );
            EnvironmentKind::Directory
        });
        let at = |k: &'static str| [Seg::K("drill"), Seg::K(k)];
        // Keys of one environment given for another are mistakes, not no-ops.
        let only = |this: &mut Self, k: &'static str, given: bool, for_env: &[EnvironmentKind]| {
            if given && !for_env.contains(&environment) {
                let names: Vec<_> = for_env
                    .iter()
                    .map(|e| format!("\"{}\"", e.name()))
                    .collect();
                this.issue(
                    &at(k),
                    format!("{k} is only used with environment = {}", names.join(" or ")),
                    format!("remove {k}, or change the environment"),
                );
            }
        };
        let has_pw = d.password_file.is_some()
            || d.password_env.is_some()
            || d.password_credential.is_some()
            || d.password_command.is_some();
        only(
            self,
            "server",
            d.server.is_some(),
            &[EnvironmentKind::Scratch],
        );
        only(
            self,
            if d.password_file.is_some() {
                "password_file"
            } else if d.password_env.is_some() {
                "password_env"
            } else if d.password_credential.is_some() {
                "password_credential"
            } else {
                "password_command"
            },
            has_pw,
            &[EnvironmentKind::Scratch],
        );
        only(
            self,
            "bin_dir",
            d.bin_dir.is_some(),
            &[EnvironmentKind::Scratch, EnvironmentKind::Command],
        );
        only(
            self,
            "orphan_expiry",
            d.orphan_expiry.is_some(),
            &[EnvironmentKind::Scratch, EnvironmentKind::Command],
        );
        only(
            self,
            "provision",
            d.provision.is_some(),
            &[EnvironmentKind::Command],
        );
        only(
            self,
            "teardown",
            d.teardown.is_some(),
            &[EnvironmentKind::Command],
        );
        only(
            self,
            "timeout",
            d.timeout.is_some(),
            &[EnvironmentKind::Command],
        );
        let orphan_expiry = d
            .orphan_expiry
            .as_deref()
            .and_then(|e| self.duration(&at("orphan_expiry"), e))
            .unwrap_or(Duration::from_secs(24 * 3600));
        let bin_dir = d.bin_dir.as_ref().map(|b| self.resolve(b));
        let mut scratch = None;
        if environment == EnvironmentKind::Scratch {
            match d.server.as_deref() {
                None => self.issue(&at("server"), "environment = \"scratch\" needs the server to borrow", "add server = \"postgres://user@host:5432/postgres\" (or mariadb://…; the database named is only used to connect; the password goes in password_file, password_env, password_credential or password_command)"),
                Some(url) => match DbConn::parse_url(url) {
                    Err(e) => self.issue(&at("server"), e.to_string(), "give a URL such as postgres://drill@db-staging:5432/postgres"),
                    Ok((kind, server)) => {
                        let password = self.secret(&[Seg::K("drill")], d.password_file, d.password_env, d.password_credential, d.password_command, false);
                        scratch = Some(ScratchDrillSpec {
                            server: crate::drill::env::ScratchSpec { kind, server, bin_dir: bin_dir.clone(), orphan_expiry },
                            password,
                        });
                    }
                },
            }
        }
        let mut command = None;
        if environment == EnvironmentKind::Command {
            let timeout = d
                .timeout
                .as_deref()
                .and_then(|t| self.duration(&at("timeout"), t))
                .unwrap_or(Duration::from_secs(600));
            for (k, v) in [("provision", &d.provision), ("teardown", &d.teardown)] {
                if v.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    self.issue(&at(k), format!("environment = \"command\" needs a {k} command"), format!("add {k} = \"…\" (run with sh -c; see docs/drills.md for what it gets and must print)"));
                }
            }
            if let (Some(provision), Some(teardown)) = (d.provision, d.teardown) {
                command = Some(crate::drill::env::CommandSpec {
                    provision,
                    teardown,
                    timeout,
                    bin_dir: bin_dir.clone(),
                    orphan_expiry,
                });
            }
        }
        let schedule = d
            .schedule
            .as_deref()
            .and_then(|s| self.schedule(&[Seg::K("drill"), Seg::K("schedule")], s));
        for (k, j) in d.jobs.iter().enumerate() {
            if !jobs.iter().any(|x| &x.name == j) {
                self.issue(
                    &[Seg::K("drill"), Seg::K("jobs"), Seg::I(k)],
                    format!("no job named {j:?}"),
                    "name a job defined in [[jobs]]",
                );
            }
        }
        let mut tests = Vec::new();
        for (k, t) in d.restore_tests.iter().enumerate() {
            let p = self.resolve(t);
            if !p.is_file() {
                self.issue(
                    &[Seg::K("drill"), Seg::K("restore_tests"), Seg::I(k)],
                    format!("restore-test file {} does not exist", p.display()),
                    "create it or correct the path (relative paths start at the plan file's directory)",
                );
            }
            tests.push(p);
        }
        if let Some(v) = d.postgres_version {
            if !(10..=40).contains(&v) {
                self.issue(
                    &[Seg::K("drill"), Seg::K("postgres_version")],
                    format!("{v} is not a PostgreSQL major version"),
                    "give a major version such as 15",
                );
            }
        }
        DrillSpec {
            environment,
            schedule,
            jobs: d.jobs,
            restore_tests: tests,
            postgres_version: d.postgres_version,
            scratch,
            command,
        }
    }
}
