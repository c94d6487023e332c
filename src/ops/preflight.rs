//! `plan check`: is a plan ready to run? The file parses (its issues are data, each naming
//! file, line, key and fix), its schedules can meet its RPO, and — unless offline — the
//! [`preflight`]: destinations healthy, the repository opens with the plan's password, each
//! job's source is ready (`source::preflight`) and so is the drill environment
//! (`drill::preflight`). Every result is a [`Finding`]; problems never are errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::target::Target;
use crate::error::ExitCode;
use crate::plan::{self, Plan, PlanIssue};

/// One check: passed or not, and what was checked (with the fix when it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
}

impl Finding {
    fn new(ok: bool, what: String) -> Finding {
        Finding { ok, what }
    }
}

/// How to check a plan.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    /// Only validate the file; contact no server and no repository.
    pub offline: bool,
}

/// The result of `plan check`.
#[derive(Debug, Clone)]
pub enum PlanCheck {
    /// The file does not parse or validate.
    Invalid {
        file: PathBuf,
        issues: Vec<PlanIssue>,
    },
    /// The plan is valid; these are the checks, passed or not.
    Checked {
        file: PathBuf,
        findings: Vec<Finding>,
    },
}

impl PlanCheck {
    /// Failed checks (an invalid plan counts as one).
    pub fn problems(&self) -> usize {
        match self {
            PlanCheck::Invalid { .. } => 1,
            PlanCheck::Checked { findings, .. } => findings.iter().filter(|f| !f.ok).count(),
        }
    }

    /// 1 on any problem.
    pub fn exit_code(&self) -> ExitCode {
        if self.problems() == 0 {
            ExitCode::Ok
        } else {
            ExitCode::Error
        }
    }
}

/// `lifeboat plan check FILE`.
pub async fn check(file: &Path, req: CheckRequest) -> PlanCheck {
    let p = match plan::load(file) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            return PlanCheck::Invalid {
                file: file.to_path_buf(),
                issues: e.issues,
            }
        }
    };
    let mut f: Vec<Finding> = vec![Finding::new(
        true,
        format!(
            "plan {} parses: {} job(s), destination {}",
            p.name,
            p.jobs.len(),
            p.primary().location()
        ),
    )];
    for (job, gap) in p.rpo_misses() {
        f.push(Finding::new(
            false,
            format!(
                "job {job}: its schedule leaves gaps of up to {} between backups, longer than the plan's rpo of {}; run it more often or relax the objective",
                humantime::format_duration(gap),
                humantime::format_duration(p.objectives.rpo.unwrap_or_default())
            ),
        ));
    }
    if !req.offline {
        f.extend(preflight(&p).await);
    }
    PlanCheck::Checked {
        file: file.to_path_buf(),
        findings: f,
    }
}

/// Contacts what the plan names: S3 destinations (bucket, credentials, endpoint, region and
/// clock, each told apart), the repository (reachable, and the password opens it), each
/// job's source and the drill environment.
pub async fn preflight(p: &Arc<Plan>) -> Vec<Finding> {
    let mut f = Vec::new();
    let mut push = |ok: bool, what: String| f.push(Finding::new(ok, what));
    for d in &p.destinations {
        if let Ok(dest) = crate::store::multi::Destination::from_config(&d.0) {
            if dest.store.backend() == crate::store::Backend::S3 {
                let h = dest.store.probe().await;
                let hint = h
                    .hint
                    .as_deref()
                    .map(|x| format!("; {x}"))
                    .unwrap_or_default();
                push(
                    h.ok(),
                    format!(
                        "destination {} (bucket {}, region {}): {}{hint}",
                        h.name, h.bucket, h.region, h.detail
                    ),
                );
            }
        }
    }
    // The repository: reachable, and the password opens it.
    match p.password.read() {
        Err(e) => push(false, format!("repository password: {e}; {}", e.fix)),
        Ok(_) => {
            let opened = async { Target::from_plan(p.clone(), None)?.open_for_write().await };
            match opened.await {
                Ok(o) => push(
                    true,
                    format!(
                        "repository {} opens with the password from {}",
                        o.repo.location(),
                        p.password.describe()
                    ),
                ),
                Err(e) => push(
                    false,
                    format!(
                        "repository {}: {e}{}",
                        p.primary().location(),
                        e.hint().map(|h| format!("; {h}")).unwrap_or_default()
                    ),
                ),
            }
        }
    }
    for job in &p.jobs {
        for c in crate::source::preflight::check_job(&job.name, &job.source) {
            push(c.ok, format!("job {}: {}", job.name, c.what));
        }
    }
    if let Some(d) = &p.drill {
        for c in crate::drill::preflight::check_drill(
            d.scratch.as_ref().map(|s| (&s.server, s.password.as_ref())),
            d.command.as_ref(),
        ) {
            push(
                c.ok,
                format!("drill environment {}: {}", d.environment.name(), c.what),
            );
        }
    }
    f
}
