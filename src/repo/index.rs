//! The index: which pack holds each blob, at which offset. Stored as encrypted files under
//! `index/`; in memory, the union of all of them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::pack::{BlobKind, PackEntry};
use crate::ids::{BlobId, IndexId, PackId};

/// One index file as stored (JSON, then compressed and sealed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPack {
    pub id: PackId,
    pub size: u64,
    pub blobs: Vec<IndexBlob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexBlob {
    pub id: BlobId,
    #[serde(rename = "type")]
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

impl IndexPack {
    pub fn new(id: PackId, size: u64, entries: &[PackEntry]) -> Self {
        IndexPack {
            id,
            size,
            blobs: entries
                .iter()
                .map(|e| IndexBlob {
                    id: e.id,
                    kind: e.kind,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                })
                .collect(),
        }
    }
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: u32,
    pub entry: PackEntry,
}

/// The in-memory union of all index files.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<(PackId, u64)>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<BlobId, BlobLocation>,
    pub files: Vec<IndexId>,
}

impl Index {
    pub fn add_file(&mut self, id: IndexId, file: &IndexFile) {
        self.files.push(id);
        for p in &file.packs {
            self.add_pack(p);
        }
    }

    pub fn add_pack(&mut self, p: &IndexPack) {
        let pos = *self.pack_pos.entry(p.id).or_insert_with(|| {
            self.packs.push((p.id, p.size));
            (self.packs.len() - 1) as u32
        });
        for b in &p.blobs {
            self.blobs.entry(b.id).or_insert(BlobLocation {
                pack: pos,
                entry: PackEntry {
                    kind: b.kind,
                    id: b.id,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                },
            });
        }
    }

    pub fn get(&self, id: &BlobId) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn pack(&self, pos: u32) -> (PackId, u64) {
        self.packs[pos as usize]
    }

    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_pos.contains_key(id)
    }

    pub fn packs(&self) -> &[(PackId, u64)] {
        &self.packs
    }

    pub fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.keys()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// The entries the index records for each pack, grouped by pack position.
    pub fn entries_by_pack(&self) -> Vec<Vec<PackEntry>> {
        let mut out = vec![Vec::new(); self.packs.len()];
        for loc in self.blobs.values() {
            out[loc.pack as usize].push(loc.entry);
        }
        for v in &mut out {
            v.sort_by_key(|e| e.offset);
        }
        out
    }

    pub fn kind_of(&self, id: &BlobId) -> Option<BlobKind> {
        self.blobs.get(id).map(|l| l.entry.kind)
    }
}
