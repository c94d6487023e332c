//! The read floor of an S3 server and the network to it, for the benchmarks: how long
//! aws-sdk-s3 itself takes to GET a list of objects, `concurrency` at a time, the bytes
//! counted and thrown away. No retry decorator, no verification, no decoding, nothing of
//! lifeboat's store on the way: the time a restore from this bucket cannot beat. Used by the
//! hidden `lifeboat bench-restore-floor` only, never by a user command.
//!
//! This file builds its own client (`client.rs`, the same settings as the store's) and knows
//! nothing of packs or snapshots: the caller hands it the keys.

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
