//! `site.down` (admin job, runbook site-down): every dependency checked, each with its time —
//! PostgreSQL (both roles), Redis, the Stripe API, the SMTP relay, the OTLP endpoint — and the
//! fleet's members from their heartbeats, with the scheduler's leader. It only reports.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::kind::{JobContext, JobError};
use super::admin::{AdminJob, NoParams};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct SiteDownJob;

/// Each check's limit.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs one check: `{"ok", "ms", "error"}`, or `{"status": "not configured"}` when the check
/// says the part is not used (`None`).
async fn timed<F, E>(check: F) -> Value
where
    F: Future<Output = Result<Option<()>, E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, check).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(Ok(Some(()))) => json!({"ok": true, "ms": (ms * 10.0).round() / 10.0}),
        // Not an error: an optional part this fleet does not use.
        Ok(Ok(None)) => json!({"status": "not configured"}),
        Ok(Err(e)) => json!({"ok": false, "ms": (ms * 10.0).round() / 10.0, "error": e.to_string()}),
        Err(_) => json!({"ok": false, "ms": (ms * 10.0).round() / 10.0, "error": format!("no answer within {} s", CHECK_TIMEOUT.as_secs())}),
    }
}

/// `host:port` of an OTLP endpoint URL.
fn otlp_addr(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let (host, port) = (url.host_str()?, url.port_or_known_default()?);
    Some(format!("{host}:{port}"))
}

/// Every dependency checked, and the fleet's members.
#[derive(Debug, serde::Serialize)]
pub struct SiteDownReport {
    /// Each dependency: ok, time, error.
    pub checks: serde_json::Value,
    /// The dependencies that failed.
    pub failing: Vec<String>,
    /// Members with their heartbeat age.
    pub members: Vec<serde_json::Value>,
    /// The scheduler's leader.
    pub scheduler_leader: Option<String>,
    /// Always false: the job only looks.
    pub executed: bool,
}

impl AdminJob for SiteDownJob {
    const KIND: &'static str = "site.down";
    type Params = NoParams;
    type Report = SiteDownReport;
    type Deps = super::deps::Fleet;

    async fn run(&self, _p: &NoParams, _execute: bool, ctx: &JobContext<super::deps::Fleet>) -> Result<SiteDownReport, JobError> {
        let state = &ctx.state;
        let postgres_app = timed(async { sqlx::query("SELECT 1").execute(state.tenant_pool.raw()).await.map(|_| Some(())) }).await;
        let postgres_system = timed(async { sqlx::query("SELECT 1").execute(&state.system_pool.0).await.map(|_| Some(())) }).await;
        let redis = timed(async {
            let mut conn = state.redis.clone();
            redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| Some(()))
        })
        .await;
        let stripe = timed(async {
            match state.stripe.ping().await {
                Ok(()) => Ok(Some(())),
                Err(crate::stripe_api::StripeApiError::NotConfigured) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await;
        let smtp = timed(async {
            match state.mailer.check().await {
                Ok(true) => Ok(Some(())),
                Ok(false) => Err("the relay did not answer hello".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        let otlp = timed(async {
            match state.settings.otel_endpoint.as_deref().and_then(otlp_addr) {
                None => Ok(None),
                Some(addr) => tokio::net::TcpStream::connect(addr).await.map(|_| Some(())),
            }
        })
        .await;
        let members = state.queue.member_heartbeats().await?;
        let leader = crate::scheduler::current_leader(&state.redis, &state.keys).await?;
        let stale_after = 3.0 * state.settings.worker_heartbeat.as_secs_f64();
        let checks = json!({
            "postgres_app": postgres_app, "postgres_system": postgres_system, "redis": redis,
            "stripe_api": stripe, "smtp": smtp, "otlp": otlp,
        });
        let failing: Vec<String> = checks.as_object().into_iter().flatten().filter(|(_, v)| v["ok"] == false).map(|(k, _)| k.clone()).collect();
        Ok(SiteDownReport {
            checks,
            failing,
            members: members.iter().map(|(m, age)| json!({"member": m, "heartbeat_age_secs": age, "alive": *age < stale_after})).collect::<Vec<_>>(),
            scheduler_leader: leader,
            executed: false,
        })
    }
}
