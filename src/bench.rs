//! `ballast bench`: no-op job throughput and pickup latency on the project's Redis, following
//! the peer benchmark's protocol (../shared/bench/README.md) so the figures compare with BullMQ:
//! 1. enqueue N no-op jobs in batches of 1,000 while no worker runs → enqueue rate;
//! 2. start the workers and release the backlog → processed rate = N / (last − first completion);
//! 3. with workers idle, enqueue single jobs at a fixed rate → pickup latency p50/p99.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::AsyncCommands;
use serde::Serialize;
use tokio::sync::Notify;

use crate::app::{AppState, Member, Role, StartError};
use crate::config::Settings;
use crate::domain::JobKind;
use crate::jobs::Registry;
use crate::keys::Keys;
use crate::queue::worker::{JobObserver, RunOutcome, WorkerOptions};
use crate::queue::{EnqueueRequest, JobEnvelope, JobQueue, QueueError};

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Could not build the app.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Queue failure.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Redis failure.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The jobs did not all finish in time.
    #[error("only {done} of {n} jobs finished within {secs} s")]
    Stalled {
        /// Finished jobs.
        done: u64,
        /// Expected jobs.
        n: u64,
        /// The time allowed.
        secs: u64,
    },
}

/// Parameters of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchParams {
    /// Jobs in the backlog phase.
    pub n: usize,
    /// Worker concurrency.
    pub concurrency: usize,
    /// Single-job enqueue rate in the pickup phase (jobs/s).
    pub pickup_rate: u32,
    /// Length of the pickup phase.
    pub pickup_secs: u32,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The parameters.
    pub params: BenchParams,
    /// Bulk enqueue rate (jobs/s).
    pub enqueue_per_sec: f64,
    /// Processing rate (jobs/s), first to last completion.
    pub processed_per_sec: f64,
    /// Pickup latency percentiles (ms).
    pub pickup_p50_ms: f64,
    /// Pickup latency p99 (ms).
    pub pickup_p99_ms: f64,
    /// Samples in the pickup phase.
    pub pickup_samples: u64,
}

#[derive(Default)]
struct Recorder {
    done: AtomicU64,
    first_done: Mutex<Option<Instant>>,
    last_done: Mutex<Option<Instant>>,
    pickups: Mutex<Option<Histogram<u64>>>,
    notify: Notify,
}

impl JobObserver for Recorder {
    fn started(&self, _envelope: &JobEnvelope, pickup: Duration) {
        if let Ok(mut h) = self.pickups.lock()
            && let Some(h) = h.as_mut()
        {
            let _ = h.record(pickup.as_micros().max(1) as u64);
        }
    }

    fn finished(&self, _envelope: &JobEnvelope, _outcome: RunOutcome, _took: Duration) {
        let now = Instant::now();
        if let Ok(mut first) = self.first_done.lock() {
            first.get_or_insert(now);
        }
        if let Ok(mut last) = self.last_done.lock() {
            *last = Some(now);
        }
        self.done.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }
}

impl Recorder {
    async fn wait_for(&self, n: u64, limit: Duration) -> Result<(), BenchError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            let done = self.done.load(Ordering::Acquire);
            if done >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(BenchError::Stalled { done, n, secs: limit.as_secs() });
            }
        }
    }
}

/// Runs the benchmark in a private namespace of the configured Redis and removes its keys after.
pub async fn run(mut settings: Settings, params: BenchParams) -> Result<BenchReport, BenchError> {
    settings.redis_namespace = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let registry = Registry::standard();
    let mut state = AppState::build(settings)?;
    let catalogue = state.queue.catalogue().as_ref().clone().only_with_concurrency("noop", params.concurrency);
    state.queue = JobQueue::new(state.keys.clone(), state.redis.clone(), Arc::new(catalogue), state.settings.worker_heartbeat);
    let result = measure(&state, registry, &params).await;
    cleanup(&state).await?;
    result
}

async fn measure(state: &AppState, registry: Registry, params: &BenchParams) -> Result<BenchReport, BenchError> {
    let kind = JobKind::from("noop");
    let n = params.n;

    // 1. Backlog.
    let payloads = vec![serde_json::json!({}); n];
    let started = Instant::now();
    state.queue.enqueue_many(&kind, payloads).await?;
    let enqueue_secs = started.elapsed().as_secs_f64();

    // 2. Workers drain it.
    let recorder = Arc::new(Recorder::default());
    let mut options = WorkerOptions::new(registry);
    options.observer = recorder.clone();
    let roles = BTreeSet::from([Role::Worker]);
    let member = Member::start(state.clone(), &roles, options).await?;
    recorder.wait_for(n as u64, Duration::from_secs(600)).await?;
    let (first, last) = (
        recorder.first_done.lock().ok().and_then(|g| *g),
        recorder.last_done.lock().ok().and_then(|g| *g),
    );
    let span = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64().max(1e-9),
        _ => f64::NAN,
    };

    // 3. Pickup latency with idle workers, single jobs at a fixed rate.
    if let Ok(mut h) = recorder.pickups.lock() {
        *h = Histogram::new_with_bounds(1, 60_000_000, 3).ok();
    }
    let total = (params.pickup_rate as u64) * (params.pickup_secs as u64);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / params.pickup_rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let base = recorder.done.load(Ordering::Acquire);
    for _ in 0..total {
        tick.tick().await;
        state.queue.enqueue(EnqueueRequest::new(kind.clone(), serde_json::json!({}))).await?;
    }
    recorder.wait_for(base + total, Duration::from_secs(60)).await?;
    member.shutdown().await;

    let (p50, p99, samples) = match recorder.pickups.lock().ok().and_then(|h| h.clone()) {
        Some(h) => (h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0, h.len()),
        None => (f64::NAN, f64::NAN, 0),
    };
    Ok(BenchReport {
        params: params.clone(),
        enqueue_per_sec: n as f64 / enqueue_secs,
        processed_per_sec: n as f64 / span,
        pickup_p50_ms: p50,
        pickup_p99_ms: p99,
        pickup_samples: samples,
    })
}

/// Deletes every key of the bench namespace (SCAN, never KEYS).
async fn cleanup(state: &AppState) -> Result<(), BenchError> {
    delete_namespace(&state.redis, &state.keys).await?;
    Ok(())
}

/// Deletes every key under a namespace, in SCAN batches.
pub async fn delete_namespace(conn: &redis::aio::ConnectionManager, keys: &Keys) -> Result<u64, redis::RedisError> {
    let mut deleted = 0u64;
    for pattern in [format!("{}.*", keys.namespace()), format!("{}:*", keys.namespace())] {
        let found = crate::keys::scan(conn, &pattern).await?;
        let mut del = conn.clone();
        for chunk in found.chunks(500) {
            let n: u64 = del.del(chunk).await?;
            deleted += n;
        }
    }
    Ok(deleted)
}
