//! One file node of a snapshot as a byte stream: a database dump fed to `pg_restore` or the
//! `mariadb` client, or a block image written back sparse. Blobs are fetched several at a time
//! ahead of the writer, and each is decrypted, decompressed and re-hashed — on the blocking
//! pool, so as many blobs decode at once as there are cores — before a byte of it is
//! written; the writer takes them in order.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use futures::stream::{self, StreamExt};

use crate::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::pack;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::sys::Cancel;
use crate::{Error, Result};

/// Blobs fetched and decoded ahead of the writer (about 1 MiB each: the stream's memory).
/// Their decoding used to run inside the one task that polls them all, so one core decoded
/// a drill's dump while the other waited; now each is decoded on its own blocking thread.
const READ_AHEAD: usize = 8;

/// The file node `name` in the snapshot's root tree.
pub async fn find_node(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    name: &str,
) -> Result<Node> {
    let root = repo.load_tree(index, &snapshot.tree).await?;
    let names = || {
        root.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let node = root.find(name).cloned().ok_or_else(|| {
        Error::Usage(format!("the snapshot has no file {name:?} at its top level (it has: {}); pick a snapshot of the right job", names()))
    })?;
    if node.kind != NodeKind::File {
        return Err(Error::Usage(format!(
            "{name:?} in the snapshot is a {:?}, not a file",
            node.kind
        )));
    }
    Ok(node)
}

/// Feeds each verified blob of `node` to `sink`, in order; returns the bytes delivered.
async fn for_each_blob(
    repo: &Repository,
    index: &Index,
    node: &Node,
    cancel: &Cancel,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut blobs = stream::iter(node.content.iter().copied())
        .map(|id| read_verified(repo, index, id))
        .buffered(READ_AHEAD);
    let mut n = 0u64;
    while let Some(blob) = blobs.next().await {
        cancel.check()?;
        let blob = blob?;
        sink(&blob)?;
        n += blob.len() as u64;
    }
    if n != node.size {
        return Err(Error::integrity(
            format!("file {}", node.name),
            format!("restored {n} bytes but the snapshot records {}", node.size),
        ));
    }
    Ok(n)
}

/// One blob, read (a ranged read of its pack) and then authenticated, decompressed and
/// re-hashed on a blocking thread. When the chosen region fails to deliver a good copy and
/// there are fallback regions, [`Repository::read_blob`] reads it again, region by region.
async fn read_verified(repo: &Repository, index: &Index, id: BlobId) -> Result<Vec<u8>> {
    let Some(loc) = index.get(&id) else {
        // Not in the index: read_blob names the problem.
        return repo.read_blob(index, &id).await;
    };
    let (pack, size) = index.pack(loc.pack);
    let first = async {
        let sealed = super::fetch::fetch_from(&repo.store, pack, size, &[loc.entry])
            .await?
            .pop()
            .expect("one entry, one part");
        let (keys, rid, entry) = (repo.keys.clone(), *repo.id(), loc.entry);
        tokio::task::spawn_blocking(move || pack::open_blob(&keys, &rid, &entry, &sealed))
            .await
            .map_err(|e| Error::Other(format!("restore worker failed: {e}")))?
            .map_err(|e| super::in_pack(pack, &loc.entry, e))
    }
    .await;
    match first {
        Ok(b) => Ok(b),
        Err(e @ Error::Interrupted) => Err(e),
        Err(e) if repo.fallbacks().is_empty() => Err(e),
        Err(_) => repo.read_blob(index, &id).await,
    }
}

/// Streams the top-level file `node_name` of `snapshot` into `writer`, verifying each blob.
/// A write error (e.g. the consumer process exited) stops the stream.
pub async fn restore_stream<W: Write + ?Sized>(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    node_name: &str,
    writer: &mut W,
    cancel: &Cancel,
) -> Result<u64> {
    let node = find_node(repo, index, snapshot, node_name).await?;
    let n = for_each_blob(repo, index, &node, cancel, |b| {
        writer
            .write_all(b)
            .map_err(|e| Error::io("write restored stream of", node_name, e))
    })
    .await?;
    writer
        .flush()
        .map_err(|e| Error::io("flush restored stream of", node_name, e))?;
    Ok(n)
}

/// Writes the top-level file `node_name` into `file` as a sparse image: all-zero pages
/// (4 KiB, aligned to the file offset) are skipped and left as holes, and the length is set
/// at the end, so an image full of holes takes no more disk space restored than it did
/// originally. Pages rather than whole blobs, because a content-defined chunk often holds
/// data followed by megabytes of zeros. `file` must be empty or new.
pub async fn restore_sparse(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    node_name: &str,
    file: &File,
    cancel: &Cancel,
) -> Result<u64> {
    let node = find_node(repo, index, snapshot, node_name).await?;
    let mut offset = 0u64;
    let n = for_each_blob(repo, index, &node, cancel, |b| {
        write_nonzero(file, b, offset).map_err(|e| Error::io("write", node_name, e))?;
        offset += b.len() as u64;
        Ok(())
    })
    .await?;
    file.set_len(n)
        .map_err(|e| Error::io("set length of", node_name, e))?;
    file.sync_all()
        .map_err(|e| Error::io("sync", node_name, e))?;
    Ok(n)
}

const PAGE: u64 = 4096;

/// Writes the non-zero pages of `b` (placed at `offset`), coalescing neighbours.
fn write_nonzero(file: &File, b: &[u8], offset: u64) -> std::io::Result<()> {
    let mut pos = 0usize;
    let mut run: Option<usize> = None;
    while pos < b.len() {
        // Page boundaries follow the file offset, so holes line up with file-system blocks.
        let next = ((offset + pos as u64) / PAGE + 1) * PAGE;
        let end = ((next - offset) as usize).min(b.len());
        let zero = b[pos..end].iter().all(|&x| x == 0);
        match (zero, run) {
            (false, None) => run = Some(pos),
            (true, Some(start)) => {
                file.write_all_at(&b[start..pos], offset + start as u64)?;
                run = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(start) = run {
        file.write_all_at(&b[start..], offset + start as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn nonzero_pages_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        let f = File::create(&p).unwrap();
        let mut b = vec![0u8; 64 * 1024];
        b[100] = 1; // first page
        b[5 * 4096 + 7] = 2; // sixth page
        b[64 * 1024 - 1] = 3; // last page
                              // Placed at an unaligned offset: pages follow the file, not the buffer.
        write_nonzero(&f, &b, 1000).unwrap();
        f.set_len(1000 + b.len() as u64).unwrap();
        let mut back = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(&back[1000..], &b[..]);
        assert!(back[..1000].iter().all(|&x| x == 0));
    }
}
