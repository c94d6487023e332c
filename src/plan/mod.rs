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
//! - `validate`: the validator, one file per section (repository and secrets, objectives,
//!   destinations, jobs and their sources, retention, drill).
//! - here: [`load`], [`parse`] and the errors, [`PlanError`] and [`PlanIssue`].
//!
//! A job's source is a [`SourceSpec`], which [`crate::source`] owns and builds; where a
//! password comes from is a [`SecretSpec`] ([`crate::secret`]). Both are re-exported here.

mod model;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::path::Path;

pub use crate::secret::{self, SecretError, SecretSpec};
pub use crate::source::spec::SourceSpec;
pub use model::{
    DestinationSpec, DrillSpec, EnvironmentKind, JobSpec, Objectives, Plan, RetentionSpec,
    ScratchDrillSpec,
};
pub use model::{NotifySpec, ScheduleSpec, SetSpec, VerifySpec};
use raw::PlanConfig;
pub use validate::parse_cron;
use validate::Validator;

// ----- errors ---------------------------------------------------------------------------

// Defined with the library's other error types (so `error` need not import `plan`).
pub use crate::error::{PlanError, PlanIssue};

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
            let (mut key, fix) = syntax_fix(&msg);
            if key == "(syntax)" && msg.starts_with("invalid ") {
                // A type or value error: name the key as well as the line.
                if let Some(k) = e.span().and_then(|s| v.key_at(s.start)) {
                    key = k;
                }
            }
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
