//! Repository commands: init, backup, snapshots, ls, restore, verify, key, demo.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{self, bytes, duration, print_json};
use super::Ctx;
use crate::error::ExitCode;
use crate::repo::keys::{KdfParams, DEFAULT_KDF_ITERATIONS, DEFAULT_KDF_MEMORY_MIB};
use crate::repo::verify::{ReadData, Severity};
use crate::repo::{InitOptions, Repository};
use crate::source::dir::DirSource;
use crate::source::BackupOptions;
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// argon2id memory cost in MiB (raise it on servers with memory to spare; every
    /// command that opens the repository needs this much memory once)
    #[arg(long, default_value_t = DEFAULT_KDF_MEMORY_MIB, value_name = "MIB")]
    pub kdf_memory: u32,
    /// argon2id iterations
    #[arg(long, default_value_t = DEFAULT_KDF_ITERATIONS, value_name = "N")]
    pub kdf_iterations: u32,
    /// Create the repository at this plan's destinations (all of them), with the password
    /// from the plan's [repository] section
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// zstd level for data blobs, 1–19 (0 stores blobs uncompressed). Fixed for the
    /// repository's lifetime; higher levels trade backup speed for a smaller repository
    #[arg(long, default_value_t = crate::repo::DEFAULT_COMPRESSION_LEVEL, value_name = "N")]
    pub compression_level: i32,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files or directories to back up (each becomes a top-level entry of the snapshot)
    #[arg(
        required_unless_present = "plan",
        conflicts_with = "plan",
        value_name = "SOURCE"
    )]
    pub sources: Vec<PathBuf>,
    /// Run the jobs of this plan file instead (its destination and password are used)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --plan: run only this job
    #[arg(long, requires = "plan", value_name = "NAME")]
    pub job: Option<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Re-read every file instead of trusting size/mtime/ctime/inode against the parent
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// List the snapshots of this plan (from its destination)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --plan: only this job's snapshots
    #[arg(long, requires = "plan", value_name = "NAME")]
    pub job: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`
    pub snapshot: String,
    /// Show mode, owner, size and mtime
    #[arg(long, short)]
    pub long: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id (or a unique prefix of at least 4 characters), or `latest`
    pub snapshot: String,
    /// Directory to restore into; must be missing or empty
    #[arg(long, short, value_name = "DIR", required_unless_present = "plan")]
    pub target: Option<PathBuf>,
    #[command(flatten)]
    pub plan: super::plan_cmds::PlanRestoreArgs,
    /// Restore from this region (a destination name) instead of the first that answers
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// When a blob fails to read or verify in the chosen region, read it from another (and say so)
    #[arg(long)]
    pub allow_fallback: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read every pack and verify every blob (decrypt, decompress, re-hash)
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Take the destinations and password from this plan file (then pick one with --region)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Read and verify a random subset of packs, e.g. `10%`
    #[arg(long, value_name = "N%")]
    pub read_data_subset: Option<String>,
    /// Check this region (a destination name); required when there are several
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Read the least recently verified packs first, at most SIZE bytes (e.g. `5GiB`);
    /// repeated runs cover every pack (the catalog keeps the ledger)
    #[arg(long, value_name = "SIZE", conflicts_with_all = ["read_data", "read_data_subset"])]
    pub budget: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a key slot (a new password) to the repository
    Add(KeyAddArgs),
    /// List the key slots
    List,
    /// Remove a key slot (not the one in use, never the last)
    Remove(KeyRemoveArgs),
}

#[derive(Args, Debug)]
pub struct KeyAddArgs {
    /// Read the new password from this file (else LIFEBOAT_NEW_PASSWORD, else a prompt)
    #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE", value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// argon2id memory cost in MiB for the new slot
    #[arg(long, default_value_t = DEFAULT_KDF_MEMORY_MIB, value_name = "MIB")]
    pub kdf_memory: u32,
    /// argon2id iterations for the new slot
    #[arg(long, default_value_t = DEFAULT_KDF_ITERATIONS, value_name = "N")]
    pub kdf_iterations: u32,
}

#[derive(Args, Debug)]
pub struct KeyRemoveArgs {
    /// Key id (or a unique prefix)
    pub id: String,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// State directory for the demo (default: $XDG_STATE_HOME/lifeboat/demo or ~/.local/state/lifeboat/demo)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Size of the sample SQL dump in MiB
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub size: u64,
}

#[derive(Args, Debug)]
pub struct GenDataArgs {
    /// `sql` (a plain-SQL dump with realistic entropy) or `tree` (many files of mixed kinds)
    #[arg(long)]
    pub kind: String,
    /// Approximate size in MiB
    #[arg(long)]
    pub size: u64,
    /// Output file (sql) or directory (tree)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct BenchPipelineArgs {
    /// Input file (its first --limit MiB are read into memory first)
    pub file: PathBuf,
    #[arg(long, default_value_t = 512)]
    pub limit: u64,
    /// zstd level (default: the level `init` gives new repositories)
    #[arg(long, default_value_t = crate::repo::DEFAULT_COMPRESSION_LEVEL)]
    pub level: i32,
    /// Run this many passes at once, one per thread, over the same data: with one per core,
    /// the per-core rate while every core is busy (shared caches and memory bandwidth), the
    /// rate a backup using all cores can at best reach on each
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

fn kdf(memory_mib: u32, iterations: u32) -> Result<KdfParams> {
    if memory_mib < 1 || iterations < 1 {
        return Err(Error::Usage(
            "--kdf-memory and --kdf-iterations must be at least 1".into(),
        ));
    }
    Ok(KdfParams {
        memory_kib: memory_mib * 1024,
        iterations,
        parallelism: 4,
    })
}

pub(super) async fn open_repo(ctx: &Ctx) -> Result<Repository> {
    let store = super::region_cmds::open_store(ctx)?;
    // Refuse early (exit 10) before asking for a password the user cannot use.
    crate::repo::read_config(&store).await?;
    let pw = ctx.password(&store.describe(), false)?;
    Repository::open(store, pw.as_bytes()).await
}

pub async fn dispatch(ctx: &Ctx, cmd: super::Command) -> Result<ExitCode> {
    use super::Command::*;
    match cmd {
        Init(a) => init(ctx, a).await,
        Backup(a) => backup(ctx, a).await,
        Snapshots(a) if a.plan.is_some() => super::plan_cmds::snapshots(ctx, a).await,
        Snapshots(_) if super::region_cmds::is_multi(ctx) => {
            super::region_cmds::snapshots(ctx).await
        }
        Snapshots(_) => snapshots(ctx).await,
        Ls(a) => ls(ctx, a).await,
        Restore(a) => restore(ctx, a).await,
        Verify(a) => verify(ctx, a).await,
        Key(k) => key(ctx, k).await,
        Plan(p) => super::plan_cmds::plan(ctx, p).await,
        Drill(a) => super::drill_cmds::drill(ctx, a).await,
        Status(a) => super::catalog_cmds::status(ctx, a).await,
        History(a) => super::catalog_cmds::history(ctx, a).await,
        Catalog(c) => super::catalog_cmds::catalog_cmd(ctx, c).await,
        RunDue(a) => super::schedule_cmds::run_due(ctx, a).await,
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
        GenData(a) => gen_data(a),
        BenchPipeline(a) => bench_pipeline(a),
        Sync(a) => super::region_cmds::sync(ctx, a).await,
        Healthcheck(a) => super::region_cmds::healthcheck(ctx, a).await,
    }
}

async fn init(ctx: &Ctx, a: InitArgs) -> Result<ExitCode> {
    let pctx = super::region_cmds::plan_ctx(ctx, a.plan.as_deref())?;
    let ctx = pctx.as_ref().unwrap_or(ctx);
    let store = super::region_cmds::open_store(ctx)?;
    if store.head("config").await?.is_some() {
        return Err(Error::RepoExists {
            location: store.describe(),
        });
    }
    let pw = ctx.password(&store.describe(), true)?;
    let opts = InitOptions {
        kdf: kdf(a.kdf_memory, a.kdf_iterations)?,
        compression_level: Some(a.compression_level),
        ..Default::default()
    };
    let repo = Repository::init(store, pw.as_bytes(), opts).await?;
    if ctx.global.json {
        print_json(
            &json!({"repository_id": repo.id(), "location": repo.location(), "key_id": repo.key_id}),
        );
    } else if !ctx.global.quiet {
        println!(
            "created repository {} at {}",
            repo.id().short(),
            repo.location()
        );
        println!("keep the password safe: without it the data cannot be read by anyone");
    }
    match repo.store.as_multi() {
        Some(m) => Ok(super::region_cmds::report_regions(ctx, &m.results())),
        None => Ok(ExitCode::Ok),
    }
}

async fn backup(ctx: &Ctx, a: BackupArgs) -> Result<ExitCode> {
    if a.plan.is_some() {
        return super::plan_cmds::backup(ctx, a).await;
    }
    let repo = open_repo(ctx).await?;
    let source = DirSource::new(a.sources)?;
    let caught_up = super::region_cmds::catch_up(ctx, &repo).await?;
    let opts = BackupOptions {
        tags: a.tags,
        host: a.host,
        force: a.force,
        ..Default::default()
    };
    let started = chrono::Utc::now();
    let result = crate::source::backup(
        &repo,
        Box::new(source),
        &opts,
        ctx.progress().bytes("backup"),
        ctx.cancel.clone(),
    )
    .await;
    // After the commit point, and never able to undo it (T30).
    let host = opts.host.clone().unwrap_or_else(crate::source::hostname);
    let catalog_warnings =
        super::catalog_cmds::record_backup(ctx, &repo, started, &host, None, result.as_ref(), &[])
            .await;
    let report = result?;
    let s = &report.snapshot.summary;
    let regions = repo.store.as_multi().map(|m| m.results());
    if ctx.global.json {
        let mut v = json!({
            "message_type": "summary",
            "snapshot_id": report.snapshot_id,
            "summary": s,
            "warnings": report.warnings,
            "partial": report.partial,
            "packs_adopted": report.packs_adopted,
            "blobs_resealed": report.blobs_resealed,
            "catalog_recorded": catalog_warnings.is_empty(),
            "catalog_warnings": catalog_warnings,
        });
        if let Some(r) = &regions {
            v["regions"] = json!(r);
            v["caught_up"] = json!(caught_up);
        }
        print_json(&v);
    } else if !ctx.global.quiet {
        println!(
            "files:      {} new, {} changed, {} unmodified",
            s.files_new, s.files_changed, s.files_unmodified
        );
        println!("dirs:       {}", s.dirs);
        println!(
            "processed:  {} in {}",
            bytes(s.bytes_processed),
            duration(s.duration_secs)
        );
        println!(
            "added:      {} of new data, {} stored in {} packs",
            bytes(s.bytes_added),
            bytes(s.bytes_stored),
            s.packs_added
        );
        if report.packs_adopted > 0 {
            println!(
                "reused:     {} packs left by an interrupted run",
                report.packs_adopted
            );
        }
        if report.blobs_resealed > 0 {
            println!(
                "re-sealed:  {} blobs failed verification before upload and were sealed again \
                 (memory or CPU fault?)",
                report.blobs_resealed
            );
        }
        if !report.warnings.is_empty() {
            println!("warnings:   {} (see above)", report.warnings.len());
        }
        println!("snapshot {} saved", report.snapshot_id.short());
    }
    let regions_ok = match &regions {
        Some(r) => super::region_cmds::report_regions(ctx, r) == ExitCode::Ok,
        None => true,
    };
    Ok(if report.partial || !regions_ok {
        ExitCode::Partial
    } else {
        ExitCode::Ok
    })
}

async fn snapshots(ctx: &Ctx) -> Result<ExitCode> {
    let repo = open_repo(ctx).await?;
    let snaps = repo.list_snapshots().await?;
    if ctx.global.json {
        print_json(&super::output::snapshots_json(
            snaps.iter().map(|(id, s)| (id, s)),
        ));
        return Ok(ExitCode::Ok);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<12} {:>10}  paths",
        "id", "time (UTC)", "host", "tags", "size"
    );
    println!("{}", "-".repeat(90));
    for (id, s) in &snaps {
        println!(
            "{:<10} {:<20} {:<16} {:<12} {:>10}  {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.tags.join(","),
            bytes(s.summary.bytes_processed),
            s.paths.join(" ")
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(ExitCode::Ok)
}

async fn ls(ctx: &Ctx, a: LsArgs) -> Result<ExitCode> {
    let repo = open_repo(ctx).await?;
    let (id, snap) = repo.find_snapshot(&a.snapshot).await?;
    let index = repo.load_index().await?;
    let mut stack = vec![(PathBuf::from("/"), snap.tree)];
    let mut rows = Vec::new();
    while let Some((dir, tree)) = stack.pop() {
        let t = repo.load_tree(&index, &tree).await?;
        for n in t.nodes.into_iter().rev() {
            let p = dir.join(&n.name);
            if let Some(s) = n.subtree {
                stack.push((p.clone(), s));
            }
            rows.push((p, n));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if ctx.global.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, n)| json!({"path": p, "type": n.kind, "mode": n.mode, "uid": n.uid, "gid": n.gid, "size": n.size, "mtime_ns": n.mtime_ns, "target": n.target}))
            .collect();
        print_json(&json!({"snapshot_id": id, "nodes": v}));
        return Ok(ExitCode::Ok);
    }
    for (p, n) in rows {
        if a.long {
            let mtime =
                chrono::DateTime::from_timestamp_nanos(n.mtime_ns).format("%Y-%m-%d %H:%M:%S");
            let target = n.target.map(|t| format!(" -> {t}")).unwrap_or_default();
            println!(
                "{} {:>6} {:>6} {:>12} {} {}{}",
                output::mode_string(n.kind, n.mode),
                n.uid,
                n.gid,
                n.size,
                mtime,
                p.display(),
                target
            );
        } else {
            println!("{}", p.display());
        }
    }
    Ok(ExitCode::Ok)
}

async fn restore(ctx: &Ctx, a: RestoreArgs) -> Result<ExitCode> {
    if a.plan.plan.is_some() {
        return super::plan_cmds::restore(ctx, a).await;
    }
    let target = a
        .target
        .clone()
        .ok_or_else(|| Error::Usage("--target DIR is required".into()))?;
    let repo =
        super::region_cmds::open_repo_for_read(ctx, a.region.as_deref(), a.allow_fallback).await?;
    let lock = repo.lock("restore", false).await?;
    let result = async {
        let (id, snap) = repo.find_snapshot(&a.snapshot).await?;
        let index = Arc::new(repo.load_index().await?);
        let report = crate::restore::restore(
            &repo,
            index,
            &snap,
            &target,
            ctx.progress().bytes("restore"),
            ctx.cancel.clone(),
        )
        .await?;
        Ok::<_, Error>((id, report))
    }
    .await;
    lock.release().await;
    let (id, report) = result?;
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "snapshot_id": id, "target": target, "report": report}),
        );
    } else if !ctx.global.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} hard links, {} in {}",
            id.short(),
            target.display(),
            report.files,
            report.dirs,
            report.symlinks,
            report.hardlinks,
            bytes(report.bytes),
            duration(report.duration_secs)
        );
    }
    for f in &report.fallback_reads {
        eprintln!("warning: {f}");
    }
    Ok(ExitCode::Ok)
}

fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s.trim_end_matches('%').parse().map_err(|_| {
        Error::Usage(format!(
            "--read-data-subset {s:?}: expected a percentage such as 10%"
        ))
    })?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(Error::Usage(format!(
            "--read-data-subset {s:?}: must be more than 0% and at most 100%"
        )));
    }
    Ok(v)
}

async fn verify(ctx: &Ctx, a: VerifyArgs) -> Result<ExitCode> {
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadData::Subset(parse_percent(s)?),
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let pctx = super::region_cmds::plan_ctx(ctx, a.plan.as_deref())?;
    let ctx = pctx.as_ref().unwrap_or(ctx);
    if a.region.is_none() && super::region_cmds::is_multi(ctx) {
        return Err(Error::Usage(format!(
            "verify checks one region at a time: pass --region NAME (regions: {})",
            super::region_cmds::region_names(ctx)?
        )));
    }
    if let Some(b) = &a.budget {
        super::catalog_cmds::parse_size(b)?;
    }
    let repo = super::region_cmds::open_repo_for_read(ctx, a.region.as_deref(), false).await?;
    let lock = repo.lock("verify", false).await?;
    let result = async {
        let (read, catalog) = match &a.budget {
            Some(b) => {
                let (c, r) = super::catalog_cmds::budget_selection(ctx, &repo, b).await?;
                (r, Some(c))
            }
            None => (read, None),
        };
        let report = crate::repo::verify::verify(
            &repo,
            read,
            ctx.progress().bytes("verify"),
            ctx.cancel.clone(),
        )
        .await?;
        Ok::<_, Error>((report, catalog))
    }
    .await;
    lock.release().await;
    let (mut report, catalog) = result?;
    super::catalog_cmds::after_verify(ctx, &repo, catalog, &mut report).await;
    let errors = report.errors();
    if ctx.global.json {
        print_json(&json!({"message_type": "summary", "errors": errors, "report": report}));
    } else {
        for f in &report.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            if f.severity != Severity::Info || ctx.global.verbose > 0 {
                eprintln!("{sev}: {}: {}", f.object, f.message);
            }
        }
        if !ctx.global.quiet {
            let infos = report
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Info)
                .count();
            println!(
                "checked {} snapshots, {} trees, {} index files, {} packs; read {} packs ({})",
                report.snapshots,
                report.trees,
                report.index_files,
                report.packs,
                report.packs_read,
                bytes(report.bytes_read)
            );
            if infos > 0 && ctx.global.verbose == 0 {
                println!("{infos} informational findings (-v to show)");
            }
            if errors == 0 {
                println!("no errors were found");
            } else {
                println!("{errors} errors were found");
            }
        }
    }
    Ok(if errors > 0 {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    })
}

async fn key(ctx: &Ctx, cmd: KeyCommand) -> Result<ExitCode> {
    let repo = open_repo(ctx).await?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if ctx.global.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| json!({"id": id, "current": *id == repo.key_id, "created": k.created, "host": k.host, "username": k.username, "kdf": k.kdf, "params": k.params}))
                    .collect();
                print_json(&v);
            } else {
                println!(
                    "  {:<10} {:<20} {:<16} {:<10} kdf",
                    "id", "created (UTC)", "host", "user"
                );
                for (id, k) in &keys {
                    let cur = if *id == repo.key_id { "*" } else { " " };
                    println!(
                        "{cur} {:<10} {:<20} {:<16} {:<10} argon2id m={}MiB t={}",
                        id.short(),
                        k.created.format("%Y-%m-%d %H:%M:%S"),
                        k.host,
                        k.username,
                        k.params.memory_kib / 1024,
                        k.params.iterations
                    );
                }
            }
        }
        KeyCommand::Add(a) => {
            let params = kdf(a.kdf_memory, a.kdf_iterations)?;
            let pw = super::read_secret(
                a.new_password_file.as_deref(),
                "LIFEBOAT_NEW_PASSWORD",
                &repo.location(),
                true,
                "new password",
            )?;
            let lock = repo.lock("key add", false).await?;
            let res = repo.add_key(pw.as_bytes(), params).await;
            lock.release().await;
            let id = res?;
            if ctx.global.json {
                print_json(&json!({"key_id": id}));
            } else if !ctx.global.quiet {
                println!(
                    "added key {} (verified: it opens the repository)",
                    id.short()
                );
            }
        }
        KeyCommand::Remove(a) => {
            let keys = repo.list_keys().await?;
            let q = a.id.to_ascii_lowercase();
            let hits: Vec<_> = keys
                .iter()
                .filter(|(id, _)| id.to_hex().starts_with(&q))
                .collect();
            let id = match hits.as_slice() {
                [(id, _)] => *id,
                [] => {
                    return Err(Error::Usage(format!(
                        "no key slot matches {:?}; `lifeboat key list` shows them",
                        a.id
                    )))
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "key prefix {:?} is ambiguous; give more characters",
                        a.id
                    )))
                }
            };
            let lock = repo.lock("key remove", true).await?;
            let res = repo.remove_key(&id).await;
            lock.release().await;
            res?;
            if ctx.global.json {
                print_json(&json!({"removed": id}));
            } else if !ctx.global.quiet {
                println!("removed key {}", id.short());
            }
        }
    }
    Ok(ExitCode::Ok)
}

fn gen_data(a: GenDataArgs) -> Result<ExitCode> {
    let size = a.size * 1024 * 1024;
    match a.kind.as_str() {
        "sql" => crate::demo::sample::write_sql_dump_file(&a.out, size, a.seed)?,
        "tree" => crate::demo::sample::write_tree(&a.out, size, a.seed)?,
        other => {
            return Err(Error::Usage(format!(
                "--kind {other:?}: expected sql or tree"
            )))
        }
    }
    Ok(ExitCode::Ok)
}

fn bench_pipeline(a: BenchPipelineArgs) -> Result<ExitCode> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(&a.file)
        .and_then(|f| f.take(a.limit << 20).read_to_end(&mut data))
        .map_err(|e| Error::io("read", &a.file, e))?;
    let keys = crate::crypto::Keys::derive(&crate::crypto::MasterKey::generate());
    let repo = crate::ids::RepoId::random();
    let threads = a.threads.max(1);
    let passes: Vec<crate::pipeline::CorePass> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    crate::pipeline::single_core_pass(
                        &data,
                        &keys,
                        &repo,
                        crate::repo::ChunkerParams::default(),
                        a.level,
                    )
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .collect()
    });
    // Per-core figures: each pass's rate, averaged over the passes that ran at once.
    let mb = data.len() as f64 / 1e6;
    let n = passes.len() as f64;
    let seal = passes.iter().map(|p| p.seal_secs).sum::<f64>() / n;
    let verify = passes.iter().map(|p| p.verify_secs).sum::<f64>() / n;
    print_json(&json!({
        "bytes": data.len(),
        "level": a.level,
        "threads": threads,
        "seconds": seal,
        "mb_per_sec": mb / seal,
        "verify_seconds": verify,
        "with_verify_mb_per_sec": mb / (seal + verify),
    }));
    Ok(ExitCode::Ok)
}
