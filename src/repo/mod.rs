//! The repository format v1 (documented in `docs/format.md`): config, key slots, packs,
//! index, trees, snapshots and locks, on top of any [`Store`].
//!
//! ```text
//! config              plain JSON: version, repository id, chunker and pack parameters
//! keys/<id>           argon2id-wrapped master key, one file per password
//! data/<xx>/<id>      packs of encrypted blobs with an encrypted header
//! index/<id>          encrypted: blob -> (pack, offset, length)
//! snapshots/<id>      encrypted snapshot manifests (the commit points)
//! locks/<id>          encrypted leases
//! prune/<id>          encrypted prune plans: packs condemned by phase 1 of a prune
//! ```
//! Every file object (index, snapshot, lock) is JSON → zstd → XChaCha20-Poly1305 with
//! associated data binding the repository id and object type, stored under the blake3 hash of
//! its stored bytes. Reads check the hash against the name before decrypting.

pub mod clock;
pub mod heal;
pub mod index;
pub mod keys;
pub mod lock;
pub mod multipart_gc;
pub mod object_lock;
pub mod pack;
pub mod prune;
pub mod reach;
pub mod retention;
pub mod set;
pub mod signing;
pub mod snapshot;
pub mod sync;
pub mod tree;
pub mod verify;

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crypto::{Keys, MasterKey};
use crate::ids::{BlobId, IndexId, ObjectId, PackId, RepoId, SnapshotId};
use crate::store::{DynStore, StoreError};
use crate::{Error, Result};
use index::{Index, IndexFile, IndexPack};
use keys::{KdfParams, KeyFile};
use pack::PackEntry;
use snapshot::Snapshot;
use tree::Tree;

pub const FORMAT_VERSION: u32 = 1;
/// zstd level of new repositories. Level 2 (zstd's "fast" strategy with larger tables) is
/// about a third faster than level 3 for a repository about 3 % larger on SQL dumps; the
/// level is stored in `config`, so existing repositories keep theirs.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 2;
/// Highest zstd level `init` accepts (the levels above 19 need a large window and memory).
pub const MAX_COMPRESSION_LEVEL: i32 = 19;
/// Decompressed size cap for file objects (index, snapshot, lock): bombs are refused.
const MAX_FILE_OBJECT: u64 = 1 << 30;
/// How many objects are fetched concurrently when loading many small files.
const LOAD_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    pub id: RepoId,
    pub created: DateTime<Utc>,
    pub chunker: ChunkerParams,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// zstd level for blobs.
    pub compression_level: i32,
}

/// Smallest and largest pack size a repository may use (offsets in a pack are 32-bit).
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u32> = 64 << 10..=512 << 20;
const MIN_SIZE_RANGE: std::ops::RangeInclusive<u32> = 64..=1 << 20;
const AVG_SIZE_RANGE: std::ops::RangeInclusive<u32> = 256..=4 << 20;
const MAX_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1024..=16 << 20;

impl ChunkerParams {
    /// The first parameter out of its range, as (key, value, what is allowed).
    fn out_of_range(&self) -> Option<(&'static str, i64, String)> {
        let r = |r: &std::ops::RangeInclusive<u32>| format!("{}–{}", r.start(), r.end());
        if !MIN_SIZE_RANGE.contains(&self.min_size) {
            return Some(("chunker.min_size", self.min_size.into(), r(&MIN_SIZE_RANGE)));
        }
        if !AVG_SIZE_RANGE.contains(&self.avg_size) {
            return Some(("chunker.avg_size", self.avg_size.into(), r(&AVG_SIZE_RANGE)));
        }
        if !MAX_SIZE_RANGE.contains(&self.max_size) {
            return Some(("chunker.max_size", self.max_size.into(), r(&MAX_SIZE_RANGE)));
        }
        if self.min_size > self.avg_size {
            return Some((
                "chunker.min_size",
                self.min_size.into(),
                format!("at most chunker.avg_size ({})", self.avg_size),
            ));
        }
        if self.avg_size > self.max_size {
            return Some((
                "chunker.avg_size",
                self.avg_size.into(),
                format!("at most chunker.max_size ({})", self.max_size),
            ));
        }
        None
    }
}

impl Config {
    /// The first value out of its range, as (key, value, what is allowed) — SR-17: a damaged
    /// or hand-edited config must not reach the chunker or the packer (a zero average chunk
    /// size indexes out of bounds; tiny packs flood the store).
    pub fn out_of_range(&self) -> Option<(&'static str, i64, String)> {
        if let Some(bad) = self.chunker.out_of_range() {
            return Some(bad);
        }
        if !PACK_SIZE_RANGE.contains(&self.pack_size) {
            return Some((
                "pack_size",
                self.pack_size.into(),
                format!("{}–{}", PACK_SIZE_RANGE.start(), PACK_SIZE_RANGE.end()),
            ));
        }
        if !(0..=MAX_COMPRESSION_LEVEL).contains(&self.compression_level) {
            return Some((
                "compression_level",
                self.compression_level.into(),
                format!("0–{MAX_COMPRESSION_LEVEL}"),
            ));
        }
        None
    }
}

/// Options for `init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    pub pack_size: Option<u32>,
    pub compression_level: Option<i32>,
}

/// The kinds of encrypted file objects, with their key prefix and associated-data tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Index,
    Snapshot,
    Lock,
    /// A prune's stored plan of packs to delete (`prune/<id>`, see `repo::prune`).
    PrunePlan,
    /// A recovery-point set manifest (`sets/<id>`, see `repo::set`).
    Set,
    /// The Object Lock extension pass's record of retain-until dates (`retention/<id>`, see
    /// `repo::object_lock`).
    LockRecord,
}

impl ObjectKind {
    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Lock => "locks",
            ObjectKind::PrunePlan => "prune",
            ObjectKind::Set => "sets",
            ObjectKind::LockRecord => "retention",
        }
    }
    pub fn key(self, id: &ObjectId) -> String {
        format!("{}/{}", self.dir(), id)
    }
    pub fn aad(self, repo: &RepoId) -> Vec<u8> {
        let mut aad = b"lbfile1\0".to_vec();
        aad.extend_from_slice(repo.as_bytes());
        aad.extend_from_slice(self.dir().as_bytes());
        aad
    }
}

pub fn pack_key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

pub fn parse_pack_key(key: &str) -> Option<PackId> {
    key.strip_prefix("data/")?.split('/').nth(1)?.parse().ok()
}

/// An opened (unlocked) repository. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    pub store: DynStore,
    pub config: Arc<Config>,
    pub keys: Arc<Keys>,
    pub key_id: ObjectId,
    master: Arc<MasterKey>,
    /// Other regions to read a blob from when it fails to read or verify in `store`
    /// (`restore --allow-fallback`); empty by default.
    fallbacks: Arc<Vec<(String, DynStore)>>,
    /// One line per blob or pack that was read from a fallback region.
    fallback_log: Arc<std::sync::Mutex<Vec<String>>>,
    /// How far the store's clock is from this host's, once a lock measured it
    /// ([`Repository::now`]): leases, grace periods and upload ages are judged in store time.
    clock: Arc<clock::StoreClock>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.describe())
            .field("id", &self.config.id)
            .finish()
    }
}

/// The ids of the `kind` objects one store holds, without opening a repository on it (which
/// snapshots a single region has, behind a multi-region repository).
pub async fn list_ids_in(store: &DynStore, kind: ObjectKind) -> Result<Vec<ObjectId>> {
    let prefix = format!("{}/", kind.dir());
    Ok(store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|i| i.key.strip_prefix(&prefix).and_then(|s| s.parse().ok()))
        .collect())
}

/// Reads `config`, mapping a missing one to "repository not found" and a newer format to a
/// refusal before anything is written (T32).
pub async fn read_config(store: &DynStore) -> Result<Config> {
    let raw = match store.get("config").await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Err(Error::RepoNotFound {
                location: store.describe(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
        Error::integrity(
            format!("{}/config", store.describe()),
            format!("not valid JSON: {e}"),
        )
    })?;
    let version = v.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            location: store.describe(),
            version,
            supported: FORMAT_VERSION,
        });
    }
    let config: Config = serde_json::from_value(v)
        .map_err(|e| Error::integrity(format!("{}/config", store.describe()), e))?;
    if let Some((key, value, allowed)) = config.out_of_range() {
        return Err(Error::integrity(
            format!("{}/config", store.describe()),
            format!(
                "{key} = {value} is out of range (allowed: {allowed}); the file was damaged or \
                 edited by hand — put back the value it was created with (a copy of `config` \
                 from another region or an older backup of the repository)"
            ),
        ));
    }
    Ok(config)
}

impl Repository {
    /// Creates a new repository with one key slot for `password`.
    pub async fn init(store: DynStore, password: &[u8], opts: InitOptions) -> Result<Repository> {
        if store.head("config").await?.is_some() {
            return Err(Error::RepoExists {
                location: store.describe(),
            });
        }
        let c = opts.chunker;
        let level = opts.compression_level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
        if !(0..=MAX_COMPRESSION_LEVEL).contains(&level) {
            return Err(Error::Usage(format!(
                "compression level {level} is out of range (0 = off, 1–{MAX_COMPRESSION_LEVEL})"
            )));
        }
        let config = Config {
            version: FORMAT_VERSION,
            id: RepoId::random(),
            created: Utc::now(),
            chunker: c,
            pack_size: opts.pack_size.unwrap_or(8 << 20),
            compression_level: level,
        };
        if let Some((key, value, allowed)) = config.out_of_range() {
            return Err(Error::Usage(format!(
                "{key} = {value} is out of range (allowed: {allowed})"
            )));
        }
        let master = MasterKey::generate();
        let kdf = opts.kdf;
        let id = config.id;
        let pw = password.to_vec();
        let key = tokio::task::spawn_blocking(move || {
            KeyFile::create(&master, &id, &pw, kdf).map(|k| (k, master))
        })
        .await
        .expect("kdf thread")?;
        let (keyfile, master) = key;
        let key_bytes = keyfile.to_bytes();
        let key_id = KeyFile::id_of(&key_bytes);
        // Key before config: a config without a key would be an unopenable repository.
        store
            .put(&format!("keys/{key_id}"), Bytes::from(key_bytes))
            .await?;
        store
            .put(
                "config",
                Bytes::from(serde_json::to_vec_pretty(&config).expect("config serializes")),
            )
            .await?;
        Ok(Repository {
            store,
            config: Arc::new(config),
            keys: Arc::new(Keys::derive(&master)),
            key_id,
            master: Arc::new(master),
            fallbacks: Arc::default(),
            fallback_log: Arc::default(),
            clock: Arc::default(),
        })
    }

    /// Opens a repository with a password, trying every key slot.
    pub async fn open(store: DynStore, password: &[u8]) -> Result<Repository> {
        let config = read_config(&store).await?;
        let (master, key_id) = Self::unlock(&store, &config.id, password).await?;
        Ok(Repository {
            store,
            config: Arc::new(config),
            keys: Arc::new(Keys::derive(&master)),
            key_id,
            master: Arc::new(master),
            fallbacks: Arc::default(),
            fallback_log: Arc::default(),
            clock: Arc::default(),
        })
    }

    async fn unlock(
        store: &DynStore,
        repo: &RepoId,
        password: &[u8],
    ) -> Result<(MasterKey, ObjectId)> {
        for info in store.list("keys/").await? {
            let Some(id) = info
                .key
                .strip_prefix("keys/")
                .and_then(|s| s.parse::<ObjectId>().ok())
            else {
                continue;
            };
            let raw = store.get(&info.key).await?;
            if ObjectId::of(&raw) != id {
                tracing::warn!(key = %info.key, "key file does not match its name; skipping it");
                continue;
            }
            let Ok(kf) = serde_json::from_slice::<KeyFile>(&raw) else {
                tracing::warn!(key = %info.key, "key file is damaged; skipping it");
                continue;
            };
            let pw = password.to_vec();
            let repo = *repo;
            let opened = tokio::task::spawn_blocking(move || {
                crate::failpoint::panic("panic-opening-key");
                kf.open(&pw, &repo)
            })
            .await
            .expect("kdf thread")?;
            if let Some(m) = opened {
                return Ok((m, id));
            }
        }
        Err(Error::WrongPassword {
            location: store.describe(),
        })
    }

    /// Wall seconds of one derivation with the parameters of the key slot this repository was
    /// opened with ([`keys::derivation_secs`]), measured on a blocking thread.
    pub async fn key_derivation_secs(&self) -> Result<f64> {
        let key = format!("keys/{}", self.key_id);
        let raw = self.store.get(&key).await?;
        let kf: KeyFile = serde_json::from_slice(&raw)
            .map_err(|e| Error::integrity(format!("{}/{key}", self.store.describe()), e))?;
        tokio::task::spawn_blocking(move || keys::derivation_secs(kf.params))
            .await
            .expect("kdf thread")
    }

    /// Sweeps what killed writers left in the store (temp files no live writer owns, T01),
    /// off the async threads; returns how many were removed.
    pub async fn sweep_leftovers(&self) -> usize {
        let store = self.store.clone();
        let n = tokio::task::spawn_blocking(move || store.sweep_leftovers())
            .await
            .unwrap_or(0);
        if n > 0 {
            tracing::info!(files = n, store = %self.store.describe(), "removed temp files left by interrupted writes");
        }
        n
    }

    pub fn location(&self) -> String {
        self.store.describe()
    }

    /// The same repository (same keys) read through another store, e.g. one region of a
    /// multi-region repository. Checks that the store holds this repository's config.
    pub async fn with_store(&self, store: DynStore) -> Result<Repository> {
        let config = read_config(&store).await?;
        if config.id != self.config.id {
            return Err(Error::integrity(
                format!("{}/config", store.describe()),
                format!(
                    "holds repository {} but {} was expected",
                    config.id, self.config.id
                ),
            ));
        }
        Ok(Repository {
            store,
            fallbacks: Arc::default(),
            fallback_log: Arc::default(),
            clock: Arc::default(),
            ..self.clone()
        })
    }

    /// Reads that fail or do not verify in `store` are retried from these regions, in order.
    pub fn with_fallbacks(mut self, fallbacks: Vec<(String, DynStore)>) -> Repository {
        self.fallbacks = Arc::new(fallbacks);
        self
    }

    pub fn fallbacks(&self) -> &[(String, DynStore)] {
        &self.fallbacks
    }

    /// Records (and logs) a read that was served by a fallback region.
    pub fn note_fallback(&self, msg: String) {
        tracing::warn!("{msg}");
        self.fallback_log.lock().expect("fallback log").push(msg);
    }

    /// Every read served by a fallback region so far.
    pub fn fallback_reads(&self) -> Vec<String> {
        self.fallback_log.lock().expect("fallback log").clone()
    }

    pub fn id(&self) -> &RepoId {
        &self.config.id
    }

    // ----- key slots -------------------------------------------------------------------

    /// Adds a key slot for `password`; proves the new slot opens before returning its id.
    pub async fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<ObjectId> {
        let master = (*self.master).clone();
        let repo = *self.id();
        let pw = password.to_vec();
        let kf = tokio::task::spawn_blocking(move || KeyFile::create(&master, &repo, &pw, kdf))
            .await
            .expect("kdf thread")?;
        let bytes = kf.to_bytes();
        let id = KeyFile::id_of(&bytes);
        let pw = password.to_vec();
        let kf2 = kf.clone();
        let check = tokio::task::spawn_blocking(move || kf2.open(&pw, &repo))
            .await
            .expect("kdf thread")?;
        if check.is_none() {
            return Err(Error::Other(
                "new key slot did not open with its password; nothing was written".into(),
            ));
        }
        self.store
            .put(&format!("keys/{id}"), Bytes::from(bytes))
            .await?;
        Ok(id)
    }

    pub async fn list_keys(&self) -> Result<Vec<(ObjectId, KeyFile)>> {
        let mut out = Vec::new();
        for info in self.store.list("keys/").await? {
            let Some(id) = info
                .key
                .strip_prefix("keys/")
                .and_then(|s| s.parse::<ObjectId>().ok())
            else {
                continue;
            };
            let raw = self.store.get(&info.key).await?;
            match serde_json::from_slice::<KeyFile>(&raw) {
                Ok(k) => out.push((id, k)),
                Err(e) => tracing::warn!(key = %info.key, error = %e, "damaged key file"),
            }
        }
        Ok(out)
    }

    pub async fn remove_key(&self, id: &ObjectId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::Usage(format!(
                "key {} is the one this session was opened with; open with another password to remove it",
                id.short()
            )));
        }
        let keys = self.list_keys().await?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::Usage(format!(
                "no key slot {id}; `lifeboat key list` shows them"
            )));
        }
        if keys.len() <= 1 {
            return Err(Error::Usage("refusing to remove the last key slot".into()));
        }
        self.store.delete(&format!("keys/{id}")).await?;
        Ok(())
    }

    // ----- encrypted file objects --------------------------------------------------------

    pub fn seal_json<T: Serialize>(&self, kind: ObjectKind, value: &T) -> (ObjectId, Vec<u8>) {
        let json = serde_json::to_vec(value).expect("repository objects serialize");
        let compressed = zstd::bulk::compress(&json, 3).expect("zstd compresses in memory");
        let sealed = self.keys.seal(&kind.aad(self.id()), &compressed);
        (ObjectId::of(&sealed), sealed)
    }

    pub async fn save_json<T: Serialize>(&self, kind: ObjectKind, value: &T) -> Result<ObjectId> {
        let (id, sealed) = self.seal_json(kind, value);
        self.store.put(&kind.key(&id), Bytes::from(sealed)).await?;
        Ok(id)
    }

    pub fn open_json<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        id: &ObjectId,
        raw: &[u8],
    ) -> Result<T> {
        let what = || format!("{} {}", kind.dir(), id);
        if ObjectId::of(raw) != *id {
            return Err(Error::integrity(
                what(),
                "content hash does not match its name",
            ));
        }
        let compressed = self
            .keys
            .open(&kind.aad(self.id()), raw)
            .map_err(|e| Error::integrity(what(), e))?;
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(&compressed[..])
            .and_then(|d| d.take(MAX_FILE_OBJECT + 1).read_to_end(&mut json))
            .map_err(|e| Error::integrity(what(), format!("decompression failed: {e}")))?;
        if json.len() as u64 > MAX_FILE_OBJECT {
            return Err(Error::integrity(what(), "decompresses to more than 1 GiB"));
        }
        serde_json::from_slice(&json)
            .map_err(|e| Error::integrity(what(), format!("malformed: {e}")))
    }

    pub async fn load_json<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        id: &ObjectId,
    ) -> Result<T> {
        let raw = self.store.get(&kind.key(id)).await?;
        self.open_json(kind, id, &raw)
    }

    pub async fn list_ids(&self, kind: ObjectKind) -> Result<Vec<ObjectId>> {
        list_ids_in(&self.store, kind).await
    }

    // ----- index ----------------------------------------------------------------------

    pub async fn load_index(&self) -> Result<Index> {
        let files = self.load_index_files().await?;
        let mut index = Index::default();
        for (id, f) in &files {
            index.add_file(*id, f);
        }
        Ok(index)
    }

    pub async fn save_index(&self, packs: Vec<IndexPack>) -> Result<IndexId> {
        self.save_json(ObjectKind::Index, &IndexFile { packs })
            .await
    }

    /// Checks a finished pack, then stores it. Its blobs were each verified right after sealing
    /// and hashed into its name as they landed in it; [`pack::check_finished`] re-hashes the
    /// whole pack against that name and reads its header back, so a bit flipped anywhere between
    /// sealing and the store is caught here, not by a restore months later (T27). A blob damaged
    /// before it reached its pack was sealed again; a pack damaged after it was finished is
    /// mended from its stripe parity ([`pack::mend`]) and checked again. Damage that cannot be
    /// mended (more than one stripe) fails the backup and stores nothing.
    pub async fn store_pack(&self, p: pack::FinishedPack) -> Result<IndexPack> {
        self.store_pack_mending(p).await.map(|(ip, _)| ip)
    }

    /// [`Repository::store_pack`], also saying whether the pack had to be mended.
    pub async fn store_pack_mending(&self, mut p: pack::FinishedPack) -> Result<(IndexPack, bool)> {
        let keys = self.keys.clone();
        let repo_id: RepoId = *self.id();
        crate::failpoint::flip("flip-pack", &mut p.bytes);
        let (
            pack::FinishedPack {
                id, bytes, entries, ..
            },
            mended,
        ) = tokio::task::spawn_blocking(move || {
            let Err(found) = pack::check_finished(&keys, &repo_id, &p) else {
                return Ok((p, false));
            };
            let stripe = pack::mend(&mut p).map_err(|why| match &found {
                Error::Integrity { object, detail } => Error::Integrity {
                    object: object.clone(),
                    detail: format!("{detail}; it cannot be rebuilt: {why}"),
                },
                _ => found,
            })?;
            pack::check_finished(&keys, &repo_id, &p)?;
            tracing::warn!(pack = %p.id, stripe,
                    "a finished pack changed in memory before its upload (memory or CPU fault?); \
                     rebuilt it from its parity");
            Ok((p, true))
        })
        .await
        .expect("check thread")
        .map_err(|e| match e {
            Error::Integrity { object, detail } => Error::DamagedBeforeUpload { object, detail },
            other => other,
        })?;
        let size = bytes.len() as u64;
        // The buffer goes back to the pool for the next pack once the store is done with it.
        self.store
            .put(&pack_key(&id), crate::store::pool::PACKS.into_bytes(bytes))
            .await?;
        tracing::debug!(pack = %id, size, blobs = entries.len(), "pack stored");
        Ok((IndexPack::new(id, size, &entries), mended))
    }

    /// Reads the header of a pack from the store (used to adopt packs a killed run stored
    /// but never indexed).
    pub async fn read_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        let key = pack_key(id);
        if size < pack::TRAILER_LEN as u64 {
            return Err(Error::integrity(
                format!("pack {id}"),
                "too short to be a pack (truncated?)",
            ));
        }
        let trailer = self
            .store
            .get_range(
                &key,
                size - pack::TRAILER_LEN as u64,
                pack::TRAILER_LEN as u64,
            )
            .await?;
        let (off, len) = pack::header_range(id, size, &trailer)?;
        let sealed = self.store.get_range(&key, off, len).await?;
        pack::parse_header(&self.keys, self.id(), id, &sealed, off)
    }

    // ----- blobs, trees, snapshots -------------------------------------------------------

    pub async fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let first = match self.read_blob_from(&self.store, index, id).await {
            Ok(b) => return Ok(b),
            Err(e @ Error::Interrupted) => return Err(e),
            Err(e) => e,
        };
        for (name, store) in self.fallbacks.iter() {
            match self.read_blob_from(store, index, id).await {
                Ok(b) => {
                    self.note_fallback(format!(
                        "blob {id}: read from region {name} because {}: {first}",
                        self.store.describe()
                    ));
                    return Ok(b);
                }
                Err(e) => {
                    tracing::warn!(region = %name, blob = %id, error = %e, "fallback read failed too")
                }
            }
        }
        Err(first)
    }

    async fn read_blob_from(
        &self,
        store: &DynStore,
        index: &Index,
        id: &BlobId,
    ) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| {
            Error::integrity(
                format!("blob {id}"),
                "not in the index (its pack is missing)",
            )
        })?;
        let (pack, _) = index.pack(loc.pack);
        let sealed = store
            .get_range(
                &pack_key(&pack),
                loc.entry.offset as u64,
                loc.entry.length as u64,
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => Error::integrity(
                    format!("pack {pack}"),
                    format!("missing (needed for blob {id})"),
                ),
                other => other.into(),
            })?;
        pack::open_blob(&self.keys, self.id(), &loc.entry, &sealed).map_err(|e| match e {
            Error::Integrity { detail, .. } => {
                Error::integrity(format!("pack {pack}"), format!("blob {id}: {detail}"))
            }
            other => other,
        })
    }

    pub async fn load_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        let raw = self.read_blob(index, id).await?;
        serde_json::from_slice(&raw)
            .map_err(|e| Error::integrity(format!("tree {id}"), format!("malformed: {e}")))
    }

    /// Every pack the store lists under `data/`, with its size (keys that are not pack
    /// names are left out). A listing may be incomplete (T10): callers HEAD what it lacks
    /// before taking a pack for lost.
    pub async fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(self
            .store
            .list("data/")
            .await?
            .into_iter()
            .filter_map(|i| parse_pack_key(&i.key).map(|id| (id, i.size)))
            .collect())
    }

    /// Every snapshot, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let ids = self.list_ids(ObjectKind::Snapshot).await?;
        let mut snaps: Vec<(SnapshotId, Snapshot)> = stream::iter(ids)
            .map(|id| async move {
                self.load_json::<Snapshot>(ObjectKind::Snapshot, &id)
                    .await
                    .map(|s| (id, s))
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(snaps)
    }

    /// Every snapshot that can be read, oldest first, and the snapshot files that cannot —
    /// damaged: they fail their seal, or do not parse — each with why (T15: one damaged file
    /// does not hide the others). A file deleted meanwhile (a concurrent `forget`) is
    /// skipped; any other error (the store's) fails the listing.
    pub async fn list_snapshots_readable(
        &self,
    ) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, Error)>)> {
        let ids = self.list_ids(ObjectKind::Snapshot).await?;
        let loaded: Vec<(SnapshotId, Result<Snapshot>)> = stream::iter(ids)
            .map(|id| async move {
                (
                    id,
                    self.load_json::<Snapshot>(ObjectKind::Snapshot, &id).await,
                )
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        let mut snaps = Vec::new();
        let mut damaged = Vec::new();
        for (id, r) in loaded {
            match r {
                Ok(s) => snaps.push((id, s)),
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e @ Error::Integrity { .. }) => damaged.push((id, e)),
                Err(e) => return Err(e),
            }
        }
        snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        damaged.sort_by_key(|(id, _)| *id);
        Ok((snaps, damaged))
    }

    /// What `latest` means among `snaps` (oldest first, as [`Self::list_snapshots`] gives
    /// them): the newest by manifest time that is not dated more than
    /// [`FUTURE_TOLERANCE`](retention::FUTURE_TOLERANCE) after the store's current time
    /// ([`Self::now`]). No honest backup writes a snapshot dated ahead (T16: a forgery by a
    /// writer who may only add, or a host whose clock is wrong), so `latest` passes over it
    /// with a warning naming it and why; its id still restores it. Also returns how many
    /// were passed over.
    pub fn latest_of(
        &self,
        mut snaps: Vec<(SnapshotId, Snapshot)>,
    ) -> (Option<(SnapshotId, Snapshot)>, usize) {
        let now = self.now();
        let when = retention::When {
            now: Some(now),
            within_from_now: false,
        };
        let mut passed = 0;
        while let Some((id, s)) = snaps.pop() {
            if !when.is_future(&s.time) {
                return (Some((id, s)), passed);
            }
            passed += 1;
            let at = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            tracing::warn!(
                "snapshot {} is not taken as `latest`: it is dated {}, {} after the store's current time ({}), which no honest backup writes (a forged snapshot or a host with a wrong clock; `lifeboat verify` names it); give its id to restore it anyway",
                id.short(),
                at(s.time),
                crate::sys::human::duration((s.time - now).num_seconds() as f64),
                at(now)
            );
        }
        (None, passed)
    }

    /// Resolves `latest` or an id prefix (at least 4 hex characters). A prefix is matched
    /// against the snapshot files' names and only the match is read, so one damaged snapshot
    /// file does not keep the others from being restored (T15).
    pub async fn find_snapshot(&self, query: &str) -> Result<(SnapshotId, Snapshot)> {
        if query == "latest" {
            let snaps = self.list_snapshots().await?;
            let (newest, passed) = self.latest_of(snaps);
            return newest.ok_or_else(|| Error::SnapshotNotFound {
                query: if passed == 0 {
                    "latest (the repository has no snapshots)".into()
                } else {
                    format!("latest (all {passed} snapshots are dated in the future; give an id to restore one of them)")
                },
            });
        }
        if query.len() < 4 || !query.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Usage(format!(
                "{query:?} is not a snapshot id: give `latest` or at least 4 hex characters of an id"
            )));
        }
        let q = query.to_ascii_lowercase();
        let mut hits: Vec<_> = self
            .list_ids(ObjectKind::Snapshot)
            .await?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&q))
            .collect();
        match hits.len() {
            0 => Err(Error::SnapshotNotFound {
                query: query.into(),
            }),
            1 => {
                let id = hits.pop().expect("one");
                let snap = self
                    .load_json::<Snapshot>(ObjectKind::Snapshot, &id)
                    .await?;
                Ok((id, snap))
            }
            n => Err(Error::AmbiguousSnapshot {
                query: query.into(),
                count: n,
            }),
        }
    }
}
