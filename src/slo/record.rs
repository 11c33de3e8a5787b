//! Recording the intake's own SLIs: a middleware compares each request's latency with each
//! latency SLO's threshold (exactly, per request) and its status with the availability SLOs,
//! and counts good and valid events per SLO per minute in memory. The api role writes each
//! minute's totals so far to `slo_minutes` every few seconds and on shutdown; a row is keyed by
//! (SLO, minute, this member), so writing the same totals again changes nothing. A crash loses
//! at most the seconds since the last write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};

use super::{Indicator, Slos};
use crate::clock::Clock;

/// How often the api role writes its counts.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Requests, total µs and slow requests of one route in one minute.
type RouteCounts = (i64, i64, i64);

/// What the intake's requests add up to between two writes to Redis.
#[derive(Debug, Default)]
struct RouteMinutes {
    /// (route, unix minute) → (requests, total µs, slow ones).
    counts: BTreeMap<(String, i64), RouteCounts>,
    /// Unix minute → every route's latency histogram.
    latency: BTreeMap<i64, super::latency::Histogram>,
}

/// Per-minute counts of the intake's SLOs in this process.
#[derive(Debug)]
pub struct Recorder {
    /// (SLO name, indicator) of every intake SLO.
    slos: Vec<(String, Indicator)>,
    /// (index into `slos`, unix minute) → (good, valid), totals since this process started.
    counts: Mutex<BTreeMap<(usize, i64), (i64, i64)>>,
    /// Route and latency counts since the last write to Redis (one lock per request).
    routes: Mutex<RouteMinutes>,
    /// A request slower than this is "slow" in the route statistics (the first latency SLO's
    /// threshold, else 300 ms).
    slow_after: Duration,
    /// This member's name in `slo_minutes.source`.
    source: String,
    clock: Clock,
}

impl Recorder {
    /// A recorder for the intake SLOs of `slos`, writing as `source`.
    pub fn new(slos: &Slos, source: String, clock: Clock) -> Self {
        let slos = slos
            .slos
            .iter()
            .filter(|s| matches!(s.indicator, Indicator::IntakeLatency { .. } | Indicator::IntakeAvailability))
            .map(|s| (s.name.clone(), s.indicator))
            .collect::<Vec<_>>();
        let slow_after = slos
            .iter()
            .find_map(|(_, i)| match i {
                Indicator::IntakeLatency { threshold_ms } => Some(Duration::from_millis(*threshold_ms)),
                _ => None,
            })
            .unwrap_or(Duration::from_millis(300));
        Self { slos, counts: Mutex::default(), routes: Mutex::default(), slow_after, source, clock }
    }

    /// Counts one request of `route` (its path template) for the route statistics.
    pub fn observe_route(&self, route: &str, elapsed: Duration) {
        let minute = self.clock.now_ms().div_euclid(60_000);
        let bucket = super::latency::bucket(elapsed);
        let Ok(mut routes) = self.routes.lock() else { return };
        let entry = routes.counts.entry((route.to_owned(), minute)).or_default();
        entry.0 += 1;
        entry.1 += i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
        entry.2 += i64::from(elapsed > self.slow_after);
        routes.latency.entry(minute).or_insert([0; super::latency::BUCKETS])[bucket] += 1;
    }

    /// Adds the route counts gathered since the last call to the fleet's per-minute hashes,
    /// and publishes this member's cache counters. Diagnostics: a failed write drops them.
    pub async fn publish(&self, redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys, cache: &crate::cache::CacheStats) -> Result<(), redis::RedisError> {
        let routes = match self.routes.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return Ok(()),
        };
        let mut pipe = redis::pipe();
        let ttl = i64::try_from(crate::redis_keys::RedisKeys::ROUTE_STATS_TTL.as_secs()).unwrap_or(i64::MAX);
        for ((route, minute), (n, us, slow)) in &routes.counts {
            let key = keys.route_stats(*minute);
            pipe.hincr(&key, format!("{route}|n"), *n).ignore();
            pipe.hincr(&key, format!("{route}|us"), *us).ignore();
            pipe.hincr(&key, format!("{route}|slow"), *slow).ignore();
            pipe.expire(&key, ttl).ignore();
        }
        for (minute, histogram) in &routes.latency {
            let key = keys.route_stats(*minute);
            for (k, n) in histogram.iter().enumerate().filter(|(_, n)| **n > 0) {
                pipe.hincr(&key, super::latency::field(k), *n).ignore();
            }
            pipe.expire(&key, ttl).ignore();
        }
        let member = keys.member_cache_stats(&self.source);
        let fields: Vec<(&str, u64)> = vec![
            ("hits", cache.hits),
            ("misses", cache.misses),
            ("stale_served", cache.stale_served),
            ("load_errors", cache.load_errors),
            ("stale_if_error", cache.stale_if_error),
        ];
        pipe.hset_multiple(&member, &fields).ignore();
        pipe.expire(&member, i64::try_from(crate::redis_keys::RedisKeys::MEMBER_STATS_TTL.as_secs()).unwrap_or(600)).ignore();
        let mut conn = redis.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Counts one request that took `elapsed` and was answered with `status`.
    pub fn observe(&self, elapsed: Duration, status: StatusCode) {
        let minute = self.clock.now_ms().div_euclid(60_000);
        let Ok(mut counts) = self.counts.lock() else { return };
        for (i, (_, indicator)) in self.slos.iter().enumerate() {
            let good = match indicator {
                Indicator::IntakeLatency { threshold_ms } => elapsed <= Duration::from_millis(*threshold_ms),
                Indicator::IntakeAvailability => !status.is_server_error(),
                Indicator::Reported => continue,
            };
            let entry = counts.entry((i, minute)).or_default();
            entry.0 += i64::from(good);
            entry.1 += 1;
        }
    }

    /// Writes every minute's totals so far, then forgets minutes that are over (already
    /// written in full). Returns the rows written.
    pub async fn flush(&self, pool: &sqlx::PgPool) -> Result<usize, sqlx::Error> {
        // Minutes before this one were complete when the snapshot was taken.
        let current = self.clock.now_ms().div_euclid(60_000);
        let snapshot: Vec<((usize, i64), (i64, i64))> = match self.counts.lock() {
            Ok(c) => c.iter().map(|(k, v)| (*k, *v)).collect(),
            Err(_) => return Ok(0),
        };
        if snapshot.is_empty() {
            return Ok(0);
        }
        let mut names = Vec::with_capacity(snapshot.len());
        let mut minutes: Vec<DateTime<Utc>> = Vec::with_capacity(snapshot.len());
        let (mut good, mut valid) = (Vec::with_capacity(snapshot.len()), Vec::with_capacity(snapshot.len()));
        for ((i, minute), (g, v)) in &snapshot {
            names.push(self.slos[*i].0.as_str());
            minutes.push(DateTime::from_timestamp(minute * 60, 0).unwrap_or_default());
            good.push(*g);
            valid.push(*v);
        }
        sqlx::query(
            "INSERT INTO slo_minutes (slo, minute, source, good, valid)
             SELECT s, m, $5, g, v FROM UNNEST($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[]) AS t (s, m, g, v)
             ON CONFLICT (slo, minute, source) DO UPDATE SET good = EXCLUDED.good, valid = EXCLUDED.valid, updated_at = now()",
        )
        .bind(&names)
        .bind(&minutes)
        .bind(&good)
        .bind(&valid)
        .bind(&self.source)
        .execute(pool)
        .await?;
        if let Ok(mut c) = self.counts.lock() {
            c.retain(|(_, minute), _| *minute >= current);
        }
        Ok(snapshot.len())
    }

    /// Writes every [`FLUSH_EVERY`] until `stop`, then once more: the SLO counts to `pool`,
    /// the route and cache statistics to `redis`.
    pub async fn run(
        self: Arc<Self>,
        pool: sqlx::PgPool,
        redis: crate::redis_conn::RedisConn,
        cache: crate::cache::Cache,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => false,
                () = stop.cancelled() => true,
            };
            if let Err(e) = self.flush(&pool).await {
                tracing::warn!(message = "SLO counts not written; kept for the next try.", error = %e);
            }
            if let Err(e) = self.publish(&redis, cache.keys(), &cache.stats()).await {
                tracing::debug!(message = "Route and cache statistics not published.", error = %e);
            }
            if stopping {
                return;
            }
        }
    }
}

/// The fleet's per-minute route hashes for the `minutes` unix minutes up to `now_minute`.
async fn minute_hashes(redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys, now_minute: i64, minutes: i64) -> Result<Vec<BTreeMap<String, i64>>, redis::RedisError> {
    let mut pipe = redis::pipe();
    for m in (now_minute - minutes + 1)..=now_minute {
        pipe.cmd("HGETALL").arg(keys.route_stats(m));
    }
    let mut conn = redis.clone();
    pipe.query_async(&mut conn).await
}

/// Route → (requests, total µs, slow) over the last `minutes` unix minutes up to
/// `now_minute`, summed from the fleet's per-minute hashes (what [`Recorder::publish`] adds).
pub async fn route_totals(redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys, now_minute: i64, minutes: i64) -> Result<BTreeMap<String, (i64, i64, i64)>, redis::RedisError> {
    let mut out: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for hash in minute_hashes(redis, keys, now_minute, minutes).await? {
        for (field, v) in hash {
            let Some((route, what)) = field.rsplit_once('|') else { continue };
            let entry = out.entry(route.to_owned()).or_default();
            match what {
                "n" => entry.0 += v,
                "us" => entry.1 += v,
                "slow" => entry.2 += v,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Every route's latency histogram over the same minutes, for quantiles
/// ([`super::latency::quantile`]).
pub async fn latency(redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys, now_minute: i64, minutes: i64) -> Result<super::latency::Histogram, redis::RedisError> {
    let mut out = [0; super::latency::BUCKETS];
    for hash in minute_hashes(redis, keys, now_minute, minutes).await? {
        for (field, v) in hash {
            if let Some(k) = super::latency::parse_field(&field) {
                out[k] += v;
            }
        }
    }
    Ok(out)
}
