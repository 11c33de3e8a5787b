//! What a load-test run reports and what is stored of it: the types the run fills, the chart
//! draws and the history lists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a level must show to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Nothing answers 5xx or fails to answer.
    #[serde(rename = "no_5xx")]
    No5xx,
    /// The limiter answers 429, and nothing answers 5xx or fails to answer.
    Limited,
}

/// Answers by class.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Statuses {
    /// 2xx and 3xx.
    pub ok: u64,
    /// 429.
    pub limited: u64,
    /// Other 4xx (401 for bogus keys, …).
    pub client_error: u64,
    /// 5xx.
    pub server_error: u64,
    /// No answer (connection refused, timeout).
    pub failed: u64,
}

/// One second of the run (by scheduled time).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// Requests scheduled in it.
    pub sent: u64,
    /// Their answers.
    pub statuses: Statuses,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
}

/// A run's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Level name.
    pub level: String,
    /// Target base URL.
    pub target: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Offered arrivals per second.
    pub rate: u32,
    /// Seconds.
    pub duration_secs: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests not sent because the client already had too many in flight (its own limit).
    pub dropped: u64,
    /// Answers per second achieved.
    pub throughput: f64,
    /// Latency percentiles over the run (ms, from the scheduled time).
    pub p50_ms: f64,
    /// 90th.
    pub p90_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Answers by class.
    pub statuses: Statuses,
    /// What the level expected.
    pub expect: Expect,
    /// Whether the run showed it.
    pub passed: bool,
    /// Why not, when it did not.
    pub verdict: String,
    /// Per second.
    pub timeline: Vec<Second>,
}

/// A stored run, for history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredRun {
    /// Its id.
    pub id: uuid::Uuid,
    /// Level.
    pub level: String,
    /// Target.
    pub target: String,
    /// When.
    pub started_at: DateTime<Utc>,
    /// Offered rate.
    pub rate: i32,
    /// Achieved answers per second.
    pub throughput: f64,
    /// Median (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Passed its expectation.
    pub passed: bool,
}
