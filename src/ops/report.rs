//! The report use cases: the signed, chained report every drill writes
//! ([`write_drill_reports`], called at the end of [`super::drill::drill`]), the period report
//! for audits ([`period`]: `dr-report.json`, `.md`, `.html`), `report verify` ([`verify`]),
//! `report pubkey` ([`pubkey`]), the drill history `catalog rebuild` restores from stored
//! reports ([`restore_drill_history`]) and the post-mortem draft ([`incident`]).
//!
//! [`plan_evidence`] loads a plan's reports and snapshots from its repositories for the
//! period report and `report incident`. (`status` and metrics compute the same SLOs and RTO
//! trend with the same functions from the catalog instead, without opening a repository.)

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::target::{Target, LOCAL_REGION};
use super::{Env, Event};
use crate::catalog::{Catalog, DrillCheck, DrillPhase, DrillRecord, DrillResult, RunId};
use crate::drill::DrillReport;
use crate::error::ExitCode;
use crate::ids::ObjectId;
use crate::plan::Plan;
use crate::repo::snapshot::Snapshot;
use crate::repo::{signing, ObjectKind, Repository};
use crate::report::chain::{self, ChainStatus, Found};
use crate::report::period::{self, PeriodReport, PlanInput, RegionSnapshots};
use crate::report::schema::DrillEvidence;
use crate::report::store;
use crate::report::verified;
use crate::{Error, Result};

/// Opens every region of the target as the same repository as `opened` (no second
/// password derivation); regions that cannot be read are left out with a warning.
async fn all_regions(env: &Env, target: &Target, opened: &Repository) -> Vec<(String, Repository)> {
    let mut out = Vec::new();
    for region in &target.regions {
        if region.store().describe() == opened.location() {
            out.push((region.catalog_region.clone(), opened.clone()));
            continue;
        }
        match opened.with_store(region.store().clone()).await {
            Ok(r) => out.push((region.catalog_region.clone(), r)),
            Err(e) => env.emit(Event::Warning {
                message: format!(
                    "region {} ({}) cannot be read for reports: {e}",
                    region.catalog_region, region.location
                ),
                hint: Some("the next drill copies it the reports it lacks; `lifeboat report verify --plan` checks every region".into()),
            }),
        }
    }
    out
}

/// Stores a signed record of what a `verify` read into the region it read
/// (`verified/<id>`, docs/reports.md). Never fails the verification: a record that could not
/// be written is a warning.
pub async fn record_read_verification(
    env: &Env,
    target: &Target,
    repo: &Repository,
    region: &str,
    mode: &str,
    started: DateTime<Utc>,
    report: &crate::repo::verify::VerifyReport,
) {
    let res = async {
        // The region's own key when it has one; else the repository's, from whichever
        // region has it (created now in every region that answers if none has).
        let key = if signing::public_key(repo).await?.is_some() {
            signing::load_or_create(std::slice::from_ref(repo)).await?
        } else {
            let repos: Vec<Repository> = all_regions(env, target, repo)
                .await
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            signing::load_or_create(&repos).await?
        };
        let mut rec = crate::report::verified::ReadVerification {
            schema: crate::report::verified::SCHEMA.into(),
            repository_id: repo.id().to_hex(),
            region: region.to_string(),
            host: crate::sys::host::hostname(),
            mode: mode.to_string(),
            started,
            finished: Utc::now(),
            packs_total: report.packs as u64,
            packs: report
                .read_results
                .iter()
                .map(|r| crate::report::verified::PackRead {
                    pack: r.pack.to_hex(),
                    bytes: r.size,
                    ok: r.ok,
                })
                .collect(),
            signature: None,
        };
        rec.sign(&key);
        crate::report::verified::put(repo, &rec).await
    }
    .await;
    if let Err(e) = res {
        env.emit(Event::Warning {
            message: format!(
                "the record of what this verification read was not stored in {}: {e}",
                repo.location()
            ),
            hint: Some(
                "the period report's read-data coverage of this region will not count this run"
                    .into(),
            ),
        });
    }
}

/// Writes each finished drill's report: signed with the repository's signing key (created
/// on first use), chained to the plan's previous report, stored in the local state
/// directory and in every destination of the target. Never fails the drill: a report that
/// could not be written or stored somewhere is a warning. Returns the local files written.
pub async fn write_drill_reports(
    env: &Env,
    target: &Target,
    drilled: &Repository,
    reports: &[DrillReport],
) -> Vec<PathBuf> {
    let local = match local_reports_dir(env) {
        Ok(d) => d,
        Err(e) => {
            env.warn(format!(
                "the drill reports are not kept in the state directory: {e}"
            ));
            return Vec::new();
        }
    };
    write_drill_reports_in(env, target, drilled, reports, &local).await
}

/// Where this machine keeps its copies of drill reports: `reports/` beside a SQLite catalog
/// file (the state directory by default), else (a PostgreSQL catalog) in the default state
/// directory.
pub fn local_reports_dir(env: &Env) -> Result<PathBuf> {
    if let Ok(loc) = &env.catalog {
        let path = loc
            .strip_prefix("sqlite://")
            .or_else(|| loc.strip_prefix("sqlite:"))
            .map(|r| r.split('?').next().unwrap_or(r))
            .unwrap_or(loc);
        if !path.contains("://") {
            if let Some(dir) = Path::new(path).parent() {
                return Ok(dir.join("reports"));
            }
        }
    }
    store::local_dir()
}

/// [`write_drill_reports`] with the local copies in `local` (`<local>/<plan>/…`) instead of
/// the state directory (the demo keeps everything in its own directory).
pub async fn write_drill_reports_in(
    env: &Env,
    target: &Target,
    drilled: &Repository,
    reports: &[DrillReport],
    local: &Path,
) -> Vec<PathBuf> {
    if reports.is_empty() {
        return Vec::new();
    }
    match write_reports(env, target, drilled, reports, local).await {
        Ok(files) => files,
        Err(e) => {
            env.emit(Event::Warning {
                message: format!("the drill reports were not written: {e}"),
                hint: e.hint(),
            });
            Vec::new()
        }
    }
}

async fn write_reports(
    env: &Env,
    target: &Target,
    drilled: &Repository,
    reports: &[DrillReport],
    local: &Path,
) -> Result<Vec<PathBuf>> {
    let regions = all_regions(env, target, drilled).await;
    let repos: Vec<Repository> = regions.iter().map(|(_, r)| r.clone()).collect();
    let key = signing::load_or_create(&repos).await?;
    let repo_id = drilled.id().to_hex();
    // Report objects are immutable and named by their hash: what this host once read of one
    // is kept in the state directory, so a drill lists each region but reads only the
    // objects it has not seen (the cost no longer grows with the history).
    let cache_file = local.join(OBJECT_CACHE);
    let mut cache = ObjectCache::load(&cache_file);
    // Per region: the objects it holds (`None`: it could not be listed).
    let mut held: Vec<Option<Vec<(String, ObjMeta)>>> = Vec::new();
    for r in &repos {
        match cache.refresh(r).await {
            Ok(objs) => held.push(Some(objs)),
            Err(e) => {
                held.push(None);
                env.warn(format!("reports in {} cannot be listed: {e}", r.location()))
            }
        }
    }
    let mut metas: Vec<ObjMeta> = held
        .iter()
        .flatten()
        .flatten()
        .map(|(_, m)| m.clone())
        .collect();
    let mut files = Vec::new();
    for r in reports {
        let snap: Snapshot = drilled
            .load_json(ObjectKind::Snapshot, &r.snapshot_id)
            .await?;
        let mut ev = DrillEvidence::from_drill(r, &snap, repo_id.clone(), LOCAL_REGION);
        let dir = local.join(store::plan_dir(&ev.plan));
        if let Some(m) = newest_local(&dir) {
            metas.push(m);
        }
        let (seq, prev) = metas
            .iter()
            .filter(|m| m.ok && m.plan == ev.plan && m.repository_id == ev.repository_id)
            .max_by_key(|m| m.seq)
            .map(|m| (m.seq, Some(m.hash.clone())))
            .unwrap_or((0, None));
        ev.chain.seq = seq + 1;
        ev.chain.prev = prev;
        chain::sign(&mut ev, &key);
        let bytes = chain::to_file_bytes(&ev);
        let path = dir.join(ev.file_name());
        match store::write_file(&path, &bytes) {
            Ok(()) => files.push(path.clone()),
            Err(e) => env.warn(format!(
                "drill report {} was not written to the state directory: {e}",
                ev.report_id
            )),
        }
        let value = serde_json::to_value(&ev).expect("report serializes");
        let meta = ObjMeta::of(&value);
        for ((region, repo), held) in regions.iter().zip(held.iter_mut()) {
            match store::put(repo, &bytes).await {
                Ok(id) => {
                    if let Some(h) = held {
                        h.push((format!("{}{id}", store::PREFIX), meta.clone()));
                    }
                    cache.insert(repo, format!("{}{id}", store::PREFIX), meta.clone());
                }
                Err(e) => env.emit(Event::Warning {
                    message: format!(
                        "drill report {} was not stored in region {region} ({}): {e}",
                        ev.report_id,
                        repo.location()
                    ),
                    hint: Some("the other regions and the state directory hold it".into()),
                }),
            }
        }
        metas.push(meta);
    }
    backfill(env, &regions, &held, local, &repo_id).await;
    cache.save(&cache_file);
    Ok(files)
}

/// The file (in the state directory's report directory) where this host keeps what it read
/// of each region's report objects.
const OBJECT_CACHE: &str = ".report-objects.json";

/// What a report object holds, as far as the chain head and backfill need.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ObjMeta {
    /// A drill report whose signature verifies (else the rest is empty).
    ok: bool,
    plan: String,
    seq: u64,
    report_id: String,
    repository_id: String,
    /// `blake3:<hex>` of its canonical form (what the next report's `chain.prev` names).
    hash: String,
}

impl ObjMeta {
    fn of(v: &serde_json::Value) -> ObjMeta {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let ok = chain::is_drill_report(v) && chain::check_signature(v).is_ok();
        ObjMeta {
            ok,
            plan: s("plan"),
            seq: v
                .pointer("/chain/seq")
                .and_then(|x| x.as_u64())
                .unwrap_or(0),
            report_id: s("report_id"),
            repository_id: s("repository_id"),
            hash: chain::hash_value(v),
        }
    }

    fn bad() -> ObjMeta {
        ObjMeta {
            ok: false,
            plan: String::new(),
            seq: 0,
            report_id: String::new(),
            repository_id: String::new(),
            hash: String::new(),
        }
    }
}

/// Region location → object key → what it holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ObjectCache {
    regions: std::collections::BTreeMap<String, std::collections::BTreeMap<String, ObjMeta>>,
}

impl ObjectCache {
    fn load(path: &Path) -> ObjectCache {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, path: &Path) {
        let bytes = serde_json::to_vec(self).expect("cache serializes");
        if let Err(e) = store::write_file(path, &bytes) {
            tracing::warn!(path = %path.display(), error = %e, "the report object cache was not written");
        }
    }

    fn insert(&mut self, repo: &Repository, key: String, meta: ObjMeta) {
        self.regions
            .entry(repo.location())
            .or_default()
            .insert(key, meta);
    }

    /// Lists `repo`'s report objects and reads those not seen before: every object it
    /// holds, with what it holds. Objects gone from the region leave the cache.
    async fn refresh(&mut self, repo: &Repository) -> Result<Vec<(String, ObjMeta)>> {
        let listed = repo.store.list(store::PREFIX).await?;
        let known = self.regions.remove(&repo.location()).unwrap_or_default();
        let mut now = std::collections::BTreeMap::new();
        for info in listed {
            let meta = match known.get(&info.key) {
                Some(m) => m.clone(),
                None => {
                    let Some(id) = info
                        .key
                        .strip_prefix(store::PREFIX)
                        .and_then(|s| s.parse::<ObjectId>().ok())
                    else {
                        continue;
                    };
                    match repo.store.get(&info.key).await {
                        // Not read now: tried again next time.
                        Err(_) => continue,
                        Ok(raw) => match store::open(repo, &id, &raw)
                            .ok()
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        {
                            Some(v) => ObjMeta::of(&v),
                            None => ObjMeta::bad(),
                        },
                    }
                }
            };
            now.insert(info.key, meta);
        }
        let out = now.iter().map(|(k, m)| (k.clone(), m.clone())).collect();
        self.regions.insert(repo.location(), now);
        Ok(out)
    }
}

/// The newest report file of a plan's local directory (`<seq>-<id>.json`: the highest
/// sequence number), read alone.
fn newest_local(dir: &Path) -> Option<ObjMeta> {
    let newest = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            (name.ends_with(".json"))
                .then(|| chain::seq_of_name(&name).map(|s| (s, e.path())))
                .flatten()
        })
        .max_by_key(|(s, _)| *s)?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&newest.1).ok()?).ok()?;
    Some(ObjMeta::of(&v))
}

/// Copies to each region the reports of this repository it lacks (it was down when they
/// were written; `sync` does not copy reports), taken from another region or the state
/// directory; only reports whose signature verifies are copied.
async fn backfill(
    env: &Env,
    regions: &[(String, Repository)],
    held: &[Option<Vec<(String, ObjMeta)>>],
    local: &Path,
    repo_id: &str,
) {
    // Every verified report of this repository, and where a copy is.
    let mut all: std::collections::BTreeMap<String, (usize, String, ObjMeta)> =
        std::collections::BTreeMap::new();
    for (i, objs) in held.iter().enumerate() {
        for (k, m) in objs.iter().flatten() {
            if m.ok && m.repository_id == repo_id {
                all.entry(m.report_id.clone())
                    .or_insert((i, k.clone(), m.clone()));
            }
        }
    }
    for ((region, repo), objs) in regions.iter().zip(held) {
        let Some(objs) = objs else { continue };
        let has: HashSet<&str> = objs.iter().map(|(_, m)| m.report_id.as_str()).collect();
        for (id, (from, key, meta)) in &all {
            if has.contains(id.as_str()) {
                continue;
            }
            let local_file = local
                .join(store::plan_dir(&meta.plan))
                .join(format!("{:06}-{id}.json", meta.seq));
            // The local copy only if it is still the report the regions hold.
            let local_copy = std::fs::read(&local_file).ok().filter(|b| {
                serde_json::from_slice::<serde_json::Value>(b)
                    .is_ok_and(|v| ObjMeta::of(&v) == *meta)
            });
            let bytes = match local_copy {
                Some(b) => Some(b),
                None => {
                    let src = &regions[*from].1;
                    match (
                        key.strip_prefix(store::PREFIX)
                            .and_then(|s| s.parse::<ObjectId>().ok()),
                        src.store.get(key).await,
                    ) {
                        (Some(oid), Ok(raw)) => store::open(src, &oid, &raw).ok(),
                        _ => None,
                    }
                }
            };
            let Some(bytes) = bytes else {
                env.warn(format!(
                    "drill report {id} could not be read to copy it to region {region}, which lacks it"
                ));
                continue;
            };
            if let Err(e) = store::put(repo, &bytes).await {
                env.warn(format!(
                    "drill report {id} could not be copied to region {region}, which lacks it: {e}"
                ));
            }
        }
    }
}

/// The parsed drill reports of `found` (unreadable ones left out), deduplicated by report id.
pub fn evidence_of(found: &[Found]) -> Vec<DrillEvidence> {
    let mut out: Vec<DrillEvidence> = Vec::new();
    for f in found {
        let Ok(v) = &f.value else { continue };
        if !chain::is_drill_report(v) {
            continue;
        }
        let Ok(ev) = serde_json::from_value::<DrillEvidence>(v.clone()) else {
            continue;
        };
        if !out.iter().any(|o| o.report_id == ev.report_id) {
            out.push(ev);
        }
    }
    out.sort_by(|a, b| (a.started, &a.report_id).cmp(&(b.started, &b.report_id)));
    out
}

// ----- catalog rebuild -----------------------------------------------------------------

/// A stored report as the catalog's drill row.
fn to_record(ev: &DrillEvidence, repo: &Repository) -> Option<DrillRecord> {
    Some(DrillRecord {
        drill_id: RunId(ev.report_id.clone()),
        repo_id: *repo.id(),
        plan: ev.plan.clone(),
        job: ev.job.clone(),
        region: ev.region.clone(),
        snapshot_id: ev.snapshot.id.parse().ok()?,
        started: ev.started,
        finished: ev.finished,
        result: DrillResult::parse(&ev.verdict)?,
        rto_secs: (ev.error.is_none() && ev.checks.iter().all(|c| c.status == "passed"))
            .then_some(ev.rto.measured_secs),
        measured_rto_secs: ev.error.is_none().then_some(ev.rto.measured_secs),
        rpo_secs: Some(ev.rpo.measured_secs),
        rto_target_secs: ev.rto.target_secs,
        rpo_target_secs: ev.rpo.target_secs,
        detail: ev.error.clone(),
        phases: ev
            .phases
            .iter()
            .map(|p| DrillPhase {
                phase: p.phase.clone(),
                started: p.started,
                secs: p.secs,
            })
            .collect(),
        checks: ev
            .checks
            .iter()
            .map(|c| DrillCheck {
                name: c.name.clone(),
                passed: c.status == "passed",
                detail: c.detail.clone(),
            })
            .collect(),
    })
}

/// Restores the catalog's drill history from the reports stored in `repo` (drills the
/// catalog already has are left alone): how many drills were added. Only reports whose
/// signature verifies are taken.
pub async fn restore_drill_history(cat: &Catalog, repo: &Repository) -> Result<usize> {
    let found = store::load_all(repo).await?;
    let mut added = 0;
    for ev in evidence_of(&found) {
        let v = serde_json::to_value(&ev).expect("report serializes");
        if chain::check_signature(&v).is_err() {
            continue;
        }
        let Some(rec) = to_record(&ev, repo) else {
            continue;
        };
        if cat.drill(&rec.drill_id).await?.is_none() {
            cat.record_drill(&rec).await?;
            added += 1;
        }
    }
    Ok(added)
}

// ----- verify and pubkey ---------------------------------------------------------------

/// What `report verify` checks.
#[derive(Debug, Clone)]
pub enum VerifySource {
    /// A report file or a directory of them (no password needed).
    Path(PathBuf),
    /// The reports stored in every region of the target.
    Target(Target),
}

/// The result of `report verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The public key the reports were checked against (hex), and where it came from.
    pub public_key: Option<String>,
    pub key_source: String,
    pub chains: Vec<ChainStatus>,
    /// Regions that could not be read.
    pub unreadable: Vec<String>,
}

impl VerifyReport {
    /// 13 when a chain is broken, 3 when a region could not be read, else 0.
    pub fn exit_code(&self) -> ExitCode {
        if self.chains.iter().any(|c| !c.intact()) {
            ExitCode::Integrity
        } else if !self.unreadable.is_empty() {
            ExitCode::Partial
        } else {
            ExitCode::Ok
        }
    }
}

/// `lifeboat report verify`: signatures and chains; with a target, of every region
/// (each region's copy is checked as its own chain).
pub async fn verify(source: VerifySource, trusted: Option<VerifyingKey>) -> Result<VerifyReport> {
    match source {
        VerifySource::Path(p) => {
            let found = store::load_path(&p)?;
            if found.is_empty() {
                return Err(Error::Usage(format!(
                    "{} holds no drill reports (files with \"schema\": \"{}\")",
                    p.display(),
                    crate::report::schema::SCHEMA
                )));
            }
            Ok(VerifyReport {
                public_key: trusted.map(|k| hex::encode(k.to_bytes())),
                key_source: if trusted.is_some() {
                    "given".into()
                } else {
                    "the first report of each chain (give --pubkey to check against the repository's key)".into()
                },
                chains: chain::verify(&found, trusted.as_ref()),
                unreadable: Vec::new(),
            })
        }
        VerifySource::Target(t) => {
            let mut chains = Vec::new();
            let mut unreadable = Vec::new();
            let mut key = trusted;
            let mut key_source = if trusted.is_some() {
                "given".to_string()
            } else {
                String::new()
            };
            for region in &t.regions {
                let res = async {
                    let repo = t.open_region(region).await?;
                    if key.is_none() {
                        key = signing::public_key(&repo).await?;
                        key_source = format!("the repository ({})", region.catalog_region);
                    }
                    let mut found = store::load_all(&repo).await?;
                    store::sort_by_chain(&mut found);
                    Ok::<_, Error>(found)
                }
                .await;
                match res {
                    Ok(found) => {
                        for mut c in chain::verify(&found, key.as_ref()) {
                            c.plan = format!("{} @ {}", c.plan, region.catalog_region);
                            chains.push(c);
                        }
                    }
                    Err(e) => unreadable.push(format!("{}: {e}", region.catalog_region)),
                }
            }
            Ok(VerifyReport {
                public_key: key.map(|k| hex::encode(k.to_bytes())),
                key_source,
                chains,
                unreadable,
            })
        }
    }
}

/// `lifeboat report pubkey`: the repository's report-signing public key (created now when
/// the repository has none yet, in every region that answers).
pub async fn pubkey(env: &Env, target: &Target) -> Result<VerifyingKey> {
    let first = target
        .regions
        .first()
        .ok_or_else(|| Error::Usage("no destination".into()))?;
    let repo = target.open_region(first).await?;
    let repos: Vec<Repository> = all_regions(env, target, &repo)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    Ok(signing::load_or_create(&repos).await?.verifying_key())
}

// ----- period report -------------------------------------------------------------------

/// What `lifeboat report --plan` writes.
#[derive(Debug, Clone)]
pub struct PeriodRequest {
    /// The start of the period.
    pub since: DateTime<Utc>,
    /// The end of the period (now).
    pub now: DateTime<Utc>,
    /// Where `dr-report.{json,md,html}` go.
    pub out: PathBuf,
}

/// The result: the report and the files written.
#[derive(Debug, Clone)]
pub struct PeriodRun {
    pub report: PeriodReport,
    pub files: Vec<PathBuf>,
}

impl PeriodRun {
    /// 0 when every plan met its objectives and its chain is intact; 13 a chain is broken;
    /// 17 an objective or SLO was missed in the period; 3 a region could not be read.
    pub fn exit_code(&self) -> ExitCode {
        let r = &self.report;
        if r.plans.iter().any(|p| !p.chain.iter().all(|c| c.intact())) {
            ExitCode::Integrity
        } else if r.plans.iter().any(|p| !p.compliant()) {
            ExitCode::ObjectiveMissed
        } else if r.plans.iter().any(|p| !p.unreadable_regions.is_empty()) {
            ExitCode::Partial
        } else {
            ExitCode::Ok
        }
    }
}

/// A plan's evidence from its repository: the drill reports (deduplicated over regions, and
/// each region's chain verified) and each region's snapshots. The input of the period
/// report.
pub async fn plan_evidence(env: &Env, target: &Target) -> Result<PlanInput> {
    let plan: &Plan = target
        .plan
        .as_deref()
        .ok_or_else(|| Error::Other("a report needs a plan's target".into()))?;
    let mut found_all = Vec::new();
    let mut chains = Vec::new();
    let mut regions = Vec::new();
    let mut unreadable = Vec::new();
    let mut key = None;
    let mut opened: Option<Repository> = None;
    // Reading every report and record of every region takes a while with a long history.
    let bar = env.progress.count(&format!("{} reports", plan.name));
    for region in &target.regions {
        let res = async {
            let repo = match &opened {
                Some(o) => o.with_store(region.store().clone()).await?,
                None => target.open_region(region).await?,
            };
            if key.is_none() {
                key = signing::public_key(&repo).await?;
            }
            let mut found = store::load_all_with(&repo, &bar).await?;
            store::sort_by_chain(&mut found);
            let snaps = repo.list_snapshots().await?;
            let (reads, bad) = verified::load_all(&repo, key.as_ref(), &bar).await?;
            for b in bad {
                env.warn(format!(
                    "a read-verification record in region {} is left out: {b}",
                    region.catalog_region
                ));
            }
            let packs = verified::region_packs(&repo).await?;
            Ok::<_, Error>((repo, found, snaps, reads, packs))
        }
        .await;
        match res {
            Ok((repo, found, snaps, reads, packs)) => {
                let mine: Vec<Found> = found
                    .into_iter()
                    .filter(|f| {
                        f.value.as_ref().map_or(true, |v| {
                            v.get("plan").and_then(|p| p.as_str()) == Some(plan.name.as_str())
                        })
                    })
                    .collect();
                for mut c in chain::verify(&mine, key.as_ref()) {
                    c.plan = region.catalog_region.clone();
                    chains.push(c);
                }
                found_all.extend(mine);
                regions.push(RegionSnapshots {
                    region: region.catalog_region.clone(),
                    snapshots: snaps
                        .into_iter()
                        .filter(|(_, s)| s.plan.as_deref() == Some(plan.name.as_str()))
                        .map(|(id, s)| (id.to_hex(), s))
                        .collect(),
                    read_verifications: reads,
                    packs,
                });
                opened.get_or_insert(repo);
            }
            Err(e) => {
                env.warn(format!(
                    "region {} ({}) cannot be read for the report: {e}",
                    region.catalog_region, region.location
                ));
                unreadable.push(region.catalog_region.clone());
            }
        }
    }
    bar.finish_and_clear();
    Ok(PlanInput {
        plan: plan.clone(),
        drills: evidence_of(&found_all),
        regions,
        chains,
        unreadable_regions: unreadable,
        public_key: key.map(|k| hex::encode(k.to_bytes())),
        repository_created: opened.as_ref().map(|r| r.config.created),
    })
}

/// `lifeboat report --plan FILE|DIR --out DIR`: the period report of each plan and the
/// fleet, as JSON (the source of truth), Markdown and self-contained HTML.
pub async fn period(env: &Env, targets: &[Target], req: PeriodRequest) -> Result<PeriodRun> {
    let mut inputs = Vec::new();
    for t in targets {
        if env.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        inputs.push(plan_evidence(env, t).await?);
    }
    let report = period::build(&inputs, req.since, req.now);
    let files = write_period(&report, &req.out)?;
    Ok(PeriodRun { report, files })
}

/// Writes `dr-report.json`, `dr-report.md` and `dr-report.html` into `out`.
pub fn write_period(report: &PeriodReport, out: &Path) -> Result<Vec<PathBuf>> {
    let json = {
        let mut b = serde_json::to_vec_pretty(report).expect("report serializes");
        b.push(b'\n');
        b
    };
    let files = [
        (out.join("dr-report.json"), json),
        (
            out.join("dr-report.md"),
            crate::report::render::markdown(report).into_bytes(),
        ),
        (
            out.join("dr-report.html"),
            crate::report::render::html(report).into_bytes(),
        ),
    ];
    let mut written = Vec::new();
    for (p, b) in files {
        store::write_file(&p, &b)?;
        written.push(p);
    }
    Ok(written)
}

// ----- incident ------------------------------------------------------------------------

/// `lifeboat report incident RUN_ID`: a blameless post-mortem draft (Markdown) of a failed
/// drill, from its stored report (found in the state directory or the plan's regions), or of
/// a failed backup run, from its catalog row.
pub async fn incident(env: &Env, target: Option<&Target>, run_id: &str) -> Result<String> {
    let mut found = store::load_path(&local_reports_dir(env)?).unwrap_or_default();
    if let Some(t) = target {
        let input = plan_evidence(env, t).await?;
        for d in input.drills {
            found.push(Found {
                source: String::new(),
                name_seq: None,
                value: Ok(serde_json::to_value(d).expect("report serializes")),
            });
        }
    }
    if let Some(ev) = evidence_of(&found)
        .into_iter()
        .find(|e| e.report_id == run_id || e.report_id.starts_with(run_id))
    {
        return Ok(crate::report::render::incident(&ev));
    }
    // A backup run leaves no report: its row in the catalog is the evidence.
    let run = match super::record::open_catalog(env).await {
        Ok(cat) => {
            let h = cat
                .history(&crate::catalog::HistoryFilter {
                    repo: None,
                    region: None,
                    plan: None,
                    job: None,
                    limit: 0,
                })
                .await;
            cat.close().await;
            h?.into_iter()
                .filter(|e| e.kind == "backup")
                .find(|e| e.id.0 == run_id || e.id.0.starts_with(run_id))
        }
        Err(_) => None,
    };
    match run {
        Some(run) => {
            let rpo = target
                .and_then(|t| t.plan.as_ref())
                .and_then(|p| p.objectives.rpo)
                .map(|d| d.as_secs_f64());
            Ok(crate::report::render::incident_backup(&run, rpo))
        }
        None => Err(Error::Usage(format!(
            "no drill report or backup run {run_id:?} in the state directory or the catalog{}; `lifeboat history` lists them (give --plan to search the plan's regions)",
            if target.is_some() { ", nor in the plan's regions" } else { "" }
        ))),
    }
}

/// The object ids of a plan's stored reports (for tests and tooling).
pub async fn report_objects(repo: &Repository) -> Result<Vec<ObjectId>> {
    Ok(repo
        .store
        .list(store::PREFIX)
        .await?
        .into_iter()
        .filter_map(|i| {
            i.key
                .strip_prefix(store::PREFIX)
                .and_then(|s| s.parse().ok())
        })
        .collect())
}
