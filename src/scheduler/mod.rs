//! The scheduler role: cron entries from the catalogue, fired by exactly one leader.
//!
//! Leadership is a Redis lease (SET NX PX) renewed at a third of its TTL and released on
//! shutdown; a member that fails to renew stops ticking at once. Every tick is enqueued with
//! the idempotency key `kind@instant`, so two leaders in a split second, or a leadership
//! change mid-tick, still enqueue each tick once. A tick missed while no leader ran is run
//! once on takeover; older missed ticks are skipped and logged. (apalis-cron fires on every
//! instance — apalis issue 281 — which is why this is ours.)

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::job_catalogue::JobPolicy;
use crate::queue::EnqueueRequest;

/// What the scheduler uses: the lease and the last ticks in Redis, the queues it ticks and
/// sweeps into, the rows the sweeps and prunes read, and its settings.
#[derive(Clone)]
pub struct SchedulerDeps {
    /// The lease length and the retentions of what it prunes.
    pub settings: std::sync::Arc<crate::config::Settings>,
    /// The inbox, the outbox, deliveries and job statuses, across tenants.
    pub system_pool: crate::db::SystemPool,
    /// The lease and the last ticks.
    pub redis: crate::redis_conn::RedisConn,
    /// Their key names.
    pub keys: crate::redis_keys::RedisKeys,
    /// Where ticks and sweeps queue jobs (and the catalogue's schedules).
    pub queue: crate::queue::JobQueue,
    /// Cached entitlements the override expiry drops.
    pub cache: crate::cache::Cache,
}

const LAST_TICK_TTL_SECS: u64 = crate::redis_keys::RedisKeys::SCHEDULER_LAST_TICK_TTL.as_secs();

impl SchedulerDeps {
    /// What the maintenance services use.
    pub fn maintenance(&self) -> crate::maintenance::Deps {
        crate::maintenance::Deps {
            system_pool: self.system_pool.clone(),
            queue: self.queue.clone(),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            inbox_retention: self.settings.inbox_retention,
            partitions: self.settings.partitions.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// Runs the scheduler until `stop`, then releases the lease if held.
pub async fn run(state: SchedulerDeps, member: String, stop: CancellationToken) {
    let lease = state.settings.scheduler_lease;
    let step = (lease / 3).min(Duration::from_millis(500)).max(Duration::from_millis(50));
    let mut leader = false;
    let maintenance = state.maintenance();
    // A new runner per leadership: a member that takes over runs every service at once.
    let mut runner: Option<crate::maintenance::Runner> = None;
    loop {
        match hold_lease(&state, &member, lease, leader).await {
            Ok(now_leader) => {
                if now_leader != leader {
                    if now_leader {
                        tracing::info!(message = "Scheduler leadership acquired.", member = %member);
                    } else {
                        tracing::warn!(message = "Scheduler leadership lost; ticking stops.", member = %member);
                    }
                }
                leader = now_leader;
            }
            Err(e) => {
                if leader {
                    tracing::warn!(message = "Scheduler lease could not be renewed; ticking stops.", error = %e);
                }
                leader = false;
            }
        }
        if leader {
            runner.get_or_insert_with(crate::maintenance::Runner::default).run_due(&maintenance).await;
        } else {
            runner = None;
        }
        if leader {
            for policy in state.queue.catalogue().iter().filter(|p| p.schedule.is_some()) {
                if let Err(e) = tick(&state, policy, Utc::now()).await {
                    tracing::warn!(message = "Scheduled tick not enqueued; will retry.", kind = %policy.kind, error = %e);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(step) => {}
        }
    }
    if leader {
        match release_lease(&state, &member).await {
            Ok(()) => tracing::info!(message = "Scheduler lease released.", member = %member),
            Err(e) => tracing::warn!(message = "Scheduler lease not released; it expires by itself.", error = %e),
        }
    }
}

/// Acquires or renews the lease. Renewal checks the holder in the same script, so a member
/// whose lease expired and was taken cannot extend someone else's.
async fn hold_lease(state: &SchedulerDeps, member: &str, lease: Duration, leader: bool) -> Result<bool, redis::RedisError> {
    let mut conn = state.redis.clone();
    let key = state.keys.scheduler_leader();
    let ms = lease.as_millis() as u64;
    if leader {
        let renewed: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
        )
        .key(&key)
        .arg(member)
        .arg(ms)
        .invoke_async(&mut conn)
        .await?;
        return Ok(renewed == 1);
    }
    let acquired: Option<String> =
        redis::cmd("SET").arg(&key).arg(member).arg("NX").arg("PX").arg(ms).query_async(&mut conn).await?;
    Ok(acquired.is_some())
}

async fn release_lease(state: &SchedulerDeps, member: &str) -> Result<(), redis::RedisError> {
    let mut conn = state.redis.clone();
    let _: i64 = redis::Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
        .key(state.keys.scheduler_leader())
        .arg(member)
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

/// The member currently holding the lease, if any.
pub async fn current_leader(redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys) -> Result<Option<String>, redis::RedisError> {
    let mut conn = redis.clone();
    conn.get(keys.scheduler_leader()).await
}

/// The id (and idempotency key) of the job a tick of `kind` at `instant` queues.
pub fn tick_job_id(kind: &str, instant: DateTime<Utc>) -> String {
    format!("{kind}@{}", instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Which scheduled instants are due at `now` after `last`: the one to run (the latest due)
/// and how many older ones are skipped. A schedule far behind is counted from a day back:
/// the count only feeds a log line, and the latest instant is what runs.
pub fn due(schedule: &cron::Schedule, last: DateTime<Utc>, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, usize) {
    let from = last.max(now - chrono::Duration::days(1));
    let mut latest = None;
    let mut count = 0usize;
    for instant in schedule.after(&from).take_while(|i| *i <= now) {
        latest = Some(instant);
        count += 1;
    }
    (latest, count.saturating_sub(1))
}

async fn tick(state: &SchedulerDeps, policy: &JobPolicy, now: DateTime<Utc>) -> Result<(), crate::queue::QueueError> {
    let Some(schedule) = &policy.schedule else { return Ok(()) };
    let mut conn = state.redis.clone();
    let last_key = state.keys.scheduler_last_tick(policy.kind.as_str());
    let last_ms: Option<i64> = conn.get(&last_key).await?;
    // A kind never ticked before starts from now: no backfill of history on first deploy.
    let last = match last_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()) {
        Some(t) => t,
        None => {
            let _: () = conn.set_ex(&last_key, now.timestamp_millis(), LAST_TICK_TTL_SECS).await?;
            return Ok(());
        }
    };
    let (instant, skipped) = due(schedule, last, now);
    let Some(instant) = instant else { return Ok(()) };
    if skipped > 0 {
        tracing::warn!(message = "Missed scheduled ticks skipped; running the latest once.", kind = %policy.kind, skipped, running = %instant);
    }
    let key = tick_job_id(policy.kind.as_str(), instant);
    let mut req = EnqueueRequest::new(policy.kind.clone(), policy.schedule_payload.clone());
    req.id = Some(crate::newtypes::JobId(key.clone()));
    req.idempotency_key = Some(key);
    let done = state.queue.enqueue(req).await?;
    if done.duplicate {
        tracing::debug!(message = "Scheduled tick already enqueued by another leader.", kind = %policy.kind, instant = %instant);
    }
    let _: () = conn.set_ex(&last_key, instant.timestamp_millis(), LAST_TICK_TTL_SECS).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn runs_latest_missed_tick_once_and_counts_skipped() {
        let every_minute = cron::Schedule::from_str("0 * * * * *").expect("cron");
        let last = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).single().expect("time");
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 30).single().expect("time");
        let (instant, skipped) = due(&every_minute, last, now);
        assert_eq!(instant, Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).single());
        assert_eq!(skipped, 4);
        let (instant, skipped) = due(&every_minute, now, now);
        assert_eq!((instant, skipped), (None, 0));
    }
}
