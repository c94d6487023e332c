//! The fault matrix (RELIABILITY.md T01–T32, issue 16 item 13): each test injects one fault —
//! two writers at once, a lock lost while its holder was stopped, a crash at a chosen step of
//! a protocol (`LIFEBOAT_FAILPOINT`, `src/failpoint.rs`), a kill during an S3 multipart
//! upload, forged snapshots — and then checks the invariants:
//!
//! - INV-1: `verify --read-data` passes, with nothing above info level ([`inv1`]);
//! - INV-2: every snapshot restores bit-exact to the tree it was taken of ([`restores_exactly`]);
//! - INV-3: the catalog equals what `catalog rebuild` builds from the repository ([`inv3`]);
//! - INV-5: no snapshot was committed for a failed run (counted around each fault).
//!
//! INV-4 (no secret anywhere) has its own tests in `secrets.rs` and `reliability.rs`.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::restore::compare_dirs;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use support::inv::assert_only_info;
use support::*;

// ----- harness ------------------------------------------------------------------------------

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sets `pack_size` in a new repository's config (before its first backup).
fn pack_size(s: &Scratch, bytes: u64) {
    let p = s.repo.join("config");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["pack_size"] = bytes.into();
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn write_random(path: &Path, seed: u64, len: usize) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    r.fill_bytes(&mut buf);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, buf).unwrap();
}

/// Pack files in a local repository (temp files excluded).
fn pack_files(repo: &Path) -> HashSet<PathBuf> {
    list_files(&repo.join("data"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

fn spawn(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = s.cmd();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The run was ended by SIGKILL (a crash failpoint fired).
fn assert_killed(o: &Output) {
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{}", describe(o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("failpoint"),
        "{}",
        describe(o)
    );
}

fn open(s: &Scratch) -> lifeboat::repo::Repository {
    rt().block_on(async {
        let store: lifeboat::store::DynStore =
            Arc::new(lifeboat::store::local::LocalStore::new(&s.repo));
        lifeboat::repo::Repository::open(store, PASSWORD.as_bytes())
            .await
            .unwrap()
    })
}

/// Every pack the index files list, and the blobs stored more than once across packs. A run
/// that "uploads only what is missing" leaves no blob in two packs (one writer at a time).
fn indexed_packs_and_duplicates(s: &Scratch) -> (HashSet<String>, usize) {
    let repo = open(s);
    let files = rt().block_on(repo.load_index_files()).unwrap();
    let mut packs: HashMap<String, Vec<String>> = HashMap::new();
    for (_, f) in &files {
        for p in &f.packs {
            packs
                .entry(p.id.to_string())
                .or_insert_with(|| p.blobs.iter().map(|b| b.id.to_string()).collect());
        }
    }
    let mut seen: HashMap<&String, usize> = HashMap::new();
    for blobs in packs.values() {
        for b in blobs {
            *seen.entry(b).or_default() += 1;
        }
    }
    let dups = seen.values().filter(|&&n| n > 1).count();
    (packs.keys().cloned().collect(), dups)
}

/// Pack ids (the file names) of a local repository's pack files.
fn pack_ids(repo: &Path) -> HashSet<String> {
    pack_files(repo)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Waits until `cond` holds or the child exits; true if `cond` held.
fn wait_for(child: &mut Child, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() || t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ----- T21: concurrent backups ---------------------------------------------------------------

/// Two sources that share a file (changed every round, identically in both: the two
/// backups race to store the same new blobs) and each have files of their own.
fn concurrent_round(a: &Path, b: &Path, round: u64) {
    write_random(&a.join("shared.bin"), 1000 + round, 1_500_000);
    write_random(&b.join("shared.bin"), 1000 + round, 1_500_000);
    write_random(&a.join(format!("own-{round}.bin")), 2000 + round, 700_000);
    write_random(&b.join(format!("own-{round}.bin")), 3000 + round, 700_000);
    std::fs::write(
        a.join("small.txt"),
        format!("round {round} of a\n").repeat(50),
    )
    .unwrap();
    std::fs::write(
        b.join("small.txt"),
        format!("round {round} of b\n").repeat(50),
    )
    .unwrap();
}

/// T21: N rounds of two backups at once (overlapping data) into one local repository: both
/// commit every time, every snapshot restores bit-exact, `verify --read-data` passes and
/// the catalog equals its rebuild; a prune afterwards leaves each blob in one pack.
#[test]
fn concurrent_backups_into_one_local_repository_all_commit() {
    const ROUNDS: u64 = 6;
    let s = Scratch::new();
    s.init();
    pack_size(&s, 256 * 1024);
    let (a, b) = (s.path("a"), s.path("b"));
    let mut all = Vec::new();
    for round in 0..ROUNDS {
        concurrent_round(&a, &b, round);
        let ca = spawn(&s, &["backup", "--json", a.to_str().unwrap()], &[]);
        let cb = spawn(&s, &["backup", "--json", b.to_str().unwrap()], &[]);
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        let mut ids = Vec::new();
        for (o, src) in [(&oa, &a), (&ob, &b)] {
            assert_eq!(o.status.code(), Some(0), "round {round}: {}", describe(o));
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                v["catalog_recorded"],
                true,
                "round {round}: {}",
                describe(o)
            );
            ids.push((v["snapshot_id"].as_str().unwrap().to_string(), src.clone()));
        }
        assert_ne!(ids[0].0, ids[1].0);
        for (id, src) in &ids {
            restores_exactly(&s, id, src);
        }
        all.extend(ids);
    }
    let listed: HashSet<String> = snapshot_ids(&s).into_iter().collect();
    let committed: HashSet<String> = all.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(listed, committed, "every snapshot of every round is listed");
    inv1(&s);
    inv3(&s);
    // Racing writers may store the same blob twice, in packs of their own; a prune keeps one
    // copy and every snapshot still restores.
    let (_, dups) = indexed_packs_and_duplicates(&s);
    eprintln!("blobs stored twice by the racing backups: {dups}");
    s.ok(&["prune", "--confirm", "--grace", "0s", "--max-unused", "0%"]);
    let (_, dups) = indexed_packs_and_duplicates(&s);
    assert_eq!(dups, 0, "prune left a blob in two packs");
    inv1(&s);
    for (id, src) in &all[all.len() - 2..] {
        restores_exactly(&s, id, src);
    }
}

// ----- T19: lock lost during a backup ---------------------------------------------------------

/// T19: a backup stopped (SIGSTOP) for longer than its lease, whose lock another process
/// removes as stale meanwhile (`lifeboat unlock`, as another host breaking an expired lease
/// would), fails with exit 11 once continued and commits nothing (INV-5); the repository
/// verifies, and the next backup reuses what the failed one uploaded (no blob stored twice).
#[test]
fn a_backup_that_lost_its_lock_commits_nothing_and_the_next_reuses_its_packs() {
    let s = Scratch::new();
    s.init();
    pack_size(&s, 1 << 20);
    let src = s.path("src");
    lifeboat::demo::sample::write_tree(&src, 48 << 20, 19).unwrap();
    let lease = [(lifeboat::repo::lock::LEASE_ENV, "3")];
    let mut child = spawn(&s, &["backup", "--json", src.to_str().unwrap()], &lease);
    let started = wait_for(&mut child, Duration::from_secs(120), || {
        pack_files(&s.repo).len() >= 2
    });
    assert!(started, "the backup ended before storing two packs");
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    let stopped_at = Instant::now();
    // A lock file of a live process: nobody else may take it for stale before it expires.
    // (Two files if the stop caught a refresh between writing the new one and removing the
    // old one.)
    let held = list_files(&s.repo.join("locks")).len();
    assert!(held >= 1);
    let early = s.ok(&["unlock"]);
    assert_eq!(list_files(&s.repo.join("locks")).len(), held, "{early}");
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(stopped_at.elapsed()));
    let out = s.ok(&["unlock"]);
    assert!(out.contains("removed"), "{out}");
    assert!(list_files(&s.repo.join("locks")).is_empty());
    let packs_at_stop = pack_files(&s.repo).len();
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lock") && err.contains("nothing was committed"),
        "{err}"
    );
    assert!(snapshot_ids(&s).is_empty(), "INV-5");
    inv1(&s);
    // It stopped when it noticed (the packs already in flight land), rather than uploading
    // the rest of the 48 MiB for a snapshot it could not commit.
    let packs_at_exit = pack_files(&s.repo).len();
    eprintln!("packs: {packs_at_stop} when stopped, {packs_at_exit} at exit");
    assert!(
        packs_at_exit <= packs_at_stop + 8,
        "{packs_at_stop} packs when stopped, {packs_at_exit} at exit"
    );

    let before = pack_ids(&s.repo);
    let v = s.json(&["backup", src.to_str().unwrap()]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    let (indexed, dups) = indexed_packs_and_duplicates(&s);
    assert!(
        before.is_subset(&indexed),
        "every pack the failed run stored is indexed and reused"
    );
    assert_eq!(dups, 0, "no blob was uploaded twice: {v:#}");
    assert!(
        v["summary"]["bytes_added"].as_u64().unwrap() < dir_bytes(&src),
        "nothing was reused: {v:#}"
    );
    restores_exactly(&s, &id, &src);
    inv1(&s);
    inv3(&s);
}

/// T19 (the holder's side): a lease that ran out while the holder could not refresh it is
/// lost even if nobody removed its file — the holder must assume another host broke it.
#[test]
fn a_lease_that_ran_out_is_lost_even_if_its_file_is_still_there() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    lifeboat::demo::sample::write_tree(&src, 24 << 20, 20).unwrap();
    let mut child = spawn(
        &s,
        &["backup", src.to_str().unwrap()],
        &[(lifeboat::repo::lock::LEASE_ENV, "2")],
    );
    let started = wait_for(&mut child, Duration::from_secs(120), || {
        !pack_files(&s.repo).is_empty()
    });
    assert!(started, "the backup ended before storing a pack");
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(3000));
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", describe(&o));
    assert!(snapshot_ids(&s).is_empty(), "INV-5");
    inv1(&s);
    // A bad lease setting is a usage error naming the variable and the range.
    let o = s.run_env(&["snapshots"], &[(lifeboat::repo::lock::LEASE_ENV, "1")]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        stderr(&o).contains("LIFEBOAT_LOCK_LEASE_SECS"),
        "{}",
        describe(&o)
    );
}

// ----- T22: two prunes at once -----------------------------------------------------------------

/// T22: N rounds of two prunes started at once over a repository with garbage to free and
/// packs to repack. Each exits 0, or 11 when the other holds the exclusive phase (its plan
/// waits for the next prune); no pack is deleted twice (the packs the two report deleted are
/// exactly the packs that disappeared); every round the repository verifies with
/// `--read-data` and the kept snapshot restores bit-exact.
#[test]
fn two_prunes_at_once_delete_nothing_twice() {
    const ROUNDS: u64 = 4;
    let s = Scratch::new();
    s.init();
    pack_size(&s, 128 * 1024);
    let src = s.path("src");
    let mut codes = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..3u64 {
            // Files of mixed sizes, a third replaced each time: packs end up partly used.
            for f in 0..12u64 {
                if f % 3 == (i + round) % 3 {
                    write_random(
                        &src.join(format!("f{f}")),
                        round * 100 + i * 10 + f,
                        20_000 + (f as usize) * 9_000,
                    );
                }
            }
            s.ok(&["backup", src.to_str().unwrap()]);
        }
        s.ok(&["forget", "--confirm", "--keep-last", "1"]);
        let before = pack_ids(&s.repo);
        let args = [
            "prune",
            "--confirm",
            "--json",
            "--grace",
            "0s",
            "--max-unused",
            "0%",
        ];
        let c1 = spawn(&s, &args, &[]);
        let c2 = spawn(&s, &args, &[]);
        let outs = [
            c1.wait_with_output().unwrap(),
            c2.wait_with_output().unwrap(),
        ];
        let mut reported = 0u64;
        for o in &outs {
            let code = o.status.code();
            assert!(
                code == Some(0) || code == Some(11),
                "round {round}: {}",
                describe(o)
            );
            codes.push(code.unwrap());
            if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) {
                for r in v["regions"].as_array().unwrap() {
                    reported += r["sweep"]["deleted_packs"].as_u64().unwrap_or(0);
                }
            } else {
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains("lock"),
                    "{}",
                    describe(o)
                );
            }
        }
        let after = pack_ids(&s.repo);
        let gone = before.difference(&after).count() as u64;
        assert_eq!(
            reported, gone,
            "round {round}: the prunes reported {reported} deletions for {gone} packs gone"
        );
        inv1(&s);
        let ids = snapshot_ids(&s);
        restores_exactly(&s, ids.last().unwrap(), &src);
    }
    eprintln!("exit codes of the prunes: {codes:?}");
    // What a deferred plan left is carried out by the next prune alone.
    s.ok(&["prune", "--confirm", "--grace", "0s", "--max-unused", "0%"]);
    assert!(list_files(&s.repo.join("prune")).is_empty());
    let v = s.json(&["prune", "--confirm", "--grace", "0s", "--max-unused", "0%"]);
    assert_eq!(v["regions"][0]["mark"]["condemned_packs"], 0, "{v:#}");
    inv1(&s);
    inv3(&s);
}

// ----- T19/T20: prune's exclusive phase loses its lease -----------------------------------------

/// Two backups and a forget: the first backup's 60 files (one pack or more each) are
/// condemned by the next prune. Returns where those files were moved (`stash`).
fn repository_with_many_condemned_packs(s: &Scratch, src: &Path) -> PathBuf {
    s.init();
    pack_size(s, 96 * 1024);
    for f in 0..60u64 {
        write_random(&src.join(format!("old/f{f}")), 500 + f, 100_000);
    }
    std::fs::write(src.join("keep.txt"), "kept by every snapshot\n").unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    let stash = s.path("stash");
    std::fs::rename(src.join("old"), &stash).unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    s.ok(&["forget", "--confirm", "--keep-last", "1"]);
    stash
}

/// A prune whose lease ran out while it was stopped in phase 2 (after its rescue check,
/// before any change), and whose lock was broken meanwhile by a backup that committed a
/// snapshot reusing blobs of condemned packs: once continued, it deletes nothing, exits 11
/// and keeps its plan; the backup's snapshot restores bit-exact and the next prune rescues
/// its packs. (Before the lease was checked here, that prune deleted the packs the new
/// snapshot needs.)
#[test]
fn a_prune_that_lost_its_lease_before_deleting_deletes_nothing() {
    let s = Scratch::new();
    let src = s.path("src");
    let stash = repository_with_many_condemned_packs(&s, &src);
    let before = pack_ids(&s.repo);
    let mut child = spawn(
        &s,
        &["prune", "--confirm", "--grace", "0s"],
        &[
            (lifeboat::repo::lock::LEASE_ENV, "2"),
            ("LIFEBOAT_FAILPOINT", "prune-before-delete:1"),
        ],
    );
    wait_stopped(&mut child);
    std::thread::sleep(Duration::from_millis(3000));
    // Another host breaks the expired lease and backs up the old files again: every blob
    // is found in a condemned pack.
    let out = s.ok(&["unlock"]);
    assert!(out.contains("removed"), "{out}");
    std::fs::rename(&stash, src.join("old")).unwrap();
    let v = s.json(&["backup", src.to_str().unwrap()]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    assert!(
        v["summary"]["bytes_added"].as_u64().unwrap() < 1_000_000,
        "the backup did not reuse the condemned packs: {v:#}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", describe(&o));
    assert!(
        stderr(&o).contains("prune stopped") && stderr(&o).contains("plan is kept"),
        "{}",
        describe(&o)
    );
    assert!(
        before.is_subset(&pack_ids(&s.repo)),
        "a pack was deleted after the lease was lost"
    );
    assert!(!list_files(&s.repo.join("prune")).is_empty(), "plan kept");
    inv1(&s);
    restores_exactly(&s, &id, &src);
    // The next prune sees the new snapshot and rescues what it needs.
    let v = s.json(&["prune", "--confirm", "--grace", "0s"]);
    assert!(
        v["regions"][0]["sweep"]["rescued_packs"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    inv1(&s);
    restores_exactly(&s, &id, &src);
    inv3(&s);
}

/// A prune that lost its lease between two batches of pack deletions stops before the next
/// batch (exit 11): exactly one batch is gone, the plan stays, and the next prune deletes
/// the rest; the repository verifies and the kept snapshot restores bit-exact throughout.
#[test]
fn a_prune_that_lost_its_lease_between_delete_batches_stops_there() {
    let s = Scratch::new();
    let src = s.path("src");
    repository_with_many_condemned_packs(&s, &src);
    let id = snapshot_ids(&s).pop().unwrap();
    let mut child = spawn(
        &s,
        &[
            "prune",
            "--confirm",
            "--grace",
            "0s",
            "--max-unused",
            "100%",
        ],
        &[
            (lifeboat::repo::lock::LEASE_ENV, "2"),
            ("LIFEBOAT_FAILPOINT", "prune-between-delete-batches:1"),
        ],
    );
    wait_stopped(&mut child);
    let at_stop = pack_ids(&s.repo);
    std::thread::sleep(Duration::from_millis(3000));
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", describe(&o));
    assert!(stderr(&o).contains("prune stopped"), "{}", describe(&o));
    assert_eq!(
        pack_ids(&s.repo),
        at_stop,
        "packs were deleted after the lease was lost"
    );
    assert!(!list_files(&s.repo.join("prune")).is_empty(), "plan kept");
    inv1(&s);
    restores_exactly(&s, &id, &src);
    let v = s.json(&[
        "prune",
        "--confirm",
        "--grace",
        "0s",
        "--max-unused",
        "100%",
    ]);
    let deleted = v["regions"][0]["sweep"]["deleted_packs"].as_u64().unwrap();
    assert!(deleted > 0, "the next prune deleted the rest: {v:#}");
    assert!(list_files(&s.repo.join("prune")).is_empty());
    let v = s.json(&[
        "prune",
        "--confirm",
        "--grace",
        "0s",
        "--max-unused",
        "100%",
    ]);
    assert_eq!(v["regions"][0]["mark"]["condemned_packs"], 0, "{v:#}");
    inv1(&s);
    restores_exactly(&s, &id, &src);
    inv3(&s);
}

// ----- T03, T24: crashes at chosen steps --------------------------------------------------------

/// T03: a crash between the index upload and the snapshot (the commit point): no snapshot is
/// listed (INV-5), `verify` reports at most info, and the next backup adds nothing — every
/// blob is found in the packs the crashed run stored and indexed.
#[test]
fn a_crash_between_index_and_snapshot_commits_nothing_and_the_next_backup_adds_nothing() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 3, 30, 300_000);
    let o = s.run_env(
        &["backup", src.to_str().unwrap()],
        &[("LIFEBOAT_FAILPOINT", "after-index-before-snapshot:1")],
    );
    assert_killed(&o);
    assert!(snapshot_ids(&s).is_empty(), "INV-5");
    assert!(!list_files(&s.repo.join("index")).is_empty());
    // The killed run's lock is a dead process's: it blocks nothing.
    assert_eq!(list_files(&s.repo.join("locks")).len(), 1);
    inv1(&s);
    let v = s.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(v["summary"]["bytes_added"], 0, "{v:#}");
    assert_eq!(v["summary"]["packs_added"], 0, "{v:#}");
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    restores_exactly(&s, &id, &src);
    inv1(&s);
    inv3(&s);
}

/// Three backups of a changing tree with small packs, then `forget --keep-last 1`: garbage
/// to delete and partly used packs to repack.
fn repository_with_garbage(s: &Scratch, src: &Path) {
    s.init();
    pack_size(s, 96 * 1024);
    for i in 0..3u64 {
        for f in 0..15u64 {
            if i == 0 || f % 3 == i {
                write_random(
                    &src.join(format!("f{f}")),
                    i * 100 + f,
                    15_000 + (f as usize) * 7_000,
                );
            }
        }
        s.ok(&["backup", src.to_str().unwrap()]);
    }
    s.ok(&["forget", "--confirm", "--keep-last", "1"]);
}

/// T24: prune killed at each of its steps — after the repacked packs are stored, after they
/// are indexed, after the replacement index files are written, and between pack deletions —
/// leaves a repository that verifies with `--read-data` and whose snapshot restores
/// bit-exact; the re-run completes (exit 0) and leaves nothing for a later prune.
#[test]
fn prune_killed_at_every_step_leaves_a_valid_repository() {
    for point in [
        "prune-after-repack:1",
        "prune-after-repack-index:1",
        "prune-after-new-index:1",
        "prune-mid-delete:2",
    ] {
        let s = Scratch::new();
        let src = s.path("src");
        repository_with_garbage(&s, &src);
        let id = snapshot_ids(&s).pop().unwrap();
        let args = ["prune", "--confirm", "--grace", "0s", "--max-unused", "0%"];
        let o = s.run_env(&args, &[("LIFEBOAT_FAILPOINT", point)]);
        assert_killed(&o);
        eprintln!("{point}: killed");
        inv1(&s);
        restores_exactly(&s, &id, &src);
        let v = s.json(&args);
        assert_eq!(v["regions"][0]["deferred"], Value::Null, "{point}: {v:#}");
        assert!(
            list_files(&s.repo.join("prune")).is_empty(),
            "{point}: plans left"
        );
        inv1(&s);
        restores_exactly(&s, &id, &src);
        let v = s.json(&args);
        assert_eq!(
            v["regions"][0]["mark"]["condemned_packs"], 0,
            "{point}: the re-run left garbage: {v:#}"
        );
        let (_, dups) = indexed_packs_and_duplicates(&s);
        assert_eq!(dups, 0, "{point}: a blob is kept twice");
        inv3(&s);
    }
}

/// T24: `repair` killed after writing the rebuilt index and before removing the old files
/// leaves a repository that verifies (the index lists packs twice at worst); the re-run
/// completes. Killed between writing a rewritten snapshot and removing the damaged
/// original, the re-run finishes the job and the repository verifies.
#[test]
fn repair_killed_midway_leaves_a_valid_repository() {
    // A healthy repository: killed after the new index.
    let s = Scratch::new();
    let src = s.path("src");
    repository_with_garbage(&s, &src);
    let id = snapshot_ids(&s).pop().unwrap();
    let o = s.run_env(
        &["repair"],
        &[("LIFEBOAT_FAILPOINT", "repair-after-new-index:1")],
    );
    assert_killed(&o);
    inv1(&s);
    restores_exactly(&s, &id, &src);
    s.ok(&["repair"]);
    inv1(&s);
    restores_exactly(&s, &id, &src);
    inv3(&s);

    // A lost pack: killed while rewriting the damaged snapshot.
    let s = Scratch::new();
    s.init();
    pack_size(&s, 64 * 1024);
    let src = s.path("src");
    make_tree(&src, 31, 30, 200_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let repo = open(&s);
    let lost = rt().block_on(async {
        let index = repo.load_index().await.unwrap();
        let (_, snap) = repo.find_snapshot("latest").await.unwrap();
        let tree_packs: HashSet<_> = index
            .entries_by_pack()
            .iter()
            .enumerate()
            .filter(|(_, es)| {
                es.iter()
                    .any(|e| e.kind == lifeboat::repo::pack::BlobKind::Tree)
            })
            .map(|(i, _)| index.pack(i as u32).0)
            .collect();
        assert!(index.contains(&snap.tree));
        let (id, _) = *index
            .packs()
            .iter()
            .find(|(id, _)| !tree_packs.contains(id))
            .unwrap();
        s.repo.join(lifeboat::repo::pack_key(&id))
    });
    std::fs::remove_file(&lost).unwrap();
    let o = s.run_env(
        &["repair", "--rewrite-snapshots"],
        &[("LIFEBOAT_FAILPOINT", "repair-mid-rewrite:1")],
    );
    assert_killed(&o);
    // The original and its replacement are both listed now; the re-run keeps the
    // replacement and removes the original, instead of committing a second copy.
    let after_kill = snapshot_ids(&s);
    assert_eq!(after_kill.len(), 2, "{after_kill:?}");
    s.ok(&["repair", "--rewrite-snapshots"]);
    let after = snapshot_ids(&s);
    assert_eq!(after.len(), 1, "{after_kill:?} -> {after:?}");
    assert!(
        after_kill.contains(&after[0]),
        "{after_kill:?} -> {after:?}"
    );
    // The killed run never recorded its replacement: the catalog lags (verify warns) until
    // a rebuild, like after any run killed between its commit and the catalog write.
    s.ok(&["catalog", "rebuild"]);
    inv1(&s);
    for id in snapshot_ids(&s) {
        let target = s.path(&format!("r-{id}"));
        s.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
        for d in compare_dirs(&src, &target.join("src")).unwrap() {
            assert!(d.ends_with("missing from the restore"), "{d}");
        }
    }
}

// ----- T01: resume after kills ------------------------------------------------------------------

/// T01: backups SIGKILLed at random moments after they stored data commit nothing (INV-5,
/// after each kill; a run the kill caught past its commit point must have left a whole
/// snapshot, which is restored and compared); the re-run uploads only what is missing — every pack the killed runs
/// stored stays and is indexed, and no blob is stored twice — and commits one snapshot.
#[test]
fn killed_backups_commit_nothing_and_the_rerun_uploads_only_what_is_missing() {
    let s = Scratch::new();
    s.init();
    pack_size(&s, 512 * 1024);
    let src = s.path("src");
    lifeboat::demo::sample::write_tree(&src, 64 << 20, 21).unwrap();
    let mut r = rand::rngs::StdRng::seed_from_u64(2101);
    let mut kills = 0;
    let mut finished = Vec::new();
    for i in 0..6 {
        let mut child = spawn(&s, &["backup", src.to_str().unwrap()], &[]);
        let want = pack_files(&s.repo).len() + 1;
        let stored = wait_for(&mut child, Duration::from_secs(120), || {
            pack_files(&s.repo).len() >= want
        });
        // Somewhere in the next stretch of the upload. (Up to 250 ms let a re-run on an idle
        // machine finish first — it skips what the killed runs stored — so that only one run
        // was killed; 80 ms still lands kills at different points, each run storing more.)
        std::thread::sleep(Duration::from_millis(rand::Rng::gen_range(&mut r, 0..80)));
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            eprintln!("iteration {i}: finished before the kill");
            finished = snapshot_ids(&s);
            break;
        }
        assert!(stored, "iteration {i}: {}", describe(&o));
        assert_eq!(o.status.signal(), Some(libc::SIGKILL));
        let listed = snapshot_ids(&s);
        if !listed.is_empty() {
            // Killed after its commit point (on its way out): its snapshot must be whole.
            eprintln!("iteration {i}: killed after its commit");
            restores_exactly(&s, &listed[0], &src);
            finished = listed;
            break;
        }
        kills += 1;
        eprintln!(
            "iteration {i}: killed with {} packs stored",
            pack_files(&s.repo).len()
        );
        s.ok(&["verify"]);
    }
    assert!(kills >= 2, "only {kills} runs were killed");
    let before = pack_ids(&s.repo);
    // (--force: read everything again even if the last run finished before its kill.)
    let v = s.json(&["backup", "--force", src.to_str().unwrap()]);
    let (indexed, dups) = indexed_packs_and_duplicates(&s);
    assert!(
        before.is_subset(&indexed),
        "a killed run's pack was not reused"
    );
    assert_eq!(dups, 0, "a blob was uploaded twice: {v:#}");
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    finished.push(id.clone());
    assert_eq!(
        snapshot_ids(&s).len(),
        finished.len(),
        "one snapshot per finished run"
    );
    assert!(snapshot_ids(&s).contains(&id));
    restores_exactly(&s, &id, &src);
    inv1(&s);
    inv3(&s);
}

// ----- T16: forged newer snapshots -----------------------------------------------------------------

/// T16: someone holding the key (an append-only client) adds empty snapshots slightly newer
/// than the real ones, in the same group. `keep-within` keeps every real snapshot (while
/// `keep-last` would have let the forgeries push them out — shown by a dry run), the real
/// snapshots still restore, and `verify` names each forged snapshot: the catalog, which
/// records every backup this host made, has never heard of it.
#[test]
fn forged_newer_snapshots_are_flagged_and_do_not_push_real_ones_out() {
    use lifeboat::repo::snapshot::{Snapshot, Summary};
    use lifeboat::repo::ObjectKind;
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 16, 12, 50_000);
    let mut real = Vec::new();
    for i in 0..3 {
        std::fs::write(src.join("changing.txt"), format!("version {i}\n")).unwrap();
        real.push(
            s.json(&["backup", src.to_str().unwrap()])["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // An empty tree for the forgeries to point at (a backup of an empty directory: another
    // group, left alone).
    let empty = s.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = s.json(&["backup", empty.to_str().unwrap()]);
    let e_id = e["snapshot_id"].as_str().unwrap().to_string();
    let repo = open(&s);
    let forged: Vec<String> = rt().block_on(async {
        let (_, empty_snap) = repo.find_snapshot(&e_id).await.unwrap();
        let (_, newest) = repo.find_snapshot(&real[2]).await.unwrap();
        let mut out = Vec::new();
        for k in 1..=4i64 {
            let f = Snapshot {
                time: newest.time + chrono::Duration::minutes(k),
                consistency_time: newest.consistency_time + chrono::Duration::minutes(k),
                tree: empty_snap.tree,
                parent: None,
                summary: Summary::default(),
                ..newest.clone()
            };
            out.push(
                repo.save_json(ObjectKind::Snapshot, &f)
                    .await
                    .unwrap()
                    .to_string(),
            );
        }
        out
    });

    // keep-last 3 would keep only forgeries (a dry run: nothing is removed).
    let j = s.json(&["forget", "--keep-last", "3", "--dry-run"]);
    let group = j["regions"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["snapshots"].as_array().unwrap().len() == 7)
        .unwrap_or_else(|| panic!("one group of 7: {j:#}"))
        .clone();
    for row in group["snapshots"].as_array().unwrap() {
        let id = row["id"].as_str().unwrap();
        if real.iter().any(|r| r == id) {
            assert_eq!(row["keep"], false, "{j:#}");
        }
    }
    // keep-within keeps them all.
    s.ok(&[
        "forget",
        "--confirm",
        "--keep-within",
        "1d",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    let left: HashSet<String> = snapshot_ids(&s).into_iter().collect();
    for id in &real {
        assert!(left.contains(id), "real snapshot {id} was forgotten");
    }
    restores_exactly(&s, &real[2], &src);
    // verify names every forgery (a warning: the catalog never recorded it).
    let v = s.json(&["verify"]);
    let findings = v["report"]["findings"].as_array().unwrap();
    for f in &forged {
        assert!(
            findings.iter().any(|x| x["severity"] == "warning"
                && x["object"].as_str().unwrap().contains(&f[..8])
                && x["message"]
                    .as_str()
                    .unwrap()
                    .contains("not in the catalog")),
            "forged snapshot {f} not flagged: {v:#}"
        );
    }
    for r in &real {
        assert!(
            !findings
                .iter()
                .any(|x| x["object"].as_str().unwrap().contains(&r[..8])),
            "real snapshot {r} flagged: {v:#}"
        );
    }
}

// ----- S3 (Garage): T21 and T02 ------------------------------------------------------------------

mod s3 {
    use super::*;
    use support::garage::{self, Garage};
    use support::regions::{lifeboat, make_s3_tree, Run};

    fn cmd(w: &Path, url: &str, args: &[&str]) -> std::process::Command {
        let mut c = lifeboat(w);
        c.arg("--repo").arg(url).args(args);
        c
    }

    fn run(w: &Path, url: &str, args: &[&str]) -> Run {
        support::regions::run(cmd(w, url, args))
    }

    fn ok(w: &Path, url: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let r = run(w, url, &a);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
    }

    fn restores_exactly(w: &Path, url: &str, id: &str, src: &Path) {
        let target = w.join(format!("restore-{}", rand::random::<u64>()));
        let r = run(
            w,
            url,
            &["restore", id, "--target", target.to_str().unwrap()],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let diffs = compare_dirs(src, &target.join(src.file_name().unwrap())).unwrap();
        assert!(diffs.is_empty(), "INV-2: snapshot {id}: {diffs:#?}");
        std::fs::remove_dir_all(&target).unwrap();
    }

    fn inv1(w: &Path, url: &str) {
        let v = ok(w, url, &["verify", "--read-data"]);
        assert_eq!(v["errors"], 0, "{v:#}");
        assert_only_info(&v);
    }

    fn snapshot_ids(w: &Path, url: &str) -> Vec<String> {
        ok(w, url, &["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn inv3(w: &Path, url: &str) {
        let v = ok(w, url, &["catalog", "rebuild"]);
        let r = &v["report"];
        assert_eq!(r["added"], 0, "INV-3: {v:#}");
        assert_eq!(r["updated"], 0, "INV-3: {v:#}");
        assert_eq!(r["forgotten"], 0, "INV-3: {v:#}");
        assert_eq!(r["unchanged"], snapshot_ids(w, url).len(), "INV-3: {v:#}");
    }

    /// T21 against S3: N rounds of two backups at once (overlapping data) into one Garage
    /// repository: both commit every time, every snapshot restores bit-exact, `verify
    /// --read-data` passes and the catalog equals its rebuild.
    #[test]
    fn concurrent_backups_into_one_s3_repository_all_commit() {
        const ROUNDS: u64 = 3;
        let g = Garage::start("t21");
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let url = g.url("repo");
        let r = run(w, &url, &support::FAST_INIT);
        assert_eq!(r.code, 0, "{r:?}");
        let (a, b) = (w.join("a"), w.join("b"));
        let mut all = Vec::new();
        for round in 0..ROUNDS {
            concurrent_round(&a, &b, round);
            let spawn = |src: &Path| {
                let mut c = cmd(w, &url, &["backup", "--json", src.to_str().unwrap()]);
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                c.spawn().unwrap()
            };
            let (ca, cb) = (spawn(&a), spawn(&b));
            let (oa, ob) = (
                ca.wait_with_output().unwrap(),
                cb.wait_with_output().unwrap(),
            );
            for (o, src) in [(&oa, &a), (&ob, &b)] {
                assert_eq!(o.status.code(), Some(0), "round {round}: {}", describe(o));
                let v: Value = serde_json::from_slice(&o.stdout).unwrap();
                let id = v["snapshot_id"].as_str().unwrap().to_string();
                restores_exactly(w, &url, &id, src);
                all.push(id);
            }
        }
        let listed: HashSet<String> = snapshot_ids(w, &url).into_iter().collect();
        assert_eq!(listed, all.iter().cloned().collect::<HashSet<_>>());
        inv1(w, &url);
        inv3(w, &url);
    }

    /// T02: `kill -9` while a pack is going up as an S3 multipart upload: nothing exists at
    /// the upload's key, the orphaned upload is listed by `ListMultipartUploads`, the killed
    /// run committed nothing, and the re-run exits 0 with a repository that verifies and
    /// restores bit-exact. `prune` leaves the orphan while it is younger than twice the lock
    /// lease and aborts it (reporting how many) once it is older.
    #[test]
    fn kill_during_a_multipart_upload_leaves_no_object_and_the_rerun_succeeds() {
        let g = Garage::start("t02");
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        // Packs are 8 MiB: with a 5 MiB threshold every pack is a two-part upload.
        let url = format!(
            "{}&multipart_threshold_mib=5&part_size_mib=5",
            g.url("repo")
        );
        let r = run(w, &url, &support::FAST_INIT);
        assert_eq!(r.code, 0, "{r:?}");
        let src = make_s3_tree(w, 64, 2);
        let mut cfg = lifeboat::store::s3::S3Config::from_url(&url).unwrap();
        cfg.credentials_file = Some(garage::credentials_file(w, garage::SECRET));
        let store = lifeboat::store::s3::S3Store::new(cfg).unwrap();
        let rt = rt();

        let mut child = cmd(w, &url, &["backup", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut pending = Vec::new();
        let caught = wait_for(&mut child, Duration::from_secs(120), || {
            pending = rt.block_on(store.pending_multipart_uploads()).unwrap();
            !pending.is_empty()
        });
        assert!(
            caught,
            "the backup ended before a multipart upload was seen"
        );
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let orphans = rt.block_on(store.pending_multipart_uploads()).unwrap();
        assert!(!orphans.is_empty(), "the killed upload is listed");
        use lifeboat::store::Store;
        for u in &orphans {
            assert!(u.key.starts_with("data/"), "{u:?}");
            assert!(
                rt.block_on(store.head(&u.key)).unwrap().is_none(),
                "an object exists at the key of an unfinished upload: {u:?}"
            );
        }
        assert!(snapshot_ids(w, &url).is_empty(), "INV-5");
        inv1(w, &url);

        let v = ok(w, &url, &["backup", src.to_str().unwrap()]);
        let id = v["snapshot_id"].as_str().unwrap().to_string();
        restores_exactly(w, &url, &id, &src);
        inv1(w, &url);
        inv3(w, &url);
        // The orphans are still there: a backup does not abort uploads it did not start.
        let still = rt.block_on(store.pending_multipart_uploads()).unwrap();
        for u in &orphans {
            assert!(still.contains(u), "{u:?} vanished: {still:?}");
        }
        // A day has not passed: healthcheck does not warn yet.
        let h = ok(w, &url, &["healthcheck"]);
        assert_eq!(h["warnings"], serde_json::json!([]), "{h:#}");
        // prune spares uploads younger than twice the lease (default 15 min: 30 min) ...
        let r = run(w, &url, &["prune", "--confirm", "--grace", "0s"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            r.stdout.contains(&format!(
                "{} multipart uploads in progress or too recent to abort",
                orphans.len()
            )),
            "{r:?}"
        );
        let v = ok(w, &url, &["prune", "--confirm", "--grace", "0s"]);
        let m = &v["regions"][0]["multipart"];
        assert_eq!(m["aborted"], 0, "{v:#}");
        assert_eq!(m["kept"], orphans.len(), "{v:#}");
        assert_eq!(m["abort_age_secs"], 1800, "{v:#}");
        assert_eq!(
            rt.block_on(store.pending_multipart_uploads())
                .unwrap()
                .len(),
            orphans.len()
        );
        // ... and aborts them once they are older (a 2 s lease: older than 4 s), saying how
        // many; nothing is left pending and the repository is unchanged.
        std::thread::sleep(Duration::from_secs(5));
        let lease = (lifeboat::repo::lock::LEASE_ENV, "2");
        let mut c = cmd(w, &url, &["prune", "--confirm", "--grace", "0s", "--json"]);
        c.env(lease.0, lease.1);
        let r = support::regions::run(c);
        assert_eq!(r.code, 0, "{r:?}");
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        let m = &v["regions"][0]["multipart"];
        assert_eq!(m["aborted"], orphans.len(), "{v:#}");
        assert_eq!(m["kept"], 0, "{v:#}");
        assert_eq!(m["error"], Value::Null, "{v:#}");
        assert!(rt
            .block_on(store.pending_multipart_uploads())
            .unwrap()
            .is_empty());
        inv1(w, &url);
        restores_exactly(w, &url, &id, &src);
    }
}
