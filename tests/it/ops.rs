//! The use cases called as a library, without the binary: `ops::backup::backup_paths` into a
//! fresh repository, `ops::drill::drill` of a directory job, and `ops::run_due::run_due`
//! finding, running and then no longer finding a plan's backup and drill. Each test has its
//! own temporary catalog, lock directory and repository, and looks at the events collected.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat::catalog::{Catalog, DrillResult, HistoryFilter, RunId};
use lifeboat::drill::checks::CheckStatus;
use lifeboat::error::ExitCode;
use lifeboat::ops::backup::{backup_paths, PathsRequest};
use lifeboat::ops::drill::{drill, DrillRequest};
use lifeboat::ops::run_due::{run_due, RunDueRequest, TaskKind};
use lifeboat::ops::target::Target;
use lifeboat::ops::{Collect, Env, Event};
use lifeboat::repo::keys::KdfParams;
use lifeboat::repo::{InitOptions, Repository};
use lifeboat::store::LocalStore;
use lifeboat::sys::Cancel;

const PASSWORD: &str = "correct horse battery staple";

/// An environment whose catalog is a SQLite file in `dir`, its events collected.
fn env(dir: &Path) -> (Env, Arc<Collect>) {
    let (mut env, events) = Env::quiet(Cancel::new());
    env.catalog = Ok(dir.join("catalog.db").display().to_string());
    (env, events)
}

/// A repository at `path` with cheap KDF parameters (the tests open it many times).
async fn init_repo(path: &Path) {
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    };
    Repository::init(
        Arc::new(LocalStore::new(path.to_path_buf())),
        PASSWORD.as_bytes(),
        opts,
    )
    .await
    .unwrap();
}

/// `site/conf/app.ini` and `site/index.html` under `dir`.
fn site(dir: &Path) -> PathBuf {
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("conf")).unwrap();
    std::fs::write(site.join("conf/app.ini"), "port = 8080\n").unwrap();
    std::fs::write(site.join("index.html"), "<h1>hello</h1>\n").unwrap();
    site
}

/// A plan in `dir` with one directory job backing up `site` (yearly, so it is due once),
/// a local destination `dir/repo` (initialised), and a drill (also yearly) whose restore
/// tests check `site/conf/app.ini` by hash.
async fn plan(dir: &Path, site: &Path) -> PathBuf {
    let pw = dir.join("repo.pass");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hash = blake3::hash(b"port = 8080\n").to_hex().to_string();
    std::fs::write(
        dir.join("site-tests.toml"),
        format!("[[file]]\npath = \"site/conf/app.ini\"\nmin_size = 5\nblake3 = \"{hash}\"\n"),
    )
    .unwrap();
    let file = dir.join("web.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"web\"\n[repository]\npassword_file = \"repo.pass\"\n[objectives]\nrpo = \"1day\"\nrto = \"30m\"\n[[destinations]]\ntype = \"local\"\npath = \"repo\"\n\n[[jobs]]\nname = \"site\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[drill]\nenvironment = \"temp-dir\"\nschedule = \"0 0 1 1 *\"\nrestore_tests = [\"site-tests.toml\"]\n",
            site.display()
        ),
    )
    .unwrap();
    init_repo(&dir.join("repo")).await;
    file
}

fn plan_target(file: &Path) -> Target {
    Target::from_plan(Arc::new(lifeboat::plan::load(file).unwrap()), None).unwrap()
}

async fn catalog(dir: &Path) -> Catalog {
    Catalog::open(&dir.join("catalog.db").display().to_string())
        .await
        .unwrap()
}

fn not_recorded(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CatalogNotRecorded { warnings, .. } => Some(warnings.join("; ")),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_paths_commits_a_snapshot_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = site(tmp.path());
    let repo_dir = tmp.path().join("repo");
    init_repo(&repo_dir).await;
    let target = Target::from_locations(
        &[repo_dir.display().to_string()],
        None,
        None,
        Arc::new(|_: &str, _: bool| Ok(zeroize::Zeroizing::new(PASSWORD.to_string()))),
    )
    .unwrap();
    let (env, events) = env(tmp.path());
    let req = PathsRequest {
        paths: vec![data.clone()],
        tags: vec!["nightly".into()],
        host: Some("web-1".into()),
        force: false,
    };

    let b = backup_paths(&env, &target, req.clone()).await.unwrap();
    assert_eq!(b.exit_code(), ExitCode::Ok);
    assert!(!b.report.partial);
    assert!(b.regions.is_none(), "one plain location does not fan out");
    let s = &b.report.snapshot;
    assert_eq!(s.host, "web-1");
    assert_eq!(s.tags, vec!["nightly".to_string()]);
    assert_eq!(s.paths, vec![data.display().to_string()]);
    assert_eq!(s.source.kind(), "dir");
    assert_eq!(s.parent, None);
    assert_eq!((s.summary.files_new, s.summary.files_unmodified), (2, 0));
    assert_eq!(s.summary.bytes_processed, 12 + 15);
    assert!(s.summary.packs_added >= 1, "{:?}", s.summary);
    assert!(b.catalog_warnings.is_empty(), "{:?}", b.catalog_warnings);
    assert_eq!(not_recorded(&events.events()), Vec::<String>::new());

    // The snapshot is in the repository, and the run in the catalog.
    let repo = target.open_for_read(None, false).await.unwrap();
    let snaps = repo.list_snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].0, b.report.snapshot_id);
    let cat = catalog(tmp.path()).await;
    let h = cat.history(&HistoryFilter::default()).await.unwrap();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!((h[0].kind, h[0].outcome.as_str()), ("backup", "ok"));
    assert_eq!(h[0].snapshot_id, Some(b.report.snapshot_id));
    cat.close().await;

    // Unchanged files are not read again: the second snapshot's parent is the first.
    let again = backup_paths(&env, &target, req).await.unwrap();
    let s2 = &again.report.snapshot;
    assert_eq!(s2.parent, Some(b.report.snapshot_id));
    assert_eq!((s2.summary.files_new, s2.summary.files_unmodified), (0, 2));
    assert_eq!(s2.summary.bytes_added, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_of_a_directory_job_passes_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = site(tmp.path());
    let file = plan(tmp.path(), &data).await;
    let target = plan_target(&file);
    let (env, events) = env(tmp.path());

    // Nothing to drill yet: the job has no snapshot.
    let err = drill(&env, &target, DrillRequest::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the job has no snapshots yet"),
        "{err}"
    );

    let backed = lifeboat::ops::backup::backup_plan(&env, &target, Default::default())
        .await
        .unwrap();
    assert_eq!(backed.exit_code(), ExitCode::Ok);
    let snapshot = backed.jobs[0].result.as_ref().unwrap().snapshot_id;

    // An unknown region is refused with the plan's destinations listed.
    let req = DrillRequest {
        region: Some("mars".into()),
        ..Default::default()
    };
    let err = drill(&env, &target, req).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "has no destination \"mars\"; its destinations are: local ({})",
            tmp.path().join("repo").display()
        )),
        "{err}"
    );

    let run = drill(&env, &target, DrillRequest::default()).await.unwrap();
    assert_eq!(run.exit_code(), ExitCode::Ok);
    assert_eq!(run.reports.len(), 1);
    let r = &run.reports[0];
    assert_eq!(r.result, DrillResult::Passed, "{r:#?}");
    assert_eq!(r.snapshot_id, snapshot);
    assert_eq!(
        (r.plan.as_deref(), r.job.as_deref(), r.region.as_deref()),
        (Some("web"), Some("site"), Some("local"))
    );
    assert_eq!(r.environment, "directory");
    let file_checks: Vec<_> = r.checks.iter().filter(|c| c.kind == "file").collect();
    assert_eq!(file_checks.len(), 1, "{r:#?}");
    assert_eq!(file_checks[0].status, CheckStatus::Passed);
    assert!(r.rto.met && r.rpo.met, "{r:#?}");
    assert!(
        run.catalog_warnings.is_empty(),
        "{:?}",
        run.catalog_warnings
    );

    // The events: the drill started, then its report.
    let events = events.events();
    assert_eq!(not_recorded(&events), Vec::<String>::new());
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::DrillStarting { job, snapshot, .. } => Some((job.clone(), *snapshot)),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![("site".to_string(), snapshot)]);
    let finished: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::DrillFinished(r) => Some(r.id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![r.id.clone()]);

    // Recorded: the drill in the catalog, and the snapshot's packs as verified by it.
    let cat = catalog(tmp.path()).await;
    let rec = cat.drill(&RunId(r.id.clone())).await.unwrap().unwrap();
    assert_eq!(rec.result, DrillResult::Passed);
    assert_eq!(rec.snapshot_id, snapshot);
    assert_eq!((rec.plan.as_str(), rec.job.as_str()), ("web", "site"));
    assert!(rec.rto_secs.is_some());
    let h = cat.history(&HistoryFilter::default()).await.unwrap();
    assert_eq!(
        h.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec!["drill", "backup"]
    );
    cat.close().await;

    // A failing expectation turns the same drill into exit 16.
    std::fs::write(
        tmp.path().join("site-tests.toml"),
        "[[file]]\npath = \"site/conf/app.ini\"\nmin_size = 5000\n",
    )
    .unwrap();
    let run = drill(&env, &plan_target(&file), DrillRequest::default())
        .await
        .unwrap();
    assert_eq!(run.reports[0].result, DrillResult::CheckFailed);
    assert_eq!(run.exit_code(), ExitCode::DrillCheckFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_due_lists_runs_and_then_skips_a_plans_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = site(tmp.path());
    let file = plan(tmp.path(), &data).await;
    let (env, events) = env(tmp.path());
    let task_events = Arc::new(Collect::default());
    let req = |dry_run: bool| RunDueRequest {
        plan: file.clone(),
        dry_run,
        min_regions: None,
        lock_dir: Some(tmp.path().join("state")),
        task_observer: task_events.clone(),
        clock: Arc::new(lifeboat::sys::clock::SystemClock),
    };
    let target = plan_target(&file);

    // A dry run: both never ran, so both are due; nothing runs.
    let r = run_due(&env, req(true)).await.unwrap();
    let due: Vec<_> = r
        .due
        .iter()
        .map(|t| (t.task.key.as_str(), t.task.kind.clone(), t.exit_code))
        .collect();
    assert_eq!(
        due,
        vec![
            (
                "web/site/backup",
                TaskKind::Backup { job: "site".into() },
                None
            ),
            (
                "web/drill/local",
                TaskKind::Drill {
                    region: "local".into()
                },
                None
            ),
        ]
    );
    assert!(r
        .due
        .iter()
        .all(|t| t.task.dry_run && t.task.slot.is_none()));
    assert_eq!(r.exit_code(), ExitCode::Ok);
    let announced = events
        .events()
        .iter()
        .filter(|e| matches!(e, Event::TaskDue(t) if t.dry_run))
        .count();
    assert_eq!(announced, 2);
    let snaps = target
        .open_for_read(None, false)
        .await
        .unwrap()
        .list_snapshots()
        .await
        .unwrap();
    assert!(snaps.is_empty(), "a dry run runs nothing");
    assert!(
        !tmp.path().join("state/run-due.lock").exists(),
        "a dry run takes no lock"
    );
    assert!(task_events.events().is_empty());

    // A real run: the backup (tagged `scheduled`), then the drill of what it saved.
    let r = run_due(&env, req(false)).await.unwrap();
    assert_eq!(
        r.due
            .iter()
            .map(|t| (t.task.key.as_str(), t.exit_code, t.error.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("web/site/backup", Some(ExitCode::Ok), None),
            ("web/drill/local", Some(ExitCode::Ok), None),
        ]
    );
    assert!(tmp.path().join("state/run-due.lock").exists());
    let snaps = target
        .open_for_read(None, false)
        .await
        .unwrap()
        .list_snapshots()
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].1.tags.iter().any(|t| t == "scheduled"));
    // The tasks' own events went to the task observer.
    let task = task_events.events();
    assert!(task
        .iter()
        .any(|e| matches!(e, Event::JobBackedUp(o) if o.job == "site" && o.result.is_ok())));
    let drilled: Vec<_> = task
        .iter()
        .filter_map(|e| match e {
            Event::DrillFinished(r) => Some((r.snapshot_id, r.result)),
            _ => None,
        })
        .collect();
    assert_eq!(drilled, vec![(snaps[0].0, DrillResult::Passed)]);

    // Both recorded in the catalog: nothing is due now, and the next slots are known.
    let r = run_due(&env, req(false)).await.unwrap();
    assert!(r.due.is_empty(), "{:?}", r.due);
    assert_eq!(
        r.next.iter().map(|n| n.key.as_str()).collect::<Vec<_>>(),
        vec!["web/site/backup", "web/drill"]
    );
    assert!(r.next.iter().all(|n| n.next.is_some()));
    assert_eq!(
        target
            .open_for_read(None, false)
            .await
            .unwrap()
            .list_snapshots()
            .await
            .unwrap()
            .len(),
        1
    );
}
