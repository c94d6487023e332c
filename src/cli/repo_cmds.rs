//! Repository commands: `init`, `backup` (paths or a plan's jobs) and `key`. Each parses its
//! flags, calls its use case in `ops` and renders the report.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{bytes, duration, print_json, print_regions};
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::backup::{PathsBackup, PathsRequest, PlanBackup, PlanRequest};
use crate::repo::keys::{KdfParams, DEFAULT_KDF_ITERATIONS, DEFAULT_KDF_MEMORY_MIB};
use crate::repo::InitOptions;
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

pub async fn init(ctx: &Ctx, a: InitArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), false)?;
    let opts = InitOptions {
        kdf: kdf(a.kdf_memory, a.kdf_iterations)?,
        compression_level: Some(a.compression_level),
        ..Default::default()
    };
    let crate::ops::keys::Created { repo, fanout } = crate::ops::keys::init(&target, opts).await?;
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
    Ok(match fanout {
        Some(m) => regions_exit(ctx, &m.results()),
        None => ExitCode::Ok,
    })
}

/// Prints the per-region lines and returns `Partial` when some region did not complete.
fn regions_exit(ctx: &Ctx, results: &[crate::store::multi::RegionResult]) -> ExitCode {
    print_regions(ctx.global.json, ctx.global.quiet, results);
    if results
        .iter()
        .all(|r| r.status == crate::store::multi::RegionStatus::Complete)
    {
        ExitCode::Ok
    } else {
        ExitCode::Partial
    }
}

pub async fn backup(ctx: &Ctx, a: BackupArgs) -> Result<ExitCode> {
    if a.plan.is_some() {
        let target = ctx.target(a.plan.as_deref(), true)?;
        let req = PlanRequest {
            job: a.job,
            tags: a.tags,
            host: a.host,
            force: a.force,
        };
        let report = crate::ops::backup::backup_plan(&ctx.env(), &target, req).await?;
        return Ok(render_plan_backup(ctx, &report));
    }
    let target = ctx.target(None, false)?;
    let req = PathsRequest {
        paths: a.sources,
        tags: a.tags,
        host: a.host,
        force: a.force,
    };
    let report = crate::ops::backup::backup_paths(&ctx.env(), &target, req).await?;
    Ok(render_paths_backup(ctx, &report))
}

fn render_plan_backup(ctx: &Ctx, r: &PlanBackup) -> ExitCode {
    // The jobs' own lines were printed as they finished (`Event::JobBackedUp`).
    if let Some(regions) = &r.regions {
        print_regions(ctx.global.json, ctx.global.quiet, regions);
    }
    if ctx.global.json {
        let jobs: Vec<_> = r
            .jobs
            .iter()
            .map(|j| match &j.result {
                Ok(s) => json!({"job": j.job, "ok": true, "snapshot_id": s.snapshot_id, "summary": s.snapshot.summary, "source_meta": s.snapshot.source.to_json(), "warnings": s.warnings}),
                Err(f) => json!({"job": j.job, "ok": false, "error": f.message, "code": f.code.code()}),
            })
            .collect();
        let sets: Vec<_> = r
            .sets
            .iter()
            .map(|s| json!({
                "set": s.set,
                "set_id": s.set_id,
                "ok": s.manifest.is_some(),
                "manifest": s.manifest,
                "consistency_time": s.consistency_time,
                "captures": s.captures.iter().map(|(j, c)| json!({"job": j, "capture": c})).collect::<Vec<_>>(),
                "error": s.failure.as_ref().map(|f| &f.message),
            }))
            .collect();
        print_json(
            &json!({"message_type": "summary", "plan": r.plan, "jobs": jobs, "sets": sets, "regions": r.regions}),
        );
    }
    r.exit_code()
}

fn render_paths_backup(ctx: &Ctx, b: &PathsBackup) -> ExitCode {
    let report = &b.report;
    let s = &report.snapshot.summary;
    if ctx.global.json {
        let mut v = json!({
            "message_type": "summary",
            "snapshot_id": report.snapshot_id,
            "summary": s,
            "warnings": report.warnings,
            "partial": report.partial,
            "packs_adopted": report.packs_adopted,
            "packs_lost": report.packs_lost,
            "blobs_resealed": report.blobs_resealed,
            "packs_rebuilt": report.packs_rebuilt,
            "catalog_recorded": b.catalog_warnings.is_empty(),
            "catalog_warnings": b.catalog_warnings,
        });
        if let Some(r) = &b.regions {
            v["regions"] = json!(r);
            v["caught_up"] = json!(b.caught_up);
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
        if !report.packs_lost.is_empty() {
            println!(
                "healed:     {} packs were missing from the repository; what this source still \
                 has was stored again (`lifeboat repair` finds snapshots that still need them)",
                report.packs_lost.len()
            );
        }
        if report.blobs_resealed > 0 {
            println!(
                "re-sealed:  {} blobs failed verification before upload and were sealed again \
                 (memory or CPU fault?)",
                report.blobs_resealed
            );
        }
        if report.packs_rebuilt > 0 {
            println!(
                "rebuilt:    {} packs changed in memory before upload and were rebuilt from \
                 their parity (memory or CPU fault?)",
                report.packs_rebuilt
            );
        }
        if !report.warnings.is_empty() {
            println!("warnings:   {} (see above)", report.warnings.len());
        }
        println!("snapshot {} saved", report.snapshot_id.short());
    }
    if let Some(r) = &b.regions {
        print_regions(ctx.global.json, ctx.global.quiet, r);
    }
    b.exit_code()
}

pub async fn key(ctx: &Ctx, cmd: KeyCommand) -> Result<ExitCode> {
    let repo = ctx.target(None, false)?.open_for_write().await?.repo;
    match cmd {
        KeyCommand::List => {
            let keys = crate::ops::keys::list(&repo).await?;
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
            let id = crate::ops::keys::add(&repo, pw.as_bytes(), params).await?;
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
            let id = crate::ops::keys::remove(&repo, &a.id).await?;
            if ctx.global.json {
                print_json(&json!({"removed": id}));
            } else if !ctx.global.quiet {
                println!("removed key {}", id.short());
            }
        }
    }
    Ok(ExitCode::Ok)
}
