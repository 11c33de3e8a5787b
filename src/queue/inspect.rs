//! Operators' reads of the queue: the fleet's members by heartbeat, one kind's scheduled runs
//! and envelopes, and one job found by id from the ids its runs are stored under.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use super::{JobEnvelope, JobQueue, QueueError};
use crate::newtypes::JobKind;

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

    /// The queued (ready, scheduled or running) run of job `id`: the ids its runs may have
    /// are derived from it ([`super::run_id`]), so each kind answers one HMGET, all at once.
    pub async fn find(&self, id: &str) -> Result<Option<JobEnvelope>, QueueError> {
        let asks = self.catalogue.iter().map(|policy| {
            let config = self.apalis_config(policy);
            let mut conn = self.conn.clone();
            // A snooze may run an attempt past the kind's count; one more covers it.
            let runs = super::run_ids(id, policy.max_attempts.saturating_add(1));
            async move {
                let found: Vec<Option<Vec<u8>>> = redis::cmd("HMGET").arg(config.job_data_hash()).arg(&runs).query_async(&mut conn).await?;
                Ok::<_, QueueError>(found.into_iter().flatten().filter_map(|d| JobEnvelope::decode(&d).ok()).filter(|e| e.id.0 == id).max_by_key(|e| e.attempt))
            }
        });
        Ok(futures::future::try_join_all(asks).await?.into_iter().flatten().max_by_key(|e| e.attempt))
    }
}
