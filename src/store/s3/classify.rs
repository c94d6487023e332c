//! Reading an SDK error: what an S3 request's failure means.
//!
//! This file must not know which operation failed beyond the names it is handed, nor anything
//! of the healthcheck's report.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::S3Store;
use crate::store::{Store, StoreError};

/// SigV4 refuses requests whose clock is further than this from the server's.
pub(super) const SKEW_LIMIT: Duration = Duration::from_secs(15 * 60);

impl S3Store {
    /// Maps an SDK error to a [`StoreError`] naming this store, the operation and the key.
    pub(super) fn map_err<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let store = self.describe();
        let key = key.to_string();
        let detail = brief(&err);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let server_date = err
            .raw_response()
            .and_then(|r| r.headers().get("date"))
            .and_then(httpdate_parse);
        match &err {
            SdkError::TimeoutError(_) => {
                return StoreError::Transient {
                    store,
                    op,
                    key,
                    detail: format!("timed out: {detail}"),
                }
            }
            SdkError::DispatchFailure(d) => {
                if d.is_timeout() || d.is_io() {
                    return StoreError::Unreachable {
                        store,
                        detail: format!("{op} {key}: {detail}"),
                    };
                }
                if detail.to_ascii_lowercase().contains("credential") {
                    // The credential chain found nothing usable: no retry can fix that.
                    let first = detail.lines().next().unwrap_or("").to_string();
                    return StoreError::PermissionDenied {
                        store,
                        key,
                        detail: format!("{op}: no usable credentials ({first})"),
                    };
                }
                if d.is_user() {
                    return StoreError::Permanent {
                        store,
                        op,
                        key,
                        detail,
                    };
                }
                return StoreError::Transient {
                    store,
                    op,
                    key,
                    detail,
                };
            }
            SdkError::ResponseError(_) => {
                // A response cut short or garbled in transit.
                return StoreError::Transient {
                    store,
                    op,
                    key,
                    detail,
                };
            }
            SdkError::ConstructionFailure(_)
                if detail.to_ascii_lowercase().contains("credential") =>
            {
                return StoreError::PermissionDenied {
                    store,
                    key,
                    detail: format!("{op}: no usable credentials ({detail})"),
                };
            }
            SdkError::ConstructionFailure(_) => {
                return StoreError::Permanent {
                    store,
                    op,
                    key,
                    detail,
                };
            }
            _ => {}
        }
        if let Some(skew) = server_date.map(|d| skew_of(d, self.now())) {
            if skew >= SKEW_LIMIT || code.as_deref() == Some("RequestTimeTooSkewed") {
                return StoreError::ClockSkew {
                    store,
                    detail: format!(
                        "local clock differs from the server's by {}",
                        humantime::format_duration(Duration::from_secs(skew.as_secs()))
                    ),
                };
            }
        }
        let code_s = code.as_deref().unwrap_or("");
        match (status, code_s) {
            (_, "RequestTimeTooSkewed") => StoreError::ClockSkew { store, detail },
            (_, "NoSuchBucket") => StoreError::Permanent {
                store,
                op,
                key,
                detail: format!(
                    "bucket {} does not exist (create it, or fix `bucket`)",
                    self.cfg.bucket
                ),
            },
            (Some(404), _) | (_, "NoSuchKey") | (_, "NotFound") => {
                StoreError::NotFound { store, key }
            }
            (
                _,
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "AllAccessDisabled",
            )
            | (Some(401 | 403), _) => StoreError::PermissionDenied {
                store,
                key,
                detail: format!(
                    "{op}: {}",
                    if code_s.is_empty() {
                        "access denied".to_string()
                    } else {
                        format!("{code_s}: {}", err.message().unwrap_or(""))
                    }
                ),
            },
            (_, "AuthorizationHeaderMalformed" | "PermanentRedirect") | (Some(301), _) => {
                StoreError::Permanent {
                    store,
                    op,
                    key,
                    detail: format!("wrong region for bucket {}: {detail}", self.cfg.bucket),
                }
            }
            (_, "SlowDown" | "ServiceUnavailable" | "TooManyRequests") | (Some(429 | 503), _) => {
                StoreError::Throttled {
                    store,
                    op,
                    key,
                    detail,
                }
            }
            (
                _,
                "InternalError" | "RequestTimeout" | "BadDigest" | "IncompleteBody"
                | "OperationAborted",
            )
            | (Some(408), _) => StoreError::Transient {
                store,
                op,
                key,
                detail,
            },
            (Some(s), _) if s >= 500 => StoreError::Transient {
                store,
                op,
                key,
                detail,
            },
            _ => StoreError::Permanent {
                store,
                op,
                key,
                detail,
            },
        }
    }
}

/// A short description of an SDK error: the S3 code, message and HTTP status when the server
/// answered, else the error chain (connection refused, timeout, …).
fn brief<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (err.code(), err.raw_response()) {
        (Some(code), Some(r)) => format!(
            "{code}: {} (HTTP {})",
            err.message().unwrap_or("no message"),
            r.status().as_u16()
        ),
        (None, Some(r)) if matches!(err, SdkError::ServiceError(_)) => {
            format!("HTTP {} without an error code", r.status().as_u16())
        }
        _ => DisplayErrorContext(err).to_string(),
    }
}

pub(super) fn httpdate_parse(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.timestamp().max(0) as u64))
}

pub(super) fn skew_of(server: SystemTime, now: SystemTime) -> Duration {
    match now.duration_since(server) {
        Ok(d) => d,
        Err(e) => e.duration(),
    }
}
