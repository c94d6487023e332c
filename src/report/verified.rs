//! Read-data verification records (`lifeboat.read-verification/1`): what a `verify` that read
//! data proved readable, stored in the region it read (`verified/<id>`, sealed like a drill
//! report and signed with the repository's report key), so the period report can show each
//! region's read-verified share after the server — and the catalog's ledger — is lost.
//!
//! A record names every pack it read with its size and verdict; the period report takes
//! the union of the packs read intact during the period that the region still holds, over
//! the bytes the region holds now ([`coverage`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chain::{canonical, check_signature};
use super::schema::Signature;
use super::sealed::Kind;
use crate::ids::{ObjectId, PackId};
use crate::repo::Repository;
use crate::{Error, Result};

/// The schema name and version every record carries.
pub const SCHEMA: &str = "lifeboat.read-verification/1";
/// The folder of records in a repository.
pub const PREFIX: &str = "verified/";

/// One pack a verification read, and whether every blob in it opened and re-hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackRead {
    pub pack: String,
    pub bytes: u64,
    pub ok: bool,
}

/// What one `verify --read-data` (or `--read-data-subset`, `--budget`) read in one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadVerification {
    pub schema: String,
    pub repository_id: String,
    /// The region's catalog name as the verifying host knew it.
    pub region: String,
    pub host: String,
    /// `all`, `subset 10%`, `budget 5.0 GiB`.
    pub mode: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// Packs the region's index listed when the verification ran.
    pub packs_total: u64,
    pub packs: Vec<PackRead>,
    /// Absent while the record is being signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl ReadVerification {
    /// Signs the record (replacing any signature) with `key`.
    pub fn sign(&mut self, key: &SigningKey) {
        self.signature = None;
        let body = canonical(&serde_json::to_value(&*self).expect("record serializes"));
        self.signature = Some(Signature {
            algorithm: "ed25519".into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            value: hex::encode(key.sign(&body).to_bytes()),
        });
    }
}

/// Read-verification records as sealed objects.
const KIND: Kind = Kind {
    prefix: PREFIX,
    label: b"lifeboat v1 read verification\0",
    max: 256 << 20,
};

/// Stores a signed record in `repo`'s store: `verified/<blake3 of the sealed bytes>`.
pub async fn put(repo: &Repository, record: &ReadVerification) -> Result<ObjectId> {
    KIND.put(
        repo,
        &serde_json::to_vec(record).expect("record serializes"),
    )
    .await
}

/// Opens a stored record: checks its name, opens the seal, and checks the signature against
/// `key` (the repository's report key) when given.
pub fn open(
    repo: &Repository,
    id: &ObjectId,
    raw: &[u8],
    key: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<ReadVerification> {
    let what = KIND.what(repo, id);
    let json = KIND.open(repo, id, raw)?;
    let v: Value = serde_json::from_slice(&json)
        .map_err(|e| Error::integrity(what.clone(), format!("not a record: {e}")))?;
    let signer = check_signature(&v).map_err(|e| Error::integrity(what.clone(), e))?;
    if key.is_some_and(|k| *k != signer) {
        return Err(Error::integrity(
            what,
            "signed by another key than the repository's report key",
        ));
    }
    serde_json::from_value(v).map_err(|e| Error::integrity(what, format!("not a record: {e}")))
}

/// Every record in `repo`'s store; records that do not open or verify are returned apart
/// with their problem.
pub async fn load_all(
    repo: &Repository,
    key: Option<&ed25519_dalek::VerifyingKey>,
    bar: &indicatif::ProgressBar,
) -> Result<(Vec<ReadVerification>, Vec<String>)> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for f in KIND.fetch_all(repo, bar).await? {
        match f.raw {
            Err(e) => bad.push(format!("{}: {e}", f.key)),
            Ok(raw) => match open(repo, &f.id, &raw, key) {
                Ok(r) => ok.push(r),
                Err(e) => bad.push(e.to_string()),
            },
        }
    }
    ok.sort_by_key(|r| r.started);
    Ok((ok, bad))
}

/// The packs a region holds now: id → bytes (its `data/` listing).
pub async fn region_packs(repo: &Repository) -> Result<HashMap<PackId, u64>> {
    Ok(repo
        .store
        .list("data/")
        .await?
        .into_iter()
        .filter_map(|i| crate::repo::parse_pack_key(&i.key).map(|p| (p, i.size)))
        .collect())
}

/// A region's read-data coverage over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReadCoverage {
    /// Verifications that read data in the period.
    pub verifications: usize,
    /// Packs the region holds now, and their bytes.
    pub packs: u64,
    pub bytes: u64,
    /// Of those, the packs read and found intact in the period, and their bytes.
    pub packs_verified: u64,
    pub bytes_verified: u64,
    /// `bytes_verified / bytes` (`None` when the region holds nothing).
    pub share: Option<f64>,
    /// Packs a verification in the period found damaged (and the region still holds).
    pub packs_damaged: u64,
    pub last: Option<DateTime<Utc>>,
}

/// The coverage of `records` (one region's) between `since` and `until`, against the packs
/// the region holds now. A pack counts as verified when a verification in the period read
/// it intact and no later one found it damaged.
pub fn coverage(
    records: &[ReadVerification],
    packs_now: &HashMap<PackId, u64>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> ReadCoverage {
    let mut latest: BTreeMap<PackId, (DateTime<Utc>, bool)> = BTreeMap::new();
    let mut n = 0;
    let mut last = None;
    for r in records
        .iter()
        .filter(|r| r.finished >= since && r.finished <= until)
    {
        n += 1;
        last = last.max(Some(r.finished));
        for p in &r.packs {
            let Ok(id) = p.pack.parse::<PackId>() else {
                continue;
            };
            let e = latest.entry(id).or_insert((r.finished, p.ok));
            if r.finished >= e.0 {
                *e = (r.finished, p.ok);
            }
        }
    }
    let bytes: u64 = packs_now.values().sum();
    let mut c = ReadCoverage {
        verifications: n,
        packs: packs_now.len() as u64,
        bytes,
        last,
        ..Default::default()
    };
    for (id, (_, ok)) in &latest {
        let Some(size) = packs_now.get(id) else {
            continue;
        };
        if *ok {
            c.packs_verified += 1;
            c.bytes_verified += size;
        } else {
            c.packs_damaged += 1;
        }
    }
    c.share = (bytes > 0).then(|| c.bytes_verified as f64 / bytes as f64);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u8) -> PackId {
        format!("{:02x}", n).repeat(32).parse().unwrap()
    }

    fn record(day: i64, reads: &[(u8, u64, bool)]) -> ReadVerification {
        let t = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::days(day);
        ReadVerification {
            schema: SCHEMA.into(),
            repository_id: "00".repeat(32),
            region: "r1".into(),
            host: "h".into(),
            mode: "subset 50%".into(),
            started: t,
            finished: t,
            packs_total: 4,
            packs: reads
                .iter()
                .map(|(n, b, ok)| PackRead {
                    pack: pid(*n).to_hex(),
                    bytes: *b,
                    ok: *ok,
                })
                .collect(),
            signature: None,
        }
    }

    #[test]
    fn coverage_is_the_union_in_the_period_over_what_the_region_holds_now() {
        let now: HashMap<PackId, u64> = [(pid(1), 100), (pid(2), 300), (pid(3), 600)].into();
        let records = vec![
            // Before the period: does not count.
            record(0, &[(3, 600, true)]),
            record(10, &[(1, 100, true), (4, 50, true)]), // pack 4 was pruned since
            record(12, &[(2, 300, false)]),
            record(14, &[(1, 100, true)]),
        ];
        let since = records[1].finished - chrono::Duration::hours(1);
        let until = records[3].finished;
        let c = coverage(&records, &now, since, until);
        assert_eq!(c.verifications, 3);
        assert_eq!((c.packs, c.bytes), (3, 1000));
        assert_eq!((c.packs_verified, c.bytes_verified), (1, 100));
        assert_eq!(c.packs_damaged, 1);
        assert_eq!(c.share, Some(0.1));
        assert_eq!(c.last, Some(until));
        // A later intact read clears an earlier damaged verdict, and the reverse.
        let more = [records.clone(), vec![record(13, &[(2, 300, true)])]].concat();
        let c = coverage(&more, &now, since, until);
        assert_eq!(
            (c.packs_verified, c.bytes_verified, c.packs_damaged),
            (2, 400, 0)
        );
        // Nothing held: no share.
        assert_eq!(
            coverage(&records, &HashMap::new(), since, until).share,
            None
        );
    }

    #[test]
    fn a_signed_record_verifies_and_an_edited_one_does_not() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut r = record(1, &[(1, 100, true)]);
        r.sign(&key);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(check_signature(&v).unwrap(), key.verifying_key());
        let mut edited = v.clone();
        edited["packs"][0]["ok"] = Value::Bool(false);
        assert!(check_signature(&edited).is_err());
    }
}
