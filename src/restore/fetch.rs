//! Fetching the sealed blobs a restore needs from one pack, and from which region.
//!
//! - **Whole or ranges**: a pack most of which is needed (or whose needed blobs lie in many
//!   places) is read whole; otherwise only the needed blobs are read, neighbours less than
//!   [`GAP`] apart coalesced into one ranged GET, several ranges at once. Either way every
//!   blob is authenticated (its AEAD tag) and re-hashed against the id the index gives it by
//!   the caller before a byte of it is written, which is what proves it; a whole pack's
//!   content hash is not computed on top (it proved nothing more about the blobs a restore
//!   uses, and cost a blake3 pass over every pack on the async threads).
//! - **Hedged reads** (`--allow-fallback` with another region): when the chosen region has
//!   not answered within a delay learned from its own recent answers (four times their
//!   moving average, within [`HEDGE_MIN`]..[`HEDGE_MAX`]), the same read is sent to the next
//!   region and the first complete answer wins; the other request is dropped (cancelled).
//!   After [`DEMOTE_AFTER`] hedges in a row won by the other region, reads go to it first and
//!   the slow region becomes the hedge: a region that is slow for good costs the delay a few
//!   times, not once per pack.
//!
//! This file knows stores, pack keys and pack entries; it decodes nothing and writes nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::ids::PackId;
use crate::repo::pack::PackEntry;
use crate::repo::{pack_key, Repository};
use crate::store::{DynStore, StoreError};
use crate::{Error, Result};

/// Needed blobs closer than this in a pack are fetched in one range (the bytes between are
/// read and dropped: cheaper than another request).
pub const GAP: u64 = 256 * 1024;
/// Ranged GETs of one pack in flight at once.
const RANGES_IN_FLIGHT: usize = 4;
/// More ranges than this after coalescing: the whole pack in one GET instead.
const MAX_RANGES: usize = 16;

/// How the needed blobs of one pack are read: neighbours closer than `gap` coalesced into
/// one ranged GET, `in_flight` ranges at once, and the whole pack instead when half of it
/// is needed or the ranges are more than `max_ranges`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    gap: u64,
    max_ranges: usize,
    in_flight: usize,
}

/// File data: the pack is read (and decoded) anyway, so many ranges mean the whole pack.
pub const DATA: Plan = Plan {
    gap: GAP,
    max_ranges: MAX_RANGES,
    in_flight: RANGES_IN_FLIGHT,
};

/// Trees prefetched by pack while walking a snapshot: they lie scattered between file
/// data, which the walk must not download (the data phase reads it once, later), so never
/// the whole pack for many ranges; a wider gap, as a GET's round trip costs more than a
/// MiB read on any link that matters, and more ranges at once.
pub const TREES: Plan = Plan {
    gap: 1 << 20,
    max_ranges: usize::MAX,
    in_flight: 8,
};
/// Bounds of the hedge delay.
pub const HEDGE_MIN: Duration = Duration::from_millis(300);
pub const HEDGE_MAX: Duration = Duration::from_secs(10);
/// The hedge delay before the chosen region has answered anything.
const HEDGE_FIRST: Duration = Duration::from_secs(2);
/// Hedges won by the other region in a row before it is asked first.
pub const DEMOTE_AFTER: usize = 3;

/// The byte ranges of a pack to fetch for `entries` (sorted by offset), or `None` for the
/// whole pack.
pub fn plan_ranges(entries: &[PackEntry], pack_size: u64) -> Option<Vec<(u64, u64)>> {
    plan_with(DATA, entries, pack_size)
}

/// [`plan_ranges`] under `plan`.
pub fn plan_with(plan: Plan, entries: &[PackEntry], pack_size: u64) -> Option<Vec<(u64, u64)>> {
    let mut sorted: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| (e.offset as u64, e.length as u64))
        .collect();
    sorted.sort_unstable();
    let needed: u64 = sorted.iter().map(|r| r.1).sum();
    if needed * 2 >= pack_size {
        return None;
    }
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (off, len) in sorted {
        match ranges.last_mut() {
            Some((start, l)) if off <= *start + *l + plan.gap => {
                *l = (*l).max(off + len - *start);
            }
            _ => ranges.push((off, len)),
        }
    }
    (ranges.len() <= plan.max_ranges).then_some(ranges)
}

/// The sealed bytes of each of `entries` (in their order), read from `store`: one whole-pack
/// GET, or the coalesced ranges of [`plan_ranges`]; the caller verifies each blob.
pub async fn fetch_from(
    store: &DynStore,
    pack: PackId,
    size: u64,
    entries: &[PackEntry],
) -> Result<Vec<Bytes>> {
    fetch_with(DATA, store, pack, size, entries).await
}

/// [`fetch_from`] under `plan`.
pub async fn fetch_with(
    plan: Plan,
    store: &DynStore,
    pack: PackId,
    size: u64,
    entries: &[PackEntry],
) -> Result<Vec<Bytes>> {
    let key = pack_key(&pack);
    let missing = |e: StoreError| match e {
        StoreError::NotFound { .. } => {
            Error::integrity(format!("pack {pack}"), "missing from the repository")
        }
        other => other.into(),
    };
    let short = || {
        Error::integrity(
            format!("pack {pack}"),
            "shorter than its index says (truncated?)",
        )
    };
    let Some(ranges) = plan_with(plan, entries, size) else {
        let bytes = store.get(&key).await.map_err(missing)?;
        return entries
            .iter()
            .map(|e| {
                let end = e.offset as usize + e.length as usize;
                if end > bytes.len() {
                    return Err(short());
                }
                Ok(bytes.slice(e.offset as usize..end))
            })
            .collect();
    };
    let key = &key;
    let got: Vec<(u64, Bytes)> = stream::iter(ranges)
        .map(|(off, len)| async move {
            let b = store.get_range(key, off, len).await.map_err(missing)?;
            Ok::<_, Error>((off, b))
        })
        .buffer_unordered(plan.in_flight)
        .try_collect()
        .await?;
    entries
        .iter()
        .map(|e| {
            let (off, len) = (e.offset as u64, e.length as u64);
            let (start, b) = got
                .iter()
                .find(|(s, b)| *s <= off && off + len <= *s + b.len() as u64)
                .ok_or_else(short)?;
            Ok(b.slice((off - start) as usize..(off - start + len) as usize))
        })
        .collect()
}

/// Learns how fast the chosen region answers and when to hedge; shared by all reads of one
/// restore.
#[derive(Debug, Default)]
pub struct Hedge {
    /// Moving average of the chosen region's answer times, microseconds (0: none yet).
    avg_us: AtomicU64,
    /// Hedges in a row won by the other region.
    lost: AtomicUsize,
    /// The other region is asked first.
    demoted: AtomicBool,
    /// Reads the other region answered first.
    pub won_by_other: AtomicU64,
}

impl Hedge {
    /// How long to wait for the first region before asking the second.
    pub fn delay(&self) -> Duration {
        match self.avg_us.load(Ordering::Relaxed) {
            0 => HEDGE_FIRST,
            us => (Duration::from_micros(us) * 4).clamp(HEDGE_MIN, HEDGE_MAX),
        }
    }

    fn answered(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let _ = self
            .avg_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some(if a == 0 { us } else { (a * 7 + us) / 8 })
            });
    }
}

/// Which store answered a hedged read: `None` the chosen one, `Some(name)` another region.
pub type Source = Option<String>;

/// [`fetch_from`] the repository's store, hedged with its first fallback region when there
/// is one (see the module doc). Errors are the chosen region's unless only the other answered.
pub async fn fetch_hedged(
    plan: Plan,
    repo: &Repository,
    hedge: &Arc<Hedge>,
    pack: PackId,
    size: u64,
    entries: &[PackEntry],
) -> Result<(Vec<Bytes>, Source)> {
    let Some((other_name, other)) = repo.fallbacks().first() else {
        return Ok((
            fetch_with(plan, &repo.store, pack, size, entries).await?,
            None,
        ));
    };
    let demoted = hedge.demoted.load(Ordering::Relaxed);
    let (first, second): (&DynStore, &DynStore) = if demoted {
        (other, &repo.store)
    } else {
        (&repo.store, other)
    };
    let label =
        |from_first: bool| -> Source { (from_first == demoted).then(|| other_name.clone()) };
    let t0 = Instant::now();
    let a = fetch_with(plan, first, pack, size, entries);
    tokio::pin!(a);
    let delay = hedge.delay();
    // The first region alone until the delay runs out (or it answers).
    tokio::select! {
        r = &mut a => {
            if !demoted && r.is_ok() {
                hedge.answered(t0.elapsed());
                hedge.lost.store(0, Ordering::Relaxed);
            }
            return r.map(|b| (b, label(true)));
        }
        _ = tokio::time::sleep(delay) => {}
    }
    tracing::info!(%pack, delay_ms = delay.as_millis() as u64, "no answer yet: hedging the read with another region");
    let b = fetch_with(plan, second, pack, size, entries);
    tokio::pin!(b);
    let (mut a_done, mut b_done): (Option<Error>, Option<Error>) = (None, None);
    loop {
        tokio::select! {
            r = &mut a, if a_done.is_none() => match r {
                Ok(v) => {
                    if !demoted {
                        hedge.answered(t0.elapsed());
                        hedge.lost.store(0, Ordering::Relaxed);
                    }
                    return Ok((v, label(true)));
                }
                Err(e) => a_done = Some(e),
            },
            r = &mut b, if b_done.is_none() => match r {
                Ok(v) => {
                    if !demoted {
                        hedge.won_by_other.fetch_add(1, Ordering::Relaxed);
                        if hedge.lost.fetch_add(1, Ordering::Relaxed) + 1 >= DEMOTE_AFTER {
                            hedge.demoted.store(true, Ordering::Relaxed);
                            tracing::warn!(region = %other_name, "the chosen region keeps answering slower than the hedge delay: reading from {other_name} first");
                        }
                    }
                    return Ok((v, label(false)));
                }
                Err(e) => b_done = Some(e),
            },
        }
        if let (Some(_), Some(_)) = (&a_done, &b_done) {
            let (ea, eb) = (a_done.take().expect("set"), b_done.take().expect("set"));
            // The chosen region's error names the problem the caller's fallback will retry.
            return Err(if demoted { eb } else { ea });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobId;
    use crate::repo::pack::BlobKind;

    fn entry(offset: u32, length: u32) -> PackEntry {
        PackEntry {
            id: BlobId::from_bytes([offset as u8; 32]),
            kind: BlobKind::Data,
            offset,
            length,
            raw_length: length,
        }
    }

    #[test]
    fn ranges_coalesce_neighbours_and_fall_back_to_the_whole_pack() {
        let size = 8 << 20;
        // Two blobs 100 KiB apart: one range; a third 2 MiB further: its own range.
        let e = [
            entry(0, 1000),
            entry(1000 + 100 * 1024, 500),
            entry(3 << 20, 4096),
        ];
        assert_eq!(
            plan_ranges(&e, size),
            Some(vec![(0, 1000 + 100 * 1024 + 500), (3 << 20, 4096)])
        );
        // Order of the entries does not matter.
        let rev: Vec<_> = e.iter().rev().copied().collect();
        assert_eq!(plan_ranges(&rev, size), plan_ranges(&e, size));
        // Half the pack or more: whole.
        assert_eq!(plan_ranges(&[entry(0, 4 << 20)], size), None);
        // Many scattered blobs: whole.
        let many: Vec<_> = (0..20).map(|i| entry(i * (400 << 10), 100)).collect();
        assert_eq!(plan_ranges(&many, size), None);
    }

    #[test]
    fn trees_are_read_by_ranges_however_scattered() {
        let size = 8 << 20;
        // 20 trees 400 KiB apart: data reads the whole pack, trees 1 MiB-gap ranges.
        let many: Vec<_> = (0..20).map(|i| entry(i * (400 << 10), 100)).collect();
        assert_eq!(plan_with(DATA, &many, size), None);
        let r = plan_with(TREES, &many, size).expect("ranges, never the whole pack");
        assert_eq!(r.len(), 1, "{r:?}");
        // 40 trees 2 MiB apart (in a 96 MiB pack): one range each, still not the whole pack.
        let far: Vec<_> = (0..40).map(|i| entry(i * (2 << 20), 100)).collect();
        let r = plan_with(TREES, &far, 96 << 20).expect("ranges");
        assert_eq!(r.len(), 40);
        // Trees making up half the pack: whole.
        assert_eq!(plan_with(TREES, &[entry(0, 4 << 20)], size), None);
    }

    #[test]
    fn hedge_delay_follows_the_answers_within_bounds() {
        let h = Hedge::default();
        assert_eq!(h.delay(), HEDGE_FIRST);
        h.answered(Duration::from_millis(10));
        assert_eq!(h.delay(), HEDGE_MIN);
        for _ in 0..50 {
            h.answered(Duration::from_millis(500));
        }
        let d = h.delay();
        assert!(
            d > Duration::from_millis(1900) && d <= Duration::from_millis(2000),
            "{d:?}"
        );
        for _ in 0..50 {
            h.answered(Duration::from_secs(60));
        }
        assert_eq!(h.delay(), HEDGE_MAX);
    }
}
