//! `forget` and `prune` end to end: the dry-run table with reasons and `--json`, the refusal
//! to empty a job, lifeboat's drill rule, prune freeing space while every kept snapshot
//! restores byte-identical, a backup made between prune's two phases surviving, and a
//! `kill -9` loop over prune (every state it leaves verifies and restores).

use crate::support;

use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::*;

fn write_random(path: &Path, seed: u64, len: usize) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    r.fill(&mut data[..]);
    std::fs::write(path, data).unwrap();
}

fn snapshot_ids(s: &Scratch) -> Vec<String> {
    let v = s.json(&["snapshots"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_same_tree(a: &Path, b: &Path) {
    let fa = list_files(a);
    assert_eq!(fa, list_files(b), "file lists differ");
    for f in fa {
        let (x, y) = (a.join(&f), b.join(&f));
        if std::fs::symlink_metadata(&x).unwrap().is_file() {
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{} differs",
                f.display()
            );
        }
    }
}

fn verify_clean(s: &Scratch) {
    let v = s.json(&["verify", "--read-data"]);
    assert_eq!(v["errors"], 0, "{v:#}");
}

#[test]
fn forget_dry_run_shows_reasons_json_and_refuses_to_empty_a_group() {
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..5 {
        write_random(&data.join("f"), i, 10_000);
        let tag = if i == 1 { "golden" } else { "nightly" };
        s.ok(&["backup", data.to_str().unwrap(), "--tag", tag]);
    }
    let ids = snapshot_ids(&s); // oldest first
    assert_eq!(ids.len(), 5);

    let table = s.ok(&[
        "forget",
        "--keep-last",
        "2",
        "--keep-tag",
        "golden",
        "--dry-run",
    ]);
    assert!(table.contains("would remove 2"), "{table}");
    assert!(table.contains("tag golden"), "{table}");
    assert!(table.matches(" last").count() >= 2, "{table}");
    assert_eq!(snapshot_ids(&s).len(), 5, "a dry run removes nothing");

    let j = s.json(&[
        "forget",
        "--keep-last",
        "2",
        "--keep-tag",
        "golden",
        "--dry-run",
    ]);
    let rows = j["regions"][0]["groups"][0]["snapshots"]
        .as_array()
        .unwrap();
    assert_eq!(rows.len(), 5);
    let keep: Vec<bool> = rows.iter().map(|r| r["keep"].as_bool().unwrap()).collect();
    assert_eq!(keep, vec![true, true, false, true, false], "{j:#}");
    assert_eq!(rows[3]["reasons"][0]["rule"], "tag", "{j:#}");
    assert_eq!(rows[3]["id"], ids[1]);

    // A rule that keeps none of a group's snapshots is refused, and nothing goes.
    let err = s.run(&["forget", "--confirm", "--keep-tag", "no-such-tag"]);
    assert_eq!(err.status.code(), Some(1), "{}", stderr(&err));
    assert!(
        stderr(&err).contains("refusing to remove every snapshot"),
        "{}",
        stderr(&err)
    );
    // No rule at all is refused too.
    s.expect(&["forget"], 2);
    assert_eq!(snapshot_ids(&s).len(), 5);

    s.ok(&[
        "forget",
        "--confirm",
        "--keep-last",
        "2",
        "--keep-tag",
        "golden",
    ]);
    let left = snapshot_ids(&s);
    assert_eq!(left, vec![ids[1].clone(), ids[3].clone(), ids[4].clone()]);
}

#[test]
fn forget_prune_frees_space_and_kept_snapshots_restore_identical() {
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    // Each snapshot replaces two 3 MB files and keeps a shared one, so old data goes
    // unreferenced while the shared blobs stay.
    write_random(&data.join("shared"), 999, 3_000_000);
    for i in 0..6u64 {
        write_random(&data.join("a"), i * 2, 3_000_000);
        write_random(&data.join("b"), i * 2 + 1, 3_000_000);
        s.ok(&["backup", data.to_str().unwrap()]);
    }
    let before = dir_bytes(&s.repo.join("data"));
    let j = s.json(&[
        "forget",
        "--confirm",
        "--keep-last",
        "2",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    let pr = &j["regions"][0]["prune"];
    assert!(
        pr["sweep"]["freed_bytes"].as_u64().unwrap() > 10_000_000,
        "{j:#}"
    );
    let after = dir_bytes(&s.repo.join("data"));
    assert!(
        after < before / 2,
        "repository data should shrink: {before} -> {after}"
    );
    assert!(s
        .repo
        .join("prune")
        .read_dir()
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));
    verify_clean(&s);
    let out = s.path("restored");
    s.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(&data, &out.join("data"));

    // Nothing left to do: a second prune deletes nothing and repacks nothing.
    let j = s.json(&["prune", "--confirm", "--max-unused", "0%"]);
    assert_eq!(
        j["regions"][0]["sweep"]["deleted_packs"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{j:#}"
    );
    assert_eq!(j["regions"][0]["mark"]["repacked_packs"], 0, "{j:#}");
}

/// Every backup that changes a little leaves a small tree pack and a small data pack behind.
/// Prune merges them by kind once there are ten of a kind (restic's rule), leaves fewer
/// alone unless `--repack-small`, converges (a second prune copies nothing), and every
/// snapshot still restores byte-identical.
#[test]
fn prune_merges_small_packs_by_kind_and_every_snapshot_still_restores() {
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("large"), 1, 3_000_000);
    let packs = || list_files(&s.repo.join("data")).len();
    // The first backup: one data pack of 3 MB (not small) and a tree pack; ten more, each
    // changing one small file: a small data pack and a small tree pack each.
    let mut copies = Vec::new();
    for i in 0..11u64 {
        write_random(&data.join("small"), 100 + i, 10_000);
        s.ok(&["backup", data.to_str().unwrap()]);
        let copy = s.path(&format!("copy-{i}"));
        std::fs::create_dir_all(&copy).unwrap();
        for f in ["large", "small"] {
            std::fs::copy(data.join(f), copy.join(f)).unwrap();
        }
        copies.push(copy);
    }
    assert_eq!(packs(), 22, "{:?}", list_files(&s.repo.join("data")));

    let dry = s.json(&["prune"]);
    let m = &dry["regions"][0]["mark"];
    assert_eq!(m["small_packs"], 21, "{dry:#}");
    assert_eq!(packs(), 22, "a dry run changes nothing");

    let j = s.json(&["prune", "--confirm"]);
    let m = &j["regions"][0]["mark"];
    assert_eq!(m["small_packs"], 21, "{j:#}");
    assert_eq!(m["unused_packs"], 0, "{j:#}");
    // One pack of the trees and one of the small files' data: kinds are not mixed.
    assert_eq!(m["new_packs"], 2, "{j:#}");
    assert_eq!(j["regions"][0]["sweep"]["deleted_packs"], 21, "{j:#}");
    assert_eq!(packs(), 3);
    verify_clean(&s);
    let ids = snapshot_ids(&s);
    assert_eq!(ids.len(), 11);
    for (id, copy) in ids.iter().zip(&copies) {
        let out = s.path(&format!("restored-{id}"));
        s.ok(&["restore", id, "--target", out.to_str().unwrap()]);
        assert_same_tree(copy, &out.join("data"));
    }

    // Converged: nothing more to merge.
    let j = s.json(&["prune", "--confirm"]);
    assert_eq!(j["regions"][0]["mark"]["repacked_packs"], 0, "{j:#}");

    // Three more backups: six small packs, fewer than ten of a kind — left by default.
    // Under --repack-small every pack under 4/5 of the pack size (8 MiB) is small, the
    // first backup's 3 MB one too: all data fits into one pack, all trees into another.
    for i in 0..3u64 {
        write_random(&data.join("small"), 200 + i, 10_000);
        s.ok(&["backup", data.to_str().unwrap()]);
    }
    assert_eq!(packs(), 9);
    let j = s.json(&["prune", "--confirm"]);
    assert_eq!(j["regions"][0]["mark"]["repacked_packs"], 0, "{j:#}");
    let j = s.json(&["prune", "--confirm", "--repack-small"]);
    assert_eq!(j["regions"][0]["mark"]["small_packs"], 9, "{j:#}");
    assert_eq!(j["regions"][0]["mark"]["new_packs"], 2, "{j:#}");
    assert_eq!(packs(), 2);
    verify_clean(&s);
    let out = s.path("restored-latest");
    s.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(&data, &out.join("data"));
}

/// A backup made after phase 1 condemned a pack, deduplicating against it, must keep that
/// pack alive: phase 2 walks the snapshots committed since the plan and rescues it.
#[test]
fn backup_between_prune_phases_loses_nothing() {
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("old"), 1, 4_000_000);
    s.ok(&["backup", data.to_str().unwrap()]);
    std::fs::remove_file(data.join("old")).unwrap();
    write_random(&data.join("new"), 2, 4_000_000);
    s.ok(&["backup", data.to_str().unwrap()]);
    s.ok(&["forget", "--confirm", "--keep-last", "1"]);

    // Phase 1 condemns the packs of `old`; with a grace period phase 2 leaves them for later.
    let j = s.json(&["prune", "--confirm", "--grace", "1h", "--max-unused", "0%"]);
    let r = &j["regions"][0];
    assert!(r["mark"]["condemned_packs"].as_u64().unwrap() >= 1, "{j:#}");
    assert_eq!(r["sweep"]["plans_waiting"], 1, "{j:#}");
    assert_eq!(r["sweep"]["deleted_packs"], 0, "{j:#}");

    // Between the phases: `old` comes back; the backup reuses its blobs from the condemned pack.
    write_random(&data.join("old"), 1, 4_000_000);
    let b = s.json(&["backup", data.to_str().unwrap()]);
    assert!(
        b["summary"]["blobs_added"].as_u64().unwrap() <= 2,
        "old's blobs are deduplicated: {b:#}"
    );

    // (--max-unused 100%: no new repack of that pack, so only the rescue can save it.)
    let j = s.json(&[
        "prune",
        "--confirm",
        "--grace",
        "0s",
        "--max-unused",
        "100%",
    ]);
    let sw = &j["regions"][0]["sweep"];
    assert!(sw["rescued_packs"].as_u64().unwrap() >= 1, "{j:#}");
    verify_clean(&s);
    let out = s.path("restored");
    s.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(&data, &out.join("data"));
}

/// The newest snapshot whose drill passed is kept whatever the rules say.
#[test]
fn the_newest_drilled_snapshot_is_kept() {
    let ws = Workspace::new();
    let data = ws.path().join("site");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("index.html"), "v0").unwrap();
    let plan = ws.plan(
        "files",
        &format!(
            "[[jobs]]\nname = \"site\"\nschedule = \"0 * * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[retention]\nkeep_last = 1\n\n[drill]\nenvironment = \"temp-dir\"\n",
            data.display()
        ),
    );
    let state = ws.path().join("state");
    let lb = |args: &[&str]| {
        let mut c = lifeboat();
        c.args(args)
            .arg("--plan")
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", &state);
        run(&mut c)
    };
    assert!(lb(&["backup"]).status.success());
    let tmp = drill_tmp();
    let mut c = lifeboat();
    c.args(["drill", "--plan"])
        .arg(&plan)
        .env("TMPDIR", tmp.path())
        .env("LIFEBOAT_STATE_DIR", &state);
    assert_eq!(run(&mut c).status.code(), Some(0), "the drill passes");
    let drilled = ws.snapshots(&plan)[0]["id"].as_str().unwrap().to_string();
    for i in 1..4 {
        std::fs::write(data.join("index.html"), format!("v{i}")).unwrap();
        assert!(lb(&["backup"]).status.success());
    }
    let o = lb(&["forget", "--confirm", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = j["regions"][0]["groups"][0]["snapshots"]
        .as_array()
        .unwrap();
    let kept: Vec<&serde_json::Value> = rows.iter().filter(|r| r["keep"] == true).collect();
    assert_eq!(kept.len(), 2, "{j:#}");
    assert_eq!(kept[1]["id"], drilled.as_str(), "{j:#}");
    assert_eq!(kept[1]["reasons"][0]["rule"], "drill_passed", "{j:#}");
    let left: Vec<String> = ws
        .snapshots(&plan)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&drilled));
    // The catalog no longer lists the forgotten snapshots.
    let mut c = lifeboat();
    c.args(["status", "--json"])
        .env("LIFEBOAT_STATE_DIR", &state);
    let o = run(&mut c);
    assert!(o.status.success());
}

/// `kill -9` at many moments of a prune: each time, what is left verifies (every pack the
/// index lists is there and reads back, every snapshot's blobs are indexed), the next prune
/// finishes the job, and at the end every kept snapshot restores byte-identical.
#[test]
fn kill_9_loop_over_prune_leaves_a_valid_repository() {
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("shared"), 7, 2_000_000);
    let mut gen = 0u64;
    let churn = |s: &Scratch, gen: &mut u64| {
        for _ in 0..3 {
            *gen += 1;
            write_random(&data.join("a"), *gen * 3, 1_500_000);
            write_random(&data.join("b"), *gen * 3 + 1, 1_500_000);
            s.ok(&["backup", data.to_str().unwrap()]);
        }
        s.ok(&["forget", "--confirm", "--keep-last", "2"]);
    };
    churn(&s, &mut gen);
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut kills = 0;
    let mut completed = 0;
    let mut round = 0;
    while kills < 24 {
        round += 1;
        assert!(round < 200, "too many rounds");
        let mut child: std::process::Child = s
            .cmd()
            .args(["prune", "--confirm", "--max-unused", "0%", "--quiet"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.gen_range(0..120u64);
        std::thread::sleep(Duration::from_millis(delay));
        let killed = match child.try_wait().unwrap() {
            Some(st) => {
                assert!(st.success(), "prune failed on its own: {st:?}");
                completed += 1;
                false
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                true
            }
        };
        if killed {
            // The killed process's lock would block readers for its lease; `prune` and
            // `forget` remove it themselves (dead pid on this host), `verify` does not.
            for l in std::fs::read_dir(s.repo.join("locks")).unwrap().flatten() {
                std::fs::remove_file(l.path()).unwrap();
            }
        }
        verify_clean(&s);
        if !killed || round % 4 == 0 {
            // Finish whatever was interrupted, then make new garbage.
            s.ok(&["prune", "--confirm", "--max-unused", "0%"]);
            verify_clean(&s);
            churn(&s, &mut gen);
        }
    }
    eprintln!("{kills} kills, {completed} prunes completed before the kill");
    s.ok(&["prune", "--confirm", "--max-unused", "0%"]);
    verify_clean(&s);
    // Every kept snapshot restores; the newest is the data as it is now.
    let ids = snapshot_ids(&s);
    assert_eq!(ids.len(), 2);
    for (i, id) in ids.iter().enumerate() {
        let out = s.path(&format!("restored-{i}"));
        s.ok(&["restore", id, "--target", out.to_str().unwrap()]);
        assert!(out.join("data/shared").exists());
    }
    assert_same_tree(&data, &s.path("restored-1").join("data"));
}

/// Every region gets the same rules; a region that is down is named (exit 3) and handled on
/// the next run; the catalog then agrees with both repositories (`catalog rebuild` finds
/// nothing to add or drop). Two local directories stand for the two regions here; the same
/// code path serves S3 regions.
#[test]
fn every_region_is_pruned_and_a_down_region_catches_up_on_the_next_run() {
    let ws = Workspace::new();
    let data = ws.path().join("site");
    std::fs::create_dir_all(&data).unwrap();
    let plan = ws.path().join("two.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"two\"\n[repository]\npassword_file = \"repo.pass\"\n[objectives]\nrpo = \"1day\"\nrto = \"30m\"\n[[destinations]]\ntype = \"local\"\nname = \"east\"\npath = \"ra\"\n[[destinations]]\ntype = \"local\"\nname = \"west\"\npath = \"rb\"\n\n[[jobs]]\nname = \"site\"\nschedule = \"0 * * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[retention]\nkeep_last = 1\n",
            data.display()
        ),
    )
    .unwrap();
    let state = ws.path().join("state");
    let lb = |args: &[&str]| {
        let mut c = lifeboat();
        c.args(args)
            .arg("--plan")
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", &state);
        run(&mut c)
    };
    let o = lb(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    assert!(o.status.success());
    for i in 0..3u64 {
        write_random(&data.join("f"), i, 2_000_000);
        assert!(lb(&["backup"]).status.success());
    }
    let (ra, rb) = (ws.path().join("ra"), ws.path().join("rb"));
    let snaps = |r: &Path| r.join("snapshots").read_dir().unwrap().count();
    assert_eq!((snaps(&ra), snaps(&rb)), (3, 3));
    let size_b = dir_bytes(&rb.join("data"));

    std::fs::rename(&rb, ws.path().join("rb-away")).unwrap();
    let o = lb(&[
        "forget",
        "--confirm",
        "--prune",
        "--max-unused",
        "0%",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let regions = j["regions"].as_array().unwrap();
    assert_eq!(regions[0]["name"], "east");
    assert_eq!(regions[0]["removed"], 2, "{j:#}");
    assert!(
        regions[0]["prune"]["sweep"]["deleted_packs"]
            .as_u64()
            .unwrap()
            >= 1,
        "{j:#}"
    );
    assert_eq!(regions[1]["name"], "west");
    assert!(
        regions[1]["error"].as_str().unwrap().contains("rb"),
        "{j:#}"
    );
    assert!(stderr(&o).contains("region west"), "{}", stderr(&o));
    assert_eq!(snaps(&ra), 1);

    std::fs::rename(ws.path().join("rb-away"), &rb).unwrap();
    let o = lb(&[
        "forget",
        "--confirm",
        "--prune",
        "--max-unused",
        "0%",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["regions"][0]["removed"], 0, "{j:#}");
    assert_eq!(j["regions"][1]["removed"], 2, "{j:#}");
    assert_eq!(snaps(&rb), 1);
    assert!(dir_bytes(&rb.join("data")) < size_b / 2);
    // The verification ledger lists exactly the packs each region still has.
    let o = lb(&["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // (A plan's first local destination is region `local` in the catalog.)
    for (name, dir) in [("local", &ra), ("west", &rb)] {
        let c = st["coverage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["region"] == name)
            .unwrap_or_else(|| panic!("no coverage row for {name}: {st:#}"));
        assert_eq!(
            c["packs"].as_u64().unwrap() as usize,
            list_files(&dir.join("data")).len(),
            "{name}: {st:#}"
        );
    }
    for region in ["east", "west"] {
        let o = lb(&["verify", "--read-data", "--region", region, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    }
    // The catalog dropped the forgotten snapshots in both regions: a rebuild adds nothing,
    // finds no divergence.
    let o = lb(&["catalog", "rebuild", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = j["regions"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{j:#}");
    for r in rows {
        let rep = &r["report"];
        assert_eq!(rep["added"], 0, "{j:#}");
        assert_eq!(rep["snapshots_in_repository"], 1, "{j:#}");
        assert_eq!(rep["findings"].as_array().unwrap().len(), 0, "{j:#}");
    }
}

/// `run-due` applies the plan's `[retention]` after each successful backup of the job (and
/// prunes when the plan says `prune = true`).
#[test]
fn run_due_applies_retention_after_a_backup() {
    let ws = Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let plan = ws.plan(
        "sched",
        &format!("[[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[retention]\nkeep_last = 1\nprune = true\n", data.display()),
    );
    // Two backups by hand, recorded in another catalog, so run-due still sees the job as
    // never run.
    for i in 0..2u64 {
        write_random(&data.join("f"), i, 1_000_000);
        let o = run(lifeboat()
            .args(["backup", "--plan"])
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", ws.path().join("other-state")));
        assert!(o.status.success());
    }
    assert_eq!(ws.snapshots(&plan).len(), 2);
    let before = dir_bytes(&ws.path().join("repo/data"));
    write_random(&data.join("f"), 9, 1_000_000);
    let o = run(lifeboat()
        .args(["run-due", "--json", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert!(o.status.success(), "{}", stderr(&o));
    let snaps = ws.snapshots(&plan);
    assert_eq!(snaps.len(), 1, "keep_last = 1 after the scheduled backup");
    assert!(snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "scheduled"));
    // prune = true: the two old files' data is gone.
    assert!(dir_bytes(&ws.path().join("repo/data")) < before);
    // Its own line in run-due's report, right after the backup, saying why it ran.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let due = v["due"].as_array().unwrap();
    let kinds: Vec<&str> = due.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["backup", "retention"], "{v:#}");
    assert_eq!(due[1]["job"], "files", "{v:#}");
    assert_eq!(due[1]["exit_code"], 0, "{v:#}");
    assert!(
        due[1]["reason"]
            .as_str()
            .unwrap()
            .contains("after the backup of job files"),
        "{v:#}"
    );
}

/// `[retention] schedule`: the rules run for every job on their own cron schedule, as a
/// task of their own; without one, a job's retention follows only a *successful* backup.
#[test]
fn retention_on_its_own_schedule_and_never_after_a_failed_backup() {
    let ws = Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let plan = ws.plan(
        "own",
        &format!("[[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[retention]\nkeep_last = 1\nschedule = \"0 4 * * *\"\n", data.display()),
    );
    for i in 0..3u64 {
        write_random(&data.join("f"), i, 100_000);
        let o = run(lifeboat()
            .args(["backup", "--plan"])
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", ws.path().join("other-state")));
        assert!(o.status.success());
    }
    assert_eq!(ws.snapshots(&plan).len(), 3);
    let run_due = || {
        run(lifeboat()
            .args(["run-due", "--json", "--plan"])
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", ws.path().join("state")))
    };
    let o = run_due();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = v["due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    // The backup (never ran on this host's catalog), then the scheduled retention of all jobs.
    assert_eq!(kinds, ["backup", "retention"], "{v:#}");
    assert_eq!(v["due"][1]["jobs"], "all", "{v:#}");
    assert_eq!(
        ws.snapshots(&plan).len(),
        1,
        "keep_last = 1 on the retention's schedule"
    );
    assert!(v["next"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["task"] == "own/retention"));
    // Not due again in the same day.
    let o = run_due();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["due"].as_array().unwrap().is_empty(), "{v:#}");

    // Without a schedule of its own, a failed backup is not followed by its retention.
    let plan = ws.plan(
        "after",
        &format!("[[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n[jobs.hooks]\npre = \"exit 3\"\n\n[retention]\nkeep_last = 1\n", data.display()),
    );
    let o = run(lifeboat()
        .args(["run-due", "--json", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let due = v["due"].as_array().unwrap();
    assert_eq!(due.len(), 2, "{v:#}");
    assert_eq!(due[1]["kind"], "retention");
    assert_eq!(due[1]["ran"], false, "{v:#}");
    assert!(
        due[1]["skipped"]
            .as_str()
            .unwrap()
            .contains("did not succeed"),
        "{v:#}"
    );
}

/// Prune run again and again while a large backup is writing: phase 1 runs beside it (and
/// may condemn the packs the backup already indexed at a checkpoint but no snapshot names
/// yet), phase 2 waits for the backup's lock (exit 11, the plan stays). Once the backup has
/// committed, the next prune's rescue check keeps everything its snapshot needs.
#[test]
fn prune_beside_a_running_backup_loses_nothing() {
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("small"), 1, 100_000);
    s.ok(&["backup", data.to_str().unwrap()]);
    // Garbage for prune to find, so it has work to do while the backup runs.
    write_random(&data.join("gone"), 2, 3_000_000);
    s.ok(&["backup", data.to_str().unwrap()]);
    std::fs::remove_file(data.join("gone")).unwrap();
    s.ok(&["backup", data.to_str().unwrap()]);
    s.ok(&["forget", "--confirm", "--keep-last", "1"]);
    write_random(&data.join("big"), 3, 120_000_000);

    let mut backup = s
        .cmd()
        .args(["backup", "--quiet", data.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Start pruning once the backup holds its lock (a prune's exclusive phase taken before
    // the backup locks would make the backup, not the prune, wait).
    let locks = s.repo.join("locks");
    while locks.read_dir().unwrap().next().is_none() {
        assert!(backup.try_wait().unwrap().is_none(), "backup ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut deferred, mut during) = (0, 0);
    while backup.try_wait().unwrap().is_none() {
        let o = s.run(&["prune", "--confirm", "--max-unused", "0%", "--json"]);
        let code = o.status.code();
        assert!(
            matches!(code, Some(0) | Some(11)),
            "prune: {code:?}\n{}",
            stderr(&o)
        );
        if code == Some(11) {
            deferred += 1;
        }
        during += 1;
    }
    assert!(
        backup.wait().unwrap().success(),
        "the backup beside prune succeeds"
    );
    eprintln!("{during} prunes during the backup, {deferred} deferred phase 2");
    assert!(during >= 1);
    s.ok(&["prune", "--confirm", "--max-unused", "0%"]);
    verify_clean(&s);
    let out = s.path("restored");
    s.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(&data, &out.join("data"));
}

/// Object Lock against moto (the one S3 here that enforces locks; see support/moto.rs), with
/// the server's clock and lifeboat's lock clock moved together by hand:
/// - `init` and `healthcheck` refuse a bucket without Object Lock when the destination asks
///   for it, naming the fix;
/// - a pack that only a forgotten snapshot needed and that is still locked is not deleted:
///   prune skips it when the lock record knows the date, and when the record is lost the
///   store's refusal is counted as "still locked, kept, will retry" (output and JSON);
/// - the retention pass extends what the kept snapshot still needs, so after the original
///   lock date of its first packs has passed at the server, an attacker deleting every
///   version of everything deletes only what no kept snapshot needs (which proves the
///   server's clock really passed those dates), and the kept snapshot restores
///   byte-identical; prune then really frees the lapsed pack (its versions are gone).
#[test]
fn object_lock_on_moto_keeps_locked_packs_and_extends_what_kept_snapshots_need() {
    use chrono::{Duration as Days, SubsecRound, Utc};
    use support::moto::Moto;
    use support::regions::{lifeboat, run};

    let moto = Moto::start();
    moto.create_bucket("plain", false);
    moto.create_bucket("locked", true);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let lock = "&object_lock_mode=compliance&object_lock_days=2";
    let t0 = Utc::now().trunc_subsecs(0);
    let at = |t: chrono::DateTime<Utc>, args: &[&str], url: &str| {
        moto.set_clock(t);
        let mut c = lifeboat(w);
        c.env("LIFEBOAT_LOCK_CLOCK", t.to_rfc3339())
            .env("LIFEBOAT_STATE_DIR", w.join("state"))
            .arg("--repo")
            .arg(url)
            .args(args);
        run(c)
    };

    // A destination asking for Object Lock on a bucket without it: refused, with the fix.
    let plain = moto.url("plain", "repo", lock);
    let r = at(t0, &FAST_INIT, &plain);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.all().contains("does not have Object Lock enabled")
            && r.all().contains("--object-lock-enabled-for-bucket"),
        "{r:?}"
    );
    let r = at(t0, &["healthcheck", "--json"], &plain);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("object_lock_missing"), "{r:?}");

    let url = moto.url("locked", "repo", lock);
    let r = at(t0, &FAST_INIT, &url);
    assert_eq!(r.code, 0, "{r:?}");
    let r = at(t0, &["healthcheck"], &url);
    assert_eq!(r.code, 0, "{r:?}");

    // S1 at t0: a (kept on) and b (only S1 has it). S2 an hour later: a and c.
    let data = w.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // 8 MiB packs: S1 writes a's first 8 MiB (its first pack, which S2 still needs whole),
    // a's tail with the start of b, and a pack no later snapshot needs (b's tail, S1's trees).
    // a is backed up on its own first (S0), so b's chunks go only into packs of their own:
    // packers run in parallel, and a's and b's chunks in one run could share a pack, which
    // would leave it partly used (kept by S2) instead of unused.
    write_random(&data.join("a"), 1, 10 << 20);
    let r = at(t0, &["backup", data.to_str().unwrap()], &url);
    assert_eq!(r.code, 0, "{r:?}");
    write_random(&data.join("b"), 2, 9 << 20);
    let r = at(t0, &["backup", data.to_str().unwrap()], &url);
    assert_eq!(r.code, 0, "{r:?}");
    let s1_packs: Vec<String> = moto
        .versions("locked", "repo/data/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    std::fs::remove_file(data.join("b")).unwrap();
    write_random(&data.join("c"), 3, 1 << 20);
    let t1 = t0 + Days::hours(1);
    let r = at(t1, &["backup", data.to_str().unwrap()], &url);
    assert_eq!(r.code, 0, "{r:?}");
    let kept_copy = w.join("kept-copy");
    std::fs::create_dir_all(&kept_copy).unwrap();
    for f in ["a", "c"] {
        std::fs::copy(data.join(f), kept_copy.join(f)).unwrap();
    }
    let versions_s2 = moto.versions("locked", "repo/data/").len();

    // forget S1 and prune at once: b's pack is unused but locked (until t0 + 2 days); the
    // record (filled by the backups' passes) says so, and prune skips it.
    let r = at(
        t1,
        &[
            "forget",
            "--confirm",
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0",
            "--json",
        ],
        &url,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let p = &j["regions"][0]["prune"];
    assert_eq!(j["regions"][0]["removed"], 2, "{j:#}");
    assert!(p["mark"]["locked_packs"].as_u64().unwrap() >= 1, "{j:#}");
    assert_eq!(p["sweep"]["deleted_packs"], 0, "{j:#}");
    let versions_now = moto.versions("locked", "repo/data/").len();
    assert_eq!(versions_now, versions_s2, "no pack was deleted");

    // The record lost (the attacker or an operator removed it): prune condemns the pack, the
    // store refuses to delete its locked version, and that is "kept, will retry", not an error.
    moto.boto("p = s3.get_paginator('list_objects_v2')\nfor page in p.paginate(Bucket='locked', Prefix='repo/retention/'):\n    for o in page.get('Contents', []):\n        s3.delete_object(Bucket='locked', Key=o['Key'])");
    let r = at(
        t1,
        &["prune", "--confirm", "--grace", "0", "--max-unused", "100%"],
        &url,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("still under Object Lock retention") && r.stdout.contains("will retry"),
        "{r:?}"
    );
    let r = at(
        t1,
        &[
            "prune",
            "--confirm",
            "--grace",
            "0",
            "--max-unused",
            "100%",
            "--json",
        ],
        &url,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let reg = &j["regions"][0];
    assert!(
        reg["mark"]["locked_packs"].as_u64().unwrap() >= 1
            || reg["sweep"]["locked_packs"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    // Nothing was deleted.
    let now: Vec<String> = moto
        .versions("locked", "repo/data/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(now.len(), versions_now, "{now:?}");
    let r = at(t1, &["verify", "--read-data", "--json"], &url);
    assert_eq!(r.code, 0, "{r:?}");

    // 30 hours in (less than a day of lock left on S1's objects): the pass extends what S2
    // needs to t + 2 days; b's pack (no snapshot needs it) is left to lapse.
    let t2 = t0 + Days::hours(30);
    let r = at(
        t2,
        &["forget", "--confirm", "--keep-last", "1", "--json"],
        &url,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let l = &j["regions"][0]["object_lock"];
    assert!(l["extended"].as_u64().unwrap() > 0, "{j:#}");

    // 50 hours in: every object S1 and S2 wrote has passed its original lock date. prune
    // now really frees b's pack: its versions are gone, not hidden behind a delete marker.
    let t3 = t0 + Days::hours(50);
    let r = at(t3, &["prune", "--confirm", "--grace", "0", "--json"], &url);
    assert_eq!(r.code, 0, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        j["regions"][0]["sweep"]["deleted_packs"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    let left: Vec<String> = moto
        .versions("locked", "repo/data/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(left.len() < versions_now, "{left:?}");

    // The attacker: every version of everything. Some deletes succeed (the server's clock is
    // past the original dates: the prune plans, locks and records written at t0/t1 go),
    // every object S2 needs is refused.
    let (deleted, refused) = moto.delete_every_version("locked", "repo/");
    assert!(
        !deleted.is_empty(),
        "the server's clock passed the original lock dates"
    );
    assert!(
        s1_packs.iter().any(|k| refused.contains(k)),
        "S2 still needs some of S1's first packs: {refused:?}"
    );
    let out = w.join("restored");
    let r = at(
        t3,
        &["restore", "latest", "--target", out.to_str().unwrap()],
        &url,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&kept_copy, &out.join("data"));
}

/// Every region (issue 13, "Every region"), on two real Garage servers: with r2 down,
/// `forget --prune` prunes r1 and names r2 (exit 3); with r2 back, the next run prunes it;
/// both verify with `--read-data`, the kept snapshot restores from r2, and `catalog rebuild`
/// of each region finds the catalog already in agreement.
#[test]
fn forget_prune_with_a_region_down_then_catches_it_up() {
    use support::garage::Garage;
    use support::regions::{lifeboat, make_s3_tree, repos, run, Run};

    let r1 = Garage::start("r1");
    let mut r2 = Garage::start("r2");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let urls = vec![r1.url("repo"), r2.url("repo")];
    let cmd = |urls: &[String], args: &[&str]| -> Run {
        let mut c = lifeboat(w);
        repos(&mut c, urls);
        c.args(args);
        run(c)
    };
    let json = |r: &Run| -> serde_json::Value {
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
    };
    let r = cmd(&urls, &FAST_INIT);
    assert_eq!(r.code, 0, "{r:?}");
    let src = make_s3_tree(w, 3, 7);
    for i in 0..4u64 {
        write_random(&src.join("a/changing.bin"), 100 + i, 2 << 20);
        let r = cmd(&urls, &["backup", src.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{r:?}");
    }

    r2.stop();
    let r = cmd(
        &urls,
        &[
            "forget",
            "--confirm",
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0",
            "--json",
        ],
    );
    assert_eq!(r.code, 3, "a region down is a partial success: {r:?}");
    assert!(r.stderr.contains("region r2"), "{r:?}");
    let j = json(&r);
    let (g1, g2) = (&j["regions"][0], &j["regions"][1]);
    assert_eq!(g1["name"], "r1", "{j:#}");
    assert_eq!(g1["removed"], 3, "{j:#}");
    assert!(g1["error"].is_null(), "{j:#}");
    assert!(
        g1["prune"]["sweep"]["deleted_packs"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    assert_eq!(g2["name"], "r2", "{j:#}");
    assert!(g2["error"].is_string(), "{j:#}");
    assert_eq!(g2["removed"], 0, "{j:#}");

    r2.restart();
    let r = cmd(
        &urls,
        &[
            "forget",
            "--confirm",
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json(&r);
    let (g1, g2) = (&j["regions"][0], &j["regions"][1]);
    assert_eq!(g1["removed"], 0, "{j:#}");
    assert_eq!(g2["removed"], 3, "{j:#}");
    assert!(
        g2["prune"]["sweep"]["deleted_packs"].as_u64().unwrap() >= 1,
        "{j:#}"
    );

    for (i, name) in ["r1", "r2"].iter().enumerate() {
        let one = &urls[i..i + 1];
        let r = cmd(one, &["verify", "--read-data", "--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(json(&r)["errors"], 0, "{r:?}");
        let r = cmd(one, &["snapshots", "--json"]);
        assert_eq!(json(&r).as_array().unwrap().len(), 1, "{name}: {r:?}");
        let r = cmd(one, &["catalog", "rebuild", "--region", name, "--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        let rep = &json(&r)["report"];
        assert_eq!(rep["snapshots_in_repository"], 1, "{name}: {r:?}");
        assert_eq!(rep["added"], 0, "{name}: the catalog already had it: {r:?}");
        assert_eq!(rep["updated"], 0, "{name}: {r:?}");
        assert_eq!(
            rep["findings"].as_array().unwrap().len(),
            0,
            "{name}: {r:?}"
        );
    }
    let out = w.join("restored");
    let r = cmd(
        &urls,
        &[
            "restore",
            "latest",
            "--region",
            "r2",
            "--target",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&src, &out.join("src"));
}

/// The repack reads only the kept blobs of an old pack, a few neighbours per ranged read, and
/// verifies each new pack by ranged reads too: no pack is ever read whole, so prune's memory
/// does not grow with the pack size. The copies are verified and the kept snapshot restores
/// byte-identical after the old packs are gone.
#[test]
fn the_repack_reads_kept_blob_ranges_never_whole_packs() {
    use std::sync::atomic::Ordering::SeqCst;
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    // 60 incompressible files of 64 KiB fill one pack of about 3.9 MiB; the second snapshot
    // keeps every third one, so the pack is two thirds unused.
    for i in 0..60u64 {
        write_random(&data.join(format!("f{i:02}")), 500 + i, 64 << 10);
    }
    s.ok(&["backup", data.to_str().unwrap()]);
    for i in (0..60u64).filter(|i| i % 3 != 0) {
        std::fs::remove_file(data.join(format!("f{i:02}"))).unwrap();
    }
    s.ok(&["backup", data.to_str().unwrap()]);
    s.ok(&["forget", "--confirm", "--keep-last", "1"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mark, counting) = rt.block_on(async {
        let store = lifeboat::store::open_location(s.repo.to_str().unwrap()).unwrap();
        let counting = std::sync::Arc::new(support::counting::CountingReads::new(store));
        let repo = lifeboat::repo::Repository::open(counting.clone(), support::PASSWORD.as_bytes())
            .await
            .unwrap();
        let mark = lifeboat::repo::prune::mark(
            &repo,
            lifeboat::repo::prune::MarkOptions {
                max_unused: 0.0,
                repack_small: false,
                dry_run: false,
            },
            indicatif::ProgressBar::hidden(),
            &lifeboat::sys::Cancel::new(),
        )
        .await
        .unwrap();
        (mark, counting)
    });
    assert!(mark.repacked_packs >= 1, "{mark:?}");
    assert!((1..=20).contains(&mark.repacked_blobs), "{mark:?}");
    assert!(mark.new_packs >= 1, "{mark:?}");
    let (whole, ranged, bytes, largest) = (
        counting.whole.load(SeqCst),
        counting.ranged.load(SeqCst),
        counting.ranged_bytes.load(SeqCst),
        counting.largest_range.load(SeqCst),
    );
    eprintln!("repack: {whole} whole pack GETs, {ranged} ranged GETs, {bytes} bytes, largest range {largest} bytes, {} bytes repacked", mark.repacked_bytes);
    assert_eq!(whole, 0, "no pack is read whole by the repack");
    // Each read spans a few 64 KiB blobs at most (ranges of up to 512 KiB).
    assert!(largest <= 512 << 10, "largest ranged read {largest} bytes");
    // The kept third of the old pack (plus the gaps between kept blobs read over), then
    // the new pack read back once.
    assert!(
        bytes < mark.repacked_bytes + mark.new_bytes,
        "{bytes} bytes read: {mark:?}"
    );

    // Phase 2 deletes the old pack; the kept snapshot is whole.
    s.ok(&["prune", "--confirm"]);
    verify_clean(&s);
    let out = s.path("restored");
    s.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(&data, &out.join("data"));
}
