//! Reading an SDK error: [`classify`] says what the failure of an S3 request means, as a
//! [`Fault`]. It is the one reading: the store operations turn a fault into a [`StoreError`]
//! ([`Fault::store_error`]) and the healthcheck into its finding and hint (`health.rs`), so the
//! two cannot disagree about what a response means.
//!
//! Order matters and is the same for every request: a failure to send (timeout, no answer, no
//! usable credentials) before anything the server said; then clock skew (a skewed signature can
//! come back as any 403); then a wrong region (a bucket elsewhere can also look missing or
//! forbidden); then the bucket, the key, the credentials, throttling and server faults.
//!
//! This file must not know which operation failed beyond the names it is handed, how the client
//! is built, nor anything of the healthcheck's report.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::store::{Backend, StoreError};

/// SigV4 refuses requests whose clock is further than this from the server's.
pub(super) const SKEW_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The error of any aws-sdk-s3 operation.
pub(super) type S3Error<E> = SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

/// What the failure of an S3 request means, whatever the request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    /// The SDK's own timeout fired.
    TimedOut,
    /// Nothing answered in time: the connection was not made within `connect_timeout_secs`
    /// (packets dropped), or a sent request got no response within `answer_timeout_secs`
    /// (a server or middlebox that takes connections and answers nothing).
    NoAnswer,
    /// Nothing could be reached: connection refused, DNS, an I/O error.
    Unreachable,
    /// Sending failed some other way (worth another try).
    SendFailed,
    /// The request could not be built or sent as configured: a mistake on this side.
    Unsendable,
    /// The credential chain found nothing usable; no retry can fix that.
    NoCredentials,
    /// The response was cut short or garbled in transit.
    BrokenResponse,
    /// The server refused the request's time (`RequestTimeTooSkewed`), or its `Date` is
    /// [`SKEW_LIMIT`] or more off ours; `skew` is the difference when the server sent a `Date`.
    ClockSkew { skew: Option<Duration> },
    /// The bucket is in another region (`bucket_region`, when the server says which), or the
    /// server refused the configured region.
    WrongRegion { bucket_region: Option<String> },
    /// The bucket does not exist.
    NoSuchBucket,
    /// 404: the object (for a request about the bucket: the bucket) is not there.
    NotFound,
    /// The credentials were refused: 401/403, an unknown key, a bad signature, an expired token.
    Denied,
    /// 503 SlowDown, 429: the server asks for fewer requests.
    Throttled,
    /// A server-side fault worth another try: other 5xx, 408, `InternalError`, `BadDigest` and
    /// `XAmzContentSHA256Mismatch` (a body damaged in flight), …
    ServerTrouble,
    /// Anything else the server refused; permanent.
    Refused,
}

/// Reads `err`, the failure of a request to a bucket configured for `region` and signed with the
/// clock reading `now`.
pub(super) fn classify<E>(err: &S3Error<E>, region: &str, now: SystemTime) -> Fault
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mentions_credentials = || brief(err).to_ascii_lowercase().contains("credential");
    match err {
        SdkError::TimeoutError(_) => return Fault::TimedOut,
        SdkError::DispatchFailure(d) if d.is_timeout() => return Fault::NoAnswer,
        SdkError::DispatchFailure(d) if d.is_io() => return Fault::Unreachable,
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
            if mentions_credentials() =>
        {
            return Fault::NoCredentials
        }
        SdkError::DispatchFailure(d) if d.is_user() => return Fault::Unsendable,
        SdkError::DispatchFailure(_) => return Fault::SendFailed,
        SdkError::ConstructionFailure(_) => return Fault::Unsendable,
        SdkError::ResponseError(_) => return Fault::BrokenResponse,
        _ => {}
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or("");
    let header = |name: &str| err.raw_response().and_then(|r| r.headers().get(name));
    let skew = header("date")
        .and_then(httpdate_parse)
        .map(|d| skew_of(d, now));
    if code == "RequestTimeTooSkewed" || skew.is_some_and(|s| s >= SKEW_LIMIT) {
        return Fault::ClockSkew { skew };
    }
    let bucket_region = header("x-amz-bucket-region");
    if bucket_region.is_some_and(|b| b != region)
        || matches!(
            code,
            "AuthorizationHeaderMalformed" | "PermanentRedirect" | "InvalidRegion"
        )
        || status == Some(301)
        || (status == Some(400)
            && err
                .message()
                .is_some_and(|m| m.to_ascii_lowercase().contains("region")))
    {
        return Fault::WrongRegion {
            bucket_region: bucket_region.map(str::to_string),
        };
    }
    match (status, code) {
        (_, "NoSuchBucket") => Fault::NoSuchBucket,
        (Some(404), _) | (_, "NoSuchKey" | "NotFound") => Fault::NotFound,
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
        | (Some(401 | 403), _) => Fault::Denied,
        (_, "SlowDown" | "ServiceUnavailable" | "TooManyRequests") | (Some(429 | 503), _) => {
            Fault::Throttled
        }
        (
            _,
            "InternalError" | "RequestTimeout" | "BadDigest" | "IncompleteBody"
            | "OperationAborted"
            // The body's SHA-256 differs from the signed one: damaged in flight (T06).
            | "XAmzContentSHA256Mismatch",
        )
        | (Some(408), _) => Fault::ServerTrouble,
        (Some(s), _) if s >= 500 => Fault::ServerTrouble,
        _ => Fault::Refused,
    }
}

impl Fault {
    /// The [`StoreError`] of operation `op` on `key` in `store` (bucket `bucket`) that failed
    /// with `err`, read as `self`.
    pub(super) fn store_error<E>(
        self,
        err: &S3Error<E>,
        store: String,
        op: &'static str,
        key: &str,
        bucket: &str,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let key = key.to_string();
        let detail = brief(err);
        match self {
            Fault::TimedOut => StoreError::Transient {
                store,
                op,
                key,
                detail: format!("timed out: {detail}"),
            },
            Fault::NoAnswer => StoreError::NoAnswer {
                store,
                op,
                key,
                detail,
            },
            Fault::Unreachable => StoreError::Unreachable {
                store,
                backend: Backend::S3,
                detail: format!("{op} {key}: {detail}"),
            },
            Fault::NoCredentials => {
                let first = detail.lines().next().unwrap_or("").to_string();
                StoreError::PermissionDenied {
                    store,
                    backend: Backend::S3,
                    key,
                    detail: format!("{op}: no usable credentials ({first})"),
                }
            }
            Fault::SendFailed | Fault::BrokenResponse | Fault::ServerTrouble => {
                StoreError::Transient {
                    store,
                    op,
                    key,
                    detail,
                }
            }
            Fault::Unsendable | Fault::Refused => StoreError::Permanent {
                store,
                op,
                key,
                detail,
            },
            Fault::ClockSkew { skew } => StoreError::ClockSkew {
                store,
                detail: match skew {
                    Some(s) => format!(
                        "local clock differs from the server's by {}",
                        humantime::format_duration(Duration::from_secs(s.as_secs()))
                    ),
                    None => detail,
                },
            },
            Fault::WrongRegion { .. } => StoreError::Permanent {
                store,
                op,
                key,
                detail: format!("wrong region for bucket {bucket}: {detail}"),
            },
            Fault::NoSuchBucket => StoreError::Permanent {
                store,
                op,
                key,
                detail: format!("bucket {bucket} does not exist (create it, or fix `bucket`)"),
            },
            Fault::NotFound => StoreError::NotFound { store, key },
            Fault::Denied => StoreError::PermissionDenied {
                store,
                backend: Backend::S3,
                key,
                detail: format!(
                    "{op}: {}",
                    match err.code() {
                        None | Some("") => "access denied".to_string(),
                        Some(code) => format!("{code}: {}", err.message().unwrap_or("")),
                    }
                ),
            },
            Fault::Throttled => StoreError::Throttled {
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
pub(super) fn brief<E>(err: &S3Error<E>) -> String
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

fn httpdate_parse(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.timestamp().max(0) as u64))
}

fn skew_of(server: SystemTime, now: SystemTime) -> Duration {
    match now.duration_since(server) {
        Ok(d) => d,
        Err(e) => e.duration(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::head_bucket::HeadBucketError;
    use aws_sdk_s3::primitives::SdkBody;

    /// A server's answer: status, error code and message, extra headers.
    fn answer(
        status: u16,
        code: &str,
        message: &str,
        headers: &[(&'static str, String)],
    ) -> S3Error<HeadBucketError> {
        let mut meta = ErrorMetadata::builder().message(message);
        if !code.is_empty() {
            meta = meta.code(code);
        }
        let mut raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        for (k, v) in headers {
            raw.headers_mut().insert(*k, v.clone());
        }
        SdkError::service_error(HeadBucketError::generic(meta.build()), raw)
    }

    fn http_date(t: SystemTime) -> String {
        chrono::DateTime::<chrono::Utc>::from(t).to_rfc2822()
    }

    /// Now, in whole seconds (as precise as a `Date` header).
    fn now() -> SystemTime {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn every_answer_is_read_the_same_way() {
        let now = now();
        let an_hour_ago = http_date(now - Duration::from_secs(3600));
        let a_minute_ago = http_date(now - Duration::from_secs(60));
        let table: Vec<(S3Error<HeadBucketError>, Fault)> = vec![
            (SdkError::timeout_error("slow"), Fault::TimedOut),
            (
                SdkError::dispatch_failure(ConnectorError::io("connection refused".into())),
                Fault::Unreachable,
            ),
            (
                // connect_timeout_secs or answer_timeout_secs (the SDK's read timeout) fired
                SdkError::dispatch_failure(ConnectorError::timeout("HTTP read timeout".into())),
                Fault::NoAnswer,
            ),
            (
                SdkError::dispatch_failure(ConnectorError::other(
                    "failed to load credentials from the chain".into(),
                    None,
                )),
                Fault::NoCredentials,
            ),
            (
                SdkError::construction_failure("no credential provider"),
                Fault::NoCredentials,
            ),
            (
                SdkError::dispatch_failure(ConnectorError::user("bad header".into())),
                Fault::Unsendable,
            ),
            (
                SdkError::dispatch_failure(ConnectorError::other("tls".into(), None)),
                Fault::SendFailed,
            ),
            (
                answer(403, "RequestTimeTooSkewed", "", &[]),
                Fault::ClockSkew { skew: None },
            ),
            (
                answer(403, "AccessDenied", "", &[("date", an_hour_ago)]),
                Fault::ClockSkew {
                    skew: Some(Duration::from_secs(3600)),
                },
            ),
            (
                answer(403, "AccessDenied", "", &[("date", a_minute_ago)]),
                Fault::Denied,
            ),
            (
                answer(301, "", "", &[("x-amz-bucket-region", "eu-west-1".into())]),
                Fault::WrongRegion {
                    bucket_region: Some("eu-west-1".into()),
                },
            ),
            (
                answer(403, "", "", &[("x-amz-bucket-region", "eu-west-1".into())]),
                Fault::WrongRegion {
                    bucket_region: Some("eu-west-1".into()),
                },
            ),
            (
                answer(404, "", "", &[("x-amz-bucket-region", "here".into())]),
                Fault::NotFound,
            ),
            (
                answer(400, "AuthorizationHeaderMalformed", "", &[]),
                Fault::WrongRegion {
                    bucket_region: None,
                },
            ),
            (
                answer(400, "InvalidRequest", "Region mismatch", &[]),
                Fault::WrongRegion {
                    bucket_region: None,
                },
            ),
            (answer(404, "NoSuchBucket", "", &[]), Fault::NoSuchBucket),
            (answer(404, "NoSuchKey", "", &[]), Fault::NotFound),
            (answer(404, "", "", &[]), Fault::NotFound),
            (answer(403, "", "", &[]), Fault::Denied),
            (answer(400, "ExpiredToken", "", &[]), Fault::Denied),
            (answer(400, "InvalidAccessKeyId", "", &[]), Fault::Denied),
            (answer(503, "SlowDown", "", &[]), Fault::Throttled),
            (answer(429, "", "", &[]), Fault::Throttled),
            (answer(500, "InternalError", "", &[]), Fault::ServerTrouble),
            (answer(400, "BadDigest", "", &[]), Fault::ServerTrouble),
            (
                answer(400, "XAmzContentSHA256Mismatch", "", &[]),
                Fault::ServerTrouble,
            ),
            (answer(502, "", "", &[]), Fault::ServerTrouble),
            (answer(400, "InvalidArgument", "", &[]), Fault::Refused),
        ];
        for (i, (err, want)) in table.into_iter().enumerate() {
            assert_eq!(
                classify(&err, "here", now),
                want,
                "case {i}: {}",
                DisplayErrorContext(&err)
            );
        }
    }

    #[test]
    fn store_errors_keep_their_messages() {
        let now = now();
        let store_error = |err: S3Error<HeadBucketError>| {
            classify(&err, "here", now).store_error(&err, "s3:eu:b".into(), "get", "k", "b")
        };
        let e = store_error(answer(404, "NoSuchBucket", "", &[]));
        assert!(!e.is_retryable() && !e.is_not_found());
        assert_eq!(
            e.to_string(),
            "get k in s3:eu:b failed: bucket b does not exist (create it, or fix `bucket`)"
        );
        assert!(store_error(answer(404, "", "", &[])).is_not_found());
        let e = store_error(answer(403, "SignatureDoesNotMatch", "bad sig", &[]));
        assert_eq!(
            e.to_string(),
            "permission denied on k in s3:eu:b: get: SignatureDoesNotMatch: bad sig"
        );
        let e = store_error(answer(403, "", "", &[]));
        assert!(e.to_string().ends_with("get: access denied"), "{e}");
        let e = store_error(answer(
            403,
            "AccessDenied",
            "",
            &[("date", http_date(now - Duration::from_secs(3600)))],
        ));
        assert!(matches!(e, StoreError::ClockSkew { .. }) && !e.is_retryable());
        assert!(e.to_string().ends_with("by 1h"), "{e}");
        let e = store_error(answer(301, "PermanentRedirect", "elsewhere", &[]));
        assert!(e.to_string().contains("wrong region for bucket b"), "{e}");
        for retryable in [
            answer(503, "SlowDown", "", &[]),
            answer(500, "", "", &[]),
            SdkError::timeout_error("slow"),
            SdkError::dispatch_failure(ConnectorError::io("refused".into())),
            SdkError::dispatch_failure(ConnectorError::timeout("read".into())),
        ] {
            assert!(store_error(retryable).is_retryable());
        }
        let e = store_error(SdkError::dispatch_failure(ConnectorError::timeout(
            "HTTP read timeout occurred after 2s".into(),
        )));
        assert!(matches!(e, StoreError::NoAnswer { .. }), "{e:?}");
        let e = store_error(SdkError::dispatch_failure(ConnectorError::other(
            "no credentials in the chain\nsecond line".into(),
            None,
        )));
        assert!(
            matches!(e, StoreError::PermissionDenied { .. })
                && e.to_string().contains("no usable credentials")
                && !e.to_string().contains("second line"),
            "{e}"
        );
    }
}
