//! The configuration of one S3 destination: [`S3Config`] (the serde shape of a plan's
//! `[[destinations]] type = "s3"` entry), its `s3://bucket/prefix?key=value…` location form
//! ([`S3Config::from_url`]), validation, and the labels and key prefix derived from it.
//!
//! This file knows no SDK type and makes no request: it must not know how the client is built,
//! how errors are classified, or that a healthcheck exists. No secret is ever part of a config.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::retry::RetryConfig;

/// Uploads with a body at least this large (single PUTs and multipart parts) are not held to
/// `answer_timeout_secs`: their answer comes only after the body is sent, which may take
/// longer on a slow link. The stalled-request watchdog (`request_timeout_secs`) bounds them.
pub const LARGE_BODY: u64 = 1024 * 1024;

fn default_true() -> bool {
    true
}
fn default_multipart_threshold() -> u64 {
    32
}
fn default_part_size() -> u64 {
    8
}
fn default_multipart_concurrency() -> usize {
    4
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    300
}
fn default_answer_timeout() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    10
}
fn default_max_concurrency() -> usize {
    32
}
fn default_deadline() -> u64 {
    6 * 3600
}

/// One S3 destination. Keys (all optional unless marked):
///
/// | key | meaning |
/// | --- | --- |
/// | `name` | label of this destination in output, `--region` and reports (default: `region`) |
/// | `bucket` | **required** bucket name |
/// | `prefix` | key prefix inside the bucket (default: none) |
/// | `region` | **required** S3 region (for self-hosted S3: the server's configured region) |
/// | `endpoint` | endpoint URL for self-hosted S3, e.g. `http://127.0.0.1:3900` |
/// | `path_style` | path-style addressing (`http://host/bucket/key`); default true when `endpoint` is set |
/// | `profile` | profile name in the AWS config/credentials files |
/// | `credentials_file` | AWS-format credentials file to use instead of the standard chain |
/// | `storage_class` | e.g. `STANDARD_IA`, `GLACIER_IR` |
/// | `sse` | server-side encryption: `AES256` or `aws:kms` |
/// | `sse_kms_key_id` | KMS key for `sse = "aws:kms"` |
/// | `object_lock_mode` | `governance` or `compliance` (needs a bucket with Object Lock) |
/// | `object_lock_days` | retention in days for `object_lock_mode` |
/// | `multipart_threshold_mib` | objects at least this large use multipart upload (default 32) |
/// | `part_size_mib` | multipart part size (default 8, minimum 5) |
/// | `multipart_concurrency` | parts uploaded in parallel (default 4) |
/// | `connect_timeout_secs` | TCP/TLS connect timeout (default 10) |
/// | `request_timeout_secs` | stalled-request watchdog per attempt (default 300) |
/// | `answer_timeout_secs` | a sent request must get the server's answer (response headers) within this (default 30); uploads of [`LARGE_BODY`] or more are left to the watchdog. Three requests of one operation unanswered in a row fail it at once: a server that takes connections and answers nothing is given up within 3 × this |
/// | `max_retries` | retries of a transient failure (default 10) |
/// | `deadline_secs` | overall deadline of one operation including retries (default 21600) |
/// | `max_concurrency` | most requests in flight; 503 SlowDown halves the live limit (default 32) |
///
/// The secret key is never part of this config: it comes from the AWS credential chain
/// (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, profile, web identity, instance metadata) or
/// the `credentials_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub name: Option<String>,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub region: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub sse: Option<String>,
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    #[serde(default)]
    pub object_lock_mode: Option<LockMode>,
    #[serde(default)]
    pub object_lock_days: Option<u32>,
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold_mib: u64,
    #[serde(default = "default_part_size")]
    pub part_size_mib: u64,
    #[serde(default = "default_multipart_concurrency")]
    pub multipart_concurrency: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_answer_timeout")]
    pub answer_timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Verify the size of every uploaded object with a HEAD (default true).
    #[serde(default = "default_true")]
    pub verify_uploads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl S3Config {
    /// A config with every optional key at its default.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        S3Config {
            name: None,
            bucket: bucket.into(),
            prefix: String::new(),
            region: region.into(),
            endpoint: None,
            path_style: None,
            profile: None,
            credentials_file: None,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
            object_lock_mode: None,
            object_lock_days: None,
            multipart_threshold_mib: default_multipart_threshold(),
            part_size_mib: default_part_size(),
            multipart_concurrency: default_multipart_concurrency(),
            connect_timeout_secs: default_connect_timeout(),
            request_timeout_secs: default_request_timeout(),
            answer_timeout_secs: default_answer_timeout(),
            max_retries: default_max_retries(),
            deadline_secs: default_deadline(),
            max_concurrency: default_max_concurrency(),
            verify_uploads: true,
        }
    }

    /// The destination's label: `name`, else the region.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.region)
    }

    /// Parses `s3://BUCKET[/PREFIX][?key=value&…]`; the query keys are the config keys above
    /// (values percent-decoded), e.g.
    /// `s3://backups/host1?endpoint=http://127.0.0.1:3900&region=garage&name=eu`.
    pub fn from_url(url: &str) -> Result<S3Config, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} does not start with s3://"))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        // Errors show only `s3://bucket/prefix`: the query could hold an endpoint with
        // `user:password@`, which is refused below and must not be echoed.
        let url = format!("s3://{path}");
        let url = url.as_str();
        let (bucket, prefix) = match path.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (path, ""),
        };
        if bucket.is_empty() {
            return Err(format!(
                "{url:?} names no bucket: expected s3://BUCKET/PREFIX"
            ));
        }
        let mut table = toml::Table::new();
        table.insert("bucket".into(), bucket.into());
        table.insert("prefix".into(), prefix.into());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let v = percent_decode(v).map_err(|e| format!("{url:?}: value of {k}: {e}"))?;
            let value: toml::Value = match k {
                "path_style" | "verify_uploads" => v
                    .parse::<bool>()
                    .map_err(|_| format!("{url:?}: {k} must be true or false"))?
                    .into(),
                "object_lock_days"
                | "multipart_threshold_mib"
                | "part_size_mib"
                | "multipart_concurrency"
                | "connect_timeout_secs"
                | "request_timeout_secs"
                | "answer_timeout_secs"
                | "max_retries"
                | "max_concurrency"
                | "deadline_secs" => v
                    .parse::<i64>()
                    .map_err(|_| format!("{url:?}: {k} must be a whole number"))?
                    .into(),
                _ => v.into(),
            };
            table.insert(k.into(), value);
        }
        if !table.contains_key("region") {
            return Err(format!(
                "{url:?} names no region: add ?region=NAME (for self-hosted S3, the server's s3_region)"
            ));
        }
        let cfg: S3Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("{url:?}: {}", e.message()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that serde cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), String> {
        let who = format!("S3 destination {:?} (bucket {})", self.label(), self.bucket);
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(format!("{who}: bucket must be a bucket name without '/'"));
        }
        if self.region.is_empty() {
            return Err(format!("{who}: region is empty"));
        }
        if let Some(e) = &self.endpoint {
            let authority = e
                .split_once("://")
                .map(|(_, r)| r.split('/').next().unwrap_or(""))
                .unwrap_or("");
            if authority.contains('@') {
                return Err(format!(
                    "{who}: the endpoint must not contain user:password@ — credentials come from the AWS credential chain or credentials_file"
                ));
            }
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "{who}: endpoint {e:?} must start with http:// or https://"
                ));
            }
        }
        if self.part_size_mib < 5 || self.part_size_mib > 5 * 1024 {
            return Err(format!(
                "{who}: part_size_mib must be between 5 and 5120 (S3's part size limits)"
            ));
        }
        if self.multipart_threshold_mib < self.part_size_mib {
            return Err(format!(
                "{who}: multipart_threshold_mib must be at least part_size_mib"
            ));
        }
        if self.multipart_concurrency == 0 || self.max_concurrency == 0 {
            return Err(format!(
                "{who}: multipart_concurrency and max_concurrency must be at least 1"
            ));
        }
        if self.request_timeout_secs == 0
            || self.answer_timeout_secs == 0
            || self.deadline_secs == 0
            || self.connect_timeout_secs == 0
        {
            return Err(format!("{who}: timeouts must be at least 1 second"));
        }
        match (self.object_lock_mode, self.object_lock_days) {
            (Some(_), None) | (Some(_), Some(0)) => {
                return Err(format!(
                    "{who}: object_lock_mode needs object_lock_days of at least 1"
                ))
            }
            (None, Some(_)) => {
                return Err(format!("{who}: object_lock_days needs object_lock_mode"))
            }
            _ => {}
        }
        if let Some(s) = &self.sse {
            if s != "AES256" && s != "aws:kms" {
                return Err(format!(
                    "{who}: sse must be \"AES256\" or \"aws:kms\", not {s:?}"
                ));
            }
        }
        if self.sse_kms_key_id.is_some() && self.sse.as_deref() != Some("aws:kms") {
            return Err(format!("{who}: sse_kms_key_id needs sse = \"aws:kms\""));
        }
        if let Some(f) = &self.credentials_file {
            if f.as_os_str().is_empty() {
                return Err(format!("{who}: credentials_file is empty"));
            }
        }
        Ok(())
    }

    /// The retry/watchdog/deadline settings for the [`crate::store::retry::RetryStore`] around this store.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.max_retries,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            deadline: Duration::from_secs(self.deadline_secs),
            max_concurrency: self.max_concurrency,
            ..RetryConfig::default()
        }
    }

    pub(super) fn key_prefix(&self) -> String {
        let p = self.prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    }

    /// The endpoint as shown in output (`validate` refuses endpoints with user info).
    pub(super) fn endpoint_display(&self) -> Option<String> {
        self.endpoint.clone()
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after %-decoding".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_rejects_mistakes() {
        assert!(S3Config::from_url("s3:///x?region=r")
            .unwrap_err()
            .contains("no bucket"));
        assert!(S3Config::from_url("s3://b")
            .unwrap_err()
            .contains("no region"));
        assert!(S3Config::from_url("s3://b?region=r&colour=blue")
            .unwrap_err()
            .contains("colour"));
        assert!(S3Config::from_url("s3://b?region=r&part_size_mib=1")
            .unwrap_err()
            .contains("part_size_mib"));
        assert!(
            S3Config::from_url("s3://b?region=r&object_lock_mode=compliance")
                .unwrap_err()
                .contains("object_lock_days")
        );
        assert!(S3Config::from_url("s3://b?region=r&endpoint=ftp://x")
            .unwrap_err()
            .contains("http"));
    }

    #[test]
    fn toml_destination_denies_unknown_keys() {
        let ok: S3Config = toml::from_str("bucket = \"b\"\nregion = \"r\"\ntimeout_secs = 1\n")
            .map(|_: S3Config| ())
            .map_or_else(
                |e| {
                    assert!(e.to_string().contains("timeout_secs"));
                    S3Config::new("b", "r")
                },
                |_| panic!("unknown key accepted"),
            );
        assert_eq!(ok.multipart_concurrency, 4);
        let c: S3Config = toml::from_str(
            "bucket = \"b\"\nregion = \"r\"\nprefix = \"p\"\nstorage_class = \"STANDARD_IA\"\n",
        )
        .unwrap();
        assert_eq!(c.storage_class.as_deref(), Some("STANDARD_IA"));
    }
}
