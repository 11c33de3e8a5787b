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

/// How long one prune may keep deleting. A prune deletes what is due in batches (each its own
/// short transaction) until a batch comes back short or this has passed: one batch a run kept
/// the inbox up with 83 events/s and the deliveries with 166/s and no more. Short, because the
/// leader's other services (the lost-queue check every 5 s) wait while it runs.
pub(super) const PRUNE_BUDGET: Duration = Duration::from_secs(5);

/// Runs `batch` (which deletes, or fills, at most `size` rows and says how many) until one
/// comes back short or [`PRUNE_BUDGET`] has passed; returns the total.
pub(super) async fn drain<F, Fut, E>(size: u64, mut batch: F) -> Result<u64, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let (started, mut total) = (std::time::Instant::now(), 0);
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < size || started.elapsed() >= PRUNE_BUDGET {
            return Ok(total);
        }
    }
}
