//! `lifeboat systemd install`: writes the run-due timer and service and the drill template
//! unit for a plan directory (paths and credentials taken from the plans), creates the
//! plans' local destinations and the drill user, and enables the timer
//! ([`crate::ops::systemd`]). `--dry-run` prints the units instead.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Ctx;
use crate::error::ExitCode;
use crate::ops::systemd::{self, InstallRequest};
use crate::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum SystemdCommand {
    /// Write the units for a plan directory and enable the timer
    Install(InstallArgs),
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The plan directory run-due reads
    #[arg(long, value_name = "DIR", default_value = "/etc/lifeboat/plans")]
    pub plan: PathBuf,
    /// Where the unit files go
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// The lifeboat binary the units run (default: this one)
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Where the credential files are: LoadCredential=NAME:DIR/NAME
    #[arg(long, value_name = "DIR", default_value = "/etc/lifeboat/credentials")]
    pub credential_dir: PathBuf,
    /// The metrics file run-due writes after every run (point node_exporter's textfile
    /// collector at its directory); "none" for no textfile
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/lib/lifeboat/metrics/lifeboat.prom"
    )]
    pub textfile: String,
    /// Write the units only: no directories, users, daemon-reload or enable
    #[arg(long)]
    pub no_enable: bool,
    /// Print the units; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn systemd(ctx: &Ctx, cmd: SystemdCommand) -> Result<ExitCode> {
    let SystemdCommand::Install(a) = cmd;
    let abs = |p: PathBuf| -> Result<PathBuf> {
        std::path::absolute(&p).map_err(|e| Error::io("resolve", &p, e))
    };
    let bin = match a.bin {
        Some(b) => abs(b)?,
        None => std::env::current_exe().map_err(|e| {
            Error::Other(format!(
                "cannot tell where this binary is ({e}); pass --bin PATH"
            ))
        })?,
    };
    let req = InstallRequest {
        plan_dir: abs(a.plan)?,
        unit_dir: a.unit_dir,
        bin,
        credential_dir: a.credential_dir,
        textfile: (a.textfile != "none").then(|| PathBuf::from(&a.textfile)),
        no_enable: a.no_enable,
        dry_run: a.dry_run,
    };
    let r = tokio::task::spawn_blocking(move || systemd::install(&req))
        .await
        .map_err(|e| Error::Other(format!("systemd install: {e}")))??;
    if a.dry_run {
        for u in &r.units {
            println!("# ---- {} ----\n{}", u.name, u.text);
        }
    } else if !ctx.global.quiet {
        for s in &r.steps {
            println!("{s}");
        }
    }
    Ok(r.exit_code())
}
