//! The healthcheck of one S3 destination: `HeadBucket`, then a small put/get/delete probe under
//! the prefix; every finding (unknown bucket, bad credentials, unreachable endpoint, wrong
//! region, clock skew) goes into a [`HealthReport`] with a hint, never into an `Err`.
//!
//! This file must not know how the client is built.

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use serde::Serialize;

use super::classify::{httpdate_parse, skew_of, SKEW_LIMIT};
use super::S3Store;
use crate::store::{Store, StoreError};

/// What a healthcheck found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProblem {
    UnknownBucket,
    BadCredentials,
    Unreachable,
    WrongRegion,
    ClockSkew,
    ProbeFailed,
}

/// The outcome of [`healthcheck`]: `problem` is `None` when the destination works.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub name: String,
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub problem: Option<HealthProblem>,
    pub detail: String,
    pub hint: Option<String>,
}

impl HealthReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

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
                classify_health(store, &mut r, e2);
                return r;
            }
        }
        classify_health(store, &mut r, e);
        return r;
    }
    let key = format!(
        "lifeboat-healthcheck/{}",
        hex::encode(rand::random::<[u8; 8]>())
    );
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
            StoreError::Unreachable { .. } => HealthProblem::Unreachable,
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

fn classify_health<E>(
    store: &S3Store,
    r: &mut HealthReport,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let cfg = store.config();
    let status = err.raw_response().map(|x| x.status().as_u16());
    let code = err.code().unwrap_or("").to_string();
    let bucket_region = err
        .raw_response()
        .and_then(|x| x.headers().get("x-amz-bucket-region"))
        .map(str::to_string);
    let server_date = err
        .raw_response()
        .and_then(|x| x.headers().get("date"))
        .and_then(httpdate_parse);
    let detail = DisplayErrorContext(&err).to_string();
    let skew = server_date.map(|d| skew_of(d, store.now()));
    let (problem, hint) = if matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    ) {
        (
            HealthProblem::Unreachable,
            format!(
                "nothing answers at {}: check the endpoint URL, DNS, the firewall and that the S3 server is running",
                cfg.endpoint_display().unwrap_or_else(|| format!("the AWS endpoint for region {}", cfg.region))
            ),
        )
    } else if code == "RequestTimeTooSkewed" || skew.is_some_and(|s| s >= SKEW_LIMIT) {
        (
            HealthProblem::ClockSkew,
            format!(
                "this machine's clock is {} off the server's; S3 refuses signatures more than 15 minutes off: sync the clock (chrony/systemd-timesyncd)",
                skew.map(|s| humantime::format_duration(Duration::from_secs(s.as_secs())).to_string()).unwrap_or_else(|| "too far".into())
            ),
        )
    } else if bucket_region.as_deref().is_some_and(|b| b != cfg.region)
        || code == "AuthorizationHeaderMalformed"
        || code == "PermanentRedirect"
        || status == Some(301)
        || code == "InvalidRegion"
        || (status == Some(400)
            && err
                .message()
                .is_some_and(|m| m.to_ascii_lowercase().contains("region")))
    {
        (
            HealthProblem::WrongRegion,
            match bucket_region {
                Some(b) => format!("bucket {} is in region {b}, not {}: set region = \"{b}\"", cfg.bucket, cfg.region),
                None => format!("the server refused region {:?}: set region to the server's region (for Garage: s3_region in garage.toml)", cfg.region),
            },
        )
    } else if status == Some(404) || code == "NoSuchBucket" {
        (
            HealthProblem::UnknownBucket,
            format!(
                "bucket {} does not exist at this endpoint: create it, or fix `bucket`",
                cfg.bucket
            ),
        )
    } else if matches!(status, Some(401 | 403))
        || code == "InvalidAccessKeyId"
        || code == "SignatureDoesNotMatch"
    {
        (
            HealthProblem::BadCredentials,
            "the credentials were refused: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile or credentials_file, and that the key may access this bucket".into(),
        )
    } else {
        (
            HealthProblem::ProbeFailed,
            "see the detail; check the server's logs".into(),
        )
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
