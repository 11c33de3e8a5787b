//! `ballast bench jobs`: no-op job throughput and pickup latency on the project's Redis, following
//! the peer benchmark's protocol (../shared/bench/README.md) so the figures compare with BullMQ:
//! 1. enqueue N no-op jobs in batches of 1,000 while no worker runs → enqueue rate;
//! 2. start the workers and release the backlog → processed rate = N / (last − first completion);
//! 3. with workers idle, enqueue single jobs at a fixed rate → pickup latency p50/p99.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{BenchError, Progress};
use crate::app::{AppState, Member, Role};
use crate::config::Settings;
use crate::newtypes::JobKind;
use crate::state::Registry;
use crate::queue::worker::{JobObserver, RunOutcome, WorkerOptions};
use crate::queue::{EnqueueRequest, JobEnvelope, JobQueue};

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
    progress: Progress,
    first_done: Mutex<Option<Instant>>,
    last_done: Mutex<Option<Instant>>,
    pickups: Mutex<Option<Histogram<u64>>>,
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
        self.progress.bump();
    }
}

/// Runs the benchmark in a private namespace of the configured Redis and removes its keys after.
pub async fn run(mut settings: Settings, params: BenchParams) -> Result<BenchReport, BenchError> {
    super::isolate(&mut settings);
    // Only the no-op kind runs: the catalogue below keeps only its entry.
    let registry = Registry::default().with(crate::jobs::noop::Noop);
    let mut state = AppState::build(settings)?;
    let catalogue = state.queue.catalogue().as_ref().clone().only_with_concurrency("noop", params.concurrency);
    state.queue = JobQueue::new(state.keys.clone(), state.redis.clone(), Arc::new(catalogue), state.settings.worker_heartbeat);
    let result = measure(&state, registry, &params).await;
    super::delete_namespace(&state.redis, &state.keys).await?;
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
    recorder.progress.wait_for(n as u64, Duration::from_secs(600)).await?;
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
        *h = super::latency_histogram();
    }
    let total = (params.pickup_rate as u64) * (params.pickup_secs as u64);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / params.pickup_rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let base = recorder.progress.done();
    for _ in 0..total {
        tick.tick().await;
        state.queue.enqueue(EnqueueRequest::new(kind.clone(), serde_json::json!({}))).await?;
    }
    recorder.progress.wait_for(base + total, Duration::from_secs(60)).await?;
    member.shutdown().await;

    let (p50, p99, samples) = match recorder.pickups.lock().ok().and_then(|h| h.clone()) {
        Some(h) => {
            let (p50, p99) = super::p50_p99_ms(&h);
            (p50, p99, h.len())
        }
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
