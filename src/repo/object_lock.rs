//! The Object Lock extension pass: keeps every object a snapshot still needs locked, on a
//! destination with `object_lock_mode` / `object_lock_days` (documented in `docs/format.md`,
//! "Object Lock").
//!
//! Each object is written with a retention of `days` from its upload. Deduplication makes a
//! pack outlive the snapshot that wrote it: a snapshot taken later may need it long after its
//! lock lapsed, and then ransomware holding the credentials could delete it. [`extend`] walks
//! the snapshots in the repository (after `forget`, those are the ones the rules keep) and
//! makes sure that every object they need — their packs, and every index file, snapshot,
//! key and the config — is locked until at least `now + days/2`; one that is not is extended
//! to `now + days`. So each object is extended at most once every `days/2` while it is in use,
//! not at every run, and what the snapshots need is always locked for at least `days/2` past
//! the last pass.
//!
//! The pass is incremental through a sealed record in the repository (`retention/<id>`, a
//! [`LockRecord`]): the retain-until date it set or read for each object. A date only ever
//! grows, so a record is a lower bound and safe to trust; an object no record names is asked
//! (one HEAD) before it is extended, so a lock is never asked to shrink. Prune reads the same
//! record to skip packs that are still locked, and records the dates the store reported when
//! it refused a delete.
//!
//! "Now" is [`crate::sys::clock::lock_now`].

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use super::reach::{reach_snapshots, Reach};
use super::{ObjectKind, Repository};
use crate::ids::ObjectId;
use crate::store::{LockPolicy, StoreError};
use crate::sys::Cancel;
use crate::{Error, Result};

const CONCURRENCY: usize = 16;

/// `retention/<id>`: retain-until dates (Unix seconds) by object key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRecord {
    pub created: DateTime<Utc>,
    pub until: BTreeMap<String, i64>,
}

/// What a pass found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LockReport {
    pub mode: Option<crate::store::s3::LockMode>,
    pub days: u32,
    /// Objects the snapshots need.
    pub objects: usize,
    /// Extended this run (`PutObjectRetention`), to `extended_to`.
    pub extended: usize,
    pub extended_to: Option<DateTime<Utc>>,
    /// Retention read from the store (objects no record named yet).
    pub read: usize,
    /// The earliest retain-until date among the needed objects after the pass.
    pub earliest_until: Option<DateTime<Utc>>,
}

/// The merged record: the latest date known for each key, and the record files it came from.
pub async fn load_record(
    repo: &Repository,
) -> Result<(HashMap<String, DateTime<Utc>>, Vec<ObjectId>)> {
    let ids = repo.list_ids(ObjectKind::LockRecord).await?;
    let mut out: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut loaded = Vec::new();
    for id in ids {
        match repo
            .load_json::<LockRecord>(ObjectKind::LockRecord, &id)
            .await
        {
            Ok(r) => {
                for (k, secs) in r.until {
                    let Some(t) = DateTime::from_timestamp(secs, 0) else {
                        continue;
                    };
                    let e = out.entry(k).or_insert(t);
                    if t > *e {
                        *e = t;
                    }
                }
                loaded.push(id);
            }
            Err(Error::Store(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok((out, loaded))
}

/// Adds dates to the record (prune: what the store said when it refused a delete).
pub async fn remember(repo: &Repository, dates: &[(String, DateTime<Utc>)]) -> Result<()> {
    if dates.is_empty() {
        return Ok(());
    }
    let rec = LockRecord {
        created: Utc::now(),
        until: dates
            .iter()
            .map(|(k, t)| (k.clone(), t.timestamp()))
            .collect(),
    };
    repo.save_json(ObjectKind::LockRecord, &rec).await?;
    Ok(())
}

/// Whether a key is an object a snapshot may need to be restored (besides its packs, which the
/// tree walk finds): not the repository's locks, prune plans, lock records, healthcheck probes.
fn always_needed(key: &str) -> bool {
    let top = key.split('/').next().unwrap_or("");
    !matches!(
        top,
        "data" | "locks" | "prune" | "retention" | "lifeboat-healthcheck"
    ) && !key.ends_with(".tmp")
}

/// The pass (see the module doc). `None` when the repository's store has no Object Lock.
pub async fn extend(
    repo: &Repository,
    now: DateTime<Utc>,
    cancel: &Cancel,
) -> Result<Option<LockReport>> {
    let Some(policy) = repo.store.lock_policy() else {
        return Ok(None);
    };
    let mut r = LockReport {
        mode: Some(policy.mode),
        days: policy.days,
        ..Default::default()
    };
    let needed = needed_keys(repo, cancel).await?;
    r.objects = needed.len();
    let (mut known, loaded) = load_record(repo).await?;
    let (horizon, target) = horizon(&policy, now);

    let todo: Vec<(String, Option<DateTime<Utc>>)> = needed
        .iter()
        .filter_map(|k| match known.get(k) {
            Some(t) if *t >= horizon => None,
            t => Some((k.clone(), t.copied())),
        })
        .collect();
    // (key, its date now, retention read from the store, extended)
    type Outcome = Result<(String, DateTime<Utc>, bool, bool)>;
    let results: Vec<Outcome> = stream::iter(todo)
        .map(|(key, recorded)| async move {
            cancel.check()?;
            let (mut read, mut current) = (false, recorded);
            if current.is_none() {
                // Never recorded: ask, so that a lock is never asked to shrink.
                current = repo.store.lock_until(&key).await?;
                read = true;
            }
            if let Some(c) = current.filter(|c| *c >= horizon) {
                return Ok((key, c, read, false));
            }
            match repo.store.extend_lock(&key, target).await {
                Ok(()) => Ok((key, target, read, true)),
                Err(e) if e.is_not_found() => Ok((key, now, read, false)),
                Err(e) => {
                    // A date later than ours already in force (another host's pass) is
                    // refused as a shortening: read it and go on.
                    match repo.store.lock_until(&key).await {
                        Ok(Some(c)) if c >= horizon => Ok((key, c, true, false)),
                        _ => Err(Error::Store(e)),
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut changed = false;
    for res in results {
        let (key, until, read, extended) = res?;
        if read {
            r.read += 1;
        }
        if extended {
            r.extended += 1;
            r.extended_to = Some(target);
        }
        changed |= read || extended;
        known.insert(key, until);
    }
    r.earliest_until = needed.iter().filter_map(|k| known.get(k)).min().copied();
    if changed || loaded.len() > 1 {
        // One record replaces the ones read, holding the needed objects only.
        let rec = LockRecord {
            created: Utc::now(),
            until: needed
                .iter()
                .filter_map(|k| known.get(k).map(|t| (k.clone(), t.timestamp())))
                .collect(),
        };
        repo.save_json(ObjectKind::LockRecord, &rec).await?;
        for id in loaded {
            match repo.store.delete(&ObjectKind::LockRecord.key(&id)).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Some(r))
}

/// The date every needed object must be locked until at least, and the date a pass extends
/// to: `now + days/2` and `now + days`.
pub fn horizon(policy: &LockPolicy, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let period = policy.period();
    (now + period / 2, now + period)
}

/// Every object key the repository's snapshots need to be restored.
async fn needed_keys(repo: &Repository, cancel: &Cancel) -> Result<Vec<String>> {
    let Reach {
        files, index, used, ..
    } = reach_snapshots(repo, cancel).await?;
    drop(files);
    let mut packs = HashSet::new();
    for b in &used {
        if let Some(loc) = index.get(b) {
            packs.insert(index.pack(loc.pack).0);
        }
    }
    drop(used);
    let mut keys: Vec<String> = packs.iter().map(super::pack_key).collect();
    for info in repo.store.list("").await? {
        if always_needed(&info.key) {
            keys.push(info.key);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The packs the record says are locked after `now`, with their dates.
pub fn locked_after(
    record: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> HashMap<crate::ids::PackId, DateTime<Utc>> {
    record
        .iter()
        .filter(|(_, t)| **t > now)
        .filter_map(|(k, t)| super::parse_pack_key(k).map(|p| (p, *t)))
        .collect()
}

/// A refused delete that is Object Lock (the object stays; retry after the date).
pub fn locked_until(e: &Error) -> Option<Option<DateTime<Utc>>> {
    match e {
        Error::Store(StoreError::Locked { until, .. }) => Some(*until),
        _ => None,
    }
}
