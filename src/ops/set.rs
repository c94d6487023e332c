//! Recovery-point sets: a plan's `[[sets]]` groups jobs (a PostgreSQL database and an
//! uploads directory, a database and a btrfs volume) that an application keeps its state
//! in. [`backup_set`] starts them together and commits one set manifest; the set's drill
//! is [`super::drill`]'s (it restores every member into one environment).
//!
//! The order is what makes the recovery point consistent:
//! 1. every member is built (passwords read, tools found) before anything is frozen;
//! 2. freeze: each database exports a snapshot and holds its transaction open (PostgreSQL:
//!    `pg_export_snapshot()`; MariaDB: mariadb-dump's consistent snapshot opened under a
//!    brief global read lock — a set may hold both engines, each frozen its own way), each
//!    btrfs member takes its read-only snapshot — one after the other, in the set's order,
//!    within moments. The set's one consistency time is the earliest of these moments;
//! 3. members read live (plain directories: no file-system snapshot to take) are read
//!    first, right after that moment, so their drift is as short as it can be; then the
//!    frozen members are dumped/read from their held snapshots;
//! 4. every member commits an ordinary snapshot carrying the set id; only when all of them
//!    committed is the set manifest written — with several regions, only to the regions
//!    that hold every member snapshot (the others lag and `sync` brings them).
//!
//! Why a plain directory read after the database's moment is still a consistent pair for an
//! application that writes a file before it commits the row naming it: every row in the
//! database snapshot names a file that existed before the moment, and it is still there
//! when the directory is read. Files written later are extra (harmless); a file changed in
//! place during the read is the case a file-system snapshot (a btrfs member) closes.

use chrono::{DateTime, Utc};

use super::engine::{snapshot_source, BackupOptions};
use super::job::{JobFailure, JobOutcome, PlanRequest};
use super::target::Target;
use super::{record, Env, Event};
use crate::error::ExitCode;
use crate::ids::ObjectId;
use crate::plan::{JobSpec, Plan, SetSpec, SourceSpec};
use crate::repo::set::{new_set_id, Capture, SetManifest, SetMember, SET_FORMAT};
use crate::repo::{ObjectKind, Repository};
use crate::source::{Frozen, Source};
use crate::store::multi::{MultiStore, RegionStatus};
use crate::sys::host::hostname;
use crate::{Error, Result};

/// How a set's backup went.
#[derive(Debug, Clone)]
pub struct SetOutcome {
    pub set: String,
    /// The id every member snapshot of this run carries.
    pub set_id: String,
    /// The set's one consistency time (`None`: the set never got as far as its moment).
    pub consistency_time: Option<DateTime<Utc>>,
    /// How each member was captured, in the plan's order.
    pub captures: Vec<(String, Capture)>,
    /// The committed set manifest; `None` when a member failed (no recovery point).
    pub manifest: Option<ObjectId>,
    /// Why there is no manifest.
    pub failure: Option<JobFailure>,
}

impl SetOutcome {
    pub fn exit_code(&self) -> ExitCode {
        match &self.failure {
            Some(f) => f.code,
            None => ExitCode::Ok,
        }
    }
}

/// The jobs a `backup --plan` request covers, grouped: `Ok(job)` on its own, `Err(set)` a
/// whole set (a set is always backed up as one). `--job` may name a set, or a member (which
/// backs up its set).
pub fn plan_units<'a>(
    p: &'a Plan,
    req: &PlanRequest,
) -> Result<Vec<std::result::Result<&'a JobSpec, &'a SetSpec>>> {
    let jobs = match req.job.as_deref() {
        Some(n) if p.job(n).is_none() && p.sets.iter().any(|s| s.name == n) => {
            return Ok(vec![Err(p.select_set(n)?)]);
        }
        j => p.select_jobs(j)?,
    };
    let mut units: Vec<std::result::Result<&JobSpec, &SetSpec>> = Vec::new();
    for j in jobs {
        match p.set_of(&j.name) {
            None => units.push(Ok(j)),
            Some(s) => {
                if !units
                    .iter()
                    .any(|u| matches!(u, Err(o) if o.name == s.name))
                {
                    units.push(Err(s));
                }
            }
        }
    }
    Ok(units)
}

/// Freezing order: databases first (their snapshots are the set's moment), then file-system
/// snapshots, then what is read live.
fn freeze_rank(job: &JobSpec) -> u8 {
    match job.source {
        SourceSpec::Postgres(_) | SourceSpec::Mariadb(_) => 0,
        SourceSpec::Btrfs(_) | SourceSpec::Zfs(_) | SourceSpec::Lvm(_) => 1,
        _ => 2,
    }
}

fn failure(message: String, code: ExitCode) -> JobFailure {
    JobFailure {
        message,
        hint: None,
        code,
    }
}

/// Backs up set `set` of the target's plan: every member started together, one set
/// manifest committed when every member committed. Returns one [`JobOutcome`] per member
/// (also announced as [`Event::JobBackedUp`]) and the set's outcome
/// ([`Event::SetBackedUp`]). Only an interruption is an `Err`.
#[allow(clippy::too_many_arguments)]
pub async fn backup_set(
    env: &Env,
    target: &Target,
    p: &Plan,
    set: &SetSpec,
    repo: &Repository,
    fanout: Option<&MultiStore>,
    req: &PlanRequest,
) -> Result<(Vec<JobOutcome>, SetOutcome)> {
    let set_id = new_set_id();
    let host = req.host.clone().unwrap_or_else(hostname);
    let started = Utc::now();
    let members: Vec<&JobSpec> = set.jobs.iter().filter_map(|n| p.job(n)).collect::<Vec<_>>();
    let mut outcome = SetOutcome {
        set: set.name.clone(),
        set_id: set_id.clone(),
        consistency_time: None,
        captures: Vec::new(),
        manifest: None,
        failure: None,
    };
    // A member that cannot be built or frozen stops the set before anything is read: it
    // fails with its own error, the others as not backed up, and the set has no point.
    let stopped = |job: &str, stage: &str, e: &Error, mut outcome: SetOutcome| {
        let f = JobFailure::from(e);
        let why = format!("{stage}: member {job}: {}", f.message);
        let outs: Vec<JobOutcome> = members
            .iter()
            .map(|j| JobOutcome {
                job: j.name.clone(),
                result: Err(if j.name == job {
                    f.clone()
                } else {
                    failure(
                        format!("not backed up: set {} {why}", set.name),
                        ExitCode::SourceFailed,
                    )
                }),
            })
            .collect();
        outcome.failure = Some(JobFailure {
            message: format!("set {}: no recovery point: {why}", set.name),
            ..f
        });
        finish(env, outs, outcome)
    };

    // 1. Build every member (passwords, tools) before anything is frozen.
    let mut sources: Vec<(&JobSpec, Box<dyn Source>)> = Vec::new();
    for j in &members {
        match j.source.build(&j.name, &j.hooks) {
            Ok(s) => sources.push((j, s)),
            Err(e) => return Ok(stopped(&j.name, "could not start", &e, outcome)),
        }
    }

    // 2. Freeze, databases first, off the async threads (each blocks for a moment).
    sources.sort_by_key(|(j, _)| freeze_rank(j));
    let mut frozen: Vec<(&JobSpec, Box<dyn Source>, Frozen)> = Vec::new();
    for (j, mut src) in sources {
        env.cancel.check()?;
        let res = tokio::task::spawn_blocking(move || {
            let r = src.freeze();
            (src, r)
        })
        .await
        .map_err(|e| Error::Other(format!("freezing set member {} crashed: {e}", j.name)))?;
        match res {
            (src, Ok(f)) => frozen.push((j, src, f)),
            (_, Err(e)) => {
                // Dropping the other members' sources ends their held snapshots.
                drop(frozen);
                return Ok(stopped(&j.name, "could not be frozen", &e, outcome));
            }
        }
    }
    let moment = frozen
        .iter()
        .filter_map(|(_, _, f)| f.consistency_time)
        .min()
        .unwrap_or_else(Utc::now);
    outcome.consistency_time = Some(moment);
    outcome.captures = members
        .iter()
        .filter_map(|m| {
            frozen
                .iter()
                .find(|(j, _, _)| j.name == m.name)
                .map(|(_, _, f)| (m.name.clone(), f.capture))
        })
        .collect();
    tracing::info!(set = %set.name, %set_id, consistency_time = %moment, "set frozen");

    // 3. Live reads first (shortest drift), then the frozen members.
    frozen.sort_by_key(|(_, _, f)| f.capture != Capture::PlainRead);
    let mut outs: Vec<JobOutcome> = Vec::new();
    let mut committed: Vec<(&JobSpec, crate::ids::SnapshotId, DateTime<Utc>, Capture)> = Vec::new();
    for (job, src, f) in frozen {
        if env.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let opts = BackupOptions {
            tags: [job.tags.clone(), req.tags.clone()].concat(),
            host: req.host.clone(),
            plan: Some(p.name.clone()),
            job: Some(job.name.clone()),
            force: req.force,
            set: Some(set_id.clone()),
        };
        let run_started = Utc::now();
        let res = snapshot_source(
            repo,
            fanout,
            src,
            &opts,
            env.progress.bytes(&job.name),
            env.cancel.clone(),
        )
        .await;
        record::record_backup(
            env,
            repo,
            run_started,
            &host,
            Some((&p.name, &job.name)),
            res.as_ref(),
            // Each member's regions as they stand after it (a region may fail mid-set).
            &super::record::RecordedRegion::of(target, fanout),
        )
        .await;
        if let Err(Error::Interrupted) = res {
            return Err(Error::Interrupted);
        }
        if let Ok(r) = &res {
            committed.push((job, r.snapshot_id, r.snapshot.consistency_time, f.capture));
        }
        let o = JobOutcome {
            job: job.name.clone(),
            result: res.as_ref().map(Clone::clone).map_err(JobFailure::from),
        };
        env.emit(Event::JobBackedUp(Box::new(o.clone())));
        outs.push(o);
    }

    // 4. The set manifest, only when every member committed.
    if let Some((job, f)) = outs
        .iter()
        .find_map(|o| o.result.as_ref().err().map(|f| (o.job.clone(), f.clone())))
    {
        outcome.failure = Some(JobFailure {
            message: format!(
                "set {}: no recovery point: member {job} failed ({}); the members that committed are ordinary snapshots carrying set id {set_id}, but no set manifest names them",
                set.name, f.message
            ),
            ..f
        });
        return Ok(finish_quiet(env, outs, outcome));
    }
    let manifest = SetManifest {
        version: SET_FORMAT,
        set_id: set_id.clone(),
        plan: p.name.clone(),
        name: set.name.clone(),
        time: started,
        consistency_time: moment,
        host,
        members: members
            .iter()
            .filter_map(|m| {
                committed
                    .iter()
                    .find(|(j, ..)| j.name == m.name)
                    .map(|(j, id, t, c)| SetMember {
                        job: j.name.clone(),
                        kind: j.source.kind().to_string(),
                        snapshot: *id,
                        capture: *c,
                        consistency_time: *t,
                    })
            })
            .collect(),
        program_version: env!("CARGO_PKG_VERSION").into(),
    };
    match commit_manifest(repo, fanout, &manifest).await {
        Ok(id) => {
            tracing::info!(set = %set.name, manifest = %id, "set manifest committed");
            record::record_set(env, repo, &holding_regions(target, fanout), &id, &manifest).await;
            outcome.manifest = Some(id);
        }
        Err(e) => {
            let f = JobFailure::from(&e);
            outcome.failure = Some(JobFailure {
                message: format!(
                    "set {}: every member committed, but the set manifest could not be: {}",
                    set.name, f.message
                ),
                ..f
            });
        }
    }
    Ok(finish_quiet(env, outs, outcome))
}

/// Writes the manifest under a shared lock; with several regions, only to those holding
/// every member snapshot.
async fn commit_manifest(
    repo: &Repository,
    fanout: Option<&MultiStore>,
    manifest: &SetManifest,
) -> Result<ObjectId> {
    repo.with_lock("backup", false, async |lock| {
        if let Some(multi) = fanout {
            let required: Vec<(String, Option<u64>)> = manifest
                .members
                .iter()
                .map(|m| (ObjectKind::Snapshot.key(&m.snapshot), None))
                .collect();
            multi.prepare_commit(&["snapshots/"], &required).await?;
        }
        lock.check()?;
        repo.save_json(ObjectKind::Set, manifest).await
    })
    .await
}

/// The catalog names of the regions a manifest just committed to: with a fan-out, those
/// still complete (a region that failed or lagged was not written); else the one region.
fn holding_regions(target: &Target, fanout: Option<&MultiStore>) -> Vec<String> {
    match fanout {
        Some(m) => target
            .regions
            .iter()
            .zip(m.results())
            .filter(|(_, r)| r.status == RegionStatus::Complete)
            .map(|(t, _)| t.catalog_region.clone())
            .collect(),
        None => target
            .regions
            .iter()
            .map(|r| r.catalog_region.clone())
            .collect(),
    }
}

/// Announces members that never ran (each as [`Event::JobBackedUp`]) and the set.
fn finish(env: &Env, outs: Vec<JobOutcome>, outcome: SetOutcome) -> (Vec<JobOutcome>, SetOutcome) {
    for o in &outs {
        env.emit(Event::JobBackedUp(Box::new(o.clone())));
    }
    finish_quiet(env, outs, outcome)
}

fn finish_quiet(
    env: &Env,
    outs: Vec<JobOutcome>,
    outcome: SetOutcome,
) -> (Vec<JobOutcome>, SetOutcome) {
    env.emit(Event::SetBackedUp(Box::new(outcome.clone())));
    (outs, outcome)
}

/// The newest committed manifest of set `name` of plan `plan` in `repo` whose members are
/// all present, with its id: what a drill of the set restores. `query` is `latest` or a
/// manifest/set id prefix.
pub async fn find_set(
    repo: &Repository,
    plan: &str,
    name: &str,
    query: &str,
) -> Result<(ObjectId, SetManifest)> {
    let snapshots: std::collections::HashSet<_> = repo
        .list_ids(ObjectKind::Snapshot)
        .await?
        .into_iter()
        .collect();
    let mut sets: Vec<(ObjectId, SetManifest)> = repo
        .list_sets()
        .await?
        .into_iter()
        .filter(|(_, m)| m.plan == plan && m.name == name)
        .collect();
    let complete = |m: &SetManifest| m.members.iter().all(|x| snapshots.contains(&x.snapshot));
    let found = if query == "latest" {
        sets.retain(|(_, m)| complete(m));
        sets.pop()
    } else {
        let q = query.to_ascii_lowercase();
        let hits: Vec<_> = sets
            .into_iter()
            .filter(|(id, m)| id.to_string().starts_with(&q) || m.set_id.starts_with(&q))
            .collect();
        if hits.len() > 1 {
            return Err(Error::Usage(format!(
                "{query:?} matches {} recovery points of set {name}; give more characters",
                hits.len()
            )));
        }
        hits.into_iter().next()
    };
    let (id, m) = found.ok_or_else(|| {
        Error::Other(format!(
            "no {} recovery point of set {name} (plan {plan}) in this region{}; a set whose member failed has none: back the set up with `lifeboat backup --plan … --job {name}`",
            if query == "latest" { "committed" } else { "matching" },
            if query == "latest" { " with every member present".to_string() } else { format!(" for {query:?}") }
        ))
    })?;
    if let Some(missing) = m.members.iter().find(|x| !snapshots.contains(&x.snapshot)) {
        return Err(Error::SnapshotNotFound {
            query: format!(
                "member {} (snapshot {}) of recovery point {} of set {name}: it was forgotten or never reached this region",
                missing.job,
                missing.snapshot.short(),
                id.short()
            ),
        });
    }
    Ok((id, m))
}
