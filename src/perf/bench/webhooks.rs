//! `ballast bench webhooks`: Stripe webhook ingest at a fixed arrival rate.
//!
//! An in-process member (api + worker roles, the production job catalogue) on loopback, fed
//! signed `customer.subscription.*` events by an open-loop client: request `i` is due at
//! `start + i / rate` whether or not earlier ones have answered, and its latency is counted
//! from when it was due (so a stall is not hidden by the client waiting — no coordinated
//! omission). Figures:
//! - `POST /webhooks/stripe` latency p50/p99 and the achieved request rate;
//! - received → entitlements updated: from when a request was due to when its `stripe.event`
//!   job finished (mirror applied, entitlements recomputed, transaction committed, cache key
//!   deleted).
//!
//! Each tenant's events change its plan back and forth with strictly increasing `created`,
//! so every event is applied and every one recomputes entitlements. The first `warmup_secs`
//! are sent but not counted. The benchmark's tenants and rows are deleted afterwards.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use secrecy::SecretString;
use serde::Serialize;

use super::{BenchError, Progress};
use crate::app::{AppState, Member, Role};
use crate::config::Settings;
use crate::state::Registry;
use crate::queue::JobEnvelope;
use crate::queue::worker::{JobObserver, RunOutcome, WorkerOptions};
use crate::stripe::signature;

/// Parameters of a run.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookBenchParams {
    /// Arrival rate (requests/s).
    pub rate: u32,
    /// Measured seconds.
    pub secs: u32,
    /// Seconds sent first and not counted (connection set-up, pool warm-up).
    pub warmup_secs: u32,
    /// Tenants the events are spread over.
    pub tenants: usize,
    /// Run the api role alone: intake latency without the workers competing for the CPU
    /// (events stay queued and are removed with the run).
    pub ingest_only: bool,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookBenchReport {
    /// The parameters.
    pub params: WebhookBenchParams,
    /// Requests counted (after warm-up).
    pub requests: u64,
    /// Of those, answered 200.
    pub accepted: u64,
    /// Of those, answered otherwise or not at all.
    pub failed: u64,
    /// Every request not answered 200 (warm-up included), by status or client error.
    pub refusals: std::collections::BTreeMap<String, u64>,
    /// Counted requests / (last answer − first due time).
    pub achieved_per_sec: f64,
    /// `POST /webhooks/stripe` latency p50 (ms).
    pub ingest_p50_ms: f64,
    /// `POST /webhooks/stripe` latency p99 (ms).
    pub ingest_p99_ms: f64,
    /// Worst request (ms).
    pub ingest_max_ms: f64,
    /// Received → entitlements updated p50 (ms); none with `ingest_only`.
    pub to_entitlements_p50_ms: Option<f64>,
    /// Received → entitlements updated p99 (ms); none with `ingest_only`.
    pub to_entitlements_p99_ms: Option<f64>,
    /// Inbox rows of the run marked processed (every one sent, warm-up included).
    pub processed: u64,
    /// Whether the tables were analyzed before and during the warm-up (needs
    /// BALLAST_OWNER_DATABASE_URL).
    pub analyzed: bool,
}

/// Watches `stripe.event` runs and times each from when its webhook was due. `progress`
/// counts events settled: processed, or refused at intake (so nothing is waited for).
#[derive(Default)]
struct Watch {
    /// Event id → (when its request was due, whether it is counted).
    due: Mutex<HashMap<String, (Instant, bool)>>,
    to_entitlements: Mutex<Option<Histogram<u64>>>,
    progress: Progress,
}

impl JobObserver for Watch {
    fn finished(&self, envelope: &JobEnvelope, outcome: RunOutcome, _took: Duration) {
        if outcome != RunOutcome::Completed {
            return;
        }
        let Some(event_id) = envelope.payload.get("event_id").and_then(|v| v.as_str()) else { return };
        let entry = self.due.lock().ok().and_then(|mut due| due.remove(event_id));
        if let Some((due_at, counted)) = entry {
            if counted
                && let Ok(mut h) = self.to_entitlements.lock()
                && let Some(h) = h.as_mut()
            {
                let _ = h.record(due_at.elapsed().as_micros().max(1) as u64);
            }
            self.progress.bump();
        }
    }
}

/// What the sender saw.
#[derive(Default)]
struct Sent {
    ingest: Option<Histogram<u64>>,
    accepted: u64,
    failed: u64,
    first_due: Option<Instant>,
    last_answer: Option<Instant>,
    /// Answers other than 200, by status or client error.
    refusals: std::collections::BTreeMap<String, u64>,
}

/// Runs the benchmark against the configured PostgreSQL and a private Redis namespace.
pub async fn run(settings: Settings, params: WebhookBenchParams) -> Result<WebhookBenchReport, BenchError> {
    let run = set_up(settings, params.tenants).await?;
    let result = measure(&run.state, &run.run_id, &run.secret, &run.tenants, &params).await;
    tear_down(&run, result).await
}

/// A run's state (private Redis namespace, loopback port), its signing secret and its tenants,
/// mapped to the customers `customer_prefix(run_id)0 …`.
pub(super) struct Run {
    pub(super) state: AppState,
    pub(super) run_id: String,
    pub(super) secret: String,
    pub(super) tenants: Vec<uuid::Uuid>,
}

/// Sets up a run of `tenants` tenants.
pub(super) async fn set_up(mut settings: Settings, tenants: usize) -> Result<Run, BenchError> {
    let run_id = super::isolate(&mut settings);
    // The benchmark signs its own events (or hands its secret to the sender).
    let secret = format!("whsec_bench_{}", uuid::Uuid::new_v4().simple());
    settings.stripe_webhook_secrets = vec![SecretString::from(secret.clone())];
    let state = AppState::build(settings)?;
    if !crate::db::migrations_current(&state.system_pool.0).await.unwrap_or(false) {
        return Err(BenchError::NotReady("migrations pending or database unreachable: run `ballast migrate` first".into()));
    }
    let tenants = create_tenants(&state, &run_id, tenants.max(1)).await?;
    Ok(Run { state, run_id, secret, tenants })
}

/// Removes what the run wrote, then returns its result.
pub(super) async fn tear_down<T>(run: &Run, result: Result<T, BenchError>) -> Result<T, BenchError> {
    let cleaned = remove_rows(&run.state, &run.run_id, &run.tenants).await;
    super::delete_namespace(&run.state.redis, &run.state.keys).await?;
    let report = result?;
    cleaned?;
    Ok(report)
}

async fn measure(
    state: &AppState,
    run_id: &str,
    secret: &str,
    tenants: &[uuid::Uuid],
    params: &WebhookBenchParams,
) -> Result<WebhookBenchReport, BenchError> {
    let watch = Arc::new(Watch { to_entitlements: Mutex::new(super::latency_histogram()), ..Watch::default() });
    let mut options = WorkerOptions::new(Registry::standard());
    options.observer = watch.clone();
    let roles = if params.ingest_only { BTreeSet::from([Role::Api]) } else { BTreeSet::from([Role::Api, Role::Worker]) };
    let member = Member::start(state.clone(), &roles, options).await?;
    let Some(addr) = member.api_addr else {
        member.shutdown().await;
        return Err(BenchError::NotListening);
    };
    let url = format!("http://{addr}/webhooks/stripe");
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).timeout(Duration::from_secs(30)).build()?;

    let rate = params.rate.max(1) as u64;
    let warmup = rate * params.warmup_secs as u64;
    let total = warmup + rate * params.secs.max(1) as u64;
    let base_created = chrono::Utc::now().timestamp() - 86_400;
    let sent = Arc::new(Mutex::new(Sent { ingest: super::latency_histogram(), ..Sent::default() }));
    // The planner's statistics should describe a running system, not the empty tables a fresh
    // database (or the last run's cleanup) leaves, whose cached plans can scan whole tables
    // for key lookups: ANALYZE before the first request (so sizes are the real ones) and one
    // second into the warm-up, when rows exist (each ANALYZE invalidates cached plans).
    // Needs the owner role; reported without.
    let analyzed_before = analyze(state.settings.owner_database_url.clone()).await;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut requests = Vec::with_capacity(total as usize);
    let mut analyzed = None;
    for i in 0..total {
        let body = event_body(run_id, tenants, i, base_created);
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due).await;
        if i == rate.min(warmup) {
            let owner = state.settings.owner_database_url.clone();
            analyzed = Some(tokio::spawn(async move { analyze(owner).await }));
        }
        let counted = i >= warmup;
        let due_at = due.into_std();
        if let Ok(mut map) = watch.due.lock() {
            map.insert(event_id(run_id, i), (due_at, counted));
        }
        let (client, url, secret, sent) = (client.clone(), url.clone(), secret.to_owned(), sent.clone());
        let (watch_due, run) = (watch.clone(), run_id.to_owned());
        requests.push(tokio::spawn(async move {
            let t = chrono::Utc::now().timestamp();
            let header = format!("t={t},v1={}", signature::sign(&secret, t, body.as_bytes()));
            let answer = client.post(&url).header("stripe-signature", header).header("content-type", "application/json").body(body).send().await;
            let ok = matches!(&answer, Ok(r) if r.status().is_success());
            let now = Instant::now();
            if !ok {
                // Not stored (or not known to be): nothing will be processed for it.
                if let Ok(mut map) = watch_due.due.lock() {
                    map.remove(&event_id(&run, i));
                }
                watch_due.progress.bump();
                let reason = match &answer {
                    Ok(r) => r.status().to_string(),
                    Err(e) => e.to_string(),
                };
                if let Ok(mut s) = sent.lock() {
                    *s.refusals.entry(reason).or_default() += 1;
                }
            }
            if counted && let Ok(mut s) = sent.lock() {
                s.first_due.get_or_insert(due_at);
                s.last_answer = Some(s.last_answer.map_or(now, |l| l.max(now)));
                if ok {
                    s.accepted += 1;
                } else {
                    s.failed += 1;
                }
                if let Some(h) = s.ingest.as_mut() {
                    let _ = h.record(now.duration_since(due_at).as_micros().max(1) as u64);
                }
            }
        }));
    }
    for r in requests {
        let _ = r.await;
    }
    let analyzed = analyzed_before
        && match analyzed {
            Some(task) => task.await.unwrap_or(false),
            None => false,
        };
    let waited = if params.ingest_only { Ok(()) } else { watch.progress.wait_for(total, Duration::from_secs(120)).await };
    if let Err(BenchError::Stalled { done, n, secs }) = waited {
        // Say where the missing events are before the rows and keys are removed.
        let detail = diagnose(state, run_id).await;
        member.shutdown().await;
        return Err(BenchError::Incomplete { done, n, secs, detail });
    }
    member.shutdown().await;
    waited?;

    let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE id LIKE $1 AND status = 'processed'")
        .bind(format!("evt_bench{run_id}_%"))
        .fetch_one(&state.system_pool.0)
        .await?;
    let sent = sent.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
    let (ingest_p50_ms, ingest_p99_ms, ingest_max_ms) = match &sent.ingest {
        Some(h) => {
            let (p50, p99) = super::p50_p99_ms(h);
            (p50, p99, h.max() as f64 / 1000.0)
        }
        None => (f64::NAN, f64::NAN, f64::NAN),
    };
    let to_entitlements = if params.ingest_only {
        None
    } else {
        watch.to_entitlements.lock().ok().and_then(|h| h.as_ref().map(super::p50_p99_ms))
    };
    let (to_entitlements_p50_ms, to_entitlements_p99_ms) = (to_entitlements.map(|t| t.0), to_entitlements.map(|t| t.1));
    let span = match (sent.first_due, sent.last_answer) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64().max(1e-9),
        _ => f64::NAN,
    };
    let requests = sent.accepted + sent.failed;
    Ok(WebhookBenchReport {
        params: params.clone(),
        requests,
        accepted: sent.accepted,
        failed: sent.failed,
        refusals: sent.refusals.clone(),
        achieved_per_sec: requests as f64 / span,
        ingest_p50_ms,
        ingest_p99_ms,
        ingest_max_ms,
        to_entitlements_p50_ms,
        to_entitlements_p99_ms,
        processed: processed.max(0) as u64,
        analyzed,
    })
}

/// ANALYZE of the tables the webhook path reads, as the owner role; false when not possible.
async fn analyze(owner_url: Option<SecretString>) -> bool {
    use secrecy::ExposeSecret;
    let Some(url) = owner_url else { return false };
    super::as_owner(url.expose_secret(), &["ANALYZE stripe_events, tenants, customers, subscriptions, entitlements"]).await.is_ok()
}

/// Inbox rows of the run by status, and the stripe.event queue, for a stalled run.
async fn diagnose(state: &AppState, run_id: &str) -> String {
    let statuses: Result<Vec<(String, i64)>, _> =
        sqlx::query_as("SELECT status, count(*) FROM stripe_events WHERE id LIKE $1 GROUP BY status ORDER BY status")
            .bind(format!("evt_bench{run_id}_%"))
            .fetch_all(&state.system_pool.0)
            .await;
    let inbox = match statuses {
        Ok(rows) => rows.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", "),
        Err(e) => format!("unreadable ({e})"),
    };
    let queue = match state.queue.stats().await {
        Ok(stats) => stats
            .iter()
            .filter(|q| q.kind == crate::stripe::inbox::JOB_KIND)
            .map(|q| format!("{} ready, {} scheduled, {} running", q.ready, q.scheduled, q.running))
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("unreadable ({e})"),
    };
    format!("inbox rows: {inbox}; stripe.event queue: {queue}")
}

fn event_id(run_id: &str, i: u64) -> String {
    format!("evt_bench{run_id}_{i}")
}

fn customer_id(run_id: &str, tenant: usize) -> String {
    format!("{}{tenant}", customer_prefix(run_id))
}

/// What the run's customer ids start with (the tenant's index follows).
pub(super) fn customer_prefix(run_id: &str) -> String {
    format!("cus_bench{run_id}_")
}

/// Event `i`: tenant `i mod n`, that tenant's `k`-th event (`created` one second after its
/// previous one), alternating between the catalogue's two plans.
pub(super) fn event_body(run_id: &str, tenants: &[uuid::Uuid], i: u64, base_created: i64) -> String {
    let n = tenants.len() as u64;
    let (tenant, k) = ((i % n) as usize, i / n);
    let (price, product) = if k % 2 == 0 { ("price_starter_monthly", "prod_starter") } else { ("price_pro_monthly", "prod_pro") };
    let created = base_created + k as i64;
    let sub = format!("sub_bench{run_id}_{tenant}");
    serde_json::json!({
        "id": event_id(run_id, i),
        "object": "event",
        "type": if k == 0 { "customer.subscription.created" } else { "customer.subscription.updated" },
        "created": created,
        "livemode": false,
        "api_version": "2025-03-31.basil",
        "data": {"object": {
            "id": sub, "object": "subscription", "customer": customer_id(run_id, tenant), "status": "active",
            "cancel_at_period_end": false, "created": base_created, "currency": "usd", "livemode": false,
            "metadata": {"tenant_id": tenants[tenant].to_string()},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": format!("si_{sub}"), "object": "subscription_item", "quantity": 1, "subscription": sub,
                "current_period_start": base_created, "current_period_end": base_created + 30 * 86_400,
                "price": {"id": price, "object": "price", "product": product, "currency": "usd"},
            }]},
        }},
    })
    .to_string()
}

/// The benchmark's tenants, mapped to their Stripe customers.
pub(super) async fn create_tenants(state: &AppState, run_id: &str, n: usize) -> Result<Vec<uuid::Uuid>, BenchError> {
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
    let names: Vec<String> = (0..n).map(|i| format!("bench {run_id} {i}")).collect();
    let customers: Vec<String> = (0..n).map(|i| customer_id(run_id, i)).collect();
    // System pool: creating tenants is cross-tenant by nature.
    sqlx::query("INSERT INTO tenants (id, name, stripe_customer_id) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[])")
        .bind(&ids)
        .bind(&names)
        .bind(&customers)
        .execute(&state.system_pool.0)
        .await?;
    Ok(ids)
}

/// Deletes every row the run wrote, children first (system pool: it spans the run's tenants).
pub(super) async fn remove_rows(state: &AppState, run_id: &str, tenants: &[uuid::Uuid]) -> Result<(), BenchError> {
    let mut tx = state.system_pool.0.begin().await?;
    for table in ["billing_effects", "disputes", "charges", "invoices", "entitlements", "subscriptions", "customers", "job_dead_letters", "audit_log"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE tenant_id = ANY($1)"))).bind(tenants).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM stripe_events WHERE id LIKE $1 OR tenant_id = ANY($2)")
        .bind(format!("evt_bench{run_id}_%"))
        .bind(tenants)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM tenants WHERE id = ANY($1)").bind(tenants).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}
