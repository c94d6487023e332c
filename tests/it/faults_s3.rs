//! The fault matrix, S3 side (RELIABILITY T02, T05, T06, T07, T10, T13), against real Garage
//! servers through the `lifeboat` binary, with the fault proxy (`support::fault_proxy`) in
//! front of a region where the fault travels over HTTP. After each scenario the invariants
//! are checked ([`invariants`]): INV-1 `verify --read-data` passes with nothing above info,
//! INV-2 every snapshot restores bit-exact, INV-3 `catalog rebuild` changes nothing, INV-4 no
//! secret in any output, INV-5 no snapshot for a failed run.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::store::s3::{S3Config, S3Store};
use lifeboat::store::{DynStore, Store};
use serde_json::Value;
use support::fault_proxy::{Damage, FaultProxy, Faults};
use support::garage::{self, url_for, Garage};
use support::inv::{assert_only_info, has_finding};
use support::regions::{lifeboat, make_s3_tree, repos, run, Run, PASSWORD};

const NO_FAULTS: Faults = Faults {
    error_rate: 0.0,
    stall_rate: 0.0,
    cut_rate: 0.0,
    stall: Duration::from_secs(0),
    after_forwarding: false,
    reject_parts: false,
};

/// Every output of the scenario, for INV-4.
#[derive(Default)]
struct Outputs(std::sync::Mutex<Vec<String>>);

impl Outputs {
    fn cmd(&self, w: &Path, urls: &[String], args: &[&str]) -> Run {
        let mut c = lifeboat(w);
        repos(&mut c, urls);
        c.args(args);
        let t0 = Instant::now();
        let r = run(c);
        eprintln!("lifeboat {args:?}: exit {} in {:?}", r.code, t0.elapsed());
        self.0.lock().unwrap().push(r.all());
        r
    }

    fn ok(&self, w: &Path, urls: &[String], args: &[&str]) -> Value {
        let r = self.cmd(w, urls, args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        json(&r)
    }

    fn init(&self, w: &Path, urls: &[String]) {
        let r = self.cmd(w, urls, &support::FAST_INIT);
        assert_eq!(r.code, 0, "{r:?}");
    }

    /// A backup of `src` that must succeed: its JSON summary, and the source as it was
    /// (copied, for INV-2) under the snapshot's id.
    fn backup(
        &self,
        w: &Path,
        urls: &[String],
        src: &Path,
        versions: &mut Vec<(String, PathBuf)>,
    ) -> Value {
        let v = self.ok(w, urls, &["--json", "backup", src.to_str().unwrap()]);
        let id = v["snapshot_id"].as_str().unwrap().to_string();
        versions.push((id, keep_copy(w, src)));
        v
    }

    /// INV-4: neither the S3 secret key nor the repository password in any output.
    fn no_secret(&self) {
        for o in self.0.lock().unwrap().iter() {
            assert!(
                !o.contains(garage::SECRET) && !o.contains(PASSWORD),
                "INV-4: a secret in {o}"
            );
        }
    }
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// A copy of the source tree as it is now, under `<w>/v<n>/<name>` (restores put a
/// snapshot's tree under the source's base name).
fn keep_copy(w: &Path, src: &Path) -> PathBuf {
    let dir = w.join(format!("v{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    dir.join(src.file_name().unwrap())
}

fn add_random_file(src: &Path, name: &str, len: usize) {
    let mut b = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
    std::fs::write(src.join(name), b).unwrap();
}

/// An S3 store with the test key on `g`'s bucket under `prefix` ("" = the bucket root).
fn s3_store(g: &Garage, w: &Path, prefix: &str) -> S3Store {
    let mut cfg = S3Config::new(garage::BUCKET, g.region.clone());
    cfg.prefix = prefix.to_string();
    cfg.endpoint = Some(g.endpoint());
    cfg.credentials_file = Some(garage::credentials_file(w, garage::SECRET));
    S3Store::new(cfg).unwrap()
}

/// What a server that ignores checksums writes with (for [`Damage::StoreFlipped`]).
fn backdoor(g: &Garage, w: &Path) -> DynStore {
    Arc::new(s3_store(g, w, ""))
}

/// The packs under `prefix`, largest first.
fn packs(rt: &tokio::runtime::Runtime, s: &S3Store) -> Vec<(String, u64)> {
    let mut p: Vec<(String, u64)> = rt
        .block_on(s.list("data/"))
        .unwrap()
        .into_iter()
        .map(|i| (i.key, i.size))
        .collect();
    p.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    p
}

/// The pack id in a key `data/xx/<id>`.
fn pack_id(key: &str) -> &str {
    key.rsplit('/').next().unwrap()
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// INV-1, INV-2, INV-3, INV-5 on `urls` (direct, no proxy), reading region `region` (when
/// several), and INV-4 over every output so far. `versions`: every snapshot that must exist,
/// with the tree it must restore to; no other snapshot may exist.
fn invariants(
    out: &Outputs,
    w: &Path,
    urls: &[String],
    region: Option<&str>,
    versions: &[(String, PathBuf)],
) {
    let with_region = |args: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(r) = region {
            a.push("--region".into());
            a.push(r.into());
        }
        a
    };
    // INV-1
    let args = with_region(&["verify", "--read-data", "--json"]);
    let v = out.ok(
        w,
        urls,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(v["errors"], 0, "INV-1: {v:#}");
    assert_only_info(&v);
    assert!(v["report"]["packs_read"].as_u64().unwrap() > 0, "{v:#}");
    // INV-5: exactly the snapshots of the runs that succeeded.
    let listed = out.ok(w, urls, &["snapshots", "--json"]);
    let mut ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = versions.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want, "INV-5: {listed:#}");
    // INV-2
    for (id, tree) in versions {
        let target = w.join(format!("restore-{}", rand::random::<u64>()));
        let args = with_region(&["restore", id, "--target", target.to_str().unwrap()]);
        let r = out.cmd(
            w,
            urls,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(r.code, 0, "INV-2: {r:?}");
        let diffs =
            lifeboat::restore::compare_dirs(tree, &target.join(tree.file_name().unwrap())).unwrap();
        assert!(diffs.is_empty(), "INV-2: snapshot {id}: {diffs:#?}");
        std::fs::remove_dir_all(&target).unwrap();
    }
    // INV-3
    // (A multi-region backup is recorded under each region's name: rebuild that region.)
    let args = with_region(&["catalog", "rebuild", "--json"]);
    let v = out.ok(
        w,
        urls,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let r = &v["report"];
    assert_eq!(r["added"], 0, "INV-3: {v:#}");
    assert_eq!(r["updated"], 0, "INV-3: {v:#}");
    assert_eq!(r["forgotten"], 0, "INV-3: {v:#}");
    assert_eq!(r["unchanged"], versions.len(), "INV-3: {v:#}");
    // INV-4
    out.no_secret();
}

// ----- T05 -------------------------------------------------------------------------------

/// T05: through a proxy failing 20 % of requests with 500/503 and cutting responses, the
/// backup commits; and the commit check sees every pack the new snapshot needs at its size
/// (a listing of `data/`, then a HEAD of each pack it does not show so): a pack truncated in
/// the store while the backup runs (after the run loaded its index) fails the backup with 13
/// naming the pack, and no snapshot is committed. The re-run
/// finds the pack's wrong size, stores its blobs again and commits; every snapshot restores.
#[test]
fn t05_commit_check_heads_every_pack_through_a_faulty_proxy() {
    let g = Garage::start("t05");
    let proxy = FaultProxy::start(
        g.s3_port,
        Faults {
            error_rate: 0.20,
            cut_rate: 0.05,
            after_forwarding: true,
            ..NO_FAULTS
        },
        20261205,
    );
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = Outputs::default();
    let direct = vec![g.url("repo")];
    let faulty = vec![url_for(&proxy.endpoint(), "t05", "repo")
        .replace("max_retries=4", "max_retries=12")
        .replace("request_timeout_secs=3", "request_timeout_secs=2")];
    out.init(w, &direct);
    let src = make_s3_tree(w, 12, 5);
    let mut versions = Vec::new();
    out.backup(w, &faulty, &src, &mut versions);
    assert!(load(&proxy.counts.errors_500) + load(&proxy.counts.errors_503) > 0);

    // The next backup reuses every pack of the first. Once it uploads its first new pack
    // (held up by a stall, so the run is still going), the biggest old pack loses its tail.
    let store = s3_store(&g, w, "repo");
    let (victim, size) = packs(&rt, &store)[0].clone();
    add_random_file(&src, "new.bin", 3 << 20);
    proxy.stall_mid_body("PUT", "/data/", 1, Duration::from_secs(4));
    let mut c = lifeboat(w);
    repos(&mut c, &faulty);
    c.args(["--json", "backup", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let t0 = Instant::now();
    while load(&proxy.counts.mid_body_stalls) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no pack upload");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(async {
        let b = store.get(&victim).await.unwrap();
        store.put(&victim, b.slice(..b.len() - 4096)).await.unwrap();
    });
    let o = child.wait_with_output().unwrap();
    let r = Run {
        code: o.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    };
    out.0.lock().unwrap().push(r.all());
    assert_eq!(r.code, 13, "a pack changed under the run: {r:?}");
    assert!(
        r.stderr.contains(pack_id(&victim))
            && r.stderr.contains(&format!(
                "has {} bytes in the store but {size}",
                size - 4096
            ))
            && r.stderr.contains("nothing was committed"),
        "{r:?}"
    );

    // The re-run (faults still on) heals: the damaged pack's blobs are stored again.
    let v = out.backup(w, &faulty, &src, &mut versions);
    assert!(
        v["packs_lost"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(pack_id(&victim))),
        "{v:#}"
    );
    proxy.disable();
    invariants(&out, w, &direct, None, &versions);
}

// ----- T06 -------------------------------------------------------------------------------

/// T06: uploads damaged on the way to region b (a flipped byte the server refuses with
/// BadDigest), and by a server that ignores checksums (it stores a flipped byte, or half the
/// body, and answers 200 with the ETag of what it stored): each is caught — by the server's
/// checksum, the ETag compared with the MD5 sent, or the HEAD after the upload — and uploaded
/// again, so every backup commits (exit 0) and nothing damaged is left in either region.
#[test]
fn t06_damaged_uploads_are_never_committed_as_good() {
    let g = Garage::start("t06");
    let proxy = FaultProxy::start(g.s3_port, NO_FAULTS, 6);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = Outputs::default();
    let a = g.url("a").replace("name=t06", "name=a");
    let b_direct = g.url("b").replace("name=t06", "name=b");
    let b = url_for(&proxy.endpoint(), "t06", "b").replace("name=t06", "name=b");
    let urls = vec![a.clone(), b];
    out.init(w, &urls);
    let src = make_s3_tree(w, 4, 6);
    let mut versions = Vec::new();
    let mut damaged = 0;
    for (i, how) in [
        Damage::FlipInFlight,
        Damage::StoreFlipped,
        Damage::StoreTruncated,
    ]
    .into_iter()
    .enumerate()
    {
        add_random_file(&src, &format!("round{i}.bin"), 1 << 20);
        let n = if how == Damage::FlipInFlight { 2 } else { 1 };
        proxy.damage_uploads(how, n, Some(backdoor(&g, w)));
        let v = out.backup(w, &urls, &src, &mut versions);
        damaged += n;
        assert_eq!(load(&proxy.counts.damaged), damaged, "{how:?}: {v:#}");
        assert_eq!(v["regions"][1]["status"], "complete", "{how:?}: {v:#}");
        assert!(
            v["regions"][1]["retries"]["retries"].as_u64().unwrap() >= n,
            "{how:?}: each damaged upload is uploaded again: {v:#}"
        );
        assert_eq!(v["regions"][0]["retries"]["retries"], 0, "{v:#}");
    }
    // Region b, read directly: every pack is whole (INV-1 there too).
    invariants(&out, w, &[a, b_direct], Some("b"), &versions);
    let v = out.ok(
        w,
        &urls[..1],
        &["verify", "--read-data", "--json", "--region", "a"],
    );
    assert_eq!(v["errors"], 0, "{v:#}");
}

// ----- T07 -------------------------------------------------------------------------------

/// T07: region b's proxy holds uploads and downloads mid-body with the connection open for
/// longer than the per-request watchdog (3 s): the watchdog cancels them and the retries
/// succeed (backup and restore exit 0, `timeouts` counted). With stalls on every upload and a
/// 10 s operation deadline, the backup of region b alone gives up with exit 1 and commits
/// nothing.
#[test]
fn t07_stalled_bodies_are_cancelled_by_the_watchdog_and_retried() {
    let g = Garage::start("t07");
    let proxy = FaultProxy::start(g.s3_port, NO_FAULTS, 7);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = Outputs::default();
    let a = g.url("a").replace("name=t07", "name=a");
    let b_direct = g.url("b").replace("name=t07", "name=b");
    let b = url_for(&proxy.endpoint(), "t07", "b").replace("name=t07", "name=b");
    let urls = vec![a.clone(), b.clone()];
    out.init(w, &urls);
    let src = make_s3_tree(w, 4, 7);
    let mut versions = Vec::new();

    proxy.stall_mid_body("PUT", "/data/", 2, Duration::from_secs(6));
    let v = out.backup(w, &urls, &src, &mut versions);
    assert_eq!(load(&proxy.counts.mid_body_stalls), 2);
    assert_eq!(v["regions"][1]["status"], "complete", "{v:#}");
    assert!(
        v["regions"][1]["retries"]["timeouts"].as_u64().unwrap() >= 2,
        "the watchdog cancelled the stalled uploads: {v:#}"
    );

    // A restore from b whose pack downloads stall after half their bytes.
    proxy.stall_mid_body("GET", "/data/", 2, Duration::from_secs(6));
    let target = w.join("restore-stalled");
    let r = out.cmd(
        w,
        &urls,
        &[
            "restore",
            &versions[0].0,
            "--target",
            target.to_str().unwrap(),
            "--region",
            "b",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(load(&proxy.counts.mid_body_stalls), 4);
    let diffs = lifeboat::restore::compare_dirs(&versions[0].1, &target.join("src")).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");

    // Every upload stalls: the 10 s deadline stops the retries; exit 1, no snapshot.
    add_random_file(&src, "late.bin", 1 << 20);
    proxy.stall_mid_body("PUT", "/data/", 1000, Duration::from_secs(6));
    let only_b = vec![b
        .replace("deadline_secs=60", "deadline_secs=10")
        .replace("max_retries=4", "max_retries=20")];
    let r = out.cmd(w, &only_b, &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 1, "the deadline passed: {r:?}");
    assert!(
        r.stderr
            .contains("stalled request cancelled by the watchdog")
            && r.stderr.contains("deadline of 10s reached"),
        "{r:?}"
    );
    proxy.stall_mid_body("PUT", "/data/", 0, Duration::from_secs(0));
    invariants(&out, w, &[a, b_direct], Some("b"), &versions);
}

// ----- T10 -------------------------------------------------------------------------------

/// T10: the proxy cuts every listing of `data/` (the second half of the entries dropped and
/// `IsTruncated` cleared, as if the last page were lost). Nothing takes that for lost data:
/// `verify` (with and without `--read-data`) exits 0 with a warning naming the incomplete
/// listing, a backup commits without dropping any pack from the index, `repair` refuses with
/// 13 and changes nothing, `prune` (which plans from the index files, never from a listing of
/// `data/`) deletes nothing referenced. Afterwards, read directly, everything verifies.
#[test]
fn t10_an_incomplete_listing_is_not_taken_for_lost_data() {
    let g = Garage::start("t10");
    let proxy = FaultProxy::start(g.s3_port, NO_FAULTS, 10);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = Outputs::default();
    let direct = vec![g.url("repo")];
    let cut = vec![url_for(&proxy.endpoint(), "t10", "repo")];
    out.init(w, &direct);
    let src = make_s3_tree(w, 20, 10);
    let mut versions = Vec::new();
    out.backup(w, &direct, &src, &mut versions);
    let store = s3_store(&g, w, "repo");
    let all_packs = packs(&rt, &store).len();
    assert!(all_packs >= 3, "{all_packs} packs");
    let indexes = |rt: &tokio::runtime::Runtime| -> Vec<String> {
        let mut k: Vec<String> = rt
            .block_on(store.list("index/"))
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        k.sort();
        k
    };

    proxy.cut_listings(Some("data"));
    for read in [&[][..], &["--read-data"][..]] {
        let mut args = vec!["verify", "--json"];
        args.extend_from_slice(read);
        let r = out.cmd(w, &cut, &args);
        assert_eq!(r.code, 0, "an incomplete listing is not lost data: {r:?}");
        let v = json(&r);
        assert_eq!(v["errors"], 0, "{v:#}");
        assert!(
            has_finding(
                &v,
                "warning",
                "incomplete listing from the store, not lost data"
            ),
            "{v:#}"
        );
        if !read.is_empty() {
            assert_eq!(v["report"]["packs_read"], all_packs, "{v:#}");
        }
    }
    assert!(load(&proxy.counts.listings_cut) >= 2);

    // A backup through the cut listing drops nothing from the index.
    add_random_file(&src, "more.bin", 1 << 20);
    let v = out.backup(w, &cut, &src, &mut versions);
    assert_eq!(v["packs_lost"], serde_json::json!([]), "{v:#}");
    let before = indexes(&rt);

    // repair refuses; prune has nothing to delete; neither changes an index file.
    let r = out.cmd(w, &cut, &["repair"]);
    assert_eq!(r.code, 13, "{r:?}");
    assert!(
        r.stderr.contains("incomplete listing") && r.stderr.contains("nothing was changed"),
        "{r:?}"
    );
    let r = out.cmd(w, &cut, &["--json", "prune", "--confirm", "--grace", "0s"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(indexes(&rt), before, "the index files were rewritten");
    assert!(packs(&rt, &store).len() > all_packs);
    proxy.cut_listings(None);
    invariants(&out, w, &direct, None, &versions);
}

/// T10, the other listing prune reads: a listing of `snapshots/` cut short would hide
/// snapshots whose data prune then takes for unused. Prune compares the listing with the
/// snapshots the catalog knows the region holds and refuses (13) when some are missing:
/// nothing is deleted and no prune plan is written. With the listing whole again the same
/// prune runs, and every snapshot still restores bit-exact.
#[test]
fn t10_prune_refuses_a_cut_listing_of_snapshots() {
    let t = CutPrune::new("t10s", 11);
    t.refused_while_cut(
        "snapshots",
        &[
            "prune refused, nothing was deleted",
            "the listing lacks",
            "catalog rebuild --forget-missing",
        ],
    );
    let v = t.prune_whole();
    assert_eq!(v["regions"][0]["sweep"]["deleted_packs"], 0, "{v:#}");
    t.invariants();
}

/// T09: region b's key loses its rights to the bucket in the middle of a backup (revoked
/// while b's first pack upload is held mid-body by the proxy, so the revocation lands between
/// requests of the run). Region a commits; b fails with 403 AccessDenied, which is permanent:
/// no retry storm, the backup exits 3, the error names region b and the operation, and no
/// key material appears anywhere. With the rights back, `sync` catches b up and both
/// regions pass every invariant.
#[test]
fn t09_credentials_revoked_mid_run_fail_that_region_only() {
    let g = Garage::start("t09");
    let g2 = Garage::start("t09b");
    let proxy = FaultProxy::start(g2.s3_port, NO_FAULTS, 9);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = Outputs::default();
    let a = g.url("repo");
    let b = url_for(&proxy.endpoint(), "t09b", "repo");
    let urls = vec![a.clone(), b.clone()];
    out.init(w, &urls);
    let src = make_s3_tree(w, 6, 9);
    let mut versions = Vec::new();
    out.backup(w, &urls, &src, &mut versions);
    add_random_file(&src, "new.bin", 3 << 20);

    proxy.stall_mid_body("PUT", "/data/", 1, Duration::from_secs(4));
    let mut c = lifeboat(w);
    repos(&mut c, &urls);
    c.args(["--json", "backup", src.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let t0 = Instant::now();
    while load(&proxy.counts.mid_body_stalls) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no upload to b stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    g2.cli(&[
        "bucket",
        "deny",
        "--read",
        "--write",
        "--owner",
        garage::BUCKET,
        "--key",
        "test",
    ]);
    let o = child.wait_with_output().unwrap();
    let r = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    out.0.lock().unwrap().push(r.all());
    assert_eq!(r.code, 3, "{r:?}");
    let v = json(&r);
    assert_eq!(v["regions"][0]["status"], "complete", "{v:#}");
    assert_eq!(v["regions"][1]["status"], "failed", "{v:#}");
    let err = v["regions"][1]["error"].as_str().unwrap();
    assert!(
        err.contains("s3:t09b:backups/repo") && err.contains("permission denied"),
        "the region and the refusal are named: {v:#}"
    );
    // The held upload is cancelled by the watchdog and retried (a timeout); the 403 that
    // follows is permanent: nothing gives up after a round of retries.
    let retries = &v["regions"][1]["retries"];
    assert_eq!(retries["gave_up"], 0, "AccessDenied was retried: {v:#}");
    eprintln!("T09 retries of region b: {retries}");
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    versions.push((id, keep_copy(w, &src)));
    out.no_secret();

    // The rights come back: sync copies what b missed, and both regions hold every snapshot.
    g2.cli(&[
        "bucket",
        "allow",
        "--read",
        "--write",
        "--owner",
        garage::BUCKET,
        "--key",
        "test",
    ]);
    out.ok(w, &urls, &["--json", "sync"]);
    invariants(&out, w, &urls, Some("t09"), &versions);
    invariants(&out, w, &urls, Some("t09b"), &versions);
}

// ----- T13 -------------------------------------------------------------------------------

/// T13: a pack deleted from one of two regions. `verify` of that region exits 13 naming the
/// region, the pack and the snapshot and file that need it; the other region verifies. A
/// restore from the damaged region fails with 13 unless `--allow-fallback`, which reads the
/// pack from the other region (bit-exact). The next backup heals the region (the pack is
/// there again), after which both regions pass every invariant.
#[test]
fn t13_a_pack_lost_in_one_region_is_named_worked_around_and_healed() {
    let g1 = Garage::start("r1");
    let g2 = Garage::start("r2");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = Outputs::default();
    let urls = vec![g1.url("repo"), g2.url("repo")];
    out.init(w, &urls);
    let src = make_s3_tree(w, 12, 13);
    let mut versions = Vec::new();
    out.backup(w, &urls, &src, &mut versions);
    let r2 = s3_store(&g2, w, "repo");
    let (victim, _) = packs(&rt, &r2)[0].clone();
    rt.block_on(r2.delete(&victim)).unwrap();
    let id = pack_id(&victim);

    let r = out.cmd(w, &urls, &["verify", "--region", "r2", "--json"]);
    assert_eq!(r.code, 13, "{r:?}");
    let v = json(&r);
    let findings = v["report"]["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["object"] == format!("pack {id}")
            && f["message"] == "missing from s3:r2:backups/repo"),
        "the region and the pack are named: {v:#}"
    );
    let short = &versions[0].0[..8];
    assert!(
        findings
            .iter()
            .any(|f| f["object"] == format!("snapshot {short}")
                && f["message"].as_str().unwrap().contains(id)
                && f["message"].as_str().unwrap().contains("/a/blob")),
        "the snapshot and the file are named: {v:#}"
    );
    out.ok(w, &urls, &["verify", "--region", "r1", "--json"]);

    let target = w.join("no-fallback");
    let r = out.cmd(
        w,
        &urls,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--region",
            "r2",
        ],
    );
    assert_eq!(r.code, 13, "{r:?}");
    let target = w.join("fallback");
    let r = out.cmd(
        w,
        &urls,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--region",
            "r2",
            "--allow-fallback",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("read from region r1"), "{r:?}");
    let diffs = lifeboat::restore::compare_dirs(&versions[0].1, &target.join("src")).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");

    // The next backup (source unchanged) heals r2.
    let v = out.backup(w, &urls, &src, &mut versions);
    assert_eq!(v["regions"][1]["status"], "complete", "{v:#}");
    assert!(
        rt.block_on(r2.head(&victim)).unwrap().is_some(),
        "the pack is back in r2: {v:#}"
    );
    invariants(&out, w, &urls, Some("r2"), &versions);
    invariants(&out, w, &urls, Some("r1"), &versions);
}

// ----- T02 -------------------------------------------------------------------------------

/// T02 (the lifecycle part): `healthcheck` warns, with the fix, when the bucket has no
/// enabled `AbortIncompleteMultipartUpload` rule covering the repository (none at all, or
/// one for another prefix), and is quiet with one; the warning does not fail the check.
#[test]
fn t02_healthcheck_warns_without_an_abort_incomplete_uploads_rule() {
    let g = Garage::start("t02");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = Outputs::default();
    let urls = vec![g.url("repo")];
    out.init(w, &urls);
    let src = make_s3_tree(w, 1, 2);
    let mut versions = Vec::new();
    out.backup(w, &urls, &src, &mut versions);

    // The harness gives every bucket a rule for all keys.
    let v = out.ok(w, &urls, &["healthcheck", "--json"]);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v:#}");

    for rule in [None, Some(("logs/", 7)), Some(("repo/data/", 7))] {
        g.set_abort_rule(rule);
        let v = out.ok(w, &urls, &["healthcheck", "--json"]);
        let warnings = v["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{rule:?}: {v:#}");
        let wng = &warnings[0];
        assert_eq!(wng["name"], "t02");
        assert!(
            wng["message"].as_str().unwrap().contains(
                "bucket backups has no lifecycle rule with AbortIncompleteMultipartUpload"
            ),
            "{wng}"
        );
        assert!(
            wng["hint"]
                .as_str()
                .unwrap()
                .contains("put-bucket-lifecycle-configuration --bucket backups"),
            "{wng}"
        );
    }
    let r = out.cmd(w, &urls, &["healthcheck"]);
    assert_eq!(r.code, 0, "a warning does not fail the check: {r:?}");
    assert!(
        r.stderr
            .contains("warning: region t02: bucket backups has no lifecycle rule")
            && r.stderr.contains("hint: add an enabled rule"),
        "{r:?}"
    );
    g.set_abort_rule(Some(("repo/", 1)));
    let v = out.ok(w, &urls, &["healthcheck", "--json"]);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v:#}");
    invariants(&out, w, &urls, None, &versions);
}

// ----- T10, index/ -----------------------------------------------------------------------

/// T10, the third listing prune reads: a listing of `index/` cut short hides index files,
/// so the blobs their packs hold look missing and prune would plan (condemn, repack) on a
/// partial view. Prune now refuses (13, nothing written or deleted) when the snapshots need
/// blobs no listed index file holds; with the listing whole the same prune runs and frees
/// what the forgotten snapshot alone needed, and every kept snapshot still restores.
#[test]
fn t10_prune_refuses_a_cut_listing_of_index() {
    let mut t = CutPrune::new("t10i", 12);
    t.out.ok(
        t.w(),
        &t.direct,
        &["--json", "forget", "--keep-last", "5", "--confirm"],
    );
    t.versions.remove(0);
    let index_files = t.keys().iter().filter(|k| k.starts_with("index/")).count();
    assert!(index_files >= 6, "{index_files} index files");
    t.refused_while_cut(
        "index",
        &[
            "prune refused, nothing was deleted",
            "no index file in the listing of index/",
            "lifeboat verify",
        ],
    );
    let v = t.prune_whole();
    assert!(
        v["regions"][0]["sweep"]["deleted_packs"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    t.invariants();
}

/// The T10 prune scenarios: a Garage reached directly and through a fault proxy that can cut
/// listings, and six snapshots, each with a 1 MiB file only it holds (each backup with its
/// own index file), so that hiding any snapshot or index file exposes data prune must keep.
struct CutPrune {
    g: Garage,
    proxy: FaultProxy,
    work: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    out: Outputs,
    direct: Vec<String>,
    cut: Vec<String>,
    versions: Vec<(String, PathBuf)>,
}

impl CutPrune {
    fn new(region: &str, seed: u64) -> CutPrune {
        let g = Garage::start(region);
        let proxy = FaultProxy::start(g.s3_port, NO_FAULTS, seed);
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let out = Outputs::default();
        let direct = vec![g.url("repo")];
        let cut = vec![url_for(&proxy.endpoint(), region, "repo")];
        out.init(w, &direct);
        let src = make_s3_tree(w, 2, 12);
        let mut versions = Vec::new();
        for i in 0..6 {
            add_random_file(&src, &format!("only-{i}.bin"), 1 << 20);
            out.backup(w, &direct, &src, &mut versions);
            std::fs::remove_file(src.join(format!("only-{i}.bin"))).unwrap();
        }
        CutPrune {
            g,
            proxy,
            rt: tokio::runtime::Runtime::new().unwrap(),
            work,
            out,
            direct,
            cut,
            versions,
        }
    }

    fn w(&self) -> &Path {
        self.work.path()
    }

    /// Every key of the repository but the locks, sorted, read directly.
    fn keys(&self) -> Vec<String> {
        let store = s3_store(&self.g, self.w(), "repo");
        let mut k: Vec<String> = self
            .rt
            .block_on(store.list(""))
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .filter(|k| !k.starts_with("locks/"))
            .collect();
        k.sort();
        k
    }

    /// With the listings of `prefix` cut in half, `prune --grace 0s --max-unused 0%` exits 13
    /// saying each of `says`, and leaves every key of the repository as it was; then the
    /// listings are whole again.
    fn refused_while_cut(&self, prefix: &str, says: &[&str]) {
        let before = self.keys();
        self.proxy.cut_listings(Some(prefix));
        let r = self.out.cmd(
            self.w(),
            &self.cut,
            &["prune", "--grace", "0s", "--max-unused", "0%", "--confirm"],
        );
        assert_eq!(r.code, 13, "{r:?}");
        for s in says {
            assert!(r.stderr.contains(s), "{s:?}: {r:?}");
        }
        assert!(load(&self.proxy.counts.listings_cut) >= 1);
        assert_eq!(
            self.keys(),
            before,
            "the refused prune changed the repository"
        );
        self.proxy.cut_listings(None);
    }

    /// The same prune through the proxy, listings whole: its `--json` report.
    fn prune_whole(&self) -> Value {
        self.out.ok(
            self.w(),
            &self.cut,
            &[
                "--json",
                "prune",
                "--grace",
                "0s",
                "--max-unused",
                "0%",
                "--confirm",
            ],
        )
    }

    /// INV-1..5 on the repository read directly.
    fn invariants(&self) {
        invariants(&self.out, self.w(), &self.direct, None, &self.versions);
    }
}
