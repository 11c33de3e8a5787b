//! `ballast bench limiter`: what the rate limiter adds to a request. Two in-process api
//! members on loopback serve the same key route (`GET /v1/entitlements`, key check and
//! PostgreSQL read included); one decides limits (one Lua call to Redis), the other has its
//! limiter switched off. Requests alternate between them, one at a time, so both see the same
//! machine; the overhead is the difference of their latency percentiles.

use std::collections::BTreeSet;
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
pub struct LimiterBenchReport {
    /// Requests per side.
    pub requests: u64,
    /// With the limiter: p50, p99 (ms).
    pub limited_p50_ms: f64,
    /// With the limiter: p99 (ms).
    pub limited_p99_ms: f64,
    /// Without: p50 (ms).
    pub unlimited_p50_ms: f64,
    /// Without: p99 (ms).
    pub unlimited_p99_ms: f64,
}

/// Runs `n` requests per side after `n / 10` unmeasured ones.
pub async fn run(mut settings: Settings, n: u64) -> Result<LimiterBenchReport, BenchError> {
    let run_id = super::isolate(&mut settings);
    let mut limited = AppState::build(settings.clone())?;
    // Never blocks during the run: the cost measured is the decision, not a 429.
    let mut policies = (*limited.limiter.policies).clone();
    policies.key = Window { limit: u32::MAX, window_secs: 60 };
    limited.limiter.policies = std::sync::Arc::new(policies);
    let mut unlimited = AppState::build(settings)?;
    unlimited.limiter.enabled = false;

    let tenant = TenantId::new();
    // System pool: the benchmark's own tenant, removed afterwards.
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(tenant.0)
        .bind(format!("bench {run_id}"))
        .execute(&limited.system_pool.0)
        .await?;
    let result = measure(&limited, &unlimited, tenant, n).await;
    for sql in ["DELETE FROM audit_log WHERE tenant_id = $1", "DELETE FROM api_keys WHERE tenant_id = $1", "DELETE FROM tenants WHERE id = $1"] {
        sqlx::query(sql).bind(tenant.0).execute(&limited.system_pool.0).await?;
    }
    super::delete_namespace(&limited.redis, &limited.keys).await?;
    result
}

async fn measure(limited: &AppState, unlimited: &AppState, tenant: TenantId, n: u64) -> Result<LimiterBenchReport, BenchError> {
    let key = store::create(&limited.system_pool, Some(tenant), &[Scope::EntitlementsRead], "bench", "bench")
        .await
        .map_err(|e| BenchError::Incomplete { done: 0, n, secs: 0, detail: e.to_string() })?
        .key;
    let roles = BTreeSet::from([Role::Api]);
    let a = Member::start(limited.clone(), &roles, WorkerOptions::new(Registry::standard())).await?;
    let b = Member::start(unlimited.clone(), &roles, WorkerOptions::new(Registry::standard())).await?;
    let (Some(addr_a), Some(addr_b)) = (a.api_addr, b.api_addr) else { return Err(BenchError::NotListening) };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let urls = [format!("http://{addr_a}/v1/entitlements"), format!("http://{addr_b}/v1/entitlements")];
    let mut hist = [super::latency_histogram(), super::latency_histogram()];
    let warmup = n / 10;
    for i in 0..(warmup + n) * 2 {
        let side = (i % 2) as usize;
        let started = Instant::now();
        let ok = client.get(&urls[side]).bearer_auth(&key).send().await.map(|r| r.status().is_success()).unwrap_or(false);
        let took = started.elapsed();
        if !ok {
            a.shutdown().await;
            b.shutdown().await;
            return Err(BenchError::Incomplete { done: i, n, secs: 0, detail: format!("request to {} failed", urls[side]) });
        }
        if i / 2 >= warmup
            && let Some(h) = hist[side].as_mut()
        {
            let _ = h.record(took.as_micros().max(1) as u64);
        }
    }
    a.shutdown().await;
    b.shutdown().await;
    let pct = |h: &Option<hdrhistogram::Histogram<u64>>| h.as_ref().map(super::p50_p99_ms).unwrap_or((f64::NAN, f64::NAN));
    let ((lp50, lp99), (up50, up99)) = (pct(&hist[0]), pct(&hist[1]));
    Ok(LimiterBenchReport { requests: n, limited_p50_ms: lp50, limited_p99_ms: lp99, unlimited_p50_ms: up50, unlimited_p99_ms: up99 })
}
