//! The cron entries as operators see them (`ballast`'s console): each scheduled kind with its
//! expression, its last tick and the job it queued, where that job is now, and the next tick;
//! and "run now", which queues the kind's scheduled payload at once, audited.

use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;

use crate::db::SystemPool;
use crate::newtypes::JobId;
use crate::queue::{EnqueueRequest, JobQueue, QueueError};

/// The id (and idempotency key) of the job a tick of `kind` at `instant` queues.
pub fn tick_job_id(kind: &str, instant: DateTime<Utc>) -> String {
    format!("{kind}@{}", instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

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
    /// Where that job is: `queued`, `dead`, or `ran` (neither queued nor dead).
    pub last_outcome: Option<&'static str>,
    /// The next tick.
    pub next_tick: Option<DateTime<Utc>>,
}

/// Every scheduled kind of the catalogue, by kind.
pub async fn entries(queue: &JobQueue, pool: &SystemPool, redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys, now: DateTime<Utc>) -> Result<Vec<ScheduleEntry>, QueueError> {
    let mut out = Vec::new();
    let mut conn = redis.clone();
    for policy in queue.catalogue().iter().filter(|p| p.schedule.is_some()) {
        let Some(schedule) = &policy.schedule else { continue };
        let last_ms: Option<i64> = conn.get(keys.scheduler_last_tick(policy.kind.as_str())).await?;
        let last_tick = last_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        let last_job = last_tick.map(|t| tick_job_id(policy.kind.as_str(), t));
        let last_outcome = match &last_job {
            None => None,
            Some(id) if queue.find(id).await?.is_some() => Some("queued"),
            Some(id) if crate::queue::dead::find(pool, id).await?.is_some() => Some("dead"),
            Some(_) => Some("ran"),
        };
        out.push(ScheduleEntry {
            kind: policy.kind.to_string(),
            cron: schedule.to_string(),
            last_tick,
            last_job,
            last_outcome,
            next_tick: schedule.after(&now).next(),
        });
    }
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
