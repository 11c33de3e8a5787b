//! Operators' reads of the queue: the fleet's members by heartbeat, one kind's scheduled runs
//! and envelopes, and one job found by id through the job index.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use super::{JobEnvelope, JobQueue, QueueError};
use crate::newtypes::JobKind;
use crate::redis_keys::RedisKeys;

/// One job's newest run through the job index (see lua/find.lua).
static FIND_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/find.lua")));

impl JobQueue {
    /// Every worker member of the fleet with the age of its latest heartbeat (seconds), read
    /// from apalis-redis's workers sets (worker names are `{member}-{kind}`), freshest first.
    pub async fn member_heartbeats(&self) -> Result<Vec<(String, f64)>, QueueError> {
        let mut conn = self.conn.clone();
        let now = Utc::now().timestamp() as f64;
        let mut newest: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
        for policy in self.catalogue.iter() {
            let config = self.apalis_config(policy);
            let workers: Vec<(String, f64)> = conn.zrange_withscores(config.workers_set(), 0, -1).await?;
            let suffix = format!("-{}", policy.kind);
            for (worker, seen) in workers {
                let member = worker.strip_suffix(&suffix).unwrap_or(&worker).to_owned();
                let age = (now - seen).max(0.0);
                newest.entry(member).and_modify(|a| *a = a.min(age)).or_insert(age);
            }
        }
        let mut out: Vec<(String, f64)> = newest.into_iter().collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok(out)
    }

    /// Runs waiting for their time (retries, delayed jobs) with the time each becomes due.
    pub async fn scheduled(&self, kind: &JobKind) -> Result<Vec<(JobEnvelope, DateTime<Utc>)>, QueueError> {
        let config = self.apalis_config(self.policy(kind)?);
        let mut conn = self.conn.clone();
        let entries: Vec<(String, i64)> = conn.zrange_withscores(config.scheduled_jobs_set(), 0, -1).await?;
        let mut out = Vec::with_capacity(entries.len());
        for (task_id, due) in entries {
            let data: Option<Vec<u8>> = conn.hget(config.job_data_hash(), &task_id).await?;
            if let Some(env) = data.and_then(|d| serde_json::from_slice::<JobEnvelope>(&d).ok()) {
                out.push((env, DateTime::from_timestamp(due, 0).unwrap_or_default()));
            }
        }
        Ok(out)
    }

    /// Every ready, scheduled and running envelope of `kind` (operators and tests; O(queue)).
    pub async fn envelopes(&self, kind: &JobKind) -> Result<Vec<JobEnvelope>, QueueError> {
        let config = self.apalis_config(self.policy(kind)?);
        let mut conn = self.conn.clone();
        // Acknowledged runs are deleted at once, so the data hash holds only unfinished ones.
        let data: Vec<(String, Vec<u8>)> = conn.hgetall(config.job_data_hash()).await?;
        Ok(data.into_iter().filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok()).collect())
    }

    /// The queued (ready, scheduled or running) run of job `id`: each kind's job index is
    /// asked at once (one small script per kind, no run's data read but the one found).
    pub async fn find(&self, id: &str) -> Result<Option<JobEnvelope>, QueueError> {
        let asks = self.catalogue.iter().map(|policy| {
            let config = self.apalis_config(policy);
            let mut conn = self.conn.clone();
            async move {
                let data: Option<Vec<u8>> = FIND_SCRIPT
                    .key(RedisKeys::queue_job_index(config.queue.as_ref()))
                    .key(config.job_data_hash())
                    .arg(id)
                    .invoke_async(&mut conn)
                    .await?;
                Ok::<_, QueueError>(data.and_then(|d| JobEnvelope::decode(&d).ok()))
            }
        });
        Ok(futures::future::try_join_all(asks).await?.into_iter().flatten().max_by_key(|e| e.attempt))
    }
}
