//! Plan files (`plans/*.toml`): which jobs run (a source and a cron schedule each), the
//! documented objectives (RPO, RTO), where backups go, where the repository password comes
//! from, retention and drill settings. The format is documented in `docs/plans.md`.
//!
//! Raw `*Config` structs mirror the file (serde, `deny_unknown_fields`); [`load`] validates
//! them into a [`Plan`] of `*Spec` values that the rest of lifeboat uses. Every problem is a
//! [`PlanIssue`] naming the file, the line, the key and a fix; all problems of a file are
//! reported at once. This module knows nothing about running backups.
//!
//! - `raw`: the file as serde reads it (`*Config`, `deny_unknown_fields`).
//! - `model`: the validated [`Plan`] and its `*Spec` values.
//! - here: [`load`], [`parse`], the errors ([`PlanError`], [`PlanIssue`]) and the validator.
//!
//! A job's source is a [`SourceSpec`], which [`crate::source`] owns and builds; where a
//! password comes from is a [`SecretSpec`] ([`crate::secret`]). Both are re-exported here.

mod model;
mod raw;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use crate::secret::{self, SecretError, SecretSpec};
use crate::source::db::DbConn;
use crate::source::hooks::HooksSpec;
use crate::source::mysql::MariadbSpec;
use crate::source::postgres::{DumpFormat, PostgresSpec};
pub use crate::source::spec::SourceSpec;
use crate::source::volume::block::BlockSpec;
use crate::source::volume::btrfs::BtrfsSpec;
use crate::source::volume::lvm::LvmSpec;
use crate::source::volume::zfs::ZfsSpec;
pub use model::{
    DestinationSpec, DrillSpec, EnvironmentKind, JobSpec, Objectives, Plan, RetentionSpec,
    ScratchDrillSpec,
};
use raw::{DestinationConfig, LocalConfig, PlanConfig, SourceConfig};

// ----- errors ---------------------------------------------------------------------------

/// One problem in a plan file: where it is, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanIssue {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for PlanIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}; fix: {}",
            self.file.display(),
            self.line,
            self.key,
            self.problem,
            self.fix
        )
    }
}

/// Every problem found in one plan file.
#[derive(Debug, thiserror::Error)]
pub struct PlanError {
    pub file: PathBuf,
    pub issues: Vec<PlanIssue>,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plan {} has {} problem(s):",
            self.file.display(),
            self.issues.len()
        )?;
        for i in &self.issues {
            write!(f, "\n  {i}")?;
        }
        Ok(())
    }
}

// ----- loading --------------------------------------------------------------------------

/// Reads, parses and validates a plan file.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: path.to_path_buf(),
        issues: vec![PlanIssue {
            file: path.to_path_buf(),
            line: 0,
            key: "(file)".into(),
            problem: format!("cannot read the plan: {e}"),
            fix: "check the path given to --plan".into(),
        }],
    })?;
    parse(path, &text)
}

/// Parses and validates plan text; `path` is used for messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let mut v = Validator::new(path, text);
    let raw: PlanConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.message().to_string();
            let (key, fix) = syntax_fix(&msg);
            let line = e.span().map(|s| v.key_line_within(&key, s)).unwrap_or(0);
            v.issues.push(PlanIssue {
                file: path.to_path_buf(),
                line,
                key,
                problem: msg,
                fix,
            });
            return Err(v.into_error());
        }
    };
    let plan = v.plan(raw);
    if v.issues.is_empty() {
        Ok(plan)
    } else {
        Err(v.into_error())
    }
}

fn syntax_fix(msg: &str) -> (String, String) {
    let quoted = |m: &str, prefix: &str| {
        m.split(prefix)
            .nth(1)
            .and_then(|r| r.split('`').next())
            .map(str::to_string)
    };
    if let Some(k) = quoted(msg, "unknown field `") {
        return (k, "remove the key or correct its spelling; docs/plans.md lists the keys each table accepts".into());
    }
    if let Some(k) = quoted(msg, "missing field `") {
        return (k, "add the key; docs/plans.md shows an example".into());
    }
    if let Some(k) = quoted(msg, "unknown variant `") {
        return (
            format!("type = {k:?}"),
            "use one of the types named in the message".into(),
        );
    }
    (
        "(syntax)".into(),
        "correct the TOML at that line; docs/plans.md has a complete example".into(),
    )
}

/// A segment of a key path inside the document.
#[derive(Clone, Copy)]
enum Seg<'a> {
    K(&'a str),
    I(usize),
}

struct Validator<'a> {
    file: PathBuf,
    base: PathBuf,
    text: &'a str,
    doc: Option<toml_edit::ImDocument<String>>,
    issues: Vec<PlanIssue>,
}

impl<'a> Validator<'a> {
    fn new(file: &Path, text: &'a str) -> Self {
        Validator {
            file: file.to_path_buf(),
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            text,
            doc: toml_edit::ImDocument::parse(text.to_string()).ok(),
            issues: Vec::new(),
        }
    }

    fn into_error(self) -> PlanError {
        PlanError {
            file: self.file,
            issues: self.issues,
        }
    }

    fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    /// The line where `key` is written inside `span` (serde reports unknown keys of tagged
    /// tables with the table's span), else the span's first line.
    fn key_line_within(&self, key: &str, span: std::ops::Range<usize>) -> usize {
        let end = span.end.min(self.text.len());
        let start = span.start.min(end);
        let mut offset = start;
        for l in self.text[start..end].split_inclusive('\n') {
            let t = l.trim_start();
            if t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
            {
                return self.line_at(offset);
            }
            offset += l.len();
        }
        self.line_at(span.start)
    }

    /// The line of the deepest part of `path` found in the document.
    fn line_of(&self, path: &[Seg]) -> usize {
        let Some(doc) = &self.doc else { return 0 };
        let mut item = doc.as_item();
        let mut best = 1;
        for seg in path {
            let (next, key_span) = match *seg {
                Seg::K(k) => {
                    let kv = item.as_table_like().and_then(|t| t.get_key_value(k));
                    (kv.map(|(_, v)| v), kv.and_then(|(key, _)| key.span()))
                }
                Seg::I(i) => (item.get(i), None),
            };
            let Some(next) = next else { break };
            if let Some(s) = key_span.or_else(|| next.span()) {
                best = self.line_at(s.start);
            }
            item = next;
        }
        best
    }

    fn issue(&mut self, path: &[Seg], problem: impl Into<String>, fix: impl Into<String>) {
        let key = path
            .iter()
            .map(|s| match s {
                Seg::K(k) => format!(".{k}"),
                Seg::I(i) => format!("[{i}]"),
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string();
        self.issues.push(PlanIssue {
            file: self.file.clone(),
            line: self.line_of(path),
            key,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn duration(&mut self, path: &[Seg], s: &str) -> Option<Duration> {
        match humantime::parse_duration(s) {
            Ok(d) if d > Duration::ZERO => Some(d),
            Ok(_) => {
                self.issue(
                    path,
                    "a zero duration",
                    "give a positive duration such as \"30m\" or \"6h\"",
                );
                None
            }
            Err(e) => {
                self.issue(
                    path,
                    format!("{s:?} is not a duration ({e})"),
                    "write a duration such as \"30m\", \"6h\" or \"1day\"",
                );
                None
            }
        }
    }

    fn schedule(&mut self, path: &[Seg], expr: &str) -> Option<cron::Schedule> {
        match parse_cron(expr) {
            Ok(s) => Some(s),
            Err(e) => {
                let e = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                self.issue(
                    path,
                    format!("{expr:?} is not a cron expression ({e})"),
                    "use 5 fields \"min hour day month weekday\" (e.g. \"30 2 * * *\") or 6 with seconds first",
                );
                None
            }
        }
    }

    fn secret(
        &mut self,
        path: &[Seg],
        file: Option<PathBuf>,
        env: Option<String>,
        cred: Option<String>,
        required: bool,
    ) -> Option<SecretSpec> {
        let mut given = Vec::new();
        if let Some(f) = file {
            given.push(("password_file", SecretSpec::File(self.resolve(&f))));
        }
        if let Some(e) = env {
            given.push(("password_env", SecretSpec::Env(e)));
        }
        if let Some(c) = cred {
            if c.contains('/') || c.is_empty() {
                let mut p = path.to_vec();
                p.push(Seg::K("password_credential"));
                self.issue(
                    &p,
                    "a credential name must be a plain name",
                    "give the name used in LoadCredential=NAME:… (no slashes)",
                );
            }
            given.push(("password_credential", SecretSpec::Credential(c)));
        }
        match given.len() {
            0 if required => {
                self.issue(
                    path,
                    "no password source",
                    "add one of password_file = \"/etc/lifeboat/repo.pass\", password_env = \"VAR\" or password_credential = \"NAME\" (the password itself never goes in the plan)",
                );
                None
            }
            0 => None,
            1 => given.pop().map(|(_, s)| s),
            _ => {
                let mut p = path.to_vec();
                p.push(Seg::K(given[1].0));
                let names: Vec<_> = given.iter().map(|(n, _)| *n).collect();
                self.issue(
                    &p,
                    format!("several password sources given ({})", names.join(", ")),
                    "keep exactly one of them",
                );
                None
            }
        }
    }

    fn plan(&mut self, raw: PlanConfig) -> Plan {
        let name = match raw.name {
            Some(n) if !valid_name(&n) => {
                self.issue(
                    &[Seg::K("name")],
                    format!("{n:?} is not a valid plan name"),
                    "use letters, digits, '-', '_' and '.'",
                );
                n
            }
            Some(n) => n,
            None => self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plan".into()),
        };
        let r = raw.repository;
        let password = self
            .secret(
                &[Seg::K("repository")],
                r.password_file,
                r.password_env,
                r.password_credential,
                true,
            )
            .unwrap_or(SecretSpec::Env(String::new()));

        let objectives = Objectives {
            rpo: raw
                .objectives
                .rpo
                .as_deref()
                .and_then(|s| self.duration(&[Seg::K("objectives"), Seg::K("rpo")], s)),
            rto: raw
                .objectives
                .rto
                .as_deref()
                .and_then(|s| self.duration(&[Seg::K("objectives"), Seg::K("rto")], s)),
        };

        let mut destinations = Vec::new();
        for (i, d) in raw.destinations.into_iter().enumerate() {
            match d {
                DestinationConfig::Local(l) => {
                    if l.path.as_os_str().is_empty() {
                        self.issue(
                            &[Seg::K("destinations"), Seg::I(i), Seg::K("path")],
                            "empty path",
                            "give the repository directory",
                        );
                    }
                    destinations.push(DestinationSpec(DestinationConfig::Local(LocalConfig {
                        name: l.name,
                        path: self.resolve(&l.path),
                    })));
                }
                DestinationConfig::S3(c) => {
                    if let Err(e) = c.validate() {
                        self.issue(
                            &[Seg::K("destinations"), Seg::I(i)],
                            e,
                            "see docs/plans.md for the keys of an s3 destination",
                        );
                    }
                    destinations.push(DestinationSpec(DestinationConfig::S3(c)));
                }
            }
        }
        if destinations.is_empty() {
            self.issue(
                &[Seg::K("destinations")],
                "no destination",
                "add a [[destinations]] table with type = \"local\" and path = \"/srv/lifeboat/repo\"",
            );
        }
        let min_regions = raw.min_regions.unwrap_or(1);
        if min_regions == 0 || (min_regions > destinations.len() && !destinations.is_empty()) {
            self.issue(
                &[Seg::K("min_regions")],
                format!(
                    "{min_regions} is not between 1 and the {} destinations",
                    destinations.len()
                ),
                "set min_regions to how many destinations must commit each backup",
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, d) in destinations.iter().enumerate() {
            let name = crate::store::multi::Destination::from_config(&d.0)
                .map(|x| x.name)
                .unwrap_or_default();
            if !names.insert(name.clone()) {
                self.issue(
                    &[Seg::K("destinations"), Seg::I(i)],
                    format!("two destinations are named {name:?}"),
                    "give each destination a distinct `name`",
                );
            }
        }

        let mut jobs: Vec<JobSpec> = Vec::new();
        if raw.jobs.is_empty() {
            self.issue(&[Seg::K("jobs")], "no jobs", "add a [[jobs]] table with name, schedule and a [jobs.source] (see plans/ for examples)");
        }
        for (i, j) in raw.jobs.into_iter().enumerate() {
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

        let retention = raw.retention.map(|r| {
            let keep_within = r.keep_within.as_deref().and_then(|s| self.duration(&[Seg::K("retention"), Seg::K("keep_within")], s));
            let spec = RetentionSpec {
                keep_last: r.keep_last,
                keep_hourly: r.keep_hourly,
                keep_daily: r.keep_daily,
                keep_weekly: r.keep_weekly,
                keep_monthly: r.keep_monthly,
                keep_yearly: r.keep_yearly,
                keep_within,
            };
            if spec == RetentionSpec::default() {
                self.issue(&[Seg::K("retention")], "keeps nothing", "set at least one of keep_last, keep_daily, …, keep_within, or remove [retention]");
            }
            spec
        });

        let drill = raw.drill.map(|d| {
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
                    let names: Vec<_> = for_env.iter().map(|e| format!("\"{}\"", e.name())).collect();
                    this.issue(&at(k), format!("{k} is only used with environment = {}", names.join(" or ")), format!("remove {k}, or change the environment"));
                }
            };
            let has_pw = d.password_file.is_some() || d.password_env.is_some() || d.password_credential.is_some();
            only(self, "server", d.server.is_some(), &[EnvironmentKind::Scratch]);
            only(self, if d.password_file.is_some() { "password_file" } else if d.password_env.is_some() { "password_env" } else { "password_credential" }, has_pw, &[EnvironmentKind::Scratch]);
            only(self, "bin_dir", d.bin_dir.is_some(), &[EnvironmentKind::Scratch, EnvironmentKind::Command]);
            only(self, "orphan_expiry", d.orphan_expiry.is_some(), &[EnvironmentKind::Scratch, EnvironmentKind::Command]);
            only(self, "provision", d.provision.is_some(), &[EnvironmentKind::Command]);
            only(self, "teardown", d.teardown.is_some(), &[EnvironmentKind::Command]);
            only(self, "timeout", d.timeout.is_some(), &[EnvironmentKind::Command]);
            let orphan_expiry = d
                .orphan_expiry
                .as_deref()
                .and_then(|e| self.duration(&at("orphan_expiry"), e))
                .unwrap_or(Duration::from_secs(24 * 3600));
            let bin_dir = d.bin_dir.as_ref().map(|b| self.resolve(b));
            let mut scratch = None;
            if environment == EnvironmentKind::Scratch {
                match d.server.as_deref() {
                    None => self.issue(&at("server"), "environment = \"scratch\" needs the server to borrow", "add server = \"postgres://user@host:5432/postgres\" (or mariadb://…; the database named is only used to connect; the password goes in password_file, password_env or password_credential)"),
                    Some(url) => match DbConn::parse_url(url) {
                        Err(e) => self.issue(&at("server"), e.to_string(), "give a URL such as postgres://drill@db-staging:5432/postgres"),
                        Ok((kind, server)) => {
                            let password = self.secret(&[Seg::K("drill")], d.password_file, d.password_env, d.password_credential, false);
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
                let timeout = d.timeout.as_deref().and_then(|t| self.duration(&at("timeout"), t)).unwrap_or(Duration::from_secs(600));
                for (k, v) in [("provision", &d.provision), ("teardown", &d.teardown)] {
                    if v.as_deref().is_none_or(|v| v.trim().is_empty()) {
                        self.issue(&at(k), format!("environment = \"command\" needs a {k} command"), format!("add {k} = \"…\" (run with sh -c; see docs/drills.md for what it gets and must print)"));
                    }
                }
                if let (Some(provision), Some(teardown)) = (d.provision, d.teardown) {
                    command = Some(crate::drill::env::CommandSpec { provision, teardown, timeout, bin_dir: bin_dir.clone(), orphan_expiry });
                }
            }
            let schedule = d.schedule.as_deref().and_then(|s| self.schedule(&[Seg::K("drill"), Seg::K("schedule")], s));
            for (k, j) in d.jobs.iter().enumerate() {
                if !jobs.iter().any(|x| &x.name == j) {
                    self.issue(&[Seg::K("drill"), Seg::K("jobs"), Seg::I(k)], format!("no job named {j:?}"), "name a job defined in [[jobs]]");
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
                    self.issue(&[Seg::K("drill"), Seg::K("postgres_version")], format!("{v} is not a PostgreSQL major version"), "give a major version such as 15");
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
        });

        Plan {
            name,
            file: self.file.clone(),
            description: raw.description,
            password,
            objectives,
            destinations,
            min_regions,
            jobs,
            retention,
            drill,
        }
    }

    fn source(&mut self, i: usize, s: SourceConfig) -> Option<SourceSpec> {
        let at = |k: &'static str| [Seg::K("jobs"), Seg::I(i), Seg::K("source"), Seg::K(k)];
        let src_path = [Seg::K("jobs"), Seg::I(i), Seg::K("source")];
        let before = self.issues.len();
        let spec = match s {
            SourceConfig::Dir(d) => {
                if d.paths.is_empty() {
                    self.issue(
                        &at("paths"),
                        "no paths",
                        "list at least one directory, e.g. paths = [\"/etc\"]",
                    );
                }
                let paths = d.paths.iter().map(|p| self.resolve(p)).collect();
                SourceSpec::Dir { paths }
            }
            SourceConfig::Postgres(p) => {
                let password = self.secret(
                    &src_path,
                    p.password_file,
                    p.password_env,
                    p.password_credential,
                    false,
                );
                if let Some(c) = p.compress {
                    if c > 9 {
                        self.issue(
                            &at("compress"),
                            format!("compress = {c} is out of range"),
                            "use 0 (default: let the repository compress) to 9",
                        );
                    }
                }
                self.db_name(&at("database"), &p.database);
                let format = p.format.unwrap_or_default();
                let jobs = p.jobs.unwrap_or(1);
                if jobs == 0 || jobs > 64 {
                    self.issue(
                        &at("jobs"),
                        format!("jobs = {jobs} is out of range"),
                        "use 1 to 64 parallel pg_dump workers",
                    );
                } else if jobs > 1 && format != DumpFormat::Directory {
                    self.issue(
                        &at("jobs"),
                        "parallel pg_dump needs the directory format",
                        "add format = \"directory\" (stages the dump in a temporary directory), or remove jobs",
                    );
                }
                SourceSpec::Postgres(PostgresSpec {
                    conn: DbConn {
                        host: p.host,
                        port: p.port,
                        socket: None,
                        user: p.user,
                        database: p.database,
                        password,
                    },
                    row_counts: p.row_counts.unwrap_or_default(),
                    globals: p.globals.unwrap_or(true),
                    compress: p.compress.unwrap_or(0),
                    bin_dir: p.bin_dir.map(|b| self.resolve(&b)),
                    format,
                    jobs,
                    spool_dir: p.spool_dir.map(|d| self.resolve(&d)),
                })
            }
            SourceConfig::Mariadb(m) => {
                let password = self.secret(
                    &src_path,
                    m.password_file,
                    m.password_env,
                    m.password_credential,
                    false,
                );
                self.db_name(&at("database"), &m.database);
                SourceSpec::Mariadb(MariadbSpec {
                    conn: DbConn {
                        host: m.host,
                        port: m.port,
                        socket: m.socket.map(|s| self.resolve(&s)),
                        user: m.user,
                        database: m.database,
                        password,
                    },
                    row_counts: m.row_counts.unwrap_or_default(),
                    bin_dir: m.bin_dir.map(|b| self.resolve(&b)),
                    no_defaults: m.no_defaults.unwrap_or(false),
                })
            }
            SourceConfig::Btrfs(b) => {
                if !b.subvolume.is_absolute() {
                    self.issue(
                        &at("subvolume"),
                        "not an absolute path",
                        "give the subvolume's absolute path, e.g. \"/srv/data\"",
                    );
                }
                SourceSpec::Btrfs(BtrfsSpec {
                    subvolume: b.subvolume,
                    snapshot_dir: b.snapshot_dir,
                })
            }
            SourceConfig::Block(b) => SourceSpec::Block(BlockSpec {
                path: self.resolve(&b.path),
            }),
            SourceConfig::Lvm(l) => {
                if l.snapshot_size.trim().is_empty() {
                    self.issue(
                        &at("snapshot_size"),
                        "empty",
                        "give the copy-on-write space, e.g. \"2G\" or \"20%ORIGIN\"",
                    );
                }
                SourceSpec::Lvm(LvmSpec {
                    volume_group: l.volume_group,
                    logical_volume: l.logical_volume,
                    snapshot_size: l.snapshot_size,
                })
            }
            SourceConfig::Zfs(z) => {
                if z.dataset.contains('@') || z.dataset.is_empty() {
                    self.issue(
                        &at("dataset"),
                        format!("{:?} is not a dataset name", z.dataset),
                        "name the dataset without a snapshot, e.g. \"tank/home\"",
                    );
                }
                SourceSpec::Zfs(ZfsSpec { dataset: z.dataset })
            }
        };
        (self.issues.len() == before).then_some(spec)
    }

    fn db_name(&mut self, path: &[Seg], name: &str) {
        if name.is_empty() || name.contains('\0') || name.contains('\n') {
            self.issue(
                path,
                format!("{name:?} is not a database name"),
                "give the database's name",
            );
        }
    }
}

/// Parses a cron expression. Five fields are classic cron (`min hour day month weekday`,
/// weekday 0–7 with 0 and 7 = Sunday) and get a `0` seconds field; six or seven fields are
/// passed to the `cron` crate as they are (its weekdays are 1–7 with 1 = Sunday, so numeric
/// weekdays of 5-field expressions are translated to names first).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, cron::error::Error> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return cron::Schedule::from_str(expr);
    }
    const DAYS: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut dow = String::new();
    let mut after_slash = false;
    let mut digits = String::new();
    let flush = |digits: &mut String, dow: &mut String, after_slash: bool| {
        if digits.is_empty() {
            return;
        }
        match digits.parse::<usize>() {
            Ok(n) if n < DAYS.len() && !after_slash => dow.push_str(DAYS[n]),
            _ => dow.push_str(digits),
        }
        digits.clear();
    };
    for ch in fields[4].chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        flush(&mut digits, &mut dow, after_slash);
        after_slash = ch == '/';
        dow.push(ch);
    }
    flush(&mut digits, &mut dow, after_slash);
    cron::Schedule::from_str(&format!(
        "0 {} {} {} {} {dow}",
        fields[0], fields[1], fields[2], fields[3]
    ))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 100
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
