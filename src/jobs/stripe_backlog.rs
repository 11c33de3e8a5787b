//! `stripe.backlog` (admin job, runbook stripe-webhook-backlog). Reports queue depth and
//! oldest age per job kind, inbox rows by status, the top failure reasons, inbox rows that
//! were never queued (or were queued long ago and not processed), the `stripe.event` dead
//! letters matching the filter and, given `backfill_since`, events Stripe failed to deliver that
//! the inbox does not hold. Executing queues the stuck rows, replays the matching dead letters
//! and inserts the missing events into the inbox (then queues them). Every step is idempotent:
//! the inbox is keyed by the event id and handlers converge on Stripe's state.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::kind::{JobContext, JobError};
use super::admin::AdminJob;
use crate::stripe::event::StripeEvent;
use crate::queue::dead;
use crate::stripe::inbox;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeBacklogJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripeBacklogParams {
    /// Replay `stripe.event` dead letters: `all`, or one event type (`invoice.paid`).
    #[serde(default)]
    pub replay_dead: Option<String>,
    /// Only dead letters of this tenant.
    #[serde(default)]
    pub tenant: Option<uuid::Uuid>,
    /// Backfill events Stripe failed to deliver, created since this time (at most 30 days ago).
    #[serde(default)]
    pub backfill_since: Option<DateTime<Utc>>,
    /// A row queued this many seconds ago and still not processed counts as stuck (default 600).
    #[serde(default)]
    pub stuck_after_secs: Option<i64>,
}

/// How far back Stripe's List Events API reaches.
const STRIPE_EVENT_RETENTION_DAYS: i64 = 30;

impl From<crate::queue::QueueError> for JobError {
    fn from(e: crate::queue::QueueError) -> Self {
        JobError::Retry(e.to_string())
    }
}

/// Where the webhook backlog stands (and what was re-queued, replayed, backfilled).
#[derive(Debug, serde::Serialize)]
pub struct StripeBacklogReport {
    /// Every queue's depth.
    pub queues: Vec<crate::queue::QueueStats>,
    /// Inbox rows per status, with the oldest.
    pub inbox: Vec<serde_json::Value>,
    /// The most common errors.
    pub top_failures: Vec<serde_json::Value>,
    /// Rows that should have been applied.
    pub stuck_rows: usize,
    /// Some of them.
    pub stuck_sample: Vec<crate::newtypes::EventId>,
    /// Open `stripe.event` dead letters (of the tenant, when one is named).
    pub dead_letters_open: usize,
    /// Those --execute replays: the ones `replay_dead` names (none without it).
    pub dead_letters_matching: usize,
    /// Events Stripe has that the inbox lacks.
    pub undelivered_missing_from_inbox: usize,
    /// Whether the fixes were applied.
    pub executed: bool,
    /// What applying them did.
    pub done: serde_json::Value,
}

impl AdminJob for StripeBacklogJob {
    const KIND: &'static str = "stripe.backlog";
    type Params = StripeBacklogParams;
    type Report = StripeBacklogReport;
    type Deps = super::deps::Mirror;

    async fn run(&self, p: &StripeBacklogParams, execute: bool, ctx: &JobContext<super::deps::Mirror>) -> Result<StripeBacklogReport, JobError> {
        // System pool: the inbox and dead letters are looked at across tenants.
        let (state, pool) = (&ctx.state, &ctx.state.system_pool);
        let now = Utc::now();
        let queues = state.queue.stats().await?;
        // The statuses `stripe-events list` shows, counted the same way.
        let inbox_by_status = inbox::view::counts_by_status(pool).await?;
        // Events still failing (their rows keep the last error while the job retries) and
        // dead letters of the kind, merged. (This read `status = 'failed'`, which nothing
        // writes: failing events never showed.)
        let mut merged: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for (reason, n) in inbox::failure_reasons(pool, 5).await?.into_iter().chain(dead::error_counts(pool, inbox::JOB_KIND, 5).await?) {
            *merged.entry(reason).or_default() += n;
        }
        let mut failures: Vec<(String, i64)> = merged.into_iter().collect();
        failures.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        failures.truncate(5);
        let stuck_after = Duration::seconds(p.stuck_after_secs.unwrap_or(600).max(0));
        let stuck = inbox::stuck(pool, now - Duration::minutes(1), now - stuck_after).await?;
        // Every open one is reported; those the replay filter names are what --execute replays.
        let open_dead = inbox::dead_letters(pool, "all", p.tenant).await?;
        let dead: Vec<uuid::Uuid> = match &p.replay_dead {
            None => Vec::new(),
            Some(filter) => inbox::dead_letters(pool, filter, p.tenant).await?,
        };
        let missing = match p.backfill_since {
            None => Vec::new(),
            Some(since) => {
                if since < now - Duration::days(STRIPE_EVENT_RETENTION_DAYS) {
                    return Err(JobError::Cancel(format!("backfill_since: Stripe keeps events {STRIPE_EVENT_RETENTION_DAYS} days; use a later time")));
                }
                let listed = state.stripe.undelivered_events(since.timestamp()).await.map_err(|e| JobError::Retry(e.to_string()))?;
                let ids: Vec<String> = listed.iter().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect();
                let held = inbox::held(pool, &ids).await?;
                listed.into_iter().filter(|e| e["id"].as_str().is_some_and(|id| !held.iter().any(|h| h == id))).collect()
            }
        };

        let mut done = json!({"requeued": 0, "replayed": 0, "backfilled": 0});
        if execute {
            for (i, id) in stuck.iter().enumerate() {
                inbox::enqueue(pool, &state.queue, id).await?;
                ctx.progress.report("re-queue inbox rows", i as u64 + 1, Some(stuck.len() as u64));
            }
            for (i, id) in dead.iter().enumerate() {
                crate::queue::dead::retry(pool, &state.queue, *id).await?;
                ctx.progress.report("replay dead letters", i as u64 + 1, Some(dead.len() as u64));
            }
            let mut backfilled = 0;
            for (i, raw) in missing.iter().enumerate() {
                let mut raw = raw.clone();
                let event = StripeEvent::from_stripe(&mut raw, now.timestamp()).map_err(|e| JobError::Cancel(format!("a listed event does not parse: {e}")))?;
                if inbox::insert(pool, &event, &raw).await? == inbox::Inserted::New {
                    inbox::enqueue(pool, &state.queue, &event.id).await?;
                    backfilled += 1;
                }
                ctx.progress.report("backfill events", i as u64 + 1, Some(missing.len() as u64));
            }
            done = json!({"requeued": stuck.len(), "replayed": dead.len(), "backfilled": backfilled});
        }
        Ok(StripeBacklogReport {
            queues,
            inbox: inbox_by_status.iter().map(|(s, n, oldest)| json!({"status": s, "rows": n, "oldest": oldest})).collect::<Vec<_>>(),
            top_failures: failures.iter().map(|(r, n)| json!({"reason": r, "count": n})).collect::<Vec<_>>(),
            stuck_rows: stuck.len(),
            stuck_sample: stuck.iter().take(10).cloned().collect::<Vec<_>>(),
            dead_letters_open: open_dead.len(),
            dead_letters_matching: dead.len(),
            undelivered_missing_from_inbox: missing.len(),
            executed: execute,
            done,
        })
    }
}
