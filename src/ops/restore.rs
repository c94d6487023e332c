//! The restore use cases: [`restore_tree`] (`restore --target`: a snapshot's file tree into
//! a new or empty directory) and [`restore_job`] (`restore --plan --job`: a plan job's
//! snapshot restored the way its kind needs — a database dump loaded into a `to` server, a
//! block or LVM image written sparse into a new `to` file, a file tree into a directory).
//! Both read one region (or the first that answers), optionally falling back to the others
//! blob by blob, under a shared lock. The `to` server's password comes from the caller.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use super::target::Target;
use super::Env;
use crate::error::ExitCode;
use crate::ids::SnapshotId;
use crate::plan::{JobSpec, Plan, SourceSpec};
use crate::repo::snapshot::SourceMeta;
use crate::repo::Repository;
use crate::restore::database::{
    restore_mariadb, restore_postgres, DbRestoreOptions, DbRestoreReport,
};
use crate::restore::RestoreReport;
use crate::source::db::DbConn;
use crate::{Error, Result};

/// `restore SNAPSHOT --target DIR`.
#[derive(Debug, Clone)]
pub struct TreeRequest {
    /// `latest` or an id prefix.
    pub snapshot: String,
    /// Must be missing or empty.
    pub target_dir: PathBuf,
    /// Read from this region instead of the first that answers.
    pub region: Option<String>,
    /// Read a blob that fails in the chosen region from another.
    pub allow_fallback: bool,
}

/// The result of `restore --target`.
#[derive(Debug, Clone)]
pub struct TreeRestore {
    pub snapshot_id: SnapshotId,
    pub target_dir: PathBuf,
    /// With the blobs read from another region (`fallback_reads`).
    pub report: RestoreReport,
}

impl TreeRestore {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Ok
    }
}

/// `restore --target`: the snapshot's file tree into `target_dir`.
pub async fn restore_tree(env: &Env, target: &Target, req: TreeRequest) -> Result<TreeRestore> {
    let repo = target
        .open_for_read(req.region.as_deref(), req.allow_fallback)
        .await?;
    repo.with_lock("restore", false, async |_| {
        // The snapshot and the index are read at once: on S3 each is a listing and GETs.
        let ((id, snap), index) =
            tokio::try_join!(repo.find_snapshot(&req.snapshot), repo.load_index())?;
        let index = Arc::new(index);
        let report = crate::restore::restore(
            &repo,
            index,
            &snap,
            &req.target_dir,
            env.progress.bytes("restore"),
            env.cancel.clone(),
        )
        .await?;
        Ok(TreeRestore {
            snapshot_id: id,
            target_dir: req.target_dir.clone(),
            report,
        })
    })
    .await
}

/// `restore --plan --job`: which snapshot of which job, and where it goes.
pub struct JobRequest {
    pub job: String,
    /// `latest` (the job's newest) or an id prefix of one of the job's snapshots.
    pub snapshot: String,
    /// Database jobs: the `postgres://` or `mariadb://` URL to load into; block and LVM
    /// jobs: the image file to create.
    pub to: Option<String>,
    /// The password for the `to` server, if it needs one.
    pub to_password: Option<Zeroizing<String>>,
    /// Load into a database that already holds objects.
    pub force: bool,
    /// PostgreSQL: roles and tablespaces first.
    pub globals: bool,
    /// Do not restore ownership (a server without the dumped accounts).
    pub no_owner: bool,
    /// PostgreSQL: everything in the default tablespace.
    pub no_tablespaces: bool,
    /// PostgreSQL: parallel pg_restore workers.
    pub jobs: usize,
    /// File-tree jobs: the directory to restore into.
    pub target_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub allow_fallback: bool,
}

/// The result of `restore --plan --job`.
#[derive(Debug, Clone)]
pub struct JobRestore {
    pub snapshot_id: SnapshotId,
    pub job: String,
    pub restored: Restored,
}

impl JobRestore {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Ok
    }
}

/// What a job's restore produced, by the snapshot's kind.
#[derive(Debug, Clone)]
pub enum Restored {
    /// A dump loaded into a server.
    Database {
        report: DbRestoreReport,
        duration_secs: f64,
    },
    /// A block or LVM image written sparse into a new file.
    Image { bytes: u64, file: PathBuf },
    /// A file tree restored into a directory.
    Tree {
        target_dir: PathBuf,
        report: RestoreReport,
    },
}

/// `restore --plan --job`: the job's snapshot from the target's plan, restored by its kind.
pub async fn restore_job(env: &Env, target: &Target, req: JobRequest) -> Result<JobRestore> {
    let p: &Plan = target
        .plan
        .as_deref()
        .ok_or_else(|| Error::Usage("restore_job needs a plan's target".into()))?;
    let job = p.select_jobs(Some(&req.job))?[0];
    let repo = target
        .open_for_read(req.region.as_deref(), req.allow_fallback)
        .await?;
    repo.with_lock("restore", false, async |_| {
        restore_locked(env, p, job, &repo, req).await
    })
    .await
}

async fn restore_locked(
    env: &Env,
    p: &Plan,
    job: &JobSpec,
    repo: &Repository,
    req: JobRequest,
) -> Result<JobRestore> {
    let ((id, snap), index) = tokio::try_join!(
        super::snapshots::find_job_snapshot(repo, p, &job.name, &req.snapshot),
        repo.load_index()
    )?;
    let index = Arc::new(index);
    let to = || {
        req.to.clone().ok_or_else(|| {
            Error::Usage(format!(
                "job {} is a {} job: give --to",
                job.name,
                snap.source.kind()
            ))
        })
    };
    let restored = match &snap.source {
        SourceMeta::Database { .. } => {
            let (scheme, conn) = DbConn::parse_url(&to()?)?;
            if scheme != snap.source.kind() {
                return Err(Error::Usage(format!(
                    "snapshot {} is a {} dump; --to must be a {}:// URL",
                    id.short(),
                    snap.source.kind(),
                    snap.source.kind()
                )));
            }
            let (bin_dir, no_defaults) = match &job.source {
                SourceSpec::Postgres(s) => (s.bin_dir.clone(), false),
                SourceSpec::Mariadb(s) => (s.bin_dir.clone(), s.no_defaults),
                _ => (None, false),
            };
            let opts = DbRestoreOptions {
                force: req.force,
                globals: req.globals,
                jobs: req.jobs,
                bin_dir,
                no_defaults,
                no_owner: req.no_owner,
                no_tablespaces: req.no_tablespaces,
                create_roles: Vec::new(),
            };
            let pw = req.to_password;
            let clock = Instant::now();
            let report = if scheme == "postgres" {
                restore_postgres(repo, &index, &snap, &conn, pw, &opts, &env.cancel).await?
            } else {
                restore_mariadb(repo, &index, &snap, &conn, pw, &opts, &env.cancel).await?
            };
            Restored::Database {
                report,
                duration_secs: clock.elapsed().as_secs_f64(),
            }
        }
        SourceMeta::Image { meta, .. } => {
            let path = PathBuf::from(to()?);
            let node = meta.file.clone();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Error::Usage(format!(
                        "{} already exists; restore a block image into a new file",
                        path.display()
                    )),
                    _ => Error::io("create", &path, e),
                })?;
            let res =
                crate::restore::restore_sparse(repo, &index, &snap, &node, &file, &env.cancel)
                    .await;
            match res {
                Ok(bytes) => Restored::Image { bytes, file: path },
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
        _ => {
            let target_dir = req.target_dir.clone().ok_or_else(|| {
                Error::Usage(format!(
                    "job {} restores a file tree: give --target DIR",
                    job.name
                ))
            })?;
            let report = crate::restore::restore(
                repo,
                index,
                &snap,
                &target_dir,
                env.progress.bytes("restore"),
                env.cancel.clone(),
            )
            .await?;
            Restored::Tree { target_dir, report }
        }
    };
    Ok(JobRestore {
        snapshot_id: id,
        job: job.name.clone(),
        restored,
    })
}

/// `bench-restore-floor` (hidden, for `scripts/bench*`): what to measure.
#[derive(Debug, Clone)]
pub struct FloorRequest {
    /// `latest` or an id prefix.
    pub snapshot: String,
    /// Measure the local floor, writing its scratch file here.
    pub scratch: Option<PathBuf>,
    /// Measure the S3 read floor of this bucket (the location `--repo` names).
    pub s3: Option<crate::store::s3::S3Config>,
    /// Measure the upload floor of these regions (one alone, then all): the snapshot's packs
    /// PUT from memory under a scratch prefix, removed afterwards.
    pub put: Vec<crate::store::s3::S3Config>,
}

/// The floors a restore of one snapshot is measured against.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Floors {
    pub snapshot_id: SnapshotId,
    pub local: Option<crate::restore::floor::LocalFloor>,
    /// Every pack of the snapshot fetched whole with aws-sdk-s3, as many at once as a
    /// restore from S3 keeps in flight.
    pub s3: Option<crate::store::s3::floor::ReadFloor>,
    /// The snapshot's packs PUT with aws-sdk-s3 to one region, then to every region given,
    /// as many at once as a backup uploads.
    pub put: Option<crate::store::s3::floor::WriteFloor>,
    /// Wall seconds of one key derivation with the repository's key slot: every command pays
    /// it once before it reads anything, restic its scrypt likewise. The floors leave it out.
    pub key_derivation_secs: f64,
}

/// Measures the floors of [`FloorRequest`] (no lock: it only reads, and writes nothing into
/// the repository).
pub async fn floors(target: &Target, req: FloorRequest) -> Result<Floors> {
    let repo = target.open_for_read(None, false).await?;
    let (id, snap) = repo.find_snapshot(&req.snapshot).await?;
    let index = repo.load_index().await?;
    let key_derivation_secs = repo.key_derivation_secs().await?;
    let local = match &req.scratch {
        Some(dir) => Some(crate::restore::floor::local_floor(&repo, &index, &snap, dir).await?),
        None => None,
    };
    let s3 = match &req.s3 {
        Some(cfg) => {
            let keys = crate::restore::floor::snapshot_packs(&repo, &index, &snap).await?;
            let sizes: u64 = index
                .packs()
                .iter()
                .filter(|(id, _)| keys.binary_search(&crate::repo::pack_key(id)).is_ok())
                .map(|(_, size)| size)
                .sum();
            let n = crate::restore::remote_packs_in_flight(sizes / keys.len().max(1) as u64);
            Some(
                crate::store::s3::floor::read_floor(cfg, &keys, n)
                    .await
                    .map_err(Error::Other)?,
            )
        }
        None => None,
    };
    let put = if req.put.is_empty() {
        None
    } else {
        let keys = crate::restore::floor::snapshot_packs(&repo, &index, &snap).await?;
        let mut packs = Vec::with_capacity(keys.len());
        for k in &keys {
            packs.push(repo.store.get(k).await?);
        }
        let scratch = format!("bench-floor-{}", hex::encode(rand::random::<[u8; 6]>()));
        Some(
            crate::store::s3::floor::write_floor(
                &req.put,
                &packs,
                crate::pipeline::UPLOAD_CONCURRENCY,
                &scratch,
            )
            .await
            .map_err(Error::Other)?,
        )
    };
    Ok(Floors {
        snapshot_id: id,
        local,
        s3,
        put,
        key_derivation_secs,
    })
}
