//! The cache layer: one stale-while-revalidate reader for every cached value, with a refresh
//! that runs once across the whole fleet.
//!
//! A value is stored as an envelope that carries its own deadlines, read on the cache's
//! [`Clock`] (so tests move time instead of sleeping):
//! - fresh for the family's TTL: returned as is;
//! - then stale for its stale window: returned at once while one member refreshes it in the
//!   background; a refresh that fails leaves it in place (stale-if-error);
//! - past that it is a miss, loaded in the foreground. Redis keeps the old envelope one more
//!   stale window, and a foreground load that fails serves it (stale-if-error, counted).
//!
//! Single flight: whoever loads holds a short Redis lock on the key (`SET NX PX`); the others
//! wait for its value (or serve stale). The value is written only while the writer still holds
//! its lock, and an invalidation deletes the value and the lock together, so a load that read
//! the database before a commit can never write its answer back after that commit's
//! invalidation. Redis unavailable: readers load from the source directly (counted).

pub mod reshape;
pub mod warm;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::redis_conn::RedisConn;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::redis_keys::{KeySpec, RedisKeys};

/// A cached value that could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The loader failed and there was nothing stale to serve.
    #[error("loading {key}: {message}")]
    Load {
        /// The cache key.
        key: String,
        /// The loader's error.
        message: String,
    },
}

/// Stores a loaded value unless its lock was lost (KEYS: value, lock).
const STORE_LUA: &str = include_str!("lua/store.lua");
/// Releases a lock this holder still owns (KEYS: lock).
const UNLOCK_LUA: &str = include_str!("lua/unlock.lua");

/// Tuning of the reader; the defaults suit the intake API.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// How long a loader's lock lives: a member that dies mid-load blocks others this long.
    pub lock_ttl: Duration,
    /// How long a reader that lost the lock waits for the winner's value before loading
    /// itself (without storing).
    pub wait: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self { lock_ttl: Duration::from_secs(5), wait: Duration::from_secs(1) }
    }
}

/// Counters of one process's reads, for metrics.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale_served: AtomicU64,
    refreshes: AtomicU64,
    refresh_errors: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    stale_if_error: AtomicU64,
    waits: AtomicU64,
    wait_timeouts: AtomicU64,
    stores_skipped: AtomicU64,
    redis_errors: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    /// Fresh values returned.
    pub hits: u64,
    /// Reads that found no usable value (missing, or past its stale window).
    pub misses: u64,
    /// Stale values returned while a refresh ran.
    pub stale_served: u64,
    /// Background refreshes that stored a new value.
    pub refreshes: u64,
    /// Background refreshes whose loader failed (the stale value stays).
    pub refresh_errors: u64,
    /// Foreground loads (this reader held the lock, or waited in vain).
    pub loads: u64,
    /// Loader failures, foreground or background.
    pub load_errors: u64,
    /// Old values served because the loader failed.
    pub stale_if_error: u64,
    /// Readers that waited for another member's load.
    pub waits: u64,
    /// Waits that ran out, after which the reader loaded itself.
    pub wait_timeouts: u64,
    /// Loads not stored because an invalidation took the lock meanwhile.
    pub stores_skipped: u64,
    /// Redis failures (the reader then went to the source).
    pub redis_errors: u64,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    /// Unix ms until which the value is fresh.
    fresh_until: i64,
    /// Unix ms until which it may be served while refreshed.
    stale_until: i64,
    value: T,
}

/// The cache reader. Cheap to clone; clones share counters and the in-process refresh set.
#[derive(Clone)]
pub struct Cache {
    redis: RedisConn,
    keys: RedisKeys,
    /// The clock deadlines are read on (manual in tests).
    pub clock: Clock,
    options: CacheOptions,
    counters: Arc<Counters>,
    /// Keys this process is refreshing in the background (one task per key per process).
    refreshing: Arc<Mutex<HashSet<String>>>,
    /// Background refreshes finished (stored or failed), for tests to wait on.
    refreshed: Arc<tokio::sync::watch::Sender<u64>>,
    store: Arc<redis::Script>,
    unlock: Arc<redis::Script>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("options", &self.options).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

fn ms(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Cache {
    /// A reader over `redis`.
    pub fn new(redis: RedisConn, keys: RedisKeys, clock: Clock, options: CacheOptions) -> Self {
        Self {
            redis,
            keys,
            clock,
            options,
            counters: Arc::default(),
            refreshing: Arc::default(),
            refreshed: Arc::new(tokio::sync::watch::channel(0).0),
            store: Arc::new(redis::Script::new(STORE_LUA)),
            unlock: Arc::new(redis::Script::new(UNLOCK_LUA)),
        }
    }

    /// The key registry this cache builds lock keys with.
    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// This process's counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            stale_served: get(&c.stale_served),
            refreshes: get(&c.refreshes),
            refresh_errors: get(&c.refresh_errors),
            loads: get(&c.loads),
            load_errors: get(&c.load_errors),
            stale_if_error: get(&c.stale_if_error),
            waits: get(&c.waits),
            wait_timeouts: get(&c.wait_timeouts),
            stores_skipped: get(&c.stores_skipped),
            redis_errors: get(&c.redis_errors),
        }
    }

    /// Finished background refreshes (stored or failed); tests wait on it instead of sleeping.
    pub fn refreshes_finished(&self) -> tokio::sync::watch::Receiver<u64> {
        self.refreshed.subscribe()
    }

    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    /// The value under `key` of `family`, fresh, stale (refreshed in the background) or loaded
    /// by `load` once across the fleet.
    pub async fn get<T, F, Fut, E>(&self, family: &'static KeySpec, key: String, load: F) -> Result<T, CacheError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let now = self.clock.now_ms();
        let cached = match self.read::<T>(&key).await {
            Ok(found) => found,
            Err(()) => return self.load_direct(&key, load).await,
        };
        let old = match cached {
            Some(e) if now < e.fresh_until => {
                self.count(|c| &c.hits);
                return Ok(e.value);
            }
            Some(e) if now < e.stale_until => {
                self.count(|c| &c.stale_served);
                self.refresh_in_background(family, key, load);
                return Ok(e.value);
            }
            other => other,
        };
        self.count(|c| &c.misses);
        let deadline = tokio::time::Instant::now() + self.options.wait;
        let mut pause = Duration::from_millis(1);
        let mut waited = false;
        loop {
            match self.lock(&key).await {
                Ok(Some(token)) => {
                    // After a wait, the winner may have stored and released between our last
                    // read and this lock: look once more before loading again.
                    if waited
                        && let Ok(Some(e)) = self.read::<T>(&key).await
                        && self.clock.now_ms() < e.stale_until
                    {
                        self.unlock(&key, &token).await;
                        return Ok(e.value);
                    }
                    return match self.load_and_store(family, &key, &token, load).await {
                        Ok(v) => Ok(v),
                        Err(message) => self.stale_if_error(old, key, message),
                    };
                }
                Ok(None) => {}
                Err(()) => return self.load_direct(&key, load).await,
            }
            // Another member is loading: wait for its value.
            if !waited {
                waited = true;
                self.count(|c| &c.waits);
            }
            if tokio::time::Instant::now() >= deadline {
                self.count(|c| &c.wait_timeouts);
                return self.load_direct(&key, load).await;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
            if let Ok(Some(e)) = self.read::<T>(&key).await
                && self.clock.now_ms() < e.stale_until
            {
                return Ok(e.value);
            }
        }
    }

    /// Deletes cached keys and any load in flight for them, so the next read loads afresh and
    /// a load that began before this call does not store its answer. Call after the commit.
    pub async fn invalidate(&self, keys: &[String]) -> Result<(), redis::RedisError> {
        let mut all = Vec::with_capacity(keys.len() * 2);
        for key in keys {
            all.push(key.clone());
            all.push(self.keys.cache_lock(key));
        }
        let mut conn = self.redis.clone();
        redis::AsyncCommands::del::<_, ()>(&mut conn, all).await
    }

    /// The envelope under `key`; `Err` when Redis fails (counted, logged).
    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Envelope<T>>, ()> {
        let mut conn = self.redis.clone();
        let raw: Option<Vec<u8>> = match redis::AsyncCommands::get(&mut conn, key).await {
            Ok(raw) => raw,
            Err(e) => {
                self.count(|c| &c.redis_errors);
                tracing::warn!(message = "Cache read failed; loading from the source.", key, error = %e);
                return Err(());
            }
        };
        // A value of another shape (a deploy that forgot to bump the version) is a miss.
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }

    /// Takes the key's load lock; `Ok(None)` when another member holds it.
    async fn lock(&self, key: &str) -> Result<Option<String>, ()> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = self.redis.clone();
        let set: Result<Option<String>, _> = redis::cmd("SET")
            .arg(self.keys.cache_lock(key))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ms(Some(self.options.lock_ttl)))
            .query_async(&mut conn)
            .await;
        match set {
            Ok(Some(_)) => Ok(Some(token)),
            Ok(None) => Ok(None),
            Err(e) => {
                self.count(|c| &c.redis_errors);
                tracing::warn!(message = "Cache lock failed; loading from the source.", key, error = %e);
                Err(())
            }
        }
    }

    /// Runs the loader under the lock `token` and stores its value while the lock still holds.
    async fn load_and_store<T, F, Fut, E>(&self, family: &'static KeySpec, key: &str, token: &str, load: F) -> Result<T, String>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        self.count(|c| &c.loads);
        // The loader's error becomes text at once: it need not be Send across the unlock.
        let loaded = load().await.map_err(|e| e.to_string());
        let value = match loaded {
            Ok(v) => v,
            Err(message) => {
                self.count(|c| &c.load_errors);
                self.unlock(key, token).await;
                return Err(message);
            }
        };
        let written = match self.envelope(family, &value) {
            Some((envelope, px)) => self.store_locked(key, token, envelope, px).await,
            None => false,
        };
        if !written {
            self.count(|c| &c.stores_skipped);
        }
        Ok(value)
    }

    /// Writes `envelope` under `key` if `token` still holds the key's lock, and releases the
    /// lock. False when the lock was lost (an invalidation, or it expired) or Redis failed.
    async fn store_locked(&self, key: &str, token: &str, envelope: Vec<u8>, px: i64) -> bool {
        let mut conn = self.redis.clone();
        let stored: Result<i64, _> = self
            .store
            .key(key)
            .key(self.keys.cache_lock(key))
            .arg(token)
            .arg(envelope)
            .arg(px)
            .invoke_async(&mut conn)
            .await;
        match stored {
            Ok(n) => n == 1,
            Err(e) => {
                self.count(|c| &c.redis_errors);
                tracing::warn!(message = "Cache store failed.", key, error = %e);
                false
            }
        }
    }

    /// The serialised envelope of `value` written now, and its Redis lifetime in ms: TTL, the
    /// stale window, and one more stale window kept for stale-if-error.
    fn envelope<T: Serialize>(&self, family: &KeySpec, value: &T) -> Option<(Vec<u8>, i64)> {
        let now = self.clock.now_ms();
        let (ttl, stale) = (ms(family.ttl), ms(family.stale));
        let envelope = Envelope { fresh_until: now + ttl, stale_until: now + ttl + stale, value };
        let bytes = serde_json::to_vec(&envelope).ok()?;
        Some((bytes, (ttl + 2 * stale).max(1)))
    }

    async fn unlock(&self, key: &str, token: &str) {
        let mut conn = self.redis.clone();
        let released: Result<i64, _> = self
            .unlock
            .key(self.keys.cache_lock(key))
        .arg(token)
        .invoke_async(&mut conn)
        .await;
        if let Err(e) = released {
            tracing::warn!(message = "Cache unlock failed; the lock expires by itself.", key, error = %e);
        }
    }

    /// The loader's answer without the cache (Redis down, or the winner never answered).
    async fn load_direct<T, F, Fut, E>(&self, key: &str, load: F) -> Result<T, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        self.count(|c| &c.loads);
        load().await.map_err(|e| {
            self.count(|c| &c.load_errors);
            CacheError::Load { key: key.to_owned(), message: e.to_string() }
        })
    }

    fn stale_if_error<T>(&self, old: Option<Envelope<T>>, key: String, message: String) -> Result<T, CacheError> {
        match old {
            Some(e) => {
                self.count(|c| &c.stale_if_error);
                tracing::warn!(message = "Loader failed; serving the old value.", key, error = %message);
                Ok(e.value)
            }
            None => Err(CacheError::Load { key, message }),
        }
    }

    /// One background refresh per key per process, and one across the fleet (the lock).
    fn refresh_in_background<T, F, Fut, E>(&self, family: &'static KeySpec, key: String, load: F)
    where
        T: Serialize + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        {
            let Ok(mut refreshing) = self.refreshing.lock() else { return };
            if !refreshing.insert(key.clone()) {
                return;
            }
        }
        let cache = self.clone();
        tokio::spawn(async move {
            if let Ok(Some(token)) = cache.lock(&key).await {
                match cache.load_and_store(family, &key, &token, load).await {
                    Ok(_) => cache.count(|c| &c.refreshes),
                    Err(message) => {
                        cache.count(|c| &c.refresh_errors);
                        tracing::warn!(message = "Cache refresh failed; serving stale.", key, error = %message);
                    }
                }
            }
            if let Ok(mut refreshing) = cache.refreshing.lock() {
                refreshing.remove(&key);
            }
            cache.refreshed.send_modify(|n| *n += 1);
        });
    }
}
