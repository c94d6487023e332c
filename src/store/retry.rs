//! The retry decorator: wraps any [`Store`] and retries its retryable errors
//! ([`StoreError::is_retryable`]) with exponential backoff and full jitter, cancels a request
//! that stalls longer than the watchdog timeout (and retries it), and gives up when the
//! operation's overall deadline has passed. Permanent errors (403, bad signature, not found,
//! clock skew) go straight through: no retry storm.
//!
//! A store that takes requests and answers none ([`StoreError::NoAnswer`]: a connect timeout,
//! or no response within the S3 destination's `answer_timeout_secs`) is not waited out
//! `max_retries` times: after [`UNANSWERED_LIMIT`] such attempts of one operation in a row the
//! operation fails at once. Without that, a blackholed endpoint cost every operation
//! `max_retries + 1` full waits (with the defaults, 11 × 300 s of watchdog: close to an hour).
//!
//! Requests in flight are capped by an adaptive limit (AIMD): a throttling answer (503
//! SlowDown, 429) halves it, a run of successes raises it by one again, up to
//! `max_concurrency`.
//!
//! Counters ([`RetryStats`]) are shared with the caller for metrics and JSON summaries.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;

use super::{
    Backend, DynStore, HealthReport, ObjectInfo, PendingUpload, Store, StoreError, StoreResult,
};

/// Attempts of one operation in a row that got no answer at all ([`StoreError::NoAnswer`])
/// after which it fails without further retries: one lost answer is retried, three in a row
/// mean nothing answers.
pub const UNANSWERED_LIMIT: u32 = 3;

/// `err` with `({why})` added to its detail, for the errors retrying gave up on.
fn annotated(err: StoreError, why: &str) -> StoreError {
    match err {
        StoreError::Transient {
            store,
            op,
            key,
            detail,
        } => StoreError::Transient {
            store,
            op,
            key,
            detail: format!("{detail} ({why})"),
        },
        StoreError::Unreachable {
            store,
            backend,
            detail,
        } => StoreError::Unreachable {
            store,
            backend,
            detail: format!("{detail} ({why})"),
        },
        StoreError::NoAnswer {
            store,
            op,
            key,
            detail,
        } => StoreError::NoAnswer {
            store,
            op,
            key,
            detail: format!("{detail} ({why})"),
        },
        other => other,
    }
}

/// Retry policy. `Default` suits remote object stores.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before retry n is uniform in `[0, min(max_delay, base_delay * 2^n)]` (full jitter).
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Watchdog: one attempt that takes longer than this is cancelled and retried.
    pub request_timeout: Duration,
    /// No new attempt starts after this much time since the first.
    pub deadline: Duration,
    /// Most requests in flight at once; throttling lowers the live limit below this.
    pub max_concurrency: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            deadline: Duration::from_secs(6 * 3600),
            max_concurrency: 32,
        }
    }
}

/// Counters since the store was built.
#[derive(Debug, Default)]
pub struct RetryStats {
    requests: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    gave_up: AtomicU64,
    throttled: AtomicU64,
    limit: AtomicU64,
}

/// A copy of [`RetryStats`] for output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryCounts {
    /// Operations started (not attempts).
    pub requests: u64,
    /// Attempts repeated after a retryable error or a stall.
    pub retries: u64,
    /// Attempts cancelled by the stalled-request watchdog.
    pub timeouts: u64,
    /// Operations that failed after exhausting retries or the deadline.
    pub gave_up: u64,
    /// Attempts the server throttled (503 SlowDown, 429).
    pub throttled: u64,
    /// The adaptive limit of requests in flight right now.
    pub concurrency_limit: u64,
}

impl RetryStats {
    pub fn counts(&self) -> RetryCounts {
        RetryCounts {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            gave_up: self.gave_up.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            concurrency_limit: self.limit.load(Ordering::Relaxed),
        }
    }
}

/// Additive-increase, multiplicative-decrease cap on requests in flight. Invariant: permits
/// in the semaphore (free + held) minus `debt` equals `limit`; shrinking adds debt, which
/// released permits pay off by being forgotten instead of returned.
#[derive(Debug)]
struct Limiter {
    sem: Semaphore,
    limit: AtomicUsize,
    max: usize,
    debt: AtomicUsize,
    streak: AtomicUsize,
}

impl Limiter {
    fn new(max: usize) -> Limiter {
        let max = max.max(1);
        Limiter {
            sem: Semaphore::new(max),
            limit: AtomicUsize::new(max),
            max,
            debt: AtomicUsize::new(0),
            streak: AtomicUsize::new(0),
        }
    }

    async fn acquire(&self) -> SemaphorePermit<'_> {
        self.sem
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed")
    }

    fn release(&self, permit: SemaphorePermit<'_>) {
        let paid = self
            .debt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
            .is_ok();
        if paid {
            permit.forget();
        }
    }

    fn throttled(&self) {
        let cur = self.limit.load(Ordering::SeqCst);
        let new = (cur / 2).max(1);
        if new < cur
            && self
                .limit
                .compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.debt.fetch_add(cur - new, Ordering::SeqCst);
            self.streak.store(0, Ordering::SeqCst);
        }
    }

    fn succeeded(&self) {
        let cur = self.limit.load(Ordering::SeqCst);
        if cur >= self.max || self.streak.fetch_add(1, Ordering::SeqCst) + 1 < cur {
            return;
        }
        self.streak.store(0, Ordering::SeqCst);
        if self
            .limit
            .compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.sem.add_permits(1);
        }
    }
}

#[derive(Debug)]
pub struct RetryStore {
    inner: DynStore,
    cfg: RetryConfig,
    stats: Arc<RetryStats>,
    limiter: Limiter,
}

impl RetryStore {
    pub fn new(inner: DynStore, cfg: RetryConfig) -> Self {
        let limiter = Limiter::new(cfg.max_concurrency);
        let stats = Arc::new(RetryStats::default());
        stats.limit.store(limiter.max as u64, Ordering::Relaxed);
        RetryStore {
            inner,
            cfg,
            stats,
            limiter,
        }
    }

    pub fn stats(&self) -> Arc<RetryStats> {
        self.stats.clone()
    }

    fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .cfg
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX))
            .min(self.cfg.max_delay);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=ms)
        })
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, mut attempt: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let mut retry = 0u32;
        let mut unanswered = 0u32;
        loop {
            let permit = self.limiter.acquire().await;
            let outcome = tokio::time::timeout(self.cfg.request_timeout, attempt()).await;
            self.limiter.release(permit);
            let err = match outcome {
                Ok(Ok(v)) => {
                    self.limiter.succeeded();
                    self.stats.limit.store(
                        self.limiter.limit.load(Ordering::SeqCst) as u64,
                        Ordering::Relaxed,
                    );
                    return Ok(v);
                }
                Ok(Err(e)) => {
                    if matches!(e, StoreError::Throttled { .. }) {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        self.limiter.throttled();
                        self.stats.limit.store(
                            self.limiter.limit.load(Ordering::SeqCst) as u64,
                            Ordering::Relaxed,
                        );
                    }
                    e
                }
                Err(_) => {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    StoreError::Transient {
                        store: self.inner.describe(),
                        op,
                        key: key.to_string(),
                        detail: format!(
                            "no answer within {} (stalled request cancelled by the watchdog)",
                            humantime::format_duration(self.cfg.request_timeout)
                        ),
                    }
                }
            };
            if !err.is_retryable() {
                return Err(err);
            }
            if matches!(err, StoreError::NoAnswer { .. }) {
                unanswered += 1;
            } else {
                unanswered = 0;
            }
            if unanswered >= UNANSWERED_LIMIT {
                self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(store = %self.inner.describe(), op, key, error = %err, "no answer {unanswered} times in a row; giving up");
                return Err(annotated(
                    err,
                    &format!("no answer to {unanswered} attempts in a row: the store answers nothing; not retried further"),
                ));
            }
            let delay = self.backoff(retry);
            let out_of_time = start.elapsed() + delay >= self.cfg.deadline;
            if retry >= self.cfg.max_retries || out_of_time {
                self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
                let why = if out_of_time {
                    format!(
                        "deadline of {} reached",
                        humantime::format_duration(self.cfg.deadline)
                    )
                } else {
                    format!("gave up after {} retries", retry)
                };
                tracing::warn!(store = %self.inner.describe(), op, key, error = %err, "{why}");
                return Err(annotated(err, &why));
            }
            retry += 1;
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::info!(store = %self.inner.describe(), op, key, retry, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait]
impl Store for RetryStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.run("get", key, || self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        self.run("get_range", key, || self.inner.get_range(key, offset, len))
            .await
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.run("put", key, || self.inner.put(key, data.clone()))
            .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn modified(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.run("head", key, || self.inner.modified(key)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        self.run("head", key, || self.inner.head(key)).await
    }

    /// The wrapped store's probe, as it is: no retry, no watchdog (see [`Store::probe`]).
    async fn probe(&self) -> HealthReport {
        self.inner.probe().await
    }

    fn sweep_leftovers(&self) -> usize {
        self.inner.sweep_leftovers()
    }

    fn lock_policy(&self) -> Option<super::LockPolicy> {
        self.inner.lock_policy()
    }

    async fn check_lock_support(&self) -> StoreResult<()> {
        self.run("check_object_lock", "", || self.inner.check_lock_support())
            .await
    }

    async fn lock_until(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.run("lock_until", key, || self.inner.lock_until(key))
            .await
    }

    async fn extend_lock(
        &self,
        key: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()> {
        self.run("extend_lock", key, || self.inner.extend_lock(key, until))
            .await
    }

    async fn purge(&self, key: &str) -> StoreResult<()> {
        self.run("purge", key, || self.inner.purge(key)).await
    }

    async fn pending_uploads(&self) -> StoreResult<Vec<PendingUpload>> {
        self.run("list multipart uploads", "", || {
            self.inner.pending_uploads()
        })
        .await
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> StoreResult<()> {
        self.run("abort multipart upload", &upload.key, || {
            self.inner.abort_upload(upload)
        })
        .await
    }

    async fn aborts_incomplete_uploads(&self) -> StoreResult<Option<bool>> {
        self.run("get bucket lifecycle", "", || {
            self.inner.aborts_incomplete_uploads()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A store whose first `fail` calls fail (transiently or permanently) or hang.
    #[derive(Debug)]
    struct Flaky {
        calls: AtomicU32,
        fail: u32,
        mode: &'static str,
    }

    #[async_trait]
    impl Store for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn backend(&self) -> Backend {
            Backend::Local
        }
        async fn get(&self, key: &str) -> StoreResult<Bytes> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                match self.mode {
                    "hang" => futures::future::pending::<()>().await,
                    "silent" => {
                        return Err(StoreError::NoAnswer {
                            store: "flaky".into(),
                            op: "get",
                            key: key.into(),
                            detail: "HTTP read timeout occurred after 30s".into(),
                        })
                    }
                    "permanent" => {
                        return Err(StoreError::PermissionDenied {
                            store: "flaky".into(),
                            backend: Backend::Local,
                            key: key.into(),
                            detail: "403".into(),
                        })
                    }
                    _ => {
                        return Err(StoreError::Transient {
                            store: "flaky".into(),
                            op: "get",
                            key: key.into(),
                            detail: "503 SlowDown".into(),
                        })
                    }
                }
            }
            Ok(Bytes::from_static(b"ok"))
        }
        async fn get_range(&self, _: &str, _: u64, _: u64) -> StoreResult<Bytes> {
            unreachable!("not used by these tests")
        }
        async fn put(&self, _: &str, _: Bytes) -> StoreResult<()> {
            unreachable!("not used by these tests")
        }
        async fn list(&self, _: &str) -> StoreResult<Vec<ObjectInfo>> {
            unreachable!("not used by these tests")
        }
        async fn delete(&self, _: &str) -> StoreResult<()> {
            unreachable!("not used by these tests")
        }
        async fn head(&self, _: &str) -> StoreResult<Option<ObjectInfo>> {
            unreachable!("not used by these tests")
        }
        async fn probe(&self) -> HealthReport {
            unreachable!("not used by these tests")
        }
    }

    fn flaky(fail: u32, mode: &'static str) -> (Arc<Flaky>, RetryStore) {
        let f = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail,
            mode,
        });
        let cfg = RetryConfig {
            max_retries: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            request_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(3600),
            max_concurrency: 32,
        };
        (f.clone(), RetryStore::new(f, cfg))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_counted() {
        let (f, s) = flaky(3, "transient");
        assert_eq!(&s.get("k").await.unwrap()[..], b"ok");
        assert_eq!(f.calls.load(Ordering::SeqCst), 4);
        assert_eq!(
            s.stats().counts(),
            RetryCounts {
                requests: 1,
                retries: 3,
                timeouts: 0,
                gave_up: 0,
                throttled: 0,
                concurrency_limit: 32
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (f, s) = flaky(100, "permanent");
        assert!(matches!(
            s.get("k").await,
            Err(StoreError::PermissionDenied { .. })
        ));
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        assert_eq!(s.stats().counts().retries, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded() {
        let (f, s) = flaky(100, "transient");
        let e = s.get("k").await.unwrap_err();
        assert!(e.to_string().contains("gave up after 5 retries"), "{e}");
        assert_eq!(f.calls.load(Ordering::SeqCst), 6);
        assert_eq!(s.stats().counts().gave_up, 1);
    }

    /// T08: a store that takes requests and answers none is given up after three unanswered
    /// attempts in a row, not after `max_retries`; one or two lost answers are retried.
    #[tokio::test(start_paused = true)]
    async fn a_store_that_answers_nothing_is_given_up_after_three_attempts() {
        let (f, s) = flaky(100, "silent");
        let e = s.get("k").await.unwrap_err();
        assert!(matches!(e, StoreError::NoAnswer { .. }), "{e:?}");
        assert!(
            e.to_string().contains("no answer to 3 attempts in a row"),
            "{e}"
        );
        assert_eq!(f.calls.load(Ordering::SeqCst), UNANSWERED_LIMIT);
        assert_eq!(s.stats().counts().gave_up, 1);
        assert!(e.hint().unwrap().contains("answer_timeout_secs"));

        let (f, s) = flaky(UNANSWERED_LIMIT - 1, "silent");
        assert_eq!(&s.get("k").await.unwrap()[..], b"ok");
        assert_eq!(f.calls.load(Ordering::SeqCst), UNANSWERED_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_requests_are_cancelled_and_retried() {
        let (f, s) = flaky(2, "hang");
        let t0 = tokio::time::Instant::now();
        assert_eq!(&s.get("k").await.unwrap()[..], b"ok");
        assert_eq!(f.calls.load(Ordering::SeqCst), 3);
        assert_eq!(s.stats().counts().timeouts, 2);
        assert!(t0.elapsed() >= Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_stops_retrying() {
        let f = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail: 100,
            mode: "hang",
        });
        let cfg = RetryConfig {
            max_retries: 1000,
            request_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(35),
            ..RetryConfig::default()
        };
        let s = RetryStore::new(f.clone(), cfg);
        let e = s.get("k").await.unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
        assert!(f.calls.load(Ordering::SeqCst) <= 4);
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let (_, s) = flaky(0, "transient");
        for r in 0..40 {
            assert!(s.backoff(r) <= Duration::from_millis(100));
        }
    }

    #[tokio::test]
    async fn throttling_halves_the_limit_and_successes_raise_it() {
        let l = Limiter::new(8);
        let held: Vec<_> = futures::future::join_all((0..8).map(|_| l.acquire())).await;
        assert_eq!(l.sem.available_permits(), 0);
        l.throttled();
        l.throttled();
        assert_eq!(l.limit.load(Ordering::SeqCst), 2);
        for p in held {
            l.release(p);
        }
        // Six of the eight permits were forgotten: two remain.
        assert_eq!(l.sem.available_permits(), 2);
        for _ in 0..2 {
            l.succeeded();
        }
        assert_eq!(l.limit.load(Ordering::SeqCst), 3);
        assert_eq!(l.sem.available_permits(), 3);
        for _ in 0..100 {
            l.succeeded();
        }
        assert_eq!(l.limit.load(Ordering::SeqCst), 8, "never above the maximum");
        assert_eq!(l.sem.available_permits(), 8);
        for _ in 0..10 {
            l.throttled();
        }
        assert_eq!(l.limit.load(Ordering::SeqCst), 1, "never below one");
    }

    #[tokio::test(start_paused = true)]
    async fn slowdown_is_counted_and_lowers_the_limit() {
        #[derive(Debug)]
        struct Slow(AtomicU32);
        #[async_trait]
        impl Store for Slow {
            fn describe(&self) -> String {
                "slow".into()
            }
            fn backend(&self) -> Backend {
                Backend::Local
            }
            async fn get(&self, key: &str) -> StoreResult<Bytes> {
                if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(StoreError::Throttled {
                        store: "slow".into(),
                        op: "get",
                        key: key.into(),
                        detail: "503 SlowDown".into(),
                    });
                }
                Ok(Bytes::new())
            }
            async fn get_range(&self, _: &str, _: u64, _: u64) -> StoreResult<Bytes> {
                unreachable!("not used by this test")
            }
            async fn put(&self, _: &str, _: Bytes) -> StoreResult<()> {
                unreachable!("not used by this test")
            }
            async fn list(&self, _: &str) -> StoreResult<Vec<ObjectInfo>> {
                unreachable!("not used by this test")
            }
            async fn delete(&self, _: &str) -> StoreResult<()> {
                unreachable!("not used by this test")
            }
            async fn head(&self, _: &str) -> StoreResult<Option<ObjectInfo>> {
                unreachable!("not used by this test")
            }
            async fn probe(&self) -> HealthReport {
                unreachable!("not used by this test")
            }
        }
        let s = RetryStore::new(
            Arc::new(Slow(AtomicU32::new(0))),
            RetryConfig {
                max_concurrency: 16,
                ..RetryConfig::default()
            },
        );
        s.get("k").await.unwrap();
        let c = s.stats().counts();
        assert_eq!((c.throttled, c.retries, c.concurrency_limit), (2, 2, 4));
    }
}
