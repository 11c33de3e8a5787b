//! `ballast bench deliveries`: outbound webhook deliveries to a receiver on loopback in this
//! process (the same machine, as the target says). Two phases:
//! 1. Throughput: `n` deliveries written and queued, then a worker member drains them; the
//!    figure is deliveries received per second, from the workers' start to the last receipt.
//! 2. Latency: messages accepted at a fixed rate (open loop) as the intake does it — message and
//!    delivery written in one transaction, then the job pushed — and the time from the start of
//!    that acceptance to the receiver's receipt (a superset of queue → receipt).
//! Each delivery is signed, recorded in the log and its attempt kept, as in production. Its own
//! tenant and Redis namespace, removed afterwards.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{BenchError, Progress};
use crate::app::{AppState, Member, Role};
use crate::config::Settings;
use crate::newtypes::TenantId;
use crate::state::Registry;
use crate::queue::JobQueue;
use crate::queue::worker::WorkerOptions;
use crate::webhooks_out::messages::{self, NewMessage};

/// What to run.
#[derive(Debug, Clone)]
pub struct DeliveryBenchParams {
    /// Deliveries in the throughput phase.
    pub n: u64,
    /// Worker concurrency.
    pub concurrency: usize,
    /// Messages per second in the latency phase.
    pub rate: u32,
    /// Seconds of the latency phase.
    pub secs: u32,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryBenchReport {
    /// Deliveries drained in the throughput phase.
    pub n: u64,
    /// Deliveries received per second.
    pub delivered_per_sec: f64,
    /// Messages sent in the latency phase.
    pub sent: u64,
    /// Acceptance → receipt p50 (ms).
    pub p50_ms: f64,
    /// Acceptance → receipt p99 (ms).
    pub p99_ms: f64,
    /// Acceptance → receipt max (ms).
    pub max_ms: f64,
    /// The acceptance alone (message written, job pushed) p50 (ms).
    pub accept_p50_ms: f64,
    /// The acceptance alone p99 (ms).
    pub accept_p99_ms: f64,
    /// Queued (committed, job pushed) → received p50 (ms).
    pub queued_p50_ms: f64,
    /// Queued → received p99 (ms).
    pub queued_p99_ms: f64,
}

#[derive(Clone)]
struct Receiver {
    progress: Arc<Progress>,
    latency: Arc<Mutex<Option<Histogram<u64>>>>,
    // webhook-id → when its job was queued (unix µs), and queued → received.
    queued: Arc<Mutex<std::collections::HashMap<String, i64>>>,
    from_queue: Arc<Mutex<Option<Histogram<u64>>>>,
}

async fn receive(State(r): State<Receiver>, headers: axum::http::HeaderMap, body: String) -> &'static str {
    let now = chrono::Utc::now().timestamp_micros();
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let queued = r.queued.lock().ok().and_then(|mut q| q.remove(id));
    if let (Some(t), Ok(mut h)) = (queued, r.from_queue.lock())
        && let Some(h) = h.as_mut()
    {
        let _ = h.record((now - t).max(1) as u64);
    }
    // The body's data carries when its acceptance started (unix µs, this process's clock).
    let sent = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["data"]["t"].as_i64());
    if let Some(t) = sent {
        let took = (now - t).max(1) as u64;
        if let Ok(mut h) = r.latency.lock()
            && let Some(h) = h.as_mut()
        {
            let _ = h.record(took);
        }
    }
    r.progress.bump();
    "ok"
}

/// Runs both phases against the configured PostgreSQL and Redis (private namespace).
pub async fn run(mut settings: Settings, params: DeliveryBenchParams) -> Result<DeliveryBenchReport, BenchError> {
    let run_id = super::isolate(&mut settings);
    settings.outbound.allow = vec![ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]))];
    let mut state = AppState::build(settings)?;
    let catalogue = state.queue.catalogue().as_ref().clone().only_with_concurrency(messages::JOB_KIND, params.concurrency);
    state.queue = JobQueue::new(state.keys.clone(), state.redis.clone(), Arc::new(catalogue), state.settings.worker_heartbeat);
    // One tenant: its share of the slots is all of them (the fairness cap is measured apart).
    Arc::make_mut(&mut state.limiter.policies).tenant_webhooks.max_delivery_slots = u32::try_from(params.concurrency).unwrap_or(u32::MAX);
    let tenant = TenantId::new();
    // System pool: the benchmark's own tenant, removed afterwards.
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)").bind(tenant.0).bind(format!("bench {run_id}")).execute(&state.system_pool.0).await?;
    let result = measure(&state, tenant, &params).await;
    for sql in [
        "DELETE FROM webhook_attempts WHERE tenant_id = $1",
        "DELETE FROM webhook_deliveries WHERE tenant_id = $1",
        "DELETE FROM webhook_messages WHERE tenant_id = $1",
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1",
        "DELETE FROM tenants WHERE id = $1",
    ] {
        sqlx::query(sql).bind(tenant.0).execute(&state.system_pool.0).await?;
    }
    super::delete_namespace(&state.redis, &state.keys).await?;
    result
}

async fn measure(state: &AppState, tenant: TenantId, params: &DeliveryBenchParams) -> Result<DeliveryBenchReport, BenchError> {
    let receiver = Receiver {
        progress: Arc::new(Progress::default()),
        latency: Arc::new(Mutex::new(super::latency_histogram())),
        queued: Arc::default(),
        from_queue: Arc::new(Mutex::new(super::latency_histogram())),
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| BenchError::NotReady(format!("receiver: {e}")))?;
    let port = listener.local_addr().map_err(|e| BenchError::NotReady(e.to_string()))?.port();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let new = crate::webhooks_out::endpoints::NewEndpoint { url: format!("http://127.0.0.1:{port}/hook"), event_types: vec!["bench.tick".into()] };
    crate::webhooks_out::endpoints::create(&state.tenant_pool, tenant, &new, state.webhooks_out.address_policy(), u32::MAX, state.webhooks_out.keyring())
        .await
        .map_err(|e| BenchError::NotReady(e.to_string()))?;

    // 1. Throughput: one message fanned out to `n` deliveries (written in one statement, not
    // measured), queued, then drained.
    let accepted = state.webhooks_out.accept(messages::Incoming { tenant, message: tick(None), idempotency_key: None, at: chrono::Utc::now() }).await.map_err(|e| BenchError::NotReady(e.to_string()))?;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id) \
         SELECT gen_random_uuid(), tenant_id, message_id, endpoint_id FROM webhook_deliveries, generate_series(2, $2) WHERE message_id = $1 RETURNING id",
    )
    .bind(accepted.message_id)
    .bind(params.n as i64)
    .fetch_all(&state.system_pool.0)
    .await?;
    let all: Vec<uuid::Uuid> = accepted.deliveries.iter().map(|(d, _)| *d).chain(ids).collect();
    for chunk in all.chunks(1000) {
        let pushes = chunk.iter().map(|id| messages::push(&state.queue, tenant, std::slice::from_ref(id)));
        for pushed in futures::future::join_all(pushes).await {
            pushed?;
        }
    }
    let registry = Registry::default().with(crate::jobs::webhook_deliver::WebhookDeliverJob);
    let member = Member::start(state.clone(), &BTreeSet::from([Role::Worker]), WorkerOptions::new(registry)).await?;
    let started = Instant::now();
    receiver.progress.wait_for(all.len() as u64, Duration::from_secs(600)).await?;
    let delivered_per_sec = all.len() as f64 / started.elapsed().as_secs_f64();

    // 2. Latency at a fixed rate, open loop.
    if let Ok(mut h) = receiver.latency.lock() {
        *h = super::latency_histogram();
    }
    let before = receiver.progress.done();
    let sent = u64::from(params.rate) * u64::from(params.secs);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(params.rate.max(1))));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut senders = Vec::with_capacity(sent as usize);
    let accepting = Arc::new(Mutex::new(super::latency_histogram()));
    for _ in 0..sent {
        ticks.tick().await;
        let (state, accepting, queued) = (state.clone(), accepting.clone(), receiver.queued.clone());
        senders.push(tokio::spawn(async move {
            let (t, started) = (chrono::Utc::now(), Instant::now());
            let accepted = state.webhooks_out.accept(messages::Incoming { tenant, message: tick(Some(t.timestamp_micros())), idempotency_key: None, at: t }).await.map_err(|e| e.to_string())?;
            let ids: Vec<uuid::Uuid> = accepted.deliveries.iter().map(|(d, _)| *d).collect();
            if let Ok(mut q) = queued.lock() {
                q.insert(messages::webhook_id(accepted.message_id), chrono::Utc::now().timestamp_micros());
            }
            messages::push(&state.queue, tenant, &ids).await.map_err(|e| e.to_string())?;
            if let Ok(mut h) = accepting.lock()
                && let Some(h) = h.as_mut()
            {
                let _ = h.record(started.elapsed().as_micros().max(1) as u64);
            }
            Ok::<(), String>(())
        }));
    }
    for s in senders {
        if let Ok(Err(e)) = s.await {
            return Err(BenchError::NotReady(format!("a message was not accepted: {e}")));
        }
    }
    receiver.progress.wait_for(before + sent, Duration::from_secs(120)).await?;
    member.shutdown().await;
    serving.abort();
    let h = receiver.latency.lock().ok().and_then(|h| h.clone());
    let (p50, p99) = h.as_ref().map(super::p50_p99_ms).unwrap_or((f64::NAN, f64::NAN));
    let max_ms = h.map(|h| h.max() as f64 / 1000.0).unwrap_or(f64::NAN);
    let (queued_p50_ms, queued_p99_ms) = receiver.from_queue.lock().ok().and_then(|h| h.as_ref().map(super::p50_p99_ms)).unwrap_or((f64::NAN, f64::NAN));
    let (accept_p50_ms, accept_p99_ms) = accepting.lock().ok().and_then(|h| h.as_ref().map(super::p50_p99_ms)).unwrap_or((f64::NAN, f64::NAN));
    Ok(DeliveryBenchReport { n: all.len() as u64, delivered_per_sec, sent, p50_ms: p50, p99_ms: p99, max_ms, accept_p50_ms, accept_p99_ms, queued_p50_ms, queued_p99_ms })
}

fn tick(t: Option<i64>) -> NewMessage {
    let mut data = serde_json::Map::new();
    data.insert("t".into(), t.map_or(serde_json::Value::Null, serde_json::Value::from));
    NewMessage { event_type: "bench.tick".into(), data }
}
