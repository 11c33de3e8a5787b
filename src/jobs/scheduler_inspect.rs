//! `scheduler.inspect` (admin job, runbook scheduler-no-leader). Reports the lease holder, how
//! long ago it renewed, whether that member still heartbeats, and per cron entry its last tick,
//! next tick and the ticks missed since. Executing releases the lease, so a live member takes
//! it within one lease step (a holder that is alive simply takes it again).

use chrono::{TimeZone, Utc};
use redis::AsyncCommands;
use serde_json::json;

use super::kind::{JobContext, JobError};
use super::admin::{AdminJob, NoParams};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedulerInspectJob;

/// What the scheduler inspection found (and did).
#[derive(Debug, serde::Serialize)]
pub struct SchedulerInspectReport {
    /// The member holding the lease.
    pub leader: Option<String>,
    /// The lease TTL.
    pub lease_ms: i64,
    /// What is left of it.
    pub lease_remaining_ms: Option<i64>,
    /// Since its last renewal.
    pub since_renewal_ms: Option<i64>,
    /// The leader's worker heartbeat age.
    pub leader_heartbeat_age_secs: Option<f64>,
    /// Whether that heartbeat is fresh.
    pub leader_alive: bool,
    /// Every member with its heartbeat age.
    pub members: Vec<serde_json::Value>,
    /// Each scheduled kind: last and next tick, missed ticks.
    pub entries: Vec<serde_json::Value>,
    /// Missed ticks over all kinds.
    pub missed_ticks: usize,
    /// Whether the lease was released.
    pub executed: bool,
    /// The lease was held and is released.
    pub released_lease: bool,
}

impl AdminJob for SchedulerInspectJob {
    const KIND: &'static str = "scheduler.inspect";
    type Params = NoParams;
    type Report = SchedulerInspectReport;
    type Deps = super::deps::Fleet;

    async fn run(&self, _p: &NoParams, execute: bool, ctx: &JobContext<super::deps::Fleet>) -> Result<SchedulerInspectReport, JobError> {
        let state = &ctx.state;
        let mut conn = state.redis.clone();
        let now = Utc::now();
        let leader = crate::scheduler::current_leader(&state.redis, &state.keys).await?;
        let ttl_ms: i64 = conn.pttl(state.keys.scheduler_leader()).await?;
        let lease_ms = i64::try_from(state.settings.scheduler_lease.as_millis()).unwrap_or(i64::MAX);
        let heartbeats = state.queue.member_heartbeats().await?;
        let leader_heartbeat_age = leader.as_ref().and_then(|l| heartbeats.iter().find(|(m, _)| m == l)).map(|(_, age)| *age);
        let mut entries = Vec::new();
        let mut missed_total = 0usize;
        for policy in state.queue.catalogue().iter() {
            let Some(schedule) = &policy.schedule else { continue };
            let last_ms: Option<i64> = conn.get(state.keys.scheduler_last_tick(policy.kind.as_str())).await?;
            let last = last_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
            let (due, skipped) = last.map(|l| crate::scheduler::due(schedule, l, now)).unwrap_or((None, 0));
            let missed = if due.is_some() { skipped + 1 } else { 0 };
            missed_total += missed;
            entries.push(json!({
                "kind": policy.kind.as_str(), "last_tick": last, "next_tick": schedule.after(&now).next(), "missed_ticks": missed,
            }));
        }
        let mut released = false;
        if execute && leader.is_some() {
            let removed: i64 = conn.del(state.keys.scheduler_leader()).await?;
            released = removed == 1;
        }
        Ok(SchedulerInspectReport {
            leader,
            lease_ms,
            lease_remaining_ms: (ttl_ms >= 0).then_some(ttl_ms),
            since_renewal_ms: (ttl_ms >= 0).then_some(lease_ms - ttl_ms),
            leader_heartbeat_age_secs: leader_heartbeat_age,
            leader_alive: leader_heartbeat_age.is_some_and(|a| a < 3.0 * state.settings.worker_heartbeat.as_secs_f64()),
            members: heartbeats.iter().map(|(m, age)| json!({"member": m, "heartbeat_age_secs": age})).collect::<Vec<_>>(),
            entries,
            missed_ticks: missed_total,
            executed: execute,
            released_lease: released,
        })
    }
}
