//! The command line: clap definitions, password handling, signal handling, output and the
//! mapping of errors to exit codes. Commands only parse arguments, call their use case in
//! `ops` and render its report; one file per command group, and no command file imports
//! another (this file dispatches).

mod catalog_cmds;
mod drill_cmds;
mod metrics_cmds;
pub mod output;
mod plan_cmds;
mod region_cmds;
mod repair_cmds;
mod repo_cmds;
mod report_cmds;
mod restore_cmds;
mod retention_cmds;
mod schedule_cmds;
mod systemd_cmds;
mod tools_cmds;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

use crate::error::ExitCode;
use crate::sys::Cancel;
use crate::{Error, Result};

const LONG_ABOUT: &str = "\
lifeboat takes encrypted, deduplicated backups and proves that they restore.

Passwords are never accepted as flag values (they would show in `ps`): use
LIFEBOAT_PASSWORD_FILE / --password-file, LIFEBOAT_PASSWORD_COMMAND / --password-command
(a KMS or vault client that prints it), LIFEBOAT_PASSWORD, or the prompt on a terminal.";

#[derive(Parser, Debug)]
#[command(name = "lifeboat", version, about = "Backups that prove they restore", long_about = LONG_ABOUT, after_help = ExitCode::TABLE)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository location: a directory, or s3://BUCKET/PREFIX?region=R[&endpoint=URL&name=N…].
    /// Repeat it to write to several regions at once
    #[arg(
        long,
        short = 'r',
        global = true,
        env = "LIFEBOAT_REPO",
        value_name = "LOCATION"
    )]
    pub repo: Vec<String>,

    /// TOML file listing the destinations ([[destinations]] type = "s3" | "local") and min_regions
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_DESTINATIONS",
        value_name = "FILE"
    )]
    pub destinations: Option<PathBuf>,

    /// With several regions: how many must commit for a backup to succeed (default 1, or the
    /// destinations file's min_regions); fewer is an error, some but not all is exit 3
    #[arg(long, global = true, value_name = "N")]
    pub min_regions: Option<usize>,

    /// Catalog: a SQLite file path (default: $LIFEBOAT_STATE_DIR/catalog.db, else
    /// $XDG_STATE_HOME/lifeboat/catalog.db, else ~/.local/state/lifeboat/catalog.db) or a
    /// postgres:// URL shared by a fleet (a password belongs in LIFEBOAT_CATALOG or ~/.pgpass)
    // hide_env_values: the URL may carry a password, and --help must not print it (SR-9).
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_CATALOG",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub catalog: Option<String>,

    /// Read the repository password from this file (first line)
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// Run this shell command and use the first line it prints as the repository password
    /// (a KMS or vault client; killed after 60 s, LIFEBOAT_SECRET_COMMAND_TIMEOUT). Not
    /// together with --password-file / LIFEBOAT_PASSWORD_FILE; beats LIFEBOAT_PASSWORD
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_COMMAND",
        hide_env_values = true,
        value_name = "CMD"
    )]
    pub password_command: Option<String>,

    /// Print machine-readable JSON on stdout (and a JSON `exit_error` record on stderr)
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars and no informational output
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// More log output (-v info, -vv debug)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Rejected: passwords are never taken from the command line
    #[arg(long, global = true, hide = true, value_name = "SECRET")]
    pub password: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(repo_cmds::InitArgs),
    /// Back up files and directories into a new snapshot
    Backup(repo_cmds::BackupArgs),
    /// List snapshots
    Snapshots(restore_cmds::SnapshotsArgs),
    /// List the contents of a snapshot
    Ls(restore_cmds::LsArgs),
    /// Restore a snapshot into a new or empty directory
    Restore(restore_cmds::RestoreArgs),
    /// Check the repository's structure, and optionally read and verify its data
    Verify(restore_cmds::VerifyArgs),
    /// Restore-drill a plan's jobs: restore into a throwaway server or directory, run the
    /// restore tests, measure RTO and RPO against the plan's objectives (exit 16: a check
    /// failed, 17: an objective was missed, 13: the backup is damaged, 1: the environment
    /// failed, 15: it ran out of space)
    Drill(drill_cmds::DrillArgs),
    /// Per job and region: newest snapshot, newest drilled snapshot (honest RPO), last drill
    /// and RTO against target, verification coverage; with --repo also rollback detection
    Status(catalog_cmds::StatusArgs),
    /// List backup runs and drills recorded in the catalog, newest first
    History(catalog_cmds::HistoryArgs),
    /// DR report files for audits: `report --plan FILE|DIR --out DIR` writes the period
    /// report (JSON, Markdown, HTML); `report verify`, `report pubkey`, `report incident`
    Report(report_cmds::ReportArgs),
    /// Manage the catalog (rebuild it from the repository, show where it is)
    #[command(subcommand)]
    Catalog(catalog_cmds::CatalogCommand),
    /// Manage the key slots (passwords) of a repository
    #[command(subcommand)]
    Key(repo_cmds::KeyCommand),
    /// Check plan files
    #[command(subcommand)]
    Plan(plan_cmds::PlanCommand),
    /// Remove snapshots the keep rules (--keep-* or the plan's [retention]) do not keep
    Forget(retention_cmds::ForgetArgs),
    /// Free the data no snapshot needs (two phases, safe beside running backups)
    Prune(retention_cmds::PruneArgs),
    /// Run what is due (what the systemd timer calls): backups by their cron schedules, drills
    /// rotating over every region, budgeted verification; one line per task says why
    RunDue(schedule_cmds::RunDueArgs),
    /// Export the catalog and run-due's outcomes as Prometheus metrics (textfile or HTTP)
    #[command(subcommand)]
    Metrics(metrics_cmds::MetricsCommand),
    /// Install the systemd units for run-due and drills, matching a plan directory
    #[command(subcommand)]
    Systemd(systemd_cmds::SystemdCommand),
    /// Run the whole job on a sample dataset: back up, change, back up, restore, prove it
    Demo(tools_cmds::DemoArgs),
    /// Copy what lagging regions lack from the others (verified; snapshots last)
    Sync(region_cmds::SyncArgs),
    /// Check that every destination is reachable, and readable, writable and deletable
    Healthcheck(region_cmds::HealthcheckArgs),
    /// Rebuild the index from the packs and find the snapshots that point at lost data
    /// (exit 13 while any does); --rewrite-snapshots keeps what remains of them
    Repair(repair_cmds::RepairArgs),
    /// Remove stale locks (expired, or left by a process of this host that no longer runs)
    Unlock(repair_cmds::UnlockArgs),
    /// Generate realistic sample data (used by the demo and the benchmarks)
    #[command(hide = true)]
    GenData(tools_cmds::GenDataArgs),
    /// Measure the single-core chunk+hash+compress+encrypt throughput on a file
    #[command(hide = true)]
    BenchPipeline(tools_cmds::BenchPipelineArgs),
    /// Measure the floors a restore of a snapshot is compared with (JSON)
    #[command(hide = true)]
    BenchRestoreFloor(tools_cmds::BenchRestoreFloorArgs),
}

/// Entry point for `main.rs`; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage.code() as i32
            } else {
                0
            };
        }
    };
    init_logging(&cli.global);
    disable_core_dumps();
    tune_malloc(matches!(
        cli.command,
        Command::Backup(_)
            | Command::RunDue(_)
            | Command::Demo(_)
            | Command::Forget(_)
            | Command::Prune(_)
    ));
    let json = cli.global.json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let cancel = Cancel::new();
    rt.spawn(watch_signals(cancel.clone()));
    quiet_broken_pipe_panics();
    // A reader that went away (`lifeboat ls latest | head`) ends the command quietly: the
    // print that hit EPIPE unwinds to here (dropping locks on the way), and the exit code is
    // 0 like ripgrep's — the work was done, only its output had nobody left to read it.
    let mut panicked = false;
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(run(cli, cancel))
    })) {
        Ok(r) => r,
        Err(p) if is_broken_pipe(p.as_ref()) => Ok(ExitCode::Ok),
        // A bug. The hook printed it (secrets redacted); a `--json` reader gets a record too.
        Err(p) => {
            report_panic(p.as_ref(), json);
            panicked = true;
            Ok(ExitCode::Ok)
        }
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, json);
            e.exit_code()
        }
    };
    // Let blocking tasks notice cancellation instead of waiting for them forever.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    // A child whose owner was still blocked must not outlive lifeboat, nor its group.
    crate::sys::process::kill_unwaited();
    if panicked {
        return PANIC_EXIT;
    }
    code.code() as i32
}

async fn run(cli: Cli, cancel: Cancel) -> Result<ExitCode> {
    if cli.global.password.is_some() {
        return Err(Error::Usage(
            "--password is not accepted: a secret on the command line is visible to every user in `ps`. Use LIFEBOAT_PASSWORD_FILE, --password-file, --password-command or LIFEBOAT_PASSWORD".into(),
        ));
    }
    check_password_sources(&cli.global)?;
    crate::failpoint::check_env().map_err(Error::Usage)?;
    crate::repo::lock::check_env().map_err(Error::Usage)?;
    let ctx = Ctx {
        global: cli.global,
        cancel,
    };
    dispatch(&ctx, cli.command).await
}

async fn dispatch(ctx: &Ctx, cmd: Command) -> Result<ExitCode> {
    use Command::*;
    match cmd {
        Init(a) => repo_cmds::init(ctx, a).await,
        Backup(a) => repo_cmds::backup(ctx, a).await,
        // A repository's, a plan's or job's, or (several regions) which is in which.
        Snapshots(a) => restore_cmds::snapshots(ctx, a).await,
        Ls(a) => restore_cmds::ls(ctx, a).await,
        Restore(a) => restore_cmds::restore(ctx, a).await,
        Verify(a) => restore_cmds::verify(ctx, a).await,
        Key(k) => repo_cmds::key(ctx, k).await,
        Plan(p) => plan_cmds::plan(ctx, p).await,
        Drill(a) => drill_cmds::drill(ctx, a).await,
        Status(a) => catalog_cmds::status(ctx, a).await,
        History(a) => catalog_cmds::history(ctx, a).await,
        Catalog(c) => catalog_cmds::catalog_cmd(ctx, c).await,
        Report(a) => report_cmds::report(ctx, a).await,
        RunDue(a) => schedule_cmds::run_due(ctx, a).await,
        Forget(a) => retention_cmds::forget(ctx, a).await,
        Prune(a) => retention_cmds::prune(ctx, a).await,
        Metrics(c) => metrics_cmds::metrics(ctx, c).await,
        Systemd(c) => systemd_cmds::systemd(ctx, c).await,
        Demo(a) => {
            crate::demo::run(
                a.dir,
                a.size,
                ctx.global.json,
                ctx.progress(),
                ctx.cancel.clone(),
            )
            .await
        }
        GenData(a) => tools_cmds::gen_data(a),
        BenchPipeline(a) => tools_cmds::bench_pipeline(a),
        BenchRestoreFloor(a) => tools_cmds::bench_restore_floor(ctx, a).await,
        Sync(a) => region_cmds::sync(ctx, a).await,
        Healthcheck(a) => region_cmds::healthcheck(ctx, a).await,
        Repair(a) => repair_cmds::repair(ctx, a).await,
        Unlock(a) => repair_cmds::unlock(ctx, a).await,
    }
}

/// What every command gets: global flags and the cancellation token.
pub struct Ctx {
    pub global: Global,
    pub cancel: Cancel,
}

impl Ctx {
    pub fn progress(&self) -> crate::progress::Progress {
        crate::progress::Progress::new(self.global.quiet || self.global.json)
    }

    /// What the use cases get: cancellation, the catalog, progress bars, and a printer for
    /// their events.
    pub fn env(&self) -> crate::ops::Env {
        crate::ops::Env {
            cancel: self.cancel.clone(),
            catalog: self.catalog_location().map_err(|e| match e {
                Error::Usage(m) => format!("invalid argument: {m}"),
                e => e.to_string(),
            }),
            progress: self.progress(),
            observer: std::sync::Arc::new(output::Printer {
                json: self.global.json,
                quiet: self.global.quiet,
            }),
        }
    }

    /// `--catalog` / `LIFEBOAT_CATALOG`, else the default file in the state directory. A
    /// URL with a password is refused on the command line (it would show in `ps`).
    pub fn catalog_location(&self) -> Result<String> {
        match &self.global.catalog {
            Some(loc) => {
                let from_env = std::env::var("LIFEBOAT_CATALOG").ok().as_deref() == Some(loc);
                if crate::catalog::has_password(loc) && !from_env {
                    return Err(Error::Usage(format!(
                        "--catalog {}: a password on the command line is visible to every user in `ps`; put the URL in LIFEBOAT_CATALOG, or use PGPASSWORD / ~/.pgpass",
                        crate::catalog::redact(loc)
                    )));
                }
                Ok(loc.clone())
            }
            None => Ok(crate::catalog::default_location()?.display().to_string()),
        }
    }

    /// The destinations of a command: the plan's when `plan` is given (then `--repo` is
    /// ignored, with a warning when `warn_repo`), else `--repo`×N or `--destinations`.
    pub fn target(
        &self,
        plan: Option<&std::path::Path>,
        warn_repo: bool,
    ) -> Result<crate::ops::target::Target> {
        use crate::ops::target::Target;
        if let Some(file) = plan {
            if warn_repo {
                if let Some(r) = self.global.repo.first() {
                    // LIFEBOAT_REPO may well be exported in the shell: ignore it, but say so.
                    eprintln!("warning: --repo/LIFEBOAT_REPO ({r}) is ignored: the plan names its destination");
                }
            }
            let p = crate::plan::load(file)?;
            return Target::from_plan(std::sync::Arc::new(p), self.global.min_regions);
        }
        let g = self.global.clone();
        let password = std::sync::Arc::new(move |location: &str, confirm: bool| {
            if let Some(cmd) = &g.password_command {
                let from = given_by("--password-command", "LIFEBOAT_PASSWORD_COMMAND", cmd);
                return crate::secret::run_command(cmd, &format!("password command ({from})"))
                    .map_err(|e| {
                        Error::Other(format!(
                            "repository password for {location}: {e}; {}",
                            e.fix
                        ))
                    });
            }
            read_secret(
                g.password_file.as_deref(),
                "LIFEBOAT_PASSWORD",
                location,
                confirm,
                "repository password",
            )
        });
        Target::from_locations(
            &self.global.repo,
            self.global.destinations.as_deref(),
            self.global.min_regions,
            password,
        )
    }
}

/// Whether a flag's value came from the flag or from its variable, for messages.
fn given_by(flag: &str, var: &str, value: impl AsRef<std::ffi::OsStr>) -> String {
    if std::env::var_os(var).as_deref() == Some(value.as_ref()) {
        var.to_string()
    } else {
        flag.to_string()
    }
}

/// A password file and a password command together are refused, as restic refuses them:
/// which one opens the repository would depend on a precedence nobody remembers.
fn check_password_sources(g: &Global) -> Result<()> {
    if let (Some(f), Some(c)) = (&g.password_file, &g.password_command) {
        return Err(Error::Usage(format!(
            "the repository password is given twice: by {} ({}) and by {}; keep one of them (unset the variable, or drop the flag)",
            given_by("--password-file", "LIFEBOAT_PASSWORD_FILE", f),
            f.display(),
            given_by("--password-command", "LIFEBOAT_PASSWORD_COMMAND", c),
        )));
    }
    Ok(())
}

pub fn read_secret(
    file: Option<&std::path::Path>,
    env: &str,
    location: &str,
    confirm: bool,
    what: &str,
) -> Result<Zeroizing<String>> {
    let p = read_secret_from(file, env, location, confirm, what)?;
    crate::secret::hold(&p);
    Ok(p)
}

fn read_secret_from(
    file: Option<&std::path::Path>,
    env: &str,
    location: &str,
    confirm: bool,
    what: &str,
) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        check_secret_file_mode(f);
        let raw = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
            Error::Usage(format!("cannot read password file {}: {e}", f.display()))
        })?);
        let first = raw.lines().next().unwrap_or("");
        if first.is_empty() {
            return Err(Error::Usage(format!(
                "password file {} is empty",
                f.display()
            )));
        }
        return Ok(Zeroizing::new(first.to_string()));
    }
    if let Ok(p) = std::env::var(env) {
        if !p.is_empty() {
            return Ok(Zeroizing::new(p));
        }
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let p = Zeroizing::new(
            rpassword::prompt_password(format!("enter {what} for {location}: "))
                .map_err(|e| Error::Other(format!("cannot read password: {e}")))?,
        );
        if p.is_empty() {
            return Err(Error::Usage("empty password".into()));
        }
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password(format!("enter {what} again: "))
                    .map_err(|e| Error::Other(format!("cannot read password: {e}")))?,
            );
            if *again != *p {
                return Err(Error::Usage("passwords do not match".into()));
            }
        }
        return Ok(p);
    }
    Err(Error::NoPassword {
        location: location.into(),
    })
}

fn check_secret_file_mode(f: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(f) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %f.display(), "password file is readable by group or others; chmod 600 it");
        }
    }
}

/// The exit code of a panic (a bug), as Rust's own for a panic that ends `main`.
const PANIC_EXIT: i32 = 101;

fn report_panic(payload: &(dyn std::any::Any + Send), json: bool) {
    if json {
        let rec = serde_json::json!({
            "message_type": "exit_error",
            "code": PANIC_EXIT,
            "message": format!(
                "internal error (a bug in lifeboat, please report it): {}",
                crate::secret::redact(crate::secret::panic_message(payload))
            ),
        });
        eprintln!("{rec}");
    }
}

fn report_error(e: &Error, json: bool) {
    eprintln!("error: {e}");
    if let Some(h) = e.hint() {
        eprintln!("hint: {h}");
    }
    if json {
        let rec = serde_json::json!({
            "message_type": "exit_error",
            "code": e.exit_code().code(),
            "message": e.to_string(),
        });
        eprintln!("{rec}");
    }
}

fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = match g.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.without_time().with_target(false).init(),
    }
}

/// Whether a panic payload is std's "failed printing to stdout: Broken pipe".
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    msg.contains("failed printing to std") && msg.contains("Broken pipe")
}

/// Keeps the panic message of a print into a closed pipe off stderr (see `main`); every
/// other panic is reported as std would, with every secret lifeboat holds redacted (T31).
fn quiet_broken_pipe_panics() {
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            crate::secret::print_panic(info);
        }
    }));
}

/// Key material must never land in a core dump (SR-9).
fn disable_core_dumps() {
    let lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid pointer to a stack value.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &lim);
    }
    // Not dumpable either: no core even where a handler ignores the limit, and no ptrace or
    // /proc/<pid>/mem reads by other processes of the same user (SR-9, T31).
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// glibc gives every thread that allocates its own arena and keeps freed chunk buffers in
/// them; with a dozen pipeline and I/O threads that is tens of MiB of peak RSS for nothing.
/// `builds_packs`: the command writes packs (backup, run-due, demo; forget and prune, which
/// repack).
fn tune_malloc(builds_packs: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called once, before any other thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // glibc raises its mmap threshold each time a large block is freed, after which the
        // 8 MiB pack buffers a backup builds stay resident in the heap. A fixed 4 MiB
        // threshold gives them back to the kernel when freed (~10 MiB less peak memory) at
        // some cost in speed; restore and verify keep the default — pack buffers are pooled
        // (`store::pool`), and the fixed threshold made them ~20 % slower (2026-11-24).
        // (A higher trim threshold as well was measured 2026-11-24: ~5 % faster backups,
        // but 10-15 MiB more peak memory, above restic's; not taken.)
        if builds_packs {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = builds_packs;
}

/// First Ctrl-C / SIGTERM: cancel cooperatively (cleanup runs). Second: exit 130 at once.
async fn watch_signals(cancel: Cancel) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    for round in 0.. {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        if round == 0 {
            eprintln!("interrupted: stopping cleanly (press Ctrl-C again to exit at once)");
            cancel.cancel();
        } else {
            std::process::exit(ExitCode::Interrupted.code() as i32);
        }
    }
}
