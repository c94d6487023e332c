//! What [`Store::probe`](super::Store::probe) finds: a [`HealthReport`] per destination, its
//! problem told apart as a [`HealthProblem`], with a hint. Findings are data, never an `Err`;
//! showing them (text, JSON) is the CLI's job. Every store fills the same report: the S3 store
//! with its healthcheck (`s3::healthcheck`), a local directory with a put/get/delete, the
//! decorators by asking the stores they wrap.
//!
//! This file must not know any backend.

use serde::Serialize;

/// What a healthcheck found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProblem {
    UnknownBucket,
    BadCredentials,
    Unreachable,
    WrongRegion,
    ClockSkew,
    /// The destination asks for Object Lock but the bucket does not enforce it.
    ObjectLockMissing,
    ProbeFailed,
}

/// The outcome of a probe: `problem` is `None` when the destination works. `bucket`, `region`
/// and `endpoint` are an S3 destination's (empty for other stores); `detail` says what failed.
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

/// A fresh key for a probe's put/get/delete: `lifeboat-healthcheck/<16 hex digits>`.
pub(super) fn probe_key() -> String {
    format!(
        "lifeboat-healthcheck/{}",
        hex::encode(rand::random::<[u8; 8]>())
    )
}
