//! The consumer side: one [`Consumer`] per job kind (Ballast's fetch and ack on apalis-redis's
//! layout), running the handler under the catalogue's policy (timeout, attempts, backoff,
//! dead letter).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::consumer::{Consumer, Execute, RunResult};
use super::envelope::now_us;
use super::job::{JobContext, JobError, JobReport, Progress, Registry};
use super::wake::Wakeups;
use super::attempts::Attempt;
use super::{JobEnvelope, JobQueue, dead};
use crate::job_catalogue::JobPolicy;
use crate::db::SystemPool;

/// How a run ended, as observers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Succeeded.
    Completed,
    /// Failed; queued again with backoff.
    Retried,
    /// Asked to run later without spending an attempt.
    Snoozed,
    /// Dead-lettered.
    Dead,
}

/// Hooks into every run: benchmarks, tests and (later) metrics watch the runtime through this.
pub trait JobObserver: Send + Sync {
    /// A run started `pickup` after it was queued.
    fn started(&self, _envelope: &JobEnvelope, _pickup: Duration) {}
    /// A run succeeded with `report` (before [`finished`](Self::finished)): what the job says it
    /// did, such as the other events a webhook apply took with its own.
    fn completed(&self, _envelope: &JobEnvelope, _report: &JobReport) {}
    /// A run ended.
    fn finished(&self, _envelope: &JobEnvelope, _outcome: RunOutcome, _took: Duration) {}
}

struct NoObserver;
impl JobObserver for NoObserver {}

/// What the runtime itself uses to run jobs (the handlers' own dependencies are theirs).
#[derive(Clone)]
pub struct WorkerDeps {
    /// The queues.
    pub queue: JobQueue,
    /// Multiplexed Redis connection (fetch, ack, heartbeat).
    pub redis: crate::redis_conn::RedisConn,
    /// Redis client, for the wake-up subscription.
    pub redis_client: redis::Client,
    /// Where dead letters are written.
    pub system_pool: SystemPool,
    /// How long in-flight jobs get to finish after a stop.
    pub shutdown_grace: Duration,
    /// Worker heartbeat.
    pub heartbeat: Duration,
    /// Told of every run, whatever the options' observer (metrics).
    pub metrics: Arc<dyn JobObserver>,
}

/// What the worker role needs besides the runtime's dependencies: the handlers.
pub struct WorkerOptions<D> {
    /// The handlers.
    pub registry: Registry<D>,
    /// Run hooks.
    pub observer: Arc<dyn JobObserver>,
    /// How often idle workers look for due scheduled runs (retries, delayed jobs).
    pub scheduled_poll: Duration,
}

impl<D> Clone for WorkerOptions<D> {
    fn clone(&self) -> Self {
        Self { registry: self.registry.clone(), observer: self.observer.clone(), scheduled_poll: self.scheduled_poll }
    }
}

impl<D> WorkerOptions<D> {
    /// Standard options around `registry`.
    pub fn new(registry: Registry<D>) -> Self {
        Self { registry, observer: Arc::new(NoObserver), scheduled_poll: Duration::from_secs(1) }
    }
}

/// The wake-up subscription: on one Redis, one; on a cluster, one per master (found once the
/// cluster answers), so each announcement is heard from the master that published it.
async fn listen_everywhere(wakeups: Wakeups, deps: WorkerDeps, stop: CancellationToken) {
    let pattern = deps.queue.keys().queue_available_pattern();
    let mut delay = Duration::from_millis(100);
    let clients = loop {
        match deps.redis.master_clients(&deps.redis_client).await {
            Ok(clients) if !clients.is_empty() => break clients,
            Ok(_) => tracing::debug!(message = "No Redis Cluster master known yet; retrying."),
            Err(e) => tracing::debug!(message = "Redis Cluster masters not found yet; retrying.", error = %e),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    let each = clients.into_iter().map(|client| wakeups.clone().listen(client, pattern.clone(), stop.clone()));
    futures::future::join_all(each).await;
}

/// Runs a worker for every catalogued kind until `stop` is cancelled, then lets in-flight
/// jobs finish (the caller bounds how long it waits). Each run's handler gets `state`.
pub async fn run<D: Clone + Send + Sync + 'static>(deps: WorkerDeps, state: D, options: WorkerOptions<D>, member: String, stop: CancellationToken) {
    let wakeups = Wakeups::default();
    let listen_stop = CancellationToken::new();
    let listener = tokio::spawn(listen_everywhere(wakeups.clone(), deps.clone(), listen_stop.clone()));
    // Three quarters into the grace period, handlers still running are interrupted and their
    // jobs queued again, so every run settles and its acknowledgement is written before the
    // member exits; the rest of the grace is for those writes.
    let abandon = CancellationToken::new();
    let abandon_timer = tokio::spawn({
        let (stop, abandon, grace) = (stop.clone(), abandon.clone(), deps.shutdown_grace);
        async move {
            stop.cancelled().await;
            tokio::time::sleep(grace * 3 / 4).await;
            abandon.cancel();
        }
    });
    let mut tasks = Vec::new();
    for policy in deps.queue.catalogue().iter() {
        let exec = Arc::new(Executor {
            deps: deps.clone(),
            state: state.clone(),
            options: options.clone(),
            policy: policy.clone(),
            abandon: abandon.clone(),
        });
        let config = deps.queue.apalis_config(policy);
        let consumer = Consumer {
            exec,
            conn: deps.redis.clone(),
            signal: wakeups.signal(config.queue.as_ref()),
            poll: options.scheduled_poll,
            heartbeat: deps.heartbeat,
            concurrency: policy.concurrency.max(1),
            worker: format!("{member}-{}", policy.kind),
            config,
        };
        tasks.push(tokio::spawn(consumer.run(stop.clone())));
        tasks.push(tokio::spawn(upkeep_loop(deps.queue.clone(), policy.clone(), stop.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
    abandon_timer.abort();
    listen_stop.cancel();
    let _ = listener.await;
}

/// Queue upkeep every second: moves due retries and delayed runs to the active list in
/// bounded batches of 1,000. (Finished runs need no trimming: their acknowledgement deletes
/// their records.)
async fn upkeep_loop(queue: JobQueue, policy: JobPolicy, stop: CancellationToken) {
    loop {
        if let Err(e) = queue.promote_scheduled(&policy.kind, chrono::Utc::now()).await {
            tracing::debug!(message = "Promoting due runs failed.", kind = %policy.kind, error = %e);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct Executor<D> {
    deps: WorkerDeps,
    state: D,
    options: WorkerOptions<D>,
    policy: JobPolicy,
    /// Cancelled late in a graceful shutdown: running handlers stop and their jobs requeue.
    abandon: CancellationToken,
}


impl<D: Clone + Send + Sync + 'static> Execute for Executor<D> {
    async fn execute(&self, data: &[u8]) -> RunResult {
        Executor::execute(self, data).await
    }
}

impl<D: Clone + Send + Sync + 'static> Executor<D> {
    /// Runs one delivery. Returns Ok whenever Ballast has dealt with the outcome (done, retry
    /// queued, dead-lettered); Err only when that bookkeeping itself failed, so the consumer
    /// schedules the run again rather than lose it.
    async fn execute(&self, data: &[u8]) -> RunResult {
        let envelope = match JobEnvelope::decode(data) {
            Ok(env) => env,
            Err(e) => {
                let raw = serde_json::from_slice::<serde_json::Value>(data)
                    .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(data).into_owned()));
                let error = format!("malformed job envelope: {e}");
                tracing::error!(message = "Job dead-lettered.", kind = %self.policy.kind, error = %crate::newtypes::truncated(&error, dead::MAX_ERROR_TEXT));
                crate::error_reports::report(crate::error_reports::Source::Job { kind: self.policy.kind.as_str(), what: "dead-lettered" }, None, &error);
                dead::record(&self.deps.system_pool, "?", self.policy.kind.as_str(), None, &raw, 1, &error).await?;
                return Ok(());
            }
        };
        let pickup = envelope.waited(now_us());
        self.options.observer.started(&envelope, pickup);
        let started = Instant::now();
        let span = tracing::info_span!(
            "job",
            otel.name = %format!("{} process", envelope.kind),
            otel.kind = "consumer",
            messaging.system = "redis",
            messaging.operation.type = "process",
            messaging.destination.name = %envelope.kind,
            messaging.message.id = %envelope.id,
            job_id = %envelope.id,
            kind = %envelope.kind,
            attempt = envelope.attempt,
            tenant.id = tracing::field::Empty,
        );
        if let Some(t) = envelope.tenant {
            span.record("tenant.id", t.0.to_string());
        }
        if let Some(parent) = &envelope.traceparent {
            crate::telemetry::continue_trace(&span, parent);
        }
        self.track(&envelope, super::status::JobState::Running, None, None).await;
        let started_at = chrono::Utc::now();
        let result = self.run_handler(&envelope).instrument(span.clone()).await;
        // Built only for a failed or tracked run: a plain success records no attempt.
        let attempt = |error: Option<&str>| {
            let trace_id = envelope.traceparent.as_deref().and_then(super::attempts::trace_id_of).or_else(|| crate::telemetry::trace_id(&span));
            super::attempts::Attempt::new(envelope.attempt, started_at, started.elapsed(), error, trace_id)
        };
        // The outcome is settled inside the job's span as a future of its own: an entered
        // guard held across these awaits could resume on another thread and leave that
        // thread's span stack wrong (tracing-subscriber then panicked with "tried to clone a
        // span that already closed", killing the consumer task; found by the PostgreSQL drill).
        let outcome = match result {
            // The common case settles without awaiting anything.
            Ok(report) => {
                let took_ms = started.elapsed().as_millis() as u64;
                span.in_scope(|| tracing::debug!(message = "Job completed.", report = %report, took_ms));
                if envelope.tracked {
                    self.track(&envelope, super::status::JobState::Done, Some(&attempt(None)), None).await;
                }
                self.options.observer.completed(&envelope, &report);
                RunOutcome::Completed
            }
            Err(e) => self.settle(&envelope, e, attempt).instrument(span.clone()).await?,
        };
        self.deps.metrics.finished(&envelope, outcome, started.elapsed());
        self.options.observer.finished(&envelope, outcome, started.elapsed());
        Ok(())
    }

    /// Writes a tracked job's progress for its tenant (`GET /v1/jobs/{id}`). A failure is
    /// logged, never the job's: the status is a report, the queue is the truth.
    async fn track(&self, envelope: &JobEnvelope, state: super::status::JobState, ended: Option<&Attempt>, next: Option<chrono::DateTime<chrono::Utc>>) {
        if !envelope.tracked {
            return;
        }
        if let Err(e) = super::status::record(&self.deps.system_pool, &envelope.id.0, state, envelope.attempt, ended, next).await {
            tracing::warn!(message = "Job status not written.", job_id = %envelope.id, error = %e);
        }
    }

    /// Acts on a failed run: requeue (snooze, retry) or dead-letter, and says which.
    /// `attempt` makes this attempt's timeline entry from its error (a snooze is no attempt).
    async fn settle(&self, envelope: &JobEnvelope, error: JobError, attempt: impl Fn(Option<&str>) -> Attempt) -> Result<RunOutcome, Box<dyn std::error::Error + Send + Sync>> {
        let chosen_delay = match &error {
            JobError::RetryIn(_, d) => Some(*d),
            _ => None,
        };
        let outcome = match error {
            JobError::Snooze(delay) => {
                self.requeue(envelope, envelope.attempt, delay, None, None).await?;
                RunOutcome::Snoozed
            }
            JobError::Retry(error) | JobError::RetryIn(error, _) if envelope.attempt < self.policy.max_attempts => {
                let next = envelope.attempt + 1;
                let delay = match &chosen_delay { Some(d) => *d, None => self.policy.backoff.delay(next) };
                tracing::warn!(message = "Job failed; retrying.", error = %crate::newtypes::truncated(&error, dead::MAX_ERROR_TEXT), next_attempt = next, retry_in_ms = delay.as_millis() as u64);
                let failed = attempt(Some(&error));
                self.requeue(envelope, next, delay, Some(&error), Some(&failed)).await?;
                let at = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                self.track(envelope, super::status::JobState::Retrying, Some(&failed), Some(at)).await;
                RunOutcome::Retried
            }
            e => {
                let error = match &e {
                    JobError::Retry(msg) | JobError::RetryIn(msg, _) => format!("attempts exhausted ({}): {msg}", envelope.attempt),
                    other => other.to_string(),
                };
                tracing::error!(message = "Job dead-lettered.", error = %crate::newtypes::truncated(&error, dead::MAX_ERROR_TEXT));
                let source = crate::error_reports::Source::Job { kind: envelope.kind.as_str(), what: "dead-lettered" };
                crate::error_reports::report(source, envelope.tenant.map(|t| t.0), &error);
                let failed = attempt(Some(&error));
                let mut kept = envelope.clone();
                kept.history = super::attempts::appended(&envelope.history, failed.clone());
                let as_json = serde_json::to_value(&kept)?;
                dead::record(
                    &self.deps.system_pool,
                    &envelope.id.0,
                    envelope.kind.as_str(),
                    envelope.tenant.map(|t| t.0),
                    &as_json,
                    envelope.attempt,
                    &error,
                )
                .await?;
                self.track(envelope, super::status::JobState::Dead, Some(&failed), None).await;
                RunOutcome::Dead
            }
        };
        Ok(outcome)
    }

    /// The handler under the kind's timeout, with panics turned into failed attempts.
    async fn run_handler(&self, envelope: &JobEnvelope) -> Result<JobReport, JobError> {
        let Some(handler) = self.options.registry.get(envelope.kind.as_str()) else {
            return Err(JobError::Cancel(format!("no handler for job kind {:?}", envelope.kind.as_str())));
        };
        if envelope.kind != self.policy.kind {
            return Err(JobError::Cancel(format!("job of kind {:?} found on queue of {:?}", envelope.kind.as_str(), self.policy.kind.as_str())));
        }
        let ctx = JobContext {
            job_id: envelope.id.clone(),
            attempt: envelope.attempt,
            tenant: envelope.tenant,
            state: self.state.clone(),
            progress: Progress::default(),
        };
        let run = AssertUnwindSafe(handler.call(envelope.payload.clone(), ctx)).catch_unwind();
        let timed = tokio::select! {
            timed = tokio::time::timeout(self.policy.timeout, run) => timed,
            _ = self.abandon.cancelled() => {
                // Dropping the handler is what a crash does: its transaction rolls back, and
                // handlers are idempotent. The run costs no attempt.
                tracing::warn!(message = "Job interrupted by shutdown; queued again.");
                return Err(JobError::Snooze(Duration::ZERO));
            }
        };
        match timed {
            Err(_) => Err(JobError::Retry(format!("timed out after {:?}", self.policy.timeout))),
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                crate::error_reports::report(crate::error_reports::Source::Job { kind: self.policy.kind.as_str(), what: "panicked" }, None, &msg);
                Err(JobError::Retry(format!("handler panicked: {msg}")))
            }
            Ok(Ok(result)) => result,
        }
    }

    async fn requeue(&self, envelope: &JobEnvelope, attempt: u32, delay: Duration, error: Option<&str>, failed: Option<&Attempt>) -> Result<(), super::QueueError> {
        let mut next = envelope.clone();
        next.attempt = attempt;
        if let Some(failed) = failed {
            next.history = super::attempts::appended(&envelope.history, failed.clone());
        }
        if let Some(e) = error {
            next.last_error = Some(crate::newtypes::truncated(e, dead::MAX_ERROR_TEXT).into_owned());
        }
        next.enqueued_at_us = now_us();
        let run_at = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
        self.deps.queue.push(&next, Some(run_at), None).await?;
        Ok(())
    }
}

