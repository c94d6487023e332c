//! A store decorator that counts pack reads (`data/` keys): whole-object GETs (and the
//! largest of them), ranged GETs, their bytes and the largest range; and the requests the
//! commit check and prune's listing make: HEADs of packs, GETs of snapshot files, listings by
//! prefix. Wraps a real store (local, Garage); no mock.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

#[derive(Debug)]
pub struct CountingReads {
    pub inner: lifeboat::store::DynStore,
    pub whole: AtomicU64,
    pub largest_whole: AtomicU64,
    pub ranged: AtomicU64,
    pub ranged_bytes: AtomicU64,
    pub largest_range: AtomicU64,
    /// HEAD requests for `data/` keys.
    pub pack_heads: AtomicU64,
    /// GETs of `snapshots/` keys.
    pub snapshot_gets: AtomicU64,
    /// The prefix of every listing, in order.
    pub listings: std::sync::Mutex<Vec<String>>,
    /// Keys left out of every listing (a listing cut short, T10); still there to read.
    pub hidden: std::sync::Mutex<Vec<String>>,
}

impl CountingReads {
    pub fn new(inner: lifeboat::store::DynStore) -> Self {
        CountingReads {
            inner,
            whole: Default::default(),
            largest_whole: Default::default(),
            ranged: Default::default(),
            ranged_bytes: Default::default(),
            largest_range: Default::default(),
            pack_heads: Default::default(),
            snapshot_gets: Default::default(),
            listings: Default::default(),
            hidden: Default::default(),
        }
    }

    /// How many listings of `prefix` were made.
    pub fn listings_of(&self, prefix: &str) -> usize {
        self.listings
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == prefix)
            .count()
    }
}

#[async_trait::async_trait]
impl lifeboat::store::Store for CountingReads {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn backend(&self) -> lifeboat::store::Backend {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> lifeboat::store::StoreResult<bytes::Bytes> {
        let got = self.inner.get(key).await;
        if key.starts_with("data/") {
            self.whole.fetch_add(1, SeqCst);
            if let Ok(b) = &got {
                self.largest_whole.fetch_max(b.len() as u64, SeqCst);
            }
        }
        if key.starts_with("snapshots/") {
            self.snapshot_gets.fetch_add(1, SeqCst);
        }
        got
    }
    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> lifeboat::store::StoreResult<bytes::Bytes> {
        if key.starts_with("data/") {
            self.ranged.fetch_add(1, SeqCst);
            self.ranged_bytes.fetch_add(len, SeqCst);
            self.largest_range.fetch_max(len, SeqCst);
        }
        self.inner.get_range(key, offset, len).await
    }
    async fn put(&self, key: &str, data: bytes::Bytes) -> lifeboat::store::StoreResult<()> {
        self.inner.put(key, data).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> lifeboat::store::StoreResult<Vec<lifeboat::store::ObjectInfo>> {
        self.listings.lock().unwrap().push(prefix.to_string());
        let mut l = self.inner.list(prefix).await?;
        let hidden = self.hidden.lock().unwrap();
        l.retain(|i| !hidden.contains(&i.key));
        Ok(l)
    }
    async fn delete(&self, key: &str) -> lifeboat::store::StoreResult<()> {
        self.inner.delete(key).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> lifeboat::store::StoreResult<Option<lifeboat::store::ObjectInfo>> {
        if key.starts_with("data/") {
            self.pack_heads.fetch_add(1, SeqCst);
        }
        self.inner.head(key).await
    }
    async fn probe(&self) -> lifeboat::store::HealthReport {
        self.inner.probe().await
    }
}
