//! Finding and listing snapshots: what `lifeboat snapshots` lists ([`list`]: a repository's
//! snapshots, a plan's or a job's, or with several regions which snapshot is in which —
//! [`presence`]; a damaged snapshot file is reported and the others listed), the contents of
//! one snapshot ([`ls`]), and the snapshot a restore or drill of a job means by `latest` or
//! an id ([`find_job_snapshot`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::target::Target;
use super::Env;
use crate::error::ExitCode;
use crate::ids::SnapshotId;
use crate::plan::Plan;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::Node;
use crate::repo::{ObjectKind, Repository};
use crate::{Error, Result};

/// What `lifeboat snapshots` lists, by the form of its target.
#[derive(Debug, Clone)]
pub enum Listing {
    /// One repository: all its snapshots, oldest first.
    Repository(Vec<(SnapshotId, Snapshot)>),
    /// A plan with one destination: the plan's (or one job's) snapshots, oldest first.
    Plan {
        plan: String,
        snapshots: Vec<(SnapshotId, Snapshot)>,
    },
    /// Several regions (or a destinations file): which snapshot is in which region.
    Regions(Presence),
}

impl Listing {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Listing::Regions(p) => p.exit_code(),
            _ => ExitCode::Ok,
        }
    }
}

/// What `lifeboat snapshots` found: every snapshot that could be read, and the snapshot
/// files that could not.
#[derive(Debug, Clone)]
pub struct Snapshots {
    pub listing: Listing,
    /// Snapshot files that fail their seal or do not parse (T15), each also reported as a
    /// warning ([`Event::Warning`](super::Event::Warning)) when it was found; they are left
    /// out of `listing`.
    pub damaged: Vec<DamagedSnapshot>,
}

impl Snapshots {
    /// 13 when a snapshot file is damaged (an integrity problem was found, even though
    /// every readable snapshot was listed); else the listing's own code.
    pub fn exit_code(&self) -> ExitCode {
        if self.damaged.is_empty() {
            self.listing.exit_code()
        } else {
            ExitCode::Integrity
        }
    }
}

/// A snapshot file that cannot be read.
#[derive(Debug, Clone)]
pub struct DamagedSnapshot {
    pub id: SnapshotId,
    /// Its key in the repository: `snapshots/<id>`.
    pub file: String,
    /// The repository (or region) it was read from.
    pub location: String,
    /// Why it cannot be read.
    pub error: String,
}

impl DamagedSnapshot {
    fn new(id: SnapshotId, location: String, e: &Error) -> DamagedSnapshot {
        DamagedSnapshot {
            id,
            file: ObjectKind::Snapshot.key(&id),
            location,
            error: e.to_string(),
        }
    }

    fn report(&self, env: &Env) {
        env.emit(super::Event::Warning {
            message: format!(
                "snapshot file {} in {} cannot be read, so it is not listed: {}",
                self.file, self.location, self.error
            ),
            hint: Some(
                "`lifeboat verify` reports it too (exit 13); the other snapshots are intact. \
                 Put back a good copy of the file (another region holds one if it was synced \
                 there), or remove it and run `lifeboat catalog rebuild --forget-missing`"
                    .into(),
            ),
        });
    }
}

/// Which snapshot exists in which region.
#[derive(Debug, Clone)]
pub struct Presence {
    /// The regions' destination names, in the target's order.
    pub regions: Vec<String>,
    /// Every snapshot some region holds, oldest first.
    pub rows: Vec<PresenceRow>,
    /// The regions whose snapshots could not be listed (each was an [`Event::Warning`]).
    ///
    /// [`Event::Warning`]: super::Event::Warning
    pub unreachable: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Per region (in [`Presence::regions`] order): whether it holds the snapshot.
    pub present: Vec<bool>,
}

impl Presence {
    /// Exit 3 when some region could not be listed.
    pub fn exit_code(&self) -> ExitCode {
        if self.unreachable.is_empty() {
            ExitCode::Ok
        } else {
            ExitCode::Partial
        }
    }
}

/// `lifeboat snapshots`: with several regions their [`presence`] table (a plan's `job` is
/// checked, but the table shows every snapshot), else the plan's (or `job`'s) snapshots, else
/// every snapshot of the repository. A damaged snapshot file does not stop the listing: it
/// is reported (a warning each, and [`Snapshots::damaged`]) and the others are listed.
pub async fn list(env: &Env, target: &Target, job: Option<&str>) -> Result<Snapshots> {
    if let (Some(p), Some(j)) = (&target.plan, job) {
        p.select_jobs(Some(j))?;
    }
    if target.is_multi() {
        let (presence, damaged) = presence(env, target).await?;
        return Ok(Snapshots {
            listing: Listing::Regions(presence),
            damaged,
        });
    }
    let repo = target.open_for_read(None, false).await?;
    let (all, damaged) = repo.list_snapshots_readable().await?;
    let damaged: Vec<DamagedSnapshot> = damaged
        .iter()
        .map(|(id, e)| DamagedSnapshot::new(*id, repo.location(), e))
        .collect();
    for d in &damaged {
        d.report(env);
    }
    let listing = match &target.plan {
        Some(p) => Listing::Plan {
            plan: p.name.clone(),
            snapshots: of_plan(&all, p, job).into_iter().cloned().collect(),
        },
        None => Listing::Repository(all),
    };
    Ok(Snapshots { listing, damaged })
}

/// Which snapshot exists in which of the target's regions. A region whose listing fails is
/// reported ([`Event::Warning`](super::Event::Warning)) and counted as unreachable; the
/// snapshots themselves are read from the first region that answers. A snapshot file that
/// cannot be read is left out of the rows, reported as a warning and returned.
pub async fn presence(env: &Env, target: &Target) -> Result<(Presence, Vec<DamagedSnapshot>)> {
    let repo = target.open_for_read(None, false).await?;
    let n = target.regions.len();
    let mut present: BTreeMap<SnapshotId, Vec<bool>> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for (i, r) in target.regions.iter().enumerate() {
        match crate::repo::list_ids_in(r.store(), ObjectKind::Snapshot).await {
            Ok(ids) => {
                for id in ids {
                    present.entry(id).or_insert_with(|| vec![false; n])[i] = true;
                }
            }
            Err(e) => {
                env.warn(format!("region {}: cannot list snapshots: {e}", r.name));
                unreachable.push(r.name.clone());
            }
        }
    }
    let mut rows = Vec::new();
    let mut damaged = Vec::new();
    for (id, present) in present {
        let snapshot: Snapshot = match repo.load_json(ObjectKind::Snapshot, &id).await {
            Ok(s) => s,
            Err(e @ Error::Integrity { .. }) => {
                let d = DamagedSnapshot::new(id, repo.location(), &e);
                d.report(env);
                damaged.push(d);
                continue;
            }
            Err(e) => return Err(e),
        };
        rows.push(PresenceRow {
            id,
            snapshot,
            present,
        });
    }
    rows.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
    let presence = Presence {
        regions: target.regions.iter().map(|r| r.name.clone()).collect(),
        rows,
        unreachable,
    };
    Ok((presence, damaged))
}

/// The contents of a snapshot (`lifeboat ls`).
#[derive(Debug, Clone)]
pub struct Contents {
    pub snapshot_id: SnapshotId,
    /// Every entry with its path from the snapshot's root (`/…`), sorted by path.
    pub nodes: Vec<(PathBuf, Node)>,
}

/// `lifeboat ls`: every entry of snapshot `query` (`latest` or an id prefix).
pub async fn ls(target: &Target, query: &str) -> Result<Contents> {
    ls_job(target, None, query).await
}

/// Like [`ls`]; with a plan target and `job`, `latest` is the job's newest snapshot and an
/// id must belong to the job.
pub async fn ls_job(target: &Target, job: Option<&str>, query: &str) -> Result<Contents> {
    let repo = target.open_for_read(None, false).await?;
    let (id, snap) = match (&target.plan, job) {
        (Some(p), Some(j)) => {
            p.select_jobs(Some(j))?;
            find_job_snapshot(&repo, p, j, query).await?
        }
        _ => repo.find_snapshot(query).await?,
    };
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
    Ok(Contents {
        snapshot_id: id,
        nodes: rows,
    })
}

/// The snapshots of plan `p` (and of `job`, when given), in the listing's order.
pub fn of_plan<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    p: &Plan,
    job: Option<&str>,
) -> Vec<&'a (SnapshotId, Snapshot)> {
    snaps
        .iter()
        .filter(|(_, s)| {
            s.plan.as_deref() == Some(p.name.as_str())
                && job.is_none_or(|j| s.job.as_deref() == Some(j))
        })
        .collect()
}

/// A plan job's snapshot: `latest` (its newest, never one dated in the future:
/// [`Repository::latest_of`]) or an id (prefix) that must belong to the job.
pub async fn find_job_snapshot(
    repo: &Repository,
    p: &Plan,
    job: &str,
    query: &str,
) -> Result<(SnapshotId, Snapshot)> {
    let all = repo.list_snapshots().await?;
    let snaps: Vec<_> = of_plan(&all, p, Some(job)).into_iter().cloned().collect();
    if query == "latest" {
        // Never a snapshot dated in the future (T16): each passed over is a warning.
        let (newest, passed) = repo.latest_of(snaps);
        return newest.ok_or_else(|| Error::SnapshotNotFound {
            query: if passed == 0 {
                format!("latest of job {job} (the job has no snapshots yet; run `lifeboat backup --plan {} --job {job}`)", p.file.display())
            } else {
                format!("latest of job {job} (all {passed} of its snapshots are dated in the future; give an id to use one of them)")
            },
        });
    }
    let (id, s) = repo.find_snapshot(query).await?;
    if s.plan.as_deref() != Some(p.name.as_str()) || s.job.as_deref() != Some(job) {
        return Err(Error::Usage(format!(
            "snapshot {} belongs to plan {:?} job {:?}, not plan {:?} job {job:?}; `lifeboat snapshots --plan {}` lists this job's snapshots",
            id.short(),
            s.plan.as_deref().unwrap_or("-"),
            s.job.as_deref().unwrap_or("-"),
            p.name,
            p.file.display()
        )));
    }
    Ok((id, s))
}
