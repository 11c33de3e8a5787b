//! The job envelope: what Ballast stores in each apalis task, so the job's identity,
//! attempt count and trace context travel with it through retries.

use serde::{Deserialize, Serialize};

use crate::domain::{JobId, JobKind, TenantId};

/// One queued run of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobEnvelope {
    /// Stable across retries.
    pub id: JobId,
    /// Selects the handler and the catalogue policy.
    pub kind: JobKind,
    /// The tenant the job acts for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The handler's arguments.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// 1 for the first run; a retry carries the next number.
    pub attempt: u32,
    /// When this run was queued (unix µs): pickup latency and queue age are measured from it.
    pub enqueued_at_us: i64,
    /// W3C traceparent of the span that enqueued the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Why the previous attempt failed (a retry carries it, for `ballast jobs show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
