//! Building the aws-sdk-s3 client of one destination: region, endpoint and path-style
//! addressing, the connect and answer timeouts (the SDK's read timeout: from sending a request
//! to the response headers; [`upload_config`] lifts it for big bodies), the credentials (the standard AWS chain, a profile, or a
//! credentials file), checksums as self-hosted servers accept them, and the clock requests are
//! signed with ([`OffsetClock`], shifted only by tests).
//!
//! The SDK's own retries are switched off here: retries, the stalled-request watchdog and the
//! deadline are the [`crate::store::retry::RetryStore`] decorator's job. This file must not
//! know store operations, keys or how errors are classified; it never logs or shows a secret.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::retry::RetryConfig as SdkRetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;

use super::S3Config;

/// A time source shifted by a fixed offset: lets tests exercise clock skew without touching
/// the machine's clock.
#[derive(Debug)]
pub(super) struct OffsetClock(pub(super) i64);

impl aws_smithy_async::time::TimeSource for OffsetClock {
    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        if self.0 >= 0 {
            now + Duration::from_secs(self.0 as u64)
        } else {
            now - Duration::from_secs(self.0.unsigned_abs())
        }
    }
}

/// The client for `cfg`, signing with a clock `clock_offset_secs` off the machine's. The error
/// says why the credentials cannot be used (a credentials file that cannot be read).
pub(super) async fn build(cfg: &S3Config, clock_offset_secs: i64) -> Result<Client, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()));
    if let Some(p) = &cfg.profile {
        loader = loader.profile_name(p);
    }
    if let Some(file) = &cfg.credentials_file {
        if let Err(e) = std::fs::metadata(file) {
            return Err(format!(
                "cannot read credentials file {}: {e}",
                file.display()
            ));
        }
        let files = aws_runtime::env_config::file::EnvConfigFiles::builder()
            .with_file(
                aws_runtime::env_config::file::EnvConfigFileKind::Credentials,
                file,
            )
            .build();
        let mut provider =
            aws_config::profile::ProfileFileCredentialsProvider::builder().profile_files(files);
        if let Some(p) = &cfg.profile {
            provider = provider.profile_name(p);
        }
        loader = loader.credentials_provider(provider.build());
    }
    let sdk = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&sdk)
        .retry_config(SdkRetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
                .read_timeout(Duration::from_secs(cfg.answer_timeout_secs))
                .build(),
        )
        // Garage and other self-hosted servers reject the SDK's default CRC32 trailers on
        // multipart completion; every PUT carries an explicit Content-MD5 instead.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .force_path_style(cfg.path_style.unwrap_or(cfg.endpoint.is_some()));
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e);
    }
    if clock_offset_secs != 0 {
        b = b.time_source(OffsetClock(clock_offset_secs));
    }
    Ok(Client::from_conf(b.build()))
}

/// The per-request config of an upload of `len` bytes. The answer to an upload comes only
/// after its whole body is sent, so a body of [`super::config::LARGE_BODY`] or more is not held
/// to `answer_timeout_secs` but to `request_timeout_secs` (which the retry decorator's watchdog
/// enforces on the whole attempt anyway); a smaller one keeps the answer timeout.
pub(super) fn upload_config(cfg: &S3Config, len: u64) -> aws_sdk_s3::config::Builder {
    let read = if len >= super::config::LARGE_BODY {
        cfg.request_timeout_secs
    } else {
        cfg.answer_timeout_secs
    };
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .read_timeout(Duration::from_secs(read))
            .build(),
    )
}
