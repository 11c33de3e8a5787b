//! Ballast's own fetch and acknowledgement, on apalis-redis's data layout (the same active list,
//! data hash, scheduled set, workers set and per-worker in-flight sets, so `ballast jobs`, the
//! push script and KEDA see one queue). It replaces apalis's worker loop for two measured
//! reasons: apalis-redis reads every run's meta hash on fetch and writes a done record per run
//! on ack (half of Redis's work per job in the no-op benchmark), and it holds acknowledgements
//! until the worker closes, so a shutdown cut off at its deadline lost the acks of runs that
//! had finished and ran them again.
//!
//! Per batch: one script moves up to the free concurrency from the active list into this
//! worker's in-flight set and returns the data; every run is spawned under a semaphore; finished
//! runs are acknowledged in batches by one script (in-flight entry and data deleted). A
//! heartbeat task keeps the worker's score fresh and returns the runs of workers silent for
//! three heartbeats to the active list.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use crate::redis_conn::RedisConn;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::wake::QueueSignal;
/// Err only when Ballast could not record a run's outcome: the consumer schedules the run
/// again rather than lose it.
pub(super) type RunResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs one delivery: what a consumer hands each fetched job to (the worker's executor).
pub(super) trait Execute: Send + Sync + 'static {
    /// Runs the job in `data`; Err only when its outcome could not be recorded.
    fn execute(&self, data: &[u8]) -> impl std::future::Future<Output = RunResult> + Send;
}
use crate::redis_keys::RedisKeys;

static FETCH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/fetch.lua")));
static ACK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/ack.lua")));
static LATER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/later.lua")));
static BEAT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/beat.lua")));
static RECLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/reclaim.lua")));
static LEAVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/leave.lua")));

/// Most runs acknowledged by one script call.
const ACK_BATCH: usize = 1000;
/// A run whose outcome could not be recorded runs again after this long.
const RETRY_UNRECORDED: Duration = Duration::from_secs(5);

/// The Redis names of one worker of one queue.
#[derive(Clone)]
struct Names {
    active: String,
    data: String,
    scheduled: String,
    workers: String,
    inflight_prefix: String,
    inflight: String,
    channel: String,
    paused: String,
    worker: String,
}

impl Names {
    fn new(config: &apalis_redis::Config, worker: &str) -> Self {
        let inflight_prefix = config.inflight_jobs_set();
        Self {
            active: config.active_jobs_list(),
            data: config.job_data_hash(),
            scheduled: config.scheduled_jobs_set(),
            workers: config.workers_set(),
            inflight: RedisKeys::queue_inflight(&inflight_prefix, worker),
            inflight_prefix,
            channel: RedisKeys::queue_available_channel(config.queue.as_ref()),
            paused: RedisKeys::queue_paused(config.queue.as_ref()),
            worker: worker.to_owned(),
        }
    }
}

/// How a run's delivery ended, for the acknowledger.
enum Settled {
    /// Dealt with (done, retry queued, dead-lettered): forget it.
    Done(String),
    /// Its outcome could not be recorded: run it again later.
    Later(String),
}

/// One worker of one queue.
pub(super) struct Consumer<E> {
    pub(super) exec: Arc<E>,
    pub(super) conn: RedisConn,
    pub(super) config: apalis_redis::Config,
    pub(super) worker: String,
    pub(super) signal: QueueSignal,
    pub(super) poll: Duration,
    pub(super) heartbeat: Duration,
    pub(super) concurrency: usize,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl<E: Execute> Consumer<E> {
    /// Runs until `stop`, then waits for the runs in flight (the executor interrupts them late in
    /// the grace period), acknowledges them and leaves the workers set.
    pub(super) async fn run(self, stop: CancellationToken) {
        let names = Names::new(&self.config, &self.worker);
        let mut conn = self.conn.clone();
        let beat_stop = CancellationToken::new();
        let beat = tokio::spawn(heartbeat(conn.clone(), names.clone(), self.heartbeat, self.config.orphaned_duration(), beat_stop.clone()));
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(acknowledge(conn.clone(), names.clone(), settled_rx));
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut signal = self.signal.clone();
        let mut failures = 0u32;
        'fetching: loop {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            let room = slots.available_permits() + 1;
            let fetched: Result<Vec<Vec<u8>>, redis::RedisError> = FETCH
                .key(&names.active)
                .key(&names.inflight)
                .key(&names.data)
                .key(&names.workers)
                .key(&names.paused)
                .arg(room)
                .arg(&names.worker)
                .invoke_async(&mut conn)
                .await;
            let items = match fetched {
                Ok(items) => {
                    failures = 0;
                    items
                }
                Err(e) => {
                    drop(first);
                    if e.code() == Some("NOREG") {
                        // First fetch, or Redis lost the registration: join (the heartbeat
                        // script upserts this worker's score) and fetch again at once.
                        if let Err(e) = beat_once(&mut conn, &names, self.config.orphaned_duration()).await {
                            tracing::warn!(message = "Worker could not register; retrying.", worker = %names.worker, error = %e);
                        } else {
                            continue 'fetching;
                        }
                    } else {
                        tracing::warn!(message = "Fetching jobs failed; retrying.", worker = %names.worker, error = %e);
                    }
                    failures = (failures + 1).min(6);
                    let delay = Duration::from_millis(100 << failures);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue 'fetching,
                    }
                }
            };
            if items.is_empty() {
                drop(first);
                // An announcement made while the fetch was in flight is still set, so this
                // returns at once and the loop looks again.
                tokio::select! {
                    _ = signal.next() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            let mut first = Some(first);
            let mut items = items.into_iter();
            while let (Some(id), Some(data)) = (items.next(), items.next()) {
                // Only this loop takes permits and it saw `room` free, so these are immediate.
                let permit = match first.take() {
                    Some(p) => p,
                    None => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break 'fetching,
                    },
                };
                let id = String::from_utf8_lossy(&id).into_owned();
                let exec = self.exec.clone();
                let settled = settled_tx.clone();
                tokio::spawn(async move {
                    let outcome = exec.execute(&data).await;
                    let _ = settled.send(match outcome {
                        Ok(()) => Settled::Done(id),
                        Err(e) => {
                            tracing::error!(message = "Job outcome not recorded; it runs again later.", job_id = %id, error = %e);
                            Settled::Later(id)
                        }
                    });
                    drop(permit);
                });
            }
        }
        // Every run in flight settles (handlers are interrupted late in the grace period).
        let _ = slots.acquire_many(self.concurrency as u32).await;
        drop(settled_tx);
        let _ = acker.await;
        beat_stop.cancel();
        let _ = beat.await;
        let left: Result<i64, _> = LEAVE.key(&names.workers).key(&names.inflight).arg(&names.worker).invoke_async(&mut conn).await;
        if let Err(e) = left {
            tracing::debug!(message = "Worker could not leave the workers set; its heartbeat lapses instead.", error = %e);
        }
    }
}

/// One heartbeat: this worker's score, and the recovery of dead workers' runs (a script per
/// dead worker, given its in-flight set: a script touches only the keys it is given).
async fn beat_once(conn: &mut RedisConn, names: &Names, dead_after: Duration) -> Result<u64, redis::RedisError> {
    let now = unix_now();
    let dead_before = now - dead_after.as_secs() as i64;
    let dead: Vec<String> = BEAT.key(&names.workers).arg(now).arg(dead_before).arg(&names.worker).invoke_async(conn).await?;
    let mut moved = 0;
    for worker in dead {
        let n: u64 = RECLAIM
            .key(&names.workers)
            .key(&names.active)
            .key(RedisKeys::queue_inflight(&names.inflight_prefix, &worker))
            .arg(&worker)
            .arg(dead_before)
            .arg(&names.channel)
            .invoke_async(conn)
            .await?;
        moved += n;
    }
    Ok(moved)
}

async fn heartbeat(mut conn: RedisConn, names: Names, every: Duration, dead_after: Duration, stop: CancellationToken) {
    loop {
        match beat_once(&mut conn, &names, dead_after).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(message = "Recovered the runs of a worker whose heartbeat lapsed.", runs = n, queue = %names.active),
            Err(e) => tracing::debug!(message = "Heartbeat failed; retrying.", worker = %names.worker, error = %e),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Acknowledges settled runs in batches until the channel closes and everything is written.
/// A failed write keeps its runs and tries again: they stay in flight meanwhile, never lost.
async fn acknowledge(mut conn: RedisConn, names: Names, mut settled: mpsc::UnboundedReceiver<Settled>) {
    let mut done: Vec<String> = Vec::new();
    let mut later: Vec<String> = Vec::new();
    let mut open = true;
    let mut failures = 0u32;
    while open || !done.is_empty() || !later.is_empty() {
        if done.is_empty() && later.is_empty() {
            match settled.recv().await {
                Some(s) => push(s, &mut done, &mut later),
                None => break,
            }
        }
        while done.len() < ACK_BATCH {
            match settled.try_recv() {
                Ok(s) => push(s, &mut done, &mut later),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let mut ok = true;
        if !done.is_empty() {
            let n = done.len().min(ACK_BATCH);
            let mut call = ACK.key(&names.inflight);
            call.key(&names.data);
            for id in &done[..n] {
                call.arg(id);
            }
            match call.invoke_async::<i64>(&mut conn).await {
                Ok(_) => {
                    done.drain(..n);
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(message = "Acknowledging jobs failed; retrying.", runs = n, error = %e);
                }
            }
        }
        while let Some(id) = later.last() {
            let due = unix_now() + RETRY_UNRECORDED.as_secs() as i64;
            match LATER.key(&names.inflight).key(&names.scheduled).arg(id).arg(due).invoke_async::<i64>(&mut conn).await {
                Ok(_) => {
                    later.pop();
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(message = "Rescheduling a job failed; retrying.", error = %e);
                    break;
                }
            }
        }
        if ok {
            failures = 0;
        } else {
            failures = (failures + 1).min(6);
            tokio::time::sleep(Duration::from_millis(50 << failures)).await;
            if !open && failures >= 6 {
                // Shutting down and Redis stays away: the runs stay in this worker's in-flight
                // set and are recovered when its heartbeat lapses.
                tracing::warn!(message = "Giving up acknowledging at shutdown; the runs will be recovered.", runs = done.len() + later.len());
                return;
            }
        }
    }
}

fn push(s: Settled, done: &mut Vec<String>, later: &mut Vec<String>) {
    match s {
        Settled::Done(id) => done.push(id),
        Settled::Later(id) => later.push(id),
    }
}
