//! The period report (`lifeboat report --plan … --since 90d`), schema
//! `lifeboat.period-report/1`: per plan and for the fleet, each documented objective and
//! what was measured, every drill against its targets per region, snapshot age (RPO) and
//! backup sizes over time, compliance (drills passing, scheduled backups and drills on
//! time), every miss with its date and cause, the RTO trend and projected breach, the
//! evidence list, the chain status, and the controls auditors ask about. Built from the
//! signed reports and the snapshots in the plan's regions — nothing on the server — so the
//! same report comes out after the server is lost.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::chain::ChainStatus;
use super::schema::DrillEvidence;
use super::trend::{self, SizeTrend, TimeTrend};
use crate::plan::Plan;
use crate::repo::snapshot::Snapshot;

pub const SCHEMA: &str = "lifeboat.period-report/1";

/// How far ahead a projected RTO breach is flagged.
pub const TREND_HORIZON_DAYS: i64 = 30;

/// One plan's evidence, as read from its regions.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub plan: Plan,
    pub drills: Vec<DrillEvidence>,
    pub regions: Vec<RegionSnapshots>,
    /// Each region's copy of the chain.
    pub chains: Vec<ChainStatus>,
    pub unreadable_regions: Vec<String>,
    pub public_key: Option<String>,
    /// When the repository was created: schedule slots before it are not counted.
    pub repository_created: Option<DateTime<Utc>>,
}

/// What a plan's SLOs and RTO trend are computed from ([`slos`], [`rto_trends`]): for the
/// period report, its signed drill reports and snapshot manifests ([`SloEvidence::of`]);
/// for `status` and metrics, the catalog's rows (`ops::status::plan_slos`), so neither opens
/// a repository. Both feed the same functions, so both show the same figures.
#[derive(Debug, Clone)]
pub struct SloEvidence<'a> {
    pub plan: &'a Plan,
    /// When the repository was created: schedule slots before it are not counted.
    pub repository_created: Option<DateTime<Utc>>,
    /// Every region of the plan, readable or not (a region never drilled misses `drill_every`).
    pub regions: Vec<String>,
    pub drills: Vec<DrillPoint>,
    /// (job, time) of the plan's snapshots in any region.
    pub snapshots: Vec<(String, DateTime<Utc>)>,
}

/// One drill, as much of it as the SLOs and the RTO trend need.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillPoint {
    pub job: String,
    pub region: String,
    pub started: DateTime<Utc>,
    pub passed: bool,
    /// The measured RTO; `None` when the drill failed before it measured one (an error).
    pub rto_secs: Option<f64>,
}

impl<'a> SloEvidence<'a> {
    /// The evidence of a period report's input (its snapshots as `snaps`).
    pub fn of(input: &'a PlanInput, snaps: &[&Snapshot]) -> SloEvidence<'a> {
        SloEvidence {
            plan: &input.plan,
            repository_created: input.repository_created,
            regions: input
                .regions
                .iter()
                .map(|r| r.region.clone())
                .chain(input.unreadable_regions.iter().cloned())
                .collect(),
            drills: input
                .drills
                .iter()
                .map(|d| DrillPoint {
                    job: d.job.clone(),
                    region: d.region.clone(),
                    started: d.started,
                    passed: d.passed(),
                    rto_secs: d.error.is_none().then_some(d.rto.measured_secs),
                })
                .collect(),
            snapshots: snaps
                .iter()
                .map(|s| (s.job.clone().unwrap_or_default(), s.time))
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RegionSnapshots {
    pub region: String,
    /// (snapshot id, manifest) of the plan's snapshots.
    pub snapshots: Vec<(String, Snapshot)>,
    /// The signed records of what `verify` read in this region ([`super::verified`]).
    pub read_verifications: Vec<super::verified::ReadVerification>,
    /// The packs the region holds now, with their sizes.
    pub packs: std::collections::HashMap<crate::ids::PackId, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodReport {
    pub schema: String,
    pub generated: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub fleet: Fleet,
    pub plans: Vec<PlanPeriod>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub plans: usize,
    pub plans_compliant: usize,
    pub drills: usize,
    pub drills_passed: usize,
    pub drill_pass_share: Option<f64>,
    pub backup_on_time_share: Option<f64>,
    pub regions: usize,
    pub regions_drilled: usize,
    pub misses: usize,
    pub chains_intact: bool,
    pub trend_warnings: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectiveRow {
    /// `rto` or `rpo`.
    pub objective: String,
    pub target_secs: Option<f64>,
    /// The worst measured value in the period.
    pub worst_secs: Option<f64>,
    /// The median measured value in the period.
    pub median_secs: Option<f64>,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillRow {
    pub report_id: String,
    pub started: DateTime<Utc>,
    pub job: String,
    pub region: String,
    pub trigger: String,
    pub verdict: String,
    pub rto_secs: f64,
    pub rto_target_secs: Option<f64>,
    pub rpo_secs: f64,
    pub rpo_target_secs: Option<f64>,
    pub restored_bytes: u64,
    pub phases: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionRow {
    pub region: String,
    pub snapshots: usize,
    pub newest_snapshot: Option<DateTime<Utc>>,
    /// Now minus the newest snapshot's consistency time.
    pub rpo_now_secs: Option<f64>,
    /// The largest gap between consistent points in the period (including up to now).
    pub worst_rpo_secs: Option<f64>,
    pub drills: usize,
    pub drills_passed: usize,
    pub last_drill: Option<DateTime<Utc>>,
    /// A drill passed from this region in the period.
    pub verified_by_drill: bool,
    /// What `verify` runs read and found intact in the period, of what the region holds now
    /// (the repository's packs: every plan sharing the repository shares its coverage).
    pub read_verified: super::verified::ReadCoverage,
    pub readable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RpoPoint {
    pub region: String,
    pub time: DateTime<Utc>,
    /// The data-loss window at that moment (the age of the newest consistent point).
    pub age_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizePoint {
    pub job: String,
    pub time: DateTime<Utc>,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compliance {
    pub drills: usize,
    pub drills_passed: usize,
    pub drill_pass_share: Option<f64>,
    pub backup_slots: usize,
    pub backups_on_time: usize,
    pub backup_on_time_share: Option<f64>,
    pub drill_slots: usize,
    pub drills_on_time: usize,
    pub drill_on_time_share: Option<f64>,
    /// Share of the plan's regions a drill passed from in the period.
    pub region_drill_share: Option<f64>,
}

/// One service-level objective over its window, with its error budget.
#[derive(Debug, Clone, Serialize)]
pub struct SloStatus {
    /// `backups_on_time` or `drill_every`.
    pub slo: String,
    /// What the plan states, for people ("99 % of scheduled backups on time over 30 days").
    pub objective: String,
    pub window_secs: f64,
    /// The share that must be good.
    pub target_share: f64,
    /// The share that was good in the window (`None`: nothing was due).
    pub measured_share: Option<f64>,
    pub good: usize,
    pub total: usize,
    /// Share of the error budget left: 1 untouched, 0 spent, below 0 overspent.
    pub budget_left: Option<f64>,
    /// Bad share over allowed bad share: above 1 spends the budget before the window ends.
    pub burn_rate: Option<f64>,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub date: DateTime<Utc>,
    /// `drill`, `backup` (a scheduled backup without a snapshot), `drill_schedule` (a
    /// scheduled drill that did not run), `rpo` (a region's data-loss window above target).
    pub kind: String,
    pub job: Option<String>,
    pub region: Option<String>,
    pub cause: String,
    pub report_id: Option<String>,
    /// Consecutive missed slots are one miss: how many, and the last one.
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendRow {
    pub job: String,
    pub region: String,
    /// RTO against time, and its projected breach of the target.
    pub rto_over_time: Option<TimeTrend>,
    /// RTO against restored size.
    pub rto_over_size: Option<SizeTrend>,
    /// Each phase's growth, seconds per day.
    pub phase_secs_per_day: BTreeMap<String, f64>,
    /// Each phase's cost per GiB restored.
    pub phase_secs_per_gib: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub report_id: String,
    pub seq: u64,
    pub started: DateTime<Utc>,
    pub job: String,
    pub region: String,
    pub verdict: String,
    pub snapshot_id: String,
    pub snapshot_content_hash: String,
    /// The report's own hash (what the next report names).
    pub report_hash: String,
    pub signed_by: Option<String>,
    /// `dir`, `postgres`, `mariadb`, …
    pub source_kind: String,
    /// The backed-up database server's version, as the snapshot recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_server_version: Option<String>,
    /// The tools that wrote the dump (from the snapshot), with their `--version` lines.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dump_tools: BTreeMap<String, String>,
    /// The tools that loaded it in the drill, with their `--version` lines.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub restore_tools: BTreeMap<String, String>,
    /// The version of the server the drill loaded it into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_server_version: Option<String>,
}

impl Evidence {
    /// The versions in a line for people: the source server, the dump tools, the restore
    /// tools and the drill's server (empty for a directory drill, or for reports written
    /// before lifeboat recorded them).
    pub fn versions(&self) -> String {
        let tools = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| {
                    // `--version` lines mostly start with the tool's own name already.
                    if v.starts_with(k.as_str()) {
                        v.clone()
                    } else {
                        format!("{k}: {v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if let Some(v) = &self.source_server_version {
            parts.push(format!("source server {v}"));
        }
        if !self.dump_tools.is_empty() {
            parts.push(format!("dumped by {}", tools(&self.dump_tools)));
        }
        if !self.restore_tools.is_empty() {
            parts.push(format!("loaded by {}", tools(&self.restore_tools)));
        }
        if let Some(v) = &self.restore_server_version {
            parts.push(format!("into server {v}"));
        }
        parts.join("; ")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Control {
    pub framework: String,
    pub control: String,
    pub title: String,
    /// What lifeboat shows for it in this period.
    pub shown: String,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanPeriod {
    pub plan: String,
    pub description: Option<String>,
    pub regions_total: usize,
    pub objectives: Vec<ObjectiveRow>,
    pub slos: Vec<SloStatus>,
    pub drills: Vec<DrillRow>,
    pub regions: Vec<RegionRow>,
    pub rpo_over_time: Vec<RpoPoint>,
    pub sizes: Vec<SizePoint>,
    pub compliance: Compliance,
    pub misses: Vec<Miss>,
    pub trends: Vec<TrendRow>,
    pub evidence: Vec<Evidence>,
    /// Each region's copy of the report chain.
    pub chain: Vec<ChainStatus>,
    pub public_key: Option<String>,
    pub unreadable_regions: Vec<String>,
    pub controls: Vec<Control>,
}

impl PlanPeriod {
    /// Every objective met and nothing missed in the period.
    pub fn compliant(&self) -> bool {
        self.objectives.iter().all(|o| o.met)
            && self.slos.iter().all(|s| s.met)
            && self.misses.is_empty()
    }
}

fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn secs(d: Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Why a drill did not pass, in a line.
pub fn cause(d: &DrillEvidence) -> String {
    if let Some(e) = &d.error {
        return format!("{}: {e}", d.failure.as_deref().unwrap_or("failed"));
    }
    let failed: Vec<&str> = d
        .checks
        .iter()
        .filter(|c| c.status != "passed")
        .map(|c| c.name.as_str())
        .collect();
    if !failed.is_empty() {
        return format!("restore tests failed: {}", failed.join(", "));
    }
    let mut parts = Vec::new();
    if !d.rto.met {
        parts.push(format!(
            "RTO {} above target {}",
            crate::sys::human::duration(d.rto.measured_secs),
            d.rto
                .target_secs
                .map(crate::sys::human::duration)
                .unwrap_or_default()
        ));
    }
    if !d.rpo.met {
        parts.push(format!(
            "RPO {} above target {}",
            crate::sys::human::duration(d.rpo.measured_secs),
            d.rpo
                .target_secs
                .map(crate::sys::human::duration)
                .unwrap_or_default()
        ));
    }
    if parts.is_empty() {
        d.verdict.clone()
    } else {
        parts.join("; ")
    }
}

/// Builds the period report of `inputs` for `since..now`.
pub fn build(inputs: &[PlanInput], since: DateTime<Utc>, now: DateTime<Utc>) -> PeriodReport {
    let plans: Vec<PlanPeriod> = inputs.iter().map(|i| plan_period(i, since, now)).collect();
    let drills: usize = plans.iter().map(|p| p.compliance.drills).sum();
    let passed: usize = plans.iter().map(|p| p.compliance.drills_passed).sum();
    let slots: usize = plans.iter().map(|p| p.compliance.backup_slots).sum();
    let on_time: usize = plans.iter().map(|p| p.compliance.backups_on_time).sum();
    let fleet = Fleet {
        plans: plans.len(),
        plans_compliant: plans.iter().filter(|p| p.compliant()).count(),
        drills,
        drills_passed: passed,
        drill_pass_share: share(passed, drills),
        backup_on_time_share: share(on_time, slots),
        regions: plans.iter().map(|p| p.regions_total).sum(),
        regions_drilled: plans
            .iter()
            .map(|p| p.regions.iter().filter(|r| r.verified_by_drill).count())
            .sum(),
        misses: plans.iter().map(|p| p.misses.len()).sum(),
        chains_intact: plans.iter().all(|p| p.chain.iter().all(|c| c.intact())),
        trend_warnings: plans
            .iter()
            .flat_map(|p| &p.trends)
            .filter(|t| t.rto_over_time.as_ref().is_some_and(|t| t.warn))
            .count(),
    };
    PeriodReport {
        schema: SCHEMA.into(),
        generated: now,
        since,
        until: now,
        fleet,
        plans,
    }
}

fn plan_period(input: &PlanInput, since: DateTime<Utc>, now: DateTime<Utc>) -> PlanPeriod {
    let p = &input.plan;
    let rto_target = p.objectives.rto.map(|d| d.as_secs_f64());
    let rpo_target = p.objectives.rpo.map(|d| d.as_secs_f64());
    let in_period: Vec<&DrillEvidence> = input
        .drills
        .iter()
        .filter(|d| d.started >= since && d.started <= now)
        .collect();
    let drills: Vec<DrillRow> = in_period
        .iter()
        .map(|d| DrillRow {
            report_id: d.report_id.clone(),
            started: d.started,
            job: d.job.clone(),
            region: d.region.clone(),
            trigger: d.trigger.clone(),
            verdict: d.verdict.clone(),
            rto_secs: d.rto.measured_secs,
            rto_target_secs: d.rto.target_secs,
            rpo_secs: d.rpo.measured_secs,
            rpo_target_secs: d.rpo.target_secs,
            restored_bytes: d.snapshot.size_bytes,
            phases: d.phases.iter().map(|ph| (ph.phase.clone(), ph.secs)).fold(
                BTreeMap::new(),
                |mut m, (k, v)| {
                    *m.entry(k).or_insert(0.0) += v;
                    m
                },
            ),
        })
        .collect();
    let mut misses = Vec::new();
    for d in &in_period {
        if !d.passed() {
            misses.push(Miss {
                date: d.started,
                kind: "drill".into(),
                job: Some(d.job.clone()),
                region: Some(d.region.clone()),
                cause: cause(d),
                report_id: Some(d.report_id.clone()),
                count: 1,
                last: None,
            });
        }
    }

    // Regions: snapshots, RPO over time, drills.
    let mut regions = Vec::new();
    let mut rpo_points = Vec::new();
    let mut sizes = Vec::new();
    let mut worst_rpo_all: Option<f64> = None;
    for r in &input.regions {
        let mut times: Vec<DateTime<Utc>> = r
            .snapshots
            .iter()
            .map(|(_, s)| s.consistency_time)
            .collect();
        times.sort();
        let mut worst: Option<f64> = None;
        let mut push = |t: DateTime<Utc>, age: f64| {
            if t >= since {
                rpo_points.push(RpoPoint {
                    region: r.region.clone(),
                    time: t,
                    age_secs: age,
                });
                worst = Some(worst.map_or(age, |w: f64| w.max(age)));
            }
        };
        for w in times.windows(2) {
            // Just before the newer point, the window had grown to the gap.
            push(w[1], secs(w[1] - w[0]));
        }
        if let Some(last) = times.last() {
            push(now, secs(now - *last));
        }
        if let Some(w) = worst {
            worst_rpo_all = Some(worst_rpo_all.map_or(w, |a| a.max(w)));
            if rpo_target.is_some_and(|t| w > t) {
                misses.push(Miss {
                    date: now,
                    kind: "rpo".into(),
                    job: None,
                    region: Some(r.region.clone()),
                    cause: format!(
                        "the data-loss window reached {} in region {} (target {})",
                        crate::sys::human::duration(w),
                        r.region,
                        rpo_target
                            .map(crate::sys::human::duration)
                            .unwrap_or_default()
                    ),
                    report_id: None,
                    count: 1,
                    last: None,
                });
            }
        }
        let rd: Vec<&&DrillEvidence> = in_period.iter().filter(|d| d.region == r.region).collect();
        regions.push(RegionRow {
            region: r.region.clone(),
            snapshots: r.snapshots.len(),
            newest_snapshot: times.last().copied(),
            rpo_now_secs: times.last().map(|t| secs(now - *t)),
            worst_rpo_secs: worst,
            drills: rd.len(),
            drills_passed: rd.iter().filter(|d| d.passed()).count(),
            last_drill: rd.iter().map(|d| d.started).max(),
            verified_by_drill: rd.iter().any(|d| d.passed()),
            read_verified: super::verified::coverage(&r.read_verifications, &r.packs, since, now),
            readable: true,
        });
    }
    for name in &input.unreadable_regions {
        regions.push(RegionRow {
            region: name.clone(),
            snapshots: 0,
            newest_snapshot: None,
            rpo_now_secs: None,
            worst_rpo_secs: None,
            drills: 0,
            drills_passed: 0,
            last_drill: None,
            verified_by_drill: false,
            read_verified: Default::default(),
            readable: false,
        });
    }
    // Sizes: each snapshot once (the first readable region's copy).
    if let Some(r) = input.regions.first() {
        for (_, s) in &r.snapshots {
            if s.time >= since && s.time <= now {
                sizes.push(SizePoint {
                    job: s.job.clone().unwrap_or_default(),
                    time: s.time,
                    bytes: s.summary.bytes_processed,
                });
            }
        }
    }
    sizes.sort_by(|a, b| (&a.job, a.time).cmp(&(&b.job, b.time)));

    // Scheduled backups on time: each cron slot in the period that has ended must have a
    // snapshot of its job (in any region) taken before the next slot.
    let all_snaps: Vec<&Snapshot> = input
        .regions
        .iter()
        .flat_map(|r| r.snapshots.iter().map(|(_, s)| s))
        .collect();
    let from = input.repository_created.map_or(since, |c| c.max(since));
    let mut backup_slots = 0;
    let mut backups_on_time = 0;
    for job in &p.jobs {
        let mut missed = Vec::new();
        for (slot, next) in slots(&job.schedule, from, now) {
            backup_slots += 1;
            let ok = all_snaps.iter().any(|s| {
                s.job.as_deref() == Some(job.name.as_str()) && s.time >= slot && s.time < next
            });
            missed.push((slot, !ok));
            if ok {
                backups_on_time += 1;
            }
        }
        for (first, last, count) in runs(&missed) {
            misses.push(Miss {
                date: first,
                kind: "backup".into(),
                job: Some(job.name.clone()),
                region: None,
                cause: if count == 1 {
                    format!(
                        "the scheduled backup of job {} made no snapshot before the next was due",
                        job.name
                    )
                } else {
                    format!(
                        "{count} scheduled backups of job {} in a row made no snapshot",
                        job.name
                    )
                },
                report_id: None,
                count,
                last: (count > 1).then_some(last),
            });
        }
    }
    let mut drill_slots = 0;
    let mut drills_on_time = 0;
    if let Some(sched) = p.drill.as_ref().and_then(|d| d.schedule.as_ref()) {
        let mut missed = Vec::new();
        for (slot, next) in slots(sched, from, now) {
            drill_slots += 1;
            let ok = input
                .drills
                .iter()
                .any(|d| d.started >= slot && d.started < next);
            missed.push((slot, !ok));
            if ok {
                drills_on_time += 1;
            }
        }
        for (first, last, count) in runs(&missed) {
            misses.push(Miss {
                date: first,
                kind: "drill_schedule".into(),
                job: None,
                region: None,
                cause: if count == 1 {
                    "the scheduled drill did not run before the next one was due".into()
                } else {
                    format!("{count} scheduled drills in a row did not run")
                },
                report_id: None,
                count,
                last: (count > 1).then_some(last),
            });
        }
    }
    misses.sort_by(|a, b| a.date.cmp(&b.date).then(a.kind.cmp(&b.kind)));

    let passed = in_period.iter().filter(|d| d.passed()).count();
    let readable_regions = input.regions.len() + input.unreadable_regions.len();
    let regions_total = p.destinations.len().max(readable_regions);
    let verified = regions.iter().filter(|r| r.verified_by_drill).count();
    let compliance = Compliance {
        drills: in_period.len(),
        drills_passed: passed,
        drill_pass_share: share(passed, in_period.len()),
        backup_slots,
        backups_on_time,
        backup_on_time_share: share(backups_on_time, backup_slots),
        drill_slots,
        drills_on_time,
        drill_on_time_share: share(drills_on_time, drill_slots),
        region_drill_share: share(verified, regions_total),
    };

    // Objectives: worst and median measured against the targets.
    let rtos: Vec<f64> = in_period
        .iter()
        .filter(|d| d.error.is_none())
        .map(|d| d.rto.measured_secs)
        .collect();
    let rpos: Vec<f64> = in_period.iter().map(|d| d.rpo.measured_secs).collect();
    let worst = |v: &[f64]| v.iter().copied().reduce(f64::max);
    let rto_worst = worst(&rtos);
    let objectives = vec![
        ObjectiveRow {
            objective: "rto".into(),
            target_secs: rto_target,
            worst_secs: rto_worst,
            median_secs: median(rtos.clone()),
            met: match (rto_target, rto_worst) {
                (Some(t), Some(w)) => w <= t,
                _ => true,
            },
        },
        ObjectiveRow {
            objective: "rpo".into(),
            target_secs: rpo_target,
            worst_secs: match (worst(&rpos), worst_rpo_all) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            median_secs: median(rpos.clone()),
            met: match rpo_target {
                Some(t) => rpos.iter().chain(worst_rpo_all.iter()).all(|v| *v <= t),
                None => true,
            },
        },
    ];

    // Trends per job and region, over every drill known (a trend needs history).
    let mut groups: BTreeMap<(String, String), Vec<&DrillEvidence>> = BTreeMap::new();
    for d in input
        .drills
        .iter()
        .filter(|d| d.error.is_none() && d.started <= now)
    {
        groups
            .entry((d.job.clone(), d.region.clone()))
            .or_default()
            .push(d);
    }
    let trends = groups
        .into_iter()
        .map(|((job, region), ds)| {
            let series: Vec<(DateTime<Utc>, f64)> = ds
                .iter()
                .map(|d| (d.started, d.rto.measured_secs))
                .collect();
            let mut phase_secs_per_day = BTreeMap::new();
            let mut phase_secs_per_gib = BTreeMap::new();
            let phases: std::collections::BTreeSet<&str> = ds
                .iter()
                .flat_map(|d| d.phases.iter().map(|p| p.phase.as_str()))
                .collect();
            for ph in phases {
                let s: Vec<(DateTime<Utc>, f64)> = ds
                    .iter()
                    .filter_map(|d| d.phase_secs(ph).map(|v| (d.started, v)))
                    .collect();
                if let Some(t) = trend::time_trend(&s, None, now, Duration::days(0)) {
                    phase_secs_per_day.insert(ph.to_string(), t.secs_per_day);
                }
                let by_size: Vec<(u64, f64)> = ds
                    .iter()
                    .filter_map(|d| d.phase_secs(ph).map(|v| (d.snapshot.size_bytes, v)))
                    .collect();
                if let Some(t) = trend::size_trend(&by_size, None) {
                    phase_secs_per_gib.insert(ph.to_string(), t.secs_per_gib);
                }
            }
            TrendRow {
                job,
                region,
                rto_over_time: rto_over_time(&series, rto_target, now),
                rto_over_size: trend::size_trend(
                    &ds.iter()
                        .map(|d| (d.snapshot.size_bytes, d.rto.measured_secs))
                        .collect::<Vec<_>>(),
                    rto_target,
                ),
                phase_secs_per_day,
                phase_secs_per_gib,
            }
        })
        .collect();

    let evidence: Vec<Evidence> = in_period
        .iter()
        .map(|d| Evidence {
            report_id: d.report_id.clone(),
            seq: d.chain.seq,
            started: d.started,
            job: d.job.clone(),
            region: d.region.clone(),
            verdict: d.verdict.clone(),
            snapshot_id: d.snapshot.id.clone(),
            snapshot_content_hash: d.snapshot.content_hash.clone(),
            report_hash: super::chain::hash(d),
            signed_by: d.signature.as_ref().map(|s| s.public_key.clone()),
            source_kind: d.snapshot.source_kind.clone(),
            source_server_version: d.snapshot.server_version.clone(),
            dump_tools: d.snapshot.dump_tools.clone(),
            restore_tools: d.restore_tools.clone(),
            restore_server_version: d.restore_server_version.clone(),
        })
        .collect();
    let controls = controls(
        &compliance,
        &drills,
        &evidence,
        &input.chains,
        regions_total,
    );
    let slos = slos(&SloEvidence::of(input, &all_snaps), now);
    PlanPeriod {
        plan: p.name.clone(),
        description: p.description.clone(),
        regions_total,
        objectives,
        slos,
        drills,
        regions,
        rpo_over_time: rpo_points,
        sizes,
        compliance,
        misses,
        trends,
        evidence,
        chain: input.chains.clone(),
        public_key: input.public_key.clone(),
        unreadable_regions: input.unreadable_regions.clone(),
        controls,
    }
}

/// An SLO's status from its good and total events.
fn slo_status(
    slo: &str,
    objective: String,
    window: Duration,
    target: f64,
    good: usize,
    total: usize,
) -> SloStatus {
    let measured = share(good, total);
    let allowed = 1.0 - target;
    let bad = measured.map(|m| 1.0 - m);
    let burn = match (bad, allowed > 0.0) {
        (Some(b), true) => Some(b / allowed),
        _ => None,
    };
    SloStatus {
        slo: slo.into(),
        objective,
        window_secs: secs(window),
        target_share: target,
        measured_share: measured,
        good,
        total,
        budget_left: burn.map(|b| 1.0 - b),
        burn_rate: burn,
        met: measured.is_none_or(|m| m + 1e-12 >= target),
    }
}

/// The RTO trend of one series of (drill start, measured RTO) against the target, with
/// the projected breach flagged within [`TREND_HORIZON_DAYS`].
fn rto_over_time(
    series: &[(DateTime<Utc>, f64)],
    rto_target: Option<f64>,
    now: DateTime<Utc>,
) -> Option<TimeTrend> {
    trend::time_trend(series, rto_target, now, Duration::days(TREND_HORIZON_DAYS))
}

/// The RTO trend per (job, region) over every drill that measured an RTO up to `now`, by
/// job then region (the period report's `trends[].rto_over_time`); pairs without a trend
/// (too few points) are left out.
pub fn rto_trends(e: &SloEvidence, now: DateTime<Utc>) -> Vec<(String, String, TimeTrend)> {
    let rto_target = e.plan.objectives.rto.map(|d| d.as_secs_f64());
    // (job, region) -> (drill start, measured RTO)
    type Series = Vec<(DateTime<Utc>, f64)>;
    let mut groups: BTreeMap<(String, String), Series> = BTreeMap::new();
    for d in e.drills.iter().filter(|d| d.started <= now) {
        if let Some(rto) = d.rto_secs {
            groups
                .entry((d.job.clone(), d.region.clone()))
                .or_default()
                .push((d.started, rto));
        }
    }
    groups
        .into_iter()
        .filter_map(|((job, region), series)| {
            rto_over_time(&series, rto_target, now).map(|t| (job, region, t))
        })
        .collect()
}

/// The plan's SLOs over their window ending `now`: scheduled backups on time, and every
/// region passing a drill in each `drill_every` stretch of the window.
pub fn slos(input: &SloEvidence, now: DateTime<Utc>) -> Vec<SloStatus> {
    let p = input.plan;
    let spec = &p.objectives.slo;
    let window = Duration::from_std(spec.window).unwrap_or(Duration::days(30));
    let from = input
        .repository_created
        .map_or(now - window, |c| c.max(now - window));
    let days = spec.window.as_secs_f64() / 86_400.0;
    let mut out = Vec::new();
    if let Some(bp) = spec.backups_on_time_bp {
        let target = bp as f64 / 10_000.0;
        let (mut good, mut total) = (0, 0);
        for job in &p.jobs {
            for (slot, next) in slots(&job.schedule, from, now) {
                total += 1;
                if input
                    .snapshots
                    .iter()
                    .any(|(j, t)| *j == job.name && *t >= slot && *t < next)
                {
                    good += 1;
                }
            }
        }
        out.push(slo_status(
            "backups_on_time",
            format!(
                "{:.2} % of scheduled backups on time over {days:.0} days",
                target * 100.0
            ),
            window,
            target,
            good,
            total,
        ));
    }
    if let Some(every) = spec.drill_every.and_then(|d| Duration::from_std(d).ok()) {
        let (mut good, mut total) = (0, 0);
        for region in &input.regions {
            // Stretches of `every` ending now, as many as fit in the window.
            let mut end = now;
            while end - every >= from {
                let start = end - every;
                total += 1;
                if input.drills.iter().any(|d| {
                    d.region == *region && d.passed && d.started > start && d.started <= end
                }) {
                    good += 1;
                }
                end = start;
            }
        }
        out.push(slo_status(
            "drill_every",
            format!(
                "every region passes a drill at least every {} over {days:.0} days",
                crate::sys::human::duration(secs(every))
            ),
            window,
            1.0,
            good,
            total,
        ));
    }
    out
}

/// Runs of consecutive missed slots: (first, last, count).
fn runs(slots: &[(DateTime<Utc>, bool)]) -> Vec<(DateTime<Utc>, DateTime<Utc>, usize)> {
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>, usize)> = Vec::new();
    let mut open = false;
    for (t, missed) in slots {
        match (missed, open) {
            (true, true) => {
                let r = out.last_mut().expect("open run");
                r.1 = *t;
                r.2 += 1;
            }
            (true, false) => {
                out.push((*t, *t, 1));
                open = true;
            }
            (false, _) => open = false,
        }
    }
    out
}

/// The cron slots of `sched` that started in `since..now` and whose window (until the next
/// slot) has ended: (slot, next slot).
fn slots(
    sched: &cron::Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut it = sched.after(&since).peekable();
    while let Some(slot) = it.next() {
        if slot > now || out.len() > 100_000 {
            break;
        }
        let Some(next) = it.peek().copied() else {
            break;
        };
        if next > now {
            break;
        }
        out.push((slot, next));
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map(|s| format!("{:.1} %", s * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// The controls auditors ask about, what this period shows for each, and the evidence ids.
fn controls(
    c: &Compliance,
    drills: &[DrillRow],
    evidence: &[Evidence],
    chains: &[ChainStatus],
    regions_total: usize,
) -> Vec<Control> {
    let ids: Vec<String> = evidence.iter().map(|e| e.report_id.clone()).collect();
    let passed: Vec<String> = drills
        .iter()
        .filter(|d| d.verdict == "passed")
        .map(|d| d.report_id.clone())
        .collect();
    let intact = chains.iter().all(|c| c.intact());
    vec![
        Control {
            framework: "ISO/IEC 27001:2022".into(),
            control: "A.8.13".into(),
            title: "Information backup".into(),
            shown: format!(
                "scheduled backups on time: {} ({} of {} slots); {} regions hold encrypted copies; backups restored and checked by {} drills ({} passed)",
                pct(c.backup_on_time_share), c.backups_on_time, c.backup_slots, regions_total, c.drills, c.drills_passed
            ),
            evidence: ids.clone(),
        },
        Control {
            framework: "ISO/IEC 27001:2022".into(),
            control: "A.5.30".into(),
            title: "ICT readiness for business continuity".into(),
            shown: format!(
                "measured RTO and RPO of every drill against the documented objectives; {} of drills passed; regions verified by a passing drill: {}",
                pct(c.drill_pass_share), pct(c.region_drill_share)
            ),
            evidence: passed.clone(),
        },
        Control {
            framework: "SOC 2".into(),
            control: "A1.2".into(),
            title: "Backup and recovery infrastructure".into(),
            shown: format!(
                "backups on time {}, copies in {} regions, drill reports stored in every region, signed and chained (chain {})",
                pct(c.backup_on_time_share), regions_total, if intact { "intact" } else { "BROKEN" }
            ),
            evidence: ids.clone(),
        },
        Control {
            framework: "SOC 2".into(),
            control: "A1.3".into(),
            title: "Recovery plan testing".into(),
            shown: format!(
                "{} restore drills ({} on schedule of {} scheduled), each restoring into a throwaway environment and running the restore tests",
                c.drills, c.drills_on_time, c.drill_slots
            ),
            evidence: ids,
        },
        Control {
            framework: "SOC 2".into(),
            control: "CC7.5".into(),
            title: "Recovery from identified incidents".into(),
            shown: "every failed drill or missed backup is listed under misses with its cause; `lifeboat report incident RUN_ID` drafts its post-mortem".into(),
            evidence: drills
                .iter()
                .filter(|d| d.verdict != "passed")
                .map(|d| d.report_id.clone())
                .collect(),
        },
    ]
}
