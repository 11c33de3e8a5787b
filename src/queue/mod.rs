//! The job runtime on apalis + apalis-redis. This module is the only place that touches
//! apalis, so a version change stays here. Ballast enforces its own policy on top: the
//! catalogue's attempts, backoff with jitter and timeouts (apalis-redis would retry 25 times
//! with a linear delay), dead letters in PostgreSQL, and trimming of completed records.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use tracing::Instrument;

use crate::redis_conn::RedisConn;
use crate::job_catalogue::{JobCatalogue, JobPolicy};
use crate::newtypes::{JobId, JobKind, TenantId};
use crate::redis_keys::RedisKeys;

pub mod attempts;
mod consumer;
mod inspect;
pub mod dead;
pub mod envelope;
pub mod job;
pub mod minutes;
pub mod status;
pub mod wake;
pub mod worker;

pub use envelope::JobEnvelope;

/// Errors at the queue edge.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The kind is not in the catalogue.
    #[error("unknown job kind {0:?}: see jobs/ for the catalogue")]
    UnknownKind(String),
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(String),
    /// The envelope could not be encoded.
    #[error("encoding job: {0}")]
    Encode(#[from] serde_json::Error),
    /// PostgreSQL refused or could not be reached (dead letters).
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// No such dead letter, or it was already retried.
    #[error("no open dead letter with id {0}")]
    NoDeadLetter(String),
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Redis(e.to_string())
    }
}

impl From<apalis_redis::Error> for QueueError {
    fn from(e: apalis_redis::Error) -> Self {
        QueueError::Redis(e.to_string())
    }
}

/// A job to put on its queue.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    /// Which job.
    pub kind: JobKind,
    /// Its arguments.
    pub payload: serde_json::Value,
    /// The tenant it acts for.
    pub tenant: Option<TenantId>,
    /// An id to use instead of a fresh one.
    pub id: Option<JobId>,
    /// A second enqueue with the same key (within `idempotency_ttl`) is a no-op.
    pub idempotency_key: Option<String>,
    /// How long the key is remembered; default [`RedisKeys::ENQUEUE_IDEMPOTENCY_TTL`] (7 days).
    /// High-volume internal keys use less: each is a Redis key for this long.
    pub idempotency_ttl: Option<Duration>,
    /// Run no earlier than this.
    pub run_at: Option<DateTime<Utc>>,
    /// W3C traceparent to carry into the worker.
    pub traceparent: Option<String>,
    /// Its progress is written to `job_status` (see [`status`]); the caller inserted the row.
    pub tracked: bool,
}

impl EnqueueRequest {
    /// A job of `kind` with `payload`, to run now.
    pub fn new(kind: impl Into<JobKind>, payload: serde_json::Value) -> Self {
        Self { kind: kind.into(), payload, tenant: None, id: None, idempotency_key: None, idempotency_ttl: None, run_at: None, traceparent: None, tracked: false }
    }

    /// The job whose arguments are `args`, to run now: the kind and payload come from the
    /// arguments' type, the one its handler takes.
    pub fn typed<A: job::JobArgs>(args: &A) -> Self {
        // Arguments are plain structs of ids and numbers: serialising them cannot fail.
        Self::new(A::KIND, serde_json::to_value(args).unwrap_or_default())
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enqueued {
    /// The job's id.
    pub id: JobId,
    /// True when the idempotency key had been used already and nothing was queued.
    pub duplicate: bool,
}

/// Ballast's push script (see lua/push.lua for why it is not apalis-redis's own).
static PUSH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/push.lua")));

/// One run to push: its envelope bytes, when it is due (None: now) and its idempotency key.
struct PushItem {
    /// The job id an idempotency key remembers (answered to a repeat).
    job_id: String,
    /// Which attempt the run is ([`run_id`]).
    attempt: u32,
    data: Vec<u8>,
    run_at: Option<i64>,
    idempotency_key: Option<(String, Duration)>,
}

/// Pushes runs of one queue in one round trip; returns (ready, scheduled) counts and, for each
/// idempotency key already used, the job id it remembers. Runs due now land on the active list
/// and wake idle workers through apalis-redis's pub/sub channel.
async fn push_batch(conn: &mut RedisConn, config: &apalis_redis::Config, items: &[PushItem]) -> Result<(u64, u64, Vec<String>), QueueError> {
    let mut invocation = PUSH_SCRIPT.prepare_invoke();
    invocation
        .key(config.job_data_hash())
        .key(config.active_jobs_list())
        .key(config.scheduled_jobs_set())
        .arg(Utc::now().timestamp())
        .arg(RedisKeys::queue_available_channel(config.queue.as_ref()));
    // Each idempotency key is passed as a key (a script touches only what it is given): it
    // hangs from the queue's name, so it shares the queue's hash slot on a cluster.
    let prefix = config.idempotency_key_set();
    let mut next_key = 4;
    for item in items {
        let key_index = match &item.idempotency_key {
            Some((key, _)) => {
                invocation.key(format!("{prefix}:{key}"));
                next_key += 1;
                next_key - 1
            }
            None => 0,
        };
        invocation
            .arg(run_id(&item.job_id, item.attempt))
            .arg(item.data.as_slice())
            .arg(item.run_at.unwrap_or(0).max(0))
            .arg(key_index)
            .arg(item.idempotency_key.as_ref().map(|(_, ttl)| ttl.as_secs().max(1)).unwrap_or(1))
            .arg(item.job_id.as_str())
            .arg(ulid::Ulid::new().to_string());
    }
    Ok(invocation.invoke_async(conn).await?)
}

/// Queue depth figures for one kind.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// The job kind.
    pub kind: String,
    /// Ready to run.
    pub ready: u64,
    /// Waiting for their run time (retries, delayed jobs).
    pub scheduled: u64,
    /// Fetched by a worker and not yet acknowledged.
    pub running: u64,
    /// Age of the oldest ready job, in seconds.
    pub oldest_ready_age_secs: Option<f64>,
    /// An operator paused the kind: its workers fetch none of its jobs.
    pub paused: bool,
}

/// The producer side of the runtime: enqueue, inspect.
#[derive(Clone)]
pub struct JobQueue {
    keys: RedisKeys,
    conn: RedisConn,
    catalogue: Arc<JobCatalogue>,
    heartbeat: Duration,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue").field("namespace", &self.keys.namespace()).finish()
    }
}

impl JobQueue {
    /// A queue handle on `conn` for the kinds of `catalogue`.
    pub fn new(keys: RedisKeys, conn: RedisConn, catalogue: Arc<JobCatalogue>, heartbeat: Duration) -> Self {
        Self { keys, conn, catalogue, heartbeat }
    }

    /// The key registry the queue's names come from.
    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// The catalogue the queue enforces.
    pub fn catalogue(&self) -> &Arc<JobCatalogue> {
        &self.catalogue
    }

    /// The Redis list of `queue`'s ready jobs (what KEDA's Redis scaler watches).
    pub fn active_list_name(keys: &RedisKeys, queue: &str) -> String {
        apalis_redis::Config::default().queue(keys.queue(queue)).active_jobs_list()
    }

    /// apalis-redis's names for one kind's queue (its key layout is the queue's), and the
    /// heartbeat after three misses of which a worker counts as dead.
    pub(crate) fn apalis_config(&self, policy: &JobPolicy) -> apalis_redis::Config {
        apalis_redis::Config::default().queue(self.keys.queue(&policy.queue)).heartbeat_interval(self.heartbeat).missed_heartbeats(3)
    }

    fn policy(&self, kind: &JobKind) -> Result<&JobPolicy, QueueError> {
        self.catalogue.get(kind.as_str()).ok_or_else(|| QueueError::UnknownKind(kind.0.clone()))
    }

    /// Queues one job.
    pub async fn enqueue(&self, req: EnqueueRequest) -> Result<Enqueued, QueueError> {
        let id = req.id.clone().unwrap_or_default();
        // OpenTelemetry messaging conventions: a producer span per enqueue, whose context the
        // job carries so the consumer span continues the same trace.
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("{} publish", req.kind),
            otel.kind = "producer",
            messaging.system = "redis",
            messaging.operation.type = "send",
            messaging.destination.name = %req.kind,
            messaging.message.id = %id,
            job.id = %id,
            tenant.id = tracing::field::Empty,
        );
        if let Some(t) = req.tenant {
            span.record("tenant.id", t.0.to_string());
        }
        if let Some(parent) = &req.traceparent {
            crate::telemetry::continue_trace(&span, parent);
        }
        let traceparent = span.in_scope(crate::telemetry::current_traceparent).or(req.traceparent);
        let envelope = JobEnvelope {
            id: id.clone(),
            kind: req.kind.clone(),
            tenant: req.tenant,
            payload: req.payload,
            attempt: 1,
            enqueued_at_us: envelope::now_us(),
            traceparent,
            last_error: None,
            tracked: req.tracked,
            history: Vec::new(),
        };
        let key = req.idempotency_key.map(|k| (k, req.idempotency_ttl.unwrap_or(RedisKeys::ENQUEUE_IDEMPOTENCY_TTL)));
        // A repeated idempotency key answers the job it first queued.
        match self.push(&envelope, req.run_at, key).instrument(span).await? {
            None => Ok(Enqueued { id, duplicate: false }),
            Some(original) => Ok(Enqueued { id: original, duplicate: true }),
        }
    }

    /// Queues many jobs of one kind in batches of up to 1,000 per Redis round trip.
    pub async fn enqueue_many(&self, kind: &JobKind, payloads: Vec<serde_json::Value>) -> Result<Vec<JobId>, QueueError> {
        self.enqueue_batch(payloads.into_iter().map(|payload| EnqueueRequest { payload, ..EnqueueRequest::new(kind.clone(), serde_json::Value::Null) }).collect()).await
    }

    /// Queues jobs of one kind, each with its own id, tenant and tracking, due now, in batches of
    /// up to 1,000 per Redis round trip (no idempotency keys: a job id names its job already).
    pub async fn enqueue_batch(&self, reqs: Vec<EnqueueRequest>) -> Result<Vec<JobId>, QueueError> {
        let Some(kind) = reqs.first().map(|r| r.kind.clone()) else { return Ok(Vec::new()) };
        let config = self.apalis_config(self.policy(&kind)?);
        let (mut ids, mut conn, mut batch) = (Vec::with_capacity(reqs.len()), self.conn.clone(), Vec::with_capacity(reqs.len().min(1000)));
        for req in reqs {
            if req.kind != kind {
                return Err(QueueError::UnknownKind(format!("{} in a batch of {kind}", req.kind)));
            }
            let id = req.id.unwrap_or_default();
            let envelope = JobEnvelope {
                id: id.clone(), kind: req.kind, tenant: req.tenant, payload: req.payload, attempt: 1,
                enqueued_at_us: envelope::now_us(), traceparent: None, last_error: None, tracked: req.tracked, history: Vec::new(),
            };
            batch.push(PushItem { job_id: id.0.clone(), attempt: 1, data: serde_json::to_vec(&envelope)?, run_at: None, idempotency_key: None });
            ids.push(id);
            if batch.len() == 1000 {
                push_batch(&mut conn, &config, &batch).await?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            push_batch(&mut conn, &config, &batch).await?;
        }
        Ok(ids)
    }

    /// Pushes one run of a job; when its idempotency key was already used, nothing is pushed
    /// and the answer is the job id the key remembers.
    /// Run times have whole-second resolution (apalis-redis scores), so they are rounded up:
    /// a retry 0.2 s away waits for the next second instead of running at once.
    pub(crate) async fn push(
        &self,
        envelope: &JobEnvelope,
        run_at: Option<DateTime<Utc>>,
        idempotency_key: Option<(String, Duration)>,
    ) -> Result<Option<JobId>, QueueError> {
        let config = self.apalis_config(self.policy(&envelope.kind)?);
        let item = PushItem {
            job_id: envelope.id.0.clone(),
            attempt: envelope.attempt,
            data: serde_json::to_vec(envelope)?,
            run_at: run_at.map(run_at_secs),
            idempotency_key,
        };
        let mut conn = self.conn.clone();
        let (ready, scheduled, used) = push_batch(&mut conn, &config, &[item]).await?;
        Ok(if ready + scheduled > 0 { None } else { Some(used.into_iter().next().filter(|id| !id.is_empty()).map(JobId).unwrap_or_else(|| envelope.id.clone())) })
    }

    /// Depth figures for every catalogued kind, the kinds read concurrently (one connection).
    pub async fn stats(&self) -> Result<Vec<QueueStats>, QueueError> {
        futures::future::try_join_all(self.catalogue.iter().map(|policy| self.stats_of(policy))).await
    }

    /// Pauses (`true`) or resumes a kind fleet-wide: its jobs stay queued, none is fetched (runs
    /// already fetched finish); a resume wakes its workers at once.
    pub async fn set_paused(&self, kind: &str, paused: bool) -> Result<(), QueueError> {
        let policy = self.policy(&JobKind(kind.to_owned()))?;
        let config = self.apalis_config(policy);
        let key = RedisKeys::queue_paused(config.queue.as_ref());
        let mut conn = self.conn.clone();
        if paused {
            let _: () = conn.set(&key, 1).await?;
        } else {
            let _: () = conn.del(&key).await?;
            let _: () = conn.publish(RedisKeys::queue_available_channel(config.queue.as_ref()), "resumed").await?;
        }
        Ok(())
    }

    async fn stats_of(&self, policy: &JobPolicy) -> Result<QueueStats, QueueError> {
        let config = self.apalis_config(policy);
        let mut conn = self.conn.clone();
        // apalis-redis parks every push in the scheduled set (score: run time, in seconds) and
        // promotes due entries on fetch, so "ready" counts the due part of that set too.
        let now = Utc::now().timestamp();
        let listed: u64 = conn.llen(config.active_jobs_list()).await?;
        let due: u64 = conn.zcount(config.scheduled_jobs_set(), 0, now).await?;
        let scheduled: u64 = conn.zcount(config.scheduled_jobs_set(), format!("({now}"), "+inf").await?;
        let ready = listed + due;
        let mut running = 0u64;
        // Every worker of the queue is in its workers set (a dead one stays until apalis-redis
        // re-queues its runs), so this reads O(workers) keys instead of scanning the keyspace.
        let workers: Vec<String> = conn.zrange(config.workers_set(), 0, -1).await?;
        for worker in workers {
            let n: u64 = conn.scard(RedisKeys::queue_inflight(&config.inflight_jobs_set(), &worker)).await?;
            running += n;
        }
        let oldest: Option<String> = if listed > 0 {
            conn.lindex(config.active_jobs_list(), 0).await?
        } else {
            let first: Vec<String> = conn.zrangebyscore_limit(config.scheduled_jobs_set(), 0, now, 0, 1).await?;
            first.into_iter().next()
        };
        let mut oldest_ready_age_secs = None;
        if let Some(task_id) = oldest {
            let data: Option<Vec<u8>> = conn.hget(config.job_data_hash(), &task_id).await?;
            if let Some(env) = data.and_then(|d| serde_json::from_slice::<JobEnvelope>(&d).ok()) {
                oldest_ready_age_secs = Some(env.waited(envelope::now_us()).as_secs_f64());
            }
        }
        let paused: bool = conn.exists(RedisKeys::queue_paused(config.queue.as_ref())).await?;
        Ok(QueueStats { kind: policy.kind.0.clone(), ready, scheduled, running, oldest_ready_age_secs, paused })
    }

    /// Moves scheduled runs due by `horizon` to the ready list now: the queue's controllable
    /// clock, for tests and for on-call who want a backoff skipped. Returns how many moved.
    pub async fn promote_scheduled(&self, kind: &JobKind, horizon: DateTime<Utc>) -> Result<u64, QueueError> {
        let config = self.apalis_config(self.policy(kind)?);
        let script = redis::Script::new(
            r"local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, 1000)
              if #ids > 0 then
                redis.call('RPUSH', KEYS[2], unpack(ids))
                redis.call('ZREM', KEYS[1], unpack(ids))
                redis.call('PUBLISH', ARGV[2], ids[1])
              end
              return #ids",
        );
        let mut conn = self.conn.clone();
        // In batches of 1,000: Lua's `unpack` fails beyond ~8,000 values.
        let mut moved = 0u64;
        loop {
            let n: u64 = script
                .key(config.scheduled_jobs_set())
                .key(config.active_jobs_list())
                .arg(horizon.timestamp())
                .arg(RedisKeys::queue_available_channel(config.queue.as_ref()))
                .invoke_async(&mut conn)
                .await?;
            moved += n;
            if n < 1000 {
                return Ok(moved);
            }
        }
    }
}

/// The id a run of `job` at `attempt` is stored under: 16 characters derived from the job id
/// (the first 96 bits of its SHA-256, base64url), then `#{attempt}` after the first attempt.
/// Derived, not random, so one job is found by id with one HMGET of a few fields
/// ([`JobQueue::find`]), and shorter than the job id: Redis stores and hashes it per run.
/// Two job ids with one digest prefix are told apart by push.lua's fallbacks.
pub(crate) fn run_id(job: &str, attempt: u32) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(job.as_bytes());
    let short = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]);
    if attempt <= 1 { short } else { format!("{short}#{attempt}") }
}

/// The ids a queued run of `job` may have, up to `max_attempts` (see [`run_id`]).
pub(crate) fn run_ids(job: &str, max_attempts: u32) -> Vec<String> {
    (1..=max_attempts.max(1)).flat_map(|a| {
        let id = run_id(job, a);
        let requeued = format!("{id}*");
        [id, requeued]
    }).collect()
}

/// A run time in the queue's whole seconds, rounded up so it never moves earlier.
fn run_at_secs(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_times_round_up_to_whole_seconds() {
        let whole = DateTime::from_timestamp(1_000, 0).expect("t");
        assert_eq!(run_at_secs(whole), 1_000);
        assert_eq!(run_at_secs(whole + chrono::Duration::milliseconds(200)), 1_001);
    }
}

/// Whether Redis keeps what it acknowledged across its own restart: `Some(true)` with an
/// append-only file, `Some(false)` without one, `None` when Redis does not say (managed
/// services often refuse `CONFIG`; their persistence is set in the provider's console).
/// Jobs queued through the intake live only in Redis, so without it a Redis crash loses them.
pub async fn redis_keeps_writes(conn: &crate::redis_conn::RedisConn) -> Option<bool> {
    redis_config(conn, "appendonly").await.map(|v| v == "yes")
}

/// Whether Redis refuses writes when full instead of evicting keys (`maxmemory-policy
/// noeviction`): any other policy may drop queued jobs; `None` when it cannot be asked.
pub async fn redis_never_evicts(conn: &crate::redis_conn::RedisConn) -> Option<bool> {
    redis_config(conn, "maxmemory-policy").await.map(|v| v == "noeviction")
}

async fn redis_config(conn: &crate::redis_conn::RedisConn, name: &str) -> Option<String> {
    let mut conn = conn.clone();
    let reply: Result<Vec<String>, _> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut conn).await;
    reply.ok().and_then(|kv| kv.get(1).cloned())
}
