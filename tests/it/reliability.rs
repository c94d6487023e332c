//! Reliability and security (issue 16, RELIABILITY.md): lost packs heal or are repaired,
//! failed restores leave nothing behind, children never see secrets, stale locks, file
//! modes, broken pipes, config ranges, temp files, and messages that say where the problem is.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat::restore::compare_dirs;
use support::*;

/// Sets `pack_size` in a new repository's config (before its first backup), so a small tree
/// spreads over many packs.
fn small_packs(s: &Scratch) {
    let p = s.repo.join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["pack_size"] = (64 * 1024).into();
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn packs(repo: &Path) -> Vec<PathBuf> {
    list_files(&repo.join("data"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| repo.join("data").join(p))
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn open(s: &Scratch) -> lifeboat::repo::Repository {
    let store: lifeboat::store::DynStore =
        Arc::new(lifeboat::store::local::LocalStore::new(&s.repo));
    lifeboat::repo::Repository::open(store, PASSWORD.as_bytes())
        .await
        .unwrap()
}

/// A pack holding only file data (no tree) of the newest snapshot, by the library's index.
fn data_only_pack(s: &Scratch) -> PathBuf {
    rt().block_on(async {
        let repo = open(s).await;
        let index = repo.load_index().await.unwrap();
        let (_, snap) = repo.find_snapshot("latest").await.unwrap();
        let tree_packs: std::collections::HashSet<_> = index
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
        let (id, _) = index
            .packs()
            .iter()
            .find(|(id, _)| !tree_packs.contains(id))
            .expect("a pack without trees");
        s.repo.join(lifeboat::repo::pack_key(id))
    })
}

/// Issue 16.1, T13: a pack deleted behind the repository's back is healed by the next backup
/// of a source that still has the data — it is stored again, the index no longer lists the
/// lost pack, and the new snapshot restores. Before: "added 0 B", exit 0, restore exit 13.
#[test]
fn a_lost_pack_is_healed_by_the_next_backup() {
    let s = Scratch::new();
    s.init();
    small_packs(&s);
    let src = s.path("src");
    make_tree(&src, 16, 30, 200_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let lost = data_only_pack(&s);
    std::fs::remove_file(&lost).unwrap();

    let out = s.json(&["backup", "--force", src.to_str().unwrap()]);
    assert_eq!(out["packs_lost"].as_array().unwrap().len(), 1, "{out}");
    assert!(out["summary"]["bytes_added"].as_u64().unwrap() > 0, "{out}");
    let target = s.path("restored");
    s.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(compare_dirs(&src, &target.join("src")).unwrap().is_empty());
    // The repository is whole again: the old snapshot shares every blob with the new one.
    s.ok(&["verify", "--read-data"]);

    // Without --force as well: unchanged files whose blobs were lost are read again.
    let lost = data_only_pack(&s);
    std::fs::remove_file(&lost).unwrap();
    let out = s.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(out["packs_lost"].as_array().unwrap().len(), 1, "{out}");
    let target = s.path("restored2");
    s.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(compare_dirs(&src, &target.join("src")).unwrap().is_empty());
    s.ok(&["verify"]);
}

/// Issue 16.1, INV-5: before the commit point, the packs holding the blobs a snapshot reuses
/// must still exist; one that vanished fails the check (and so the backup) with exit 13.
#[test]
fn the_commit_check_refuses_a_snapshot_over_a_vanished_pack() {
    let s = Scratch::new();
    s.init();
    small_packs(&s);
    let src = s.path("src");
    make_tree(&src, 17, 20, 200_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let gone = data_only_pack(&s);
    rt().block_on(async {
        let repo = open(&s).await;
        let index = repo.load_index().await.unwrap();
        let by_pack = index.entries_by_pack();
        let pos = index
            .packs()
            .iter()
            .position(|(id, _)| s.repo.join(lifeboat::repo::pack_key(id)) == gone)
            .unwrap();
        let in_gone: std::collections::HashSet<_> = by_pack[pos].iter().map(|e| e.id).collect();
        let elsewhere: std::collections::HashSet<_> = by_pack
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pos)
            .flat_map(|(_, es)| es.iter().map(|e| e.id))
            .collect();
        repo.check_packs_present(&index, &in_gone, &[])
            .await
            .unwrap();
        std::fs::remove_file(&gone).unwrap();
        repo.check_packs_present(&index, &elsewhere, &[])
            .await
            .unwrap();
        let e = repo
            .check_packs_present(&index, &in_gone, &[])
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), lifeboat::ExitCode::Integrity);
        assert!(
            e.to_string().contains("vanished while the backup ran"),
            "{e}"
        );
        // A pack this run stored itself is checked as well.
        let own = index.packs()[pos];
        let e = repo
            .check_packs_present(&index, &Default::default(), &[own])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("this run stored it"), "{e}");
    });
}

/// Issue 16.1: `lifeboat repair` rebuilds the index from the packs and reports the snapshots
/// that point at lost data (exit 13); `--rewrite-snapshots` writes them again without the
/// lost files, after which the repository verifies and the rest restores.
#[test]
fn repair_reports_then_rewrites_snapshots_that_point_at_lost_data() {
    let s = Scratch::new();
    s.init();
    small_packs(&s);
    let src = s.path("src");
    make_tree(&src, 18, 30, 200_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    std::fs::remove_file(data_only_pack(&s)).unwrap();
    // A stray index file naming nothing but damaged bytes is replaced too.
    s.expect(&["verify"], 13);

    let out = s.run(&["repair", "--json"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packs_lost"].as_array().unwrap().len(), 1, "{v}");
    let damaged = v["snapshots_damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v}");
    let lost: Vec<String> = damaged[0]["lost_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!lost.is_empty());
    assert!(damaged[0]["rewritten_as"].is_null());

    let v = s.json(&["repair", "--rewrite-snapshots"]);
    assert!(!v["snapshots_damaged"][0]["rewritten_as"].is_null(), "{v}");
    s.ok(&["verify", "--read-data"]);
    s.ok(&["repair"]);
    let snaps = s.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert!(snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "repaired"));
    let target = s.path("restored");
    s.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    // Everything but the lost files is there, byte for byte.
    let diffs = compare_dirs(&src, &target.join("src")).unwrap();
    assert!(!diffs.is_empty());
    for d in &diffs {
        assert!(d.ends_with("missing from the restore"), "{d}");
        let path = format!("/src/{}", d.split(':').next().unwrap());
        assert!(
            lost.iter().any(|l| l.trim_end_matches('/') == path),
            "{d} is not among the lost {lost:?}"
        );
    }
}

/// Issue 16.3: a restore that fails (a damaged pack) while other packs are being written
/// leaves no half-restored tree, and the retry into the same target is not refused as "not
/// empty". Before: `.lifeboat-restore-*` left behind in 20–80 % of tries.
#[test]
fn a_failed_restore_leaves_nothing_behind_and_can_be_retried() {
    let s = Scratch::new();
    s.init();
    // Packs of about a hundred small files each: a pack's writer is busy for a while, so
    // other packs are still being written when the damaged one fails.
    let p = s.repo.join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["pack_size"] = (1 << 20).into();
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let src = s.path("src");
    let mut rng = 0x9e3779b97f4a7c15u64;
    for i in 0..3000u64 {
        let d = src.join(if i % 2 == 0 { "a" } else { "b" });
        std::fs::create_dir_all(&d).unwrap();
        let data: Vec<u8> = (0..4000 + i % 5000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        std::fs::write(d.join(format!("f{i}")), data).unwrap();
    }
    s.ok(&["backup", src.to_str().unwrap()]);
    let all = packs(&s.repo);
    assert!(all.len() > 10, "{} packs", all.len());
    // Damage one pack (its hash no longer matches its name).
    let bad = &all[all.len() / 2];
    let mut bytes = std::fs::read(bad).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(bad, bytes).unwrap();
    let target = s.path("restored");
    for attempt in 0..8 {
        let out = s.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(13), "attempt {attempt}: {err}");
        assert!(!err.contains("not empty"), "attempt {attempt}: {err}");
        let left: Vec<_> = std::fs::read_dir(&target)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "attempt {attempt} left {left:?}");
        if attempt % 2 == 1 {
            // An existing empty target too.
            std::fs::create_dir_all(&target).unwrap();
        }
    }
}

/// Issue 16.5, SR-9/10: hooks (and every other child: pg_dump, psql, pg_restore go through
/// the same spawn) never inherit the repository password, S3 keys, database passwords or a
/// URL with a password; what lifeboat gives a child on purpose it still gets.
#[test]
fn children_do_not_inherit_secrets() {
    let ws = Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello\n").unwrap();
    let envfile = ws.path().join("hook-env.txt");
    let checkenv = ws.path().join("check-env.txt");
    let tests = ws.path().join("env-tests.toml");
    std::fs::write(
        &tests,
        format!(
            "[[command]]\nname = \"env\"\nrun = [\"sh\", \"-c\", \"env > {}\"]\n",
            checkenv.display()
        ),
    )
    .unwrap();
    let plan = ws.plan(
        "env",
        &format!(
            "[[jobs]]\nname = \"files\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n[jobs.hooks]\npre = \"env > {}\"\ntimeout = \"10s\"\n[drill]\nenvironment = \"directory\"\nrestore_tests = [\"{}\"]\n",
            data.display(),
            envfile.display(),
            tests.display()
        ),
    );
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
    let env = std::fs::read_to_string(&envfile).unwrap();
    for (k, v) in secrets {
        assert!(!env.contains(v), "{k} reached the hook:\n{env}");
    }
    assert!(env.contains("HARMLESS_SETTING=keep-me"), "{env}");
    assert!(env.contains("LIFEBOAT_JOB=files"), "{env}");
    // A drill's restore-test command is a child too.
    let mut cmd = lifeboat();
    cmd.args(["drill", "--plan"]).arg(&plan);
    for (k, v) in secrets {
        cmd.env(k, v);
    }
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    let env = std::fs::read_to_string(&checkenv).unwrap();
    for (k, v) in secrets {
        assert!(
            !env.contains(v),
            "{k} reached the drill's check command:\n{env}"
        );
    }
}

/// Issue 16.7: a lock left by a dead process of this host does not block an exclusive
/// operation for its lease (restic checks the pid the same way); expired lock files are
/// deleted; `lifeboat unlock` removes stale locks only, `--remove-all` every lock.
#[test]
fn stale_locks_of_dead_processes_are_ignored_and_removed() {
    use lifeboat::repo::lock::LockFile;
    use lifeboat::repo::ObjectKind;
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 20, 5, 10_000);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = lifeboat::sys::host::hostname();
    let lock = |pid: u32, exclusive: bool, expires_in: i64| LockFile {
        instance: "test".into(),
        host: host.clone(),
        pid,
        purpose: "test".into(),
        exclusive,
        created: chrono::Utc::now(),
        expires: chrono::Utc::now() + chrono::Duration::seconds(expires_in),
    };
    let save = |l: LockFile| {
        rt().block_on(async {
            let repo = open(&s).await;
            repo.save_json(ObjectKind::Lock, &l).await.unwrap()
        })
    };
    let lock_files = || list_files(&s.repo.join("locks")).len();

    // A dead process's exclusive lock, and an expired one: neither blocks, both are removed.
    save(lock(dead, true, 600));
    save(lock(std::process::id(), false, -60));
    assert_eq!(lock_files(), 2);
    s.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(lock_files(), 0);

    // A live exclusive lock still blocks (exit 11); unlock keeps it, --remove-all removes it.
    save(lock(std::process::id(), true, 600));
    save(lock(dead, false, 600));
    let out = s.ok(&["unlock"]);
    assert!(out.contains("removed") && out.contains("kept"), "{out}");
    assert_eq!(lock_files(), 1);
    s.expect(&["backup", src.to_str().unwrap()], 11);
    let o = s.run(&["unlock", "--remove-all"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("removed a live exclusive lock"),
        "{}",
        stderr(&o)
    );
    assert_eq!(lock_files(), 0);
    s.ok(&["backup", src.to_str().unwrap()]);
}

/// Issue 16.8: a local repository's files are 0600 and its directories 0700, whatever the
/// umask (key slots readable by everyone can be attacked offline).
#[test]
fn local_repository_files_are_private() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 21, 5, 10_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let mut stack = vec![s.repo.clone()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                assert_eq!(
                    m.permissions().mode() & 0o777,
                    0o600,
                    "{}",
                    e.path().display()
                );
                seen += 1;
            }
        }
    }
    assert!(seen > 3);
}

/// Issue 16.9: `lifeboat ls latest | head` — stdout closed early — ends quietly instead of
/// panicking with exit 101.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 22, 50, 1_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let mut c = s.cmd();
    c.args(["ls", "latest"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take()); // the reader went away before the first line
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 16.10, SR-17: config values out of range are refused on open, naming the key and
/// the range (before: `chunker.avg_size = 0` panicked with an index out of bounds).
#[test]
fn config_values_out_of_range_are_refused_on_open() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 23, 5, 10_000);
    let p = s.repo.join("config");
    let orig = std::fs::read(&p).unwrap();
    for (key, value, name) in [
        ("/chunker/avg_size", 0, "chunker.avg_size = 0"),
        ("/chunker/min_size", 1, "chunker.min_size = 1"),
        ("/pack_size", 100, "pack_size = 100"),
        ("/compression_level", 99, "compression_level = 99"),
    ] {
        let mut v: serde_json::Value = serde_json::from_slice(&orig).unwrap();
        *v.pointer_mut(key).unwrap() = value.into();
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        let o = s.run(&["backup", src.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(13), "{name}: {err}");
        assert!(err.contains(name) && err.contains("out of range"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::write(&p, orig).unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
}

/// Issue 16.6, T01: temp files of killed writes are swept by backup and verify once their
/// writer is gone (before: `sweep_temp` was called only by its own test).
#[test]
fn temp_files_of_killed_writes_are_swept() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 24, 5, 10_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let old = filetime::FileTime::from_system_time(
        std::time::SystemTime::now() - std::time::Duration::from_secs(900),
    );
    let leave = |dir: &str, n: u32| {
        let d = s.repo.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(format!(".tmp-{dead}-{n:016x}"));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        filetime::set_file_mtime(&p, old).unwrap();
        p
    };
    let a = leave("data/00", 1);
    let b = leave("index", 2);
    s.ok(&["backup", src.to_str().unwrap()]);
    assert!(!a.exists() && !b.exists());
    let c = leave("snapshots", 3);
    s.ok(&["verify"]);
    assert!(!c.exists());
}

/// Issue 16.11: messages say what is wrong where it is.
#[test]
fn messages_name_the_real_problem() {
    let s = Scratch::new();
    s.init();
    // A damaged config id is not a wrong password.
    let p = s.repo.join("config");
    let orig = std::fs::read(&p).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&orig).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if id.starts_with('0') { "1" } else { "0" },
        &id[1..]
    );
    v["id"] = flipped.into();
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let o = s.run(&["snapshots"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(13), "{err}");
    assert!(
        err.contains("config") && !err.contains("wrong password"),
        "{err}"
    );
    std::fs::write(&p, orig).unwrap();

    // A repository path that is a file.
    let file = s.path("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let o = s.run(&["snapshots", "--repo", file.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(err.contains("is a file, not a directory"), "{err}");

    // Plan type errors name the key; cron ranges are stated correctly.
    let ws = Workspace::new();
    let plan = ws.plan("bad", "");
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("rpo = \"1day\"", "rpo = -5");
    std::fs::write(&plan, text).unwrap();
    let o = run(lifeboat().args(["plan", "check", "--offline"]).arg(&plan));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("objectives.rpo"), "{all}");
    let data = ws.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let plan = ws.plan(
        "cron",
        &format!(
            "[[jobs]]\nname = \"files\"\nschedule = \"60 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            data.display()
        ),
    );
    let o = run(lifeboat().args(["plan", "check", "--offline"]).arg(&plan));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("minute 60 is out of range (0–59)"), "{all}");
}

/// Issue 16.11: a full restore target is named as such, not as the repository's file system.
#[test]
fn a_full_restore_target_is_named_in_the_hint() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 25, 40, 300_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let mnt = s.path("small");
    let _fs = Tmpfs::mount(&mnt, "size=1m");
    let target = mnt.join("t");
    let o = s.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(15), "{err}");
    assert!(
        err.contains("hint: free space on the file system that holds"),
        "{err}"
    );
    assert!(err.contains(mnt.to_str().unwrap()), "{err}");
    assert!(!err.contains("nothing was committed"), "{err}");
}

/// Issue 16.12: zero runs inside chunks come back as holes too (before: only all-zero
/// max-size chunks did; a 31 MiB file with 2 MiB of data took 15 MiB after restore).
#[test]
fn zero_runs_inside_chunks_restore_as_holes() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let img = src.join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    let block: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i * 7919 % 251) as u8 + 1)
        .collect();
    for mib in 0..31u64 {
        f.write_all_at(&block, mib << 20).unwrap();
    }
    f.set_len(31 << 20).unwrap();
    drop(f);
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(
        allocated(&img) < 4 << 20,
        "the test file system keeps holes"
    );
    s.ok(&["backup", src.to_str().unwrap()]);
    let target = s.path("restored");
    s.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = target.join("src/disk.img");
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&img).unwrap()
    );
    assert!(
        allocated(&restored) < 6 << 20,
        "restored with {} bytes allocated for 2 MiB of data in 31 MiB",
        allocated(&restored)
    );
}

/// Issue 16.4: names and symlink targets that are not UTF-8 are stored as bytes and restored
/// exactly (before: files and directories skipped with exit 3, targets rewritten with U+FFFD).
#[test]
fn names_and_symlink_targets_that_are_not_utf8_restore_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    let latin1 = src.join(OsStr::from_bytes(b"caf\xe9 d\xe9j\xe0"));
    std::fs::create_dir_all(latin1.join("sub")).unwrap();
    std::fs::write(
        latin1.join("sub/inside.txt"),
        "a subtree under a Latin-1 name\n",
    )
    .unwrap();
    std::fs::write(src.join(OsStr::from_bytes(b"r\xe9sum\xe9.txt")), "x\n").unwrap();
    // Two names with the same readable rendering stay two files.
    std::fs::write(src.join(OsStr::from_bytes(b"a\xfe")), "fe\n").unwrap();
    std::fs::write(src.join(OsStr::from_bytes(b"a\xff")), "ff\n").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"../t\xe4rget/\xff"), src.join("link")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"r\xe9sum\xe9.txt"),
        src.join(OsStr::from_bytes(b"l\xefnk")),
    )
    .unwrap();

    let out = s.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(out["partial"], false, "{out}");
    let target = s.path("restored");
    s.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let diffs = compare_dirs(&src, &target.join("src")).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert_eq!(
        std::fs::read_link(target.join("src/link"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"../t\xe4rget/\xff"
    );
    // A second backup finds every file unchanged (the parent lookup uses the bytes).
    let out = s.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(out["summary"]["files_new"], 0, "{out}");
    assert_eq!(out["summary"]["files_changed"], 0, "{out}");
    s.ok(&["verify", "--read-data"]);
}

/// A store whose listing of `data/` leaves out one key (T10: a paginated LIST cut short).
#[derive(Debug)]
struct Hiding {
    inner: lifeboat::store::DynStore,
    hidden: String,
}

#[async_trait::async_trait]
impl lifeboat::store::Store for Hiding {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn backend(&self) -> lifeboat::store::Backend {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> lifeboat::store::StoreResult<bytes::Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> lifeboat::store::StoreResult<bytes::Bytes> {
        self.inner.get_range(key, offset, len).await
    }
    async fn put(&self, key: &str, data: bytes::Bytes) -> lifeboat::store::StoreResult<()> {
        self.inner.put(key, data).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> lifeboat::store::StoreResult<Vec<lifeboat::store::ObjectInfo>> {
        let mut l = self.inner.list(prefix).await?;
        l.retain(|i| i.key != self.hidden);
        Ok(l)
    }
    async fn delete(&self, key: &str) -> lifeboat::store::StoreResult<()> {
        self.inner.delete(key).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> lifeboat::store::StoreResult<Option<lifeboat::store::ObjectInfo>> {
        self.inner.head(key).await
    }
    async fn probe(&self) -> lifeboat::store::health::HealthReport {
        self.inner.probe().await
    }
}

/// Issue 16.1 with T10: a listing that leaves out a pack that exists does not make healing
/// drop it from the index, nor fail the commit check, and repair refuses to rebuild from it.
#[test]
fn an_incomplete_listing_is_not_taken_for_a_lost_pack() {
    let s = Scratch::new();
    s.init();
    small_packs(&s);
    let src = s.path("src");
    make_tree(&src, 26, 20, 200_000);
    s.ok(&["backup", src.to_str().unwrap()]);
    let pack = data_only_pack(&s);
    let key = pack
        .strip_prefix(&s.repo)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let index_files = || list_files(&s.repo.join("index"));
    let before = index_files();
    rt().block_on(async {
        let local: lifeboat::store::DynStore =
            Arc::new(lifeboat::store::local::LocalStore::new(&s.repo));
        let store: lifeboat::store::DynStore = Arc::new(Hiding {
            inner: local,
            hidden: key.clone(),
        });
        let repo = lifeboat::repo::Repository::open(store, PASSWORD.as_bytes())
            .await
            .unwrap();
        let (index, rec) = repo.load_index_reconciled().await.unwrap();
        assert!(rec.lost.is_empty(), "{:?}", rec.lost);
        assert!(rec.rewritten.is_empty());
        let all: std::collections::HashSet<_> = index.blob_ids().copied().collect();
        repo.check_packs_present(&index, &all, &[]).await.unwrap();
        let e = repo
            .rebuild_index(&indicatif::ProgressBar::hidden())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("incomplete listing"), "{e}");
    });
    assert_eq!(index_files(), before, "nothing was rewritten");
    s.ok(&["verify", "--read-data"]);
}
