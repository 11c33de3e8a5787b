//! Job kinds: the [`Job`] trait, the [`Registry`] of handlers, and one file per kind.
//!
//! A job is idempotent and takes no input it cannot recompute (the reconciler rule): the
//! queue delivers at least once, so a handler may see the same job twice. Adding a kind is
//! one file here, one line in [`Registry::standard`] and one entry in jobs/.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::domain::{JobId, TenantId};

pub mod billing_drift;
pub mod cache_reshape;
pub mod cache_warm;
pub mod db_sessions;
pub mod dunning_run;
pub mod email_send;
pub mod limits_spike;
pub mod loadtest_run;
pub mod noop;
pub mod scheduler_inspect;
pub mod site_down;
pub mod site_slow;
pub mod slo_evaluate;
pub mod slo_notify;
pub mod stripe_event;
pub mod usage_flush;
pub mod webhooks_backlog;

/// What a job reports when it finishes: a small JSON summary operators can read.
pub type JobReport = serde_json::Value;

/// How a run ended when it did not succeed. The runtime decides what happens next from this.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Transient: retried with the kind's backoff until attempts run out.
    #[error("{0}")]
    Retry(String),
    /// Will never succeed: dead-lettered now, no more attempts.
    #[error("{0}")]
    Cancel(String),
    /// Not yet: run again after the delay without spending an attempt.
    #[error("snoozed for {0:?}")]
    Snooze(Duration),
    /// The payload does not parse into the kind's arguments: dead-lettered with the parse error.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Retry(format!("postgres: {e}"))
    }
}

impl From<redis::RedisError> for JobError {
    fn from(e: redis::RedisError) -> Self {
        JobError::Retry(format!("redis: {e}"))
    }
}

impl From<crate::db::DbError> for JobError {
    fn from(e: crate::db::DbError) -> Self {
        JobError::Retry(e.to_string())
    }
}

/// What a handler knows about the run it is in.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's identity (stable across retries).
    pub job_id: JobId,
    /// 1 for the first run.
    pub attempt: u32,
    /// The tenant the job acts for, if any.
    pub tenant: Option<TenantId>,
    /// Shared dependencies: pools, Redis, the queue, settings.
    pub state: AppState,
    /// Where a long run reports how far it is (a terminal for `ballast runbook run`).
    pub progress: crate::runbook::Progress,
}

/// A job kind: a stable name, typed arguments and an async handler.
pub trait Job: Send + Sync + 'static {
    /// The kind's name, as written in jobs/ (`noop`, `stripe.event`).
    const KIND: &'static str;
    /// Arguments, parsed from the job's JSON payload.
    type Args: DeserializeOwned + Send + 'static;
    /// Does the work once. Must be safe to run again with the same arguments.
    fn run(&self, args: Self::Args, ctx: JobContext) -> impl Future<Output = Result<JobReport, JobError>> + Send;
}

/// The boxed future a type-erased handler returns.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<JobReport, JobError>> + Send>>;

/// A handler with its argument type erased, as the runtime holds it.
pub trait ErasedJob: Send + Sync {
    /// Parses the payload and runs the handler.
    fn call(self: Arc<Self>, payload: serde_json::Value, ctx: JobContext) -> JobFuture;
    /// Whether `payload` parses into the kind's arguments (checked at intake, so a malformed
    /// payload is a 400 to its sender, not a dead letter later); the error says why not.
    fn check(&self, payload: &serde_json::Value) -> Result<(), serde_json::Error>;
}

struct Typed<J>(J);

impl<J: Job> ErasedJob for Typed<J> {
    fn call(self: Arc<Self>, payload: serde_json::Value, ctx: JobContext) -> JobFuture {
        Box::pin(async move {
            let args: J::Args = serde_json::from_value(payload).map_err(|e| JobError::Malformed(e.to_string()))?;
            self.0.run(args, ctx).await
        })
    }

    fn check(&self, payload: &serde_json::Value) -> Result<(), serde_json::Error> {
        <J::Args as serde::Deserialize>::deserialize(payload).map(drop)
    }
}

/// Every job kind this binary can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<&'static str, Arc<dyn ErasedJob>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// The production registry: one line per job kind.
    pub fn standard() -> Self {
        Self::default()
            .with(noop::Noop)
            .with(stripe_event::StripeEventJob)
            .with(email_send::EmailSendJob)
            .with(crate::runbook::Admin(dunning_run::DunningRunJob))
            .with(usage_flush::UsageFlushJob)
            .with(cache_warm::CacheWarmJob)
            .with(crate::runbook::Admin(cache_reshape::CacheReshapeJob))
            .with(slo_evaluate::SloEvaluateJob)
            .with(slo_notify::SloNotifyJob)
            .with(loadtest_run::LoadtestRunJob)
            .with(crate::runbook::Admin(webhooks_backlog::WebhooksBacklogJob))
            .with(crate::runbook::Admin(scheduler_inspect::SchedulerInspectJob))
            .with(crate::runbook::Admin(db_sessions::DbSessionsJob))
            .with(crate::runbook::Admin(limits_spike::LimitsSpikeJob))
            .with(crate::runbook::Admin(site_slow::SiteSlowJob))
            .with(crate::runbook::Admin(site_down::SiteDownJob))
            .with(crate::runbook::Admin(billing_drift::BillingDriftJob))
    }

    /// Adds (or replaces) the handler for `J::KIND`.
    pub fn with<J: Job>(mut self, job: J) -> Self {
        self.handlers.insert(J::KIND, Arc::new(Typed(job)));
        self
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn ErasedJob>> {
        self.handlers.get(kind).cloned()
    }

    /// Every registered kind.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }
}
