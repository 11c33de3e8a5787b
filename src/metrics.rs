//! `GET /metrics`: the four golden signals in Prometheus' text format.
//! - latency: request duration by route, method and status (a bucket boundary at 0.3 s, the
//!   latency SLO's threshold); job run time by kind; webhook lag (Stripe's event time →
//!   processed);
//! - traffic: requests by route, method and status; jobs by kind and outcome;
//! - errors: 5xx by route; failed, retried and dead jobs by kind;
//! - saturation: queue depth and oldest ready age per kind, pool connections in use and idle,
//!   rate-limit blocks, cache hits and misses.
//!
//! Request and job figures are counted as they happen; queue, pool, limiter and cache figures
//! are read when Prometheus scrapes.

use std::time::Duration;

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, GaugeVec, TextEncoder};

use crate::queue::JobEnvelope;
use crate::queue::worker::{JobObserver, RunOutcome};

/// Request-duration buckets (seconds): 0.3 s is the latency SLO's threshold.
const HTTP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Job run time buckets (seconds).
const JOB_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 1.0, 5.0, 30.0, 120.0, 600.0];
/// Webhook lag buckets (seconds): Stripe retries for days, so the tail is long.
const LAG_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86_400.0];

/// The method as a label: one of the standard methods, else `OTHER`. A client can send any
/// token as a method; each distinct label value is a series kept until restart, so unknown
/// ones must collapse into one.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The route label of a request: its path template, or one fixed value for every request no
/// route matched (raw paths would make a series per probe).
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// Counters of an HTTP listener (the intake server counts, `/metrics` reads).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: std::sync::atomic::AtomicUsize,
    /// Connections accepted since start.
    pub accepted: std::sync::atomic::AtomicU64,
    /// Connections closed because their headers did not arrive in time.
    pub header_timeouts: std::sync::atomic::AtomicU64,
    /// Times the loop waited because `max_connections` were open.
    pub at_capacity: std::sync::atomic::AtomicU64,
}

/// A metric the code defines wrongly (a programming error, caught by the unit test).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// What a scrape reads besides the counters kept here.
#[derive(Clone, Copy)]
pub struct Scrape<'a> {
    /// Queue depths and ages.
    pub queue: &'a crate::queue::JobQueue,
    /// The app role's pool.
    pub app_pool: &'a sqlx::PgPool,
    /// The system role's pool.
    pub system_pool: &'a sqlx::PgPool,
    /// The limiter's counters.
    pub limiter: &'a crate::ratelimit::LimiterStats,
    /// The cache's counters.
    pub cache: crate::cache::CacheStats,
    /// Subscription items whose price is in no plan or add-on, seen by recomputes so far.
    pub unknown_price_items: u64,
    /// The fleet's health alerts as last evaluated: (alert key, rule, firing).
    pub fleet_alerts: &'a [(String, String, bool)],
    /// Whether a scheduler leader holds the lease (None: Redis did not say).
    pub scheduler_led: Option<bool>,
    /// Each SLO's SLI and error budget left, as last evaluated.
    pub slos: &'a [(String, f64, f64)],
    /// Each maintenance service's latest completed run (unix seconds).
    pub maintenance: &'a [(String, Option<f64>)],
}

/// The fleet member's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_duration: HistogramVec,
    http_requests: IntCounterVec,
    http_errors: IntCounterVec,
    jobs: IntCounterVec,
    job_run: HistogramVec,
    webhook_lag: Histogram,
    queue_depth: IntGaugeVec,
    queue_oldest: GaugeVec,
    pool: IntGaugeVec,
    limiter: IntCounterVec,
    cache: IntCounterVec,
    connections_open: prometheus::IntGauge,
    connection_events: IntCounterVec,
    connection_stats: std::sync::Arc<ConnectionStats>,
    other_api_version: IntCounterVec,
    unknown_price_items: IntCounter,
    fleet_alert: GaugeVec,
    scheduler_leader: prometheus::IntGauge,
    build_info: IntGaugeVec,
    slo_sli: GaugeVec,
    slo_budget: GaugeVec,
    maintenance_ok: GaugeVec,
    stripe_calls: IntCounterVec,
    job_minutes: crate::queue::minutes::JobMinutes,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> Result<C, prometheus::Error> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// The runs per kind per minute this member counted and has not yet added to Redis.
    pub fn job_minutes(&self) -> crate::queue::minutes::JobMinutes {
        self.job_minutes.clone()
    }

    /// Every metric, registered.
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new_custom(Some("ballast".into()), None)?;
        let hist = |name: &str, help: &str, buckets: &[f64]| HistogramOpts::new(name, help).buckets(buckets.to_vec());
        let jobs = register(&r, IntCounterVec::new(Opts::new("jobs_total", "Job runs by outcome: processed, failed (retried or dead), retried, dead, snoozed."), &["kind", "outcome"])?)?;
        Ok(Self {
            http_duration: register(&r, HistogramVec::new(hist("http_request_duration_seconds", "Intake request duration.", HTTP_BUCKETS), &["route", "method", "status"])?)?,
            http_requests: register(&r, IntCounterVec::new(Opts::new("http_requests_total", "Intake requests answered."), &["route", "method", "status"])?)?,
            http_errors: register(&r, IntCounterVec::new(Opts::new("http_errors_total", "Intake requests answered with a 5xx."), &["route", "method"])?)?,
            jobs: jobs.clone(),
            job_run: register(&r, HistogramVec::new(hist("job_run_seconds", "Job run time.", JOB_BUCKETS), &["kind"])?)?,
            webhook_lag: register(&r, Histogram::with_opts(hist("webhook_lag_seconds", "Stripe event created → processed.", LAG_BUCKETS))?)?,
            queue_depth: register(&r, IntGaugeVec::new(Opts::new("queue_jobs", "Jobs per kind and state (ready, scheduled, running)."), &["kind", "state"])?)?,
            queue_oldest: register(&r, GaugeVec::new(Opts::new("queue_oldest_ready_age_seconds", "Age of the oldest ready job per kind."), &["kind"])?)?,
            pool: register(&r, IntGaugeVec::new(Opts::new("db_pool_connections", "PostgreSQL pool connections by pool and state (in_use, idle)."), &["pool", "state"])?)?,
            limiter: register(&r, IntCounterVec::new(Opts::new("ratelimit_decisions_total", "Rate-limit outcomes other than admit: blocked, failed_open, failed_closed."), &["outcome"])?)?,
            cache: register(&r, IntCounterVec::new(Opts::new("cache_reads_total", "Cache reads by result: hit, miss, stale, load_error."), &["result"])?)?,
            connections_open: register(&r, prometheus::IntGauge::new("http_connections_open", "Intake connections open now.")?)?,
            connection_events: register(&r, IntCounterVec::new(Opts::new("http_connection_events_total", "Intake connections: accepted, header_timeout (closed: headers too slow), at_capacity (accepting paused at the cap)."), &["event"])?)?,
            connection_stats: Default::default(),
            other_api_version: register(&r, IntCounterVec::new(Opts::new("stripe_events_other_api_version_total", "Webhook events rendered in an API version other than the pinned one (stored and applied where their shape allows)."), &["api_version"])?)?,
            unknown_price_items: register(&r, IntCounter::new("unknown_price_items_total", "Subscription items whose price is in no plan or add-on of plans.toml (they grant nothing; the plan is found among the other items).")?)?,
            fleet_alert: register(&r, GaugeVec::new(Opts::new("fleet_alert_firing", "The fleet's own health alerts (deploy/alerts.toml) as last evaluated: 1 firing, 0 not."), &["alert", "rule"])?)?,
            scheduler_leader: register(&r, prometheus::IntGauge::new("scheduler_leader", "1 while a scheduler leader holds the lease, 0 while none does.")?)?,
            build_info: register(&r, IntGaugeVec::new(Opts::new("build_info", "1, labelled with the release this member runs."), &["version", "commit"])?)?,
            slo_sli: register(&r, GaugeVec::new(Opts::new("slo_sli_ratio", "Each SLO's SLI over its window, as last evaluated."), &["slo"])?)?,
            slo_budget: register(&r, GaugeVec::new(Opts::new("slo_budget_remaining_ratio", "Each SLO's error budget left over its window (1 = untouched, below 0 = spent), as last evaluated."), &["slo"])?)?,
            maintenance_ok: register(&r, GaugeVec::new(Opts::new("maintenance_last_ok_timestamp_seconds", "When each maintenance service last completed (unix seconds)."), &["service"])?)?,
            stripe_calls: register(&r, IntCounterVec::new(Opts::new("stripe_api_calls_total", "Stripe API calls by outcome: answered (2xx, or a refusal such as a declined card), failed (no answer, 429, 5xx, 401/403)."), &["outcome"])?)?,
            job_minutes: crate::queue::minutes::JobMinutes::new(jobs),
            registry: r,
        })
        .inspect(|m: &Self| {
            // Both outcomes are served from the start: a rule dividing one by the sum finds them.
            for outcome in ["answered", "failed"] {
                m.stripe_calls.with_label_values(&[outcome]);
            }
        })
    }

    /// The listener's connection counters, shared with the server that counts them.
    pub fn connections(&self) -> std::sync::Arc<ConnectionStats> {
        self.connection_stats.clone()
    }

    /// The Stripe API calls counter, for the client that counts them.
    pub fn stripe_calls(&self) -> IntCounterVec {
        self.stripe_calls.clone()
    }

    /// One answered request.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let status_text = status.to_string();
        let labels = [route, method, status_text.as_str()];
        self.http_duration.with_label_values(&labels).observe(took.as_secs_f64());
        self.http_requests.with_label_values(&labels).inc();
        if status >= 500 {
            self.http_errors.with_label_values(&[route, method]).inc();
        }
    }

    /// One finished job run.
    pub fn job(&self, kind: &str, outcome: RunOutcome, took: Duration) {
        self.job_run.with_label_values(&[kind]).observe(took.as_secs_f64());
        let outcomes: &[&str] = match outcome {
            RunOutcome::Completed => &["processed"],
            RunOutcome::Retried => &["failed", "retried"],
            RunOutcome::Dead => &["failed", "dead"],
            RunOutcome::Snoozed => &["snoozed"],
        };
        for o in outcomes {
            self.jobs.with_label_values(&[kind, o]).inc();
        }
    }

    /// A webhook rendered in an API version other than the pinned one.
    pub fn other_api_version(&self, version: &str) {
        self.other_api_version.with_label_values(&[version]).inc();
    }

    /// A webhook processed; `created` is Stripe's event time (unix seconds).
    pub fn webhook_lag(&self, created: i64) {
        let lag = (chrono::Utc::now().timestamp_millis() - created * 1000).max(0) as f64 / 1000.0;
        self.webhook_lag.observe(lag);
    }

    /// Reads the scrape-time figures from `from` and renders every metric.
    pub async fn render(&self, from: Scrape<'_>) -> String {
        if let Ok(stats) = from.queue.stats().await {
            for s in stats {
                for (label, v) in [("ready", s.ready), ("scheduled", s.scheduled), ("running", s.running)] {
                    self.queue_depth.with_label_values(&[s.kind.as_str(), label]).set(i64::try_from(v).unwrap_or(i64::MAX));
                }
                self.queue_oldest.with_label_values(&[s.kind.as_str()]).set(s.oldest_ready_age_secs.unwrap_or(0.0));
            }
        }
        for (name, pool) in [("app", from.app_pool), ("system", from.system_pool)] {
            let idle = i64::try_from(pool.num_idle()).unwrap_or(0);
            self.pool.with_label_values(&[name, "idle"]).set(idle);
            self.pool.with_label_values(&[name, "in_use"]).set(i64::from(pool.size()) - idle);
        }
        let l = from.limiter;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        catch_up(&self.limiter, "blocked", load(&l.blocked));
        catch_up(&self.limiter, "failed_open", load(&l.failed_open));
        catch_up(&self.limiter, "failed_closed", load(&l.failed_closed));
        let conn = &self.connection_stats;
        self.connections_open.set(i64::try_from(load_usize(&conn.open)).unwrap_or(i64::MAX));
        catch_up(&self.connection_events, "accepted", load(&conn.accepted));
        catch_up(&self.connection_events, "header_timeout", load(&conn.header_timeouts));
        catch_up(&self.connection_events, "at_capacity", load(&conn.at_capacity));
        let c = from.cache;
        catch_up(&self.cache, "hit", c.hits);
        catch_up(&self.cache, "miss", c.misses);
        catch_up(&self.cache, "stale", c.stale_served);
        catch_up(&self.cache, "load_error", c.load_errors);
        for (alert, rule, firing) in from.fleet_alerts {
            self.fleet_alert.with_label_values(&[alert.as_str(), rule.as_str()]).set(if *firing { 1.0 } else { 0.0 });
        }
        if let Some(led) = from.scheduler_led {
            self.scheduler_leader.set(i64::from(led));
        }
        for (slo, sli, budget) in from.slos {
            self.slo_sli.with_label_values(&[slo.as_str()]).set(*sli);
            self.slo_budget.with_label_values(&[slo.as_str()]).set(*budget);
        }
        for (service, at) in from.maintenance {
            if let Some(at) = at {
                self.maintenance_ok.with_label_values(&[service.as_str()]).set(*at);
            }
        }
        let seen = self.unknown_price_items.get();
        if from.unknown_price_items > seen {
            self.unknown_price_items.inc_by(from.unknown_price_items - seen);
        }
        self.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("RELEASE_COMMIT")]).set(1);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(message = "Metrics not rendered.", error = %e);
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn load_usize(a: &std::sync::atomic::AtomicUsize) -> usize {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

impl JobObserver for Metrics {
    fn finished(&self, envelope: &JobEnvelope, outcome: RunOutcome, took: Duration) {
        self.job(envelope.kind.as_str(), outcome, took);
    }
}

/// Moves a counter up to a total kept elsewhere (the limiter's and cache's own atomics).
fn catch_up(counter: &IntCounterVec, label: &str, total: u64) {
    let c: IntCounter = counter.with_label_values(&[label]);
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_the_latency_buckets_hold_the_slo_threshold() {
        let m = Metrics::new().expect("metrics");
        assert_eq!(method_label(&axum::http::Method::from_bytes(&[b'X'; 1000]).expect("a token")), "OTHER");
        m.request("/v1/entitlements", "GET", 200, Duration::from_millis(12));
        m.request("/v1/entitlements", "GET", 503, Duration::from_millis(400));
        m.job("stripe.event", RunOutcome::Retried, Duration::from_millis(3));
        let mut out = Vec::new();
        TextEncoder::new().encode(&m.registry.gather(), &mut out).expect("encode");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("ballast_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/entitlements\",status=\"200\",le=\"0.3\"} 1"), "{text}");
        assert!(text.contains("ballast_http_errors_total{method=\"GET\",route=\"/v1/entitlements\"} 1"));
        assert!(text.contains("ballast_jobs_total{kind=\"stripe.event\",outcome=\"retried\"} 1"));
        assert!(text.contains("ballast_jobs_total{kind=\"stripe.event\",outcome=\"failed\"} 1"));
    }
}
