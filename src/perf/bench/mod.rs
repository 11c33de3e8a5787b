//! Benchmarks run from the CLI (never timed tests): `ballast bench jobs` (the job engine
//! against the BullMQ peer's protocol) and `ballast bench webhooks` (Stripe webhook ingest at
//! a fixed arrival rate, from its own client or an external sender), `ballast bench limiter` (the rate limiter's cost per request) and
//! `ballast bench usage` (usage intake and the ledger flush) and `ballast bench entitlements`
//! (entitlement reads through the cache), `ballast bench deliveries` (outbound webhooks to a
//! loopback receiver), and `ballast bench soak` (a bounded steady load through
//! a whole member, sampling memory and table sizes).
//! Each runs in a private Redis namespace and removes what it wrote.

pub mod console;
pub mod customers;
pub mod deliveries;
pub mod entitlements;
pub mod jobs;
pub mod limiter;
pub mod scale;
mod scale_seed;
pub mod soak;
pub mod usage;
pub mod webhooks;
pub mod webhooks_external;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use redis::AsyncCommands;
use tokio::sync::Notify;

use crate::app::StartError;
use crate::redis_keys::RedisKeys;
use crate::queue::QueueError;

/// Errors of a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Could not build the app.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Queue failure.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Redis failure.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failure (setting up or removing the benchmark's rows).
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The run stalled; what was found where.
    #[error("only {done} of {n} finished within {secs} s: {detail}")]
    Incomplete {
        /// Finished.
        done: u64,
        /// Expected.
        n: u64,
        /// The time allowed.
        secs: u64,
        /// Where the rest are.
        detail: String,
    },
    /// The database is not ready for the benchmark.
    #[error("{0}")]
    NotReady(String),
    /// The in-process API did not report its address.
    #[error("the API role did not start listening")]
    NotListening,
    /// Interrupted (Ctrl-C or SIGTERM); what it created was removed.
    #[error("interrupted: the scratch database and the Redis namespace were removed")]
    Interrupted,
    /// The work did not all finish in time.
    #[error("only {done} of {n} finished within {secs} s")]
    Stalled {
        /// Finished.
        done: u64,
        /// Expected.
        n: u64,
        /// The time allowed.
        secs: u64,
    },
}

/// Points `settings` at a private Redis namespace and an ephemeral loopback port; returns the
/// run's id (it names the namespace and the rows the run writes).
pub(crate) fn isolate(settings: &mut crate::config::Settings) -> String {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    settings.redis_namespace = format!("bench{run_id}");
    settings.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    run_id
}

/// Counts finished units of work and wakes whoever waits for a count (no polling, no sleeps).
#[derive(Default)]
pub(crate) struct Progress {
    done: AtomicU64,
    notify: Notify,
}

impl Progress {
    pub(crate) fn bump(&self) {
        self.done.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    pub(crate) async fn wait_for(&self, n: u64, limit: Duration) -> Result<(), BenchError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            let done = self.done();
            if done >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(BenchError::Stalled { done, n, secs: limit.as_secs() });
            }
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s.
pub(crate) fn latency_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).ok()
}

/// p50 and p99 of a microsecond histogram, in milliseconds.
pub(crate) fn p50_p99_ms(h: &Histogram<u64>) -> (f64, f64) {
    (h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Runs `statements` one at a time as the owner role at `owner_url`: what only a table's owner
/// may do (ANALYZE, VACUUM), sent apart because VACUUM cannot run in a multi-statement string.
pub(super) async fn as_owner(owner_url: &str, statements: &[&str]) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut owner = sqlx::PgConnection::connect(owner_url).await?;
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*statement)).execute(&mut owner).await?;
    }
    owner.close().await
}

/// Deletes every key under a namespace, in SCAN batches (never KEYS).
pub async fn delete_namespace(conn: &crate::redis_conn::RedisConn, keys: &RedisKeys) -> Result<u64, redis::RedisError> {
    let mut deleted = 0u64;
    for pattern in keys.deployment_patterns() {
        let found = conn.scan(&pattern).await?;
        let mut del = conn.clone();
        for chunk in found.chunks(500) {
            let n: u64 = del.del(chunk).await?;
            deleted += n;
        }
    }
    Ok(deleted)
}
