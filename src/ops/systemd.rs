//! `lifeboat systemd install`: the shipped units of `systemd/` (compiled in), rewritten for
//! one plan directory — the binary's path, the plan directory, `ReadWritePaths=` for every
//! local destination of the plans (created if missing), `LoadCredential=` for every systemd
//! credential the plans name, the metrics textfile — written to the unit directory, the
//! drill user created ahead of time when a plan drills into an ephemeral server, and the
//! timer enabled. Every step is listed in the report; `dry_run` only renders.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::ExitCode;
use crate::plan::{DestinationSpec, EnvironmentKind};
use crate::secret::SecretSpec;
use crate::store::multi::DestinationConfig;
use crate::{Error, Result};

/// The units as shipped.
pub const RUN_DUE_SERVICE: &str = include_str!("../../systemd/lifeboat-run-due.service");
pub const RUN_DUE_TIMER: &str = include_str!("../../systemd/lifeboat-run-due.timer");
pub const DRILL_SERVICE: &str = include_str!("../../systemd/lifeboat-drill@.service");

/// Where the shipped units expect things.
const SHIPPED_BIN: &str = "/usr/local/bin/lifeboat";
const SHIPPED_PLANS: &str = "/etc/lifeboat/plans";
const SHIPPED_RW: &str = "ReadWritePaths=-/srv/lifeboat";
const SHIPPED_CRED: &str = "LoadCredential=lifeboat-repo:/etc/lifeboat/credentials/lifeboat-repo";
const SHIPPED_TEXTFILE: &str = "/var/lib/lifeboat/metrics/lifeboat.prom";

/// What to install.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// The plan directory run-due reads (absolute in the units).
    pub plan_dir: PathBuf,
    /// Where the units go (default /etc/systemd/system).
    pub unit_dir: PathBuf,
    /// The lifeboat binary the units run.
    pub bin: PathBuf,
    /// Where credentials are read from: `LoadCredential=NAME:DIR/NAME`.
    pub credential_dir: PathBuf,
    /// The metrics textfile run-due writes (None: none).
    pub textfile: Option<PathBuf>,
    /// Write the units but do not create users or directories, reload or enable.
    pub no_enable: bool,
    /// Render only: write nothing.
    pub dry_run: bool,
}

/// One unit file, rendered.
#[derive(Debug, Clone)]
pub struct Unit {
    pub name: String,
    pub text: String,
}

/// What `install` did (or would do).
#[derive(Debug, Clone)]
pub struct InstallReport {
    pub units: Vec<Unit>,
    /// The steps taken, in order, for people.
    pub steps: Vec<String>,
}

impl InstallReport {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Ok
    }
}

/// What the units need from the plans.
#[derive(Debug, Default, PartialEq)]
pub struct PlanNeeds {
    pub local_paths: Vec<PathBuf>,
    pub credentials: Vec<String>,
    pub drill_user: bool,
}

/// Reads the plans at `dir` for their local destinations, credentials and drill kinds.
pub fn plan_needs(dir: &Path) -> Result<PlanNeeds> {
    let mut n = PlanNeeds::default();
    for (_, p) in super::plans::load_plans(dir)? {
        for DestinationSpec(d) in &p.destinations {
            if let DestinationConfig::Local(l) = d {
                if !n.local_paths.contains(&l.path) {
                    n.local_paths.push(l.path.clone());
                }
            }
        }
        let mut creds = vec![&p.password];
        if let Some(s) = p.drill.as_ref().and_then(|d| d.scratch.as_ref()) {
            creds.extend(s.password.as_ref());
        }
        for c in creds {
            if let SecretSpec::Credential(name) = c {
                if !n.credentials.contains(name) {
                    n.credentials.push(name.clone());
                }
            }
        }
        if let Some(d) = &p.drill {
            n.drill_user |= matches!(
                d.environment,
                EnvironmentKind::EphemeralPostgres | EnvironmentKind::EphemeralMariadb
            );
        }
    }
    Ok(n)
}

/// The three units for `req` and what the plans need.
pub fn render(req: &InstallRequest, needs: &PlanNeeds) -> Vec<Unit> {
    let bin = req.bin.display().to_string();
    let plans = req.plan_dir.display().to_string();
    let mut rw: Vec<String> = needs
        .local_paths
        .iter()
        .map(|p| format!("-{}", p.display()))
        .collect();
    let textfile = req.textfile.as_ref().map(|t| t.display().to_string());
    if let Some(dir) = req.textfile.as_ref().and_then(|t| t.parent()) {
        if !dir.starts_with("/var/lib/lifeboat") {
            rw.push(format!("-{}", dir.display()));
        }
    }
    let rw_line = if rw.is_empty() {
        "# (no local destinations in the plans: nothing to write besides the state)".to_string()
    } else {
        format!("ReadWritePaths={}", rw.join(" "))
    };
    let cred_lines = if needs.credentials.is_empty() {
        "# (the plans name no systemd credential)".to_string()
    } else {
        needs
            .credentials
            .iter()
            .map(|c| format!("LoadCredential={c}:{}/{c}", req.credential_dir.display()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let fix = |t: &str| {
        let mut t = t
            .replace(SHIPPED_BIN, &bin)
            .replace(SHIPPED_PLANS, &plans)
            .replace(SHIPPED_RW, &rw_line)
            .replace(SHIPPED_CRED, &cred_lines);
        t = match &textfile {
            Some(f) => t.replace(SHIPPED_TEXTFILE, f),
            None => t.replace(&format!(" --textfile {SHIPPED_TEXTFILE}"), ""),
        };
        t
    };
    vec![
        Unit {
            name: "lifeboat-run-due.service".into(),
            text: fix(RUN_DUE_SERVICE),
        },
        Unit {
            name: "lifeboat-run-due.timer".into(),
            text: RUN_DUE_TIMER.to_string(),
        },
        Unit {
            name: "lifeboat-drill@.service".into(),
            text: fix(DRILL_SERVICE),
        },
    ]
}

fn user_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: getpwnam returns a pointer into static storage or null; only tested for null.
    !unsafe { libc::getpwnam(c.as_ptr()) }.is_null()
}

fn run(cmd: &mut Command, steps: &mut Vec<String>) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| {
        Error::Other(format!(
            "{shown}: cannot run it ({e}); run it by hand, or pass --no-enable"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{shown} failed: {}; fix that and run `lifeboat systemd install` again",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    steps.push(format!("ran {shown}"));
    Ok(())
}

/// Renders the units and (unless `dry_run`) installs them.
pub fn install(req: &InstallRequest) -> Result<InstallReport> {
    let needs = plan_needs(&req.plan_dir)?;
    let units = render(req, &needs);
    let mut steps = Vec::new();
    if req.dry_run {
        return Ok(InstallReport { units, steps });
    }
    std::fs::create_dir_all(&req.unit_dir).map_err(|e| Error::io("create", &req.unit_dir, e))?;
    for u in &units {
        let path = req.unit_dir.join(&u.name);
        crate::schedule::write_atomic(&path, u.text.as_bytes())?;
        steps.push(format!("wrote {}", path.display()));
    }
    if req.no_enable {
        return Ok(InstallReport { units, steps });
    }
    for p in &needs.local_paths {
        if !p.exists() {
            std::fs::create_dir_all(p).map_err(|e| Error::io("create", p, e))?;
            steps.push(format!("created the local destination {}", p.display()));
        }
    }
    if needs.drill_user && !user_exists(crate::drill::env::SERVER_USER) {
        run(
            crate::sys::process::command("useradd").args([
                "-r",
                "-M",
                "-s",
                "/usr/sbin/nologin",
                crate::drill::env::SERVER_USER,
            ]),
            &mut steps,
        )?;
    }
    run(
        crate::sys::process::command("systemctl").arg("daemon-reload"),
        &mut steps,
    )?;
    run(
        crate::sys::process::command("systemctl").args([
            "enable",
            "--now",
            "lifeboat-run-due.timer",
        ]),
        &mut steps,
    )?;
    Ok(InstallReport { units, steps })
}
