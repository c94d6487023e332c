//! What the snapshots reach: every blob (tree and data) below a set of root trees. Prune
//! (what may go) and the Object Lock pass (what must stay locked) both ask it.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};

use super::index::Index;
use super::tree::NodeKind;
use super::Repository;
use crate::ids::BlobId;
use crate::sys::Cancel;
use crate::Result;

/// Trees read at once.
const CONCURRENCY: usize = 16;

/// Adds every blob the trees below `roots` reference (tree blobs included) to `used`, reading
/// each tree once (`visited`), a level at a time with several reads in flight. Each tree is
/// taken apart as soon as it arrives and dropped: only the ids of the next level are held,
/// never a whole level of parsed trees (which was most of prune's peak memory).
pub async fn collect_used(
    repo: &Repository,
    index: &Index,
    roots: impl IntoIterator<Item = BlobId>,
    used: &mut HashSet<BlobId>,
    visited: &mut HashSet<BlobId>,
    cancel: &Cancel,
) -> Result<()> {
    let mut level: Vec<BlobId> = roots.into_iter().filter(|t| visited.insert(*t)).collect();
    while !level.is_empty() {
        cancel.check()?;
        used.extend(level.iter().copied());
        let mut trees = stream::iter(std::mem::take(&mut level))
            .map(|t| async move { repo.load_tree(index, &t).await })
            .buffer_unordered(CONCURRENCY);
        let mut next = Vec::new();
        while let Some(t) = trees.next().await {
            for n in t?.nodes {
                match n.kind {
                    NodeKind::Dir => {
                        if let Some(s) = n.subtree {
                            if visited.insert(s) {
                                next.push(s);
                            }
                        }
                    }
                    NodeKind::File => used.extend(n.content),
                    NodeKind::Symlink => {}
                }
            }
        }
        level = next;
    }
    Ok(())
}
