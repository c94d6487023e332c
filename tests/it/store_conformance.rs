//! One conformance suite for every `Store`: the local directory store and the S3 store
//! against a real Garage server (directly, and through the retry decorator). Covers
//! get/put/overwrite, not-found, ranges (including past the end), list with prefixes and
//! more than 1000 keys (S3 pagination), delete, head, and a multipart-sized object.

use crate::support;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use lifeboat::store::retry::{RetryConfig, RetryStore};
use lifeboat::store::s3::{S3Config, S3Store};
use lifeboat::store::{DynStore, LocalStore, Store, StoreError};
use support::garage::{self, Garage};

async fn conformance(s: DynStore) {
    let name = s.describe();
    // put / get / overwrite
    s.put("data/ab/ab01", Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    assert_eq!(
        &s.get("data/ab/ab01").await.unwrap()[..],
        b"hello world",
        "{name}"
    );
    s.put("data/ab/ab01", Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    s.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(s.get("empty").await.unwrap().len(), 0);
    assert_eq!(s.head("empty").await.unwrap().unwrap().size, 0);

    // not found
    let e = s.get("data/zz/missing").await.unwrap_err();
    assert!(e.is_not_found(), "{name}: {e}");
    assert!(!e.is_retryable());
    assert!(s.head("data/zz/missing").await.unwrap().is_none());
    assert!(s
        .get_range("data/zz/missing", 0, 1)
        .await
        .unwrap_err()
        .is_not_found());

    // ranges
    assert_eq!(
        &s.get_range("data/ab/ab01", 6, 5).await.unwrap()[..],
        b"world"
    );
    assert_eq!(&s.get_range("data/ab/ab01", 0, 1).await.unwrap()[..], b"h");
    let past = s.get_range("data/ab/ab01", 6, 50).await.unwrap_err();
    assert!(
        !past.is_retryable() && !past.is_not_found(),
        "{name}: {past}"
    );
    assert!(past.to_string().contains("past the end"), "{name}: {past}");

    // head
    let h = s.head("data/ab/ab01").await.unwrap().unwrap();
    assert_eq!((h.key.as_str(), h.size), ("data/ab/ab01", 11));

    // list: prefixes, sizes, order
    s.put("data/cd/cd02", Bytes::from_static(b"xyz"))
        .await
        .unwrap();
    s.put("snapshots/s1", Bytes::from_static(b"s"))
        .await
        .unwrap();
    let l = s.list("data/").await.unwrap();
    let keys: Vec<(&str, u64)> = l.iter().map(|i| (i.key.as_str(), i.size)).collect();
    assert_eq!(
        keys,
        vec![("data/ab/ab01", 11), ("data/cd/cd02", 3)],
        "{name}"
    );
    assert_eq!(s.list("data/cd").await.unwrap().len(), 1);
    assert_eq!(s.list("snapshots/").await.unwrap().len(), 1);
    assert!(s.list("index/").await.unwrap().is_empty());

    // more than one page of keys
    let n = 1100;
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| {
            let s = s.clone();
            async move {
                s.put(&format!("many/{i:05}"), Bytes::from(format!("v{i}")))
                    .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let many = s.list("many/").await.unwrap();
    assert_eq!(many.len(), n, "{name}: pagination lost keys");
    assert_eq!(many[0].key, "many/00000");
    assert_eq!(many[n - 1].key, format!("many/{:05}", n - 1));
    assert!(many.windows(2).all(|w| w[0].key < w[1].key));

    // a large object (multipart for S3 with the small test threshold)
    let big: Vec<u8> = (0..12 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    s.put("data/ef/big", Bytes::from(big.clone()))
        .await
        .unwrap();
    assert_eq!(
        s.head("data/ef/big").await.unwrap().unwrap().size,
        big.len() as u64
    );
    assert!(
        s.get("data/ef/big").await.unwrap() == big,
        "{name}: big object differs"
    );
    assert_eq!(
        &s.get_range("data/ef/big", 7 * 1024 * 1024, 100)
            .await
            .unwrap()[..],
        &big[7 * 1024 * 1024..7 * 1024 * 1024 + 100]
    );

    // delete (idempotent)
    s.delete("snapshots/s1").await.unwrap();
    s.delete("snapshots/s1").await.unwrap();
    assert!(s.head("snapshots/s1").await.unwrap().is_none());
    assert!(s.list("snapshots/").await.unwrap().is_empty());
}

fn s3_store(g: &Garage, prefix: &str, dir: &std::path::Path) -> S3Store {
    let mut cfg = S3Config::from_url(&g.url(prefix)).unwrap();
    cfg.multipart_threshold_mib = 5;
    cfg.part_size_mib = 5;
    cfg.credentials_file = Some(garage::credentials_file(dir, garage::SECRET));
    S3Store::new(cfg).unwrap()
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(LocalStore::new(dir.path()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_against_garage() {
    let g = Garage::start("conf1");
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(s3_store(&g, "plain", dir.path()))).await;
    let direct = s3_store(&g, "", dir.path());
    assert!(direct.pending_multipart_uploads().await.unwrap().is_empty());
    // The same through the retry decorator, under another prefix (prefixes isolate).
    let retry = RetryStore::new(
        Arc::new(s3_store(&g, "nested/retry", dir.path())),
        RetryConfig::default(),
    );
    let stats = retry.stats();
    conformance(Arc::new(retry)).await;
    assert!(stats.counts().requests > 1100);
}

/// The same suite against a second, independent S3 implementation (s3s-fs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_against_s3s_fs() {
    let server = support::s3s::S3sFs::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        S3Config::from_url(&garage::url_for(&server.endpoint(), "us-east-1", "p")).unwrap();
    cfg.multipart_threshold_mib = 5;
    cfg.part_size_mib = 5;
    cfg.credentials_file = Some(garage::credentials_file(dir.path(), garage::SECRET));
    conformance(Arc::new(S3Store::new(cfg).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_are_classified() {
    let g = Garage::start("conf2");
    let dir = tempfile::tempdir().unwrap();
    // Wrong secret: permanent, names the store, and never contains the secret.
    let wrong = "0000000000000000000000000000000000000000000000000000000000000bad";
    let mut cfg = S3Config::from_url(&g.url("x")).unwrap();
    cfg.credentials_file = Some(garage::credentials_file(dir.path(), wrong));
    let s = S3Store::new(cfg).unwrap();
    let e = s.put("k", Bytes::from_static(b"v")).await.unwrap_err();
    assert!(matches!(e, StoreError::PermissionDenied { .. }), "{e:?}");
    assert!(!e.is_retryable());
    let msg = format!("{e} {e:?} {s:?}");
    assert!(msg.contains("s3:conf2:backups/x"), "{msg}");
    assert!(
        !msg.contains(wrong) && !msg.contains(garage::SECRET),
        "{msg}"
    );
    // Unknown bucket: permanent and says so.
    let mut cfg =
        S3Config::from_url(&g.url("x").replace("s3://backups/", "s3://no-such-bucket/")).unwrap();
    cfg.credentials_file = Some(garage::credentials_file(dir.path(), garage::SECRET));
    let e = S3Store::new(cfg)
        .unwrap()
        .put("k", Bytes::from_static(b"v"))
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("no-such-bucket"), "{e}");
    // Nothing listening: retryable (unreachable).
    let mut cfg = S3Config::from_url(&garage::url_for(
        &format!("http://127.0.0.1:{}", garage::free_port()),
        "conf2",
        "x",
    ))
    .unwrap();
    cfg.credentials_file = Some(garage::credentials_file(dir.path(), garage::SECRET));
    let e = S3Store::new(cfg).unwrap().get("k").await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

/// Multipart uploads through a proxy that fails 30 % of requests with 500/503: every put ends
/// with the right bytes, and every failed attempt's upload was aborted, so no pending
/// multipart upload is left in the bucket. (A CreateMultipartUpload whose answer is lost
/// leaves an upload the client never learns of: only a lifecycle rule or a `gc --multipart`
/// can clean that, so the proxy injects its errors before forwarding here.)
#[test]
fn failed_multipart_uploads_are_aborted() {
    use support::fault_proxy::{FaultProxy, Faults};
    let g = Garage::start("mpu");
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(
        g.s3_port,
        Faults {
            error_rate: 0.3,
            stall_rate: 0.0,
            cut_rate: 0.0,
            stall: std::time::Duration::ZERO,
            after_forwarding: false,
            reject_parts: false,
        },
        99,
    );
    let rejecting = FaultProxy::start(
        g.s3_port,
        Faults {
            error_rate: 0.0,
            stall_rate: 0.0,
            cut_rate: 0.0,
            stall: std::time::Duration::ZERO,
            after_forwarding: false,
            reject_parts: true,
        },
        1,
    );
    // The proxy runs its own runtime; the client gets another.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = S3Config::from_url(&garage::url_for(&proxy.endpoint(), "mpu", "m")).unwrap();
        cfg.multipart_threshold_mib = 5;
        cfg.part_size_mib = 5;
        cfg.credentials_file = Some(garage::credentials_file(dir.path(), garage::SECRET));
        let retry_cfg = RetryConfig {
            max_retries: 20,
            ..cfg.retry_config()
        };
        let s = RetryStore::new(Arc::new(S3Store::new(cfg).unwrap()), retry_cfg);
        let stats = s.stats();
        let big: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        for i in 0..4 {
            s.put(&format!("big{i}"), Bytes::from(big.clone()))
                .await
                .unwrap();
        }
        assert!(
            stats.counts().retries > 0,
            "the proxy injected no fault: {:?}",
            stats.counts()
        );
        let direct = s3_store(&g, "m", dir.path());
        for i in 0..4 {
            assert!(direct.get(&format!("big{i}")).await.unwrap() == big);
        }
        // A permanent failure in the middle of an upload: the put fails and its upload is
        // aborted.
        let mut cfg =
            S3Config::from_url(&garage::url_for(&rejecting.endpoint(), "mpu", "m")).unwrap();
        cfg.multipart_threshold_mib = 5;
        cfg.part_size_mib = 5;
        cfg.credentials_file = Some(garage::credentials_file(dir.path(), garage::SECRET));
        let e = S3Store::new(cfg)
            .unwrap()
            .put("refused", Bytes::from(big.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::PermissionDenied { .. }), "{e:?}");
        assert!(direct.head("refused").await.unwrap().is_none());
        // Aborts of failed attempts run in the background: give them a moment.
        let t0 = std::time::Instant::now();
        loop {
            let pending = direct.pending_multipart_uploads().await.unwrap();
            if pending.is_empty() {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "uploads left behind: {pending:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
}
