//! The backup engine: the commit protocol every backup runs, whatever its source —
//! lock → index (adopting packs an interrupted run left) → parent → pipeline → index →
//! lock check → (several regions: every region holds every pack and index) → snapshot, the
//! commit point. Sources only produce data; the repository stores the packs.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use indicatif::ProgressBar;

use crate::ids::{BlobId, SnapshotId};
use crate::pipeline::{Chunker, Pipeline};
use crate::repo::snapshot::{Snapshot, SourceMeta, Summary};
use crate::repo::tree::Tree;
use crate::repo::{ObjectKind, Repository};
use crate::source::{BackupContext, Source, SourceOutput};
use crate::store::multi::MultiStore;
use crate::sys::host::{hostname, username};
use crate::sys::Cancel;
use crate::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub plan: Option<String>,
    pub job: Option<String>,
    /// Skip change detection and re-read everything.
    pub force: bool,
    /// The recovery-point set id the snapshot is taken in (`ops::set`).
    pub set: Option<String>,
}

/// One committed snapshot and how its run went.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
    pub partial: bool,
    pub packs_adopted: usize,
    /// Packs the index listed that the store had lost; dropped from the index and their
    /// blobs stored again where the source still had them (T13).
    pub packs_lost: Vec<crate::ids::PackId>,
    /// Blobs found damaged by the verification before upload and sealed again (T27).
    pub blobs_resealed: u64,
    /// Finished packs found changed before upload and rebuilt from their parity (T27).
    pub packs_rebuilt: u64,
}

/// Runs one backup of `source` into `repo` and commits a snapshot — the commit protocol:
/// lock → index (adopting packs an interrupted run left) → parent → pipeline → index →
/// lock check → (with several regions: every region holds every pack and index) →
/// snapshot (the commit point). `fanout`: the multi-region store behind `repo`, if any.
pub async fn snapshot_source(
    repo: &Repository,
    fanout: Option<&MultiStore>,
    mut source: Box<dyn Source>,
    opts: &BackupOptions,
    progress: ProgressBar,
    cancel: Cancel,
) -> Result<SnapshotReport> {
    repo.with_lock("backup", false, async |lock| {
        snapshot_locked(repo, fanout, &mut source, opts, progress, cancel, lock).await
    })
    .await
}

async fn snapshot_locked(
    repo: &Repository,
    fanout: Option<&MultiStore>,
    source: &mut Box<dyn Source>,
    opts: &BackupOptions,
    progress: ProgressBar,
    cancel: Cancel,
    lock: &crate::repo::lock::Lock,
) -> Result<SnapshotReport> {
    let started = Utc::now();
    let clock = Instant::now();
    repo.sweep_leftovers().await;
    // Packs an interrupted run left are adopted; packs the index lists but the store lost are
    // dropped from it, so this run stores their blobs again where the source still has them.
    let (index, reconciled) = repo.load_index_reconciled().await?;
    let packs_adopted = reconciled.adopted;
    let packs_lost = reconciled.lost;
    let host = opts.host.clone().unwrap_or_else(hostname);

    let probe = Snapshot {
        time: started,
        consistency_time: started,
        host: host.clone(),
        username: username(),
        tags: opts.tags.clone(),
        paths: source.paths(),
        tree: BlobId([0; 32]),
        parent: None,
        source: SourceMeta::from_parts(source.kind(), serde_json::Value::Null),
        plan: opts.plan.clone(),
        job: opts.job.clone(),
        summary: Summary::default(),
        program_version: env!("CARGO_PKG_VERSION").into(),
        set: opts.set.clone(),
    };
    // The parent only saves reading unchanged files again: a damaged snapshot file (T15,
    // which `verify` reports) must not stop every backup after it.
    let parent = if opts.force {
        None
    } else {
        let (snaps, damaged) = repo.list_snapshots_readable().await?;
        for (id, e) in &damaged {
            tracing::warn!(
                snapshot = %id.short(),
                error = %e,
                "snapshot file unreadable, not considered as this backup's parent; `lifeboat verify` reports it"
            );
        }
        // Never a snapshot dated ahead of now (T16: a forgery's tree must not be trusted for
        // "unchanged" files): the newest of the lineage as `latest` judges it.
        let lineage: Vec<_> = snaps
            .into_iter()
            .filter(|(_, s)| s.same_lineage(&probe))
            .collect();
        repo.latest_of(lineage).0
    };
    let parent_tree = match &parent {
        Some((_, s)) if index.contains(&s.tree) => match repo.load_tree(&index, &s.tree).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "parent snapshot unreadable; reading everything");
                None
            }
        },
        _ => None,
    };

    // The run stops as soon as its lease is lost (T19), not only at the commit check: no
    // point uploading the rest for a snapshot that cannot be committed.
    let outer = cancel;
    let cancel = Cancel::new();
    let watcher = tokio::spawn(stop_on_lost_lease(
        lock.watch(),
        outer.clone(),
        cancel.clone(),
    ));
    let stopped = cancel.clone();
    let repo2 = repo.clone();
    let index = Arc::new(index);
    let index2 = index.clone();
    let rt = tokio::runtime::Handle::current();
    let src = std::mem::replace(source, Box::new(NoSource));
    let (src, outcome) = tokio::task::spawn_blocking(move || {
        let mut src = src;
        let mut pipe = Pipeline::start(&repo2, &index, rt.clone(), cancel);
        let chunker = Chunker::new(repo2.config.chunker, repo2.keys.chunker_seed());
        let mut ctx = BackupContext {
            repo: &repo2,
            index: &index,
            pipe: &mut pipe,
            chunker,
            rt,
            progress,
            summary: Summary::default(),
            warnings: Vec::new(),
            partial: false,
        };
        let out = src.run(&mut ctx, parent_tree.as_ref());
        let (summary, warnings, partial) = (ctx.summary, ctx.warnings, ctx.partial);
        ctx.progress.finish_and_clear();
        let reused = pipe.take_reused();
        let res = out.and_then(|o| {
            pipe.finish()
                .map(|stats| (o, stats, summary, warnings, partial, reused))
        });
        (src, res)
    })
    .await
    .map_err(|e| Error::Other(format!("backup thread failed: {e}")))?;
    watcher.abort();
    *source = src;
    let outcome = match outcome {
        // Stopped because the lease was lost, not by the user (whatever error the stop
        // surfaced as — a source may report its dump cut short): say so (exit 11).
        Err(e) if stopped.is_cancelled() && !outer.is_cancelled() => {
            lock.check()?;
            Err(e)
        }
        other => other,
    };
    let (out, stats, mut summary, mut warnings, partial, reused) = outcome?;

    // Never commit over missing data: the packs this snapshot reuses are still there.
    repo.check_packs_present(&index2, &reused, &stats.stored_packs)
        .await?;
    if !packs_lost.is_empty() {
        warnings.push(format!(
            "{} pack(s) listed in the index were missing from the repository (first: {}); \
             their data was stored again where this source still has it — other snapshots \
             that needed them may still be damaged: run `lifeboat repair` to find them",
            packs_lost.len(),
            packs_lost[0]
        ));
    }
    lock.confirm().await?;
    summary.blobs_added = stats.blobs_added;
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.packs_added = stats.packs_added;
    summary.duration_secs = clock.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        consistency_time: out.consistency_time,
        tree: out.tree,
        parent: parent.map(|(id, _)| id),
        source: SourceMeta::from_parts(probe.source.kind(), out.meta),
        summary,
        ..probe
    };
    if let Some(multi) = fanout {
        // Multi-region commit: only regions holding every index file and every indexed pack
        // (at its indexed size) get the snapshot; the others are reported as lagging.
        let full = repo.load_index().await?;
        let mut required: Vec<(String, Option<u64>)> = full
            .packs()
            .iter()
            .map(|(id, size)| (crate::repo::pack_key(id), Some(*size)))
            .collect();
        required.extend(
            full.files
                .iter()
                .map(|id| (ObjectKind::Index.key(id), None)),
        );
        multi
            .prepare_commit(&["data/", "index/"], &required)
            .await?;
        lock.confirm().await?;
    }
    crate::failpoint::crash("after-index-before-snapshot");
    let snapshot_id = repo.save_json(ObjectKind::Snapshot, &snapshot).await?;
    tracing::info!(snapshot = %snapshot_id, "snapshot committed");
    Ok(SnapshotReport {
        snapshot_id,
        snapshot,
        warnings,
        partial,
        packs_adopted,
        packs_lost,
        blobs_resealed: stats.blobs_resealed,
        packs_rebuilt: stats.packs_rebuilt,
    })
}

/// Passes the user's cancellation on to the run, and cancels the run when its lease is lost.
async fn stop_on_lost_lease(lease: crate::repo::lock::LeaseWatch, outer: Cancel, run: Cancel) {
    loop {
        if outer.is_cancelled() || lease.is_lost() {
            if lease.is_lost() && !outer.is_cancelled() {
                tracing::warn!("the repository lock was lost; stopping the backup");
            }
            run.cancel();
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Placeholder value left in the caller's slot while the real source runs on its thread.
struct NoSource;
impl Source for NoSource {
    fn kind(&self) -> &str {
        "none"
    }
    fn paths(&self) -> Vec<String> {
        Vec::new()
    }
    fn run(&mut self, _: &mut BackupContext<'_>, _: Option<&Tree>) -> Result<SourceOutput> {
        Err(Error::Other("source already consumed".into()))
    }
}
