//! Jobs processed and failed per kind per minute, for the whole fleet: every few seconds each
//! worker member adds what its `ballast_jobs_total` counters gained since the last time to one
//! Redis hash per minute (one pipelined round trip), kept two hours. Nothing is counted per job
//! beyond the counters `/metrics` keeps anyway; a run is charted in the minute of the flush
//! after it (at most a few seconds late). The console's queues page charts the last hour.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;

use crate::redis_conn::RedisConn;
use crate::redis_keys::RedisKeys;

/// How often a member adds its counts.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The hash field of `kind`'s `what` (`processed`, `failed`) in a minute's hash.
fn field(kind: &str, what: &str) -> String {
    format!("{kind}|{what}")
}

/// A member's job counters, and what of them Redis has already been given.
#[derive(Clone)]
pub struct JobMinutes {
    /// `ballast_jobs_total` by kind and outcome.
    counters: IntCounterVec,
    /// (kind, outcome) → the counter's value at the last flush that Redis took.
    added: Arc<Mutex<HashMap<(String, String), u64>>>,
}

impl std::fmt::Debug for JobMinutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobMinutes")
    }
}

impl JobMinutes {
    /// Charts what `counters` (labels `kind`, `outcome`) count as `processed` and `failed`.
    pub fn new(counters: IntCounterVec) -> Self {
        Self { counters, added: Arc::default() }
    }

    /// What each (kind, outcome) counter gained since the last flush took it, taken now: a
    /// flush that runs meanwhile (the member's own every few seconds, and one a caller asks
    /// for) finds only what was counted after, so no gain is added twice.
    fn take_gains(&self) -> Vec<((String, String), u64)> {
        let mut added = self.added.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for family in prometheus::core::Collector::collect(&self.counters) {
            for metric in family.get_metric() {
                let label = |name: &str| metric.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_owned()).unwrap_or_default();
                let (kind, outcome) = (label("kind"), label("outcome"));
                if outcome != "processed" && outcome != "failed" {
                    continue;
                }
                let now = metric.get_counter().get_value() as u64;
                let key = (kind, outcome);
                let before = added.get(&key).copied().unwrap_or(0);
                if now > before {
                    added.insert(key.clone(), now);
                    out.push((key, now - before));
                }
            }
        }
        out
    }

    /// Adds what the counters gained to this minute's hash; on failure the gain stays for the
    /// next flush.
    pub async fn flush(&self, redis: &RedisConn, keys: &RedisKeys) -> Result<(), redis::RedisError> {
        let gains = self.take_gains();
        if gains.is_empty() {
            return Ok(());
        }
        let key = keys.job_minutes(chrono::Utc::now().timestamp().div_euclid(60));
        let ttl = i64::try_from(RedisKeys::JOB_MINUTES_TTL.as_secs()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for ((kind, outcome), gain) in &gains {
            pipe.hincr(&key, field(kind, outcome), *gain).ignore();
        }
        pipe.expire(&key, ttl).ignore();
        let mut conn = redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            // Not added: given back for the next flush.
            let mut added = self.added.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (key, gain) in gains {
                if let Some(at) = added.get_mut(&key) {
                    *at = at.saturating_sub(gain);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Flushes every few seconds until `stop`, then once more.
    pub async fn run(self, redis: RedisConn, keys: RedisKeys, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            if let Err(e) = self.flush(&redis, &keys).await {
                tracing::debug!(message = "Job counts per minute not added yet; kept for the next flush.", error = %e);
            }
        }
        if let Err(e) = self.flush(&redis, &keys).await {
            tracing::debug!(message = "Job counts per minute lost at shutdown.", error = %e);
        }
    }
}

/// The fleet's counts of every kind for the `minutes` unix minutes up to `now_minute` (one
/// pipelined round trip): kind → (minute, processed, failed), oldest first, every minute.
pub async fn recent_all(redis: &RedisConn, keys: &RedisKeys, kinds: &[String], now_minute: i64, minutes: i64) -> Result<BTreeMap<String, Vec<(i64, u64, u64)>>, redis::RedisError> {
    let range: Vec<i64> = ((now_minute - minutes + 1)..=now_minute).collect();
    let mut pipe = redis::pipe();
    for m in &range {
        pipe.hgetall(keys.job_minutes(*m));
    }
    let mut conn = redis.clone();
    let hashes: Vec<std::collections::HashMap<String, u64>> = pipe.query_async(&mut conn).await?;
    Ok(kinds
        .iter()
        .map(|kind| {
            let (p, f) = (field(kind, "processed"), field(kind, "failed"));
            let series = range.iter().zip(&hashes).map(|(m, h)| (*m, h.get(&p).copied().unwrap_or(0), h.get(&f).copied().unwrap_or(0))).collect();
            (kind.clone(), series)
        })
        .collect())
}
