//! `ballast bench entitlements`: `GET /v1/entitlements/{feature}` against an in-process api
//! member on loopback (key check, rate-limit decision and cache read included).
//! - hit: one request at a time on warmed keys;
//! - miss: the same, with the tenant's key invalidated (untimed) before each request, so every
//!   read loads from PostgreSQL through the single-flight lock and stores;
//! - the cache reader alone (no HTTP) on a hit;
//! - reads per second: closed loop, `concurrency` clients on hits, for `secs`.
//!
//! Tenants, entitlements and keys are the run's own and removed afterwards; Redis keys live in
//! a private namespace.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BenchError;
use crate::app::{AppState, Member, Role};
use crate::auth::{Scope, store};
use crate::config::Settings;
use crate::newtypes::TenantId;
use crate::state::Registry;
use crate::queue::worker::WorkerOptions;
use crate::ratelimit::Window;

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct EntitlementBenchReport {
    /// Tenants (one key each).
    pub tenants: usize,
    /// Requests per latency phase.
    pub requests: u64,
    /// Cache hit over HTTP: p50 (ms).
    pub hit_p50_ms: f64,
    /// Cache hit over HTTP: p99 (ms).
    pub hit_p99_ms: f64,
    /// Cache miss over HTTP (PostgreSQL load and store): p50 (ms).
    pub miss_p50_ms: f64,
    /// Cache miss over HTTP: p99 (ms).
    pub miss_p99_ms: f64,
    /// The cache reader alone on a hit: p50 (ms).
    pub reader_hit_p50_ms: f64,
    /// The cache reader alone on a hit: p99 (ms).
    pub reader_hit_p99_ms: f64,
    /// Closed-loop clients of the throughput phase.
    pub concurrency: usize,
    /// Hits per second answered by the one process (clients in the same process).
    pub reads_per_sec: f64,
}

/// Runs the benchmark.
pub async fn run(mut settings: Settings, tenants: usize, n: u64, concurrency: usize, secs: u64) -> Result<EntitlementBenchReport, BenchError> {
    let run_id = super::isolate(&mut settings);
    let mut state = AppState::build(settings)?;
    // Never blocks during the run: the cost measured is the read, not a 429.
    let mut policies = (*state.limiter.policies).clone();
    policies.key = Window { limit: u32::MAX, window_secs: 60 };
    state.limiter.policies = Arc::new(policies);

    let ids: Vec<TenantId> = (0..tenants.max(1)).map(|_| TenantId::new()).collect();
    let raw: Vec<uuid::Uuid> = ids.iter().map(|t| t.0).collect();
    let system = &state.system_pool.0;
    // System pool: the benchmark's own tenants and rows, removed afterwards.
    sqlx::query("INSERT INTO tenants (id, name) SELECT id, $2 FROM UNNEST($1::uuid[]) AS t (id)")
        .bind(&raw)
        .bind(format!("bench {run_id}"))
        .execute(system)
        .await?;
    sqlx::query(
        "INSERT INTO entitlements (tenant_id, feature, enabled, limit_value, source, plan_id)
         SELECT t.id, f.feature, true, 10, 'plan', 'bench' FROM UNNEST($1::uuid[]) AS t (id),
              UNNEST(ARRAY['api_access', 'projects', 'seats', 'sso', 'read_only']) AS f (feature)",
    )
    .bind(&raw)
    .execute(system)
    .await?;
    let result = measure(&state, &ids, n, concurrency, secs).await;
    for sql in [
        "DELETE FROM audit_log WHERE tenant_id = ANY ($1)",
        "DELETE FROM api_keys WHERE tenant_id = ANY ($1)",
        "DELETE FROM entitlements WHERE tenant_id = ANY ($1)",
        "DELETE FROM tenants WHERE id = ANY ($1)",
    ] {
        sqlx::query(sql).bind(&raw).execute(system).await?;
    }
    super::delete_namespace(&state.redis, &state.keys).await?;
    result
}

async fn measure(state: &AppState, tenants: &[TenantId], n: u64, concurrency: usize, secs: u64) -> Result<EntitlementBenchReport, BenchError> {
    let fail = |detail: String| BenchError::Incomplete { done: 0, n, secs, detail };
    let mut keys = Vec::with_capacity(tenants.len());
    for t in tenants {
        let created = store::create(&state.system_pool, Some(*t), &[Scope::EntitlementsRead], "bench", "bench").await.map_err(|e| fail(e.to_string()))?;
        keys.push(created.key);
    }
    let member = Member::start(state.clone(), &BTreeSet::from([Role::Api]), WorkerOptions::new(Registry::standard())).await?;
    let Some(addr) = member.api_addr else { return Err(BenchError::NotListening) };
    let url = format!("http://{addr}/v1/entitlements/projects");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    crate::billing::warm::run(&state.warm_sources()).await.map_err(|e| fail(e.to_string()))?;

    let get = |i: usize| client.get(&url).bearer_auth(&keys[i % keys.len()]).send();
    let outcome = async {
        // Hits, one at a time (a tenth more first, unmeasured).
        let mut hit = super::latency_histogram();
        for i in 0..(n + n / 10) as usize {
            let started = Instant::now();
            let ok = get(i).await.map(|r| r.status().is_success()).unwrap_or(false);
            if !ok {
                return Err(fail("a hit request failed".into()));
            }
            if i as u64 >= n / 10
                && let Some(h) = hit.as_mut()
            {
                let _ = h.record(started.elapsed().as_micros().max(1) as u64);
            }
        }
        // Misses: invalidate (untimed), then read.
        let mut miss = super::latency_histogram();
        for i in 0..n as usize {
            let tenant = tenants[i % tenants.len()];
            crate::billing::entitlements::invalidate(&state.cache, tenant).await;
            let started = Instant::now();
            let ok = get(i).await.map(|r| r.status().is_success()).unwrap_or(false);
            if !ok {
                return Err(fail("a miss request failed".into()));
            }
            if let Some(h) = miss.as_mut() {
                let _ = h.record(started.elapsed().as_micros().max(1) as u64);
            }
        }
        // The reader alone, on hits.
        let mut reader = super::latency_histogram();
        for i in 0..n as usize {
            let started = Instant::now();
            crate::billing::entitlements::cached(&state.cache, &state.tenant_pool, tenants[i % tenants.len()]).await.map_err(|e| fail(e.to_string()))?;
            if let Some(h) = reader.as_mut() {
                let _ = h.record(started.elapsed().as_micros().max(1) as u64);
            }
        }
        // Throughput: closed loop for `secs`.
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let clients: Vec<_> = (0..concurrency.max(1))
            .map(|c| {
                let (client, url, keys, done) = (client.clone(), url.clone(), keys.clone(), done.clone());
                tokio::spawn(async move {
                    let mut i = c;
                    while Instant::now() < deadline {
                        if client.get(&url).bearer_auth(&keys[i % keys.len()]).send().await.is_ok_and(|r| r.status().is_success()) {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        i += concurrency;
                    }
                })
            })
            .collect();
        for c in clients {
            let _ = c.await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let pct = |h: &Option<hdrhistogram::Histogram<u64>>| h.as_ref().map(super::p50_p99_ms).unwrap_or((f64::NAN, f64::NAN));
        let ((hp50, hp99), (mp50, mp99), (rp50, rp99)) = (pct(&hit), pct(&miss), pct(&reader));
        Ok(EntitlementBenchReport {
            tenants: tenants.len(),
            requests: n,
            hit_p50_ms: hp50,
            hit_p99_ms: hp99,
            miss_p50_ms: mp50,
            miss_p99_ms: mp99,
            reader_hit_p50_ms: rp50,
            reader_hit_p99_ms: rp99,
            concurrency,
            reads_per_sec: done.load(Ordering::Relaxed) as f64 / elapsed,
        })
    }
    .await;
    member.shutdown().await;
    outcome
}
