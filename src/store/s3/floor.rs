//! The read floor of an S3 server and the network to it, for the benchmarks: how long
//! aws-sdk-s3 itself takes to GET a list of objects, `concurrency` at a time, the bytes
//! counted and thrown away. No retry decorator, no verification, no decoding, nothing of
//! lifeboat's store on the way: the time a restore from this bucket cannot beat. Used by the
//! hidden `lifeboat bench-restore-floor` only, never by a user command.
//!
//! [`write_floor`] is the same for uploads: the PUTs of given objects to one region, then to
//! several (the fan-out of a multi-region backup).
//!
//! This file builds its own client (`client.rs`, the same settings as the store's) and knows
//! nothing of packs or snapshots: the caller hands it the keys (or the objects' bytes).

use std::time::Instant;

use aws_sdk_s3::error::DisplayErrorContext;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{client, S3Config};

/// What [`read_floor`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadFloor {
    pub objects: u64,
    pub bytes: u64,
    /// GETs in flight at once.
    pub concurrency: usize,
    /// Wall time from the first request to the last byte of the last body.
    pub secs: f64,
}

/// GETs every key of `keys` (relative to the destination's prefix), `concurrency` at a time,
/// reading each body to its end and discarding it. The error names the key and the SDK's
/// reason.
pub async fn read_floor(
    cfg: &S3Config,
    keys: &[String],
    concurrency: usize,
) -> Result<ReadFloor, String> {
    let client = client::build(cfg, 0).await?;
    let prefix = cfg.key_prefix();
    let t0 = Instant::now();
    let bytes = stream::iter(keys)
        .map(|k| {
            let (client, prefix) = (&client, &prefix);
            async move {
                let out = client
                    .get_object()
                    .bucket(&cfg.bucket)
                    .key(format!("{prefix}{k}"))
                    .send()
                    .await
                    .map_err(|e| format!("GET {k}: {}", DisplayErrorContext(&e)))?;
                let mut body = out.body;
                let mut n = 0u64;
                while let Some(chunk) = body
                    .try_next()
                    .await
                    .map_err(|e| format!("GET {k}: reading the body: {e}"))?
                {
                    n += chunk.len() as u64;
                }
                Ok::<u64, String>(n)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    Ok(ReadFloor {
        objects: keys.len() as u64,
        bytes,
        concurrency: concurrency.max(1),
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// What [`write_floor`] measured: the same objects PUT to one region, then to every region.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteFloor {
    pub objects: u64,
    /// Bytes of one copy.
    pub bytes: u64,
    /// Objects in flight at once (each to every region at once).
    pub concurrency: usize,
    pub regions: usize,
    /// Wall seconds to PUT every object to the first region alone.
    pub one_region_secs: f64,
    /// Every object to every region, each object's PUTs at once and the next object only
    /// when all its PUTs ended (the way the multi-region store fans a write out).
    pub all_regions_secs: f64,
    /// Every region fed on its own, `concurrency` objects in flight per region (no region
    /// waits for another).
    pub all_regions_independent_secs: f64,
}

/// The upload floor of one region against several (issue 18, fan-out): aws-sdk-s3 alone PUTs
/// every object of `objects` (bytes already in memory, Content-MD5 as the store sends it)
/// `concurrency` at a time, first to `cfgs[0]` alone, then to every region of `cfgs` in the
/// two ways [`WriteFloor`] describes. Objects go under `scratch/` of each destination's
/// prefix and are deleted afterwards (also on error, as far as the server lets us).
pub async fn write_floor(
    cfgs: &[S3Config],
    objects: &[bytes::Bytes],
    concurrency: usize,
    scratch: &str,
) -> Result<WriteFloor, String> {
    if cfgs.is_empty() {
        return Err("no region to measure the upload floor of".into());
    }
    let mut clients = Vec::new();
    for c in cfgs {
        clients.push((client::build(c, 0).await?, c));
    }
    let concurrency = concurrency.max(1);
    let key = |c: &S3Config, i: usize| format!("{}{scratch}/{i:06}", c.key_prefix());
    let put = |client: &aws_sdk_s3::Client, c: &S3Config, i: usize| {
        let (client, data, k) = (client.clone(), objects[i].clone(), key(c, i));
        let bucket = c.bucket.clone();
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(&k)
                .content_length(data.len() as i64)
                .content_md5(super::md5_b64(&data))
                .body(aws_sdk_s3::primitives::ByteStream::from(data))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("PUT {k}: {}", DisplayErrorContext(&e)))
        }
    };
    let run = |which: &'static str| {
        let clients = &clients;
        let put = &put;
        async move {
            let t0 = Instant::now();
            match which {
                "one" => {
                    let (cl, c) = &clients[0];
                    stream::iter(0..objects.len())
                        .map(|i| put(cl, c, i))
                        .buffer_unordered(concurrency)
                        .try_collect::<Vec<()>>()
                        .await?;
                }
                "lockstep" => {
                    stream::iter(0..objects.len())
                        .map(|i| async move {
                            futures::future::try_join_all(
                                clients.iter().map(|(cl, c)| put(cl, c, i)),
                            )
                            .await
                        })
                        .buffer_unordered(concurrency)
                        .try_collect::<Vec<_>>()
                        .await?;
                }
                _ => {
                    futures::future::try_join_all(clients.iter().map(|(cl, c)| {
                        stream::iter(0..objects.len())
                            .map(move |i| put(cl, c, i))
                            .buffer_unordered(concurrency)
                            .try_collect::<Vec<()>>()
                    }))
                    .await?;
                }
            }
            Ok::<f64, String>(t0.elapsed().as_secs_f64())
        }
    };
    let measured = async {
        let one = run("one").await?;
        let lockstep = run("lockstep").await?;
        let independent = run("independent").await?;
        Ok::<_, String>((one, lockstep, independent))
    }
    .await;
    // Clean up whatever was written, whichever way the measurement ended.
    for (cl, c) in &clients {
        for i in 0..objects.len() {
            let _ = cl
                .delete_object()
                .bucket(&c.bucket)
                .key(key(c, i))
                .send()
                .await;
        }
    }
    let (one, lockstep, independent) = measured?;
    Ok(WriteFloor {
        objects: objects.len() as u64,
        bytes: objects.iter().map(|o| o.len() as u64).sum(),
        concurrency,
        regions: cfgs.len(),
        one_region_secs: one,
        all_regions_secs: lockstep,
        all_regions_independent_secs: independent,
    })
}
