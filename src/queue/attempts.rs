//! A job's attempts, each with when it started, how long it ran, why it failed and its trace:
//! the timeline the console's job page, `GET /v1/admin/jobs/{id}` and `ballast jobs show` print.
//! The failed ones travel inside the envelope (a retry carries them, a dead letter keeps them),
//! so recording them costs no write of its own; a tracked job's status row keeps them all, the
//! successful last one included, in the update it gets anyway.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest error text stored with a dead letter (and logged with it): an error may quote its
/// input, and the input is the sender's to choose.
pub const MAX_ERROR_TEXT: usize = 2048;

/// Attempts kept per job: the oldest go first (a job retried 50 times needs its latest errors).
pub const KEPT: usize = 20;

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first run.
    pub attempt: u32,
    /// When the handler started.
    pub started_at: DateTime<Utc>,
    /// How long it ran, in milliseconds.
    pub took_ms: u64,
    /// Why it failed; absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trace the attempt ran in (32 hex digits), to find its spans in the collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Attempt {
    /// An attempt that started at `started_at` and ran for `took`, failing with `error` if any.
    pub fn new(attempt: u32, started_at: DateTime<Utc>, took: std::time::Duration, error: Option<&str>, trace_id: Option<String>) -> Self {
        Attempt {
            attempt,
            started_at,
            took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            error: error.map(|e| crate::newtypes::truncated(e, MAX_ERROR_TEXT).into_owned()),
            trace_id,
        }
    }
}

/// `history` with `latest` appended, keeping the newest [`KEPT`].
pub fn appended(history: &[Attempt], latest: Attempt) -> Vec<Attempt> {
    let skip = (history.len() + 1).saturating_sub(KEPT);
    history.iter().skip(skip).cloned().chain(std::iter::once(latest)).collect()
}

/// The trace id inside a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if it is one.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')).then(|| id.to_owned())
}

/// The attempts a stored envelope (a dead letter's) carries; none when it has none.
pub fn of_envelope(envelope: &serde_json::Value) -> Vec<Attempt> {
    envelope.get("history").and_then(|h| serde_json::from_value(h.clone()).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_attempts_are_kept_and_a_traceparent_gives_its_trace_id() {
        let at = DateTime::from_timestamp(1_000, 0).expect("t");
        let mut history = Vec::new();
        for n in 1..=(KEPT as u32 + 5) {
            history = appended(&history, Attempt::new(n, at, std::time::Duration::from_millis(7), Some("boom"), None));
        }
        assert_eq!(history.len(), KEPT);
        assert_eq!(history.first().map(|a| a.attempt), Some(6));
        assert_eq!(history.last().map(|a| a.attempt), Some(KEPT as u32 + 5));
        assert_eq!(trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of("garbage"), None);
    }
}
