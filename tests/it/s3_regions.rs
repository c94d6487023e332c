//! Multi-region behaviour against real Garage servers, through the `lifeboat` binary:
//! a region lost in the middle of a backup (exit 3, the other region complete and
//! restorable, `sync` catching it up), a fault-injecting proxy in front of one region
//! (500/503 SlowDown, stalls, cut responses: the backup still commits and everything
//! verifies), wrong credentials and unknown buckets (clear errors naming the region, right
//! exit codes, no secret in any output), the healthcheck's diagnoses, restore with
//! `--allow-fallback` when a pack is damaged in one region, and the next backup back-filling
//! a region that missed a run.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::counting::CountingReads;
use support::fault_proxy::{FaultProxy, Faults};
use support::garage::{self, url_for, Garage};
use support::regions::{lifeboat, make_s3_tree, repos, run, Run};

fn cmd(work: &Path, urls: &[String], args: &[&str]) -> Run {
    let mut c = lifeboat(work);
    repos(&mut c, urls);
    c.args(args);
    let t0 = Instant::now();
    let r = run(c);
    eprintln!("lifeboat {args:?}: exit {} in {:?}", r.code, t0.elapsed());
    r
}

fn init(work: &Path, urls: &[String]) {
    let r = cmd(work, urls, &support::FAST_INIT);
    assert_eq!(r.code, 0, "{r:?}");
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

fn assert_same_tree(a: &Path, b: &Path) {
    let diffs = lifeboat::restore::compare_dirs(a, b).unwrap();
    assert!(diffs.is_empty(), "restore differs: {diffs:?}");
}

fn restore_and_compare(
    work: &Path,
    urls: &[String],
    region: &str,
    src: &Path,
    extra: &[&str],
) -> Run {
    let target = work.join(format!("restore-{region}-{}", rand::random::<u32>()));
    let mut args = vec![
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--region",
        region,
    ];
    args.extend_from_slice(extra);
    let r = cmd(work, urls, &args);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(src, &target.join("src"));
    r
}

fn verify_region(work: &Path, urls: &[String], region: &str) {
    let r = cmd(
        work,
        urls,
        &["verify", "--read-data", "--region", region, "--json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let v = json(&r);
    assert_eq!(v["errors"], 0, "{r:?}");
    assert!(v["report"]["packs_read"].as_u64().unwrap() > 0, "{r:?}");
    assert!(v["report"]["snapshots"].as_u64().unwrap() > 0, "{r:?}");
}

fn snapshot_regions(work: &Path, urls: &[String]) -> Vec<(Vec<String>, Vec<String>)> {
    let r = cmd(work, urls, &["snapshots", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    json(&r)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let names = |k: &str| {
                s[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect()
            };
            (names("regions"), names("missing_from"))
        })
        .collect()
}

#[test]
fn region_lost_mid_backup_then_synced() {
    let t0 = Instant::now();
    let r1 = Garage::start("r1");
    let mut r2 = Garage::start("r2");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_s3_tree(w, 64, 1);
    let urls = vec![r1.url("repo"), r2.url("repo")];
    init(w, &urls);

    // Start the backup, stop region r2 once its first pack data has arrived.
    let blocks_before = r2.stored_blocks();
    let mut c = lifeboat(w);
    repos(&mut c, &urls);
    c.args(["--json", "backup"]).arg(&src);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let waited = Instant::now();
    while r2.stored_blocks() == blocks_before {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "no pack ever reached r2"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    r2.stop();
    let out = child.wait_with_output().unwrap();
    let r = Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert_eq!(r.code, 3, "a lost region is a partial success: {r:?}");
    let v = json(&r);
    assert_eq!(v["regions"][0]["region"], "r1");
    assert_eq!(v["regions"][0]["status"], "complete", "{r:?}");
    assert_eq!(v["regions"][1]["region"], "r2");
    assert_eq!(v["regions"][1]["status"], "failed", "{r:?}");
    assert!(r.stderr.contains("region r2"), "{r:?}");

    // r1 is complete and restorable on its own.
    restore_and_compare(w, &urls[..1], "r1", &src, &[]);
    verify_region(w, &urls[..1], "r1");

    // r2 back: the snapshot is only in r1 until sync.
    r2.restart();
    let snaps = snapshot_regions(w, &urls);
    assert_eq!(
        snaps,
        vec![(vec!["r1".to_string()], vec!["r2".to_string()])]
    );
    let s = cmd(w, &urls, &["sync", "--json"]);
    assert_eq!(s.code, 0, "{s:?}");
    let sv = json(&s);
    assert_eq!(sv["regions"][1]["complete"], true, "{s:?}");
    assert_eq!(sv["regions"][1]["snapshots_copied"], 1, "{s:?}");
    assert!(
        sv["regions"][1]["objects_copied"].as_u64().unwrap() >= 3,
        "{s:?}"
    );
    assert_eq!(sv["regions"][0]["objects_copied"], 0, "{s:?}");
    let snaps = snapshot_regions(w, &urls);
    assert_eq!(
        snaps,
        vec![(vec!["r1".to_string(), "r2".to_string()], vec![])]
    );
    verify_region(w, &urls, "r1");
    verify_region(w, &urls, "r2");
    restore_and_compare(w, &urls, "r2", &src, &[]);

    // A second sync has nothing to do; a new backup commits in both.
    let s = cmd(w, &urls, &["sync", "--json"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert_eq!(json(&s)["regions"][1]["objects_copied"], 0);
    std::fs::write(src.join("new.txt"), "after the outage\n").unwrap();
    let b = cmd(w, &urls, &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(b.code, 0, "{b:?}");
    assert_eq!(json(&b)["regions"][1]["status"], "complete");
    eprintln!("region_lost_mid_backup_then_synced took {:?}", t0.elapsed());
}

#[test]
fn faulty_region_still_commits_and_verifies() {
    let t0 = Instant::now();
    let f1 = Garage::start("f1");
    let f2 = Garage::start("f2");
    let proxy = FaultProxy::start(
        f2.s3_port,
        Faults {
            error_rate: 0.20,
            stall_rate: 0.05,
            cut_rate: 0.08,
            stall: Duration::from_secs(8),
            after_forwarding: true,
            reject_parts: false,
        },
        20261124,
    );
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_s3_tree(w, 24, 2);
    let faulty =
        url_for(&proxy.endpoint(), "f2", "repo").replace("max_retries=4", "max_retries=12");
    let urls = vec![f1.url("repo"), faulty];
    init(w, &urls);
    let b = cmd(w, &urls, &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(b.code, 0, "faults must be retried away: {b:?}");
    let v = json(&b);
    assert_eq!(v["regions"][1]["status"], "complete", "{b:?}");
    assert!(
        v["regions"][1]["retries"]["retries"].as_u64().unwrap() > 0,
        "{b:?}"
    );
    // The healthy region is retried only where this loaded machine made a request outlive
    // the watchdog (a timeout), never for an error answer: the faults stay in f2.
    let healthy = &v["regions"][0]["retries"];
    assert_eq!(
        healthy["retries"].as_u64().unwrap(),
        healthy["timeouts"].as_u64().unwrap(),
        "{b:?}"
    );
    assert!(
        v["regions"][1]["retries"]["throttled"].as_u64().unwrap() > 0,
        "503 SlowDown answers are counted as throttling: {b:?}"
    );
    // Reads through the faults too: restore and a full data verification of f2.
    restore_and_compare(w, &urls, "f2", &src, &[]);
    verify_region(w, &urls, "f2");
    let c = &proxy.counts;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "proxy: {} requests, {} x 500, {} x 503, {} stalls, {} cut",
        load(&c.requests),
        load(&c.errors_500),
        load(&c.errors_503),
        load(&c.stalls),
        load(&c.cuts)
    );
    assert!(
        load(&c.errors_500) > 0
            && load(&c.errors_503) > 0
            && load(&c.stalls) > 0
            && load(&c.cuts) > 0
    );
    // Every object in the f2 bucket verifies, read directly (no proxy), and nothing is
    // left over: no finding at all, not even an unindexed pack.
    proxy.disable();
    let direct = vec![f2.url("repo")];
    verify_region(w, &direct, "f2");
    let r = cmd(
        w,
        &direct,
        &["verify", "--read-data", "--region", "f2", "--json"],
    );
    let findings = &json(&r)["report"]["findings"];
    assert_eq!(findings.as_array().map(|a| a.len()), Some(0), "{r:?}");
    let s = cmd(w, &[f1.url("repo"), f2.url("repo")], &["sync", "--json"]);
    assert_eq!(s.code, 0, "{s:?}");
    let sv = json(&s);
    assert_eq!(
        sv["regions"][0]["objects_copied"], 0,
        "f1 lacked nothing: {s:?}"
    );
    assert_eq!(
        sv["regions"][1]["objects_copied"], 0,
        "f2 lacked nothing: {s:?}"
    );
    eprintln!(
        "faulty_region_still_commits_and_verifies took {:?}",
        t0.elapsed()
    );
}

#[test]
fn bad_credentials_and_unknown_bucket_are_clear_and_secret_free() {
    let g1 = Garage::start("c1");
    let g2 = Garage::start("c2");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_s3_tree(w, 1, 3);
    let wrong_secret = "ffffeeeeddddccccbbbbaaaa99998888777766665555444433332222111100aa";
    let creds = garage::credentials_file(w, wrong_secret);
    let bad = format!("{}&credentials_file={}", g2.url("repo"), creds.display());
    let urls = vec![g1.url("repo"), bad.clone()];
    let no_secret = |r: &Run| {
        let all = r.all();
        assert!(!all.contains(wrong_secret), "secret leaked: {r:?}");
        assert!(!all.contains(garage::SECRET), "secret leaked: {r:?}");
    };

    // One region with a wrong key: the other commits, exit 3, the error names region c2.
    let r = cmd(w, &urls, &support::FAST_INIT);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("region c2") && r.stderr.contains("permission denied"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("AWS_SECRET_ACCESS_KEY"),
        "the hint names where credentials come from: {r:?}"
    );
    no_secret(&r);
    let r = cmd(w, &urls, &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{r:?}");
    let v = json(&r);
    assert_eq!(v["regions"][0]["status"], "complete");
    assert_eq!(v["regions"][1]["status"], "failed");
    assert!(
        v["regions"][1]["error"]
            .as_str()
            .unwrap()
            .contains("s3:c2:backups/repo"),
        "{r:?}"
    );
    assert_eq!(
        v["regions"][1]["retries"]["retries"], 0,
        "permanent errors are not retried: {r:?}"
    );
    no_secret(&r);

    // Every region refusing the key: exit 1, naming a region.
    let mut c = lifeboat(w);
    c.env("AWS_SECRET_ACCESS_KEY", wrong_secret);
    repos(&mut c, &[g1.url("repo"), g2.url("repo")]);
    c.args(["backup", src.to_str().unwrap()]);
    let r = run(c);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("s3:c1:backups/repo") && r.stderr.contains("permission denied"),
        "{r:?}"
    );
    no_secret(&r);

    // No credentials at all: exit 1, says where credentials come from.
    let mut c = lifeboat(w);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    repos(&mut c, &[g1.url("repo")]);
    c.args(["snapshots"]);
    let r = run(c);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("s3:c1:backups/repo")
            && r.stderr.contains("credentials")
            && r.stderr.contains("AWS_ACCESS_KEY_ID"),
        "{r:?}"
    );
    assert!(
        !r.stderr.contains("gave up"),
        "missing credentials are not retried: {r:?}"
    );

    // Unknown bucket: exit 1, names the bucket and the region, says what to do.
    let missing = g1
        .url("repo")
        .replace("s3://backups/", "s3://no-such-bucket/");
    let r = cmd(w, &[missing], &support::FAST_INIT);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("no-such-bucket")
            && r.stderr.contains("c1")
            && r.stderr.contains("create it"),
        "{r:?}"
    );
    no_secret(&r);

    // The healthcheck tells the cases apart.
    let unreachable = url_for(
        &format!("http://127.0.0.1:{}", garage::free_port()),
        "c1",
        "repo",
    )
    .replace("name=c1", "name=down");
    let wrong_region = g1
        .url("repo")
        .replace("region=c1", "region=mars")
        .replace("name=c1", "name=wr");
    let nobucket = g1
        .url("repo")
        .replace("s3://backups/", "s3://no-such-bucket/")
        .replace("name=c1", "name=nb");
    let all = vec![g1.url("repo"), bad, nobucket, unreachable, wrong_region];
    let r = cmd(w, &all, &["healthcheck", "--json"]);
    assert_eq!(r.code, 3, "{r:?}");
    no_secret(&r);
    let v = json(&r);
    let problems: Vec<(String, Value)> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["problem"].clone(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            ("c1".into(), Value::Null),
            ("c2".into(), "bad_credentials".into()),
            ("nb".into(), "unknown_bucket".into()),
            ("down".into(), "unreachable".into()),
            ("wr".into(), "wrong_region".into()),
        ],
        "{r:?}"
    );
    for d in v["destinations"].as_array().unwrap().iter().skip(1) {
        assert!(!d["hint"].as_str().unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reports_clock_skew() {
    let g = Garage::start("skew");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = lifeboat::store::s3::S3Config::from_url(&g.url("repo")).unwrap();
    cfg.credentials_file = Some(garage::credentials_file(dir.path(), garage::SECRET));
    let ok = lifeboat::store::s3::S3Store::new(cfg.clone()).unwrap();
    assert!(lifeboat::store::s3::healthcheck(&ok).await.ok());
    // Garage only refuses signatures dated more than 24 h in the past (it accepts any future
    // date), so the client's clock is set two days behind.
    let skewed = lifeboat::store::s3::S3Store::new(cfg.clone())
        .unwrap()
        .with_clock_offset(-2 * 24 * 3600);
    let h = lifeboat::store::s3::healthcheck(&skewed).await;
    assert_eq!(
        h.problem,
        Some(lifeboat::store::s3::HealthProblem::ClockSkew),
        "{h:?}"
    );
    assert!(h.hint.unwrap().contains("clock"));
    use lifeboat::store::Store;
    // A fresh client (the SDK corrects its clock from the first response it sees, so only a
    // client's first request shows the skew).
    let skewed = lifeboat::store::s3::S3Store::new(cfg)
        .unwrap()
        .with_clock_offset(-2 * 24 * 3600);
    let e = skewed
        .put("k", bytes::Bytes::from_static(b"v"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, lifeboat::store::StoreError::ClockSkew { .. }),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}

#[test]
fn restore_falls_back_to_another_region_for_a_damaged_pack() {
    let g1 = Garage::start("d1");
    let g2 = Garage::start("d2");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_s3_tree(w, 4, 4);
    let urls = vec![g1.url("repo"), g2.url("repo")];
    init(w, &urls);
    let b = cmd(w, &urls, &["backup", src.to_str().unwrap()]);
    assert_eq!(b.code, 0, "{b:?}");

    // Flip a byte in every pack of d1 (same key, same size).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use lifeboat::store::Store;
        let mut cfg = lifeboat::store::s3::S3Config::from_url(&g1.url("repo")).unwrap();
        cfg.credentials_file = Some(garage::credentials_file(w, garage::SECRET));
        let s = lifeboat::store::s3::S3Store::new(cfg).unwrap();
        let packs = s.list("data/").await.unwrap();
        assert!(!packs.is_empty());
        for p in packs {
            let mut b = s.get(&p.key).await.unwrap().to_vec();
            let i = b.len() / 3;
            b[i] ^= 0x55;
            s.put(&p.key, bytes::Bytes::from(b)).await.unwrap();
        }
    });

    let target = w.join("no-fallback");
    let r = cmd(
        w,
        &urls,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--region",
            "d1",
        ],
    );
    assert_eq!(r.code, 13, "damage must be detected, not restored: {r:?}");
    let r = restore_and_compare(w, &urls, "d1", &src, &["--allow-fallback"]);
    assert!(
        r.stderr.contains("read from region d2"),
        "the fallback must be reported: {r:?}"
    );
    let r = cmd(w, &urls, &["verify", "--read-data", "--region", "d1"]);
    assert_eq!(r.code, 13, "{r:?}");
}

#[test]
fn next_backup_backfills_a_region_that_missed_a_run() {
    let b1 = Garage::start("b1");
    let mut b2 = Garage::start("b2");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_s3_tree(w, 2, 5);
    let urls = vec![b1.url("repo"), b2.url("repo")];
    init(w, &urls);
    b2.stop();
    let r = cmd(w, &urls, &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(json(&r)["regions"][1]["status"], "failed", "{r:?}");
    b2.restart();
    std::fs::write(src.join("second.txt"), "second run\n").unwrap();
    let r = cmd(w, &urls, &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(
        r.code, 0,
        "the lagging region is caught up, then commits: {r:?}"
    );
    let v = json(&r);
    assert_eq!(v["regions"][1]["status"], "complete", "{r:?}");
    assert_eq!(v["caught_up"][1]["snapshots_copied"], 1, "{r:?}");
    assert!(
        v["caught_up"][1]["objects_copied"].as_u64().unwrap() >= 3,
        "{r:?}"
    );
    assert_eq!(v["caught_up"][0]["objects_copied"], 0, "{r:?}");
    let both = vec!["b1".to_string(), "b2".to_string()];
    assert_eq!(
        snapshot_regions(w, &urls),
        vec![(both.clone(), vec![]), (both, vec![])]
    );
    verify_region(w, &urls, "b2");
}

/// A snapshot that needs a few blobs of a pack another snapshot filled: the restore reads
/// those blobs with ranged GETs (neighbours coalesced), never the whole pack, and every blob
/// is still verified (the restored files are identical).
#[test]
fn restore_reads_only_the_needed_ranges_of_partly_used_packs() {
    use rand::{RngCore, SeedableRng};
    let g = Garage::start("p1");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // 40 incompressible files of 64 KiB: one pack of about 2.6 MiB.
    let all = w.join("all");
    std::fs::create_dir_all(&all).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    for i in 0..40 {
        let mut b = vec![0u8; 64 << 10];
        rng.fill_bytes(&mut b);
        std::fs::write(all.join(format!("f{i:02}")), &b).unwrap();
    }
    // A second tree with three of them: its snapshot uses 3 blobs of that pack.
    let few = w.join("few");
    std::fs::create_dir_all(&few).unwrap();
    for i in [3, 17, 30] {
        std::fs::copy(all.join(format!("f{i:02}")), few.join(format!("f{i:02}"))).unwrap();
    }
    let urls = vec![g.url("repo")];
    init(w, &urls);
    for d in [&all, &few] {
        let b = cmd(w, &urls, &["backup", d.to_str().unwrap()]);
        assert_eq!(b.code, 0, "{b:?}");
    }
    let target = w.join("restored");
    let Reads {
        whole,
        largest_whole,
        ranged,
        ranged_bytes,
        pack_bytes,
    } = counted_restore(&g, w, &target);
    assert_same_tree(&few, &target.join("few"));
    eprintln!("whole pack GETs {whole} (largest {largest_whole} bytes), ranged GETs {ranged} ({ranged_bytes} bytes), largest pack {pack_bytes} bytes");
    // The second backup's pack holds nothing but its two trees: the walk reads it whole.
    assert!(
        whole <= 1 && largest_whole < pack_bytes / 4,
        "no pack is read whole for 3 of its 40 blobs ({whole} whole GETs, the largest {largest_whole} bytes)"
    );
    // Two trees (the snapshot's root and `few`) plus at most one range per needed blob.
    assert!((2..=5).contains(&ranged), "{ranged} ranged GETs");
    assert!(
        ranged_bytes >= 3 * (64 << 10) && ranged_bytes < pack_bytes / 2,
        "{ranged_bytes} bytes read of a {pack_bytes}-byte pack"
    );
}

/// The pack reads of one restore.
struct Reads {
    whole: u64,
    /// Bytes of the largest pack read whole.
    largest_whole: u64,
    ranged: u64,
    ranged_bytes: u64,
    /// The repository's largest pack.
    pack_bytes: u64,
}

/// Restores the latest snapshot of `g`'s `repo` into `target` in-process, through a store
/// that counts the reads of packs.
fn counted_restore(g: &Garage, w: &Path, target: &Path) -> Reads {
    use std::sync::atomic::Ordering::SeqCst;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = lifeboat::store::s3::S3Config::from_url(&g.url("repo")).unwrap();
        cfg.credentials_file = Some(garage::credentials_file(w, garage::SECRET));
        let counting = std::sync::Arc::new(CountingReads::new(std::sync::Arc::new(
            lifeboat::store::s3::S3Store::new(cfg).unwrap(),
        )));
        let repo = lifeboat::repo::Repository::open(
            counting.clone(),
            support::regions::PASSWORD.as_bytes(),
        )
        .await
        .unwrap();
        let (_, snap) = repo.find_snapshot("latest").await.unwrap();
        let index = std::sync::Arc::new(repo.load_index().await.unwrap());
        let pack_bytes: u64 = index.packs().iter().map(|(_, s)| s).max().copied().unwrap();
        let (w0, r0, b0) = (
            counting.whole.load(SeqCst),
            counting.ranged.load(SeqCst),
            counting.ranged_bytes.load(SeqCst),
        );
        lifeboat::restore::restore(
            &repo,
            index,
            &snap,
            target,
            indicatif::ProgressBar::hidden(),
            lifeboat::sys::Cancel::new(),
        )
        .await
        .unwrap();
        Reads {
            whole: counting.whole.load(SeqCst) - w0,
            largest_whole: counting.largest_whole.load(SeqCst),
            ranged: counting.ranged.load(SeqCst) - r0,
            ranged_bytes: counting.ranged_bytes.load(SeqCst) - b0,
            pack_bytes,
        }
    })
}

/// A deep tree from S3: the walk fetches every tree of a pack the first time it needs one
/// of them (ranged reads of that pack's trees), so it costs a few reads, not one round trip
/// per level (13 here before the prefetch).
#[test]
fn restore_walks_a_deep_tree_in_a_few_reads() {
    use rand::{RngCore, SeedableRng};
    let g = Garage::start("deep");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // 12 nested directories, each with one incompressible 200 KiB file: one pack, mostly
    // file data, with 13 trees (the root's included).
    let src = w.join("deep");
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut d = src.clone();
    for level in 0..12 {
        d = d.join(format!("d{level}"));
        std::fs::create_dir_all(&d).unwrap();
        let mut b = vec![0u8; 200 << 10];
        rng.fill_bytes(&mut b);
        std::fs::write(d.join("f"), &b).unwrap();
    }
    let urls = vec![g.url("repo")];
    init(w, &urls);
    let b = cmd(w, &urls, &["backup", src.to_str().unwrap()]);
    assert_eq!(b.code, 0, "{b:?}");
    let target = w.join("restored");
    let Reads {
        whole,
        ranged,
        ranged_bytes,
        pack_bytes,
        ..
    } = counted_restore(&g, w, &target);
    assert_same_tree(&src, &target.join("deep"));
    eprintln!("whole pack GETs {whole}, ranged GETs {ranged} ({ranged_bytes} bytes), largest pack {pack_bytes} bytes");
    assert!(
        ranged <= 3,
        "{ranged} ranged GETs: the 13 trees of one pack should take a few reads, not one per level"
    );
    assert!(whole <= 2, "{whole} whole-pack GETs");
    assert!(
        ranged_bytes < pack_bytes,
        "the walk read {ranged_bytes} bytes of a {pack_bytes}-byte pack: only its trees are needed"
    );
}

/// `--allow-fallback` with the chosen region answering no pack read at all (every GET of
/// `data/` stalls at a proxy): the reads are hedged with the other region after a short
/// delay, the slow region is then asked second, and the restore finishes long before the
/// stalled requests would have been given up on, reporting the hedged reads.
#[test]
fn restore_hedges_reads_when_a_region_is_slow() {
    let s1 = Garage::start("s1");
    let s2 = Garage::start("s2");
    let proxy = FaultProxy::start(
        s1.s3_port,
        Faults {
            error_rate: 0.0,
            stall_rate: 1.0,
            cut_rate: 0.0,
            stall: Duration::from_secs(120),
            after_forwarding: false,
            reject_parts: false,
        },
        18,
    );
    proxy.disable();
    proxy.only("GET", "/data/");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_s3_tree(w, 12, 7);
    // The proxied region with the default watchdog and retries: without hedging every stalled
    // read would wait out request_timeout_secs (20 s) five times before the fallback.
    let slow = url_for(&proxy.endpoint(), "s1", "repo")
        .replace("request_timeout_secs=3", "request_timeout_secs=20");
    let urls = vec![slow, s2.url("repo")];
    init(w, &urls);
    let b = cmd(w, &urls, &["backup", src.to_str().unwrap()]);
    assert_eq!(b.code, 0, "{b:?}");
    proxy.enable();
    let t0 = Instant::now();
    let r = restore_and_compare(w, &urls, "s1", &src, &["--allow-fallback", "--json"]);
    let took = t0.elapsed();
    let stalls = proxy
        .counts
        .stalls
        .load(std::sync::atomic::Ordering::Relaxed);
    let reads = json(&r)["report"]["fallback_reads"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    eprintln!(
        "restore with one stalled region: {took:?}, {stalls} stalled GETs, {} reads served by s2",
        reads.len()
    );
    assert!(
        stalls > 0,
        "the proxy stalled nothing: the test tests nothing"
    );
    assert!(
        reads
            .iter()
            .any(|m| m.as_str().unwrap().contains("hedged read")),
        "{r:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "one stalled region must cost the hedge delay a few times, not the watchdog: {took:?}"
    );
}

/// `bench-restore-floor --put-url A --put-url B` (the fan-out upload floor of
/// `scripts/bench-s3`): the snapshot's packs are PUT to A alone, then to A and B both ways,
/// figures reported, and every object it wrote is deleted again — the repository and the
/// other prefix hold only what they held before.
#[test]
fn upload_floor_measures_one_and_two_regions_and_leaves_nothing_behind() {
    use lifeboat::store::Store;
    use rand::{RngCore, SeedableRng};
    let g = Garage::start("uf");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = w.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for i in 0..6 {
        let mut b = vec![0u8; 700 << 10];
        rng.fill_bytes(&mut b);
        std::fs::write(src.join(format!("f{i}")), &b).unwrap();
    }
    let repo = vec![g.url("repo")];
    init(w, &repo);
    let b = cmd(w, &repo, &["backup", src.to_str().unwrap()]);
    assert_eq!(b.code, 0, "{b:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let list = |prefix: &str| -> Vec<String> {
        let mut cfg = lifeboat::store::s3::S3Config::from_url(&g.url(prefix)).unwrap();
        cfg.credentials_file = Some(garage::credentials_file(w, garage::SECRET));
        let store = lifeboat::store::s3::S3Store::new(cfg).unwrap();
        let mut keys: Vec<String> = rt
            .block_on(store.list(""))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    };
    let before = list("repo");
    let (a, other) = (g.url("repo"), g.url("other"));
    let r = cmd(
        w,
        &repo,
        &[
            "bench-restore-floor",
            "latest",
            "--put-url",
            &a,
            "--put-url",
            &other,
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let put = &json(&r)["put"];
    assert_eq!(put["regions"], 2, "{put}");
    assert!(put["objects"].as_u64().unwrap() >= 1, "{put}");
    assert!(put["bytes"].as_u64().unwrap() >= 6 * (700 << 10), "{put}");
    for k in [
        "one_region_secs",
        "all_regions_secs",
        "all_regions_independent_secs",
    ] {
        assert!(put[k].as_f64().unwrap() > 0.0, "{k}: {put}");
    }
    assert_eq!(
        list("repo"),
        before,
        "the floor left objects in the repository"
    );
    assert!(
        list("other").is_empty(),
        "the floor left objects in the other region"
    );
}
