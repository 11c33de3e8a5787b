//! `ballast bench usage`: usage intake in batches of 100 (events/s and latency of
//! `POST /v1/usage` with `clients` concurrent senders, closed loop) and the flush of 100,000
//! stored items into the ledger. Its own tenant and Redis namespace, removed afterwards.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BenchError;
use crate::app::{AppState, Member, Role};
use crate::auth::{Scope, store};
use crate::config::Settings;
use crate::newtypes::TenantId;
use crate::state::Registry;
use crate::queue::worker::WorkerOptions;

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct UsageBenchReport {
    /// Batches posted.
    pub batches: u64,
    /// Usage events (items) per second.
    pub events_per_sec: f64,
    /// Batch latency p50 (ms).
    pub post_p50_ms: f64,
    /// Batch latency p99 (ms).
    pub post_p99_ms: f64,
    /// Counters flushed.
    pub counters: u64,
    /// Time to flush them into the ledger (s).
    pub flush_secs: f64,
}

/// Posts for `secs` with `clients` senders, then flushes `counters` counters.
pub async fn run(mut settings: Settings, secs: u64, clients: usize, counters: u64) -> Result<UsageBenchReport, BenchError> {
    let run_id = super::isolate(&mut settings);
    settings.stripe_secret_key = None; // the flush's ledger step is measured, not Stripe
    let mut state = AppState::build(settings)?;
    // Never throttled: the intake's own cost is measured.
    let mut policies = (*state.limiter.policies).clone();
    policies.key.limit = u32::MAX;
    policies.tenant_writes.limit = u32::MAX;
    state.limiter.policies = Arc::new(policies);
    let plan = state.plans.plans.iter().find(|(_, p)| p.usage.values().any(|l| l.overage)).map(|(id, _)| id.clone());
    let (Some(plan), Some(metric)) = (plan.clone(), plan.and_then(|p| state.plans.plans[&p].usage.keys().next().cloned())) else {
        return Err(BenchError::NotReady("the plan catalogue has no plan with an overage metric to post".into()));
    };
    let tenant = TenantId::new();
    // System pool: the benchmark's own tenant and its plan, removed afterwards.
    // A Stripe customer, so the flush's report step stops at its first row (no Stripe key here)
    // and the time measured is the ledger's.
    sqlx::query("INSERT INTO tenants (id, name, stripe_customer_id) VALUES ($1, $2, $3)")
        .bind(tenant.0)
        .bind(format!("bench {run_id}"))
        .bind(format!("cus_bench{run_id}"))
        .execute(&state.system_pool.0)
        .await?;
    sqlx::query("INSERT INTO entitlements (tenant_id, feature, enabled, source, plan_id) VALUES ($1, 'bench', true, 'plan', $2)")
        .bind(tenant.0)
        .bind(&plan)
        .execute(&state.system_pool.0)
        .await?;
    let result = measure(&state, tenant, &metric, secs, clients, counters).await;
    for sql in [
        "DELETE FROM usage_flushes WHERE flush_id IN (SELECT DISTINCT flush_id FROM usage_ledger WHERE tenant_id = $1)",
        "DELETE FROM usage_ledger WHERE tenant_id = $1",
        "DELETE FROM usage_items WHERE tenant_id = $1",
        "DELETE FROM email_outbox WHERE tenant_id = $1",
        "DELETE FROM entitlements WHERE tenant_id = $1",
        "DELETE FROM audit_log WHERE tenant_id = $1",
        "DELETE FROM api_keys WHERE tenant_id = $1",
        "DELETE FROM tenants WHERE id = $1",
    ] {
        sqlx::query(sql).bind(tenant.0).execute(&state.system_pool.0).await?;
    }
    super::delete_namespace(&state.redis, &state.keys).await?;
    result
}

async fn measure(state: &AppState, tenant: TenantId, metric: &str, secs: u64, clients: usize, counters: u64) -> Result<UsageBenchReport, BenchError> {
    let key = store::create(&state.system_pool, Some(tenant), &[Scope::UsageWrite], "bench", "bench")
        .await
        .map_err(|e| BenchError::NotReady(e.to_string()))?
        .key;
    let member = Member::start(state.clone(), &BTreeSet::from([Role::Api]), WorkerOptions::new(Registry::standard())).await?;
    let Some(addr) = member.api_addr else { return Err(BenchError::NotListening) };
    let url = format!("http://{addr}/v1/usage");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let hist = Arc::new(Mutex::new(super::latency_histogram()));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut senders = Vec::new();
    for c in 0..clients {
        let (client, url, key, hist, failures, metric) = (client.clone(), url.clone(), key.clone(), hist.clone(), failures.clone(), metric.to_owned());
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let now = chrono::Utc::now().to_rfc3339();
                let items: Vec<serde_json::Value> = (0..100)
                    .map(|i| serde_json::json!({"metric": metric, "quantity": 1, "timestamp": now, "idempotency_key": format!("{c}-{n}-{i}")}))
                    .collect();
                let t = Instant::now();
                let ok = client.post(&url).bearer_auth(&key).json(&serde_json::json!({"items": items})).send().await.is_ok_and(|r| r.status().is_success());
                if !ok {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Ok(mut h) = hist.lock()
                    && let Some(h) = h.as_mut()
                {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                }
                n += 1;
            }
            n
        }));
    }
    let mut batches = 0;
    for s in senders {
        batches += s.await.unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    member.shutdown().await;
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        return Err(BenchError::NotReady(format!("{failed} of {batches} batches were refused")));
    }
    let (p50, p99) = hist.lock().ok().and_then(|h| h.as_ref().map(super::p50_p99_ms)).unwrap_or((f64::NAN, f64::NAN));

    // Flush: the intake's items, then `counters` stored items of distinct minutes (each its
    // own ledger row), as a backlog the flush meets after an outage.
    crate::usage::flush::run(&state.usage_deps(), chrono::Utc::now(), true).await.ok();
    let received = chrono::Utc::now() - chrono::Duration::minutes(10);
    sqlx::query(
        "INSERT INTO usage_items (tenant_id, idempotency_key, metric, quantity, usage_minute, received_at)
         SELECT $1, 'backlog-' || i, $2, 1, date_trunc('minute', $3::timestamptz) - make_interval(mins => i::int), $3
         FROM generate_series(1, $4::bigint) AS i",
    )
    .bind(tenant.0)
    .bind(metric)
    .bind(received)
    .bind(counters as i64)
    .execute(&state.system_pool.0)
    .await?;
    let t = Instant::now();
    // Stripe is not configured here, so the report step stops at its first row.
    if let Err(e) = crate::usage::flush::run(&state.usage_deps(), chrono::Utc::now(), false).await {
        tracing::debug!(message = "Flush ended with an error (expected: no Stripe here).", error = %e);
    }
    let flush_secs = t.elapsed().as_secs_f64();
    let flushed: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_items WHERE tenant_id = $1 AND idempotency_key LIKE 'backlog-%' AND flush_id IS NOT NULL")
        .bind(tenant.0)
        .fetch_one(&state.system_pool.0)
        .await?;
    if flushed as u64 != counters {
        return Err(BenchError::NotReady(format!("flushed {flushed} of {counters} counters")));
    }
    Ok(UsageBenchReport { batches, events_per_sec: (batches * 100) as f64 / elapsed, post_p50_ms: p50, post_p99_ms: p99, counters, flush_secs })
}
