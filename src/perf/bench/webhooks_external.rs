//! `ballast bench webhooks --sender CMD`: the webhook path driven by an external sender process
//! (such as the open-loop sender the stripe-sync-engine comparison uses), so Ballast and a
//! peer are measured from the same sender, which carries its own CPU cost on the same cores.
//!
//! For each rate, an in-process member (api + worker roles) listens on loopback, the run's
//! tenants are mapped to the customers `PREFIX0 … PREFIX{n-1}`, and the sender command runs
//! with `{url}`, `{secret}`, `{rate}`, `{secs}`, `{prefix}` and `{customers}` filled in. Each
//! event is timed from its inbox row's `received_at` (when the intake stored it) to when the
//! `stripe.event` job that applied it finished (mirror applied, entitlements recomputed,
//! committed, cache key deleted), on the same wall clock: its own job, or the job whose
//! transaction took it with its own. A rate is kept up with when that p99 stays under a second
//! and every event is applied within a minute of the sender's end.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;

use secrecy::ExposeSecret;

use super::BenchError;
use crate::perf::proc_cpu::{self, Part};
use crate::app::{AppState, Member, Role};
use crate::config::Settings;
use crate::state::Registry;
use crate::queue::JobEnvelope;
use crate::queue::job::JobReport;
use crate::queue::worker::{JobObserver, WorkerOptions};

/// Received → entitlements p99 under which a rate counts as kept up with.
const KEPT_UP_P99_MS: f64 = 1_000.0;
/// How long after the sender ends the backlog may take to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Parameters of an external-sender run.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalParams {
    /// The sender's command line (run with `sh -c`), with placeholders.
    pub sender: String,
    /// Rates to run, in order (events/s).
    pub rates: Vec<u32>,
    /// Seconds the sender sends at each rate.
    pub secs: u32,
    /// Customers (one tenant each) the sender spreads its events over.
    pub customers: usize,
    /// A peer driven by the same sender at each rate, right after Ballast.
    pub peer: Option<PeerParams>,
}

/// A peer receiver (stripe-sync-engine) already running against the same PostgreSQL.
#[derive(Debug, Clone, Serialize)]
pub struct PeerParams {
    /// Its webhook URL.
    pub url: String,
    /// Its signing secret.
    #[serde(skip)]
    pub secret: String,
    /// Text of its processes' command line (`server.cjs`): their CPU is the peer's.
    pub matching: String,
}

/// CPU per event (ms), by part and together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuPerEvent {
    /// The receiver's own processes (Ballast's member, or the peer's server).
    pub receiver_ms: f64,
    /// PostgreSQL (the postmaster and its children).
    pub postgres_ms: f64,
    /// Redis (none for the peer).
    pub redis_ms: f64,
    /// PgBouncer, when the pools reach PostgreSQL through it (none otherwise).
    pub pooler_ms: f64,
    /// All of them.
    pub total_ms: f64,
}

impl CpuPerEvent {
    fn of(used: &std::collections::BTreeMap<String, Duration>, events: u64) -> Self {
        let per = |name: &str| used.get(name).map_or(0.0, |d| d.as_secs_f64() * 1000.0 / events.max(1) as f64);
        let (receiver_ms, postgres_ms, redis_ms, pooler_ms) = (per("receiver"), per("postgres"), per("redis"), per("pooler"));
        Self { receiver_ms, postgres_ms, redis_ms, pooler_ms, total_ms: receiver_ms + postgres_ms + redis_ms + pooler_ms }
    }
}

/// The peer at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRate {
    /// Events the sender sent.
    pub events: u64,
    /// Its CPU per event (each applied before its POST returned).
    pub cpu: CpuPerEvent,
    /// What the sender printed last.
    pub sender_said: String,
}

/// The figures of one rate.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// Events/s asked of the sender.
    pub rate: u32,
    /// Inbox rows the run stored.
    pub stored: u64,
    /// Of those, applied within the drain limit.
    pub applied: u64,
    /// Received → entitlements updated p50 (ms).
    pub to_entitlements_p50_ms: f64,
    /// Received → entitlements updated p99 (ms).
    pub to_entitlements_p99_ms: f64,
    /// The slowest event (ms).
    pub to_entitlements_max_ms: f64,
    /// Whether every event was applied and the p99 stayed under a second.
    pub kept_up: bool,
    /// What the sender printed last (its own POST latency figures).
    pub sender_said: String,
    /// CPU per applied event from the sender's start until the last was applied.
    pub cpu: CpuPerEvent,
    /// The peer at the same rate, from the same sender.
    pub peer: Option<PeerRate>,
}

/// The figures of every rate.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalReport {
    /// The parameters.
    pub params: ExternalParams,
    /// One per rate, in order.
    pub rates: Vec<RateReport>,
    /// The highest rate kept up with.
    pub highest_kept_up: Option<u32>,
}

/// When each event's entitlements were updated, by event id: the end of the `stripe.event`
/// job that applied it, its own or the one whose transaction took it with its own (the
/// report's `with`; the event's own job then ends later, finding it done).
#[derive(Default)]
struct Finished(Mutex<HashMap<String, DateTime<Utc>>>);

impl JobObserver for Finished {
    fn completed(&self, envelope: &JobEnvelope, report: &JobReport) {
        let now = Utc::now();
        let own = envelope.payload.get("event_id").and_then(|v| v.as_str());
        let with = report.get("with").and_then(|v| v.as_array()).into_iter().flatten().filter_map(|v| v.as_str());
        if let Ok(mut done) = self.0.lock() {
            for id in own.into_iter().chain(with) {
                done.entry(id.to_owned()).or_insert(now);
            }
        }
    }
}

/// Runs every rate in turn against the configured PostgreSQL.
pub async fn run(settings: Settings, params: ExternalParams) -> Result<ExternalReport, BenchError> {
    let mut rates = Vec::with_capacity(params.rates.len());
    for &rate in &params.rates {
        let report = one_rate(settings.clone(), &params, rate).await?;
        tracing::info!(message = "Rate measured.", rate, p99_ms = report.to_entitlements_p99_ms, kept_up = report.kept_up);
        rates.push(report);
    }
    let highest_kept_up = rates.iter().filter(|r| r.kept_up).map(|r| r.rate).max();
    Ok(ExternalReport { params, rates, highest_kept_up })
}

async fn one_rate(settings: Settings, params: &ExternalParams, rate: u32) -> Result<RateReport, BenchError> {
    let run = super::webhooks::set_up(settings, params.customers).await?;
    let result = measure(&run.state, &run.run_id, &run.secret, &run.tenants, params, rate).await;
    let mut report = super::webhooks::tear_down(&run, result).await?;
    if let Some(peer) = &params.peer {
        report.peer = Some(peer_rate(&run.state, params, peer, rate, &run.run_id).await?);
    }
    Ok(report)
}

/// The parts whose CPU is counted: the receiver, PostgreSQL (the postmaster serving `state`'s
/// database, and its children) and, for Ballast, the Redis it uses and the PgBouncer its pools
/// go through (when the pool's port is not PostgreSQL's own, the `pgbouncer` processes here).
async fn parts(state: &AppState, receiver: Part, ballast: bool) -> Result<Vec<(String, Part)>, BenchError> {
    // (`port` is PostgreSQL's own, whether the pool came by TCP or by the Unix socket.)
    let (backend, server_port): (i32, Option<i32>) = sqlx::query_as("SELECT pg_backend_pid(), current_setting('port')::int").fetch_one(&state.system_pool.0).await?;
    let postmaster = crate::perf::proc_cpu::parent_of(u32::try_from(backend).unwrap_or(0)).ok_or_else(|| BenchError::NotReady("PostgreSQL's processes are not on this machine".into()))?;
    let mut parts = vec![("receiver".to_owned(), receiver), ("postgres".to_owned(), Part::Tree(postmaster))];
    let pool_port = state.settings.system_database_url.expose_secret().parse::<sqlx::postgres::PgConnectOptions>().ok().map(|o| i32::from(o.get_port()));
    if ballast && server_port.is_some() && pool_port != server_port {
        parts.push(("pooler".to_owned(), Part::CommandHolding("pgbouncer".into())));
    }
    if ballast {
        let port = reqwest::Url::parse(state.settings.redis_url.expose_secret().split(',').next().unwrap_or_default()).ok().and_then(|u| u.port()).unwrap_or(6379);
        parts.push(("redis".to_owned(), Part::RedisOnPort(port)));
    }
    Ok(parts)
}

/// The same sender against the peer at `rate`; its CPU per event sent.
async fn peer_rate(state: &AppState, params: &ExternalParams, peer: &PeerParams, rate: u32, run_id: &str) -> Result<PeerRate, BenchError> {
    let parts = parts(state, Part::CommandHolding(peer.matching.clone()), false).await?;
    let command = params
        .sender
        .replace("{url}", &peer.url)
        .replace("{secret}", &peer.secret)
        .replace("{rate}", &rate.to_string())
        .replace("{secs}", &params.secs.to_string())
        .replace("{prefix}", &format!("cus_peer{run_id}r{rate}_"))
        .replace("{customers}", &params.customers.to_string());
    let before = proc_cpu::snapshot(&parts);
    let sent = tokio::process::Command::new("sh").arg("-c").arg(&command).kill_on_drop(true).output().await;
    let used = proc_cpu::since(&before, &proc_cpu::snapshot(&parts));
    let events = u64::from(rate) * u64::from(params.secs);
    let sender_said = match &sent {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_owned(),
        Ok(out) => format!("the sender exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("the sender did not start: {e}"),
    };
    Ok(PeerRate { events, cpu: CpuPerEvent::of(&used, events), sender_said })
}

async fn measure(state: &AppState, run_id: &str, secret: &str, tenants: &[uuid::Uuid], params: &ExternalParams, rate: u32) -> Result<RateReport, BenchError> {
    let finished = Arc::new(Finished::default());
    let mut options = WorkerOptions::new(Registry::standard());
    options.observer = finished.clone();
    let member = Member::start(state.clone(), &BTreeSet::from([Role::Api, Role::Worker]), options).await?;
    let Some(addr) = member.api_addr else {
        member.shutdown().await;
        return Err(BenchError::NotListening);
    };
    // The customers create_tenants mapped: PREFIX0 … PREFIX{n-1}.
    let prefix = super::webhooks::customer_prefix(run_id);
    let command = params
        .sender
        .replace("{url}", &format!("http://{addr}/webhooks/stripe"))
        .replace("{secret}", secret)
        .replace("{rate}", &rate.to_string())
        .replace("{secs}", &params.secs.to_string())
        .replace("{prefix}", &prefix)
        .replace("{customers}", &tenants.len().to_string());
    let parts = parts(state, Part::Myself, true).await?;
    let cpu_before = proc_cpu::snapshot(&parts);
    let sent = tokio::process::Command::new("sh").arg("-c").arg(&command).kill_on_drop(true).output().await;
    let sender_said = match &sent {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_owned(),
        Ok(out) => format!("the sender exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("the sender did not start: {e}"),
    };
    // Drained when every stored row of the run is applied (or the limit passes). Stored is
    // counted once (the sender has finished: every answered event is stored); the wait then
    // reads the jobs' completions in memory, so the measuring adds no PostgreSQL work to the
    // CPU it measures (a count every 100 ms cost about 0.1 ms of PostgreSQL CPU per event).
    let pattern = format!("{prefix}%");
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE tenant_id = ANY($1)").bind(tenants).fetch_one(&state.system_pool.0).await?;
    let stored = stored.max(0) as u64;
    while finished.0.lock().map(|d| d.len() as u64).unwrap_or(0) < stored && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_used = proc_cpu::since(&cpu_before, &proc_cpu::snapshot(&parts));
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE tenant_id = ANY($1) AND status = 'processed'").bind(tenants).fetch_one(&state.system_pool.0).await?;
    let applied = applied.max(0) as u64;
    member.shutdown().await;

    let received: Vec<(String, DateTime<Utc>)> = sqlx::query_as("SELECT id, received_at FROM stripe_events WHERE customer_id LIKE $1")
        .bind(&pattern)
        .fetch_all(&state.system_pool.0)
        .await?;
    let done = finished.0.lock().map(|d| d.clone()).unwrap_or_default();
    let mut took = super::latency_histogram().ok_or_else(|| BenchError::NotReady("histogram".into()))?;
    for (id, at) in &received {
        if let Some(end) = done.get(id) {
            let _ = took.record((*end - *at).num_microseconds().unwrap_or(0).max(1) as u64);
        }
    }
    let figures = |h: &Histogram<u64>| if h.is_empty() { (f64::NAN, f64::NAN, f64::NAN) } else {
        let (p50, p99) = super::p50_p99_ms(h);
        (p50, p99, h.max() as f64 / 1000.0)
    };
    let (p50, p99, max) = figures(&took);
    Ok(RateReport {
        rate,
        stored,
        applied,
        to_entitlements_p50_ms: p50,
        to_entitlements_p99_ms: p99,
        to_entitlements_max_ms: max,
        kept_up: sent.is_ok_and(|o| o.status.success()) && stored > 0 && stored == applied && p99 < KEPT_UP_P99_MS,
        sender_said,
        cpu: CpuPerEvent::of(&cpu_used, applied),
        peer: None,
    })
}
