//! The job envelope: what Ballast stores in each apalis task, so the job's identity,
//! attempt count and trace context travel with it through retries.

use serde::{Deserialize, Serialize};

use crate::newtypes::{JobId, JobKind, TenantId};

/// One queued run of a job.
// Unknown fields are ignored, not refused: during a rolling upgrade an older member fetches
// envelopes a newer one wrote (a retry's `history`), and refusing them would dead-letter jobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Its progress is written to `job_status` for the tenant that queued it (intake jobs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tracked: bool,
    /// The attempts that failed before this run (newest last, at most
    /// [`super::attempts::KEPT`]): a dead letter keeps them as the job's timeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<super::attempts::Attempt>,
}

impl JobEnvelope {
    /// Decodes a stored run (the worker dead-letters what does not decode, with this error).
    pub fn decode(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }

    /// How long this run waited between its enqueue and `now_us`; zero for a run stamped in the
    /// future (clock skew between members), and no overflow on a corrupt stamp.
    pub fn waited(&self, now_us: i64) -> std::time::Duration {
        std::time::Duration::from_micros(now_us.saturating_sub(self.enqueued_at_us).max(0).unsigned_abs())
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_enqueue_stamp_waits_zero_or_saturates_instead_of_overflowing() {
        let raw = br#"{"id":"j","kind":"noop","attempt":1,"enqueued_at_us":-9223372036854775808}"#;
        let env = JobEnvelope::decode(raw).expect("decodes");
        assert_eq!(env.waited(i64::MAX), std::time::Duration::from_micros(i64::MAX as u64));
        let future = JobEnvelope { enqueued_at_us: i64::MAX, ..env };
        assert_eq!(future.waited(0), std::time::Duration::ZERO);
        assert!(JobEnvelope::decode(b"{\"id\":1}").is_err());
    }
}
