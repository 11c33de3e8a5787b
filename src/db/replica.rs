//! Reads that can lag, from a streaming replica (`BALLAST_REPLICA_DATABASE_URL`): the console's
//! and the admin API's lists, timelines and reports. Before each such read the replica's replay
//! position is compared with the primary's: caught up, or behind by no more than
//! `BALLAST_REPLICA_MAX_LAG_SECS`, the read goes to the replica; further behind, or unreachable,
//! it goes to the primary and says why (the console shows it; the admin API sends it in
//! `X-Ballast-Read-From`). Writes and reads that decide something stay on the primary.

use std::time::Duration;

use sqlx::PgPool;

use super::{DbError, SystemPool};

/// Where a read was served from, and why there.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadSource {
    /// No replica is configured.
    Primary,
    /// The replica, this far behind.
    Replica {
        /// How far its replay trails the primary (zero when caught up).
        lag: Duration,
    },
    /// The primary, because the replica could not be used.
    Fallback {
        /// Why not (it lags past the bound, or cannot be read).
        why: String,
    },
}

impl ReadSource {
    /// What an operator is told (None when there is no replica to speak of).
    pub fn note(&self) -> Option<String> {
        match self {
            ReadSource::Primary => None,
            ReadSource::Replica { lag } => Some(format!("replica (lag {:.1} s)", lag.as_secs_f64())),
            ReadSource::Fallback { why } => Some(format!("primary: {why}")),
        }
    }
}

/// A pool to read from, and where it leads.
#[derive(Debug, Clone)]
pub struct Reads {
    /// The pool (the system role's, on the replica or the primary).
    pub pool: SystemPool,
    /// Where it leads.
    pub source: ReadSource,
}

/// The replica and the lag it may have.
#[derive(Debug, Clone)]
pub struct Replica {
    pool: PgPool,
    max_lag: Duration,
}

impl Replica {
    /// A replica reached through `url` (connected lazily), trusted up to `max_lag` behind.
    pub fn new(url: &str, max_lag: Duration, size: u32) -> Result<Self, DbError> {
        let pool = super::lazy_pool(url, "BALLAST_REPLICA_DATABASE_URL", "ballast-replica", size)?;
        Ok(Self { pool, max_lag })
    }

    /// How far the replica's replay trails `primary`: zero when it has replayed everything the
    /// primary has written, else the age of the last transaction it replayed.
    pub async fn lag(&self, primary: &SystemPool) -> Result<Duration, String> {
        let (replayed_lsn, replayed_at, in_recovery): (Option<String>, Option<chrono::DateTime<chrono::Utc>>, bool) =
            sqlx::query_as("SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), pg_is_in_recovery()")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| format!("the replica cannot be read ({e})"))?;
        if !in_recovery {
            return Err("BALLAST_REPLICA_DATABASE_URL names a primary, not a replica".into());
        }
        let caught_up: bool = sqlx::query_scalar("SELECT pg_current_wal_lsn() <= $1::pg_lsn")
            .bind(replayed_lsn.as_deref().unwrap_or("0/0"))
            .fetch_one(&primary.0)
            .await
            .map_err(|e| format!("the primary's position cannot be read ({e})"))?;
        if caught_up {
            return Ok(Duration::ZERO);
        }
        let replayed_at = replayed_at.ok_or("the replica has replayed nothing yet")?;
        Ok((chrono::Utc::now() - replayed_at).to_std().unwrap_or(Duration::ZERO))
    }

    /// Where a read that can lag goes now.
    pub async fn reads(&self, primary: &SystemPool) -> Reads {
        match self.lag(primary).await {
            Ok(lag) if lag <= self.max_lag => Reads { pool: SystemPool(self.pool.clone()), source: ReadSource::Replica { lag } },
            Ok(lag) => fallback(primary, format!("the replica lags {:.1} s, more than the {} s allowed", lag.as_secs_f64(), self.max_lag.as_secs())),
            Err(why) => fallback(primary, why),
        }
    }
}

/// Where a read that can lag goes now: `replica` while it keeps up, else `primary` (which is
/// all there is when no replica is set).
pub async fn reads(replica: Option<&Replica>, primary: &SystemPool) -> Reads {
    match replica {
        Some(r) => r.reads(primary).await,
        None => Reads { pool: primary.clone(), source: ReadSource::Primary },
    }
}

/// One line a minute while reads fall back, however many there are.
static FALLBACK_LOG: crate::telemetry::Sampled = crate::telemetry::Sampled::new(Duration::from_secs(60));

fn fallback(primary: &SystemPool, why: String) -> Reads {
    if let Some(suppressed) = FALLBACK_LOG.admit(chrono::Utc::now().timestamp_millis()) {
        tracing::warn!(message = "Reading from the primary instead of the replica.", why = %why, suppressed);
    }
    Reads { pool: primary.clone(), source: ReadSource::Fallback { why } }
}
