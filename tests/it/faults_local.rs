//! The fault matrix, local side and drills (RELIABILITY.md T11, T14, T15, T17, T25, T27, T28,
//! T31; issue 16 item 13). Each test injects one fault and then checks the invariants that
//! apply:
//!
//! - INV-1: `verify --read-data` passes, with nothing above info level ([`inv1`]);
//! - INV-2: every snapshot restores bit-exact to the tree it was taken of ([`restores_exactly`]);
//! - INV-3: the catalog equals what `catalog rebuild` builds from the repository ([`inv3`]);
//! - INV-4: no secret in the output ([`no_secret`]) or in a child's environment (T31);
//! - INV-5: no snapshot was committed for a failed run (counted around each fault).

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use lifeboat::drill::env::{ConnectionInfo, Environment, EphemeralPostgres};
use lifeboat::restore::compare_dirs;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use support::*;

// ----- harness ------------------------------------------------------------------------------

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

/// INV-4 for one run: the repository password is in neither stdout nor stderr.
fn no_secret(o: &Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    assert!(!all.contains(PASSWORD), "INV-4: the password leaked: {all}");
}

/// Every file of a directory tree with its bytes (to show nothing changed).
fn snapshot_of_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    list_files(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(dir.join(&p)).unwrap();
            (p, b)
        })
        .collect()
}

fn object_files(repo: &Path, dir: &str) -> Vec<PathBuf> {
    list_files(&repo.join(dir))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| repo.join(dir).join(p))
        .collect()
}

// ----- T27: a pack damaged in memory before its upload ------------------------------------------

/// T27: finished packs with a bit flipped after their blobs were verified (two of them, by
/// `LIFEBOAT_FAILPOINT=flip-pack`) are rebuilt from their stripe parity and stored: the
/// backup exits 0 and counts them, and the invariants hold.
#[test]
fn packs_damaged_before_upload_are_rebuilt_and_the_backup_succeeds() {
    let s = Scratch::new();
    s.init();
    pack_size(&s, 1 << 20);
    let src = s.path("src");
    make_tree(&src, 61, 12, 400_000);
    write_random(&src.join("big.bin"), 62, 3 << 20);
    let out = s.run_env(
        &["backup", "--json", src.to_str().unwrap()],
        &[("LIFEBOAT_FAILPOINT", "flip-pack:1,flip-pack:3")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["packs_rebuilt"], 2, "{v}");
    assert!(err.contains("rebuilt it from its parity"), "{err}");
    no_secret(&out);
    let ids = snapshot_ids(&s);
    assert_eq!(ids.len(), 1);
    inv1(&s);
    restores_exactly(&s, &ids[0], &src);
    inv3(&s);
    // The text summary says it too; a run without faults counts none.
    std::fs::write(src.join("new.txt"), b"one more file").unwrap();
    let quiet = s.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(quiet["packs_rebuilt"], 0, "{quiet}");
}

// ----- T15 (a)/(b): tampered snapshot and index files -------------------------------------------

/// T15 (a): a byte flipped in a file under `snapshots/` makes `verify` and `restore` of that
/// snapshot exit 13 naming it; the other snapshot still restores. (b): two snapshot files
/// swapped (each under the other's name), then two index files swapped: exit 13 naming the
/// object. Putting the files back leaves a repository that passes every invariant: nothing
/// else was harmed.
#[test]
fn tampered_or_swapped_snapshot_and_index_files_are_named_with_13() {
    let s = Scratch::new();
    s.init();
    pack_size(&s, 64 << 10);
    let a = s.path("a");
    make_tree(&a, 71, 8, 100_000);
    s.ok(&["backup", a.to_str().unwrap()]);
    let b = s.path("b");
    make_tree(&b, 72, 8, 100_000);
    s.ok(&["backup", b.to_str().unwrap()]);
    let snaps = object_files(&s.repo, "snapshots");
    assert_eq!(snaps.len(), 2);
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().to_string();
    let ids_before = snapshot_ids(&s);
    let sources: Vec<PathBuf> = snaps
        .iter()
        .map(|p| snapshot_source(&s, &name(p)))
        .collect();
    let good = snapshot_of_files(&s.repo);

    // (a) one byte flipped in the first snapshot file.
    let victim = &snaps[0];
    let other = &snaps[1];
    let mut raw = std::fs::read(victim).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    std::fs::write(victim, &raw).unwrap();
    let out = s.run(&["verify"]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(13), "{all}");
    assert!(
        all.contains(&name(victim)[..8]),
        "names the snapshot: {all}"
    );
    no_secret(&out);
    let out = s.run(&[
        "restore",
        &name(victim),
        "--target",
        s.path("t1").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&name(victim)[..8]),
        "{}",
        stderr(&out)
    );
    // The other snapshot is untouched and still restores bit-exact.
    restores_exactly(&s, &name(other), &sources[1]);
    std::fs::write(
        victim,
        &good
            .iter()
            .find(|(p, _)| s.repo.join(p) == *victim)
            .unwrap()
            .1,
    )
    .unwrap();

    // (b) two valid snapshot files swapped: each is a valid object under the wrong name.
    let (ra, rb) = (
        std::fs::read(&snaps[0]).unwrap(),
        std::fs::read(&snaps[1]).unwrap(),
    );
    std::fs::write(&snaps[0], &rb).unwrap();
    std::fs::write(&snaps[1], &ra).unwrap();
    let out = s.run(&["verify"]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(13), "{all}");
    assert!(
        all.contains(&name(&snaps[0])[..8]) || all.contains(&name(&snaps[1])[..8]),
        "names a swapped snapshot: {all}"
    );
    let out = s.run(&[
        "restore",
        &name(&snaps[0]),
        "--target",
        s.path("t2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    std::fs::write(&snaps[0], &ra).unwrap();
    std::fs::write(&snaps[1], &rb).unwrap();

    // (b) two index files swapped.
    let idx = object_files(&s.repo, "index");
    assert!(idx.len() >= 2, "{idx:?}");
    let (ia, ib) = (
        std::fs::read(&idx[0]).unwrap(),
        std::fs::read(&idx[1]).unwrap(),
    );
    std::fs::write(&idx[0], &ib).unwrap();
    std::fs::write(&idx[1], &ia).unwrap();
    let out = s.run(&["verify"]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(13), "{all}");
    assert!(all.contains("index"), "names an index file: {all}");
    assert!(
        all.contains(&name(&idx[0])[..8]) || all.contains(&name(&idx[1])[..8]),
        "names a swapped index file: {all}"
    );
    std::fs::write(&idx[0], &ia).unwrap();
    std::fs::write(&idx[1], &ib).unwrap();

    // Nothing else was harmed: every file is as it was, and every invariant holds.
    assert_eq!(snapshot_of_files(&s.repo).len(), good.len());
    assert_eq!(snapshot_ids(&s), ids_before);
    inv1(&s);
    for (p, src) in snaps.iter().zip(&sources) {
        restores_exactly(&s, &name(p), src);
    }
    inv3(&s);
}

/// The source directory a snapshot was taken of (its single path).
fn snapshot_source(s: &Scratch, id: &str) -> PathBuf {
    let all = s.json(&["snapshots"]);
    let snap = all
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} listed: {all}"));
    PathBuf::from(snap["paths"][0].as_str().unwrap())
}

// ----- T11: repair over a bit-flipped pack -----------------------------------------------------

/// T11: a bit flipped in a stored pack. `verify --read-data` exits 13 naming the pack;
/// `repair --read-data` salvages the pack's other blobs into a new pack, names the snapshot
/// that needed the damaged one and the file it belonged to (exit 13), and `repair
/// --rewrite-snapshots` keeps the rest of that snapshot. A snapshot that did not use the pack
/// restores bit-exact throughout; afterwards every invariant holds.
#[test]
fn repair_salvages_a_bit_flipped_pack_and_names_the_affected_snapshot_and_file() {
    let s = Scratch::new();
    s.init();
    pack_size(&s, 256 << 10);
    // Snapshot 1: small files that share packs (so a damaged pack holds intact blobs too).
    let a = s.path("a");
    for i in 0..6u64 {
        write_random(&a.join(format!("f{i}.bin")), 80 + i, 30_000);
    }
    s.ok(&["backup", a.to_str().unwrap()]);
    let id_a = snapshot_ids(&s)[0].clone();
    let packs_a: Vec<PathBuf> = object_files(&s.repo, "data");
    // Snapshot 2: another tree, stored in packs of its own.
    let b = s.path("b");
    make_tree(&b, 90, 6, 50_000);
    s.ok(&["backup", b.to_str().unwrap()]);
    let id_b = snapshot_ids(&s).into_iter().find(|i| *i != id_a).unwrap();
    // The pack of snapshot 1 holding the most blobs; flip a bit in its first blob's bytes.
    let victim = packs_a
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut raw = std::fs::read(&victim).unwrap();
    raw[100] ^= 0x04;
    std::fs::write(&victim, &raw).unwrap();
    let pack_name = victim.file_name().unwrap().to_string_lossy().to_string();

    let out = s.run(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(13));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains(&pack_name[..8]),
        "verify names the pack: {all}"
    );

    // Without --read-data, repair cannot tell (the header is intact).
    let out = s.run(&["repair", "--read-data", "--json"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    no_secret(&out);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let salvaged = v["packs_salvaged"].as_array().unwrap();
    assert_eq!(salvaged.len(), 1, "{v:#}");
    assert_eq!(salvaged[0]["pack"].as_str().unwrap(), pack_name, "{v:#}");
    assert_eq!(
        salvaged[0]["blobs_lost"].as_array().unwrap().len(),
        1,
        "{v:#}"
    );
    let kept = salvaged[0]["blobs_kept"].as_u64().unwrap();
    assert!(kept >= 1, "the other blobs are salvaged: {v:#}");
    assert!(salvaged[0]["salvaged_into"].is_string(), "{v:#}");
    assert!(
        !victim.exists(),
        "the damaged pack is gone once its blobs are safe"
    );
    let damaged = v["snapshots_damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "only snapshot 1 is affected: {v:#}");
    assert_eq!(damaged[0]["snapshot_id"], id_a.as_str(), "{v:#}");
    let lost: Vec<&str> = damaged[0]["lost_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        lost.len(),
        1,
        "exactly the file of the damaged blob: {lost:?}"
    );
    assert!(
        lost[0].contains("/f") && lost[0].ends_with(".bin"),
        "{lost:?}"
    );
    // The text form names the snapshot and the file too.
    let out = s.run(&["repair", "--read-data"]);
    assert_eq!(out.status.code(), Some(13));
    let err = stderr(&out);
    assert!(
        err.contains(&id_a[..8]) && err.contains(lost[0].rsplit('/').next().unwrap()),
        "{err}"
    );

    // Snapshot 2 never needed the pack: it restores bit-exact.
    restores_exactly(&s, &id_b, &b);
    // Keep the rest of snapshot 1.
    s.ok(&["repair", "--rewrite-snapshots"]);
    inv1(&s);
    let repaired = snapshot_ids(&s).into_iter().find(|i| *i != id_b).unwrap();
    let target = s.path("r");
    s.ok(&["restore", &repaired, "--target", target.to_str().unwrap()]);
    let diffs = compare_dirs(&a, &target.join("a")).unwrap();
    assert_eq!(diffs.len(), 1, "only the lost file differs: {diffs:#?}");
    assert!(diffs[0].ends_with("missing from the restore"), "{diffs:?}");
    restores_exactly(&s, &id_b, &b);
    s.ok(&["catalog", "rebuild"]);
    inv3(&s);
}

// ----- T14: a damaged key file writes nothing; one KDF per attempt ------------------------------

/// T14: with a wrong password the key slot's KDF runs exactly once (one `argon2id` event in
/// the debug log) and exits 12; with a byte flipped in the key file, it exits 12 without
/// running the KDF on the damaged slot at all. Neither run changes any file of the
/// repository (no lock left behind, nothing written).
#[test]
fn damaged_key_file_writes_nothing_and_each_attempt_runs_the_kdf_once() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 5, 4, 10_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let kdf_runs = |o: &Output| stderr(o).matches("argon2id key derivation").count();
    // A good password: one KDF.
    let out = s.run_env(&["snapshots"], &[("LIFEBOAT_LOG", "lifeboat=debug")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(kdf_runs(&out), 1, "{}", stderr(&out));

    let before = snapshot_of_files(&s.repo);
    let wrong = s.path("wrong");
    std::fs::write(&wrong, "not the password\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wrong = wrong.to_str().unwrap().to_string();
    for args in [
        &["backup", src.to_str().unwrap()][..],
        &["snapshots"][..],
        &["verify"][..],
    ] {
        let out = s.run_env(
            args,
            &[
                ("LIFEBOAT_PASSWORD_FILE", &wrong),
                ("LIFEBOAT_LOG", "lifeboat=debug"),
            ],
        );
        assert_eq!(out.status.code(), Some(12), "{args:?}: {}", stderr(&out));
        assert_eq!(kdf_runs(&out), 1, "one attempt, one KDF: {}", stderr(&out));
        assert_eq!(
            snapshot_of_files(&s.repo),
            before,
            "{args:?} wrote something"
        );
    }

    // A byte flipped in the key file.
    let key = object_files(&s.repo, "keys").pop().unwrap();
    let mut raw = std::fs::read(&key).unwrap();
    let i = raw.len() / 2;
    raw[i] ^= 0x02;
    std::fs::write(&key, &raw).unwrap();
    let before = snapshot_of_files(&s.repo);
    for args in [&["backup", src.to_str().unwrap()][..], &["snapshots"][..]] {
        let out = s.run_env(args, &[("LIFEBOAT_LOG", "lifeboat=debug")]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(12), "{args:?}: {err}");
        assert!(err.contains("damaged key file"), "{err}");
        assert_eq!(
            kdf_runs(&out),
            0,
            "no KDF on a slot that fails its checksum: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            snapshot_of_files(&s.repo),
            before,
            "{args:?} wrote something"
        );
    }
}

// ----- T18: bad retention input ----------------------------------------------------------------

/// T18: `forget --keep-tag typo` (a rule that keeps none of a group's snapshots) is refused
/// with exit 1, naming the group and `--force`, and changes no file of the repository; with
/// `--force --dry-run` it lists every snapshot as removed and still changes nothing; with
/// `--force` it removes them all. Then the repository verifies and the catalog matches it.
#[test]
fn forget_refuses_to_empty_a_group_with_1_unless_forced() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 11, 4, 5_000);
    for i in 0..3 {
        std::fs::write(src.join("gen.txt"), format!("generation {i}")).unwrap();
        s.ok(&["backup", "--tag", "nightly", src.to_str().unwrap()]);
    }
    let before = snapshot_of_files(&s.repo);
    let out = s.run(&["forget", "--confirm", "--keep-tag", "nigthly"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to remove every snapshot") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("nothing was removed"), "{err}");
    assert_eq!(
        snapshot_of_files(&s.repo),
        before,
        "a refused forget wrote something"
    );
    let dry = s.json(&["forget", "--keep-tag", "nigthly", "--force", "--dry-run"]);
    let rows: Vec<&Value> = dry["regions"][0]["groups"][0]["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("{dry:#}"))
        .iter()
        .collect();
    assert_eq!(rows.len(), 3, "{dry:#}");
    assert!(rows.iter().all(|r| r["keep"] == false), "{dry:#}");
    assert_eq!(snapshot_ids(&s).len(), 3);
    s.ok(&["forget", "--confirm", "--keep-tag", "nigthly", "--force"]);
    assert!(snapshot_ids(&s).is_empty());
    inv1(&s);
    inv3(&s);
}

// ----- T17: ENOSPC, randomized -----------------------------------------------------------------

/// T17: 10 backups into a repository on a 20 MiB tmpfs, each with a random amount (22–40 MiB)
/// of incompressible data added to a small tree that fits. Each exits 15 "out of space",
/// leaves no temp file and no snapshot, and the repository verifies. Afterwards `forget --prune` on the nearly full disk works
/// and every invariant holds.
#[test]
fn randomized_full_disk_passes_leave_a_valid_repository_and_prune_still_works() {
    assert!(is_root(), "this test needs root to mount a small tmpfs");
    let mut s = Scratch::new();
    let fs = s.path("fs");
    let _tmpfs = Tmpfs::mount(&fs, "size=20m");
    s.repo = fs.join("repo");
    s.init();
    let src = s.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("small.txt"), b"the part that fits").unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    let seed: u64 = rand::random();
    eprintln!("T17 passes: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut full = 0;
    for pass in 0..10u64 {
        let mb = 22 + (rng.next_u32() % 19) as usize;
        let path = src.join("big.bin");
        write_random(&path, rng.next_u64(), mb << 20);
        let before = snapshot_ids(&s).len();
        let out = s.run(&["backup", src.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(15),
            "seed {seed}, pass {pass} ({mb} MiB): {err}"
        );
        full += 1;
        assert!(
            err.contains("out of space") && err.contains("nothing was committed"),
            "{err}"
        );
        let temps: Vec<_> = list_files(&s.repo)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(temps.is_empty(), "pass {pass}: temp files left: {temps:?}");
        assert_eq!(snapshot_ids(&s).len(), before, "INV-5, pass {pass}");
        s.ok(&["verify"]);
        std::fs::remove_file(&path).unwrap();
    }
    assert_eq!(full, 10);
    inv1(&s);
    // Prune on the nearly full disk: fill it up to a few hundred KiB, then forget + prune.
    let filler = fs.join("filler");
    let left = free_bytes(&fs);
    if left > (600 << 10) {
        write_random(&filler, 9, (left - (400 << 10)) as usize);
    }
    std::fs::write(src.join("small.txt"), b"changed").unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    s.ok(&[
        "forget",
        "--confirm",
        "--keep-last",
        "1",
        "--prune",
        "--max-unused",
        "0",
    ]);
    assert_eq!(snapshot_ids(&s).len(), 1);
    let _ = std::fs::remove_file(&filler);
    inv1(&s);
    restores_exactly(&s, &snapshot_ids(&s)[0], &src);
    inv3(&s);
}

/// Free bytes of the file system holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

// ----- PostgreSQL: T25, T31, T28 -----------------------------------------------------------------

fn pg_job(c: &ConnectionInfo, user: &str, bin: &Path, extra: &str) -> String {
    format!(
        "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"{user}\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\nrow_counts = \"exact\"\n{extra}\n",
        c.socket.as_deref().unwrap().display(),
        c.port,
        bin.display()
    )
}

/// A directory of PostgreSQL tools where each tool in `wrap` runs `script` (with `$REAL`
/// the real bin directory and `$TOOL` its name) and the others are the real ones.
fn wrapped_bin(dir: &Path, real: &Path, wrap: &[&str], script: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for tool in ["pg_dump", "psql", "pg_dumpall", "pg_restore"] {
        let p = dir.join(tool);
        if wrap.contains(&tool) {
            std::fs::write(
                &p,
                format!(
                    "#!/bin/bash\nREAL={}\nTOOL={tool}\n{script}\n",
                    real.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::os::unix::fs::symlink(real.join(tool), p).unwrap();
        }
    }
    dir.to_path_buf()
}

fn shop_server() -> (EphemeralPostgres, ConnectionInfo) {
    let env = EphemeralPostgres::start(None).expect("server");
    let c = env.connection().unwrap().clone();
    psql(&c, "postgres", "CREATE DATABASE shop");
    pg_tool(&c, "pgbench", &["-i", "-s", "1", "-q", "shop"]);
    (env, c)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts a backup run failed as a source failure should: 14, `expect` in stderr, no
/// snapshot, no process of `marker` left, no session of the backup left on the server.
fn failed_as_source(
    ws: &Workspace,
    plan: &Path,
    o: &Output,
    c: &ConnectionInfo,
    marker: &str,
    expect: &[&str],
) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(14), "{err}");
    assert!(
        expect.iter().any(|e| err.contains(e)),
        "stderr lacks {expect:?}: {err}"
    );
    assert!(
        ws.snapshots(plan).is_empty(),
        "INV-5: a snapshot was committed"
    );
    wait_until(
        "the dump's processes to go",
        Duration::from_secs(10),
        || processes_matching(marker).is_empty(),
    );
    wait_until(
        "the backup's sessions to go",
        Duration::from_secs(10),
        || {
            psql(
            c,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND pid <> pg_backend_pid()",
        ) == "0"
        },
    );
}

/// T25: the dump's server connection is terminated mid-dump (`pg_terminate_backend` on the
/// backend running its COPY), and the dump user's privileges are revoked mid-dump. Each
/// exits 14 with the server's reason, commits nothing, and leaves no process or session;
/// a good run afterwards commits one snapshot that verifies.
#[test]
fn postgres_connection_dropped_or_privileges_revoked_mid_dump_exits_14() {
    let (_env, c) = shop_server();
    let real = c.bin_dir.clone().unwrap();
    let ws = Workspace::new();
    // pg_dump's output stalls after 200 kB (the pipe fills, the dump waits mid-table) for
    // as long as the flag file exists; pipefail passes pg_dump's own exit status on.
    let flag = ws.path().join("stall");
    let bin = wrapped_bin(
        &ws.path().join("stall-bin"),
        &real,
        &["pg_dump"],
        &format!(
            "set -o pipefail\n\"$REAL/pg_dump\" \"$@\" | {{ head -c 200000; while [ -e {} ]; do sleep 0.05; done; cat; }}",
            flag.display()
        ),
    );

    // 1. The backend serving the dump's COPY is terminated.
    std::fs::write(&flag, b"").unwrap();
    let plan = ws.plan("terminated", &pg_job(&c, "postgres", &bin, ""));
    let child = lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("pg_dump's COPY", Duration::from_secs(60), || {
        psql(
            &c,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND query LIKE 'COPY %'",
        ) != "0"
    });
    let killed = psql(
        &c,
        "postgres",
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'shop' AND query LIKE 'COPY %' AND pid <> pg_backend_pid()) t",
    );
    assert_eq!(killed, "1");
    std::fs::remove_file(&flag).unwrap();
    let o = child.wait_with_output().unwrap();
    failed_as_source(
        &ws,
        &plan,
        &o,
        &c,
        "stall-bin",
        &[
            "terminating connection due to administrator command",
            "server closed the connection",
        ],
    );
    no_secret(&o);

    // 2. The dump user loses SELECT on a table pg_dump has not dumped yet.
    psql(
        &c,
        "shop",
        "CREATE ROLE dumper LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO dumper; GRANT USAGE ON SCHEMA public TO dumper",
    );
    std::fs::write(&flag, b"").unwrap();
    let plan = ws.plan("revoked", &pg_job(&c, "dumper", &bin, ""));
    let child = lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("pg_dump's COPY", Duration::from_secs(60), || {
        psql(
            &c,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND query LIKE 'COPY %'",
        ) != "0"
    });
    psql(
        &c,
        "shop",
        "SET lock_timeout = '20s'; REVOKE SELECT ON pgbench_tellers FROM dumper",
    );
    std::fs::remove_file(&flag).unwrap();
    let o = child.wait_with_output().unwrap();
    failed_as_source(&ws, &plan, &o, &c, "stall-bin", &["permission denied"]);

    // A good run afterwards commits exactly one snapshot, which verifies.
    let plan = ws.plan("good", &pg_job(&c, "postgres", &real, ""));
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ws.snapshots(&plan).len(), 1);
    let o = run(lifeboat()
        .args(["verify", "--read-data", "--plan"])
        .arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// T31: `pg_dump`, `psql` and `pg_restore` — the children of a PostgreSQL backup — carry
/// none of six secrets in their environment (repository password, S3 keys, database
/// password and URL), while a harmless variable passes; and core dumps are off in the
/// backup process and its children (RLIMIT_CORE 0, read from `/proc/<lifeboat>/limits` and
/// the child's own `ulimit -c` while the backup runs).
#[test]
fn postgres_tool_children_carry_no_secret_and_core_dumps_are_off() {
    let (_env, c) = shop_server();
    let real = c.bin_dir.clone().unwrap();
    let ws = Workspace::new();
    let rec = ws.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let bin = wrapped_bin(
        &ws.path().join("env-bin"),
        &real,
        &["pg_dump", "psql", "pg_restore"],
        &format!(
            "env > {rec}/$TOOL.$$.env\ncat /proc/$PPID/limits > {rec}/$TOOL.$$.parent-limits\nulimit -c > {rec}/$TOOL.$$.ulimit\nexec \"$REAL/$TOOL\" \"$@\"",
            rec = rec.display()
        ),
    );
    let plan = ws.plan("env", &pg_job(&c, "postgres", &bin, ""));
    let secrets = [
        ("LIFEBOAT_PASSWORD", "Repo-Pw-From-Env-1"),
        ("AWS_SECRET_ACCESS_KEY", "Aws-Secret-Key-2"),
        ("AWS_ACCESS_KEY_ID", "GKAccessKeyId3"),
        ("SHOP_DB_PASSWORD", "Shop-Db-Pw-4"),
        ("PGPASSWORD", "Pg-Pw-5"),
        ("DATABASE_URL", "postgres://app:Url-Pw-6@db.example/app"),
    ];
    let mut cmd = lifeboat();
    cmd.args(["backup", "--plan"]).arg(&plan);
    for (k, v) in secrets {
        cmd.env(k, v);
    }
    cmd.env("HARMLESS_SETTING", "keep-me");
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = list_files(&rec);
    for tool in ["pg_dump", "psql", "pg_restore"] {
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().starts_with(&format!("{tool}."))),
            "{tool} was not run through the wrapper: {files:?}"
        );
    }
    for f in &files {
        let text = std::fs::read_to_string(rec.join(f)).unwrap();
        let name = f.to_string_lossy();
        if name.ends_with(".env") {
            for (k, v) in secrets {
                assert!(!text.contains(v), "{k} reached {name}:\n{text}");
            }
            assert!(text.contains("HARMLESS_SETTING=keep-me"), "{name}: {text}");
        } else if name.ends_with(".parent-limits") {
            let core = text
                .lines()
                .find(|l| l.starts_with("Max core file size"))
                .unwrap();
            let fields: Vec<&str> = core.split_whitespace().collect();
            assert_eq!(&fields[4..6], ["0", "0"], "{name}: {core}");
        } else {
            assert_eq!(text.trim(), "0", "{name}: the child may dump core");
        }
    }
    let all = format!("{}{}", stdout(&o), stderr(&o));
    for (k, v) in secrets {
        assert!(!all.contains(v), "{k} in the output: {all}");
    }
}

/// T28: drills whose data-level checks fail. (1) The backup's dump lost a table (a pg_dump
/// that leaves `pgbench_branches` out), while the row counts lifeboat captured at backup
/// still list it: the drill's row-count check fails, exit 16, `check_failed`, and the catalog
/// does not record it as passed. (2) The newest snapshot is older than the plan's RPO: the
/// drill restores it and its checks pass, but it exits 17 (`objective_missed`, `rpo.met`
/// false). Nothing is left running either time.
#[test]
fn drills_of_a_dump_missing_a_table_or_a_stale_snapshot_fail_with_16_and_17() {
    let (_env, c) = shop_server();
    let real = c.bin_dir.clone().unwrap();
    let ws = Workspace::new();
    let bin = wrapped_bin(
        &ws.path().join("lossy-bin"),
        &real,
        &["pg_dump"],
        "exec \"$REAL/pg_dump\" --exclude-table-data=pgbench_branches --exclude-table=pgbench_branches \"$@\"",
    );
    let drill_section = "\n[drill]\nenvironment = \"ephemeral-postgres\"\n";
    let plan = ws.plan(
        "lossy",
        &format!("{}{drill_section}", pg_job(&c, "postgres", &bin, "")),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    let tmp = drill_tmp();
    let o = run(lifeboat()
        .args(["drill", "--json", "--plan"])
        .arg(&plan)
        .env("TMPDIR", tmp.path())
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert_eq!(o.status.code(), Some(16), "{}", stderr(&o));
    let r: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let r = &r[0];
    assert_eq!(r["result"], "check_failed", "{r:#}");
    let rc = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "row_counts")
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(rc["status"], "failed", "{rc}");
    assert!(
        rc["detail"].as_str().unwrap().contains("pgbench_branches"),
        "{rc}"
    );
    let h = run(lifeboat()
        .args(["history", "--json"])
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    let hist: Vec<Value> = serde_json::from_slice(&h.stdout).unwrap();
    let d = hist.iter().find(|e| e["kind"] == "drill").unwrap();
    assert_ne!(d["outcome"], "passed", "{d}");
    assert!(env_dirs(tmp.path()).is_empty(), "environment left behind");

    // (2) A stale snapshot: RPO 3 s, drilled 4 s after the backup.
    let stale = ws.path().join("stale.toml");
    let body = ws.plan(
        "stale",
        &format!("{}{drill_section}", pg_job(&c, "postgres", &real, "")),
    );
    std::fs::write(
        &stale,
        std::fs::read_to_string(&body)
            .unwrap()
            .replace("rpo = \"1day\"", "rpo = \"3s\""),
    )
    .unwrap();
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&stale));
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_secs(4));
    let tmp = drill_tmp();
    let o = run(lifeboat()
        .args(["drill", "--json", "--plan"])
        .arg(&stale)
        .env("TMPDIR", tmp.path())
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert_eq!(o.status.code(), Some(17), "{}", stderr(&o));
    let r: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let r = &r[0];
    assert_eq!(r["result"], "objective_missed", "{r:#}");
    assert_eq!(r["rpo"]["met"], false, "{r:#}");
    assert!(r["rpo"]["measured_secs"].as_f64().unwrap() > 3.0, "{r:#}");
    assert!(
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "passed"),
        "the data itself is fine: {r:#}"
    );
    assert!(env_dirs(tmp.path()).is_empty(), "environment left behind");
}

/// T17 with an S3 region beside the full local disk: a backup to a local repository on a
/// 20 MiB tmpfs and an S3 region (moto) with more data than the tmpfs holds commits in the S3
/// region and exits 3, naming the local region as failed for lack of space. The local
/// region keeps no snapshot and no temp file and still verifies; the S3 region verifies and
/// restores bit-exact.
#[test]
fn a_full_local_disk_beside_an_s3_region_still_commits_in_s3_with_3() {
    use support::moto::Moto;
    use support::regions::{lifeboat as lb, repos, run as run_lb};
    assert!(is_root(), "this test needs root to mount a small tmpfs");
    let moto = Moto::start();
    moto.create_bucket("full", false);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let fs = w.join("fs");
    let _tmpfs = Tmpfs::mount(&fs, "size=20m");
    let urls = vec![
        fs.join("repo").to_str().unwrap().to_string(),
        moto.url("full", "repo", ""),
    ];
    let cmd = |args: &[&str]| {
        let mut c = lb(w);
        c.env("LIFEBOAT_STATE_DIR", w.join("state"));
        repos(&mut c, &urls);
        c.args(args);
        run_lb(c)
    };
    let r = cmd(&FAST_INIT);
    assert_eq!(r.code, 0, "{r:?}");
    let src = w.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("small.txt"), b"small").unwrap();
    write_random(&src.join("big.bin"), 171, 30 << 20);
    let r = cmd(&["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let regions = v["regions"].as_array().unwrap();
    assert_eq!(regions[0]["status"], "failed", "{r:?}");
    assert_eq!(regions[1]["status"], "complete", "{r:?}");
    assert!(r.all().contains("out of space"), "{r:?}");
    assert!(!r.all().contains(PASSWORD), "INV-4: {r:?}");
    let local = regions[0]["region"].as_str().unwrap().to_string();
    let temps: Vec<_> = list_files(&fs.join("repo"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    assert!(
        list_files(&fs.join("repo/snapshots")).is_empty(),
        "INV-5: the full region got a snapshot"
    );
    for region in [local.as_str(), "moto"] {
        let r = cmd(&["verify", "--region", region]);
        assert_eq!(r.code, 0, "{region}: {r:?}");
    }
    let r = cmd(&["verify", "--read-data", "--region", "moto"]);
    assert_eq!(r.code, 0, "{r:?}");
    let target = w.join("restored");
    let r = cmd(&[
        "restore",
        "latest",
        "--region",
        "moto",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let diffs = compare_dirs(&src, &target.join("src")).unwrap();
    assert!(diffs.is_empty(), "INV-2: {diffs:#?}");
}

/// T31 (SR-9): a running lifeboat is not dumpable (`prctl(PR_SET_DUMPABLE, 0)`), so no core
/// file and no same-user `ptrace` or `/proc/<pid>/mem` read can reach its keys. Observed from
/// a backup's `pre` hook, run as an unprivileged user: the kernel gives the `/proc` files of
/// a non-dumpable process to root, so `/proc/<lifeboat>/status` is owned by uid 0 rather than
/// by the user running it.
#[test]
fn a_running_backup_is_not_dumpable() {
    use std::os::unix::process::CommandExt;
    assert!(
        is_root(),
        "this test needs root to run lifeboat as another user"
    );
    const NOBODY: u32 = 65534;
    let ws = Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello\n").unwrap();
    let seen = ws.path().join("owner.txt");
    let plan = ws.plan(
        "dump",
        &format!(
            "[[jobs]]\nname = \"files\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n[jobs.hooks]\npre = \"stat -c %u /proc/$PPID/status > {}\"\ntimeout = \"10s\"\n",
            data.display(),
            seen.display()
        ),
    );
    let st = std::process::Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(ws.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = lifeboat();
    cmd.args(["backup", "--plan"])
        .arg(&plan)
        .env("HOME", ws.path())
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state"))
        .current_dir(ws.path())
        .uid(NOBODY)
        .gid(NOBODY);
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    let owner = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(
        owner.trim(),
        "0",
        "/proc/<lifeboat>/status belongs to the user running it: the process is dumpable"
    );
}
