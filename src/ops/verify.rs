//! The verify use case (`lifeboat verify`): check one region's repository structure and, as
//! asked, read and verify its data — all of it, a random share, or the least recently
//! verified packs within a byte budget (the catalog keeps that ledger). Afterwards the catalog
//! records what was read and checks for rollback (best effort: a catalog problem is an
//! [`Event::CatalogNotRecorded`](super::Event::CatalogNotRecorded), never a failed verification). Findings are data in the
//! report; errors among them make exit 13. Snapshot anomalies ([`super::anomaly`]: future
//! dates, hosts new to a job, size collapses) are warnings among them, judged from the
//! manifests the structure check loaded — snapshots the catalog has not recorded included.
//! The catalog records no findings of a verification (only the packs it read), and a
//! snapshot written behind lifeboat's back is not among the catalog rows that `status` and
//! the metrics judge; so each verify also leaves its counts per kind in the state
//! directory ([`super::anomaly::VERIFIED_FILE`]), which the metrics read (docs/operations.md).

use super::record::{not_recorded, open_best_effort, open_catalog};
use super::target::{Target, LOCAL_REGION};
use super::Env;
use crate::catalog::{Catalog, PackRead, VerifiedBy};
use crate::error::ExitCode;
use crate::ids::PackId;
use crate::repo::verify::{ReadData, VerifyReport};
use crate::repo::Repository;
use crate::{Error, Result};

/// How much data to read besides checking the structure.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadMode {
    /// The structure only (snapshots, trees, index, pack listing).
    Structure,
    /// Every pack.
    All,
    /// A random percentage of packs (0 < p ≤ 100).
    Subset(f64),
    /// The least recently verified packs first, at most this many bytes (needs the catalog).
    Budget(u64),
}

#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The region to check; required when the target has several.
    pub region: Option<String>,
    pub read: ReadMode,
}

/// The result of `lifeboat verify`.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The structure and data checks, with the catalog's rollback findings added.
    pub report: VerifyReport,
    /// Why the verification is missing from the catalog (empty: recorded).
    pub catalog_warnings: Vec<String>,
}

impl Verification {
    /// 13 when any finding is an error.
    pub fn exit_code(&self) -> ExitCode {
        if self.report.errors() > 0 {
            ExitCode::Integrity
        } else {
            ExitCode::Ok
        }
    }
}

const NOT_RECORDED: &str =
    "the verification was not recorded in the catalog, and rollback detection did not run";

/// `lifeboat verify`: one region (or the only one) under a shared lock, then the catalog.
pub async fn verify(env: &Env, target: &Target, req: VerifyRequest) -> Result<Verification> {
    if req.region.is_none() && target.is_multi() {
        return Err(Error::Usage(format!(
            "verify checks one region at a time: pass --region NAME (regions: {})",
            target.region_names()
        )));
    }
    let repo = target.open_for_read(req.region.as_deref(), false).await?;
    // The ledger and high-water marks are per region: a named region's reads are recorded
    // under its catalog name, not as `local` (which made every region's coverage one).
    let region = match &req.region {
        Some(r) => target.region(r)?.catalog_region.clone(),
        None => LOCAL_REGION.to_string(),
    };
    let started = chrono::Utc::now();
    let (mut report, catalog, anomalies) = repo
        .with_lock("verify", false, async |_| {
            let (read, catalog) = match req.read {
                ReadMode::Budget(b) => {
                    let (c, r) = budget_selection(env, &repo, &region, b).await?;
                    (r, Some(c))
                }
                ReadMode::Structure => (ReadData::None, None),
                ReadMode::All => (ReadData::All, None),
                ReadMode::Subset(p) => (ReadData::Subset(p), None),
            };
            let mut report = crate::repo::verify::verify(
                &repo,
                read,
                env.progress.bytes("verify"),
                env.cancel.clone(),
            )
            .await?;
            // Snapshots a writer who may only add could have forged (T16): warnings, judged
            // from the manifests the check just loaded (a damaged one is already an error
            // there). The lock measured the store's clock, so "future" is in its time.
            let observed: Vec<super::anomaly::Observed> =
                report.manifests.iter().map(Into::into).collect();
            let anomalies =
                super::anomaly::detect(&observed, repo.now(), super::anomaly::NowFrom::Store);
            report
                .findings
                .extend(anomalies.iter().map(super::anomaly::Anomaly::finding));
            Ok((report, catalog, anomalies))
        })
        .await?;
    // The counts, for the metrics: the catalog records no findings (module docs).
    let plan = target.plan.as_ref().map(|p| p.name.as_str()).unwrap_or("");
    let verified = super::anomaly::Verified::new(plan, &region, chrono::Utc::now(), &anomalies);
    if let Err(e) = crate::catalog::default_state_dir()
        .map_err(crate::Error::from)
        .and_then(|dir| super::anomaly::record_verified(&dir, verified))
    {
        env.warn(format!(
            "the snapshot anomalies found were not recorded for the metrics: {e}"
        ));
    }
    // What was read, into the region itself: the period report's read-data coverage must
    // survive the catalog (docs/reports.md).
    if !report.read_results.is_empty() {
        let mode = match &req.read {
            ReadMode::All => "all".to_string(),
            ReadMode::Subset(p) => format!("subset {p}%"),
            ReadMode::Budget(b) => format!("budget {}", indicatif::HumanBytes(*b)),
            ReadMode::Structure => "structure".to_string(),
        };
        super::report::record_read_verification(
            env, target, &repo, &region, &mode, started, &report,
        )
        .await;
    }
    let catalog_warnings = after_verify(env, &repo, &region, catalog, &mut report).await;
    Ok(Verification {
        report,
        catalog_warnings,
    })
}

/// `--budget`: the packs to read, least recently verified first, within `budget` bytes.
/// Needs the catalog (its ledger decides the order), so failing to open it is an error here.
/// Packs larger than the budget are never read this way: each is a warning (the first five).
async fn budget_selection(
    env: &Env,
    repo: &Repository,
    region: &str,
    budget: u64,
) -> Result<(Catalog, ReadData)> {
    let bytes = |n: u64| indicatif::HumanBytes(n).to_string();
    let cat = open_catalog(env).await?;
    let index = repo.load_index().await?;
    cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
        .await?;
    let (chosen, too_big) = cat
        .least_recently_verified(repo.id(), region, budget, index.packs())
        .await?;
    for (id, size) in too_big.iter().take(5) {
        env.warn(format!(
            "pack {} ({}) is larger than the budget ({}) and is never read by --budget; run `lifeboat verify --read-data` or raise --budget",
            id.short(),
            bytes(*size),
            bytes(budget)
        ));
    }
    if too_big.len() > 5 {
        env.warn(format!(
            "{} more packs are larger than the budget; the largest is {}",
            too_big.len() - 5,
            bytes(too_big.iter().map(|p| p.1).max().unwrap_or(0))
        ));
    }
    Ok((
        cat,
        ReadData::Packs(
            chosen
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<PackId>>(),
        ),
    ))
}

/// After the checks: records what was read in the ledger and adds the high-water findings
/// (rollback, vanished snapshots) to the report. Problems with the catalog are returned as
/// warnings (and told as an [`Event::CatalogNotRecorded`](super::Event::CatalogNotRecorded)).
async fn after_verify(
    env: &Env,
    repo: &Repository,
    region: &str,
    catalog: Option<Catalog>,
    report: &mut VerifyReport,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let cat = match catalog {
        Some(c) => Some(c),
        None => open_best_effort(env, &mut warnings).await,
    };
    if let Some(cat) = cat {
        let res = async {
            cat.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
                .await?;
            let reads: Vec<PackRead> = report
                .read_results
                .iter()
                .map(|r| PackRead {
                    pack: r.pack,
                    size: r.size,
                    ok: r.ok,
                })
                .collect();
            if !reads.is_empty() {
                cat.record_pack_verifications(repo.id(), region, &reads, VerifiedBy::Verify)
                    .await?;
            }
            let listing = repo.list_snapshots().await?;
            let mut findings = cat.check_high_water(repo.id(), region, &listing).await?;
            // A backup that committed and recorded its snapshot between the listing and the
            // catalog read looks like a rollback; a real one is still there when the
            // repository is listed again.
            for _ in 0..3 {
                if findings.is_empty() {
                    break;
                }
                let listing = repo.list_snapshots().await?;
                findings = cat.check_high_water(repo.id(), region, &listing).await?;
            }
            Ok::<_, Error>(findings)
        }
        .await;
        match res {
            Ok(f) => report.findings.extend(f),
            Err(e) => warnings.push(e.to_string()),
        }
        cat.close().await;
    }
    not_recorded(env, &warnings, NOT_RECORDED);
    warnings
}

/// Parses a humanized size (`5GiB`, `500MB`, `1.5G`, `4096`), or says what is expected.
pub fn parse_size(s: &str) -> Result<u64> {
    crate::sys::human::parse_size(s).ok_or_else(|| {
        Error::Usage(format!(
            "size {s:?}: expected a number with an optional unit, such as 5GiB, 500MB or 1.5G"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("5GiB").unwrap(), 5 << 30);
        assert_eq!(parse_size("5 GiB").unwrap(), 5 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 65_536);
        for bad in ["", "GiB", "5 parsecs", "-1G", "0", "1.2.3M"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
