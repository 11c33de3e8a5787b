//! Filling many cached keys of one family at once, in three round trips: every free load lock
//! in one pipeline, one load for the batch, every store in one pipeline. Stores go through the
//! same lock-checked script as a single read, so a fill that races an invalidation loses, as
//! it must. (`cache.warm`'s families and their order are billing's: `billing/warm.rs`.)

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use serde::Serialize;

use super::Cache;
use crate::redis_keys::KeySpec;

/// A warm that stopped.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// A loader failed.
    #[error("loading {family}: {message}")]
    Load {
        /// The family.
        family: &'static str,
        /// The loader's error.
        message: String,
    },
}

/// What happened to the keys of one family.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct FillCount {
    /// Written.
    pub stored: u64,
    /// Skipped: another member was loading it (it writes the same answer).
    pub busy: u64,
    /// Loaded but not written: invalidated meanwhile (the next read loads afresh).
    pub lost: u64,
}

impl FillCount {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: FillCount) {
        self.stored += other.stored;
        self.busy += other.busy;
        self.lost += other.lost;
    }
}

impl Cache {
    /// Fills `keys` (id, cache key) of `family`: takes every free lock in one pipeline, loads
    /// the locked ids with one `load` call, stores them in one pipeline.
    pub async fn fill_batch<K, T, F, Fut, E>(&self, family: &KeySpec, keys: Vec<(K, String)>, load: F) -> Result<FillCount, WarmError>
    where
        K: Eq + Hash + Clone,
        T: Serialize,
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, E>>,
        E: std::fmt::Display,
    {
        if keys.is_empty() {
            return Ok(FillCount::default());
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = self.redis.clone();
        let mut locks = redis::pipe();
        for (_, key) in &keys {
            locks.cmd("SET").arg(self.keys.cache_lock(key)).arg(&token).arg("NX").arg("PX").arg(super::ms(Some(self.options.lock_ttl)));
        }
        let taken: Vec<Option<String>> = locks.query_async(&mut conn).await?;
        let asked = keys.len();
        let locked: Vec<(K, String)> = keys.into_iter().zip(taken).filter_map(|(k, t)| t.map(|_| k)).collect();
        let mut count = FillCount { busy: (asked - locked.len()) as u64, ..FillCount::default() };
        let values = match load(locked.iter().map(|(id, _)| id.clone()).collect()).await {
            Ok(v) => v,
            Err(e) => {
                let mut release = redis::pipe();
                for (_, key) in &locked {
                    release.cmd("EVAL").arg(super::UNLOCK_LUA).arg(1).arg(self.keys.cache_lock(key)).arg(&token).ignore();
                }
                let _: Result<(), _> = release.query_async(&mut conn).await;
                return Err(WarmError::Load { family: family.name, message: e.to_string() });
            }
        };
        // EVAL with the script's text, not a SCRIPT LOAD then EVALSHA: on a cluster the load in
        // a pipeline reaches one node, and a node that has not run the script yet (new, or
        // restarted, which empties its script cache) answers NOSCRIPT for every key it holds.
        // Redis caches the script by its hash on the first EVAL.
        let mut stores = redis::pipe();
        let mut stored_keys = 0usize;
        for (id, key) in &locked {
            let Some((envelope, px)) = values.get(id).and_then(|v| self.envelope(family, v)) else { continue };
            stores.cmd("EVAL").arg(super::STORE_LUA).arg(2).arg(key).arg(self.keys.cache_lock(key)).arg(&token).arg(envelope).arg(px);
            stored_keys += 1;
        }
        let written: Vec<i64> = if stored_keys == 0 { Vec::new() } else { stores.query_async(&mut conn).await? };
        count.stored = written.iter().filter(|w| **w == 1).count() as u64;
        count.lost = written.len() as u64 - count.stored;
        Ok(count)
    }
}
