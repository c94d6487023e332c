//! `lifeboat forget`: applies the keep rules ([`crate::repo::retention`]) to a repository's
//! snapshots, group by group (a plan job; host + paths for ad-hoc backups), in every region
//! of the target, and removes the snapshots no rule keeps. Lifeboat's own rules come from the
//! catalog (the newest snapshot whose drill passed, per job and region) and from the live
//! locks (a drill marks the snapshot it restores). Deleting a snapshot manifest frees no data
//! (that is `prune`'s job), so forget runs under a shared lock beside backups.
//!
//! A region that cannot be reached is named in the report (exit 3) and the others go on;
//! the next run catches it up — the rules are the same, so it converges.
//!
//! The rules are applied at the store's current time ([`Repository::now`], measured by the
//! lock): snapshots dated beyond it are kept and counted by no rule. An append-only
//! repository (`--append-only`, `[retention] append_only`) has `keep_within` counted from
//! that time and refuses count rules unless they are allowed (RELIABILITY T16).

use std::collections::HashMap;

use chrono::Utc;
use serde::Serialize;

use super::prune::{PruneRegion, PruneRequest};
use super::record::open_best_effort;
use super::target::{Region, Target};
use super::{Env, Event};
use crate::error::ExitCode;
use crate::ids::SnapshotId;
use crate::plan::RetentionSpec;
use crate::repo::retention::{self, Candidate, Policy, Protected, Reason};
use crate::repo::snapshot::Snapshot;
use crate::repo::{ObjectKind, Repository};
use crate::{Error, Result};

/// What to forget.
#[derive(Debug, Clone, Default)]
pub struct ForgetRequest {
    /// With a plan: only this job.
    pub job: Option<String>,
    /// Rules from the command line; `None`: the plan's `[retention]`.
    pub policy: Option<Policy>,
    /// Only this region (a destination name or catalog region).
    pub region: Option<String>,
    pub dry_run: bool,
    /// Remove snapshots even when every snapshot of a group would go (refused otherwise,
    /// exit 1: restic #4568, RELIABILITY T18).
    pub force: bool,
    /// Prune afterwards (`forget --prune`), region by region.
    pub prune: Option<PruneRequest>,
    /// The repository is append-only for its writers; `None`: as the plan's `[retention]`
    /// says (not append-only without a plan).
    pub append_only: Option<bool>,
    /// Apply count rules to an append-only repository all the same.
    pub allow_count_rules: bool,
}

/// The outcome, region by region.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub policy: Policy,
    pub dry_run: bool,
    /// `keep_within` counted from the store's current time, count rules refused.
    pub append_only: bool,
    pub regions: Vec<ForgetRegion>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetRegion {
    /// The destination's name and the catalog's name for it.
    pub name: String,
    pub region: String,
    /// Why this region could not be handled (it is left for the next run).
    pub error: Option<String>,
    pub groups: Vec<Group>,
    pub removed: usize,
    pub kept: usize,
    /// Why the catalog was not updated (the repository is).
    pub catalog_warnings: Vec<String>,
    /// `forget --prune`: the prune that followed.
    pub prune: Option<PruneRegion>,
    /// Object Lock: the retention pass over what the kept snapshots need (without `--prune`;
    /// with it, the prune's report has it).
    pub object_lock: Option<crate::repo::object_lock::LockReport>,
}

/// One group of snapshots and what became of each.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub plan: Option<String>,
    pub job: Option<String>,
    pub host: Option<String>,
    pub paths: Vec<String>,
    /// Newest first.
    pub snapshots: Vec<Row>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: SnapshotId,
    pub time: chrono::DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<Reason>,
}

impl ForgetReport {
    /// 3 when some region failed and another was handled; the first failure's class when
    /// none was (a single region that fails is that region's error).
    pub fn exit_code(&self) -> ExitCode {
        let failed = self.regions.iter().filter(|r| r.error.is_some()).count();
        let prune = self
            .regions
            .iter()
            .filter_map(|r| r.prune.as_ref())
            .map(|p| p.exit_code())
            .max_by_key(|c| c.code())
            .unwrap_or(ExitCode::Ok);
        if failed > 0 {
            ExitCode::Partial
        } else {
            prune
        }
    }

    pub fn removed(&self) -> usize {
        self.regions.iter().map(|r| r.removed).sum()
    }
}

/// The plan's `[retention]` as keep rules.
pub fn policy_of(spec: &RetentionSpec) -> Policy {
    Policy {
        keep_last: spec.keep_last,
        keep_hourly: spec.keep_hourly,
        keep_daily: spec.keep_daily,
        keep_weekly: spec.keep_weekly,
        keep_monthly: spec.keep_monthly,
        keep_yearly: spec.keep_yearly,
        keep_within: spec.keep_within,
        keep_tags: spec.keep_tags.clone(),
    }
}

/// `lifeboat forget`.
pub async fn forget(env: &Env, target: &Target, req: ForgetRequest) -> Result<ForgetReport> {
    let policy = match (&req.policy, &target.plan) {
        (Some(p), _) => p.clone(),
        (None, Some(plan)) => match &plan.retention {
            Some(r) => policy_of(r),
            None => {
                return Err(Error::Config(format!(
                    "plan {} has no [retention]: add one (e.g. keep_daily = 7), or give --keep-* flags",
                    plan.file.display()
                )))
            }
        },
        (None, None) => {
            return Err(Error::Usage(
                "forget needs keep rules: give --keep-last/--keep-daily/… (or --plan with a [retention] table)".into(),
            ))
        }
    };
    if policy.is_empty() {
        return Err(Error::Usage(
            "these keep rules keep nothing, so every snapshot would go; set at least one --keep-* rule above 0".into(),
        ));
    }
    let plan_retention = target.plan.as_ref().and_then(|p| p.retention.as_ref());
    let append_only = req
        .append_only
        .unwrap_or(plan_retention.is_some_and(|r| r.append_only));
    let allow_counts = req.allow_count_rules || plan_retention.is_some_and(|r| r.allow_count_rules);
    if append_only {
        refuse_for_append_only(&policy, allow_counts)?;
    }
    if let (Some(p), Some(j)) = (&target.plan, &req.job) {
        p.select_jobs(Some(j))?;
    }
    let regions: Vec<&Region> = match &req.region {
        Some(r) => vec![target.region(r)?],
        None => target.regions.iter().collect(),
    };
    let mut out = Vec::new();
    for region in regions {
        env.cancel.check()?;
        let mut fr = ForgetRegion {
            name: region.name.clone(),
            region: region.catalog_region.clone(),
            error: None,
            groups: Vec::new(),
            removed: 0,
            kept: 0,
            catalog_warnings: Vec::new(),
            prune: None,
            object_lock: None,
        };
        match forget_region(env, target, region, &req, &policy, append_only, &mut fr).await {
            Ok(()) => {}
            // One region alone: its error is the command's.
            Err(e) if target.regions.len() == 1 || req.region.is_some() => return Err(e),
            Err(
                e @ (Error::Interrupted | Error::Usage(_) | Error::Config(_) | Error::Refused(_)),
            ) => return Err(e),
            Err(e) => {
                env.warn(format!(
                    "region {}: not handled, the next run will: {e}",
                    region.name
                ));
                fr.error = Some(e.to_string());
            }
        }
        out.push(fr);
    }
    Ok(ForgetReport {
        policy,
        dry_run: req.dry_run,
        append_only,
        regions: out,
    })
}

/// An append-only repository's writers can add snapshots: count rules they could fill with
/// forgeries are refused unless allowed, and `keep_within` (counted from now) is required.
fn refuse_for_append_only(policy: &Policy, allow_counts: bool) -> Result<()> {
    let counts = policy.count_rules();
    if !counts.is_empty() && !allow_counts {
        return Err(Error::Usage(format!(
            "refusing count rules (--{}) over an append-only repository: whoever can add snapshots can fill their counts with forgeries and push the real snapshots out (nothing was removed); keep --keep-within only, or give --allow-count-rules (plan: allow_count_rules = true) to accept that risk",
            counts.join(", --")
        )));
    }
    if policy.keep_within.is_none_or(|d| d.is_zero()) {
        return Err(Error::Usage(
            "an append-only repository needs --keep-within (counted from the store's current time, so forged snapshots cannot move it): add e.g. --keep-within 30d".into(),
        ));
    }
    Ok(())
}

async fn forget_region(
    env: &Env,
    target: &Target,
    region: &Region,
    req: &ForgetRequest,
    policy: &Policy,
    append_only: bool,
    fr: &mut ForgetRegion,
) -> Result<()> {
    let repo = target.open_region(region).await?;
    let recorded_as = target.recorded_region(region);
    if !req.dry_run {
        super::object_lock::check_may_delete(&repo, "forget").await?;
    }
    let drilled = drill_proven(env, &repo, &region.catalog_region, &mut fr.catalog_warnings).await;
    let removed = repo
        .with_lock("forget", false, async |_| {
            let snaps = repo.list_snapshots().await?;
            let running = running_drills(&repo).await?;
            // The lock measured the store's clock: "now" is the store's.
            let when = retention::When {
                now: Some(repo.now()),
                within_from_now: append_only,
            };
            let groups = decide(
                target,
                req.job.as_deref(),
                policy,
                &snaps,
                &drilled,
                &region.catalog_region,
                &running,
                req.force,
                when,
            )?;
            let removed: Vec<SnapshotId> = groups
                .iter()
                .flat_map(|g| g.snapshots.iter().filter(|r| !r.keep).map(|r| r.id))
                .collect();
            fr.kept = groups
                .iter()
                .map(|g| g.snapshots.iter().filter(|r| r.keep).count())
                .sum();
            fr.groups = groups;
            if req.dry_run || removed.is_empty() {
                return Ok(removed);
            }
            // A drill may have started since the list: never delete what it restores.
            let running = running_drills(&repo).await?;
            let removed: Vec<SnapshotId> = removed
                .into_iter()
                .filter(|id| !running.contains(id))
                .collect();
            // The catalog first: a kill between the two leaves a snapshot the catalog does
            // not list (a warning, `catalog rebuild` adds it back), never a row for a
            // snapshot that is gone (which `verify` reports as deleted behind our back).
            record_forgotten(env, &repo, &recorded_as, &removed, &mut fr.catalog_warnings).await;
            for id in &removed {
                env.cancel.check()?;
                match repo.store.delete(&ObjectKind::Snapshot.key(id)).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(removed)
        })
        .await?;
    fr.removed = removed.len();
    if let Some(p) = &req.prune {
        let mut pr = super::prune::prune_repo(env, &repo, &recorded_as, p).await?;
        pr.name = region.name.clone();
        fr.prune = Some(pr);
    } else if !req.dry_run {
        fr.object_lock = super::object_lock::extend(env, &repo).await?;
    }
    Ok(())
}

/// The snapshots the live drill markers name.
async fn running_drills(repo: &Repository) -> Result<Vec<SnapshotId>> {
    let now = Utc::now();
    Ok(repo
        .list_locks()
        .await?
        .into_iter()
        .filter(|(_, l)| l.expires >= now)
        .filter_map(|(_, l)| retention::parse_drill_marker(&l.purpose))
        .collect())
}

/// Snapshots whose drill passed in `region`, per (plan, job); empty (with a warning) when the
/// catalog cannot be read — then only the policy and the running drills protect snapshots.
async fn drill_proven(
    env: &Env,
    repo: &Repository,
    region: &str,
    warnings: &mut Vec<String>,
) -> Vec<(String, String, SnapshotId)> {
    let Some(cat) = open_best_effort(env, warnings).await else {
        env.warn(format!("the catalog cannot be read, so forget does not know which snapshots passed a drill; only the keep rules protect them ({})", warnings.join("; ")));
        return Vec::new();
    };
    match cat.drill_proven_snapshots(repo.id(), region).await {
        Ok(v) => v,
        Err(e) => {
            warnings.push(e.to_string());
            env.warn(format!(
                "cannot read drilled snapshots from the catalog: {e}"
            ));
            Vec::new()
        }
    }
}

/// Groups the snapshots and applies the rules to each group. Refuses a group that would
/// lose every snapshot, unless `force`.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    target: &Target,
    job: Option<&str>,
    policy: &Policy,
    snaps: &[(SnapshotId, Snapshot)],
    drilled: &[(String, String, SnapshotId)],
    region: &str,
    running: &[SnapshotId],
    force: bool,
    when: retention::When,
) -> Result<Vec<Group>> {
    let selected: Vec<&(SnapshotId, Snapshot)> = match &target.plan {
        Some(p) => super::snapshots::of_plan(snaps, p, job),
        None => snaps.iter().collect(),
    };
    #[derive(Clone, PartialEq, Eq, Hash)]
    enum Key {
        Job(String, String),
        AdHoc(String, Vec<String>),
    }
    let key = |s: &Snapshot| match (&s.plan, &s.job) {
        (Some(p), Some(j)) => Key::Job(p.clone(), j.clone()),
        _ => {
            let mut paths = s.paths.clone();
            paths.sort();
            Key::AdHoc(s.host.clone(), paths)
        }
    };
    let by_id: HashMap<SnapshotId, &Snapshot> = selected.iter().map(|(i, s)| (*i, s)).collect();
    let tz = chrono::Local;
    let mut out = Vec::new();
    for (k, members) in retention::group_by(selected.iter().copied(), |(_, s)| key(s)) {
        let cands: Vec<Candidate> = members
            .iter()
            .map(|(id, s)| Candidate {
                id: *id,
                time: s.time,
                tags: s.tags.clone(),
            })
            .collect();
        // Lifeboat's rule: the newest of this job's snapshots whose drill passed here.
        let mut protected = Protected {
            drill_running: running.to_vec(),
            ..Default::default()
        };
        if let Key::Job(p, j) = &k {
            let newest = drilled
                .iter()
                .filter(|(dp, dj, _)| dp == p && dj == j)
                .filter_map(|(_, _, id)| by_id.get(id).map(|s| (s.time, *id)))
                .max();
            if let Some((_, id)) = newest {
                protected.drill_passed.push((region.to_string(), id));
            }
        }
        let decisions = retention::apply(policy, &cands, &tz, &protected, when);
        if !force && !decisions.is_empty() && decisions.iter().all(|d| !d.keep()) {
            let what = match &k {
                Key::Job(p, j) => format!("job {j} of plan {p}"),
                Key::AdHoc(h, paths) => format!("the backups of {} on {h}", paths.join(" ")),
            };
            return Err(Error::Refused(format!(
                "refusing to remove every snapshot of {what} ({} of them): no keep rule matches any; add a rule that does (e.g. --keep-last 1), or give --force to remove them all (nothing was removed)",
                decisions.len()
            )));
        }
        let (plan, job, host, paths) = match k {
            Key::Job(p, j) => (Some(p), Some(j), None, Vec::new()),
            Key::AdHoc(h, paths) => (None, None, Some(h), paths),
        };
        out.push(Group {
            plan,
            job,
            host,
            paths,
            snapshots: decisions
                .into_iter()
                .map(|d| Row {
                    id: d.id,
                    time: d.time,
                    keep: d.keep(),
                    reasons: d.reasons,
                })
                .collect(),
        });
    }
    Ok(out)
}

async fn record_forgotten(
    env: &Env,
    repo: &Repository,
    region: &str,
    ids: &[SnapshotId],
    warnings: &mut Vec<String>,
) {
    let mut w = Vec::new();
    if let Some(cat) = open_best_effort(env, &mut w).await {
        if let Err(e) = cat.forget_snapshots(repo.id(), region, ids).await {
            w.push(e.to_string());
        }
    }
    if !w.is_empty() {
        env.emit(Event::CatalogNotRecorded {
            what: "the forgotten snapshots are still listed in the catalog; `lifeboat catalog rebuild` removes them".into(),
            warnings: w.clone(),
        });
        warnings.extend(w);
    }
}

/// The scheduled retention `run-due` applies (after a job's successful backup, or on the
/// retention's own schedule): the plan's `[retention]` for that job in every region, then a
/// prune when the plan says `prune = true`. Returns the exit code for the task (`Ok` without a `[retention]`); a failure is an
/// [`Event::Warning`] as well. A prune whose deletion waits for a lock is not a failure here:
/// its plan is stored and the next run carries it out.
pub async fn apply_retention(env: &Env, target: &Target, job: &str) -> ExitCode {
    let Some(spec) = target.plan.as_ref().and_then(|p| p.retention.as_ref()) else {
        return ExitCode::Ok;
    };
    let req = ForgetRequest {
        job: Some(job.to_string()),
        policy: Some(policy_of(spec)),
        region: None,
        dry_run: false,
        force: false,
        prune: spec.prune.then(PruneRequest::default),
        append_only: Some(spec.append_only),
        allow_count_rules: spec.allow_count_rules,
    };
    match forget(env, target, req).await {
        Ok(r) => match r.exit_code() {
            ExitCode::Locked => ExitCode::Ok,
            c => c,
        },
        Err(e) => {
            env.warn(format!("job {job}: retention failed: {e}"));
            e.exit_code()
        }
    }
}
