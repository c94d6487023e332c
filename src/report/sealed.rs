//! The sealed objects the report module keeps in a repository's store: drill reports
//! (`reports/<id>`) and read-verification records (`verified/<id>`). Each is JSON compressed
//! with zstd and sealed like every repository object, the associated data binding the kind
//! and the repository id, and stored under the blake3 hash of the sealed bytes.

use std::io::Read;

use bytes::Bytes;

use crate::ids::ObjectId;
use crate::repo::Repository;
use crate::store::StoreError;
use crate::{Error, Result};

/// One kind of sealed report object.
pub struct Kind {
    /// The folder in the store, with its trailing `/`.
    pub prefix: &'static str,
    /// Bound into the seal's associated data, so one kind never opens as another.
    pub label: &'static [u8],
    /// The most bytes an opened object may decompress to.
    pub max: u64,
}

impl Kind {
    fn aad(&self, repo: &Repository) -> Vec<u8> {
        let mut a = self.label.to_vec();
        a.extend_from_slice(repo.id().as_bytes());
        a
    }

    /// How an object of this kind is named in errors: region location and key.
    pub fn what(&self, repo: &Repository, id: &ObjectId) -> String {
        format!("{} {}{id}", repo.location(), self.prefix)
    }

    /// Seals `bytes` for `repo`: the object id and the stored bytes.
    pub fn seal(&self, repo: &Repository, bytes: &[u8]) -> (ObjectId, Vec<u8>) {
        let compressed = zstd::bulk::compress(bytes, 3).expect("zstd compresses in memory");
        let sealed = repo.keys.seal(&self.aad(repo), &compressed);
        (ObjectId::of(&sealed), sealed)
    }

    /// Seals `bytes` and stores them in `repo`'s store.
    pub async fn put(&self, repo: &Repository, bytes: &[u8]) -> Result<ObjectId> {
        let (id, sealed) = self.seal(repo, bytes);
        repo.store
            .put(&format!("{}{id}", self.prefix), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// Opens a stored object: checks its name, opens the seal, decompresses (at most `max`).
    pub fn open(&self, repo: &Repository, id: &ObjectId, raw: &[u8]) -> Result<Vec<u8>> {
        let what = || self.what(repo, id);
        if ObjectId::of(raw) != *id {
            return Err(Error::integrity(
                what(),
                "content hash does not match its name",
            ));
        }
        let compressed = repo
            .keys
            .open(&self.aad(repo), raw)
            .map_err(|e| Error::integrity(what(), e))?;
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&compressed[..])
            .and_then(|d| d.take(self.max + 1).read_to_end(&mut out))
            .map_err(|e| Error::integrity(what(), format!("decompression failed: {e}")))?;
        if out.len() as u64 > self.max {
            return Err(Error::integrity(
                what(),
                format!("larger than {} bytes once decompressed", self.max),
            ));
        }
        Ok(out)
    }

    /// Every object of this kind in `repo`'s store, fetched: its id, its key and its bytes
    /// (or why they could not be read). Keys that are not object ids are passed over.
    /// `bar`'s length grows by the objects listed and it counts each one fetched.
    pub async fn fetch_all(
        &self,
        repo: &Repository,
        bar: &indicatif::ProgressBar,
    ) -> Result<Vec<Fetched>> {
        let listed = repo.store.list(self.prefix).await?;
        bar.inc_length(listed.len() as u64);
        let mut out = Vec::with_capacity(listed.len());
        for info in listed {
            bar.inc(1);
            let Some(id) = info
                .key
                .strip_prefix(self.prefix)
                .and_then(|s| s.parse::<ObjectId>().ok())
            else {
                continue;
            };
            let raw = repo.store.get(&info.key).await;
            out.push(Fetched {
                id,
                key: info.key,
                raw,
            });
        }
        Ok(out)
    }
}

/// One object [`Kind::fetch_all`] listed.
pub struct Fetched {
    pub id: ObjectId,
    pub key: String,
    pub raw: std::result::Result<Bytes, StoreError>,
}
