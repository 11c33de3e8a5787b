//! Jobs processed and failed per kind per minute, for the whole fleet: each worker member
//! counts in memory and adds its counts to one Redis hash per minute every few seconds (one
//! pipelined round trip, never a write per job), kept two hours. The console's queues page
//! charts the last hour from them; `/metrics` keeps the counters since start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::redis_conn::RedisConn;
use crate::redis_keys::RedisKeys;

/// How often a member adds its counts.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The hash field of `kind`'s `what` (`processed`, `failed`) in a minute's hash.
fn field(kind: &str, what: &str) -> String {
    format!("{kind}|{what}")
}

/// A member's counts not yet added: (unix minute, kind) → (processed, failed).
#[derive(Clone, Default)]
pub struct JobMinutes(Arc<Mutex<BTreeMap<(i64, String), (u64, u64)>>>);

impl std::fmt::Debug for JobMinutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobMinutes")
    }
}

impl JobMinutes {
    /// Counts one run of `kind` that ended now: processed, or failed (retried or dead).
    pub fn count(&self, kind: &str, processed: bool) {
        let minute = chrono::Utc::now().timestamp().div_euclid(60);
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = counts.entry((minute, kind.to_owned())).or_default();
        if processed {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    /// Adds the counts to Redis; on failure they are kept for the next flush.
    pub async fn flush(&self, redis: &RedisConn, keys: &RedisKeys) -> Result<(), redis::RedisError> {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if taken.is_empty() {
            return Ok(());
        }
        let ttl = i64::try_from(RedisKeys::JOB_MINUTES_TTL.as_secs()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for ((minute, kind), (processed, failed)) in &taken {
            let key = keys.job_minutes(*minute);
            if *processed > 0 {
                pipe.hincr(&key, field(kind, "processed"), *processed).ignore();
            }
            if *failed > 0 {
                pipe.hincr(&key, field(kind, "failed"), *failed).ignore();
            }
            pipe.expire(&key, ttl).ignore();
        }
        let mut conn = redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (k, (p, f)) in taken {
                let entry = counts.entry(k).or_default();
                entry.0 += p;
                entry.1 += f;
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
