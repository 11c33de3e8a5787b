//! The cron entries as operators see them (the console): each scheduled kind with its
//! expression, its last tick and the job it queued, where that job is now, and the next tick;
//! and "run now", which queues the kind's scheduled payload at once, audited.

use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;

use crate::db::SystemPool;
use crate::newtypes::JobId;
use crate::queue::{EnqueueRequest, JobQueue, QueueError};

/// One cron entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleEntry {
    /// The job kind.
    pub kind: String,
    /// The cron expression (seconds first).
    pub cron: String,
    /// The last tick queued.
    pub last_tick: Option<DateTime<Utc>>,
    /// The job that tick queued (`kind@instant`).
    pub last_job: Option<String>,
    /// Where that job is: `dead`; `done` or `failed` (an admin job's run); `queued` (its kind
    /// has work waiting or running); or `ran`.
    pub last_outcome: Option<&'static str>,
    /// The next tick.
    pub next_tick: Option<DateTime<Utc>>,
}

/// Every scheduled kind of the catalogue, by kind.
pub async fn entries(queue: &JobQueue, pool: &SystemPool, redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys, now: DateTime<Utc>) -> Result<Vec<ScheduleEntry>, QueueError> {
    let scheduled = queue.catalogue().iter().filter_map(|p| p.schedule.as_ref().map(|s| (p.kind.to_string(), s.clone())));
    // Where the last tick's job is, without reading the queue's job data (a large queue would
    // make that slow): a dead letter says dead; an admin job's run says how it ended; else the
    // kind's queue with work in it says queued, an empty one that it ran.
    let stats = queue.stats().await?;
    let busy = |kind: &str| stats.iter().any(|s| s.kind == kind && s.ready + s.scheduled + s.running > 0);
    // Each entry's reads (Redis, then PostgreSQL) run concurrently with the others'.
    let mut out = futures::future::try_join_all(scheduled.map(|(kind, schedule)| async move {
        let mut conn = redis.clone();
        let last_ms: Option<i64> = conn.get(keys.scheduler_last_tick(&kind)).await?;
        let last_tick = last_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        let last_job = last_tick.map(|t| crate::scheduler::tick_job_id(&kind, t));
        let last_outcome = match &last_job {
            None => None,
            Some(id) if crate::queue::dead::find(pool, id).await?.is_some() => Some("dead"),
            Some(id) => match super::admin_runs::find(pool, id).await? {
                Some(run) if run.finished_at.is_some() => Some(if run.error.is_some() { "failed" } else { "done" }),
                _ if busy(&kind) => Some("queued"),
                _ => Some("ran"),
            },
        };
        Ok::<_, QueueError>(ScheduleEntry { cron: schedule.to_string(), next_tick: schedule.after(&now).next(), kind, last_tick, last_job, last_outcome })
    }))
    .await?;
    out.sort_by(|a, b| a.kind.cmp(&b.kind));
    Ok(out)
}

/// Why a run could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum RunNowError {
    /// The kind has no schedule.
    #[error("{0} is not a scheduled kind")]
    NotScheduled(String),
    /// The queue or the audit log.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Queues `kind`'s scheduled payload now (an admin job's run names `actor` as who asked),
/// audited as `schedules.run_now`.
pub async fn run_now(queue: &JobQueue, pool: &SystemPool, kind: &str, actor: &str) -> Result<JobId, RunNowError> {
    let policy = queue.catalogue().iter().find(|p| p.kind.as_str() == kind && p.schedule.is_some()).ok_or_else(|| RunNowError::NotScheduled(kind.to_owned()))?;
    let mut payload = policy.schedule_payload.clone();
    if let Some(who) = payload.get_mut("actor") {
        *who = serde_json::Value::String(actor.to_owned());
    }
    let done = queue.enqueue(EnqueueRequest::new(policy.kind.clone(), payload)).await?;
    let mut conn = pool.0.acquire().await.map_err(QueueError::from)?;
    let params = serde_json::json!({"kind": kind, "job": done.id});
    crate::audit::record(&mut conn, None, actor, "schedules.run_now", params, crate::audit::Outcome::Ok).await.map_err(QueueError::from)?;
    Ok(done.id)
}
