//! The one small interface every maintenance service has, what it uses, and what a run
//! returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What the services use: the rows they sweep and prune, the queues they push to, Redis (the
/// queues' epochs) and the retentions.
#[derive(Clone)]
pub struct Deps {
    /// Across tenants.
    pub system_pool: crate::db::SystemPool,
    /// Where sweeps queue jobs.
    pub queue: crate::queue::JobQueue,
    /// The queues' epoch keys.
    pub redis: crate::redis_conn::RedisConn,
    /// Their names.
    pub keys: crate::redis_keys::RedisKeys,
    /// How long processed Stripe events are kept.
    pub inbox_retention: Duration,
    /// The partitioned tables' retentions and the archive.
    pub partitions: crate::config::partitions::PartitionSettings,
    /// Cached entitlements (the override expiry drops a tenant's).
    pub cache: crate::cache::Cache,
}

/// Why a run failed; the next run tries again.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// The queue (Redis).
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// Redis, directly.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Creating or retiring partitions.
    #[error(transparent)]
    Partitions(#[from] crate::db::partitions::PartitionError),
}

/// What one run did: counts by what they count (`"requeued": 3`, `"pruned": 120`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Report(pub BTreeMap<String, u64>);

impl Report {
    /// A report of one count.
    pub fn of(what: &str, n: u64) -> Self {
        Self(BTreeMap::from([(what.to_owned(), n)]))
    }

    /// Adds a count.
    pub fn with(mut self, what: &str, n: u64) -> Self {
        self.0.insert(what.to_owned(), n);
        self
    }

    /// Whether it did anything.
    pub fn did_something(&self) -> bool {
        self.0.values().any(|n| *n > 0)
    }
}

/// A run in progress.
pub type Running<'a> = Pin<Box<dyn Future<Output = Result<Report, MaintenanceError>> + Send + 'a>>;

/// One maintenance service.
pub trait Service: Send + Sync {
    /// Its name (`inbox.sweep`), the key of its status.
    fn name(&self) -> &'static str;
    /// How often it runs.
    fn period(&self) -> Duration;
    /// One run.
    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a>;
}

/// A service not completed within this many of its periods is overdue.
pub const OVERDUE_AFTER: u32 = 3;


/// How long a received event or a pending email may wait before a sweep pushes it again (a
/// no-op while its job waits in Redis).
pub(super) const SWEEP_AGE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
