//! `pre`/`post` hook commands around any job's source: `pre` runs before the source reads
//! anything (a failure or timeout aborts the job with exit 14, nothing is committed);
//! `post` runs afterwards whatever happened (it sees `LIFEBOAT_RESULT=ok|failed`), and its
//! failure is a warning. Each command runs as `sh -c` in its own process group, which is
//! killed when the timeout expires.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{BackupContext, Source, SourceOutput};
use crate::repo::tree::Tree;
use crate::sys::process::ChildProc;
use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksSpec {
    pub pre: Option<String>,
    pub post: Option<String>,
    pub timeout: Duration,
}

impl Default for HooksSpec {
    fn default() -> Self {
        HooksSpec {
            pre: None,
            post: None,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Runs one hook command; `Err(SourceFailed)` on a non-zero exit or a timeout.
pub fn run_hook(
    which: &str,
    command: &str,
    timeout: Duration,
    job: &str,
    env: &[(&str, &str)],
) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", command])
        .env("LIFEBOAT_JOB", job)
        .env("LIFEBOAT_HOOK", which)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit());
    let child = ChildProc::spawn(cmd, &format!("{which} hook"), job, vec![])?;
    child.finish_within(timeout)
}

/// Wraps a source with its job's hooks.
pub struct Hooked {
    pub inner: Box<dyn Source>,
    pub hooks: HooksSpec,
    pub job: String,
    /// The pre hook already ran (in [`Source::freeze`]).
    pub pre_done: bool,
}

impl Source for Hooked {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    fn paths(&self) -> Vec<String> {
        self.inner.paths()
    }

    fn freeze(&mut self) -> Result<super::Frozen> {
        // The pre hook prepares the source (flushes, pauses): it runs before the freeze.
        if let Some(pre) = &self.hooks.pre {
            run_hook("pre", pre, self.hooks.timeout, &self.job, &[])?;
        }
        self.pre_done = true;
        self.inner.freeze()
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, parent: Option<&Tree>) -> Result<SourceOutput> {
        if let (Some(pre), false) = (&self.hooks.pre, self.pre_done) {
            run_hook("pre", pre, self.hooks.timeout, &self.job, &[])?;
        }
        let out = self.inner.run(ctx, parent);
        if let Some(post) = &self.hooks.post {
            let result = if out.is_ok() { "ok" } else { "failed" };
            if let Err(e) = run_hook(
                "post",
                post,
                self.hooks.timeout,
                &self.job,
                &[("LIFEBOAT_RESULT", result)],
            ) {
                ctx.warn(format!("{e}"), false);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_failure_and_timeout_are_errors() {
        assert!(run_hook("pre", "true", Duration::from_secs(5), "j", &[]).is_ok());
        let e = run_hook(
            "pre",
            "echo boom >&2; exit 4",
            Duration::from_secs(5),
            "j",
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("status 4") && e.to_string().contains("boom"),
            "{e}"
        );
        let e = run_hook("pre", "sleep 10", Duration::from_millis(200), "j", &[]).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("r");
        run_hook(
            "post",
            &format!("echo $LIFEBOAT_RESULT > {}", f.display()),
            Duration::from_secs(5),
            "j",
            &[("LIFEBOAT_RESULT", "failed")],
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(f).unwrap().trim(), "failed");
    }
}
