//! What the commit check and prune ask of the store, counted (`support::counting`), and
//! `lifeboat snapshots` with a damaged snapshot file: an unchanged backup of a repository of
//! many packs lists `data/` once before its commit instead of HEADing every pack (and still
//! catches a pack gone or cut short); prune lists `snapshots/` and reads each snapshot once;
//! one damaged snapshot file does not hide the others from the listing (exit 13).

use crate::support;

use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use lifeboat::ops::engine::{snapshot_source, BackupOptions};
use lifeboat::repo::keys::KdfParams;
use lifeboat::repo::{InitOptions, Repository};
use lifeboat::source::dir::DirSource;
use lifeboat::store::LocalStore;
use lifeboat::sys::Cancel;
use support::counting::CountingReads;
use support::{make_tree, Scratch, PASSWORD};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// `s.repo` initialised with 64 KiB packs, so a small tree spreads over many packs.
fn init_small_packs(s: &Scratch) {
    rt().block_on(async {
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
            pack_size: Some(64 << 10),
            ..Default::default()
        };
        Repository::init(
            Arc::new(LocalStore::new(s.repo.clone())),
            PASSWORD.as_bytes(),
            opts,
        )
        .await
        .unwrap();
    });
}

/// The repository at `s.repo` through a store that counts requests.
async fn open_counting(s: &Scratch) -> (Repository, Arc<CountingReads>) {
    let counting = Arc::new(CountingReads::new(Arc::new(LocalStore::new(
        s.repo.clone(),
    ))));
    let repo = Repository::open(counting.clone(), PASSWORD.as_bytes())
        .await
        .unwrap();
    (repo, counting)
}

/// `len` incompressible bytes at `path`.
fn random_file(path: &Path, seed: u64, len: usize) {
    use rand::{RngCore, SeedableRng};
    let mut b = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut b);
    std::fs::write(path, b).unwrap();
}

fn pack_files(repo: &Path) -> Vec<std::path::PathBuf> {
    support::list_files(&repo.join("data"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| repo.join("data").join(p))
        .collect()
}

/// Review debt 1 (T05, T13): the commit check of a second, unchanged backup of a repository
/// of ~100 packs, every one of them reused, lists `data/` once instead of HEADing each pack
/// (before: a HEAD per pack, 8 at once — thousands of requests per backup on a large
/// repository). The check still sees every pack: with one pack deleted, another cut short,
/// it refuses (13) naming each, HEADing only those two.
#[test]
fn an_unchanged_backup_of_many_packs_lists_data_once_instead_of_heading_each_pack() {
    let s = Scratch::new();
    init_small_packs(&s);
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..120 {
        random_file(&src.join(format!("f{i:03}")), 5100 + i, 50_000);
    }
    s.ok(&["backup", src.to_str().unwrap()]);
    let packs = pack_files(&s.repo).len();
    assert!(packs >= 50, "{packs} packs");

    rt().block_on(async {
        let (repo, counting) = open_counting(&s).await;
        let report = snapshot_source(
            &repo,
            None,
            Box::new(DirSource::new(vec![src.clone()]).unwrap()),
            &BackupOptions::default(),
            indicatif::ProgressBar::hidden(),
            Cancel::new(),
        )
        .await
        .unwrap();
        assert_eq!(report.snapshot.summary.packs_added, 0, "{report:?}");
        let heads = counting.pack_heads.load(SeqCst);
        let lists = counting.listings_of("data/");
        eprintln!(
            "unchanged backup of {packs} packs: {heads} pack HEADs, {lists} listings of data/"
        );
        assert_eq!(heads, 0, "the commit check HEADed {heads} of {packs} packs");
        // One at the start (healing, T13), one for the commit check.
        assert_eq!(lists, 2);

        // Every pack is still checked: one cut short, then one gone, each named; only the
        // pack the listing does not show as indexed is HEADed.
        let index = repo.load_index().await.unwrap();
        let all: std::collections::HashSet<_> = index.blob_ids().copied().collect();
        let files = pack_files(&s.repo);
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().to_string();
        let whole = std::fs::read(&files[1]).unwrap();
        let len = whole.len() as u64;
        std::fs::write(&files[1], &whole[..whole.len() - 100]).unwrap();
        let before = counting.pack_heads.load(SeqCst);
        let e = repo
            .check_packs_present(&index, &all, &[])
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), lifeboat::ExitCode::Integrity);
        assert!(
            e.to_string().contains(&name(&files[1]))
                && e.to_string()
                    .contains(&format!("has {} bytes in the store but {len}", len - 100)),
            "{e}"
        );
        assert_eq!(counting.pack_heads.load(SeqCst) - before, 1);
        std::fs::write(&files[1], &whole).unwrap();
        std::fs::remove_file(&files[0]).unwrap();
        let e = repo
            .check_packs_present(&index, &all, &[])
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), lifeboat::ExitCode::Integrity);
        assert!(
            e.to_string().contains(&name(&files[0]))
                && e.to_string().contains("vanished while the backup ran"),
            "{e}"
        );
        assert_eq!(counting.pack_heads.load(SeqCst) - before, 2);
    });
}

/// Review debt 2 (T10): prune lists `snapshots/` and reads each snapshot file once — its
/// check of the listing against the catalog and phase 1's walk share one listing (before:
/// the check listed and read every snapshot, then phase 1 did it all again).
#[test]
fn prune_lists_and_reads_each_snapshot_once() {
    let s = Scratch::new();
    init_small_packs(&s);
    let src = s.path("src");
    make_tree(&src, 52, 20, 60_000);
    for i in 0..5 {
        std::fs::write(
            src.join(format!("only-{i}")),
            format!("snapshot {i}").repeat(5000),
        )
        .unwrap();
        s.ok(&["backup", src.to_str().unwrap()]);
    }
    s.ok(&["forget", "--keep-last", "4", "--confirm"]);
    let snapshots = support::snapshot_ids(&s).len();
    assert_eq!(snapshots, 4);

    rt().block_on(async {
        let (repo, counting) = open_counting(&s).await;
        let (mut env, _events) = lifeboat::ops::Env::quiet(Cancel::new());
        // The catalog the CLI recorded the snapshots in: the check compares with it.
        env.catalog = Ok(s.path("state/catalog.db").display().to_string());
        let req = lifeboat::ops::prune::PruneRequest {
            max_unused: 0.0,
            ..Default::default()
        };
        let pr = lifeboat::ops::prune::prune_repo(&env, &repo, "local", &req)
            .await
            .unwrap();
        let mark = pr.mark.unwrap();
        assert_eq!(mark.snapshots, snapshots);
        assert!(mark.condemned_packs > 0, "{mark:?}");
        assert!(pr.sweep.unwrap().deleted_packs > 0);
        let gets = counting.snapshot_gets.load(SeqCst);
        let lists = counting.listings_of("snapshots/");
        eprintln!(
            "prune of {snapshots} snapshots: {gets} snapshot reads, {lists} listings of snapshots/"
        );
        assert_eq!(gets, snapshots as u64, "each snapshot read once");
        // Phase 1 once; phase 2's rescue check once (snapshots committed since phase 1).
        assert_eq!(lists, 2);
    });
    s.ok(&["verify", "--read-data"]);
}

/// Review debt 4 (T15): one damaged snapshot file no longer fails the whole listing.
/// `lifeboat snapshots` lists every readable snapshot, warns naming the damaged file (and
/// what to do), and exits 13 at the end; with `--json` stdout is still the array of the
/// readable snapshots. Before: exit 13 and nothing listed.
#[test]
fn snapshots_lists_the_readable_ones_and_names_a_damaged_file() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 53, 6, 20_000);
    for i in 0..3 {
        std::fs::write(src.join("n"), format!("{i}")).unwrap();
        s.ok(&["backup", src.to_str().unwrap()]);
    }
    let ids = support::snapshot_ids(&s);
    assert_eq!(ids.len(), 3);
    let victim = &ids[1];
    let file = s.repo.join("snapshots").join(victim);
    let mut raw = std::fs::read(&file).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x40;
    std::fs::write(&file, raw).unwrap();

    let out = s.run(&["snapshots"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(13), "{stdout}{stderr}");
    for id in [&ids[0], &ids[2]] {
        assert!(stdout.contains(&id[..8]), "{id} listed: {stdout}");
    }
    assert!(!stdout.contains(&victim[..8]), "{stdout}");
    assert!(stdout.contains("2 snapshots"), "{stdout}");
    assert!(
        stderr.contains(&format!("snapshot file snapshots/{victim}"))
            && stderr.contains("cannot be read")
            && stderr.contains("lifeboat verify"),
        "{stderr}"
    );

    let out = s.run(&["snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(13));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[0].as_str(), ids[2].as_str()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(victim.as_str()));

    // Nightly backups go on: the damaged file is not taken as a parent, the backup commits
    // (0), says which file it passed over, and its snapshot restores exactly.
    std::fs::write(src.join("n"), "after the damage").unwrap();
    let out = s.run(&["backup", "--json", src.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&victim[..8]),
        "the damaged file is named: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["snapshot_id"].as_str().unwrap();
    support::inv::restores_exactly(&s, id, &src);
    // ... and `verify` still reports the damage.
    assert_eq!(s.run(&["verify"]).status.code(), Some(13));
}

/// Review debt 3 (T10), phase 2: a listing of `index/` cut short while the sweep runs would
/// hide an index file phase 1 read — one that may list a doomed pack, which would then name
/// a deleted pack. The sweep HEADs every such file and refuses (13) when one is there:
/// nothing is deleted and the plan is kept; the next sweep, with the listing whole, runs.
#[test]
fn the_sweep_refuses_when_the_listing_of_index_lacks_a_file_phase_1_read() {
    let s = Scratch::new();
    init_small_packs(&s);
    let src = s.path("src");
    make_tree(&src, 54, 10, 60_000);
    for i in 0..3 {
        random_file(&src.join(format!("only-{i}")), 5400 + i, 300_000);
        s.ok(&["backup", src.to_str().unwrap()]);
        std::fs::remove_file(src.join(format!("only-{i}"))).unwrap();
    }
    s.ok(&["forget", "--keep-last", "2", "--confirm"]);
    let files = || {
        support::list_files(&s.repo)
            .into_iter()
            .filter(|p| !p.starts_with("locks"))
            .collect::<Vec<_>>()
    };

    rt().block_on(async {
        let (repo, counting) = open_counting(&s).await;
        let cancel = Cancel::new();
        let mark = lifeboat::repo::prune::mark(
            &repo,
            lifeboat::repo::prune::MarkOptions {
                max_unused: 0.0,
                repack_small: false,
                dry_run: false,
            },
            indicatif::ProgressBar::hidden(),
            &cancel,
        )
        .await
        .unwrap();
        assert!(mark.condemned_packs > 0, "{mark:?}");
        let index_file = support::list_files(&s.repo.join("index"))[0]
            .to_string_lossy()
            .to_string();
        counting
            .hidden
            .lock()
            .unwrap()
            .push(format!("index/{index_file}"));
        let before = files();
        let sweep = |repo: Repository| async move {
            repo.with_lock("prune (phase 2: delete)", true, async |lock| {
                lifeboat::repo::prune::sweep(
                    &repo,
                    std::time::Duration::ZERO,
                    repo.now(),
                    &Cancel::new(),
                    lock,
                )
                .await
            })
            .await
        };
        let e = sweep(repo.clone()).await.unwrap_err();
        assert_eq!(e.exit_code(), lifeboat::ExitCode::Integrity);
        assert!(
            e.to_string().contains(&format!(
                "prune refused, nothing was deleted: index file {index_file} exists but the listing of index/ left it out"
            )),
            "{e}"
        );
        assert_eq!(files(), before, "the refused sweep changed the repository");

        counting.hidden.lock().unwrap().clear();
        let r = sweep(repo).await.unwrap();
        assert!(r.deleted_packs > 0, "{r:?}");
    });
    s.ok(&["verify", "--read-data"]);
}

/// Review debt 3 (T10), phase 1: a listing of `index/` that hides an index file of data
/// packs only (a checkpoint of a long backup, no tree in it) — the walk reads every tree,
/// but the blobs of the hidden packs look missing. Phase 1 refuses (13, nothing written):
/// it must not plan on that view. Before, it went ahead (the count was only a warning); a
/// cut that hid a tree failed by accident, as "not in the index (its pack is missing)". A
/// dry run reports the count.
#[test]
fn phase_1_refuses_a_listing_of_index_that_hides_blobs_the_snapshots_need() {
    let s = Scratch::new();
    init_small_packs(&s);
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..80 {
        random_file(&src.join(format!("f{i:03}")), 5500 + i, 50_000);
    }
    s.ok(&["backup", src.to_str().unwrap()]);
    let files = || {
        support::list_files(&s.repo)
            .into_iter()
            .filter(|p| !p.starts_with("locks"))
            .collect::<Vec<_>>()
    };

    rt().block_on(async {
        let (repo, counting) = open_counting(&s).await;
        let index_files = repo.load_index_files().await.unwrap();
        assert!(index_files.len() >= 3, "{} index files", index_files.len());
        let (hide, hidden_file) = index_files
            .iter()
            .find(|(_, f)| {
                f.packs.iter().all(|p| {
                    p.blobs
                        .iter()
                        .all(|b| b.kind == lifeboat::repo::pack::BlobKind::Data)
                })
            })
            .expect("an index file of data packs only");
        let hidden_blobs: usize = hidden_file.packs.iter().map(|p| p.blobs.len()).sum();
        counting
            .hidden
            .lock()
            .unwrap()
            .push(format!("index/{hide}"));
        let before = files();
        let cancel = Cancel::new();
        let mark = |dry_run| {
            lifeboat::repo::prune::mark(
                &repo,
                lifeboat::repo::prune::MarkOptions {
                    max_unused: 0.0,
                    repack_small: false,
                    dry_run,
                },
                indicatif::ProgressBar::hidden(),
                &cancel,
            )
        };
        let e = mark(false).await.unwrap_err();
        assert_eq!(e.exit_code(), lifeboat::ExitCode::Integrity);
        assert!(
            e.to_string().contains(&format!(
                "prune refused, nothing was deleted: the snapshots need {hidden_blobs} blob(s) that no index file in the listing of index/ holds"
            )),
            "{e}"
        );
        assert_eq!(files(), before, "the refused prune wrote something");
        let dry = mark(true).await.unwrap();
        assert_eq!(dry.missing_blobs, hidden_blobs, "{dry:?}");
    });
}
