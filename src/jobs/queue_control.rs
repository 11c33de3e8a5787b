//! Pausing and resuming a job kind for the whole fleet, as operators do it from the CLI, the
//! admin API and the console: one implementation, audited (`jobs.pause`, `jobs.resume`).

use crate::db::SystemPool;
use crate::queue::{JobQueue, QueueError};

/// Pauses (`paused`) or resumes `kind`, audited with `actor`.
pub async fn set_paused(queue: &JobQueue, pool: &SystemPool, kind: &str, paused: bool, actor: &str) -> Result<(), QueueError> {
    queue.set_paused(kind, paused).await?;
    let mut conn = pool.0.acquire().await?;
    let action = if paused { "jobs.pause" } else { "jobs.resume" };
    crate::audit::record(&mut conn, None, actor, action, serde_json::json!({"kind": kind}), crate::audit::Outcome::Ok).await?;
    Ok(())
}
