//! `queue.recovery`: Redis restarted empty (or failed over to an empty replica) when a queue's
//! epoch key is gone, and every job that queue held is lost; the durable rows behind queued
//! work (webhook inbox, email outbox, outbound deliveries) are queued again at once, and the
//! epochs set only after that succeeded. Each epoch hashes with its queue: on a cluster, one
//! shard losing its data is noticed by the epochs on that shard.

use std::time::Duration;

use redis::AsyncCommands;

use super::service::{Deps, MaintenanceError, Report, Running, Service};

/// The service.
pub(super) struct QueueRecovery;

impl Service for QueueRecovery {
    fn name(&self) -> &'static str {
        "queue.recovery"
    }

    fn period(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn run<'a>(&'a self, deps: &'a Deps) -> Running<'a> {
        Box::pin(recover(deps))
    }
}

async fn recover(deps: &Deps) -> Result<Report, MaintenanceError> {
    let mut conn = deps.redis.clone();
    let queues: std::collections::BTreeSet<&str> = deps.queue.catalogue().iter().map(|p| p.queue.as_str()).collect();
    let mut missing = Vec::new();
    for queue in queues {
        let epoch = deps.keys.queue_epoch(queue);
        if !conn.exists::<_, bool>(&epoch).await? {
            missing.push(epoch);
        }
    }
    if missing.is_empty() {
        return Ok(Report::of("queues_lost", 0));
    }
    let events = crate::stripe::inbox::requeue_after_data_loss(&deps.system_pool, &deps.queue).await?;
    let emails = crate::email::sweep(&deps.system_pool, &deps.queue, chrono::TimeDelta::zero()).await?;
    let deliveries = crate::webhooks_out::messages::requeue_after_data_loss(&deps.system_pool, &deps.queue).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let lost = missing.len() as u64;
    for epoch in missing {
        let _: () = conn.set(&epoch, now).await?;
    }
    if events + emails + deliveries > 0 {
        tracing::warn!(message = "Redis had lost its queue data; queued every unprocessed event, email and delivery again.", events, emails, deliveries);
    }
    Ok(Report::of("queues_lost", lost).with("events_requeued", events as u64).with("emails_requeued", emails as u64).with("deliveries_requeued", deliveries as u64))
}
