//! `lifeboat demo`: the whole job on the embedded default, with no services. In a state
//! directory it makes a sample dataset, initialises a local repository, backs it up, changes a
//! little and backs up again (showing what dedup saved), restores the newest snapshot into a
//! throwaway directory, proves it identical, and prints the measured RTO and RPO.

pub mod sample;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use crate::error::ExitCode;
use crate::ops::engine::{BackupOptions, SnapshotReport};
use crate::ops::record::record_backup;
use crate::progress::Progress;
use crate::repo::keys::KdfParams;
use crate::repo::{InitOptions, Repository};
use crate::source::dir::DirSource;
use crate::store::LocalStore;
use crate::sys::human::{bytes, duration};
use crate::sys::Cancel;
use crate::{Error, Result};

const MARKER: &str = ".lifeboat-demo";
/// The objectives the demo documents for its sample job.
const RTO_TARGET_SECS: f64 = 300.0;
const RPO_TARGET_SECS: f64 = 24.0 * 3600.0;
const DEMO_PLAN: &str = "demo";
const DEMO_JOB: &str = "sample-data";

fn default_dir() -> PathBuf {
    if let Some(s) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(s).join("lifeboat/demo");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(h).join(".local/state/lifeboat/demo");
    }
    PathBuf::from("lifeboat-demo")
}

/// Prepares the state directory: creates it, or resets one a previous demo made. Refuses a
/// non-empty directory that is not the demo's own.
fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| Error::io("open", dir, e))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(Error::Usage(format!(
                "{} is not empty and was not made by `lifeboat demo`; pass --dir with a new directory",
                dir.display()
            )));
        }
        for sub in ["data", "repo", "restore", "reports", "report"] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
        }
        // The demo's own catalog (its WAL and shared-memory files too): a new repository.
        for f in [CATALOG, "catalog.db-wal", "catalog.db-shm"] {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    std::fs::write(dir.join(MARKER), "made by lifeboat demo; safe to delete\n")
        .map_err(|e| Error::io("write", dir, e))?;
    Ok(())
}

/// The demo's SQLite catalog, in its directory (never the operator's own catalog).
const CATALOG: &str = "catalog.db";

/// Says what the catalog could not record (the demo goes on: the repository has it all).
fn say_warnings(warnings: Vec<String>) {
    for w in warnings {
        eprintln!("warning: catalog: {w}");
    }
}

fn say(json: bool, msg: impl AsRef<str>) {
    if !json {
        println!("{}", msg.as_ref());
    }
}

pub async fn run(
    dir: Option<PathBuf>,
    size_mib: u64,
    json: bool,
    progress: Progress,
    cancel: Cancel,
) -> Result<ExitCode> {
    let dir = std::path::absolute(dir.unwrap_or_else(default_dir))
        .map_err(|e| Error::io("resolve", "demo dir", e))?;
    prepare(&dir)?;
    let data = dir.join("data");
    let repo_dir = dir.join("repo");
    let pw_file = dir.join("password");
    let catalog = dir.join(CATALOG);
    // Backups and the drill are recorded in the demo's own SQLite catalog, as a plan's are.
    let (mut env, _events) = crate::ops::Env::quiet(cancel.clone());
    env.catalog = Ok(catalog.display().to_string());

    say(json, format!("lifeboat demo in {}\n", dir.display()));
    // 1. sample data
    let t = Instant::now();
    let sz = size_mib.max(1) * 1024 * 1024;
    let (data2, seed) = (data.clone(), rand::random::<u64>());
    tokio::task::spawn_blocking(move || -> Result<()> {
        sample::write_sql_dump_file(&data2.join("db/shop.sql"), sz, seed)?;
        sample::write_tree(&data2.join("files"), sz / 4, seed ^ 1)?;
        Ok(())
    })
    .await
    .expect("sample data thread")?;
    let total = dir_size(&data);
    say(
        json,
        format!(
            "1. made a sample dataset: a {} SQL dump and a tree of small files, {} in all ({})",
            bytes(sz),
            bytes(total),
            duration(t.elapsed().as_secs_f64())
        ),
    );

    // 2. repository
    let password = hex::encode(rand::random::<[u8; 16]>());
    write_private(&pw_file, &password)?;
    let repo = Repository::init(
        Arc::new(LocalStore::new(&repo_dir)),
        password.as_bytes(),
        InitOptions {
            kdf: KdfParams::default(),
            ..Default::default()
        },
    )
    .await?;
    say(
        json,
        format!(
            "2. initialised an encrypted repository {} at {}",
            repo.id().short(),
            repo_dir.display()
        ),
    );

    // 3. first backup
    let opts = BackupOptions {
        tags: vec!["demo".into()],
        plan: Some(DEMO_PLAN.into()),
        job: Some(DEMO_JOB.into()),
        ..Default::default()
    };
    let back_up = async || -> Result<SnapshotReport> {
        let started = Utc::now();
        let b = crate::ops::engine::snapshot_source(
            &repo,
            None,
            Box::new(DirSource::new(vec![data.clone()])?),
            &opts,
            progress.bytes("backup"),
            cancel.clone(),
        )
        .await?;
        let (host, demo_job) = (&b.snapshot.host, Some((DEMO_PLAN, DEMO_JOB)));
        say_warnings(record_backup(&env, &repo, started, host, demo_job, Ok(&b), &[]).await);
        Ok(b)
    };
    let b1 = back_up().await?;
    let s1 = &b1.snapshot.summary;
    say(
        json,
        format!(
            "3. first backup: snapshot {}, {} read, {} stored after dedup + zstd ({}, {}/s)",
            b1.snapshot_id.short(),
            bytes(s1.bytes_processed),
            bytes(s1.bytes_stored),
            duration(s1.duration_secs),
            bytes((s1.bytes_processed as f64 / s1.duration_secs.max(1e-3)) as u64)
        ),
    );

    // 4. change a little, back up again
    change_a_little(&data)?;
    let b2 = back_up().await?;
    let s2 = &b2.snapshot.summary;
    let saved = 100.0 * (1.0 - s2.bytes_added as f64 / (s2.bytes_processed.max(1)) as f64);
    say(json, format!(
        "4. changed a few rows and files, backed up again: snapshot {}, {} new data of {} ({:.1}% deduplicated), {} unchanged files not re-read",
        b2.snapshot_id.short(),
        bytes(s2.bytes_added),
        bytes(s2.bytes_processed),
        saved,
        s2.files_unmodified
    ));

    // 5. restore the newest snapshot into a throwaway directory and compare every byte
    let clock = Instant::now();
    let scratch = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(&dir)
        .map_err(|e| Error::io("create", &dir, e))?;
    let target = scratch.path().join("target");
    let (latest_id, latest) = repo.find_snapshot("latest").await?;
    let index = Arc::new(repo.load_index().await?);
    let rr = crate::restore::restore(
        &repo,
        index,
        &latest,
        &target,
        progress.bytes("restore"),
        cancel.clone(),
    )
    .await?;
    let diffs = crate::restore::compare_dirs(&data, &target.join("data"))?;
    let restore_secs = clock.elapsed().as_secs_f64();
    if !diffs.is_empty() {
        for d in diffs.iter().take(20) {
            eprintln!("difference: {d}");
        }
        return Err(Error::integrity(
            format!("snapshot {}", latest_id.short()),
            format!(
                "restored tree differs from the source in {} places",
                diffs.len()
            ),
        ));
    }
    say(json, format!(
        "5. restored snapshot {} into a throwaway directory and proved it identical: {} files, {} ({}/s)",
        latest_id.short(),
        rr.files,
        bytes(rr.bytes),
        bytes((rr.bytes as f64 / rr.duration_secs.max(1e-3)) as u64)
    ));
    drop(scratch);

    // 6. a restore drill: throwaway directory, restore tests, RTO/RPO against targets
    let tests = demo_restore_tests(&data)?;
    let targets = crate::drill::Targets {
        rto: Some(std::time::Duration::from_secs_f64(RTO_TARGET_SECS)),
        rpo: Some(std::time::Duration::from_secs_f64(RPO_TARGET_SECS)),
    };
    let report = crate::drill::DirDrill {
        ctx: crate::drill::DrillContext {
            repo: &repo,
            snapshot_id: latest_id,
            snapshot: &latest,
            tests: &tests,
            targets,
            plan: Some(DEMO_PLAN.into()),
            job: Some(DEMO_JOB.into()),
            region: None,
            keep: false,
            clock: Arc::new(crate::sys::SystemClock),
            cancel: cancel.clone(),
        },
        progress: progress.bytes("drill"),
    }
    .run()
    .await;
    say_warnings(crate::ops::drill::record(&env, &repo, std::slice::from_ref(&report)).await);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let passed = report
        .checks
        .iter()
        .filter(|c| c.status == crate::drill::checks::CheckStatus::Passed)
        .count();
    say(json, format!(
        "6. restore drill {}: {} of {} checks passed; RTO {} (target {}: {}), RPO {} (target {}: {}) -> {:?}",
        report.id,
        passed,
        report.checks.len(),
        duration(report.rto.measured_secs),
        duration(RTO_TARGET_SECS),
        verdict(report.rto.met),
        duration(report.rpo.measured_secs),
        duration(RPO_TARGET_SECS),
        verdict(report.rpo.met),
        report.result
    ));
    if !json {
        for c in &report.checks {
            println!("   {:?} {}: {}", c.status, c.name, c.detail);
        }
    }
    // 7. the evidence: the drill's signed report (in the repository and the demo's
    // directory) and the period report an auditor reads
    let (report_dir, plan_file, files) = write_reports(&dir, &repo, &report).await?;
    say(
        json,
        format!(
            "7. wrote the drill's signed report ({}) and the DR report for audits:\n   {}",
            files
                .first()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            ["dr-report.html", "dr-report.md", "dr-report.json"]
                .map(|f| report_dir.join(f).display().to_string())
                .join("\n   ")
        ),
    );
    say(json, format!(
        "\nexplore it:\n  export LIFEBOAT_REPO={} LIFEBOAT_PASSWORD_FILE={} LIFEBOAT_CATALOG={}\n  lifeboat snapshots\n  lifeboat ls latest\n  lifeboat history\n  lifeboat verify --read-data\n  lifeboat report verify {}\n  lifeboat report --plan {} --out {}",
        repo_dir.display(),
        pw_file.display(),
        catalog.display(),
        dir.join("reports").display(),
        plan_file.display(),
        report_dir.display()
    ));
    if json {
        print_json(&json!({
            "dir": dir,
            "repository": repo_dir,
            "password_file": pw_file,
            "catalog": catalog,
            "dataset_bytes": total,
            "first_backup": {"snapshot_id": b1.snapshot_id, "summary": s1},
            "second_backup": {"snapshot_id": b2.snapshot_id, "summary": s2, "dedup_percent": saved},
            "restore": {"snapshot_id": latest_id, "report": rr, "identical": true, "secs": restore_secs},
            "drill": report,
            "report": {"dir": report_dir, "drill_reports": files},
        }));
    }
    Ok(report.exit_code())
}

/// Writes the demo's plan file (its repository, password and objectives), the drill's signed
/// report (repository `reports/` and `<dir>/reports/`) and the period report into
/// `<dir>/report/`: that directory, the plan file, the drill report files.
async fn write_reports(
    dir: &Path,
    repo: &Repository,
    report: &crate::drill::DrillReport,
) -> Result<(PathBuf, PathBuf, Vec<PathBuf>)> {
    let plan_file = dir.join("demo.toml");
    let plan = format!(
        "# Written by `lifeboat demo`: the demo as a plan, for `lifeboat report --plan`.\nname = \"{DEMO_PLAN}\"\ndescription = \"lifeboat demo: a sample SQL dump and a tree of small files\"\n[repository]\npassword_file = \"password\"\n[objectives]\nrto = \"{}s\"\nrpo = \"{}s\"\n[[destinations]]\ntype = \"local\"\npath = \"repo\"\n\n[[jobs]]\nname = \"{DEMO_JOB}\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [{:?}]\n\n[drill]\nenvironment = \"temp-dir\"\n",
        RTO_TARGET_SECS as u64,
        RPO_TARGET_SECS as u64,
        dir.join("data").display().to_string()
    );
    std::fs::write(&plan_file, plan).map_err(|e| Error::io("write", &plan_file, e))?;
    let target =
        crate::ops::target::Target::from_plan(Arc::new(crate::plan::load(&plan_file)?), None)?;
    let (env, events) = crate::ops::Env::quiet(Cancel::new());
    let files = crate::ops::report::write_drill_reports_in(
        &env,
        &target,
        repo,
        std::slice::from_ref(report),
        &dir.join("reports"),
    )
    .await;
    let now = Utc::now();
    let out = dir.join("report");
    crate::ops::report::period(
        &env,
        std::slice::from_ref(&target),
        crate::ops::report::PeriodRequest {
            since: now - chrono::Duration::days(90),
            now,
            out: out.clone(),
        },
    )
    .await?;
    for e in events.events() {
        if let crate::ops::Event::Warning { message, .. } = e {
            eprintln!("warning: {message}");
        }
    }
    Ok((out, plan_file, files))
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    writeln!(f, "{content}").map_err(|e| Error::io("write", path, e))
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// Appends rows to the dump (about 1 %) and edits a handful of small files.
fn change_a_little(data: &Path) -> Result<()> {
    use std::io::Write;
    let dump = data.join("db/shop.sql");
    let len = std::fs::metadata(&dump)
        .map_err(|e| Error::io("stat", &dump, e))?
        .len();
    let mut extra = Vec::new();
    sample::write_sql_dump(&mut extra, len / 100, 4242)
        .map_err(|e| Error::io("write", &dump, e))?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&dump)
        .map_err(|e| Error::io("open", &dump, e))?;
    f.write_all(&extra)
        .map_err(|e| Error::io("write", &dump, e))?;
    let mut edited = 0;
    let mut stack = vec![data.join("files")];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if edited < 5 && p.extension().is_some_and(|x| x == "txt") {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .map_err(|e| Error::io("open", &p, e))?;
                writeln!(f, "edited by the demo at {}", Utc::now())
                    .map_err(|e| Error::io("write", &p, e))?;
                edited += 1;
            }
        }
    }
    Ok(())
}

/// The demo's restore tests: the dump restored bit for bit, the tree complete.
fn demo_restore_tests(data: &Path) -> Result<crate::drill::restore_tests::RestoreTests> {
    use crate::drill::restore_tests::{FileCheck, RestoreTests};
    let dump = data.join("db/shop.sql");
    let mut f = std::fs::File::open(&dump).map_err(|e| Error::io("open", &dump, e))?;
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io("read", &dump, e))?;
    let files = crate::restore::count_files(&data.join("files"));
    let mut t = RestoreTests::builtin();
    t.files = vec![
        FileCheck {
            path: "data/db/shop.sql".into(),
            exists: true,
            min_files: None,
            max_files: None,
            min_size: Some(1),
            blake3: Some(h.finalize().to_hex().to_string()),
        },
        FileCheck {
            path: "data/files".into(),
            exists: true,
            min_files: Some(files),
            max_files: Some(files),
            min_size: None,
            blake3: None,
        },
    ];
    Ok(t)
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("output serializes")
    );
}
