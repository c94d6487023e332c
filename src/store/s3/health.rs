//! The healthcheck of one S3 destination (what [`S3Store`]'s `Store::probe` runs): `HeadBucket`,
//! then a small put/get/delete probe under the prefix; every finding (unknown bucket, bad
//! credentials, unreachable endpoint, wrong region, clock skew) goes into a [`HealthReport`]
//! with a hint, never into an `Err`.
//!
//! This file must not know how the client is built, nor how an SDK error is read (it renders
//! what `classify.rs` says).

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use bytes::Bytes;

use super::classify::{classify, Fault, S3Error};
use super::S3Store;
use crate::store::health::{probe_key, HealthProblem, HealthReport};
use crate::store::{Store, StoreError};

/// Checks that a destination is usable: `HeadBucket`, then a small put/get/delete probe under
/// the prefix. Never fails; every finding is in the report.
pub async fn healthcheck(store: &S3Store) -> HealthReport {
    let cfg = store.config();
    let mut r = HealthReport {
        name: cfg.label().to_string(),
        bucket: cfg.bucket.clone(),
        region: cfg.region.clone(),
        endpoint: cfg.endpoint_display(),
        problem: None,
        detail: String::new(),
        hint: None,
    };
    let client = match store.client().await {
        Ok(c) => c,
        Err(e) => {
            r.problem = Some(HealthProblem::BadCredentials);
            r.detail = e.to_string();
            r.hint = Some("fix credentials_file / profile in the destination".into());
            return r;
        }
    };
    if let Err(e) = client.head_bucket().bucket(&cfg.bucket).send().await {
        // A HEAD response has no body, so no error code: ask again with a GET (a one-key
        // listing) whose error carries the code that tells the cases apart.
        if matches!(e, SdkError::ServiceError(_)) {
            if let Err(e2) = client
                .list_objects_v2()
                .bucket(&cfg.bucket)
                .max_keys(1)
                .send()
                .await
            {
                diagnose(store, &mut r, e2);
                return r;
            }
        }
        diagnose(store, &mut r, e);
        return r;
    }
    // A destination that asks for Object Lock on a bucket without it would protect nothing.
    if let Err(e) = store.check_bucket_lock().await {
        match e {
            StoreError::Permanent { detail, .. } if detail.contains("Object Lock") => {
                let (what, fix) = detail.split_once(": ").unwrap_or((&detail, ""));
                r.problem = Some(HealthProblem::ObjectLockMissing);
                r.detail = format!("bucket {}: {what}", cfg.bucket);
                r.hint = Some(fix.to_string());
            }
            other => {
                r.problem = Some(HealthProblem::ProbeFailed);
                r.detail = other.to_string();
                r.hint = other.hint();
            }
        }
        return r;
    }
    let key = probe_key();
    let body = Bytes::from(format!(
        "lifeboat healthcheck {}",
        chrono::Utc::now().to_rfc3339()
    ));
    let probe = async {
        store.put(&key, body.clone()).await?;
        let back = store.get(&key).await?;
        store.delete(&key).await?;
        if back != body {
            return Err(StoreError::Permanent {
                store: store.describe(),
                op: "get",
                key: key.clone(),
                detail: "read back different bytes than were written".into(),
            });
        }
        Ok(())
    };
    if let Err(e) = probe.await {
        r.problem = Some(match &e {
            StoreError::PermissionDenied { .. } => HealthProblem::BadCredentials,
            StoreError::ClockSkew { .. } => HealthProblem::ClockSkew,
            StoreError::Unreachable { .. } | StoreError::NoAnswer { .. } => {
                HealthProblem::Unreachable
            }
            _ => HealthProblem::ProbeFailed,
        });
        r.detail = e.to_string();
        r.hint = Some(match r.problem {
            Some(HealthProblem::BadCredentials) => "the credentials can see the bucket but not write, read and delete objects under the prefix: grant s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket".into(),
            _ => e.hint().unwrap_or_else(|| "check the server's logs".into()),
        });
    }
    r
}

/// Fills in the report from the failed request about the bucket: what [`classify`] reads in
/// the error becomes the report's problem, with a hint naming what to fix.
fn diagnose<E>(store: &S3Store, r: &mut HealthReport, err: S3Error<E>)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let cfg = store.config();
    let status = err.raw_response().map(|x| x.status().as_u16());
    let code = err.code().unwrap_or("").to_string();
    let detail = DisplayErrorContext(&err).to_string();
    let (problem, hint) = match classify(&err, &cfg.region, store.now()) {
        Fault::TimedOut | Fault::NoAnswer | Fault::Unreachable | Fault::SendFailed => (
            HealthProblem::Unreachable,
            format!(
                "nothing answers at {}: check the endpoint URL, DNS, the firewall and that the S3 server is running",
                cfg.endpoint_display().unwrap_or_else(|| format!("the AWS endpoint for region {}", cfg.region))
            ),
        ),
        Fault::NoCredentials => (
            HealthProblem::BadCredentials,
            "no usable credentials were found: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile or the credentials_file of this destination".into(),
        ),
        Fault::ClockSkew { skew } => (
            HealthProblem::ClockSkew,
            format!(
                "this machine's clock is {} off the server's; S3 refuses signatures more than 15 minutes off: sync the clock (chrony/systemd-timesyncd)",
                skew.map(|s| humantime::format_duration(Duration::from_secs(s.as_secs())).to_string()).unwrap_or_else(|| "too far".into())
            ),
        ),
        Fault::WrongRegion { bucket_region } => (
            HealthProblem::WrongRegion,
            match bucket_region {
                Some(b) => format!("bucket {} is in region {b}, not {}: set region = \"{b}\"", cfg.bucket, cfg.region),
                None => format!("the server refused region {:?}: set region to the server's region (for Garage: s3_region in garage.toml)", cfg.region),
            },
        ),
        // The request was about the bucket: a 404 means the bucket is missing.
        Fault::NoSuchBucket | Fault::NotFound => (
            HealthProblem::UnknownBucket,
            format!(
                "bucket {} does not exist at this endpoint: create it, or fix `bucket`",
                cfg.bucket
            ),
        ),
        Fault::Denied => (
            HealthProblem::BadCredentials,
            "the credentials were refused: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile or credentials_file, and that the key may access this bucket".into(),
        ),
        Fault::Unsendable
        | Fault::BrokenResponse
        | Fault::Throttled
        | Fault::ServerTrouble
        | Fault::Refused => (
            HealthProblem::ProbeFailed,
            "see the detail; check the server's logs".into(),
        ),
    };
    r.problem = Some(problem);
    r.detail = format!(
        "HeadBucket {}: {}",
        cfg.bucket,
        if code.is_empty() {
            detail
        } else {
            format!("{code} (HTTP {})", status.unwrap_or(0))
        }
    );
    r.hint = Some(hint);
}
