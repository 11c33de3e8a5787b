//! What the fleet's health evaluation uses, and why a round fails.

use std::sync::Arc;
use std::time::Duration;

use super::rules::Rules;

/// What evaluation uses.
#[derive(Clone)]
pub struct Deps {
    /// Outbox, inbox, deliveries, dead letters, maintenance statuses, the alert table.
    pub system_pool: crate::db::SystemPool,
    /// Queue depth and age per kind; where notifications are queued.
    pub queue: crate::queue::JobQueue,
    /// The scheduler's lease.
    pub redis: crate::redis_conn::RedisConn,
    /// Its key.
    pub keys: crate::redis_keys::RedisKeys,
    /// The scheduler's lease length.
    pub lease: Duration,
    /// The thresholds.
    pub rules: Arc<Rules>,
    /// Backups are configured (`BALLAST_BACKUP_DIR`): their alert applies.
    pub backups_configured: bool,
    /// pgBackRest is configured (`BALLAST_PGBACKREST_STANZA`): its backups and point-in-time
    /// rehearsals are held to the same ages.
    pub pgbackrest_configured: bool,
    /// Rehearsals are configured (`BALLAST_REHEARSAL_DATABASE_URL`): theirs does.
    pub rehearsals_configured: bool,
}

/// Why a round could not be evaluated; the next round tries again.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// The queue.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// Redis.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

