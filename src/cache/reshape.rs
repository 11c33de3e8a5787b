//! `cache.reshape`, the after-deploy key reshape. A change to a cached value's format bumps
//! its `shape` in src/redis_keys.rs, so new members read and write new keys while old members,
//! during the rollout, still read theirs. Once every member runs the new code this job warms
//! the new keys and then removes every other version with SCAN in batches (UNLINK, never
//! KEYS). Without `execute` it only counts.

use serde::Serialize;

use super::Cache;
use crate::redis_keys::{CachedFamily, RedisKeys};

/// Keys per SCAN step and per UNLINK.
const SCAN_BATCH: usize = 500;

/// One family's keys by version.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyCount {
    /// The family.
    pub family: CachedFamily,
    /// The shape this build reads and writes.
    pub shape: u32,
    /// Keys at that shape.
    pub current: u64,
    /// Keys at any other shape.
    pub old: u64,
    /// Old keys removed (0 in a dry run).
    pub deleted: u64,
}

/// What a reshape found and did (the job adds the warm it did first).
#[derive(Debug, Clone, Serialize)]
pub struct ReshapeReport {
    /// False: a dry run that only counted.
    pub executed: bool,
    /// Per family.
    pub families: Vec<FamilyCount>,
}

/// Counts (and with `execute`, warms then removes) the cached keys of other shape versions.
/// The caller warms the new keys first (execute only), so readers find them.
pub async fn run(cache: &Cache, execute: bool) -> Result<ReshapeReport, redis::RedisError> {
    let (keys, redis) = (cache.keys(), &cache.redis);
    let mut conn = redis.clone();
    let mut families = Vec::new();
    for family in CachedFamily::ALL {
        let shape = family.spec().shape;
        let mut count = FamilyCount { family, shape, current: 0, old: 0, deleted: 0 };
        let mut pages = redis.scan_pages(&keys.cache_versions(family), SCAN_BATCH).await?;
        while let Some(found) = pages.next_page().await? {
            let old: Vec<String> =
                found.into_iter().filter(|k| keys.cache_version_of(family, k).is_some_and(|v| v != shape)).collect();
            count.old += old.len() as u64;
            if execute && !old.is_empty() {
                let removed: u64 = redis::cmd("UNLINK").arg(&old).query_async(&mut conn).await?;
                count.deleted += removed;
            }
        }
        count.current = current_keys(redis, keys, family).await?;
        families.push(count);
    }
    Ok(ReshapeReport { executed: execute, families })
}

/// Keys of the current shape (a second SCAN, so the count is after any deletion).
async fn current_keys(redis: &crate::redis_conn::RedisConn, keys: &RedisKeys, family: CachedFamily) -> Result<u64, redis::RedisError> {
    let found = redis.scan(&keys.cache_versions(family)).await?;
    Ok(found.iter().filter(|k| keys.cache_version_of(family, k) == Some(family.spec().shape)).count() as u64)
}
